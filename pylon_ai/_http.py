"""
HTTP clients for talking to providers: one shared connection pool, real TLS.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from treq.client import HTTPClient
from zope.interface import implementer

from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IAgentEndpointFactory

from pylon_ai._h1 import LeanPool

#: Idle pooled connections are closed after this many seconds: below the idle
#: timeout of the providers' load balancers, so a pooled connection is not
#: reused just as the far end drops it.
POOL_IDLE_SECONDS = 30.0
#: Idle connections kept per host; concurrency is not capped by this.
POOL_PER_HOST = 64


def _closing(transport: Any) -> bool:
    while transport is not None:
        if getattr(transport, "disconnecting", False) or getattr(
            transport, "disconnected", False
        ):
            return True
        transport = getattr(transport, "transport", None)
    return False


class _QuietClientFactory(_HTTP11ClientFactory):
    # Twisted builds one factory per new connection, and a noisy factory
    # logs "Starting factory" and "Stopping factory" for each.
    noisy = False


class SafePool(HTTPConnectionPool):
    """
    A pool that never keeps a connection that is already closing, and does
    not log a line per new connection.

    When a stream is abandoned (an error event, a callback that raised), the
    client asks for the connection to close; if the rest of the response was
    already in the same read, Twisted still finishes it and would offer the
    dying connection to the next request.
    """

    _factory = _QuietClientFactory

    def __init__(self, reactor: Any, persistent: bool = True) -> None:
        super().__init__(reactor, persistent)
        self._lean: LeanPool | None = None

    @property
    def lean(self) -> LeanPool:
        """
        The lean client's connections (see L{pylon_ai._h1}), kept with this
        pool's settings and closed with its cached connections.
        """
        if self._lean is None:
            self._lean = LeanPool(
                self._reactor,
                persistent=self.persistent,
                max_idle_per_host=self.maxPersistentPerHost,
                idle_seconds=self.cachedConnectionTimeout,
            )
        return self._lean

    def closeCachedConnections(self) -> Deferred[Any]:
        closing = super().closeCachedConnections()
        if self._lean is None:
            return closing
        return DeferredList([closing, self._lean.close()])

    def _putConnection(self, key: Any, connection: Any) -> None:
        if _closing(connection.transport):
            return
        super()._putConnection(key, connection)


def make_pool(reactor: Any, persistent: bool = True) -> HTTPConnectionPool:
    """
    A connection pool with the library's settings (see L{SafePool}).
    """
    pool = SafePool(reactor, persistent=persistent)
    pool.maxPersistentPerHost = POOL_PER_HOST
    pool.cachedConnectionTimeout = POOL_IDLE_SECONDS  # type: ignore[assignment]
    return pool


@implementer(IAgentEndpointFactory)
class _EndpointCache:
    """
    Reuses the endpoint of a host instead of building one per request.

    Twisted's agent makes a new C{HostnameEndpoint} (with IDNA encoding of
    the host name) for every request, even one that a pooled connection
    serves: about 60 us, on every request of the hot path.
    """

    #: Distinct upstream hosts remembered; the library may be pointed at many.
    SIZE = 64

    def __init__(
        self,
        inner: IAgentEndpointFactory,
        reactor: Any,
        policy: BrowserLikePolicyForHTTPS,
        connect_timeout: float | None,
    ) -> None:
        self._inner = inner
        self._reactor = reactor
        self._policy = policy
        self._timeout = 30 if connect_timeout is None else connect_timeout
        self._cache: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            if len(self._cache) >= self.SIZE:
                self._cache.clear()
            endpoint = self._cache[key] = self._make(uri)
        return endpoint

    def _make(self, uri: URI) -> IStreamClientEndpoint:
        # An IPv4 literal (a local vLLM or Ollama) needs no name resolution:
        # Twisted's HostnameEndpoint would still make a thread-pool round
        # trip for every new connection.
        host = uri.host.decode("ascii", "replace")
        if not isIPAddress(host):
            return self._inner.endpointForURI(uri)
        endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(
            self._reactor, host, uri.port, timeout=self._timeout
        )
        if uri.scheme == b"https":
            creator = self._policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


@implementer(IOpenSSLTrustRoot)
class PlatformTrustPlusCA:
    """
    Trust the platform's store (OpenSSL's default paths, so C{SSL_CERT_FILE}
    works) and one more CA file besides.

    C{BrowserLikePolicyForHTTPS(trustRoot=...)} replaces the platform store
    rather than adding to it; this root adds.
    """

    def __init__(self, ca_file: str) -> None:
        """
        @param ca_file: A PEM file of one or more CA certificates.
        @raise OSError: If the file cannot be read.
        """
        with open(ca_file, "rb"):
            pass
        self._ca_file = ca_file

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        context.load_verify_locations(self._ca_file)


def make_http_client(
    reactor: Any = None,
    *,
    trust_root: IOpenSSLTrustRoot | None = None,
    ca_file: str | None = None,
    persistent: bool = True,
    pool: HTTPConnectionPool | None = None,
    connect_timeout: float | None = None,
) -> HTTPClient:
    """
    A C{treq.HTTPClient} with a persistent connection pool and verified TLS.

    @param reactor: The reactor; the global one if L{None}.
    @param trust_root: Trust exactly this root (e.g. a test CA) instead of
        the platform store.
    @param ca_file: Trust this CA file I{as well as} the platform store.
    @param persistent: Keep connections open between requests.
    @param pool: Use this pool rather than a new one.
    @param connect_timeout: Seconds to establish a connection, if bounded.
    @return: The client.  Close its pool with
        C{client._agent._pool.closeCachedConnections()} or keep the pool you
        passed and close that.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    if trust_root is not None and ca_file is not None:
        raise ValueError("give trust_root or ca_file, not both")
    if ca_file is not None:
        trust_root = PlatformTrustPlusCA(ca_file)
    if pool is None:
        pool = make_pool(reactor, persistent)
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
    agent = Agent(
        reactor, contextFactory=policy, pool=pool, connectTimeout=connect_timeout
    )
    agent._endpointFactory = _EndpointCache(
        agent._endpointFactory, reactor, policy, connect_timeout
    )
    return HTTPClient(agent)


_shared: dict[int, tuple[object, HTTPClient]] = {}


def shared_http_client(reactor: IReactorTime) -> HTTPClient:
    """
    The one client (and pool) shared by plugins that were given no
    C{http_client}, per reactor.
    """
    entry = _shared.get(id(reactor))
    if entry is None or entry[0] is not reactor:
        entry = (reactor, make_http_client(reactor))
        _shared[id(reactor)] = entry
    return entry[1]
