"""
A lean HTTP/1.1 client for the requests the library sends to providers: one
POST with a body in memory, its reply read as it comes.

Twisted's C{Agent} is general (any method, body producers, redirects through
treq, retries of idempotent requests, a parser built of line receivers and
stateful dispatchers), and on a gateway's hot path that generality costs
about a fifth of the CPU of a whole request.  This client does one thing: it
writes the request head and body in one write on a pooled connection, parses
the reply's head once it is all there, and hands the body, de-chunked one
read at a time, to a protocol exactly as C{IResponse.deliverBody} does; the
body protocols of L{pylon_ai._stream_call} and L{pylon_ai._body_call}
cannot tell the difference.

Connections, name resolution and TLS stay Twisted's: the endpoint comes from
the agent's endpoint factory (see L{pylon_ai._http}), so the agent's TLS
policy, trust roots and connect timeout apply unchanged.

The pool, and the requests that use it, are here; one connection's protocol
is in L{pylon_ai._h1_connection}, the reply it gives in L{pylon_ai._h1_response}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory

from pylon_ai._h1_connection import MAX_HEAD, H1Connection
from pylon_ai._h1_response import LeanResponse, ProtocolError

__all__ = ["MAX_HEAD", "H1Connection", "LeanPool", "LeanResponse", "ProtocolError"]


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: LeanPool, key: tuple[Any, ...]) -> None:
        self._pool = pool
        self._key = key

    def buildProtocol(self, addr: Any) -> H1Connection:
        return H1Connection(self._pool, self._key)


class _Target:
    # What one URL gives a request: where to connect and the head's start.
    __slots__ = ("key", "start", "uri")

    def __init__(self, url: bytes) -> None:
        uri = URI.fromBytes(url)
        if uri.scheme not in (b"http", b"https"):
            raise ValueError(f"unsupported scheme {uri.scheme!r}")
        path = uri.originForm
        if any(c in path for c in b" \r\n\t\x00") or b"\r" in uri.netloc:
            raise ValueError("a URL with whitespace or control characters")
        default = 443 if uri.scheme == b"https" else 80
        host = b"[%s]" % uri.host if b":" in uri.host else uri.host  # IPv6
        if uri.port != default:
            host += b":%d" % uri.port
        self.uri = uri
        self.key = (uri.scheme, uri.host, uri.port)
        self.start = b"POST " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"


class LeanPool:
    """
    Idle connections per server, and the requests that use them.

    @ivar persistent: Whether connections are kept between requests.
    """

    #: URLs whose parse is remembered.
    TARGETS = 256

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        persistent: bool = True,
        max_idle_per_host: int = 64,
        idle_seconds: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self.persistent = persistent
        self._max_idle = max_idle_per_host
        self._idle_seconds = idle_seconds
        self._idle: dict[tuple[Any, ...], list[H1Connection]] = {}
        self._targets: dict[bytes, _Target] = {}
        self._sweep: IDelayedCall | None = None

    def _target(self, url: bytes) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = _Target(url)
            if len(self._targets) >= self.TARGETS:
                self._targets.clear()
            self._targets[url] = target
        return target

    def request(
        self,
        endpoints: IAgentEndpointFactory,
        url: bytes,
        headers: Headers,
        body: bytes,
    ) -> Deferred[LeanResponse]:
        """
        POST C{body} to C{url}.

        @param endpoints: Where connections come from (and so their TLS).
        @param headers: The request's headers; C{Host} and
            C{Content-Length} are added here.
        @return: A L{Deferred} of the L{LeanResponse} once its head came,
            failing with what L{twisted.web.client.Agent} fails with
            (C{ConnectError}s, L{ResponseNeverReceived}...).  Cancelling it
            drops the connection.
        """
        target = self._target(url)
        parts = [target.start]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts += (name, b": ", value, b"\r\n")
        if not self.persistent:
            parts.append(b"Connection: close\r\n")
        parts += (b"Content-Length: %d\r\n\r\n" % len(body), body)
        data = b"".join(parts)
        key = (id(endpoints), *target.key)
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return self._send(connection, data)
        return self._connect(endpoints, target, key, data)

    def _send(self, connection: H1Connection, data: bytes) -> Deferred[LeanResponse]:
        waiting: Deferred[LeanResponse] = Deferred(
            lambda d: connection.cancel_waiting()
        )
        connection.send(data, waiting)
        return waiting

    def _connect(
        self,
        endpoints: IAgentEndpointFactory,
        target: _Target,
        key: tuple[Any, ...],
        data: bytes,
    ) -> Deferred[LeanResponse]:
        connecting: Deferred[Any] | None = None
        connection: list[H1Connection] = []

        def cancel(d: Deferred[LeanResponse]) -> None:
            if connection:
                connection[0].cancel_waiting()
            elif connecting is not None:
                connecting.cancel()

        waiting: Deferred[LeanResponse] = Deferred(cancel)

        def connected(protocol: H1Connection) -> None:
            if waiting.called:
                protocol.transport.loseConnection()  # type: ignore[union-attr]
                return
            connection.append(protocol)
            protocol.send(data, waiting)

        def failed(failure: Failure) -> None:
            if not waiting.called:
                waiting.errback(failure)

        try:
            endpoint = endpoints.endpointForURI(target.uri)
            connecting = endpoint.connect(_ConnectionFactory(self, key))
        except Exception:
            return fail()
        connecting.addCallbacks(connected, failed)
        return waiting

    def put(self, connection: H1Connection) -> None:
        """
        A connection finished a reply and may take another.
        """
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self._max_idle:
            connection.transport.loseConnection()  # type: ignore[union-attr]
            return
        idle.append(connection)
        connection.idle_since = self._reactor.seconds()
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self._idle_seconds, self._expire)

    def _expire(self) -> None:
        # One timer for the whole pool, not one per connection and request:
        # it closes what has been idle long enough and waits for the next.
        self._sweep = None
        now = self._reactor.seconds()
        due = self._idle_seconds
        earliest: float | None = None
        for idle in list(self._idle.values()):
            for connection in list(idle):
                if now - connection.idle_since >= due:
                    self.forget(connection)
                    if connection.transport is not None:
                        connection.transport.loseConnection()
                elif earliest is None or connection.idle_since < earliest:
                    earliest = connection.idle_since
        if earliest is not None:
            self._sweep = self._reactor.callLater(
                max(earliest + due - now, 0.0), self._expire
            )

    def _stop_sweep(self) -> None:
        sweep, self._sweep = self._sweep, None
        if sweep is not None and sweep.active():
            sweep.cancel()

    def forget(self, connection: H1Connection) -> None:
        """
        A connection closed (or is closing): never hand it out again.
        """
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
            if not idle:
                del self._idle[connection.key]
                if not any(self._idle.values()):
                    self._stop_sweep()

    def close(self) -> Deferred[Any]:
        """
        Close every idle connection.

        @return: A L{Deferred} that fires once they are closed.
        """
        waits: list[Deferred[None]] = []
        for idle in list(self._idle.values()):
            for connection in list(idle):
                if connection.transport is None:
                    continue
                lost: Deferred[None] = Deferred()
                connection.lost = lost
                waits.append(lost)
                connection.transport.loseConnection()
        self._idle.clear()
        self._stop_sweep()
        if not waits:
            return succeed(None)
        return DeferredList(waits)
