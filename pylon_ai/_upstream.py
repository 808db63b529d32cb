"""
One HTTP request to a provider, with timeouts, clean cancellation and
provider errors mapped to L{ProviderError}: a streamed reply
(L{StreamCall}, which the library's plugin and the gateway use) or one whole
JSON body (L{BodyCall}, the gateway's same-format non-streaming requests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import Any
from typing import Protocol as TypingProtocol
from urllib.parse import urlsplit

from OpenSSL import SSL
from service_identity import VerificationError
from zope.interface import implementer

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    DNSLookupError,
)
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from pylon_ai._errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeout,
    ProviderTLSError,
    Scrubber,
    excerpt,
)
from pylon_ai._http import SafePool
from pylon_ai._json import loads
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

#: The most of an error response body read before the connection is dropped.
_ERROR_BODY_LIMIT = 64 * 1024
#: The request headers whose values are credentials.
_SECRET_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
)
_SCHEMES = frozenset(("bearer", "basic", "token", "digest"))


class StreamDecoder(TypingProtocol):
    """
    Turns SSE events of one wire format into model events.
    """

    finished: bool

    def feed(self, event_type: str, data: str) -> Iterable[ModelEvent]: ...

    def finish(self) -> Iterable[ModelEvent] | None: ...


def request_secrets(headers: dict[str, str] | Headers) -> list[str]:
    """
    The credentials a request carries in its headers: the values of
    C{authorization} (with and without its scheme), C{x-api-key} and the
    like.

    @param headers: The request headers.
    @return: The secret values, for a L{Scrubber}.
    """
    values: list[str] = []
    if isinstance(headers, Headers):
        for name in _SECRET_HEADERS:
            for raw in headers.getRawHeaders(name) or ():
                values.append(raw if isinstance(raw, str) else raw.decode("latin-1"))
    else:
        wanted = set(_SECRET_HEADERS)
        values.extend(v for k, v in headers.items() if k.lower() in wanted)
    secrets: list[str] = []
    for value in values:
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() in _SCHEMES:
            # Never the scheme alone ("Bearer " with an empty key): that
            # would scrub the word wherever it stands.
            if rest.strip():
                secrets.extend((value, rest.strip()))
        elif value.strip():
            secrets.append(value)
    return secrets


def _scrubbed_text(body: bytes, scrubber: Scrubber | None) -> str:
    # The whole body is scrubbed before it is cut, so that no cut leaves the
    # start of a key behind.
    text = body.decode("utf-8", "replace")
    return scrubber.text(text) if scrubber is not None else text


def error_from_body(
    label: str,
    status: int,
    body: bytes,
    retry_after: str | None = None,
    scrubber: Scrubber | None = None,
) -> ProviderError:
    """
    The L{ProviderError} for a non-2xx response.

    Understands Anthropic's C{{"type": "error", "error": {...}}}, OpenAI's
    C{{"error": {"message", "type", "code"}}} and the C{{"error": "..."}},
    C{{"detail": ...}} and C{{"message": ...}} shapes of compatible servers.

    @param scrubber: Scrubs the body and the message (with the request's
        own credentials, at least).
    """
    error_type: str | None = None
    detail: str | None = None
    text = _scrubbed_text(body, scrubber)
    try:
        obj = loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, str):
            detail = err
        elif isinstance(err, dict):
            if isinstance(err.get("type"), str):
                error_type = err["type"]
            for key in ("message", "detail"):
                if isinstance(err.get(key), str):
                    detail = err[key]
                    break
    if detail is None:
        detail = text[:200].strip() or "(empty body)"
    return ProviderError(
        f"{label} returned HTTP {status}: {detail}",
        status=status,
        error_type=error_type,
        body=excerpt(text),
        retry_after=retry_after,
    )


def retry_after_seconds(headers: Any) -> str | None:
    """
    How long the provider asks us to wait, in seconds, from C{retry-after-ms}
    (OpenAI, Anthropic) or C{retry-after} (seconds or an HTTP date).

    @param headers: The response's C{Headers}.
    @return: The seconds as text (e.g. C{"1.5"}), or L{None}.
    """
    raw = headers.getRawHeaders(b"retry-after-ms")
    if raw:
        try:
            ms = float(raw[0])
        except ValueError:
            pass
        else:
            if 0 <= ms < 1e9:
                return f"{ms / 1000:g}"
    raw = headers.getRawHeaders(b"retry-after")
    if not raw:
        return None
    text = raw[0].decode("ascii", "replace").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not 0 <= seconds < 1e9:
        return "0" if seconds < 0 else None
    return f"{seconds:g}"


def connection_error(label: str, failure: Failure) -> ProviderError:
    """
    The L{ProviderError} for a request that got no response.
    """
    reasons = [failure]
    inner = getattr(failure.value, "reasons", None)
    if inner:
        reasons.extend(inner)
    for reason in reasons:
        if reason.check(VerificationError):
            return ProviderTLSError(
                f"TLS certificate of {label} does not match its host name"
            )
        if reason.check(SSL.Error):
            return ProviderTLSError(
                f"TLS handshake with {label} failed: {_ssl_reason(reason.value)}"
            )
    for reason in reasons:
        if reason.check(DNSLookupError):
            return ProviderConnectionError(f"cannot resolve the host of {label}")
        if reason.check(ConnectError):
            return ProviderConnectionError(
                f"cannot connect to {label}: {reason.getErrorMessage()}"
            )
    return ProviderConnectionError(
        f"connection to {label} failed before a response: "
        f"{type(reasons[-1].value).__name__}"
    )


def _ssl_reason(err: BaseException | None) -> str:
    args = getattr(err, "args", ())
    for group in args:
        for item in group if isinstance(group, list) else ():
            if isinstance(item, tuple) and item and isinstance(item[-1], str):
                return item[-1]
    return "TLS error"


@implementer(IBodyProducer)
class BytesProducer:
    """
    A request body that is already in memory, written at once (Twisted's
    C{FileBodyProducer} would take reactor turns for it).
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


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


