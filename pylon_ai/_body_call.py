"""
One POST to a provider whose reply is one whole JSON body (L{BodyCall}, the
gateway's same-format non-streaming requests), read up to a bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from pylon_ai._call import _Call, ignore
from pylon_ai._call_errors import BodyTooLarge, _scrubbed_text
from pylon_ai._errors import ProviderStreamError, excerpt
from pylon_ai._json import loads


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

    def _let_go(self) -> None:
        self._on_body = ignore

    def body_ended(self, data: bytes, reason: Failure) -> None:
        """
        The body ended, whole or not.
        """
        self._body = None  # no cycle through it
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
