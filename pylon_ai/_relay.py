"""
Same-format pass-through of an upstream event stream, at byte speed.

The client speaks the upstream's format, so the events go to it as the
upstream wrote them: each read's complete events in one write, the bytes
untouched.  What the gateway must know (usage, an error event, the end, the
usage chunk it asked for itself) is found by scanning the bytes
(C{decoder.interesting}), or for a read of one event from the object its
check parsed (C{decoder.plain}); only the reads that may carry one are split
into events and decoded, by the same light decoder as before.  In a burst,
once content flows, the run of content events up to the events that end it
is checked and forwarded at once.

Choices:
  - Only complete events are forwarded.  A partial event at the end of a
    read waits for the read that completes it: the attempt is committed
    (no retry after it) by its first I{complete} event, and the usage chunk
    the gateway asked for itself can only be cut out whole.  SSE clients
    buffer partial events anyway, so nothing is gained by sending halves.
  - Plain content reads are still checked to be JSON (one C{orjson.loads}
    of all their events joined into an array, the count of elements
    matching the count of events): a garbled chunk must fail the request on
    every route alike.  Bytes that are not UTF-8 fail that check, and the
    read is then decoded event by event with replacement characters, as a
    translated stream would be.
  - A stream with a CR anywhere (CRLF or CR line ends), or one starting
    with a BOM, is handed to L{SSEProtocol} and its events framed again:
    rare, and correct rather than fast.
  - Events without data (comments, keep-alives) are forwarded with the
    events around them, but never count as the first event.
  - An error event is not forwarded: the call fails with it, and the
    consumer ends the stream with its own error event (as before).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import orjson

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from pylon_ai._call import ignore
from pylon_ai._relay_decode import RelayDecoder, _fields
from pylon_ai._sse import Event, EventTooLong, LineTooLong, SSEProtocol
from pylon_ai.formats._frames import sse_frame
from pylon_ai.formats.events import ModelEvent, StreamError, Usage

__all__ = ["Relay", "RelayDecoder"]

#: How many events at the end of a burst may be left out to find its run
#: of plain content (Responses ends with four that are not deltas).
_TRIM = 5


class Relay(Protocol):
    """
    Reads an upstream's event stream and forwards its events as they came.

    @ivar done: Fires with L{None} when the stream ended cleanly, or fails
        with why it ended otherwise (as L{SSEProtocol.done} does).
    """

    def __init__(
        self,
        decoder: RelayDecoder,
        on_bytes: Callable[[bytes, int], object],
        *,
        on_read: Callable[[], object],
        on_start: Callable[[], object],
        emit: Callable[[Iterable[ModelEvent]], None],
        max_line_length: int,
        max_event_length: int,
        drop_usage: bool = False,
    ) -> None:
        """
        @param decoder: The format's light decoder.
        @param on_bytes: Called with complete events as bytes, and how many
            events they are.
        @param on_read: Called on every read (progress, for the timeouts).
        @param on_start: Called once, before the first event is forwarded.
        @param emit: Delivers decoded model events (raising for an error
            event).
        @param drop_usage: Cut out the usage chunk of a Chat Completions
            stream (one whose C{choices} is empty): the gateway asked for
            it, the client did not.
        """
        self._decoder = decoder
        self._on_bytes = on_bytes
        self._on_read = on_read
        self._on_start = on_start
        self._emit = emit
        self._max_line = max_line_length
        self._max_event = max_event_length
        # A region this small cannot break either bound.
        self._small = min(max_line_length, max_event_length)
        self._drop_usage = drop_usage
        self.done: Deferred[None] = Deferred()
        self._failed: BaseException | None = None
        self._committed = False
        #: Committed, and not handed to SSEProtocol: the inline path is on.
        self._fast = False
        self._first = True
        #: The reads of an event not complete yet.
        self._parts: list[bytes] = []
        self._size = 0  # bytes since the last blank line
        self._line = 0  # bytes since the last line end
        self._nl = False  # whether the held bytes end in a line end
        self._classic: SSEProtocol | None = None

    # -- reading ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._failed is not None or not data:
            return
        self._on_read()
        try:
            # The read nearly every stream is made of, inline: whole events,
            # nothing held, the stream under way, nothing the books need.
            if (
                self._fast
                and not self._parts
                and data[-2:] == b"\n\n"
                and len(data) <= self._small
                and b"\r" not in data
            ):
                end = len(data) - 2
                if data.find(b"\n\n") == end:
                    # One event (a slow upstream): parsed, which checks it,
                    # and the object tells what the bytes would.
                    if data[:6] == b"data: ":
                        start = 6
                    else:
                        start = data.find(b"\n") + 7
                        if (
                            data[:7] != b"event: "
                            or data[start - 6 : start] != b"data: "
                        ):
                            start = 0
                    if start:
                        try:
                            obj = orjson.loads(data[start:end])
                        except ValueError:
                            obj = None
                        if obj is not None and self._decoder.plain(obj):
                            self._on_bytes(data, 1)
                            return
                elif not self._decoder.interesting(data):
                    count = self._valid(data)
                    if count:
                        self._on_bytes(data, count)
                        return
            if self._classic is not None:
                self._classic.dataReceived(data)
                return
            if b"\r" in data or (self._first and data[:1] == b"\xef"):
                self._to_classic(data)
                return
            self._first = False
            self._read(data)
        except BaseException as e:
            # What the consumer raised too: the stream stops, and the call
            # fails with it (as SSEProtocol does).
            self._fail(e)

    def _read(self, data: bytes) -> None:
        parts = self._parts
        if parts:
            if b"\n\n" not in data and not (self._nl and data[:1] == b"\n"):
                self._hold(data)
                return
            parts.append(data)
            buf = b"".join(parts)
            parts.clear()
        else:
            buf = data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._size = self._line = 0
            self._hold(buf)
            return
        end += 2
        region = buf if end == len(buf) else buf[:end]
        self._size = self._line = 0
        if len(region) <= self._small and not self._decoder.interesting(region):
            self._plain(region)
        else:
            self._blocks(region)
        if end < len(buf):
            self._hold(buf[end:])
        else:
            self._nl = False

    def _hold(self, data: bytes) -> None:
        # Part of an event: kept until the event is complete, within bounds.
        self._parts.append(data)
        self._size += len(data)
        nl = data.rfind(b"\n")
        self._line = len(data) - nl - 1 if nl >= 0 else self._line + len(data)
        self._nl = data[-1:] == b"\n"
        if self._line > self._max_line:
            raise LineTooLong(
                f"event stream line longer than {self._max_line} bytes; stream aborted"
            )
        if self._size > self._max_event:
            raise self._too_large()

    def _too_large(self) -> EventTooLong:
        return EventTooLong(
            f"event stream event larger than {self._max_event} bytes; stream aborted"
        )

    def _valid(self, region: bytes) -> int:
        # How many events a region of simple events holds if they all are
        # JSON (one parse for all of them); 0 if it is not that.
        if region[:6] == b"data: ":
            prefix = 6
        elif region[:7] == b"event: ":
            prefix = region.find(b"\n") + 1
            if region[prefix : prefix + 6] != b"data: ":
                return 0
            prefix += 6
        else:
            return 0
        body = region[prefix:-2]
        if b"\n" in body:
            # More than one event: each separator and the next event's
            # prefix become one comma (the same prefix, or a newline stays).
            body = body.replace(b"\n\n" + region[:prefix], b",")
            if b"\n" in body:
                return 0
            count = (len(region) - 2 - prefix - len(body)) // (prefix + 1) + 1
            body = b"[" + body + b"]"
        else:
            count = 1
        try:
            parsed = orjson.loads(body)
        except ValueError:
            return 0
        if count == 1 or (type(parsed) is list and len(parsed) == count):
            return count
        return 0

    def _plain(self, region: bytes) -> None:
        # Content only, as far as the bytes tell: checked, then forwarded
        # whole.
        count = self._valid(region)
        if count:
            if not self._committed:
                self._commit()
            self._on_bytes(region, count)
            return
        self._blocks(region)

    def _head(self, rest: bytes) -> tuple[int, int]:
        # The start of rest (whole events) that is plain, valid content of
        # one kind: rest without up to _TRIM events at its end (a burst
        # ends with the events the books need); its length and event
        # count, or (0, 0).
        if len(rest) > self._small:
            return 0, 0  # the bounds are checked event by event
        nl = rest.find(b"\n")
        prefix = b"data: " if rest[:6] == b"data: " else rest[: nl + 1]
        interesting = self._decoder.interesting
        end = len(rest)
        for _ in range(_TRIM + 1):
            cut = rest.rfind(b"\n\n", 0, end - 2)
            start = cut + 2 if cut >= 0 else 0
            last = rest[start:end]
            if last.startswith(prefix) and not interesting(last):
                break
            end = start
            if not end:
                return 0, 0
        else:
            return 0, 0
        head = rest if end == len(rest) else rest[:end]
        if interesting(head):
            return 0, 0
        count = self._valid(head)
        return (end, count) if count else (0, 0)

    def _blocks(self, region: bytes) -> None:
        # Event by event: each decoded if it may matter; the first one out
        # at once, the rest in one write.  Once content flows, the plain run
        # of events up to the end of the burst is taken at once (_head).
        out: list[bytes] = []
        count = 0
        pos = 0
        size = len(region)
        tried = False
        try:
            while pos < size:
                start = pos
                pos = region.find(b"\n\n", pos)
                if pos < 0:
                    out.append(region[start:])  # blank lines after the last event
                    break
                pos += 2
                raw = region[start:pos]
                block = raw[:-2]
                if len(raw) > self._small:
                    self._check_bounds(block)
                data: bytes | None
                if block[:6] == b"data: " and b"\n" not in block:
                    name, data = "message", block[6:]
                else:
                    name, data = _fields(block)
                if data is None:
                    out.append(raw)
                    continue
                if self._fast and not self._decoder.interesting(raw):
                    if not tried:
                        tried = True
                        end, n = self._head(region[start:] if start else region)
                        if end:
                            out.append(region[start : start + end])
                            count += n
                            pos = start + end
                            continue
                    # Content: checked to be JSON, not decoded.
                    try:
                        orjson.loads(data)
                    except ValueError:
                        pass  # decoded below: it fails there, or is not UTF-8
                    else:
                        out.append(raw)
                        count += 1
                        continue
                first = not self._committed
                kept = self._event(name, data, raw)
                if kept is None:
                    continue
                count += 1
                if first:
                    out.append(kept)
                    ready, n = b"".join(out), count
                    out.clear()
                    count = 0
                    self._on_bytes(ready, n)
                else:
                    out.append(kept)
        finally:
            # Raised or not, what came before goes out (once the stream
            # began: before that the attempt may still be retried).
            if out and self._committed:
                self._on_bytes(b"".join(out), count)

    def _check_bounds(self, block: bytes) -> None:
        if len(block) + 2 > self._max_event:
            raise self._too_large()
        if max(map(len, block.split(b"\n"))) > self._max_line:
            raise LineTooLong(
                f"event stream line longer than {self._max_line} bytes; stream aborted"
            )

    def _event(self, name: str, data: bytes, raw: bytes) -> bytes | None:
        # One event with data: decoded; its bytes to forward, or None.
        text = data.decode("utf-8", "replace")
        events = list(self._decoder.feed(name, text))
        for e in events:
            if type(e) is StreamError:
                self._emit((e,))  # raises: nothing of it goes out
        if not self._committed:
            # Before its model events are delivered: the consumer learns
            # first that this attempt's reply is the one it passes on.
            self._commit()
        if (
            self._drop_usage
            and events
            and any(type(e) is Usage for e in events)
            and b'"choices":[]' in data.replace(b" ", b"")
        ):
            self._emit(events)
            return None
        if not data.isascii() and text.encode("utf-8") != data:
            # Not UTF-8: the client gets the replacement characters.
            raw = sse_frame(text, None if name == "message" else name)
        self._emit(events)
        return raw

    def _commit(self) -> None:
        self._committed = True
        self._fast = self._classic is None
        self._on_start()

    # -- the rare streams: CR line ends, a BOM -------------------------------

    def _to_classic(self, data: bytes) -> None:
        held = b"".join(self._parts)
        self._parts.clear()
        classic = SSEProtocol(self._classic_event, self._max_line, self._max_event)
        classic.transport = self.transport
        classic.done.chainDeferred(self.done)
        self._classic = classic
        self._fast = False
        classic.dataReceived(held + data)

    def _classic_event(self, event: Event) -> None:
        data = event.data.encode("utf-8")
        name = event.type
        raw = sse_frame(data, None if name == "message" else name)
        kept = self._event(name, data, raw)
        if kept is not None:
            self._on_bytes(kept, 1)

    # -- the end ------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None:
            return
        self._failed = exc
        self._parts.clear()
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        self.done.errback(Failure(exc))

    def let_go(self) -> None:
        """
        The call is over: forget the consumer (no cycle through it).
        """
        self._on_bytes = ignore

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        The stream is over; an unterminated last event is dropped.
        """
        if self._classic is not None:
            self._classic.connectionLost(reason)
            return
        if self._failed is not None:
            return
        self._failed = ConnectionDone()
        self._parts.clear()
        if reason is None or reason.check(ResponseDone, ConnectionDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)
