"""
The shared state across processes: real C{twistd -n pylon-ai} processes
(each with its own config file in a temporary directory) in front of one real
C{redis-server} of the test's own.  C{tests/test_redis.py} proves the same
limits with two L{Gateway} objects in one process; here nothing is shared but
Redis.

    - two instances on two ports share one per-key requests-per-minute limit;
    - C{--workers 2} on one port shares it between its two worker processes;
    - Redis killed mid-load with C{redis_failure = "open"}: every request is
      answered in time, each process keeps serving with its own limits, and
      once Redis is back on the same port the limits are shared again without
      restarting the gateways.

The Redis calls get a generous C{redis_timeout_ms} so that a busy test machine
does not turn a slow answer into the documented slack (a request admitted by
the fallback); then the limit is exact, and the tests say so.

Skipped with a message when C{redis-server} is missing, except in CI (C{CI}
set), where that is a failure: C{.ci/run} installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from attrs import frozen
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, FirstError
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

try:
    from tests._processes import gateway_command
    from tests.test_redis import RedisServer, free_port, until
    from tests.test_workers import Gateway as GatewayProcess
    from tests.test_workers import _alive, _resume
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _processes import gateway_command  # type: ignore[no-redef]
    from test_redis import RedisServer, free_port, until  # type: ignore[no-redef]
    from test_workers import Gateway as GatewayProcess  # type: ignore[no-redef]
    from test_workers import _alive, _resume  # type: ignore[no-redef]

#: Seconds any one request may take before the test fails: none may hang.
ANSWER_S = 5.0
#: Seconds a wait for a condition (a start, a reconnection) may take.
WAIT_S = 20.0
#: Requests in flight per process while hammering.
AT_ONCE = 16
RPM = 60
BODY = json.dumps(
    {"model": "mock", "messages": [{"role": "user", "content": "hi there"}]}
).encode()

#: One log line per request, as a worker's relayed line or a single process's.
_REQUEST = re.compile(
    rb"\[(?:worker-\d+:(\d+) )?pylon_ai\.requests#info\] "
    rb"/v1/chat/completions .*?status=(\d+)"
)


@frozen
class Answer:
    """
    One request's outcome, and when it came (the reactor's seconds).
    """

    status: int
    retry_after: str | None
    at: float


def headers(key: str) -> dict[bytes | str, bytes | str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def statuses(answers: list[Answer]) -> list[int]:
    return [a.status for a in answers]


class Instance:
    """
    One C{twistd -n pylon-ai} process (a supervisor with C{workers > 1}),
    serving on its own loopback port.
    """

    def __init__(self, process: GatewayProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def requests(self) -> list[tuple[int | None, int]]:
        """
        The (worker pid or None, status) of every request it logged so far.
        """
        return [
            (int(pid) if pid else None, int(status))
            for pid, status in _REQUEST.findall(self.process.output)
        ]

    def output(self) -> str:
        return self.process.output.decode("utf-8", "replace")


class Load:
    """
    HTTP requests to instances on a pool the test closes; each must be
    answered within L{ANSWER_S}.
    """

    def __init__(self, case: TestCase, persistent: bool = True) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.pool.maxPersistentPerHost = AT_ONCE
        case.addCleanup(self.pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        #: How many requests have been answered so far.
        self.answered = 0

    async def post(self, instance: Instance, key: str) -> Answer:
        d = self.http.post(
            instance.url + "/v1/chat/completions", data=BODY, headers=headers(key)
        )
        sent = reactor.seconds()
        try:
            response = await d.addTimeout(ANSWER_S, reactor)
            await response.content().addTimeout(ANSWER_S, reactor)
        except Exception:
            # A timeout shows as treq's cancellation (ResponseNeverReceived).
            if reactor.seconds() - sent >= ANSWER_S:
                raise AssertionError(
                    f"a request to {instance.url} hung for {ANSWER_S} s"
                ) from None
            raise
        self.answered += 1
        retry = response.headers.getRawHeaders("retry-after")
        return Answer(response.code, retry[0] if retry else None, reactor.seconds())

    async def many(self, instance: Instance, n: int, key: str = "k1") -> list[Answer]:
        """
        C{n} requests from C{key}, L{AT_ONCE} at a time.
        """
        answers: list[Answer] = []
        left = iter(range(n))

        async def one_at_a_time() -> None:
            for _ in left:
                answers.append(await self.post(instance, key))

        await gather(*(one_at_a_time() for _ in range(AT_ONCE)))
        return answers

    async def on_each(
        self, instances: list[Instance], n: int, key: str = "k1"
    ) -> list[list[Answer]]:
        """
        C{n} requests from C{key} to each instance at once.
        """
        return await gather(*(self.many(i, n, key) for i in instances))


async def gather(*coroutines: Awaitable[Any]) -> list[Any]:
    try:
        results: list[tuple[bool, Any]] = await DeferredList(
            [Deferred.fromCoroutine(c) for c in coroutines],  # type: ignore[arg-type]
            fireOnOneErrback=True,
            consumeErrors=True,
        )
    except FirstError as e:
        # The first failure itself, not wrapped once per level.
        e.subFailure.raiseException()
    return [result for _, result in results]


async def instances_in_redis(redis: RedisServer) -> int:
    """
    How many gateway processes (instances or workers) have told this Redis
    their in-flight counts: each does every half second while connected.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from pylon_ai.gateway._resp import RedisProtocol, encode

    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", redis.port, timeout=2)
    connection = await connectProtocol(endpoint, RedisProtocol())
    try:
        return int(await connection.command(encode([b"ZCARD", b"pylon:instances"])))
    finally:
        assert connection.transport is not None
        connection.transport.loseConnection()
        await connection.lost


class ProcessesTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.instances: list[Instance] = []

    async def redis(self) -> RedisServer:
        server = RedisServer(self)
        await server.start()
        return server

    def fail_with_output(self, message: str) -> None:
        outputs = "\n".join(
            f"--- {i.url} ---\n{i.output()[-4000:]}" for i in self.instances
        )
        self.fail(f"{message}\n{outputs}")

    async def eventually(
        self, check: Callable[[], bool | Awaitable[bool]], what: str
    ) -> None:
        """
        Poll C{check} (plain or async) until it is true, for up to L{WAIT_S}
        (starting a process can be slow on a busy machine).
        """
        deadline = time.monotonic() + WAIT_S
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                self.fail_with_output(f"waited {WAIT_S} s for {what}")
            await deferLater(reactor, 0.05, lambda: None)

    def spawn(self, redis: RedisServer, workers: int = 1, **server: Any) -> Instance:
        """
        Start C{twistd -n pylon-ai} with a config file of its own: keys
        C{k1}, C{k2}, C{k3}, L{RPM} requests per minute per key, this Redis,
        the mock model.
        """
        work = Path(tempfile.mkdtemp(prefix="pylon-redis-proc-"))
        self.addCleanup(shutil.rmtree, work, True)
        settings = {
            "api_keys": ["k1", "k2", "k3"],
            "requests_per_minute_per_key": RPM,
            "state": redis.url,
            "shutdown_grace_s": 1,
            **server,
        }
        lines = [f"{name} = {json.dumps(value)}" for name, value in settings.items()]
        config = work / "pylon.toml"
        config.write_text(
            "[server]\n"
            + "\n".join(lines)
            + '\n\n[[models]]\nname = "mock"\nprovider = "mock"\n'
        )
        port = free_port()
        args, env = gateway_command(config, port, "--workers", str(workers))
        process = GatewayProcess()
        reactor.spawnProcess(process, sys.executable, args, env=env, path=str(work))
        self.addCleanup(self.stop, process)
        instance = Instance(process, port)
        self.instances.append(instance)
        return instance

    async def stop(self, process: GatewayProcess) -> None:
        pids = list(process.started().values())
        for pid in pids:
            _resume(pid)
        if process.exit_code is None:
            process.signal("TERM")
            try:
                await process.ended.addTimeout(10, reactor)
            except DeferredTimeout:
                process.signal("KILL")
                await process.ended
        await until(lambda: not any(_alive(p) for p in pids), "the workers gone")

    async def serving(self, redis: RedisServer, *instances: Instance) -> None:
        """
        Wait until every instance answers and every process of theirs
        exchanges with Redis (so no request is admitted by a fallback).
        """
        client = Load(self)

        def healthy(instance: Instance) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                if instance.process.exit_code is not None:
                    self.fail_with_output(f"{instance.url} ended")
                try:
                    d = client.http.get(instance.url + "/healthz")
                    response = await d.addTimeout(ANSWER_S, reactor)
                    await response.content()
                except Exception:
                    return False
                return bool(response.code == 200)

            return check

        for instance in instances:
            await self.eventually(healthy(instance), f"{instance.url} to answer")
        processes = sum(max(1, len(i.process.started())) for i in instances)

        async def all_in_redis() -> bool:
            return await instances_in_redis(redis) == processes

        await self.eventually(all_in_redis, f"{processes} processes in Redis")

    def assert_limited(self, answers: list[Answer], accepted: int) -> None:
        """
        Exactly C{accepted} answers are 200; every other one is a 429 with a
        C{retry-after} of 1 to 60 s.
        """
        codes = statuses(answers)
        self.assertEqual(codes.count(200), accepted, sorted(set(codes)))
        refused = [a for a in answers if a.status != 200]
        self.assertEqual({a.status for a in refused} - {429}, set())
        waits = {int(a.retry_after or 0) for a in refused}
        self.assertTrue(all(1 <= w <= 60 for w in waits), waits)


