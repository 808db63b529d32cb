"""
Request limits: concurrency for the process and per client key, and
requests per minute per client key.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from pylon_ai._apierrors import ApiError
from pylon_ai._config import ServerConfig

#: The window of the per-key rate, in seconds.
WINDOW = 60.0


class Limits:
    """
    Admits or refuses requests, and counts those in flight.
    """

    def __init__(self, settings: ServerConfig, clock: IReactorTime) -> None:
        self._max = settings.max_concurrent
        self._max_per_key = settings.max_concurrent_per_key
        self._rpm = settings.requests_per_minute_per_key
        self._clock = clock
        self.in_flight = 0
        self._per_key: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}

    def admit(self, key: str) -> Callable[[], None] | ApiError:
        """
        Admit a request of client key C{key} (C{""} without auth).

        @return: The function to call once when the request ends, or the
            error to answer with: 503 when the process is full, 429 when the
            key is; both with C{retry-after}.
        """
        if self._max and self.in_flight >= self._max:
            return ApiError(503, "the gateway is at its request limit", retry_after="1")
        if self._max_per_key and self._per_key.get(key, 0) >= self._max_per_key:
            return ApiError(
                429, "too many requests in flight for this key", retry_after="1"
            )
        if self._rpm:
            now = self._clock.seconds()
            recent = self._recent.setdefault(key, deque())
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
