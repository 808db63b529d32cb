"""
The per-key limits, cooldowns and in-flight counts in Redis, shared by every
worker and every instance that points at the same Redis.

One round trip per admission: a Lua script (sent by C{EVALSHA} once Redis
knows it) checks the concurrency slots, the tokens and the requests of the
window, and takes a slot, in one atomic step.  Concurrency slots are leases
with a deadline, renewed while the request runs and removed when it ends, so
the slots of an instance that crashed expire on their own.  Every key
expires.  Client keys never reach Redis: identities are hashed.

Redis trouble never hangs a request: a call that does not answer within
C{redis_timeout_ms}, or any call while the connection is down, counts as
Redis being unavailable.  Then C{redis_failure = "open"} admits against this
process's own counts (L{MemoryState}, with a warning at most once a minute)
and C{"closed"} answers 503.  The client reconnects on its own.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._config import RedisAddress
from pylon_ai.gateway._redis_scripts import (
    ADMIT,
    EXCHANGE,
    FAILED,
    FINISH,
    PREFIX,
    RENEW,
    _hashed,
)
from pylon_ai.gateway._resp import RedisClient, RedisUnavailable
from pylon_ai.gateway._state import (
    WINDOW,
    Admission,
    KeyLimits,
    MemoryState,
    once,
    over_requests,
    over_tokens,
    too_many_in_flight,
)

if TYPE_CHECKING:
    from pylon_ai.gateway._backends import Backend

__all__ = [
    "ADMIT",
    "EXCHANGE",
    "FAILED",
    "FINISH",
    "LEASE_S",
    "POLL_S",
    "PREFIX",
    "RENEW",
    "WARN_EVERY_S",
    "RedisState",
    "SharedDeployment",
    "_hashed",
]

#: Seconds a concurrency lease lives unless renewed; renewed every third.
LEASE_S = 15.0
#: Seconds between two exchanges of in-flight counts and cooldowns.
POLL_S = 0.5
#: Seconds between two warnings that Redis is unavailable.
WARN_EVERY_S = 60.0


class SharedDeployment:
    """
    What the other instances know of one deployment: its cooldown and their
    requests in flight on it (as of the last exchange, every L{POLL_S}).

    @ivar cooldown_until: When the shared cooldown ends, in the clock's
        seconds (0: none).
    @ivar others_in_flight: The other instances' requests in flight on it.
    """

    def __init__(self, state: RedisState, key: str, backend: Backend) -> None:
        self._state = state
        self.key = key
        self.backend = backend
        self.cooldown_until = 0.0
        self.others_in_flight = 0
        # Whether Redis may hold failures of ours to clear on a success:
        # without it a success costs no round trip.
        self._dirty = False

    def failed(self, now: float) -> None:
        """
        An attempt failed: count it in Redis; enough in a row, on any
        instance, cool the deployment down for all.
        """
        self._dirty = True
        config = self.backend.config
        cooldown_ms = int(config.cooldown_s * 1000)
        d = self._state.call(
            FAILED,
            [self._state.key("fail:" + self.key), self._state.key("cool:" + self.key)],
            [config.cooldown_failures, cooldown_ms, max(cooldown_ms, 60_000)],
        )

        def cooled(ms: Any) -> None:
            if ms:
                self.cooldown_until = self._state.clock.seconds() + int(ms) / 1000

        d.addCallbacks(cooled, self._state.trouble)

    def succeeded(self) -> None:
        """
        An attempt succeeded: the failures in a row and the cooldown end.
        """
        if not self._dirty and self.cooldown_until == 0.0:
            return
        self._dirty = False
        self.cooldown_until = 0.0
        d = self._state.call(
            "return redis.call('DEL', KEYS[1], KEYS[2])",
            [self._state.key("fail:" + self.key), self._state.key("cool:" + self.key)],
            [],
        )
        d.addErrback(self._state.trouble)


class RedisState:
    """
    The per-key limits in Redis, with this process's L{MemoryState} to fall
    back on.
    """

    log = Logger()

    def __init__(
        self,
        limits: KeyLimits,
        clock: IReactorTime,
        address: RedisAddress,
        password: str,
        timeout_ms: int,
        failure: str,
    ) -> None:
        self._limits = limits
        self.clock = clock
        self._timeout = timeout_ms / 1000
        self._fail_open = failure == "open"
        self.local = MemoryState(limits, clock)
        # Unique among live instances and workers, and unlike a pid never
        # reused by a restart while the crashed one's leases live on.
        self._instance = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._ids = itertools.count()
        # Leases to renew: lease id -> its set's key.
        self._leases: dict[str, str] = {}
        self._deployments: list[SharedDeployment] = []
        self._warned_at: float | None = None
        self._redis = _connect(clock, address, password)
        #: Seconds a lease lives unless renewed (renewed every third).
        self.lease_s = LEASE_S
        #: Renewals sent so far.
        self.renewals = 0
        self._renewal: LoopingCall | None = None
        # Ended requests whose leases and tokens are yet to be written.
        self._finished: list[tuple[str, str, str, int]] = []
        self._finishing: IDelayedCall | None = None
        self._poll: LoopingCall | None = None

    @property
    def connected(self) -> bool:
        """
        Whether a connection to Redis is up.
        """
        return self._redis.connected

    def key(self, name: str) -> str:
        """
        The Redis key of C{name}.
        """
        return PREFIX + name

    def call(
        self, script: str, keys: Sequence[str], args: Sequence[object]
    ) -> Deferred[Any]:
        """
        Run C{script}, failing with L{RedisUnavailable} at once when Redis
        is not connected and after the timeout when it does not answer.
        """
        if not self.connected:
            return fail(RedisUnavailable("not connected"))
        d: Deferred[Any] = self._redis.eval(script, keys, args)
        d.addTimeout(self._timeout, self.clock)
        return d

    def trouble(self, failure: Failure) -> None:
        """
        Note that a call failed; warn at most once a minute.
        """
        now = self.clock.seconds()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            self.log.warn(
                "Redis is unavailable ({error}): {policy}",
                error=failure.getErrorMessage() or repr(failure.value),
                policy="limits are this process's own"
                if self._fail_open
                else "requests get 503",
            )

    def admit(self, identity: str) -> Deferred[Admission]:
        """
        Admit a request of C{identity} in one round trip.
        """
        lease = f"{self._instance}:{next(self._ids)}"
        hashed = _hashed(identity)
        keys = [self.key(f"{kind}:{hashed}") for kind in ("rpm", "conc", "tpm")]
        limits = self._limits
        d = self.call(
            ADMIT,
            keys,
            [
                limits.requests_per_minute,
                limits.max_concurrent,
                limits.tokens_per_minute,
                lease,
                int(self.lease_s * 1000),
                int(WINDOW * 1000),
            ],
        )
        # The request waits on this one: it goes out now.
        self._redis.flush()
        return d.addCallbacks(
            self._admitted,
            self._unavailable,
            callbackArgs=(keys, lease),
            errbackArgs=(identity,),
        )

    def _admitted(self, reply: Any, keys: list[str], lease: str) -> Admission:
        verdict, wait = int(reply[0]), int(reply[1])
        if verdict == 2:
            return too_many_in_flight()
        if verdict == 3:
            return over_tokens(self._limits.tokens_per_minute, wait / 1000)
        if verdict == 1:
            return over_requests(self._limits.requests_per_minute, wait / 1000)
        if self._limits.max_concurrent:
            self._leases[lease] = keys[1]
            if self._renewal is None:
                self._renewal = LoopingCall(self._renew)
                self._renewal.clock = self.clock
                self._renewal.start(self.lease_s / 3, now=False)

        def release(tokens: int) -> None:
            self._leases.pop(lease, None)
            if self._limits.max_concurrent or (
                tokens > 0 and self._limits.tokens_per_minute
            ):
                self._finished.append((keys[1], keys[2], lease, tokens))
                if self._finishing is None:
                    self._finishing = self.clock.callLater(0, self._finish)

        return once(release)

    def _finish(self) -> Deferred[None]:
        # The requests that ended in one reactor turn, in one round trip.
        self._finishing = None
        done, self._finished = self._finished, []
        keys: list[str] = []
        args: list[object] = []
        for leases, tokens_key, lease, tokens in done:
            keys += (leases, tokens_key)
            args += (lease, tokens)
        return self.call(FINISH, keys, args).addErrback(self.trouble)

    def _unavailable(self, failure: Failure, identity: str) -> Admission:
        self.trouble(failure)
        if self._fail_open:
            return self.local.admit(identity)
        return ApiError(
            503,
            "the gateway's shared limits are unavailable",
            retry_after="1",
            error_type="overloaded_error",
        )

    def _renew(self) -> None:
        if not self._leases or not self.connected:
            return
        leases = list(self._leases.items())
        self.renewals += 1
        self.call(
            RENEW,
            [key for _, key in leases],
            [int(self.lease_s * 1000), *(lease for lease, _ in leases)],
        ).addErrback(self.trouble)

    def share(self, backends: Mapping[str, Sequence[Backend]]) -> None:
        """
        Share the cooldowns and in-flight counts of these deployments with
        the other instances: each gets a L{SharedDeployment} as C{shared}.
        """
        for name, group in backends.items():
            for i, backend in enumerate(group):
                # Keyed by name, position and URL, never by the upstream key.
                key = f"{name}:{i}:{_hashed(backend.url)[:12]}"
                shared = SharedDeployment(self, key, backend)
                backend.shared = shared
                self._deployments.append(shared)
        if self._deployments and self._poll is None:
            self._poll = LoopingCall(self._exchange)
            self._poll.clock = self.clock
            self._poll.start(POLL_S, now=False)

    def _exchange(self) -> None:
        args: list[object] = [PREFIX, self._instance, int(POLL_S * 3000)]
        for shared in self._deployments:
            args += [shared.key, shared.backend.in_flight]
        self.call(EXCHANGE, [], args).addCallbacks(self._learned, self._forget)

    def _learned(self, reply: Any) -> None:
        now = self.clock.seconds()
        for i, shared in enumerate(self._deployments):
            shared.others_in_flight = int(reply[2 * i])
            ms = int(reply[2 * i + 1])
            shared.cooldown_until = now + ms / 1000 if ms > 0 else 0.0

    def _forget(self, failure: Failure) -> None:
        # Stale counts of others would skew the balancing for as long as
        # Redis is away; the cooldowns known so far stay until they end.
        self.trouble(failure)
        for shared in self._deployments:
            shared.others_in_flight = 0

    def stop(self) -> Deferred[None]:
        """
        Stop the timers and close the connection.
        """
        self.local.stop()
        for loop in (self._renewal, self._poll):
            if loop is not None and loop.running:
                loop.stop()
        if self._finishing is not None:
            self._finishing.cancel()
            # Closed once answered (or timed out): closing first would lose
            # the answer and warn that Redis is unavailable.
            return self._finish().addBoth(lambda _: self._redis.disconnect())
        return self._redis.disconnect()


def _connect(clock: IReactorTime, address: RedisAddress, password: str) -> RedisClient:
    from twisted.internet import reactor
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
    from twisted.internet.ssl import optionsForClientTLS

    endpoint: Any = HostnameEndpoint(reactor, address.host, address.port, timeout=5)
    if address.tls:
        endpoint = wrapClientTLS(optionsForClientTLS(address.host), endpoint)
    return RedisClient(clock, endpoint, password=password or None, db=address.db)
