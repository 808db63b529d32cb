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
body protocols of L{pylon_ai._upstream} cannot tell the difference.

Connections, name resolution and TLS stay Twisted's: the endpoint comes from
the agent's endpoint factory (see L{pylon_ai._http}), so the agent's TLS
policy, trust roots and connect timeout apply unchanged.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory

from pylon_ai._send import send_now, write_through

#: The largest response head read (status line and headers).
MAX_HEAD = 64 * 1024
#: The longest chunk-size line accepted (with extensions) and trailer line.
_MAX_CHUNK_LINE = 4096
_HEX = b"0123456789abcdefABCDEF"

# How a reply's body is framed.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)
# Where a connection is.
_IDLE, _HEAD, _BODY, _GONE = range(4)


class ProtocolError(Exception):
    """
    The server's reply is not HTTP/1.1 this client can read.
    """


class LeanResponse:
    """
    A reply, as C{IResponse} has it: C{code}, C{phrase}, C{version},
    C{length}, C{headers} and L{deliverBody}.
    """

    def __init__(
        self,
        connection: H1Connection,
        version: tuple[bytes, int, int],
        code: int,
        phrase: bytes,
        raw: list[tuple[bytes, bytes]],
        length: int | None,
    ) -> None:
        self._connection = connection
        self.version = version
        self.code = code
        self.phrase = phrase
        self.length = length
        self._raw = raw
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """
        The reply's headers (built on first use).
        """
        if self._headers is None:
            headers = Headers()
            for name, value in self._raw:
                headers.addRawHeader(name, value)
            self._headers = headers
        return self._headers

    def raw_header(self, name: bytes) -> bytes | None:
        """
        The first value of a header, without building L{headers}.

        @param name: The name, in lower case.
        """
        for key, value in self._raw:
            if key == name:
                return value
        return None

    def deliverBody(self, protocol: Protocol) -> None:
        """
        Give the body to C{protocol}: its C{dataReceived} gets the body one
        read at a time and its C{connectionLost} the end (L{ResponseDone},
        L{PotentialDataLoss} for a body that ends with the connection, or
        L{ResponseFailed}).  Its transport pauses, resumes or stops the
        body.
        """
        self._connection.deliver(protocol)


@implementer(IPushProducer)
class _BodyTransport:
    # What a body protocol sees as its transport, until its body ended:
    # then the connection may carry the next request, which a late pause or
    # stop from this reader must not touch (Twisted's stopProxying).

    def __init__(self, connection: H1Connection) -> None:
        self._connection: H1Connection | None = connection

    def detach(self) -> None:
        self._connection = None

    def pauseProducing(self) -> None:
        connection = self._connection
        if connection is not None and connection.transport is not None:
            connection.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        connection = self._connection
        if connection is not None and connection.transport is not None:
            connection.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        if self._connection is not None:
            self._connection.abandon()

    def loseConnection(self) -> None:
        self.stopProducing()


