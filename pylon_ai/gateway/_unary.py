"""
One upstream POST whose reply is a whole JSON body, not a stream: token
counting and embeddings.

It keeps the rules of the streaming calls (L{pylon_ai._upstream.StreamCall}):
the same timeouts (no first byte, no progress, the whole request), a bound on
what is read, clean cancellation, and a L{ProviderError} without the
request's own credentials for anything but a 2xx reply.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pylon_ai._errors import ProviderStreamError, ProviderTimeout, Scrubber
from pylon_ai._upstream import (
    BytesProducer,
    connection_error,
    error_from_body,
    request_secrets,
    retry_after_seconds,
)

#: The most of an error body read before the connection is dropped.
_ERROR_BODY_LIMIT = 64 * 1024


class ReplyTooLarge(ProviderStreamError):
    """
    The upstream's reply is larger than the call reads.
    """


class _Body(Protocol):
    """
    Collects a response body, up to a bound.
    """

    def __init__(self, call: UnaryCall, limit: int, error: bool) -> None:
        self._call = call
        self._limit = limit
        self._error = error
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._call.progress()
        if self._size >= self._limit:
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self._limit and self.transport is not None:
            # An error body is cut (its start says enough); a reply is
            # refused when the rest arrives, or is found missing.
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        body = b"".join(self._parts)
        if self._error:
            self.done.callback(body[: self._limit])
        elif self._size >= self._limit:
            self.done.errback(
                ReplyTooLarge(f"the reply is larger than {self._limit} bytes")
            )
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(body)
        else:
            self.done.errback(reason)


class UnaryCall:
    """
    One POST with a JSON reply.

    @ivar deferred: Fires with the reply's body once it was read whole (any
        2xx status); fails with a L{ProviderError} (a L{ProviderTimeout}
        when a timeout expired).  Cancelling it aborts the request and
        closes its connection.
    @ivar status: The reply's status, once its headers came.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        label: str,
        timeout: float,
        first_byte_timeout: float | None = None,
        request_timeout: float | None = None,
        max_body: int = 8 * 1024 * 1024,
    ) -> None:
        """
        @param clock: Schedules the timeouts.
        @param label: Names the upstream in error messages (never a key).
        @param timeout: Seconds without progress before the call fails.
        @param first_byte_timeout: Seconds to the first byte of the reply,
            when that is to differ from C{timeout}.
        @param request_timeout: Seconds the whole call may take.
        @param max_body: The largest reply body read.
        """
        self._clock = clock
        self._label = label
        self._timeout = timeout
        self._first_byte_timeout = first_byte_timeout
        self._request_timeout = request_timeout
        self._max_body = max_body
        self._headers: Headers = Headers()
        self._request: Deferred[Any] | None = None
        self._body: _Body | None = None
        self._idle: IDelayedCall | None = None
        self._whole: IDelayedCall | None = None
        self._over = False
        self.status: int | None = None
        self.deferred: Deferred[bytes] = Deferred(self._cancel)

    def start(
        self, client: Any, url: str, headers: dict[str, str], body: bytes
    ) -> Deferred[bytes]:
        """
        Send the request.

        @param client: A C{treq.HTTPClient} (its agent is used directly) or
            an C{IAgent}.
        @param url: The URL (ASCII).
        @return: L{deferred}.
        """
        self._headers = Headers({k: [v] for k, v in headers.items()})
        first = self._first_byte_timeout
        self._idle = self._clock.callLater(
            self._timeout if first is None else first,
            self._expire,
            f"no reply from {self._label} within "
            f"{self._timeout if first is None else first:g} s",
        )
        if self._request_timeout is not None:
            self._whole = self._clock.callLater(
                self._request_timeout,
                self._expire,
                f"the request to {self._label} took over {self._request_timeout:g} s",
            )
        try:
            agent = getattr(client, "_agent", client)
            request = agent.request(
                b"POST", url.encode("ascii"), self._headers, BytesProducer(body)
            )
        except Exception:
            self._fail(Failure())
            return self.deferred
        self._request = request
        request.addCallbacks(self._got_response, self._request_failed)
        return self.deferred

    def progress(self) -> None:
        """
        Bytes of the reply arrived: the idle timeout starts again.
        """
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if not self._over:
            self._idle = self._clock.callLater(
                self._timeout,
                self._expire,
                f"no progress from {self._label} for {self._timeout:g} s",
            )

    def _expire(self, reason: str) -> None:
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

    def _stop_timers(self) -> None:
        for timer in (self._idle, self._whole):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle = self._whole = None

    def _cancel(self, d: Deferred[bytes]) -> None:
        if self._over:
            return
        self._over = True
        self._stop_timers()
        self._abort()

    def _fail(self, reason: Failure | BaseException) -> None:
        if self._over:
            return
        self._over = True
        self._stop_timers()
        exc = reason.value if isinstance(reason, Failure) else reason
        if isinstance(exc, ProviderStreamError | ProviderTimeout):
            Scrubber(request_secrets(self._headers)).error(exc)
        self.deferred.errback(reason)

    def _succeed(self, body: bytes) -> None:
        if self._over:
            return
        self._over = True
        self._stop_timers()
        self.deferred.callback(body)

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
        if self._over:
            return
        self.status = status = response.code
        if self._first_byte_timeout is None:
            self.progress()
        error = not 200 <= status < 300
        body = _Body(self, _ERROR_BODY_LIMIT if error else self._max_body, error)
        self._body = body
        response.deliverBody(body)
        if error:
            retry_after = retry_after_seconds(response.headers)
            body.done.addCallback(self._error_body, status, retry_after)
        else:
            body.done.addCallbacks(self._succeed, self._body_failed)

    def _error_body(self, body: bytes, status: int, retry_after: str | None) -> None:
        scrubber = Scrubber(request_secrets(self._headers))
        self._fail(error_from_body(self._label, status, body, retry_after, scrubber))

    def _body_failed(self, failure: Failure) -> None:
        if failure.check(ProviderStreamError):
            self._fail(failure)
            return
        self._fail(
            ProviderStreamError(
                f"connection to {self._label} lost before the reply was complete"
            )
        )
