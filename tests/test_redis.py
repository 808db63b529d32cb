"""
The shared state against a real C{redis-server} (started here on a free
port, in a temporary directory, without persistence): two gateways share
one per-key rate, concurrency slots, tokens, cooldowns and in-flight counts;
a Redis that is slow, killed or restarted never hangs a request.

Skipped with a message when C{redis-server} is missing, except in CI
(C{CI} set), where that is a failure: C{.ci/run} installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient
from zope.interface import provider

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._config import Config, ModelConfig, ServerConfig
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._limits import Limits
from pylon_ai.gateway._redis import RedisState

try:
    from tests._processes import free_port
    from tests._service import CLIENT_KEY, Service, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _processes import free_port  # type: ignore[no-redef]
    from _service import CLIENT_KEY, Service, start_service  # type: ignore[no-redef]

REDIS = shutil.which("redis-server")
#: How long a test waits for something that should come soon.
WAIT = 10.0
HEADERS = {
    "Authorization": f"Bearer {CLIENT_KEY}",
    "Content-Type": "application/json",
}
BODY = json.dumps(
    {"model": "mock", "messages": [{"role": "user", "content": "hi there"}]}
).encode()


class RedisServer(ProcessProtocol):
    """
    A C{redis-server} of the test's own.
    """

    def __init__(self, case: TestCase) -> None:
        if REDIS is None:
            if os.environ.get("CI"):
                case.fail("redis-server is missing (.ci/run installs it)")
            raise SkipTest("redis-server is missing: apt-get install redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pylon-redis-")
        case.addCleanup(shutil.rmtree, self.dir, True)
        case.addCleanup(self.stop)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._ready: Deferred[None] | None = None
        self._ended: Deferred[None] | None = None
        self._output = b""
        self.running = False

    def start(self) -> Deferred[None]:
        self._ready, self._ended, self._output = Deferred(), Deferred(), b""
        assert REDIS is not None
        reactor.spawnProcess(  # type: ignore[attr-defined]
            self,
            REDIS,
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                "",
                "--daemonize",
                "no",
            ],
            env={},
        )
        self.running = True
        return self._ready.addTimeout(WAIT, reactor)

    def outReceived(self, data: bytes) -> None:
        self._output += data
        if b"Ready to accept connections" in self._output and self._ready:
            ready, self._ready = self._ready, None
            ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        if self._ended is not None:
            self._ended.callback(None)

    def send(self, signum: int) -> None:
        self.transport.signalProcess(signum)  # type: ignore[union-attr]

    def kill(self) -> Deferred[None]:
        assert self._ended is not None
        ended = self._ended
        self.send(signal.SIGKILL)
        return ended

    def stop(self) -> Deferred[None] | None:
        if not self.running:
            return None
        self.send(signal.SIGCONT)
        return self.kill()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """
    Wait, up to L{WAIT}, for C{predicate} to hold.
    """
    waited = 0.0
    while not predicate():
        if waited > WAIT:
            raise AssertionError(f"waited {WAIT} s for {what}")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def shared(limits: Limits) -> RedisState:
    state = limits.shared
    assert state is not None
    return state


class Client:
    """
    Many HTTP requests at once to gateways, on a pool the test closes.
    """

    def __init__(self, case: TestCase) -> None:
        self.pool = HTTPConnectionPool(reactor)
        self.pool.maxPersistentPerHost = 50
        case.addCleanup(self.pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        #: Requests answered so far.
        self.answered = 0

    async def post(self, service: Service) -> tuple[int, str | None]:
        response = await self.http.post(
            service.url + "/v1/chat/completions", BODY, headers=HEADERS
        )
        await response.content()
        self.answered += 1
        retry = response.headers.getRawHeaders("retry-after")
        return response.code, retry[0] if retry else None

    async def many(
        self, service: Service, n: int, at_once: int = 20
    ) -> list[tuple[int, str | None]]:
        """
        C{n} requests, C{at_once} at a time; each must be answered within
        L{WAIT}.
        """
        results: list[tuple[int, str | None]] = []
        left = iter(range(n))

        async def worker() -> None:
            for _ in left:
                d = Deferred.fromCoroutine(self.post(service))
                results.append(await d.addTimeout(WAIT, reactor))

        await DeferredList(
            [Deferred.fromCoroutine(worker()) for _ in range(at_once)],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        return results


class RedisTestCase(TestCase):
    async def redis(self) -> RedisServer:
        server = RedisServer(self)
        await server.start()
        return server

    async def gateway(self, redis: RedisServer, **server: Any) -> Service:
        service = await start_service(
            self, {"api_keys": [CLIENT_KEY], "state": redis.url, **server}
        )
        state = shared(service.gateway.limits)
        await until(lambda: state.connected, "the connection to Redis")
        return service

    async def limits(self, redis: RedisServer, **server: Any) -> Limits:
        limits = Limits(
            ServerConfig(api_keys=("k",), state=redis.url, **server), reactor
        )
        self.addCleanup(limits.stop)
        state = shared(limits)
        await until(lambda: state.connected, "the connection to Redis")
        return limits

    async def admit(self, limits: Limits, key: str = "k") -> Any:
        result = limits.admit(key)
        assert isinstance(result, Deferred)
        return await result


class SharedLimitTests(RedisTestCase):
    """
    Two gateways with one Redis enforce one per-key limit between them.
    """

    async def test_requests_per_minute(self) -> None:
        """
        300 requests on each of two gateways from one key with
        C{requests_per_minute_per_key = 60}: 60 accepted in total, the rest
        429 with C{retry-after}.  (The timeout is generous here: a request
        admitted while Redis was unreachable would be the documented slack.)
        """
        redis = await self.redis()
        settings = {"requests_per_minute_per_key": 60, "redis_timeout_ms": 3000}
        a = await self.gateway(redis, **settings)
        b = await self.gateway(redis, **settings)
        client = Client(self)
        both = await DeferredList(
            [
                Deferred.fromCoroutine(client.many(a, 300)),
                Deferred.fromCoroutine(client.many(b, 300)),
            ],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        results = [r for _, rs in both for r in rs]
        self.assertEqual(len(results), 600)
        statuses = [status for status, _ in results]
        self.assertEqual(statuses.count(200), 60)
        self.assertEqual(statuses.count(429), 540)
        waits = {int(wait or 0) for status, wait in results if status == 429}
        self.assertTrue(waits and all(1 <= w <= 60 for w in waits), waits)

    async def test_no_per_key_limits_no_round_trip(self) -> None:
        """
        Without per-key limits, admission asks Redis nothing: it answers at
        once, as in memory.
        """
        redis = await self.redis()
        limits = await self.limits(redis, max_concurrent=5)
        release = limits.admit("k")
        self.assertNotIsInstance(release, Deferred)
        assert callable(release)
        self.assertEqual(limits.in_flight, 1)
        release()
        self.assertEqual(limits.in_flight, 0)

    async def test_concurrency(self) -> None:
        """
        C{max_concurrent_per_key} counts the slots of both: a slot freed on
        one is free for the other.
        """
        redis = await self.redis()
        a = await self.limits(redis, max_concurrent_per_key=2)
        b = await self.limits(redis, max_concurrent_per_key=2)
        first = await self.admit(a)
        await self.admit(a)
        refused = await self.admit(b)
        assert isinstance(refused, ApiError)
        self.assertEqual((refused.status, refused.retry_after), (429, "1"))
        first()
        # The release is one round trip on its way.
        for _ in range(100):
            release = await self.admit(b)
            if not isinstance(release, ApiError):
                break
        self.assertTrue(callable(release))
        self.assertIsInstance(await self.admit(a), ApiError)

    async def test_leases_renewed_and_expire(self) -> None:
        """
        A slot held past its lease stays held while renewed; the slots of an
        instance that stops without releasing them (a crash) expire.
        """
        redis = await self.redis()
        a = await self.limits(redis, max_concurrent_per_key=1)
        b = await self.limits(redis, max_concurrent_per_key=1)
        shared(a).lease_s = 0.3
        await self.admit(a)
        state = shared(a)
        await until(lambda: state.renewals >= 4, "four renewals (over a lease)")
        self.assertIsInstance(await self.admit(b), ApiError)
        a.stop()  # no release: as if the process died
        refused_at = reactor.seconds()
        admitted = None
        while reactor.seconds() - refused_at < WAIT:
            admitted = await self.admit(b)
            if not isinstance(admitted, ApiError):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(callable(admitted))

    async def test_tokens_per_minute(self) -> None:
        """
        The tokens a reply reports on one gateway count on the other.
        """
        redis = await self.redis()
        a = await self.gateway(redis, tokens_per_minute_per_key=2)
        b = await self.gateway(redis, tokens_per_minute_per_key=2)
        client = Client(self)
        self.assertEqual((await client.post(a))[0], 200)
        limits = b.gateway.limits

        async def refused() -> bool:
            result = await self.admit(limits, CLIENT_KEY)
            if isinstance(result, ApiError):
                return True
            result()
            return False

        for _ in range(100):
            if await refused():
                break
        status, wait = await client.post(b)
        self.assertEqual(status, 429)
        self.assertIsNotNone(wait)


def two_deployments() -> Config:
    model = {"cooldown_failures": 2, "cooldown_s": 30.0, "api_key": "sk-up"}
    return Config(
        ServerConfig(),
        (
            ModelConfig(
                name="m", provider="custom", base_url="http://127.0.0.1:9/", **model
            ),
            ModelConfig(
                name="m", provider="custom", base_url="http://127.0.0.1:10/", **model
            ),
        ),
    )


class SharedDeploymentTests(RedisTestCase):
    """
    Cooldowns and in-flight counts per deployment are every instance's.
    """

    async def gateways(self) -> tuple[Gateway, Gateway]:
        redis = await self.redis()
        config = two_deployments()
        server = ServerConfig(state=redis.url)
        gateways = []
        for _ in range(2):
            gateway = Gateway(Config(server, config.models), reactor)
            self.addCleanup(gateway.close)
            await until(
                lambda: shared(gateway.limits).connected,  # noqa: B023
                "the connection to Redis",
            )
            gateways.append(gateway)
        return gateways[0], gateways[1]

    async def test_cooldown_honoured_elsewhere(self) -> None:
        """
        A deployment put in cooldown by failures on A gets no traffic from
        B; a success on A ends it for B too.
        """
        a, b = await self.gateways()
        self.assertIs(b.pick("m", set()), b.backends["m"][0])
        failing = a.backends["m"][0]
        for _ in range(2):
            failing.failed(reactor.seconds())
        cooled = b.backends["m"][0]
        await until(lambda: cooled.resting_until() > reactor.seconds(), "B to see it")
        for _ in range(5):
            self.assertIs(b.pick("m", set()), b.backends["m"][1])
        self.assertNotIn("sk-up", repr(cooled.shared and cooled.shared.key))
        failing.succeeded()
        await until(lambda: cooled.resting_until() == 0.0, "B to see it end")
        self.assertIs(b.pick("m", set()), b.backends["m"][0])

    async def test_in_flight_summed(self) -> None:
        """
        B's least-busy choice counts A's requests in flight.
        """
        a, b = await self.gateways()
        a.backends["m"][0].in_flight = 5
        await until(lambda: b.backends["m"][0].busy() == 5, "B to see A's load")
        self.assertIs(b.pick("m", set()), b.backends["m"][1])


@provider(ILogObserver)
class Warnings:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if "Redis is unavailable" in event.get("log_format", ""):
            self.events.append(event)


class RedisTroubleTests(RedisTestCase):
    """
    Redis slow, killed or restarted: every request is answered, by this
    process's own limits (open) or a 503 (closed), and sharing resumes
    without a restart.
    """

    def warnings(self) -> Warnings:
        observer = Warnings()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return observer

    async def test_slow_redis_fails_open(self) -> None:
        """
        Redis stopped (SIGSTOP: connected, silent): requests are answered
        within the timeout against this process's own limits, with one
        warning.
        """
        redis = await self.redis()
        a = await self.gateway(redis, requests_per_minute_per_key=3)
        client = Client(self)
        warnings = self.warnings()
        redis.send(signal.SIGSTOP)
        started = reactor.seconds()
        results = await client.many(a, 5, at_once=5)
        self.assertLess(reactor.seconds() - started, 2.0)
        self.assertEqual(sorted(s for s, _ in results), [200, 200, 200, 429, 429])
        self.assertEqual(len(warnings.events), 1)
        redis.send(signal.SIGCONT)

    async def test_killed_mid_load_fails_open(self) -> None:
        """
        Redis killed while requests flow: every request is answered (none
        hangs, none is lost); restarted, the gateway uses it again.
        """
        redis = await self.redis()
        a = await self.gateway(redis, requests_per_minute_per_key=100_000)
        client = Client(self)
        load = Deferred.fromCoroutine(client.many(a, 60))
        state = shared(a.gateway.limits)
        await until(lambda: client.answered >= 10, "the load under way")
        await redis.kill()
        results = await load
        self.assertEqual([s for s, _ in results], [200] * 60)
        await until(lambda: not state.connected, "the disconnection")
        await redis.start()
        await until(lambda: state.connected, "the reconnection")

    async def test_fails_closed(self) -> None:
        """
        With C{redis_failure = "closed"} a request while Redis is down gets
        a 503 with C{retry-after}; once Redis is back, 200 again.
        """
        redis = await self.redis()
        a = await self.gateway(
            redis, redis_failure="closed", requests_per_minute_per_key=1000
        )
        client = Client(self)
        self.assertEqual((await client.post(a))[0], 200)
        redis.send(signal.SIGSTOP)
        self.assertEqual(await client.post(a), (503, "1"))
        await redis.kill()
        state = shared(a.gateway.limits)
        await until(lambda: not state.connected, "the disconnection")
        self.assertEqual(await client.post(a), (503, "1"))
        await redis.start()
        await until(lambda: state.connected, "the reconnection")
        self.assertEqual((await client.post(a))[0], 200)

    async def test_shared_again_after_restart(self) -> None:
        """
        After a restart of Redis two instances share their limit again, with
        no restart of theirs.
        """
        redis = await self.redis()
        a = await self.limits(redis, requests_per_minute_per_key=2)
        b = await self.limits(redis, requests_per_minute_per_key=2)
        await redis.kill()
        await until(
            lambda: not shared(a).connected and not shared(b).connected,
            "the disconnection",
        )
        await redis.start()
        await until(
            lambda: shared(a).connected and shared(b).connected, "the reconnection"
        )
        for _ in range(2):
            self.assertTrue(callable(await self.admit(a)))
        refused = await self.admit(b)
        assert isinstance(refused, ApiError)
        self.assertEqual(refused.status, 429)
