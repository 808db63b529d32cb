"""
An incremental server-sent events parser on L{LineReceiver}.

It follows the WHATWG "event stream" rules: CR, LF and CRLF line ends (mixed
freely, and split across reads), one leading BOM, comments, fields without a
colon, one space after the colon stripped, C{data} lines joined with C{\\n},
C{id} containing NUL ignored, C{retry} only when all ASCII digits, the last
event id kept across events, and an unterminated last event dropped.

Two bounds keep a misbehaving stream from filling memory: one line
(C{max_line_length}, 1 MiB by default) and one event, all its C{data} lines
together (C{max_event_length}, 16 MiB by default).

Lines are split as bytes and decoded one by one: CR and LF never occur inside
a multi-byte UTF-8 sequence, so a character split across reads is whole again
by the time its line is decoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from attrs import frozen

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

__all__ = [
    "DEFAULT_MAX_EVENT_LENGTH",
    "DEFAULT_MAX_LINE_LENGTH",
    "Event",
    "EventTooLong",
    "LineTooLong",
    "SSEFactory",
    "SSEProtocol",
]

#: The default bound on one line, in bytes (tool-call arguments can be long).
DEFAULT_MAX_LINE_LENGTH = 1 << 20
#: The default bound on one event, all its C{data} lines together, in bytes.
DEFAULT_MAX_EVENT_LENGTH = 16 << 20

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(b"\r\n|\r|\n")


@frozen
class Event:
    """
    One dispatched server-sent event.

    @ivar type: The event type; C{"message"} when the stream names none.
    @ivar data: The data lines, joined with C{"\\n"}.
    @ivar id: The last event id of the stream at this point (C{""} if none).
    @ivar retry: The reconnection time in milliseconds last set by a valid
        C{retry} field so far in the stream, or L{None}.
    """

    type: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class LineTooLong(Exception):
    """
    A line of the stream was longer than the parser's bound.
    """


class EventTooLong(Exception):
    """
    One event of the stream (its C{data} lines together) was larger than the
    parser's bound.
    """


class SSEProtocol(LineReceiver):
    """
    Turns the bytes of an event stream into L{Event}s as they arrive.

    Hand it to C{IResponse.deliverBody}, or feed it with L{dataReceived}
    directly.  L{done} fires with L{None} when the stream ends cleanly, or
    fails with the reason it ended otherwise, with L{LineTooLong} when a line
    exceeds the line bound, with L{EventTooLong} when the C{data} lines of one
    event exceed the event bound, or with the exception C{on_event} raised
    (after which the transport is told to stop producing and no more events
    come).

    An event's size is counted as its lines arrive: the bytes of each
    C{data} line, field name included, plus one per line end.  So neither
    many short lines without the blank line that ends an event, nor one
    long line, make the parser hold more than about the sum of both bounds.

    @ivar done: A L{Deferred} that fires once, when the stream is over.
    @ivar max_event_length: The bound on one event, in bytes.
    @ivar lastEventId: The last event id seen so far.
    @ivar retry: The last valid reconnection time seen so far, or L{None}.
    """

    delimiter = b"\n"

    def __init__(
        self,
        on_event: Callable[[Event], object],
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_event_length: int = DEFAULT_MAX_EVENT_LENGTH,
    ) -> None:
        """
        @param on_event: Called with each dispatched L{Event}, in order.
        @param max_line_length: The longest line accepted, in bytes.
        @param max_event_length: The largest event accepted: the bytes of
            its C{data} lines and their line ends.
        """
        self._on_event = on_event
        self.MAX_LENGTH = max_line_length
        self.max_event_length = max_event_length
        # The size of the event being collected, kept as a running count so
        # that the check costs one addition per line.
        self._event_size = 0
        self.done: Deferred[None] = Deferred()
        self.lastEventId = ""
        self.retry: int | None = None
        self._event_type = ""
        self._data: list[bytes] = []
        self._bom_checked = False
        # The previous read ended in CR: a LF at the start of the next read is
        # the second half of a CRLF, not an empty line.
        self._skip_lf = False
        self._failed: BaseException | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Parse some more bytes of the stream.

        @param data: The bytes, in any split.
        """
        if self._failed is not None or not data:
            return
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        buf = self._buffer + data if self._buffer else data
        if not self._bom_checked:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buffer = buf
                return
            self._bom_checked = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        if b"\r" in buf:
            lines = _LINE_END.split(buf)
            self._skip_lf = buf.endswith(b"\r")
        else:
            lines = buf.split(b"\n")
        rest = lines.pop()
        self._buffer = b""
        max_length = self.MAX_LENGTH
        max_event = self.max_event_length
        size = self._event_size
        pending = self._data
        # Complete lines first: the events they finish are owed to the
        # caller whatever the split, even if the tail is over the bound.
        # Blank, data and event lines, nearly all of a stream, are handled
        # inline: this loop runs for every line of every stream.
        for line in lines:
            if not line:
                if pending:
                    self._dispatch()
                    if self._failed is not None:
                        return
                    pending = self._data
                    size = 0
                else:
                    self._event_type = ""
            elif len(line) > max_length:
                self.lineLengthExceeded(line)
                return
            elif line[:5] == b"data:":
                size += len(line) + 1
                if size > max_event:
                    self.eventLengthExceeded()
                    return
                pending.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[:6] == b"event:":
                # Every event of an Anthropic stream has one.
                self._event_type = (line[7:] if line[6:7] == b" " else line[6:]).decode(
                    "utf-8", "replace"
                )
            else:
                self._event_size = size
                self.lineReceived(line)
                if self._failed is not None:
                    return
                pending = self._data
                size = self._event_size
        self._event_size = size
        if len(rest) > self.MAX_LENGTH:
            self.lineLengthExceeded(rest)
            return
        self._buffer = rest

    def lineReceived(self, line: bytes) -> None:
        """
        Interpret one line of the stream (without its line end).
        """
        if not line:
            self._dispatch()
            return
        if line[0] == 0x3A:  # ":" starts a comment
            return
        name, colon, raw = line.partition(b":")
        if colon and raw[:1] == b" ":
            raw = raw[1:]
        if name == b"data":
            self._event_size += len(line) + 1
            if self._event_size > self.max_event_length:
                self.eventLengthExceeded()
                return
            self._data.append(raw)
        elif name == b"event":
            self._event_type = raw.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in raw:
                self.lastEventId = raw.decode("utf-8", "replace")
        elif name == b"retry":
            if raw.isdigit():
                try:
                    self.retry = int(raw)
                except ValueError:
                    # Past sys.get_int_max_str_digits(): no sane delay anyway.
                    pass

    def _dispatch(self) -> None:
        if not self._data:
            self._event_type = ""
            return
        data = self._data
        self._event_size = 0
        event = Event(
            self._event_type or "message",
            (data[0] if len(data) == 1 else b"\n".join(data)).decode(
                "utf-8", "replace"
            ),
            self.lastEventId,
            self.retry,
        )
        self._data = []
        self._event_type = ""
        try:
            self._on_event(event)
        except BaseException as e:
            self._fail(e)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line went past the bound: stop the stream and fail L{done}.
        """
        self._fail(
            LineTooLong(
                f"event stream line longer than {self.MAX_LENGTH} bytes; stream aborted"
            )
        )

    def eventLengthExceeded(self) -> None:
        """
        An event went past the bound: stop the stream and fail L{done}.
        """
        self._fail(
            EventTooLong(
                f"event stream event larger than {self.max_event_length} bytes; "
                "stream aborted"
            )
        )

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None:
            return
        self._failed = exc
        self._buffer = b""
        self._data = []
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        self.done.errback(Failure(exc))

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        The stream is over; an unterminated last event is dropped.

        @param reason: Why the stream ended (L{None} means a clean end).
            L{ResponseDone} and L{ConnectionDone} count as a clean end.
        """
        if self._failed is not None:
            return
        self._failed = ConnectionDone()  # nothing more is parsed
        self._buffer = b""
        self._data = []
        if reason is None or reason.check(ResponseDone, ConnectionDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)


class SSEFactory(Factory):
    """
    Builds an L{SSEProtocol} per connection, for event streams read straight
    off a socket (e.g. C{connectProtocol} is not enough because each
    connection needs its own parser state).

    @ivar on_event: Called with each event of every connection.
    """

    protocol = SSEProtocol

    def __init__(
        self,
        on_event: Callable[[Event], object],
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_event_length: int = DEFAULT_MAX_EVENT_LENGTH,
    ) -> None:
        self.on_event = on_event
        self.max_line_length = max_line_length
        self.max_event_length = max_event_length

    def buildProtocol(self, addr: object) -> SSEProtocol:
        proto = SSEProtocol(self.on_event, self.max_line_length, self.max_event_length)
        proto.factory = self
        return proto
