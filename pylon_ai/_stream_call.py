"""
One POST to a provider whose reply is an event stream (L{StreamCall}, which
the library's plugin and the gateway use): the SSE body read with the idle
timeout noted on every read, decoded into model events or relayed as bytes,
and the flow control a slow client applies to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from typing import Protocol as TypingProtocol

from zope.interface import implementer

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from pylon_ai._call import _Call, _ErrorBody, ignore
from pylon_ai._call_errors import _scrubbed_text
from pylon_ai._errors import ProviderStreamError, excerpt
from pylon_ai._relay import Relay
from pylon_ai._sse import (
    DEFAULT_MAX_EVENT_LENGTH,
    DEFAULT_MAX_LINE_LENGTH,
    Event,
    EventTooLong,
    LineTooLong,
    SSEProtocol,
)
from pylon_ai.formats.events import ModelEvent, StreamError


class StreamDecoder(TypingProtocol):
    """
    Turns SSE events of one wire format into model events.
    """

    finished: bool

    def feed(self, event_type: str, data: str) -> Iterable[ModelEvent]: ...

    def finish(self) -> Iterable[ModelEvent] | None: ...


class _UpstreamBody(SSEProtocol):
    """
    The SSE parser, noting progress for the idle timeout on every read.
    """

    def __init__(
        self,
        call: StreamCall,
        on_event: Callable[[Event], object],
        max_line: int,
        max_event: int,
    ) -> None:
        super().__init__(on_event, max_line, max_event)
        self._call = call

    def dataReceived(self, data: bytes) -> None:
        call = self._call
        call.progress()
        super().dataReceived(data)
        if call.on_flush is not None:
            call.on_flush()


class StreamCall(_Call):
    """
    One POST to a provider whose reply is an event stream.

    L{deferred} fires with L{None} once the stream finished cleanly, after
    C{on_event} saw every model event; it fails with a L{ProviderError} (or
    the exception C{on_event} raised) otherwise.  Cancelling it aborts the
    request and closes its connection.

    L{ProviderError}s it fails with never hold the request's own
    credentials (its C{authorization}, C{x-api-key}... header values), nor
    anything that looks like one.

    @ivar deferred: The outcome.
    @ivar response: The upstream response once its headers arrived.
    @ivar max_event_length: The largest SSE event accepted (see
        L{SSEProtocol}); it may be changed until the response arrives.
    """

    def __init__(
        self,
        clock: IReactorTime,
        decoder: StreamDecoder,
        on_event: Callable[[ModelEvent], object],
        *,
        label: str,
        timeout: float,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_event_length: int = DEFAULT_MAX_EVENT_LENGTH,
        on_sse: Callable[[Event, list[ModelEvent]], object] | None = None,
        first_byte_timeout: float | None = None,
        request_timeout: float | None = None,
        on_start: Callable[[], object] | None = None,
        on_flush: Callable[[], object] | None = None,
        on_bytes: Callable[[bytes, int], object] | None = None,
        drop_usage: bool = False,
    ) -> None:
        """
        @param clock: Schedules the idle timeout.
        @param decoder: The wire format's decoder.
        @param on_event: Called with each model event, in order.
        @param label: Names the provider in error messages (never a key).
        @param timeout: Seconds without progress before the call fails.
        @param max_line_length: The longest SSE line accepted.
        @param max_event_length: The largest SSE event accepted, all its
            lines together.
        @param on_sse: If given, called with each SSE event of the stream
            and the model events it decoded to, before C{on_event} sees
            them (for pass-through).  Error events are not passed to it.
        @param first_byte_timeout: Seconds from the start to the first byte
            of the body, if that is to be shorter or longer than C{timeout}.
        @param request_timeout: Seconds the whole call may take, if bounded.
        @param on_start: Called once, just before the first event of the
            stream is delivered (after that, retrying would splice streams).
        @param on_flush: Called after the events of each read were
            delivered, so a consumer can write them out in one go; and
            also after each event until it returns a true value (it wrote
            something), so that the first event of a burst goes out before
            the rest of the burst is decoded.
        @param on_bytes: For same-format pass-through, instead of C{on_sse}:
            called with the upstream's complete events as bytes, as they
            came, and how many events they are (see L{pylon_ai._relay}).
            The decoder must be a light one; C{on_event} gets only the model
            events the books need.
        @param drop_usage: With C{on_bytes}, cut the usage chunk of a Chat
            Completions stream out of its bytes (the gateway asked for it,
            not the client).
        """
        super().__init__(
            clock,
            label=label,
            timeout=timeout,
            first_byte_timeout=first_byte_timeout,
            request_timeout=request_timeout,
            on_start=on_start,
        )
        self._decoder = decoder
        self._on_event = on_event
        self._max_line = max_line_length
        self.max_event_length = max_event_length
        self._on_sse = on_sse
        self.on_flush = on_flush
        # Until the consumer wrote something, it is flushed after every
        # event: the first byte must not wait for a whole upstream read.
        self._eager = on_flush is not None
        self._flow: _Flow | None = None
        self._on_bytes = on_bytes
        self._drop_usage = drop_usage

    def _read(self, response: IResponse) -> None:
        raw_header = getattr(response, "raw_header", None)
        if raw_header is not None:
            ctype = raw_header(b"content-type") or b""
        else:
            ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if b"event-stream" not in ctype:
            self._body = _ErrorBody(self, lambda body: self._wrong_type(ctype, body))
            response.deliverBody(self._body)
            return
        body: _UpstreamBody | Relay
        if self._on_bytes is not None:
            body = Relay(
                self._decoder,  # type: ignore[arg-type]
                self._on_bytes,
                on_read=self.progress,
                on_start=self._started,
                emit=self._emit,
                max_line_length=self._max_line,
                max_event_length=self.max_event_length,
                drop_usage=self._drop_usage,
            )
        else:
            body = _UpstreamBody(
                self, self._sse_event, self._max_line, self.max_event_length
            )
        self._body = body
        response.deliverBody(body)
        body.done.addCallbacks(self._body_done, self._body_failed)

    def _wrong_type(self, ctype: bytes, body: bytes) -> None:
        self._fail(
            ProviderStreamError(
                f"{self._label} answered a streaming request with "
                f"{ctype.decode('latin-1') or 'no content type'}, "
                "not text/event-stream",
                status=self.response.code if self.response else None,
                body=excerpt(_scrubbed_text(body, self._scrubber())),
            )
        )

    @property
    def producer(self) -> Any:
        """
        The upstream body's C{IPushProducer} once the stream is flowing (for
        flow control towards a slow client), else L{None}.
        """
        if self._flow is None and isinstance(self._body, (_UpstreamBody, Relay)):
            if self._body.transport is not None:
                self._flow = _Flow(self, self._body.transport)
        return self._flow

    def _emit(self, events: Iterable[ModelEvent] | None) -> None:
        for event in events or ():
            if type(event) is StreamError:
                raise ProviderStreamError(
                    f"{self._label} reported an error in the stream: {event.message}",
                    status=event.status,
                    error_type=event.error_type,
                    body=event.body,
                )
            self._on_event(event)

    def _sse_event(self, event: Event) -> None:
        events = self._decoder.feed(event.type, event.data)
        if self._on_start is not None or self._on_sse is not None:
            # An error event is raised before anything of it is delivered:
            # neither counted as a start nor passed through.
            events = list(events)
            for e in events:
                if type(e) is StreamError:
                    self._emit((e,))
            self._started()
            if self._on_sse is not None:
                self._on_sse(event, events)
        self._emit(events)
        if self._eager and self.on_flush is not None and self.on_flush():
            self._eager = False

    def _let_go(self) -> None:
        self._on_event = ignore
        self._on_sse = None
        self.on_flush = None
        self._on_bytes = None
        self._flow = None
        if isinstance(self._body, Relay):
            self._body.let_go()

    def _body_done(self, _: None) -> None:
        self._body = None  # it ended: no cycle through it
        if self._over:
            return
        try:
            self._emit(self._decoder.finish())
        except BaseException:
            self._fail(Failure())
        else:
            self._succeed()

    def _body_failed(self, failure: Failure) -> None:
        self._body = None  # it ended (or stopped its transport itself)
        if self._over:
            return
        if failure.check(PotentialDataLoss):
            # No length and no chunking: the close is the end of the body.
            self._body_done(None)
        elif failure.check(LineTooLong, EventTooLong):
            self._fail(ProviderStreamError(f"{self._label}: {failure.value}"))
        elif not failure.check(ResponseFailed, ConnectionLost):
            self._fail(failure)  # a ProviderError, or what on_event raised
        elif self._decoder.finished:
            self._succeed()
        else:
            self._fail(
                ProviderStreamError(
                    f"connection to {self._label} lost mid-stream, "
                    "before the stream finished"
                )
            )


@implementer(IPushProducer)
class _Flow:
    """
    The upstream body's producer as a slow client sees it: pausing it also
    stops the idle timeout (the upstream is not silent, we stopped reading
    it), and resuming starts the timeout afresh.
    """

    def __init__(self, call: StreamCall, transport: Any) -> None:
        self._call = call
        self._transport = transport

    def pauseProducing(self) -> None:
        self._call.paused = True
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._call.paused:
            self._call.paused = False
            self._call.progress()
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self._transport.stopProducing()