def _parse_head(
    head: bytes,
) -> tuple[tuple[bytes, int, int], int, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    minor = status[0][7:]
    if minor not in (b"0", b"1"):
        raise ProtocolError(f"unknown HTTP version {status[0][:20]!r}")
    code_text = status[1]
    if len(code_text) != 3 or not code_text.isdigit():
        raise ProtocolError(f"bad status code {code_text[:20]!r}")
    raw: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        raw.append((name.lower(), value.strip(b" \t")))
    phrase = status[2] if len(status) > 2 else b""
    return (b"HTTP", 1, int(minor)), int(code_text), phrase, raw


class H1Connection(Protocol):
    """
    One connection to a server: a request at a time, kept in its pool
    between requests while the server allows it.
    """

    def __init__(self, pool: LeanPool, key: tuple[Any, ...]) -> None:
        self._pool = pool
        self.key = key
        self.state = _IDLE
        self._waiting: Deferred[LeanResponse] | None = None
        self._buffer = b""
        self._mode = _NONE
        self._remaining = 0
        self._chunk_left = 0
        self._after_chunk = False
        self._trailers = False
        self._keep = True
        self._body: Protocol | None = None
        self._body_transport: _BodyTransport | None = None
        self._early: list[bytes] = []
        self._ended: Failure | None = None
        #: When it went back to the pool (the pool's clock).
        self.idle_since = 0.0
        self.lost: Deferred[None] | None = None

    def connectionMade(self) -> None:
        # Each request is one write, but a reply's pieces must not wait
        # on Nagle either way (as in Twisted's own client).
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)

    # -- the pool's side ------------------------------------------------

    def send(self, data: bytes, waiting: Deferred[LeanResponse]) -> None:
        """
        Write one request (head and body) and give its reply to C{waiting}.
        """
        self.state = _HEAD
        self._waiting = waiting
        self._buffer = b""
        self._body = None
        self._early = []
        self._ended = None
        assert self.transport is not None
        # Straight to the socket when it is plain TCP and idle (no writer
        # registration); else written, and sent before the turn goes on.
        if not write_through(self.transport, data):
            self.transport.write(data)
            send_now(self.transport)

    def usable(self) -> bool:
        """
        Whether a pooled connection can take a request.
        """
        transport = self.transport
        return (
            self.state == _IDLE
            and transport is not None
            and not getattr(transport, "disconnecting", False)
            and not getattr(transport, "disconnected", False)
        )

    def cancel_waiting(self) -> None:
        """
        The request was cancelled before its reply came: drop the
        connection.
        """
        self._waiting = None
        self._drop()

    def abandon(self) -> None:
        """
        The body's reader wants no more of it: drop the connection, and
        tell the reader the body ended (as Twisted's client does).
        """
        if self.state == _BODY:
            self._keep = False
            self._ended = Failure(ResponseFailed([Failure(ConnectionAborted())]))
            self._early = []
            if self._body is not None:
                self._finish_if_delivered()
            self._drop()

    def _drop(self) -> None:
        self.state = _GONE
        transport = self.transport
        if transport is not None and not getattr(transport, "disconnected", False):
            transport.abortConnection()  # type: ignore[attr-defined]

    # -- the reply ------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        state = self.state
        if state == _BODY:
            if self._ended is None:
                self._body_bytes(data)
            else:
                # Bytes after a reply whose reader has not come yet.
                self._keep = False
        elif state == _HEAD:
            self._head_bytes(data)
        elif state == _IDLE:
            # Bytes nobody asked for: the connection cannot be trusted.
            self._drop()

    def _head_bytes(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD:
                # Whole or not, whatever the reads.
                if end > MAX_HEAD or len(buffer) > MAX_HEAD:
                    self._fail_head(ProtocolError("the response head is too large"))
                else:
                    self._buffer = buffer
                return
            try:
                version, code, phrase, raw = _parse_head(buffer[:end])
            except ProtocolError as e:
                self._fail_head(e)
                return
            buffer = buffer[end + 4 :]
            if 100 <= code < 200:
                continue  # 100 Continue and the like: the reply follows
            break
        self._buffer = b""
        try:
            length = self._framing(version, code, raw)
        except ProtocolError as e:
            self._fail_head(e)
            return
        self.state = _BODY
        response = LeanResponse(self, version, code, phrase, raw, length)
        waiting, self._waiting = self._waiting, None
        if self._mode == _NONE:
            self._ended = Failure(ResponseDone())
            if buffer:
                self._keep = False
        if waiting is not None:
            waiting.callback(response)
        if self._mode != _NONE and buffer and self.state == _BODY:
            self._body_bytes(buffer)
        elif self._mode == _NONE:
            self._finish_if_delivered()

    def _framing(
        self, version: tuple[bytes, int, int], code: int, raw: list[tuple[bytes, bytes]]
    ) -> int | None:
        keep = version[2] >= 1
        chunked = False
        length: int | None = None
        for name, value in raw:
            if name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                if codings and codings[-1] == b"chunked":
                    chunked = True
                elif value.strip():
                    keep = False  # another coding: read until the close
            elif name == b"content-length":
                if not value.isdigit():
                    raise ProtocolError(f"bad content-length {value[:20]!r}")
                if length is not None and int(value) != length:
                    raise ProtocolError("conflicting content-length headers")
                length = int(value)
            elif name == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep = False
                elif b"keep-alive" in tokens:
                    keep = True
        self._keep = keep and self._pool.persistent
        if code in (204, 304):
            self._mode = _NONE
            return 0
        if chunked:
            self._mode = _CHUNKED
            self._chunk_left = 0
            self._after_chunk = False
            self._trailers = False
            return None
        if length is not None:
            if length == 0:
                self._mode = _NONE
            else:
                self._mode = _LENGTH
                self._remaining = length
            return length
        self._mode = _UNTIL_CLOSE
        self._keep = False
        return None

    def _fail_head(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, None
        self._drop()
        if waiting is not None:
            waiting.errback(ResponseNeverReceived([Failure(error)]))

    def _body_bytes(self, data: bytes) -> None:
        mode = self._mode
        if mode == _LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                self._give(data)
                return
            self._remaining = 0
            self._give(data[:remaining] if len(data) > remaining else data)
            self._end(len(data) > remaining)
        elif mode == _CHUNKED:
            self._chunks(data)
        else:
            self._give(data)

    def _chunks(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        size = len(buffer)
        pos = 0
        parts: list[bytes] = []
        error: ProtocolError | None = None
        while pos < size:
            left = self._chunk_left
            if left:
                take = size - pos if size - pos < left else left
                parts.append(buffer if take == size else buffer[pos : pos + take])
                pos += take
                self._chunk_left = left - take
                if not self._chunk_left:
                    self._after_chunk = True
                continue
            if self._after_chunk:
                if size - pos < 2:
                    self._buffer = buffer[pos:]
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    error = ProtocolError("a chunk does not end in CRLF")
                    break
                pos += 2
                self._after_chunk = False
                continue
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                if size - pos > _MAX_CHUNK_LINE:
                    error = ProtocolError("a chunk-size line is too long")
                    break
                self._buffer = buffer[pos:]
                break
            line = buffer[pos:eol]
            pos = eol + 2
            if self._trailers:
                if not line:
                    if parts:
                        self._give(b"".join(parts))
                        if self.state != _BODY:
                            return
                    self._end(pos < size)
                    return
                continue
            digits = line.split(b";", 1)[0].strip()
            # Hex digits only: int() also takes "0x", "_" and signs.
            if not digits or digits.translate(None, _HEX):
                error = ProtocolError(f"bad chunk size {line[:20]!r}")
                break
            chunk = int(digits, 16)
            if chunk:
                self._chunk_left = chunk
            else:
                self._trailers = True
        if parts:
            # The good chunks before an error are the reader's all the same,
            # whatever the reads.
            self._give(parts[0] if len(parts) == 1 else b"".join(parts))
        if error is not None and self.state == _BODY:
            self._body_failed(error)

    def _give(self, data: bytes) -> None:
        body = self._body
        if body is None:
            self._early.append(data)
        else:
            body.dataReceived(data)

    def _end(self, extra: bool) -> None:
        # The whole body arrived.
        if self.state != _BODY:
            return  # its reader gave up on it meanwhile
        if extra:
            self._keep = False  # bytes after the reply: not reused
        self._ended = Failure(ResponseDone())
        self._finish_if_delivered()

    def _body_failed(self, error: Exception) -> None:
        self._ended = Failure(ResponseFailed([Failure(error)]))
        self._keep = False
        self._finish_if_delivered()
        self._drop()

    def _finish_if_delivered(self) -> None:
        body = self._body
        if body is None or self._ended is None:
            return
        ended, self._ended = self._ended, None
        reusable = self._keep and self.state == _BODY and ended.check(ResponseDone)
        self.state = _IDLE if reusable else _GONE
        self._body = None
        if self._body_transport is not None:
            self._body_transport.detach()
            self._body_transport = None
        if self.state == _IDLE and self.usable():
            # Its reader may have paused it just as the body ended; and it is
            # pooled before the reader hears of the end, so that a request
            # made from there uses it (as in Twisted's client).
            self.transport.resumeProducing()  # type: ignore[union-attr]
            self._pool.put(self)
        else:
            self._drop()
        body.connectionLost(ended)

    def deliver(self, protocol: Protocol) -> None:
        """
        See L{LeanResponse.deliverBody}.
        """
        self._body = protocol
        self._body_transport = _BodyTransport(self)
        protocol.makeConnection(self._body_transport)
        early, self._early = self._early, []
        for data in early:
            if self._body is not protocol:
                return
            protocol.dataReceived(data)
        self._finish_if_delivered()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        state, self.state = self.state, _GONE
        self._pool.forget(self)
        if self.lost is not None:
            lost, self.lost = self.lost, None
            lost.callback(None)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(ResponseNeverReceived([reason]))
            return
        if state != _BODY or self._ended is not None:
            return
        if self._mode == _UNTIL_CLOSE:
            self._ended = Failure(PotentialDataLoss())
        else:
            self._ended = Failure(ResponseFailed([reason]))
        if self._body is not None:
            self._finish_if_delivered()


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
