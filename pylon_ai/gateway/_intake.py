"""
What a client must get right before a route sees its request: the C{Host}
and content-type rules of no-key mode, the deadline for the request line and
headers, and the answer past the cap on open connections.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from pylon_ai._send import write_through

#: The C{Host} names of loopback, served in no-key mode with any port.
LOOPBACK_HOSTS = frozenset(("localhost", "127.0.0.1", "[::1]"))


def _split_host(host: str) -> tuple[str, str | None]:
    """
    C{host} as its name and port (L{None} when it has none); a malformed
    value gives a name that matches nothing.
    """
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return "", None
        rest = host[end + 1 :]
        if not rest:
            return host, None
        if rest.startswith(":"):
            return host[: end + 1], rest[1:]
        return "", None
    name, sep, port = host.rpartition(":")
    return (name, port) if sep else (host, None)


def host_allowed(host: str | None, allowed: tuple[str, ...] = ()) -> bool:
    """
    Whether C{host} (a C{Host} header) may be served in no-key mode.

    A page on any web site can point its own host name at 127.0.0.1 (DNS
    rebinding) and then talk to a loopback service as its own origin; the
    browser still sends the page's host name, so serving only loopback
    names (and the operator's C{allowed_hosts}) keeps such pages out.

    @param host: The C{Host} header, if any.
    @param allowed: The configured C{allowed_hosts}: a name matches with
        any port, a C{name:port} with that port only.
    @return: C{True} for C{localhost}, C{127.0.0.1}, C{[::1]} and the
        allowed names, with or without a port, in any case.
    """
    if not host:
        return False
    host = host.lower()
    name, port = _split_host(host)
    if port is not None and not port.isdigit():
        return False
    if name in LOOPBACK_HOSTS:
        return True
    for entry in allowed:
        entry = entry.lower()
        if entry == name or entry == host:
            return True
    return False


def is_json_type(content_type: bytes | None) -> bool:
    """
    Whether a C{Content-Type} value is C{application/json}, with or without
    parameters such as C{charset=utf-8}.
    """
    if content_type is None:
        return False
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


def _plain_response(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: application/json\r\n"
        b"connection: close\r\n" + extra + b"content-length: %d\r\n\r\n" % len(body)
    ) + body


#: The answer to a client that sent part of a request but not its headers in
#: time (OpenAI's error shape: the path may not be known yet).
REQUEST_TIMEOUT = _plain_response(
    b"408 Request Timeout",
    b'{"error":{"message":"the request headers did not arrive in time",'
    b'"type":"invalid_request_error","code":"request_timeout"}}',
)
#: The answer to a connection past C{max_connections}.
TOO_MANY_CONNECTIONS = _plain_response(
    b"503 Service Unavailable",
    b'{"error":{"message":"too many open connections to the gateway; retry",'
    b'"type":"overloaded_error","code":"overloaded"}}',
    b"retry-after: 1\r\n",
)


# RFC 9110 token characters: a method, a header's name.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What Twisted accepts as a request target: printable, no space.
_TARGET = re.compile(rb"[\x21-\xb0]+")
# Not in a header's value (RFC 9110 section 5.5).
_NOT_IN_VALUE = re.compile(rb"[\x00\r\n]")
# Headers the plain path leaves to Twisted's parser: other framings, and
# what asks for an interim answer.
_NOT_PLAIN = frozenset((b"transfer-encoding", b"expect"))

#: A request as L{split_request} finds it: method, target, headers (name,
#: value) in order, body.
Whole = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]


def split_request(
    data: bytes, max_head: int = 16384, max_headers: int = 500
) -> Whole | None:
    """
    Split C{data} when it is exactly one plain HTTP/1.1 request: the request
    line, header lines each C{name: value} (no folded lines, no
    C{Transfer-Encoding} or C{Expect}), at most one C{Content-Length}, and
    a body of just that length.

    What a client sends in one write nearly always is; anything else (a
    part, two pipelined requests, a chunked body, anything malformed) gives
    L{None} and is left to Twisted's parser, which answers the malformed.

    @param max_head: The longest request line and headers taken.
    @param max_headers: The most header lines taken.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > max_head:
        return None
    lines = data[:end].split(b"\r\n")
    if len(lines) > max_headers + 1:
        return None
    first = lines[0].split(b" ")
    if len(first) != 3:
        return None
    method, target, version = first
    if (
        version != b"HTTP/1.1"
        or not _TOKEN.fullmatch(method)
        or not _TARGET.fullmatch(target)
    ):
        return None
    headers = []
    length = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return None
        value = value.strip(b" \t")
        if _NOT_IN_VALUE.search(value):
            return None
        lower = name.lower()
        if lower == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif lower in _NOT_PLAIN:
            return None
        headers.append((name, value))
    body = data[end + 4 :]
    if len(body) != (length or 0):
        return None
    return method, target, headers, body


def _one_pass_possible() -> bool:
    # The one-pass path reads and sets HTTPChannel's own parser state (the
    # same names from Twisted 24.7 to 26.10); a Twisted without them keeps
    # the line-by-line path.
    channel = HTTPChannel()
    return all(
        hasattr(channel, name)
        for name in (
            "_HTTPChannel__first_line",
            "_handlingRequest",
            "_savedTimeOut",
            "line_mode",
            "_buffer",
            "totalHeadersSize",
            "maxHeaders",
            "checkPersistence",
            "setRawMode",
        )
    )


class GatewayChannel(HTTPChannel):
    """
    An C{HTTPChannel} that gives a client C{header_timeout} seconds to send
    the request line and headers: from the connection's start, then, on a
    kept-alive connection, from the first byte of the next request.  A
    kept-alive connection with no request begun is closed after
    C{keepalive_timeout} seconds.

    Twisted's idle timeout restarts on every byte, so a client sending one
    byte a second holds a connection for ever; this deadline does not move.
    Once the headers are in there is no deadline: a long stream is fine.

    @ivar header_timeout: Seconds, or L{None} for no deadline.
    @ivar keepalive_timeout: Seconds, or L{None} for no limit.
    """

    header_timeout: float | None = None
    keepalive_timeout: float | None = None
    #: The clock of the deadlines (the site's reactor).
    clock: Any = None
    #: When the wait going on now ends (the clock's seconds), or L{None}.
    _due: float | None = None
    # One lazy timer: a new deadline only moves it when it must fire
    # sooner, so a kept-alive connection's requests set no timer each.
    _timer: IDelayedCall | None = None
    #: Kept alive, between two requests: the next byte starts a request.
    _between = False
    _host: Any = None
    #: A reply's head, held until its first body bytes (see writeHeaders).
    _head: bytes | None = None
    # HTTPChannel's own (name-mangled there): 1 while waiting for the
    # request line of the next request.
    _HTTPChannel__first_line: int
    #: Whether a request that arrives whole is taken in one pass.
    one_pass = _one_pass_possible()

    def connectionMade(self) -> None:
        super().connectionMade()
        self._await_headers()

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        # Held and sent with the body's first bytes, in one write straight
        # to the socket: Twisted's own goes to the transport's buffer, which
        # costs two epoll_ctl calls (writable, then not) on every reply.
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self._head = b"".join(head)

    def write(self, data: bytes) -> None:
        # The events of a stream: straight to the socket when nothing is
        # waiting to be sent (see write_through).
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        if not write_through(self.transport, data):
            super().write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        head = self._head
        if head is not None:
            self._head = None
            iovec = [head, *iovec]
        if not write_through(self.transport, b"".join(iovec)):
            super().writeSequence(iovec)

    def _send_head(self) -> None:
        # A reply with no body bytes (a HEAD, a 204): its head alone.
        if self._head is not None:
            self.write(b"")

    def getHost(self) -> Any:
        # Asked by every request; a TCP transport answers with a system
        # call each time, and a connection's own address does not change.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def dataReceived(self, data: bytes) -> None:
        if self._between:
            self._await_headers()
        if (
            self.one_pass
            and self._HTTPChannel__first_line == 1
            and self.line_mode
            and not self._buffer
            and not self._handlingRequest
            and self.persistent
        ):
            # Between requests, nothing of the next one read yet: a whole
            # plain request (what a client nearly always sends) is taken in
            # one pass rather than line by line.
            whole = split_request(data, self.totalHeadersSize, self.maxHeaders)
            if whole is not None:
                self.resetTimeout()
                self._whole_request(*whole)
                return
        super().dataReceived(data)

    def _whole_request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        # What HTTPChannel's lineReceived, headerReceived, allHeadersReceived
        # and allContentReceived do for such a request, in that order.
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        add = request.requestHeaders.addRawHeader
        for name, value in headers:
            add(name, value)
        self._stop_waiting()
        # Read while the head is in (a refusal's error shape is the route's).
        self._command, self._path, self._version = method, target, b"HTTP/1.1"
        request.parseCookies()
        self.persistent = self.checkPersistence(request, b"HTTP/1.1")
        request.gotLength(len(body))
        if body:
            request.handleContentChunk(body)
        del self._command, self._path, self._version
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)
        self._handlingRequest = True
        self.setRawMode()
        request.requestReceived(method, target, b"HTTP/1.1")

    def allHeadersReceived(self) -> None:
        self._stop_waiting()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        self._send_head()
        # Before Twisted goes on: it parses a pipelined request at once.
        if self.persistent:
            self._stop_waiting()
            self._between = True
            if self.keepalive_timeout:
                self._wait(self.keepalive_timeout)
        super().requestDone(request)

    def loseConnection(self) -> None:
        # Pending bytes go out before the close; a held head is pending.
        self._send_head()
        super().loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.handed_over()
        super().connectionLost(reason)

    def handed_over(self) -> None:
        """
        The connection is no longer this channel's (closed, or taken over
        by a WebSocket): no deadline of its runs any more.
        """
        self._stop_waiting()
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _await_headers(self) -> None:
        self._stop_waiting()
        if self.header_timeout:
            self._wait(self.header_timeout)

    def _now(self) -> float:
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        return float(clock.seconds())

    def _wait(self, seconds: float) -> None:
        due = self._now() + seconds
        self._due = due
        timer = self._timer
        if timer is None or not timer.active():
            self._timer = self.callLater(seconds, self._deadline)
        elif timer.getTime() > due:
            timer.reset(seconds)

    def _stop_waiting(self) -> None:
        self._between = False
        self._due = None

    def _deadline(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return
        now = self._now()
        if now < due:
            self._timer = self.callLater(due - now, self._deadline)
            return
        self._due = None
        self._too_late()

    def _too_late(self) -> None:
        transport = self.transport
        if transport is None:
            return
        # A kept-alive connection that was merely idle is closed without an
        # answer (a client may be sending its next request right now and
        # would read a 408 as the answer to it); a started request gets one.
        if self.requests or getattr(self, "_buffer", None):
            transport.write(REQUEST_TIMEOUT)
        self.loseConnection()
        if self.abortTimeout is not None:
            # As Twisted's own timeout does: a client that does not read
            # must not keep the connection either.
            self._abortingCall = self.callLater(
                self.abortTimeout, self.forceAbortClient
            )


class Busy(Protocol):
    """
    The protocol of a connection past the cap: a 503, then the close.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(TOO_MANY_CONNECTIONS)
        self.transport.loseConnection()