class _ErrorBody(Protocol):
    """
    Collects the start of an error body, and no more than that.
    """

    def __init__(self, call: _Call, done: Callable[[bytes], None]) -> None:
        self._call = call
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._call.progress()
        if self._size < _ERROR_BODY_LIMIT:
            self._parts.append(data)
            self._size += len(data)
            if self._size >= _ERROR_BODY_LIMIT and self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._done(b"".join(self._parts)[:_ERROR_BODY_LIMIT])


class _Call:
    """
    What every POST to a provider shares, whatever its reply: the timeouts,
    cancellation, the errors of a non-2xx reply, and scrubbing the request's
    credentials out of them.  A subclass reads a 2xx reply (L{_read}).

    @ivar deferred: The outcome.
    @ivar response: The upstream response once its headers arrived.
    """

    #: Where the call is when it goes idle after the headers came, for the
    #: timeout's message.
    _reading = "mid-stream"

    def __init__(
        self,
        clock: IReactorTime,
        *,
        label: str,
        timeout: float,
        first_byte_timeout: float | None,
        request_timeout: float | None,
        on_start: Callable[[], object] | None,
    ) -> None:
        self._clock = clock
        self._label = label
        self._timeout = timeout
        self._first_byte_timeout = first_byte_timeout
        self._request_timeout = request_timeout
        self._on_start = on_start
        #: Whether the idle timeout runs while the headers are awaited.
        self._idle_while_waiting = True
        self._started_at = 0.0
        self._got_body = False
        self.deferred: Deferred[None] = Deferred(self._cancel)
        self.response: IResponse | None = None
        self._timer: IDelayedCall | None = None
        self._last_progress = 0.0
        self._request: Deferred[Any] | None = None
        self._body: Protocol | None = None
        #: The client paused the upstream (it is not reading): the idle
        #: timeout does not run meanwhile.
        self.paused = False
        self._over = False
        self._headers: dict[str, str] | Headers = {}

    @classmethod
    def label_for(cls, url: str) -> str:
        """
        A safe name for an upstream in messages: its scheme, host and port.
        """
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")

    def start(
        self,
        client: Any,
        url: str | bytes,
        headers: dict[str, str] | Headers,
        body: bytes,
    ) -> Deferred[None]:
        """
        Send the request.

        @param client: A C{treq.HTTPClient}, whose agent (and so its pool and
            TLS policy) is used directly: an API call has no use for treq's
            cookie jar (shared by every request: a leak between a gateway's
            clients), redirects or gzip, and they cost on every request.  Any
            C{IAgent} works too.
        @param url: The URL (ASCII).
        @return: L{deferred}.
        """
        self._last_progress = self._started_at = self._clock.seconds()
        self._timer = self._clock.callLater(self._next_check(), self._check_idle)
        # Kept, not searched: the credentials are only needed on a failure.
        self._headers = headers
        try:
            agent = getattr(client, "_agent", client)
            if not isinstance(headers, Headers):
                headers = Headers({k: [v] for k, v in headers.items()})
            target = url if isinstance(url, bytes) else url.encode("ascii")
            pool = getattr(agent, "_pool", None)
            if isinstance(pool, SafePool) and type(agent) is Agent:
                # The library's own client: the lean HTTP/1.1 path.
                request = pool.lean.request(
                    agent._endpointFactory, target, headers, body
                )
            else:
                request = agent.request(b"POST", target, headers, BytesProducer(body))
        except Exception:
            self._fail(Failure())
            return self.deferred
        self._request = request
        request.addCallbacks(self._got_response, self._request_failed)
        return self.deferred

    def progress(self) -> None:
        """
        Note that bytes of the body arrived: the idle timeout starts again.
        """
        self._last_progress = self._clock.seconds()
        self._got_body = True

    def _idle_runs(self) -> bool:
        return not self.paused and (
            self._idle_while_waiting or self.response is not None
        )

    def _next_check(self) -> float:
        # Seconds from now until the earliest of the limits could expire.
        now = self._clock.seconds()
        due = (now if self.paused else self._last_progress) + self._timeout
        if not (self._idle_while_waiting or self.response is not None):
            due = float("inf")
        if self._first_byte_timeout is not None and not self._got_body:
            due = self._started_at + self._first_byte_timeout
        if self._request_timeout is not None:
            due = min(due, self._started_at + self._request_timeout)
        return max(due - now, 0.0)

    def _expired(self) -> str | None:
        now = self._clock.seconds()
        elapsed = now - self._started_at
        if self._request_timeout is not None and elapsed >= self._request_timeout:
            return f"the request to {self._label} took over {self._request_timeout:g} s"
        if self._first_byte_timeout is not None and not self._got_body:
            if elapsed >= self._first_byte_timeout:
                return (
                    f"no first byte from {self._label} "
                    f"within {self._first_byte_timeout:g} s"
                )
            return None
        if self._idle_runs() and now - self._last_progress >= self._timeout:
            where = (
                "waiting for the response" if self.response is None else self._reading
            )
            return f"no progress from {self._label} for {self._timeout:g} s ({where})"
        return None

    def _check_idle(self) -> None:
        # A lazy timer: reads only note the time, and the timer re-arms itself
        # for what is left, so no reactor call happens per chunk.
        reason = self._expired()
        if reason is None:
            self._timer = self._clock.callLater(self._next_check(), self._check_idle)
            return
        self._timer = None
        self._fail(ProviderTimeout(reason))
        # After _fail: cancelling the request errbacks it at once, and that
        # must not be taken for a connection error.
        self._abort()

    def _abort(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            request.cancel()
        elif self._body is not None and self._body.transport is not None:
            self._body.transport.stopProducing()  # type: ignore[attr-defined]

    def _cancel(self, d: Deferred[None]) -> None:
        if self._over:
            return
        self._over = True
        self._stop_timer()
        self._abort()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _succeed(self) -> None:
        if not self._over:
            self._over = True
            self._stop_timer()
            self.deferred.callback(None)

    def _scrubber(self) -> Scrubber:
        return Scrubber(request_secrets(self._headers))

    def _fail(self, reason: Failure | BaseException) -> None:
        if not self._over:
            self._over = True
            self._stop_timer()
            exc = reason.value if isinstance(reason, Failure) else reason
            if isinstance(exc, ProviderError):
                # Whatever the upstream said, in an error body or a stream,
                # may repeat the request's headers.
                self._scrubber().error(exc)
            self.deferred.errback(reason)

    def _request_failed(self, failure: Failure) -> None:
        self._request = None
        if self._over:
            return
        if failure.check(CancelledError):
            self._fail(failure)
            return
        self._fail(connection_error(self._label, failure))

    def _got_response(self, response: IResponse) -> None:
        self._request = None
        self.response = response
        if self._over:
            return
        self._last_progress = self._clock.seconds()
        status = response.code
        if not 200 <= status < 300:
            retry_after = retry_after_seconds(response.headers)
            self._body = _ErrorBody(
                self,
                lambda body: self._fail(
                    error_from_body(
                        self._label, status, body, retry_after, self._scrubber()
                    )
                ),
            )
            response.deliverBody(self._body)
            return
        self._read(response)

    def _read(self, response: IResponse) -> None:
        """
        Read a 2xx reply.
        """
        raise NotImplementedError()

    def _started(self) -> None:
        # Once: after this the outcome is final (the caller delivers).
        if self._on_start is not None:
            on_start, self._on_start = self._on_start, None
            on_start()


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

    def _body_done(self, _: None) -> None:
        if self._over:
            return
        try:
            self._emit(self._decoder.finish())
        except BaseException:
            self._fail(Failure())
        else:
            self._succeed()

    def _body_failed(self, failure: Failure) -> None:
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


class BodyTooLarge(ProviderError):
    """
    A whole reply was larger than the caller reads.  Asking again would
    only bring it again: it is not worth a retry.

    @ivar limit: The bound, in bytes.
    """

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class _WholeBody(Protocol):
    """
    Collects a 2xx reply body, up to a bound.
    """

    def __init__(self, call: BodyCall, limit: int) -> None:
        self._call = call
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._size > self._limit:
            return  # refused already; the connection is being closed
        self._call.progress()
        self._size += len(data)
        if self._size > self._limit:
            self._parts.clear()
            self._call.too_large()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._call.body_ended(b"".join(self._parts), reason)


class BodyCall(_Call):
    """
    One POST to a provider whose reply is one JSON body (a request with
    C{stream: false}).

    L{deferred} fires with L{None} once the whole body arrived and
    C{on_body} was called with it; it fails with a L{ProviderError} (or the
    exception C{on_body} raised) otherwise: a non-2xx reply, a body that is
    cut off or not a JSON object (L{ProviderStreamError}), one larger than
    the bound (L{BodyTooLarge}), a timeout.  Cancelling it aborts the
    request and closes its connection.

    Without streaming the headers come once the whole reply was generated,
    which may take minutes: until they come, only C{request_timeout} bounds
    the wait (when it is not given, the idle timeout does, so that nothing
    hangs).  Once they came, silence for C{timeout} is idleness, as in a
    stream.

    @ivar deferred: The outcome.
    @ivar response: The upstream response once its headers arrived.
    """

    _reading = "reading the body"

    def __init__(
        self,
        clock: IReactorTime,
        on_body: Callable[[bytes, dict[str, Any]], object],
        *,
        label: str,
        timeout: float,
        max_body_length: int,
        request_timeout: float | None = None,
        on_start: Callable[[], object] | None = None,
    ) -> None:
        """
        @param clock: Schedules the timeouts.
        @param on_body: Called once with the body's bytes and the JSON
            object they hold.
        @param label: Names the provider in error messages (never a key).
        @param timeout: Seconds without progress, once the headers came,
            before the call fails.
        @param max_body_length: The largest body accepted, in bytes.
        @param request_timeout: Seconds the whole call may take, if bounded.
        @param on_start: Called once, just before C{on_body}.
        """
        super().__init__(
            clock,
            label=label,
            timeout=timeout,
            first_byte_timeout=None,
            request_timeout=request_timeout,
            on_start=on_start,
        )
        self._idle_while_waiting = request_timeout is None
        self._on_body = on_body
        self._max_body = max_body_length

    @property
    def producer(self) -> Any:
        """
        Always L{None}: a whole body is read at once, never relayed piece by
        piece to a slow client.
        """
        return None

    def _read(self, response: IResponse) -> None:
        if not self._idle_while_waiting:
            # The timer was set for the request timeout alone: the idle
            # timeout runs from now on.  (Otherwise the running timer
            # already checks for idleness.)
            self._stop_timer()
            self._timer = self._clock.callLater(self._next_check(), self._check_idle)
        self._body = _WholeBody(self, self._max_body)
        response.deliverBody(self._body)

    def too_large(self) -> None:
        """
        The body grew past the bound: stop reading it.
        """
        self._fail(
            BodyTooLarge(
                f"the reply of {self._label} is larger than {self._max_body} bytes",
                self._max_body,
            )
        )
        self._abort()

    def body_ended(self, data: bytes, reason: Failure) -> None:
        """
        The body ended, whole or not.
        """
        if self._over:
            return
        if not reason.check(ResponseDone, PotentialDataLoss):
            self._fail(
                ProviderStreamError(
                    f"connection to {self._label} lost before the whole body arrived"
                )
            )
            return
        try:
            obj = loads(data)
        except ValueError:
            # Bytes that are not UTF-8 are replaced, as in a stream; the
            # client gets valid JSON, which is all that is lost.
            text = data.decode("utf-8", "replace")
            try:
                obj = loads(text)
            except ValueError:
                obj = None
            else:
                data = text.encode("utf-8")
        if not isinstance(obj, dict):
            self._fail(
                ProviderStreamError(
                    f"{self._label} answered with a body that is not a JSON object",
                    body=excerpt(_scrubbed_text(data, self._scrubber())),
                )
            )
            return
        try:
            self._started()
            self._on_body(data, obj)
        except BaseException:
            self._fail(Failure())
        else:
            self._succeed()


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
