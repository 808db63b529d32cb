"""
Where the per-key limits keep their counts: in this process
(L{MemoryState}, the default) or in Redis (L{RedisState}, in
C{pylon_ai.gateway._redis}), shared by every worker and instance.

A state admits a request of one client identity against the per-key limits
(requests in flight, requests per minute, tokens per minute) and hands back a
L{Release} to call once when the request ends, with the tokens it used.  The
memory state answers at once; the Redis state answers with a L{Deferred}, so
that the default path stays as fast as it was (no Deferred at all).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from attrs import frozen

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pylon_ai.formats.events import Usage
from pylon_ai.gateway._apierrors import ApiError

#: The window of the per-key rates, in seconds.
WINDOW = 60.0


class Release(Protocol):
    """
    Ends an admitted request: frees its concurrency slot and counts the
    tokens it used against the tokens-per-minute limit.  Calling it again
    does nothing.
    """

    def __call__(self, tokens: int = 0) -> None: ...


#: What admitting a request gives: its release, or the error to answer with.
Admission = Release | ApiError


@frozen
class KeyLimits:
    """
    The per-key limits (0: no limit).
    """

    max_concurrent: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0


class State(Protocol):
    """
    Counts for the per-key limits.
    """

    def admit(self, identity: str) -> Admission | Deferred[Admission]:
        """
        Admit a request of C{identity} or refuse it (429 with
        C{retry-after}; a Redis state that cannot reach Redis and fails
        closed answers 503).
        """

    def stop(self) -> None:
        """
        Cancel timers and close connections: the service is stopping.
        """


class _Windows:
    """
    Sliding windows of amounts per identity (requests, or tokens), bounded
    by the identities active within the last window: a window that empties
    is dropped, by a timer that runs only while there is something to
    expire.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        # (time, amount) per identity, least recently used first, so that
        # the idle ones are at the front; and their sums.
        self._recent: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self._sums: dict[str, int] = {}
        self._expiry: IDelayedCall | None = None

    def __contains__(self, identity: str) -> bool:
        return identity in self._recent

    def keys(self) -> set[str]:
        return set(self._recent)

    def total(self, identity: str) -> tuple[int, float]:
        """
        The sum of C{identity}'s amounts within the window, and the seconds
        until its oldest one leaves it.
        """
        recent = self._recent.get(identity)
        if not recent:
            return 0, 0.0
        now = self._clock.seconds()
        total = self._sums[identity]
        while recent and recent[0][0] <= now - WINDOW:
            total -= recent.popleft()[1]
        self._sums[identity] = total
        return total, (recent[0][0] + WINDOW - now) if recent else 0.0

    def add(self, identity: str, amount: int) -> None:
        now = self._clock.seconds()
        recent = self._recent.get(identity)
        if recent is None:
            recent = self._recent[identity] = deque()
            self._sums[identity] = 0
        recent.append((now, amount))
        self._sums[identity] += amount
        # Ordered by the newest addition (not by refusals), so that the
        # expiry finds the idle windows at the front.
        self._recent.move_to_end(identity)
        if self._expiry is None:
            self._expiry = self._clock.callLater(WINDOW, self._expire)

    def _expire(self) -> None:
        # Drop the windows whose newest entry left the window; wait for the
        # next one to do so, if any is left.
        self._expiry = None
        horizon = self._clock.seconds() - WINDOW
        recent = self._recent
        while recent:
            identity, entries = next(iter(recent.items()))
            if entries and entries[-1][0] > horizon:
                # Used within the window, and so is everyone behind it.
                self._expiry = self._clock.callLater(
                    entries[-1][0] - horizon, self._expire
                )
                return
            del recent[identity]
            del self._sums[identity]

    def stop(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None


def retry_after(seconds: float) -> str:
    """
    A C{retry-after} value: whole seconds, at least one.
    """
    return str(max(1, math.ceil(seconds)))


def once(release: Callable[[int], object]) -> Release:
    """
    A L{Release} that calls C{release} with the tokens the first time it is
    called, and does nothing after.
    """
    released = False

    def release_once(tokens: int = 0) -> None:
        nonlocal released
        if not released:
            released = True
            release(tokens)

    return release_once


def too_many_in_flight() -> ApiError:
    """
    The 429 for a key at its C{max_concurrent_per_key}.
    """
    return ApiError(429, "too many requests in flight for this key", retry_after="1")


def over_tokens(limit: int, wait: float) -> ApiError:
    """
    The 429 for a key past its tokens per minute; C{wait} in seconds.
    """
    return ApiError(
        429,
        f"more than {limit} tokens per minute for this key",
        retry_after=retry_after(wait),
    )


def over_requests(limit: int, wait: float) -> ApiError:
    """
    The 429 for a key past its requests per minute; C{wait} in seconds.
    """
    return ApiError(
        429,
        f"more than {limit} requests per minute for this key",
        retry_after=retry_after(wait),
    )


class MemoryState:
    """
    The per-key counts of this process alone: with several workers or
    instances every limit is that many times more lenient.  Everything is
    synchronous: L{admit} returns its answer, never a L{Deferred}.
    """

    def __init__(self, limits: KeyLimits, clock: IReactorTime) -> None:
        self._limits = limits
        self._per_key: dict[str, int] = {}
        self._requests = _Windows(clock)
        self._tokens = _Windows(clock)

    @property
    def tracked(self) -> int:
        """
        The number of client identities with any state: requests in flight,
        or requests or tokens within the window.
        """
        return len(self._per_key.keys() | self._requests.keys() | self._tokens.keys())

    def admit(self, identity: str) -> Admission:
        """
        Admit a request of C{identity}, or refuse it with a 429.
        """
        limits = self._limits
        if (
            limits.max_concurrent
            and self._per_key.get(identity, 0) >= limits.max_concurrent
        ):
            return too_many_in_flight()
        if limits.tokens_per_minute:
            used, wait = self._tokens.total(identity)
            if used >= limits.tokens_per_minute:
                return over_tokens(limits.tokens_per_minute, wait)
        if limits.requests_per_minute:
            count, wait = self._requests.total(identity)
            if count >= limits.requests_per_minute:
                return over_requests(limits.requests_per_minute, wait)
            self._requests.add(identity, 1)
        self._per_key[identity] = self._per_key.get(identity, 0) + 1

        def release(tokens: int) -> None:
            left = self._per_key[identity] - 1
            if left:
                self._per_key[identity] = left
            else:
                del self._per_key[identity]
            if tokens > 0 and limits.tokens_per_minute:
                self._tokens.add(identity, tokens)

        return once(release)

    def stop(self) -> None:
        """
        Cancel the expiry timers.
        """
        self._requests.stop()
        self._tokens.stop()


class SharedView(Protocol):
    """
    What the other instances know of one deployment (with Redis): see
    L{pylon_ai.gateway._redis.SharedDeployment}.
    """

    cooldown_until: float
    others_in_flight: int

    def failed(self, now: float) -> None:
        """
        Count a failure for every instance.
        """

    def succeeded(self) -> None:
        """
        End the failures in a row and the cooldown for every instance.
        """


def usage_tokens(usage: Usage | None) -> int:
    """
    The tokens a request counts against C{tokens_per_minute_per_key}: its
    input (cache reads and writes included, as OpenAI's C{prompt_tokens}
    counts them) and its output, as reported so far.
    """
    if usage is None:
        return 0
    return sum(
        n or 0
        for n in (
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.cache_creation_tokens,
            usage.output_tokens,
        )
    )