class TwoInstancesTests(ProcessesTestCase):
    """
    Two C{twistd} processes on two ports, one Redis.
    """

    async def test_one_limit_between_them(self) -> None:
        """
        300 requests from one key to each instance, within a minute: 60
        accepted in total, the other 540 get 429 with C{retry-after}.  On its
        own each would accept 60.
        """
        redis = await self.redis()
        settings: dict[str, Any] = {"redis_timeout_ms": 2000}
        a = self.spawn(redis, **settings)
        b = self.spawn(redis, **settings)
        await self.serving(redis, a, b)
        started = reactor.seconds()
        on_a, on_b = await Load(self).on_each([a, b], 300)
        self.assertLess(reactor.seconds() - started, 60)  # one window
        self.assertEqual((len(on_a), len(on_b)), (300, 300))
        self.assert_limited(on_a + on_b, RPM)


class WorkersTests(ProcessesTestCase):
    """
    C{--workers 2} on one port with one Redis.
    """

    async def only(self, gateway: Instance, pid: int, n: int) -> list[Answer]:
        """
        C{n} requests from C{k1} served by worker C{pid}: the other is
        stopped (SIGSTOP) meanwhile, so it accepts no connection.
        """
        others = [p for p in gateway.process.started().values() if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            load = Load(self, persistent=False)
            response = await load.http.get(gateway.url + "/healthz")
            health = json.loads(await response.content())
            self.assertEqual(health["pid"], pid)
            return await load.many(gateway, n)
        finally:
            for other in others:
                _resume(other)

    async def test_limit_shared_by_workers(self) -> None:
        """
        300 requests from one key on new connections (so the kernel spreads
        them over both workers): 60 accepted in total, by both workers.
        Then each worker alone, the other stopped, refuses more: neither has
        a book of its own, where it would still have room.
        """
        redis = await self.redis()
        gateway = self.spawn(redis, workers=2, redis_timeout_ms=2000)

        def listening() -> bool:
            if gateway.process.exit_code is not None:
                return True
            started = gateway.process.started()
            return len(started) == 2 and gateway.process.listening() == started

        await self.eventually(listening, "two workers listening")
        await self.serving(redis, gateway)
        pids = set(gateway.process.started().values())

        answers = await Load(self, persistent=False).many(gateway, 300)
        self.assert_limited(answers, RPM)

        # Refusals are not logged per request; admissions are, by pid.
        def all_logged() -> bool:
            return len(gateway.requests()) >= RPM

        await until(all_logged, "a log line for each accepted request")
        accepted: dict[int | None, int] = {}
        for pid, status in gateway.requests():
            self.assertEqual(status, 200)
            accepted[pid] = accepted.get(pid, 0) + 1
        self.assertEqual(set(accepted), pids, accepted)
        self.assertEqual(sum(accepted.values()), RPM)

        for pid in pids:
            alone = await self.only(gateway, pid, 20)
            self.assert_limited(alone, 0)


class RedisKilledTests(ProcessesTestCase):
    """
    Redis SIGKILLed under load, then restarted on the same port.
    """

    async def test_fail_open_then_shared_again(self) -> None:
        """
        Killed mid-load: every request is answered within L{ANSWER_S}, none
        lost.  While it is down each instance keeps serving with its own
        limit (60 each: 120 between the two).  Restarted: the same gateways
        share one limit again.
        """
        redis = await self.redis()
        settings: dict[str, Any] = {"redis_failure": "open", "redis_timeout_ms": 1000}
        a = self.spawn(redis, **settings)
        b = self.spawn(redis, **settings)
        await self.serving(redis, a, b)

        # 30 on each: within the shared 60, so every one must be a 200,
        # whether Redis or a fallback admitted it.
        load = Load(self)
        started = reactor.seconds()
        during = Deferred.fromCoroutine(load.on_each([a, b], 30))
        await until(lambda: load.answered >= 16, "the first answers")
        answered_before = load.answered
        await redis.kill()
        killed_at = reactor.seconds()
        on_a, on_b = await during
        self.assertLess(answered_before, 60, "the load ended before the kill")
        self.assertEqual(statuses(on_a + on_b), [200] * 60)
        self.assertTrue(
            any(answer.at > killed_at for answer in on_a + on_b),
            "no request was answered after the kill",
        )
        self.assertLess(max(x.at for x in on_a + on_b) - started, 2 * ANSWER_S)

        # Down: a fresh key, 100 to each; each admits its own 60.
        down_a, down_b = await Load(self).on_each([a, b], 100, key="k2")
        self.assert_limited(down_a, RPM)
        self.assert_limited(down_b, RPM)
        for instance in (a, b):
            self.assertIn("Redis is unavailable", instance.output())

        # Back on the same port: the gateways reconnect on their own.
        await redis.start()

        async def both_back() -> bool:
            return await instances_in_redis(redis) == 2

        await self.eventually(both_back, "both gateways back in Redis")
        shared_a, shared_b = await Load(self).on_each([a, b], 100, key="k3")
        self.assert_limited(shared_a + shared_b, RPM)
