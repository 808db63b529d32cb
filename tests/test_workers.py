"""
C{twistd pylon-ai --workers N}: L{pylon_ai.gateway._workers} and the
C{--workers} option.

The end-to-end tests run a real supervisor and its workers in subprocesses,
on a real loopback socket, in front of a L{FakeProvider} served by this
process.  Which worker answers a new connection is the kernel's choice; to
make one answer, the tests stop the other (SIGSTOP) for a moment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import (
    LogEvent,
    LogLevel,
    eventAsJSON,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pylon_ai.gateway._workers import (
    Backoff,
    SharedSocket,
    Supervisor,
    WorkerProcess,
)
from pylon_ai.tap import Options
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._processes import free_port, gateway_command
    from tests._service import RawClient, http_request
except ImportError:  # pragma: no cover - run from inside tests/
    from _processes import free_port, gateway_command  # type: ignore[no-redef]
    from _service import RawClient, http_request  # type: ignore[no-redef]

T = TypeVar("T")

#: Seconds any one wait may take before the test fails.
DEADLINE = 10.0
#: Seconds the service may take to start (imports are slow on a busy machine).
STARTUP_DEADLINE = 30.0
POLL = 0.02

_STARTED = re.compile(rb"worker (\d+) started \(pid (\d+)\)")
_LISTENING = re.compile(rb"\[worker-(\d+):(\d+) [^]]*\] GatewaySite starting on")


# -- units --------------------------------------------------------------------


class OptionTests(SynchronousTestCase):
    """
    C{--workers}: a positive number or C{auto}; 1 by default.
    """

    def options(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_default_is_one(self) -> None:
        self.assertEqual(self.options()["workers"], 1)

    def test_number(self) -> None:
        self.assertEqual(self.options("--workers", "3")["workers"], 3)
        self.assertEqual(self.options("-w", "2")["workers"], 2)

    def test_auto(self) -> None:
        self.assertEqual(
            self.options("--workers", "auto")["workers"], os.cpu_count() or 1
        )

    def test_bad(self) -> None:
        for value in ("0", "-2", "two", ""):
            e = self.assertRaises(SystemExit, self.options, "--workers", value)
            self.assertIn("--workers", str(e.code))
            self.assertNotIn("\n", str(e.code))

    def test_tls_endpoint_refused(self) -> None:
        """
        Workers adopt a plain socket: a TLS endpoint would lose its TLS.
        """
        config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        self.addCleanup(os.unlink, config.name)
        config.write('[server]\napi_keys = ["k"]\n')
        config.close()
        argv = ["--config", config.name, "--port", "ssl:8443:privateKey=k.pem"]
        self.options(*argv)  # one process: fine
        e = self.assertRaises(SystemExit, self.options, *argv, "--workers", "2")
        self.assertIn("TLS", str(e.code))


class BackoffTests(SynchronousTestCase):
    """
    L{Backoff}: doubling while workers keep failing, capped, and back to the
    start after a worker ran long enough.
    """

    def test_delays(self) -> None:
        backoff = Backoff(initial=0.5, maximum=4, healthy_after=30)
        delays = [backoff.delay(ran_for=1) for _ in range(6)]
        self.assertEqual(delays, [0.5, 1, 2, 4, 4, 4])
        self.assertEqual(backoff.delay(ran_for=30), 0.5)
        self.assertEqual(backoff.delay(ran_for=1), 1)


class _FakeProcess:
    """
    The transport of a spawned fake worker.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class _Reactor(Clock):
    """
    A clock that spawns fake processes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[ProcessProtocol, list[str], dict[str, str], Any]] = []

    def spawnProcess(
        self,
        protocol: ProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: Any,
    ) -> _FakeProcess:
        transport = _FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.spawned.append((protocol, args, env, childFDs))
        return transport


class _Port:
    def __init__(self) -> None:
        self.stopped = False

    def stopListening(self) -> None:
        self.stopped = True


def _end(protocol: ProcessProtocol, *, code: int = 0, sig: int | None = None) -> None:
    if code == 0 and sig is None:
        protocol.processEnded(Failure(ProcessDone(0)))
    else:
        protocol.processEnded(Failure(ProcessTerminated(code, sig)))


class SupervisorTests(SynchronousTestCase):
    """
    L{Supervisor} with fake processes: starts, restarts, stops.
    """

    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.events: list[LogEvent] = []
        listening = socket.socket()
        self.port = _Port()
        self.shared = SharedSocket(listening, self.port)  # type: ignore[arg-type]
        self.addCleanup(listening.close)
        self.supervisor = Supervisor(
            self.reactor,
            self.shared,
            workers=2,
            command=lambda n: ["python", "worker", str(n)],
            grace=5,
            observer=self.events.append,  # type: ignore[arg-type]
        )
        self.addCleanup(shutil.rmtree, self.supervisor.run_dir, True)
        self.log: list[str] = []

        def observe(event: LogEvent) -> None:
            if event.get("log_namespace", "").endswith("Supervisor"):
                self.log.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, observe)  # type: ignore[arg-type]

    def test_start(self) -> None:
        """
        N workers, each given the listening socket as fd 3, a lifeline on
        its standard input and the shared metrics directory.
        """
        self.supervisor.startService()
        self.assertEqual(
            [args for _, args, _, _ in self.reactor.spawned],
            [["python", "worker", "1"], ["python", "worker", "2"]],
        )
        for _, _, env, fds in self.reactor.spawned:
            self.assertEqual(env["PROMETHEUS_MULTIPROC_DIR"], self.supervisor.run_dir)
            self.assertEqual(
                fds, {0: "w", 1: "r", 2: "r", 3: self.shared.socket.fileno()}
            )
        self.assertEqual(self.supervisor.pids, {1: 1000, 2: 1001})
        self.assertIn("worker 2 started (pid 1001)", self.log)

    def test_restart_with_backoff(self) -> None:
        """
        A worker that ends is started again after a delay that grows while
        it keeps failing; each end is logged.
        """
        self.supervisor.startService()
        _end(self.reactor.spawned[0][0], sig=9)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertIn(
            "worker 1 (pid 1000) was killed by signal 9; restarting it in 0.5 s",
            self.log,
        )
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.supervisor.pids, {1: 1002, 2: 1001})

        _end(self.reactor.spawned[2][0], code=1)
        self.assertIn(
            "worker 1 (pid 1002) exited with status 1; restarting it in 1.0 s",
            self.log,
        )
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 4)

    def test_stop(self) -> None:
        """
        Stopping closes the socket here, sends SIGTERM to every worker,
        cancels pending restarts and waits for the workers to end.
        """
        self.supervisor.startService()
        _end(self.reactor.spawned[0][0], sig=9)  # a restart is pending
        d = self.supervisor.stopService()
        self.assertEqual(self.shared.socket.fileno(), -1)
        worker = self.reactor.spawned[1][0]
        self.assertEqual(worker.transport.signals, ["TERM"])  # type: ignore[union-attr]
        self.assertNoResult(d)
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), 2)  # no restart
        _end(worker, sig=15)
        self.successResultOf(d)
        self.assertTrue(self.port.stopped)
        self.assertFalse(os.path.exists(self.supervisor.run_dir))

    def test_stop_kills_after_grace(self) -> None:
        """
        A worker still running well past the grace period is killed.
        """
        self.supervisor.startService()
        d = self.supervisor.stopService()
        self.reactor.advance(5 + 9)
        worker = self.reactor.spawned[0][0]
        self.assertEqual(worker.transport.signals, ["TERM"])  # type: ignore[union-attr]
        self.reactor.advance(1)
        self.assertEqual(worker.transport.signals, ["TERM", "KILL"])  # type: ignore[union-attr]
        for protocol, _, _, _ in self.reactor.spawned:
            _end(protocol, sig=9)
        self.successResultOf(d)


class RelayTests(SynchronousTestCase):
    """
    L{WorkerProcess} relays a worker's log events (JSON lines on its
    stdout) and its stderr, marked with the worker's number and pid.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        self.worker = WorkerProcess(2, self.events.append, 0)  # type: ignore[arg-type]
        self.worker.makeConnection(_FakeProcess(4242))  # type: ignore[arg-type]

    def test_event(self) -> None:
        event = {
            "log_format": "status={status}",
            "status": 200,
            "log_level": LogLevel.info,
            "log_namespace": "pylon_ai.requests",
            "log_time": 1234.5,
        }
        line = (eventAsJSON(event) + "\n").encode()
        self.worker.childDataReceived(1, line[:10])
        self.assertEqual(self.events, [])
        self.worker.childDataReceived(1, line[10:])
        [relayed] = self.events
        self.assertEqual(formatEvent(relayed), "status=200")
        self.assertEqual(relayed["log_time"], 1234.5)
        self.assertEqual(relayed["log_level"], LogLevel.info)
        self.assertEqual(relayed["log_system"], "worker-2:4242 pylon_ai.requests#info")
        self.assertEqual(relayed["pylon_worker"], 2)

    def test_stderr_and_last_words(self) -> None:
        """
        Lines on stderr are errors; a last line without its end is relayed
        when the worker ends, and the end is told in words.
        """
        self.worker.childDataReceived(2, b"Traceback (most recent call last):\n  x")
        _end(self.worker, sig=9)
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            ["Traceback (most recent call last):", "  x"],
        )
        self.assertEqual(self.events[0]["log_level"], LogLevel.error)
        self.assertEqual(
            self.successResultOf(self.worker.ended), "was killed by signal 9"
        )


