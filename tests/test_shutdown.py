"""
SIGTERM, end to end: the service runs under C{twistd} in a subprocess, in
front of a L{FakeProvider} served by this process, and is told to stop while
a stream is in flight, or with nothing in flight.

What it must do (DESIGN.md, section 2): stop accepting, let the streams in
flight finish for up to C{shutdown_grace_s}, end the rest with an error
event, then exit 0.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._processes import free_port, gateway_command
    from tests._service import RawClient, http_request, sse_data
except ImportError:  # pragma: no cover - run from inside tests/
    from _processes import free_port, gateway_command  # type: ignore[no-redef]
    from _service import RawClient, http_request, sse_data  # type: ignore[no-redef]

T = TypeVar("T")

#: Seconds any one wait may take before the test fails.
DEADLINE = 10.0

#: Seconds the service may take to start (imports are slow on a busy machine).
STARTUP_DEADLINE = 30.0

#: Seconds between two connection attempts while polling.
POLL = 0.02

STREAM_REQUEST = {
    "model": "local",
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


class GatewayProcess(ProcessProtocol):
    """
    The service under C{twistd}: collects its output, and tells when it
    exits.

    @ivar output: Everything it wrote, stdout and stderr.
    @ivar ended: Fires with the exit code (or C{-signal}) once it exits.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()
        self.exit_code: int | None = None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessDone | ProcessTerminated) and value.exitCode:
            code = value.exitCode
        elif isinstance(value, ProcessTerminated) and value.signal is not None:
            code = -value.signal
        else:
            code = 0
        self.exit_code = code
        self.ended.callback(code)

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def terminate(self) -> None:
        """
        Send SIGTERM.
        """
        assert self.transport is not None
        self.transport.signalProcess("TERM")


def _body(raw: bytes) -> bytes:
    """
    The body of the HTTP/1.1 response in C{raw}, its chunked transfer
    encoding undone (a last, cut chunk is kept as far as it goes).
    """
    head, _, rest = raw.partition(b"\r\n\r\n")
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


def _config(base_url: str, grace: float) -> str:
    return (
        "[server]\n"
        f"shutdown_grace_s = {grace}\n"
        "\n"
        "[[models]]\n"
        'name = "local"\n'
        'provider = "custom"\n'
        f"base_url = {json.dumps(base_url)}\n"
        'api_key = ""\n'
    )


