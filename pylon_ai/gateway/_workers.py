"""
C{--workers N}: a supervisor process and N worker processes sharing one
listening socket.

The supervisor (the process C{twistd} started) opens the listening socket
and starts N workers, each a whole gateway that adopts the socket
(C{adoptStreamPort}) and accepts from the same queue; the kernel hands each
new connection to whichever worker accepts first.  One shared socket, not
C{SO_REUSEPORT}: the port is bound once (port 0, UNIX sockets and
C{systemd:} endpoints work, and a restart never races another process for
the port), and a worker killed with connections waiting in the queue loses
none of them: the others accept them.

The supervisor relays each worker's log, restarts a worker that ends (with
a growing delay while they keep failing), forwards SIGTERM to every worker
and waits for each to drain.  A worker reads its standard input, a pipe from
the supervisor, only to notice the supervisor is gone (the pipe reaches its
end) and then stops the same way: no orphans.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
)
from twisted.python.failure import Failure

from pylon_ai.gateway._metrics import MULTIPROCESS_ENV, forget_process
from pylon_ai.gateway._shared_socket import (
    WORKER_FD,
    SharedSocket,
    adopted_family,
    listen_shared,
)
from pylon_ai.gateway._worker_side import ParentWatch, json_log_observer

__all__ = [
    "STOP_MARGIN_S",
    "WORKER_FD",
    "Backoff",
    "ParentWatch",
    "SharedSocket",
    "Supervisor",
    "WorkerProcess",
    "adopted_family",
    "json_log_observer",
    "listen_shared",
]

#: Seconds the supervisor waits beyond C{shutdown_grace_s} for a worker to
#: finish draining before it kills it.
STOP_MARGIN_S = 10.0

#: The longest line of a worker's output relayed whole.
_MAX_LINE = 1 << 20


@define
class Backoff:
    """
    How long to wait before restarting a worker: C{initial} seconds after a
    first failure, doubling while the restarted worker fails again soon,
    up to C{maximum}; back to C{initial} once one ran for C{healthy_after}.
    """

    initial: float = 0.5
    maximum: float = 30.0
    healthy_after: float = 30.0
    _failures: int = 0

    def delay(self, ran_for: float) -> float:
        """
        The delay before the next start.

        @param ran_for: Seconds the worker that ended had run.
        """
        if ran_for >= self.healthy_after:
            self._failures = 0
        delay = min(self.maximum, self.initial * 2**self._failures)
        self._failures += 1
        return delay


@define
class _Slot:
    """
    One worker's place: its number, its current process, its backoff.
    """

    number: int
    backoff: Backoff = field(factory=Backoff)
    process: WorkerProcess | None = None
    restart: Any = None


class Supervisor(Service):
    """
    Keeps N worker processes running on one shared socket.

    @ivar pids: The process ids of the running workers, by number.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        shared: SharedSocket,
        *,
        workers: int,
        command: Callable[[int], Sequence[str]],
        grace: float,
        observer: ILogObserver = globalLogPublisher,
    ) -> None:
        """
        @param reactor: Spawns and times the workers.
        @param shared: The listening socket the workers adopt.
        @param workers: How many.
        @param command: The command line of worker number C{n}.
        @param grace: The workers' C{shutdown_grace_s}.
        @param observer: Receives the workers' log events.
        """
        self._reactor = reactor
        self._shared = shared
        self._command = command
        self._grace = grace
        self._observer = observer
        self._slots = [_Slot(n) for n in range(1, workers + 1)]
        self._stopping = False
        self.run_dir = tempfile.mkdtemp(prefix="pylon-ai-workers-")

    @property
    def pids(self) -> dict[int, int]:
        return {
            s.number: s.process.pid
            for s in self._slots
            if s.process is not None and s.process.pid is not None
        }

    def startService(self) -> None:
        super().startService()
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        process = WorkerProcess(slot.number, self._observer, self._reactor.seconds())
        env = dict(os.environ)
        env[MULTIPROCESS_ENV] = self.run_dir
        args = list(self._command(slot.number))
        self._reactor.spawnProcess(
            process,
            args[0],
            args,
            env=env,
            # 0: the lifeline (the worker stops when it ends); 1, 2: its log.
            childFDs={0: "w", 1: "r", 2: "r", WORKER_FD: self._shared.socket.fileno()},
        )
        process.ended.addCallback(self._ended, slot)
        slot.process = process
        self.log.info(
            "worker {number} started (pid {pid})", number=slot.number, pid=process.pid
        )

    def _ended(self, how: str, slot: _Slot) -> None:
        process = slot.process
        assert process is not None
        slot.process = None
        if process.pid is not None:
            forget_process(self.run_dir, process.pid)
        if self._stopping:
            self.log.info(
                "worker {number} (pid {pid}) {how}",
                number=slot.number,
                pid=process.pid,
                how=how,
            )
            return
        delay = slot.backoff.delay(self._reactor.seconds() - process.started)
        self.log.warn(
            "worker {number} (pid {pid}) {how}; restarting it in {delay} s",
            number=slot.number,
            pid=process.pid,
            how=how,
            delay=delay,
        )
        slot.restart = self._reactor.callLater(delay, self._spawn, slot)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        self._shared.close()
        running = []
        for slot in self._slots:
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
            if slot.process is not None:
                slot.process.signal("TERM")
                running.append(slot.process)
        if running:
            self.log.info(
                "Stopping: waiting up to {grace} s for {n} workers to drain",
                grace=self._grace,
                n=len(running),
            )
        killer = self._reactor.callLater(
            self._grace + STOP_MARGIN_S, self._kill, running
        )
        d = DeferredList([p.ended for p in running])

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._shared.cleanup()

        d.addBoth(done)
        return d  # type: ignore[return-value]

    def _kill(self, running: list[WorkerProcess]) -> None:
        for process in running:
            if not process.ended.called:
                self.log.warn(
                    "worker {number} (pid {pid}) still running: killing it",
                    number=process.number,
                    pid=process.pid,
                )
                process.signal("KILL")