# -- end to end ---------------------------------------------------------------


class Gateway(ProcessProtocol):
    """
    The supervisor process: its output, and its end.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()
        self.exit_code: int | None = None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = 0
        if isinstance(value, ProcessTerminated):
            code = -value.signal if value.signal is not None else value.exitCode
        self.exit_code = code
        self.ended.callback(code)

    def started(self) -> dict[int, int]:
        """
        The pid of each worker, as the supervisor last logged it.
        """
        return {int(n): int(pid) for n, pid in _STARTED.findall(self.output)}

    def listening(self) -> dict[int, int]:
        """
        The pid of each worker that has adopted the socket.
        """
        return {int(n): int(pid) for n, pid in _LISTENING.findall(self.output)}

    def signal(self, name: str) -> None:
        assert self.transport is not None
        self.transport.signalProcess(name)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return "\nState:\tZ" not in status  # a zombie has ended


def _dechunk(head: bytes, rest: bytes) -> bytes:
    if b"transfer-encoding: chunked" not in head.lower():
        return rest
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return body


class WorkersTests(TestCase):
    """
    C{twistd pylon-ai --workers 2}, end to end.
    """

    timeout = 60
    gateway: Gateway | None = None

    async def setUp(self) -> None:  # type: ignore[override]
        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)

    # -- helpers -------------------------------------------------------------

    def _output(self) -> str:
        if self.gateway is None:
            return ""
        return "--- service output ---\n" + self.gateway.output.decode(
            "utf-8", "replace"
        )

    async def within(self, d: Deferred[T], what: str, seconds: float = DEADLINE) -> T:
        d.addTimeout(seconds, reactor)
        try:
            return await d
        except DeferredTimeout:
            self.fail(f"{what}: not done after {seconds} s\n{self._output()}")

    async def until(
        self, check: Callable[[], Any], what: str, seconds: float = DEADLINE
    ) -> None:
        """
        Poll C{check} (a plain or async callable) until it is true.
        """
        deadline = time.monotonic() + seconds
        while True:
            result = check()
            if isinstance(result, Deferred) or hasattr(result, "__await__"):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                self.fail(f"{what}: not so after {seconds} s\n{self._output()}")
            await deferLater(reactor, POLL, lambda: None)

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        """
        One request on a new connection: its status and (de-chunked) body.
        """
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        await connectProtocol(endpoint, client)
        client.send(http_request(method, path, body, {"Connection": "close"}))
        await self.within(client.closed, f"{method} {path}")
        head, _, rest = client.data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head else 0
        return status, _dechunk(head, rest)

    async def health(self) -> dict[str, Any]:
        status, body = await self.request("GET", "/healthz")
        self.assertEqual(status, 200, body)
        result: dict[str, Any] = json.loads(body)
        return result

    async def answers(self) -> bool:
        try:
            status, _ = await self.request("GET", "/healthz")
        except Exception:
            return False
        return status == 200

    async def start(self, grace: float = 10) -> Gateway:
        """
        Run C{twistd -n pylon-ai --workers 2} and wait until both workers
        have started and one answers.
        """
        work = Path(tempfile.mkdtemp(prefix="pylon-workers-"))
        self.addCleanup(shutil.rmtree, work, True)
        config = work / "pylon.toml"
        config.write_text(
            f"[server]\nshutdown_grace_s = {grace}\n\n"
            '[[models]]\nname = "local"\nprovider = "custom"\n'
            f'base_url = {json.dumps(self.fake.base_url)}\napi_key = ""\n\n'
            '[[models]]\nname = "mock"\nprovider = "mock"\n'
        )
        self.port = free_port()
        args, env = gateway_command(config, self.port, "--workers", "2")
        gateway = Gateway()
        self.gateway = gateway
        reactor.spawnProcess(gateway, sys.executable, args, env=env, path=str(work))
        self.addCleanup(self._kill_all, gateway)
        await self.until(
            lambda: (
                gateway.listening() == gateway.started() and len(gateway.started()) == 2
            ),
            "two workers listening",
            STARTUP_DEADLINE,
        )
        return gateway

    async def _kill_all(self, gateway: Gateway) -> None:
        pids = list(gateway.started().values())
        for pid in pids:
            _resume(pid)
        if gateway.exit_code is None:
            gateway.signal("KILL")
            await self.within(gateway.ended, "the supervisor killed", 5)
        # The workers notice and stop on their own.
        await self.until(
            lambda: not any(_alive(p) for p in pids), "the workers gone", 15
        )

    async def served_by(self, pid: int) -> dict[str, Any]:
        """
        C{/healthz} with every other worker stopped: answered by C{pid}.
        """
        assert self.gateway is not None
        others = [p for p in self.gateway.started().values() if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            return await self.health()
        finally:
            for other in others:
                _resume(other)

    async def completions(self, pid: int, n: int) -> None:
        """
        C{n} completions served by worker C{pid} (the others stopped).
        """
        assert self.gateway is not None
        others = [p for p in self.gateway.started().values() if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            for _ in range(n):
                status, body = await self.request(
                    "POST",
                    "/v1/chat/completions",
                    {"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
                )
                self.assertEqual(status, 200, body)
            self.assertEqual((await self.health())["pid"], pid)
        finally:
            for other in others:
                _resume(other)

    # -- tests ---------------------------------------------------------------

    async def test_two_workers_one_sum(self) -> None:
        """
        Two worker processes serve; C{/healthz} says which; C{/metrics}
        scraped on either shows the requests of both.
        """
        gateway = await self.start()
        pids = gateway.started()
        self.assertEqual(sorted(pids), [1, 2])
        self.assertNotEqual(pids[1], pids[2])
        for number, pid in pids.items():
            self.assertEqual(
                await self.served_by(pid),
                {"status": "ok", "worker": number, "pid": pid},
            )

        await self.completions(pids[1], 3)
        await self.completions(pids[2], 2)
        for pid in pids.values():
            assert self.gateway is not None
            others = [p for p in pids.values() if p != pid]
            os.kill(others[0], signal.SIGSTOP)
            try:
                status, metrics = await self.request("GET", "/metrics")
            finally:
                _resume(others[0])
            self.assertEqual(status, 200)
            self.assertIn(
                b'pylon_requests_total{model="mock",route="/v1/chat/completions",'
                b'status="200"} 5.0',
                metrics,
            )
            self.assertIn(b"\npylon_streams_in_flight 0.0\n", metrics)

    async def test_kill_9_worker(self) -> None:
        """
        A worker killed with SIGKILL: the other keeps answering, the
        supervisor logs it and starts a new one, which serves.
        """
        gateway = await self.start()
        pids = gateway.started()
        os.kill(pids[1], signal.SIGKILL)
        replaced = False
        answered = 0
        deadline = time.monotonic() + DEADLINE
        while not replaced:
            self.assertTrue(await self.answers(), self._output())
            answered += 1
            replaced = gateway.started()[1] != pids[1]
            if time.monotonic() > deadline:
                self.fail(f"no new worker 1\n{self._output()}")
        self.assertGreater(answered, 1)
        self.assertIn(
            f"worker 1 (pid {pids[1]}) was killed by signal 9; restarting".encode(),
            gateway.output,
        )
        new = gateway.started()[1]

        async def new_one_serves() -> bool:
            try:
                return (await self.served_by(new))["pid"] == new
            except Exception:
                return False

        await self.until(new_one_serves, "the new worker serving", STARTUP_DEADLINE)
        self.assertFalse(_alive(pids[1]))

    async def test_sigterm_mid_stream(self) -> None:
        """
        SIGTERM to the supervisor while a worker streams: the stream ends
        complete, new connections are refused, the workers and then the
        supervisor exit, with status 0.
        """
        chunks = [f"a{i}" for i in range(10)]
        self.fake.enqueue(FakeReply(chunks=chunks, chunk_delay=0.1))
        gateway = await self.start(grace=10)
        pids = list(gateway.started().values())

        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        await connectProtocol(endpoint, client)
        client.send(
            http_request(
                "POST",
                "/v1/chat/completions",
                {
                    "model": "local",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
        )
        await self.within(client.until(lambda b: b'"a0"' in b), "the first chunk")

        gateway.signal("TERM")
        await self.within(client.closed, "the stream ending")
        self.assertIn(b"data: [DONE]", client.data)
        self.assertIn(b'"a9"', client.data)
        self.assertNotIn(b'"error"', client.data)

        code = await self.within(gateway.ended, "the supervisor exiting")
        self.assertEqual(code, 0, self._output())
        self.assertNotIn(b"Traceback", gateway.output)
        self.assertFalse(any(_alive(p) for p in pids))
        self.assertIn(b"waiting up to 10 s for 2 workers to drain", gateway.output)

    async def test_supervisor_killed(self) -> None:
        """
        No orphans: with the supervisor killed (SIGKILL), the workers see
        their lifeline end and exit.
        """
        gateway = await self.start()
        pids = list(gateway.started().values())
        gateway.signal("KILL")
        await self.within(gateway.ended, "the supervisor killed")
        await self.until(
            lambda: not any(_alive(p) for p in pids), "the workers gone", DEADLINE
        )


def _resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