class ShutdownTests(TestCase):
    """
    SIGTERM to a real C{twistd pylon-ai} process.
    """

    timeout = 120
    gateway: GatewayProcess | None = None

    async def setUp(self) -> None:  # type: ignore[override]
        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)

    # -- helpers -------------------------------------------------------------

    async def within(self, d: Deferred[T], what: str, seconds: float = DEADLINE) -> T:
        """
        Wait for C{d}, failing the test (with the service's output) if it
        takes more than C{seconds}.
        """
        d.addTimeout(seconds, reactor)
        try:
            return await d
        except DeferredTimeout:
            self.fail(f"{what}: not done after {seconds} s\n{self._output()}")

    async def until(
        self, check: Callable[[], Deferred[bool]], what: str, seconds: float = DEADLINE
    ) -> None:
        """
        Poll C{check} until it gives C{True}, for up to C{seconds}.
        """
        deadline = time.monotonic() + seconds
        while True:
            if await check():
                return
            if self.gateway is not None and not self.gateway.alive:
                self.fail(f"{what}: the service exited\n{self._output()}")
            if time.monotonic() > deadline:
                self.fail(f"{what}: not so after {seconds} s\n{self._output()}")
            await deferLater(reactor, POLL, lambda: None)

    def _output(self) -> str:
        if self.gateway is None:
            return ""
        return "--- service output ---\n" + self.gateway.text()

    async def connect(self) -> RawClient:
        """
        A raw connection to the service; the cleanups close it.
        """
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        await connectProtocol(endpoint, client)
        self.addCleanup(self._close, client)
        return client

    @staticmethod
    def _close(client: RawClient) -> Deferred[None]:
        if not client.closed.called:
            cast(ITCPTransport, client.transport).abortConnection()
        return client.closed

    def refused(self) -> Deferred[bool]:
        """
        Whether a new connection to the service is refused now; one that is
        accepted is closed again at once.
        """

        def accepted(client: RawClient) -> bool:
            cast(ITCPTransport, client.transport).abortConnection()
            return False

        def failed(failure: Failure) -> bool:
            if failure.check(ConnectionRefusedError):
                return True
            # A connection the kernel queued just as the listening socket
            # closed is reset rather than refused: refused all the same.
            failure.trap(ConnectError)
            if getattr(failure.value, "osError", None) != errno.ECONNRESET:
                failure.raiseException()
            return True

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        d = connectProtocol(endpoint, RawClient())
        return d.addCallbacks(accepted, failed)

    def healthy(self) -> Deferred[bool]:
        """
        Whether C{GET /healthz} answers 200 now.
        """

        async def check() -> bool:
            try:
                client = await self.connect()
            except ConnectionRefusedError:
                return False
            client.send(http_request("GET", "/healthz"))
            try:
                await client.until(lambda b: b"\r\n\r\n" in b).addTimeout(2, reactor)
            except (AssertionError, DeferredTimeout):
                return False  # closed or silent: not ready yet
            client.close()
            return client.data.startswith(b"HTTP/1.1 200 ")

        return Deferred.fromCoroutine(check())

    async def start_gateway(self, grace: float) -> GatewayProcess:
        """
        Run C{twistd -n pylon-ai} with a config pointing at the fake, and
        wait until it answers C{/healthz}.
        """
        work = Path(tempfile.mkdtemp(prefix="pylon-shutdown-"))
        self.addCleanup(shutil.rmtree, work, True)
        config = work / "pylon.toml"
        config.write_text(_config(self.fake.base_url, grace))
        self.port = free_port()
        args, env = gateway_command(config, self.port)
        gateway = GatewayProcess()
        self.gateway = gateway
        reactor.spawnProcess(gateway, sys.executable, args, env=env, path=str(work))
        self.addCleanup(self._kill, gateway)
        await self.until(
            self.healthy, "the service answering /healthz", STARTUP_DEADLINE
        )
        return gateway

    async def _kill(self, gateway: GatewayProcess) -> None:
        if gateway.alive:
            assert gateway.transport is not None
            gateway.transport.signalProcess("KILL")
            await self.within(gateway.ended, "the service killed", 5)

    async def stream_started(self) -> RawClient:
        """
        Open a streamed completion and wait for its first text chunk.
        """
        client = await self.connect()
        client.send(http_request("POST", "/v1/chat/completions", STREAM_REQUEST))
        await self.within(
            client.until(lambda b: b'"a0"' in b),
            "the first chunk",
        )
        return client

    async def exits_cleanly(self, gateway: GatewayProcess, seconds: float) -> None:
        """
        The service exits 0 within C{seconds}, with nothing alarming logged.
        """
        code = await self.within(gateway.ended, "the service exiting", seconds)
        output = gateway.text()
        self.assertEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Unhandled", output)

    # -- tests ---------------------------------------------------------------

    async def test_stream_in_flight_finishes(self) -> None:
        """
        A stream in flight when SIGTERM comes still ends with C{[DONE]};
        new connections are refused meanwhile; the service then exits 0.
        """
        chunks = [f"a{i}" for i in range(12)]
        self.fake.enqueue(FakeReply(chunks=chunks, chunk_delay=0.2))
        gateway = await self.start_gateway(grace=10)
        client = await self.stream_started()

        gateway.terminate()
        await self.until(self.refused, "new connections refused")
        # Refused while the stream was still going: the stop did not wait
        # for the drain to stop accepting.
        self.assertNotIn(b"[DONE]", client.data)

        await self.within(client.closed, "the stream ending")
        data = sse_data(_body(client.data))
        self.assertEqual(data[-1], "[DONE]", client.data)
        text = "".join(
            choice["delta"].get("content") or ""
            for event in data[:-1]
            for choice in json.loads(event)["choices"]
        )
        self.assertEqual(text, "".join(chunks))
        self.assertNotIn(b'"error"', client.data)
        await self.exits_cleanly(gateway, DEADLINE)

    async def test_grace_over_ends_stream_with_error(self) -> None:
        """
        A stream still going when the grace period is over ends with an error
        event saying the gateway is shutting down, and no C{[DONE]}; the
        upstream request is closed; the service exits 0.
        """
        self.fake.enqueue(FakeReply(chunks=["a0", "a1", "a2"], stall_after=1))
        gateway = await self.start_gateway(grace=0.5)
        client = await self.stream_started()

        signalled = time.monotonic()
        gateway.terminate()
        await self.within(client.closed, "the stream ending")
        ended = time.monotonic()
        self.assertGreaterEqual(ended - signalled, 0.4, "ended before the grace")

        data = sse_data(_body(client.data))
        self.assertNotIn("[DONE]", data, client.data)
        last = json.loads(data[-1])
        self.assertIn("error", last, client.data)
        self.assertIn("shutting down", last["error"]["message"])
        await self.within(
            self.fake.requests[0].disconnected, "the upstream request closed"
        )
        await self.exits_cleanly(gateway, DEADLINE)

    async def test_idle_exits_promptly(self) -> None:
        """
        With nothing in flight, SIGTERM ends the service at once, not after
        the grace period.
        """
        gateway = await self.start_gateway(grace=30)
        gateway.terminate()
        await self.exits_cleanly(gateway, 8)
