"""
A scripted fake LLM provider: a real HTTP(S) server on the loopback interface
that answers in the Anthropic Messages and OpenAI Chat Completions formats.

The public names are re-exported by L{pylon_ai.testing}.
"""

from __future__ import annotations

import ipaddress
import json
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from attrs import define, field
from zope.interface import implementer

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolNegotiationFactory,
    IReactorTCP,
    IReactorTime,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from pylon_ai.testing._bodies import Format, Kind, error_body
from pylon_ai.testing._exchange import _Exchange
from pylon_ai.testing._reply import FakeReply, RecordedRequest

if TYPE_CHECKING:
    import trustme
    from treq.client import HTTPClient


#: What to install for C{tls=True}.
_TLS_HINT = (
    "FakeProvider(tls=True) needs trustme, from the test extra:"
    " pip install 'pylon_ai[test]'"
)


def require_trustme() -> None:
    """
    Check that C{trustme} (needed for C{tls=True}) can be imported.

    @raise ImportError: It cannot; the message says what to install.
    """
    try:
        import trustme  # noqa: F401
    except ImportError as e:
        raise ImportError(_TLS_HINT, name="trustme") from e


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    C{host} as an IP address, or L{None} for a name.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_ipv6(host: str) -> bool:
    address = _address(host)
    return address is not None and address.version == 6


@implementer(IProtocolNegotiationFactory)
class _TrackingFactory(WrappingFactory):
    """
    Keep track of open connections, and tell waiters when none is left.
    """

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self._site = site
        self._idle: list[Deferred[None]] = []

    def acceptableProtocols(self) -> list[bytes]:
        # Twisted's TLS answers every ALPN offer from the protocols of the
        # factory it wraps (this one); with none it fails the handshake of
        # clients that offer ALPN, as httpx (so the official SDKs) and curl
        # do.  Offer the site's.
        protocols: list[bytes] = self._site.acceptableProtocols()
        return protocols

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    def close_all(self) -> Deferred[None]:
        """
        Abort every open connection.

        @return: Fires when all are closed.
        """
        if not self.protocols:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        for wrapper in list(self.protocols):
            wrapper.transport.abortConnection()
        return waiter


class _FakeResource(Resource):
    isLeaf = True

    def __init__(self, provider: FakeProvider) -> None:
        super().__init__()
        self._provider = provider

    def render(self, request: Request) -> bytes | int:
        return self._provider._handle(request)


