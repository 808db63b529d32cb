"""
The attempts of one request: retries with backoff and jitter, other
deployments of the same model, cooldowns, and fallbacks to other models.

A request is retried only while nothing of it reached the client: once the
first event of an attempt is delivered, its outcome is final, so a stream is
never duplicated or spliced.  A whole (non-streaming) body arrives at once:
its attempt is final when it arrived.

Every upstream failure passes here first: this is where the gateway's
scrubber takes keys and upstream addresses out of what the upstream said,
before anything logs it or shows it to a client.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pylon_ai._call_errors import BodyTooLarge
from pylon_ai._errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeout,
    ProviderTLSError,
)
from pylon_ai.formats.structured import StructuredOutputEvents
from pylon_ai.gateway._backends import Backend, Call, Forwarded, OnBody, OnEvent, OnSSE
from pylon_ai.gateway._translation import Translation

if TYPE_CHECKING:
    from pylon_ai.gateway._gateway import Gateway

Kind = Literal["retry", "failover", "final"]

#: Upstream statuses worth another attempt.
RETRY_STATUSES = frozenset((408, 409, 429, 529))


def classify(exc: BaseException) -> Kind:
    """
    What a failure allows: C{"retry"} (the same or another deployment),
    C{"failover"} (another deployment or a fallback model only: this
    deployment's key or certificate is wrong), or C{"final"}.
    """
    if isinstance(exc, ProviderTLSError):
        return "failover"
    if isinstance(exc, BodyTooLarge):
        return "final"  # another attempt would bring as large a reply
    if isinstance(exc, ProviderTimeout | ProviderConnectionError):
        return "retry"
    if isinstance(exc, ProviderError):
        status = exc.status
        if status is None:
            return "retry" if isinstance(exc, ProviderStreamError) else "final"
        if status in RETRY_STATUSES or 500 <= status <= 599:
            return "retry"
        if status in (401, 403):
            return "failover"
    return "final"


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


class Attempts:
    """
    One request's way through the deployments of its model and then its
    fallbacks.

    @ivar deferred: Fires when an attempt succeeded, or fails with the last
        failure; cancelling it cancels the attempt in progress.
    @ivar backend: The deployment of the current (finally: the last)
        attempt.
    @ivar count: Attempts made so far.
    """

    log = Logger()

    def __init__(
        self,
        gateway: Gateway,
        api: str,
        body: dict[str, Any],
        on_event: OnEvent,
        on_sse: OnSSE | None,
        on_start: Callable[[Backend], object] | None = None,
        on_flush: Callable[[], object] | None = None,
        *,
        on_body: OnBody | None = None,
        forwarded: Forwarded | None = None,
    ) -> None:
        """
        @param on_body: For a non-streaming request: called with the
            upstream's body as it came when the upstream speaks C{api} too
            (and only then; other upstreams stream, through C{on_event}).
        @param forwarded: What of the client's request goes to an upstream
            that speaks C{api} too.
        """
        self._gateway = gateway
        self._clock = gateway.clock
        self._api = api
        self._body = body
        #: The request's bodies for each upstream format.
        self.translation = Translation(api, body)
        self._on_event = on_event
        self._on_sse = on_sse
        self._on_start = on_start
        self._on_flush = on_flush
        self._on_body = on_body
        self._forwarded = forwarded
        name = body["model"]
        self._names = [name, *gateway.fallbacks(name)]
        self._name_index = 0
        self._tried: set[int] = set()
        self._for_name = 0
        self._began = self._clock.seconds()
        self._delivered = False
        self._over = False
        self._timer: IDelayedCall | None = None
        self._call: Call | None = None
        self.backend: Backend = gateway.pick(name, self._tried)
        self.count = 0
        self.deferred: Deferred[None] = Deferred(self._cancel)

    @property
    def producer(self) -> Any:
        """
        The current attempt's upstream producer, for flow control.
        """
        return self._call.producer if self._call is not None else None

    def start(self) -> Attempts:
        """
        Make the first attempt.

        @raise TranslationError: If the request cannot be translated for the
            first deployment (a client mistake: nothing is retried).
        """
        self._attempt(first=True)
        return self

    def _attempt(self, first: bool = False) -> None:
        self._timer = None
        backend = self.backend
        on_event = self._on_event
        try:
            body = self.translation.body_for(backend)
            if self.translation.forced_tool(backend):
                # The client asked for text: the forced tool's call is it.
                on_event = StructuredOutputEvents(on_event)
        except Exception:
            if first:
                raise
            self._finish(Failure())
            return
        self.count += 1
        self._for_name += 1
        self._tried.add(id(backend))
        call: Call
        same = backend.speaks(self._api)
        forwarded = self._forwarded if same else None
        # A Responses body goes to the deployment's Responses URL.
        wire = self._api if same and self._api == "responses" else None
        if same and self._on_body is not None:
            call = backend.open_whole(
                body, on_event, self._on_body, self._started, forwarded, wire
            )
        else:
            passthrough = self._on_sse if same else None
            call = backend.open(
                body,
                on_event,
                passthrough,
                self._started,
                self._on_flush,
                forwarded,
                wire,
            )
        self._call = call
        call.deferred.addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(backend,),
            errbackArgs=(backend,),
        )

    def _started(self) -> None:
        self._delivered = True
        if self._on_start is not None:
            self._on_start(self.backend)

    def _succeeded(self, _: None, backend: Backend) -> None:
        backend.succeeded()
        self._finish(None)

    def _failed(self, failure: Failure, backend: Backend) -> None:
        if self._over:
            return
        exc = failure.value
        if isinstance(exc, ProviderError):
            self._gateway.scrubber.error(exc)
        kind = "final" if exc is None or self._delivered else classify(exc)
        if kind != "final":
            backend.failed(self._clock.seconds())
        nxt = None if kind == "final" else self._next(kind, backend)
        if nxt is None:
            self._finish(failure)
            return
        wait = self._wait(exc, same=nxt is backend)
        if self._clock.seconds() + wait - self._began > backend.config.retry_budget_s:
            self._finish(failure)
            return
        self.log.info(
            "Attempt {count} for model {model} failed ({error}); "
            "trying {provider} {label} in {wait:.2f} s",
            count=self.count,
            model=self._names[0],
            error=type(exc).__name__,
            provider=nxt.provider,
            label=nxt.label,
            wait=wait,
        )
        self.backend = nxt
        self._timer = self._clock.callLater(wait, self._attempt)

    def _next(self, kind: Kind, failed: Backend) -> Backend | None:
        """
        The deployment of the next attempt, or L{None} when there is none.
        """
        name = self._names[self._name_index]
        config = failed.config
        if self._for_name <= config.retries:
            untried = self._gateway.pick(name, self._tried, fresh_only=True)
            if untried is not None:
                return untried
            if kind == "retry":
                return self._gateway.pick(name, self._tried)
        # This model is spent: its fallbacks, in order.
        while self._name_index + 1 < len(self._names):
            self._name_index += 1
            self._for_name = 0
            self._tried = set()
            return self._gateway.pick(self._names[self._name_index], self._tried)
        return None

    def _wait(self, exc: BaseException | None, same: bool) -> float:
        config = self.backend.config
        if not same:
            return 0.0  # another deployment: no reason to wait
        asked = _seconds(getattr(exc, "retry_after", None))
        if asked is not None:
            return min(max(asked, 0.0), config.retry_max_wait_s)
        base = config.retry_backoff_s * 2 ** max(self._for_name - 1, 0)
        return min(base, config.retry_max_wait_s) * random.uniform(0.5, 1.0)

    def _finish(self, result: Failure | None) -> None:
        if self._over:
            return
        self._over = True
        try:
            if result is None:
                self.deferred.callback(None)
            else:
                self.deferred.errback(result)
        finally:
            # Its upstream call holds methods of this object: no cycle.
            self._call = None

    def _cancel(self, d: Deferred[None]) -> None:
        if self._over:
            return
        self._over = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._call is not None and not self._call.deferred.called:
            self._call.deferred.cancel()
