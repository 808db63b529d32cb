"""
Request limits: concurrency for the process, and per client identity
concurrency, requests per minute and tokens per minute.

An identity is a configured client key.  In no-key mode a client's headers
prove nothing, so every client is the one identity C{""}: the per-key limits
then apply to the whole process.  The per-key counts live in a state
(L{pylon_ai.gateway._state}): this process's memory by default, or Redis,
shared by every worker and instance.  The process's own limit
(C{max_concurrent}) is always this process's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._config import ServerConfig
from pylon_ai.gateway._state import (
    WINDOW,
    Admission,
    KeyLimits,
    MemoryState,
    Release,
    once,
)

if TYPE_CHECKING:
    from pylon_ai.gateway._backends import Backend
    from pylon_ai.gateway._redis import RedisState

__all__ = ["WINDOW", "Admission", "Limits", "Release", "when_admitted"]

_log = Logger(namespace="pylon_ai.gateway.limits")


class Limits:
    """
    Admits or refuses requests, and counts those in flight.

    @ivar in_flight: Requests admitted and not yet released, in the process.
    @ivar local: This process's per-key counts (with Redis: those it falls
        back on).
    """

    def __init__(self, settings: ServerConfig, clock: IReactorTime) -> None:
        self._max = settings.max_concurrent
        self._keyed = bool(settings.api_keys)
        self.in_flight = 0
        key_limits = KeyLimits(
            settings.max_concurrent_per_key,
            settings.requests_per_minute_per_key,
            settings.tokens_per_minute_per_key,
        )
        self._redis: RedisState | None = None
        # Without per-key limits there is nothing to ask Redis on admission.
        self._per_key = key_limits != KeyLimits()
        address = settings.redis
        if address is None:
            self.local = MemoryState(key_limits, clock)
        else:
            from pylon_ai.gateway._redis import RedisState

            self._redis = RedisState(
                key_limits,
                clock,
                address,
                settings.redis_password,
                settings.redis_timeout_ms,
                settings.redis_failure,
            )
            self.local = self._redis.local

    @property
    def shared(self) -> RedisState | None:
        """
        The Redis state, if the limits are shared.
        """
        return self._redis

    @property
    def tracked(self) -> int:
        """
        The number of client identities this process keeps state for:
        requests in flight, or requests or tokens within the window.
        """
        return self.local.tracked

    def identity(self, key: str | None) -> str:
        """
        The identity the limits count C{key} against: the key itself when
        keys are configured (it was checked before), else C{""} for all.
        """
        return (key or "") if self._keyed else ""

    def admit(self, key: str | None) -> Admission | Deferred[Admission]:
        """
        Admit a request of an authenticated client.

        @param key: The key the client presented, if any.
        @return: The L{Release} to call once when the request ends (with the
            tokens it used), or the error to answer with: 503 when the
            process is full, 429 when the identity is; both with
            C{retry-after}.  With the memory state the answer is immediate;
            with Redis it is a L{Deferred} (see L{when_admitted}).
        """
        if self._max and self.in_flight >= self._max:
            return ApiError(503, "the gateway is at its request limit", retry_after="1")
        # Taken before asking the state, so that requests waiting for Redis
        # cannot overshoot the process's limit together.
        self.in_flight += 1
        identity = self.identity(key)
        if self._redis is None or not self._per_key:
            return self._hold(self.local.admit(identity))
        return self._redis.admit(identity).addCallback(self._hold)

    def _hold(self, admission: Admission) -> Admission:
        if isinstance(admission, ApiError):
            self.in_flight -= 1
            return admission

        def release(tokens: int) -> None:
            self.in_flight -= 1
            admission(tokens)

        return once(release)

    def share(self, backends: Mapping[str, Sequence[Backend]]) -> None:
        """
        With Redis, share these deployments' cooldowns and in-flight counts
        with the other instances; in memory, nothing to do.
        """
        if self._redis is not None:
            self._redis.share(backends)

    def stop(self) -> Deferred[None] | None:
        """
        Cancel the timers and close the connection to Redis, if any (the
        service is stopping).

        @return: With Redis, a L{Deferred} that fires once it is closed.
        """
        if self._redis is not None:
            return self._redis.stop()
        self.local.stop()
        return None


def when_admitted(
    admission: Admission | Deferred[Admission],
    then: Callable[[Admission], object],
    gone: Callable[[], bool] = lambda: False,
) -> None:
    """
    Call C{then} with the answer of L{Limits.admit}: at once when it is
    there, else when it comes.  A request whose client left while it waited
    (C{gone()}) is released unseen.
    """
    if not isinstance(admission, Deferred):
        then(admission)
        return

    def arrived(admission: Admission) -> None:
        if gone():
            if not isinstance(admission, ApiError):
                admission()
            return
        then(admission)

    admission.addCallback(arrived).addErrback(
        lambda failure: _log.failure("Admitting a request failed", failure)
    )
