"""
What every POST to a provider shares, whatever its reply (L{_Call}): sending
the request, the timeouts, cancellation, and the errors of a non-2xx reply
with the request's credentials scrubbed out of them.  L{StreamCall
<pylon_ai._stream_call.StreamCall>} and L{BodyCall
<pylon_ai._body_call.BodyCall>} read a 2xx reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from zope.interface import implementer

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from pylon_ai._call_errors import (
    connection_error,
    error_from_body,
    request_secrets,
    retry_after_seconds,
)
from pylon_ai._errors import ProviderError, ProviderTimeout, Scrubber
from pylon_ai._http import SafePool

#: The most of an error response body read before the connection is dropped.
_ERROR_BODY_LIMIT = 64 * 1024


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
            try:
                self.deferred.callback(None)
            finally:
                self._let_go()

    def _let_go(self) -> None:
        """
        The call is over: drop the consumer's callbacks, which its body's
        protocol would otherwise keep alive (the body and the call refer to
        each other) until the cyclic collector came by, and with them the
        whole request (see L{pylon_ai.gateway._collector}).
        """

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
            try:
                self.deferred.errback(reason)
            finally:
                self._let_go()

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


def ignore(*args: object) -> None:
    """
    What a call that is over does with a late callback (see
    L{_Call._let_go}).
    """
