"""
One connection of the lean HTTP/1.1 client (see L{pylon_ai._h1}): it writes a
request, reads its reply's head, frames the body (by length, chunked or until
the close), de-chunks it and hands it to the body's reader, then goes back to
its pool while the server allows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss

from pylon_ai._h1_response import (
    LeanResponse,
    ProtocolError,
    _BodyTransport,
    _parse_head,
)
from pylon_ai._send import send_now, write_through

if TYPE_CHECKING:
    from pylon_ai._h1 import LeanPool

#: The largest response head read (status line and headers).
MAX_HEAD = 64 * 1024
#: The longest chunk-size line accepted (with extensions) and trailer line.
_MAX_CHUNK_LINE = 4096
_HEX = b"0123456789abcdefABCDEF"

# How a reply's body is framed.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)
# Where a connection is.
_IDLE, _HEAD, _BODY, _GONE = range(4)


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