class WorkerProcess(ProcessProtocol):
    """
    The supervisor's end of one worker: relays its log and tells when it
    ends.

    @ivar ended: Fires with how it ended, in words.
    """

    def __init__(self, number: int, observer: ILogObserver, started: float) -> None:
        self.number = number
        self.started = started
        self.pid: int | None = None
        self.ended: Deferred[str] = Deferred()
        self._observer = observer
        self._buffers: dict[int, bytes] = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid

    def signal(self, name: str) -> None:
        """
        Send a signal, unless the worker has already ended.
        """
        if self.transport is not None and not self.ended.called:
            try:
                self.transport.signalProcess(name)
            except OSError:  # gone meanwhile; processEnded will follow
                pass

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._buffers.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > _MAX_LINE:
            lines.append(rest)
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self._relay(childFD, line)

    def _relay(self, childFD: int, line: bytes) -> None:
        if not line.strip():
            return
        text = line.decode("utf-8", "replace")
        event: LogEvent | None = None
        if childFD == 1:
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if not isinstance(event, dict) or "log_time" not in event:
                event = None
        if event is None:
            # Not one of its log events: what it wrote before its logging
            # began, or a dying interpreter's last words.
            event = {
                "log_format": "{line}",
                "line": text,
                "log_level": LogLevel.error if childFD == 2 else LogLevel.info,
                "log_namespace": "pylon_ai.worker",
                "log_time": time.time(),
            }
        system = event.get("log_system") or "{}#{}".format(
            event.get("log_namespace", "-"),
            getattr(event.get("log_level"), "name", "-"),
        )
        event["log_system"] = f"worker-{self.number}:{self.pid} {system}"
        event["pylon_worker"] = self.number
        event["pylon_worker_pid"] = self.pid
        self._observer(event)

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in self._buffers.items():
            self._relay(childFD, rest)
        self._buffers = {}
        value = reason.value
        if isinstance(value, ProcessTerminated) and value.signal is not None:
            how = f"was killed by signal {value.signal}"
        elif isinstance(value, ProcessDone | ProcessTerminated):
            how = f"exited with status {value.exitCode or 0}"
        else:
            how = "ended"
        self.ended.callback(how)