@define(eq=False)
class FakeProvider:
    """
    A scripted fake LLM provider, on C{127.0.0.1} by default, for tests.

    C{POST /v1/messages} (or any path ending in C{/messages}) is answered in
    Anthropic's Messages format; every other C{POST} path (so
    C{/v1/chat/completions} and custom endpoint paths) in OpenAI's Chat
    Completions format, except one ending in C{/responses}: the OpenAI
    Responses API (reasoning as a reasoning item whose C{encrypted_content}
    packs the signed thinking).  A request body with C{"stream": true} gets an event
    stream, any other a whole JSON body.  A path ending in
    C{/messages/count_tokens} gets Anthropic's token count
    (L{FakeReply.input_tokens}), one ending in C{/embeddings} OpenAI's
    embeddings (L{FakeReply.embeddings}); their errors take the same
    formats.  Other methods get a 405.

    Replies queued with L{enqueue} are served in order, one per request; when
    the queue is empty L{default_reply} is served.

    @ivar reactor: Listens and connects (a real reactor).
    @ivar tls: Serve HTTPS with a certificate from a throwaway C{trustme} CA
        (valid for C{localhost}, C{127.0.0.1}, C{::1} and L{host}).  Needs
        C{trustme}, from C{pip install 'pylon_ai[test]'}.
    @ivar port: The TCP port to listen on; 0 (the default) lets the system
        pick a free one, which L{listening_port} and L{base_url} report.
    @ivar host: The IP address to listen on: C{127.0.0.1} by default (an
        IPv6 address such as C{::1} works too).  Another interface than a
        loopback one lets other machines reach the fake.
    @ivar clock: Schedules the delays of replies; the reactor if L{None}.  A
        L{twisted.internet.task.Clock} lets a test move time by hand.
    @ivar default_reply: Served when the queue is empty.
    @ivar responder: Asked first for every request (after L{requests}
        records it): a L{FakeReply} it returns is served and the queue is
        left as it is; L{None} lets the queue answer.  For clients whose
        requests a test cannot foresee, such as an agent that offers tools
        under names of its own choosing.
    @ivar requests: Every request received, in order.
    """

    reactor: IReactorTCP
    tls: bool = field(default=False, kw_only=True)
    port: int = field(default=0, kw_only=True)
    host: str = field(default="127.0.0.1", kw_only=True)
    clock: IReactorTime | None = field(default=None, kw_only=True)
    default_reply: FakeReply = field(
        default=FakeReply(chunks=("Hello", " from", " the", " fake."), usage=(10, 4)),
        kw_only=True,
    )
    responder: Callable[[RecordedRequest], FakeReply | None] | None = field(
        default=None, kw_only=True
    )
    requests: list[RecordedRequest] = field(factory=list, init=False)
    _queue: deque[FakeReply] = field(factory=deque, init=False)
    _factory: _TrackingFactory | None = field(default=None, init=False)
    _listener: IListeningPort | None = field(default=None, init=False)
    _exchanges: set[_Exchange] = field(factory=set, init=False)
    _pools: list[Any] = field(factory=list, init=False)
    _ca: trustme.CA | None = field(default=None, init=False)
    _waiters: list[tuple[int, Deferred[RecordedRequest]]] = field(
        factory=list, init=False
    )

    def __attrs_post_init__(self) -> None:
        # Say what is missing when the fake is made, not at the first
        # request of a test.
        if self.tls:
            require_trustme()

    def start(self) -> Deferred[None]:
        """
        Start listening on L{host} and L{port}.

        @return: Fires when L{base_url} can be used, or fails with
            L{twisted.internet.error.CannotListenError} (e.g. the port is
            taken).
        """
        from twisted.internet.endpoints import (
            SSL4ServerEndpoint,
            TCP4ServerEndpoint,
            TCP6ServerEndpoint,
        )

        site = Site(_FakeResource(self))
        site.displayTracebacks = False
        self._factory = _TrackingFactory(site)
        endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint | SSL4ServerEndpoint
        if self.tls:
            import trustme

            self._ca = trustme.CA()
            names = ["localhost", "127.0.0.1", "::1"]
            address = _address(self.host)
            if self.host not in names and not (address and address.is_unspecified):
                names.append(self.host)
            cert = self._ca.issue_cert(*names)
            from twisted.internet.ssl import PrivateCertificate

            options = PrivateCertificate.loadPEM(
                cert.private_key_and_cert_chain_pem.bytes()
            ).options()
            # SSL4ServerEndpoint takes IPv6 interfaces too: it only passes
            # the address to listenSSL.
            endpoint = SSL4ServerEndpoint(
                self.reactor,
                self.port,
                options,
                interface=self.host,
            )
        elif _is_ipv6(self.host):
            endpoint = TCP6ServerEndpoint(self.reactor, self.port, interface=self.host)
        else:
            endpoint = TCP4ServerEndpoint(self.reactor, self.port, interface=self.host)

        def listening(port: IListeningPort) -> None:
            self._listener = port

        return endpoint.listen(self._factory).addCallback(listening)

    def stop(self) -> Deferred[None]:
        """
        Stop listening, close every open connection (and the pools of
        clients made by L{http_client}), cancel every pending delay.

        @return: Fires when all is closed.
        """
        for exchange in list(self._exchanges):
            exchange.shut()
        waits: list[Deferred[Any]] = [
            pool.closeCachedConnections() for pool in self._pools
        ]
        self._pools = []
        if self._listener is not None:
            waits.append(maybeDeferred(self._listener.stopListening))
            self._listener = None
        if self._factory is not None:
            waits.append(self._factory.close_all())
        return gatherResults(waits).addCallback(lambda _: None)

    @property
    def listening_port(self) -> int:
        """
        The TCP port the fake listens on (the one the system picked when
        L{port} is 0).

        @raise RuntimeError: The fake is not listening.
        """
        if self._listener is None:
            raise RuntimeError("the fake provider is not started")
        port: int = self._listener.getHost().port  # type: ignore[attr-defined]
        return port

    @property
    def base_url(self) -> str:
        """
        C{http://HOST:PORT}, or C{https://HOST:PORT} with TLS: with the
        default host, C{http://127.0.0.1:PORT} or C{https://localhost:PORT}.
        An unspecified host (C{0.0.0.0}, C{::}) is reached on loopback.

        @raise RuntimeError: The fake is not listening.
        """
        port = self.listening_port
        host = self.host
        if host in ("0.0.0.0", "127.0.0.1"):
            # The name the certificate gives for loopback, as clients write it.
            host = "localhost" if self.tls else "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif _is_ipv6(host):
            host = f"[{host}]"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def ca(self) -> trustme.CA:
        """
        The test CA that signed the server certificate (with C{tls=True}).

        @raise RuntimeError: The fake does not use TLS or is not started.
        """
        if self._ca is None:
            raise RuntimeError("no CA: the fake was not started with tls=True")
        return self._ca

    @property
    def open_connections(self) -> int:
        """
        How many client connections are open now.
        """
        return 0 if self._factory is None else len(self._factory.protocols)

    def wait_for_request(self, number: int = 1) -> Deferred[RecordedRequest]:
        """
        Wait until the fake has received C{number} requests in all.

        @param number: Counted from 1 since the fake started.
        @return: Fires with the C{number}th L{RecordedRequest} (at once if it
            has come already), after the fake began answering it.
        """
        if len(self.requests) >= number:
            return succeed(self.requests[number - 1])
        waiter: Deferred[RecordedRequest] = Deferred()
        self._waiters.append((number, waiter))
        return waiter

    def _notify(self) -> None:
        ready = [(n, w) for n, w in self._waiters if n <= len(self.requests)]
        self._waiters = [(n, w) for n, w in self._waiters if n > len(self.requests)]
        for number, waiter in ready:
            waiter.callback(self.requests[number - 1])

    def enqueue(self, *replies: FakeReply) -> None:
        """
        Queue replies, served in order, one per request.

        @param replies: The replies.
        """
        self._queue.extend(replies)

    def http_client(self) -> HTTPClient:
        """
        A C{treq} client with its own connection pool that trusts the fake's
        CA (with C{tls=True}: and only it).  L{stop} closes its pool.

        @return: The client.
        """
        from pylon_ai._http import make_http_client, make_pool

        pool = make_pool(self.reactor)
        self._pools.append(pool)
        trust = None
        if self._ca is not None:
            from twisted.internet.ssl import Certificate

            trust = Certificate.loadPEM(self._ca.cert_pem.bytes())
        return make_http_client(
            self.reactor,
            trust_root=trust,  # type: ignore[arg-type]
            pool=pool,
        )

    def _handle(self, request: Request) -> bytes | int:
        try:
            return self._answer(request)
        finally:
            self._notify()

    def _answer(self, request: Request) -> bytes | int:
        assert request.method is not None and request.uri is not None
        body = request.content.read() if request.content is not None else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        recorded = RecordedRequest(
            request.method.decode("ascii"),
            request.uri.decode("latin-1"),
            headers,
            body,
            parsed,
        )
        self.requests.append(recorded)
        path = request.path.decode("latin-1") if request.path else "/"
        kind: Kind = "completion"
        if path.endswith("/messages/count_tokens"):
            kind = "count_tokens"
        elif path.endswith("/embeddings"):
            kind = "embeddings"
        format: Format = (
            "anthropic"
            if path.endswith("/messages") or kind == "count_tokens"
            else "responses"
            if path.endswith("/responses")
            else "openai"
        )
        if recorded.method != "POST":
            return self._refuse(request, format, 405, "invalid_request_error")
        if not isinstance(parsed, dict):
            return self._refuse(request, format, 400, "invalid_request_error")
        reply = self.responder(recorded) if self.responder is not None else None
        if reply is None:
            reply = self._queue.popleft() if self._queue else self.default_reply
        model = reply.model or parsed.get("model") or "fake-model"
        exchange = _Exchange(
            request,
            recorded,
            reply,
            format,
            str(model),
            cast(IReactorTime, self.clock or self.reactor),
            self._exchanges.discard,
            kind,
        )
        self._exchanges.add(exchange)
        exchange.begin()
        return NOT_DONE_YET

    def _refuse(
        self, request: Request, format: Format, status: int, error_type: str
    ) -> bytes:
        message = (
            "the fake provider answers POST only"
            if status == 405
            else "the request body is not a JSON object"
        )
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        return error_body(format, status, error_type, message)
