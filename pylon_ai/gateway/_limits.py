"""
Request limits: concurrency for the process and per client identity, and
requests per minute per client identity.

An identity is a configured client key.  In no-key mode a client's headers
prove nothing, so every client is the one identity C{""}: the per-key limits
then apply to the whole process.  The state kept is bounded by the
identities active within the last window: a window that empties is dropped,
by a timer that runs only while there is something to expire.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._config import ServerConfig

#: The window of the per-key rate, in seconds.
WINDOW = 60.0


class Limits:
    """
    Admits or refuses requests, and counts those in flight.

    @ivar in_flight: Requests admitted and not yet released, in the process.
    """

    def __init__(self, settings: ServerConfig, clock: IReactorTime) -> None:
        self._max = settings.max_concurrent
        self._max_per_key = settings.max_concurrent_per_key
        self._rpm = settings.requests_per_minute_per_key
        self._keyed = bool(settings.api_keys)
        self._clock = clock
        self.in_flight = 0
        self._per_key: dict[str, int] = {}
        # The admission times within the window, per identity; least
        # recently used first, so that the idle ones are at the front.
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._expiry: IDelayedCall | None = None

    @property
    def tracked(self) -> int:
        """
        The number of client identities with any state: requests in flight
        or admissions within the window.
        """
        return len(self._per_key.keys() | self._recent.keys())

    def identity(self, key: str | None) -> str:
        """
        The identity the limits count C{key} against: the key itself when
        keys are configured (it was checked before), else C{""} for all.
        """
        return (key or "") if self._keyed else ""

    def admit(self, key: str | None) -> Callable[[], None] | ApiError:
        """
        Admit a request of an authenticated client.

        @param key: The key the client presented, if any.
        @return: The function to call once when the request ends, or the
            error to answer with: 503 when the process is full, 429 when the
            identity is; both with C{retry-after}.
        """
        key = self.identity(key)
        if self._max and self.in_flight >= self._max:
            return ApiError(503, "the gateway is at its request limit", retry_after="1")
        if self._max_per_key and self._per_key.get(key, 0) >= self._max_per_key:
            return ApiError(
                429, "too many requests in flight for this key", retry_after="1"
            )
        if self._rpm:
            refused = self._count(key)
            if refused is not None:
                return refused
        self.in_flight += 1
        self._per_key[key] = self._per_key.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.in_flight -= 1
            left = self._per_key[key] - 1
            if left:
                self._per_key[key] = left
            else:
                del self._per_key[key]

        return release

    def _count(self, key: str) -> ApiError | None:
        """
        Count a request of C{key} in its window, or refuse it.
        """
        now = self._clock.seconds()
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque()
        while recent and recent[0] <= now - WINDOW:
            recent.popleft()
        if len(recent) >= self._rpm:
            wait = max(1, math.ceil(recent[0] + WINDOW - now))
            return ApiError(
                429,
                f"more than {self._rpm} requests per minute for this key",
                retry_after=str(wait),
            )
        recent.append(now)
        # Ordered by the newest admission (not by refusals), so that the
        # expiry finds the idle windows at the front.
        self._recent.move_to_end(key)
        if self._expiry is None:
            self._expiry = self._clock.callLater(WINDOW, self._expire)
        return None

    def _expire(self) -> None:
        """
        Drop the windows whose newest admission left the window; wait for
        the next one to do so, if any is left.
        """
        self._expiry = None
        horizon = self._clock.seconds() - WINDOW
        recent = self._recent
        while recent:
            key, times = next(iter(recent.items()))
            if times and times[-1] > horizon:
                # Used within the window, and so is everyone behind it.
                self._expiry = self._clock.callLater(times[-1] - horizon, self._expire)
                return
            del recent[key]

    def stop(self) -> None:
        """
        Cancel the expiry timer (the service is stopping).
        """
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
