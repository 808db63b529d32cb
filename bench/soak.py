#!/usr/bin/env python3
"""
A soak test of the gateway (not run in CI): thousands of requests, streaming
and not, on both routes, for N minutes, with a fraction of injected faults;
then checks that nothing was lost or leaked.

    /work/venv/bin/python bench/soak.py --minutes 5 --concurrency 200 --fault-rate 0.1
    /work/venv/bin/python bench/soak.py --minutes 0.5      # a smoke run

The gateway runs as its own process (C{twistd -n pylon-ai} with a generated
config), so its open file descriptors and RSS are read from C{/proc} (Linux
only).  The upstreams are L{FakeProvider}s in this process: one per fault
kind and wire format, each serving that fault as its C{default_reply}, and
configured as a model of its own (C{<kind>-oa} is a C{custom} model in the
OpenAI format, C{<kind>-an} an C{anthropic} one), so a request's fault is
chosen by the model it names.  The fault kinds:

    ok             a healthy reply (the text is checked)
    drop           the upstream connection is cut after two chunks
    stall          one chunk, then silence (the idle timeout, 2 s, ends it)
    no_first_byte  no response at all (the first-byte timeout, retried)
    http500        HTTP 500 (retried, then 502)
    http429        HTTP 429 with retry-after: 1 (retried, then 429)
    stream_error   the provider's error event inside a 200 stream
    bad_json       a 200 event stream whose data is not JSON (retried, then 502)
    client_cancel  a slow healthy reply that the client abandons early

Every outcome is compared with what its fault should give.  At the end it
requires: every request sent got an outcome (none lost or hung), every
outcome was the expected one, the gateway counted each request once (its
C{pylon_requests_total} by status matches the client's view), its
C{pylon_streams_in_flight} is back to 0, every upstream request was ended
(a client's cancel reached the upstream), the gateway's open fds come back
to the level before the load (after its pools' idle timeout), RSS grew by
at most C{--max-rss-growth-mib} after the warm-up, nothing alarming was
logged, and SIGTERM ends the gateway with exit code 0.  It exits 0 when all
held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from treq.client import HTTPClient  # noqa: E402

from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.internet.defer import (  # noqa: E402
    CancelledError,
    Deferred,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.defer import TimeoutError as DeferredTimeout  # noqa: E402
from twisted.internet.error import (  # noqa: E402
    ConnectingCancelledError,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402
from twisted.logger import LogLevel, formatEvent, globalLogBeginner  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.web.client import (  # noqa: E402
    Agent,
    HTTPConnectionPool,
    ResponseNeverReceived,
)

from pylon_ai.sse import Event, SSEProtocol  # noqa: E402
from pylon_ai.testing import FakeProvider, FakeReply  # noqa: E402

reactor: Any = _reactor

#: The healthy reply's chunks, and the text a client must get.
CHUNKS = tuple(f"w{i} " for i in range(8))
TEXT = "".join(CHUNKS)
#: The gateway's upstream idle and first-byte timeouts (seconds).
UPSTREAM_TIMEOUT = 2
#: The gateway's pools close idle upstream connections after this long
#: (pylon_ai._http.POOL_IDLE_SECONDS); the fds settle only then.
POOL_IDLE = 30.0

FAULT_KINDS = (
    "drop",
    "stall",
    "no_first_byte",
    "http500",
    "http429",
    "stream_error",
    "bad_json",
    "client_cancel",
)
KINDS = ("ok", *FAULT_KINDS)
FORMATS = ("oa", "an")
APIS = ("openai", "anthropic")
ROUTE = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def fake_reply(kind: str, fmt: str, chunk_delay: float) -> FakeReply:
    """
    What the upstream of fault C{kind} answers, in format C{fmt}.
    """
    healthy = {"chunks": CHUNKS, "usage": (12, len(CHUNKS))}
    if kind == "ok":
        return FakeReply(**healthy, chunk_delay=chunk_delay)
    if kind == "drop":
        return FakeReply(**healthy, drop_after=2)
    if kind == "stall":
        return FakeReply(**healthy, stall_after=1)
    if kind == "no_first_byte":
        # Far longer than any wait: the gateway must close it itself.
        return FakeReply(**healthy, first_byte_delay=3600)
    if kind == "http500":
        return FakeReply(status=500, error_type="api_error")
    if kind == "http429":
        return FakeReply(status=429, retry_after=1)
    if kind == "stream_error":
        return FakeReply(**healthy, stream_error=True)
    if kind == "bad_json":
        if fmt == "an":
            return FakeReply(raw_body=b"event: message_start\ndata: {not json\n\n")
        return FakeReply(raw_body=b"data: {not json\n\n")
    if kind == "client_cancel":
        # Four seconds of stream: the client leaves long before the end.
        return FakeReply(chunks=("tick ",) * 40, usage=(12, 40), chunk_delay=0.1)
    raise ValueError(kind)


def expected(kind: str, api: str, stream: bool) -> str:
    """
    The outcome a request of fault C{kind} must have on route C{api}.

    C{ok}; C{cancelled} (the client left on purpose); C{http-<status>}; or
    C{event-<error type>} (a 200 stream ended by an error event).
    """
    if kind == "ok":
        return "ok"
    if kind == "client_cancel":
        return "cancelled"
    if kind in ("http500", "bad_json"):
        return "http-502"
    if kind == "http429":
        return "http-429"
    if kind == "no_first_byte":
        return "http-504"
    if not stream:
        return "http-504" if kind == "stall" else "http-502"
    if kind == "stall":
        return "event-timeout_error"
    if api == "openai":
        return "event-upstream_error"
    return "event-overloaded_error" if kind == "stream_error" else "event-api_error"


def server_status(outcome: str) -> str | None:
    """
    The status the gateway should count for a client outcome (L{None}: no
    prediction, for unexpected outcomes).
    """
    if outcome == "ok":
        return "200"
    if outcome == "cancelled":
        return "499"
    if outcome.startswith("http-"):
        return outcome[5:]
    if outcome == "event-timeout_error":
        return "504"
    if outcome.startswith("event-"):
        return "502"
    return None


# -- the gateway process -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gateway_config(fakes: dict[tuple[str, str], FakeProvider]) -> str:
    lines = ["[server]", "shutdown_grace_s = 5", ""]
    for (kind, fmt), fake in fakes.items():
        lines += ["[[models]]", f'name = "{kind}-{fmt}"']
        if fmt == "oa":
            lines += ['provider = "custom"', 'model = "fake-gpt"', 'api_key = ""']
        else:
            lines += [
                'provider = "anthropic"',
                'model = "fake-claude"',
                'api_key = "sk-soak-upstream"',
            ]
        lines += [
            f"base_url = {json.dumps(fake.base_url)}",
            f"timeout_s = {UPSTREAM_TIMEOUT}",
            f"first_byte_timeout_s = {UPSTREAM_TIMEOUT}",
            "",
        ]
    return "\n".join(lines)


# Runs in the child: die with this process (PR_SET_PDEATHSIG), then twistd.
BOOTSTRAP = """
import ctypes, signal
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except Exception:
    pass
from twisted.scripts.twistd import run
run()
"""


class Gateway(ProcessProtocol):
    """
    C{twistd -n pylon-ai} in a subprocess.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()
        self.exit_code: int | None = None
        self.pid = 0

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output = (self.output + data)[-65536:]

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated) and value.signal is not None:
            code = -value.signal
        elif isinstance(value, ProcessDone | ProcessTerminated):
            code = value.exitCode or 0
        else:
            code = 0
        self.exit_code = code
        self.ended.callback(code)

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    def signal(self, name: str) -> None:
        if self.alive and self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except Exception:
                pass

    def start(self, work: Path, config: Path, port: int, backlog: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), env.get("PYTHONPATH")) if p
        )
        args = [
            sys.executable,
            "-c",
            BOOTSTRAP,
            "-n",
            "--pidfile=",
            f"--logfile={work / 'gateway.log'}",
            "pylon-ai",
            "--config",
            str(config),
            "--port",
            f"tcp:{port}:interface=127.0.0.1"
            + (f":backlog={backlog}" if backlog else ""),
        ]
        reactor.spawnProcess(self, sys.executable, args, env=env, path=str(work))
        self.pid = self.transport.pid


def proc_stats(pid: int) -> dict[str, float]:
    """
    Open fds (all, sockets), RSS and peak RSS (MiB), CPU seconds of C{pid}.
    """
    fds = sockets = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                sockets += 1
        except OSError:
            pass
    status = Path(f"/proc/{pid}/status").read_text()
    mem = {
        m.group(1): int(m.group(2)) / 1024
        for m in re.finditer(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)
    }
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    return {
        "fds": fds,
        "sockets": sockets,
        "rss": mem.get("VmRSS", 0.0),
        "hwm": mem.get("VmHWM", 0.0),
        "cpu": cpu,
    }


def parse_metrics(text: str) -> tuple[float | None, Counter[tuple[str, str]]]:
    """
    C{pylon_streams_in_flight}, and C{pylon_requests_total} by (route, status)
    for the completion routes.
    """
    in_flight = None
    totals: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("pylon_streams_in_flight "):
            in_flight = float(line.split()[1])
        m = re.match(r"pylon_requests_total\{([^}]*)\}\s+(\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("route") in ROUTE.values():
                totals[labels["route"], labels["status"]] += int(float(m.group(2)))
    return in_flight, totals


# -- the load ------------------------------------------------------------------


class _Leave(Exception):
    """
    Raised from the SSE callback to abandon a stream on purpose.
    """


class Soak:
    def __init__(self, args: argparse.Namespace, upstreams: Upstreams) -> None:
        self.args = args
        self.upstreams = upstreams
        self.rng = random.Random(args.seed)
        self.base = ""
        self.sent = 0
        self.done = 0
        self.in_flight = 0
        self.streams = 0
        #: (kind, outcome) -> count
        self.outcomes: Counter[tuple[str, str]] = Counter()
        #: (kind, expected, got, api, fmt, stream) -> count, for unexpected ones
        self.unexpected: Counter[tuple[str, str, str, str, str, bool]] = Counter()
        #: (route, status) the gateway should have counted
        self.server_expect: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.examples: list[str] = []
        self.log_errors: list[str] = []
        #: (seconds into the load, lag) of this process's reactor, > 0.5 s
        self.lags: list[tuple[float, float]] = []
        #: /healthz round trips, and the slow ones (> 1 s) with their time
        self.probes: list[float] = []
        self.slow_probes: list[tuple[float, float]] = []

    # -- one request -----------------------------------------------------------

    def choose(self) -> tuple[str, str, str, bool]:
        rng = self.rng
        if rng.random() < self.args.fault_rate:
            kind = rng.choice(FAULT_KINDS)
        else:
            kind = "ok"
        return (
            kind,
            rng.choice(APIS),
            rng.choice(FORMATS),
            rng.random() < self.args.stream_fraction,
        )

    def body(self, n: int, kind: str, api: str, fmt: str, stream: bool) -> bytes:
        body: dict[str, Any] = {
            "model": f"{kind}-{fmt}",
            "stream": stream,
            "max_tokens": 64,
        }
        if api == "openai":
            body["messages"] = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"soak #{n}#"},
            ]
            if stream and self.rng.random() < 0.5:
                body["stream_options"] = {"include_usage": True}
        else:
            body["system"] = "Be brief."
            body["messages"] = [{"role": "user", "content": f"soak #{n}#"}]
        return json.dumps(body).encode()

    async def one(self, client: HTTPClient) -> None:
        kind, api, fmt, stream = self.choose()
        want = expected(kind, api, stream)
        n = self.sent
        self.sent += 1
        self.in_flight += 1
        if stream:
            self.streams += 1
        began = time.monotonic()
        d = ensureDeferred(self._exchange(client, n, kind, api, fmt, stream))
        d.addTimeout(self.args.request_timeout, reactor)
        leave: list[Any] = []
        if kind == "client_cancel" and not stream:
            # Leave once the upstream is answering (so the gateway surely has
            # the request), a little later.
            def check() -> None:
                if self.upstreams.seen(n):
                    leave[0] = reactor.callLater(self.rng.uniform(0, 0.5), d.cancel)
                else:
                    leave[0] = reactor.callLater(0.05, check)

            leave.append(reactor.callLater(0.05, check))
        try:
            got = await d
        except CancelledError:
            got = "cancelled"
        except DeferredTimeout:
            got = "client-timeout"
        except Exception as e:
            got = f"exception-{type(e).__name__}"
        finally:
            if leave and leave[0].active():
                leave[0].cancel()
            self.in_flight -= 1
            self.done += 1
        self.latency[kind].append(time.monotonic() - began)
        self.outcomes[kind, got] += 1
        status = server_status(got)
        if status is not None:
            self.server_expect[ROUTE[api], status] += 1
        if got != want:
            self.unexpected[kind, want, got, api, fmt, stream] += 1

    async def _exchange(
        self, client: HTTPClient, n: int, kind: str, api: str, fmt: str, stream: bool
    ) -> str:
        headers = {"content-type": ["application/json"]}
        if api == "anthropic":
            headers["anthropic-version"] = ["2023-06-01"]
        try:
            response = await client.post(
                self.base + ROUTE[api],
                data=self.body(n, kind, api, fmt, stream),
                headers=headers,
                unbuffered=True,
            )
        except CancelledError:
            raise
        except ConnectingCancelledError:
            # Left before even connecting: the gateway never saw it.
            return "cancelled-unsent"
        except ResponseNeverReceived as e:
            if any(r.check(CancelledError) for r in e.reasons):
                raise CancelledError() from None
            return f"conn-error-{_name(e)}"
        except Exception as e:
            return f"conn-error-{_name(e)}"
        if response.code != 200:
            return await self._error_response(response, api)
        ctype = response.headers.getRawHeaders("content-type", [""])[0]
        if not stream:
            try:
                data = json.loads(await response.content())
            except CancelledError:
                raise
            except Exception as e:
                return f"bad-body-{_name(e)}"
            return "ok" if _whole_text(data, api) == TEXT else "text-mismatch"
        if not ctype.startswith("text/event-stream"):
            return "not-event-stream"
        events: list[Event] = []
        leave_at = 1 if kind == "client_cancel" else None

        def on_event(event: Event) -> None:
            events.append(event)
            if leave_at is not None and len(events) >= leave_at:
                raise _Leave()

        proto = SSEProtocol(on_event)
        response.deliverBody(proto)
        try:
            await proto.done
        except CancelledError:
            # The client's timeout: close the connection, not only the wait.
            if proto.transport is not None:
                proto.transport.stopProducing()
            raise
        except _Leave:
            return "cancelled"
        except Exception as e:
            return f"stream-broken-{_name(e)}" + _last(events)
        return _stream_outcome(events, api)

    async def _error_response(self, response: Any, api: str) -> str:
        outcome = f"http-{response.code}"
        try:
            body = json.loads(await response.content())
        except CancelledError:
            raise
        except Exception:
            return outcome + "-bad-error-body"
        error = body.get("error") if isinstance(body, dict) else None
        shape_ok = isinstance(error, dict) and isinstance(error.get("message"), str)
        if api == "anthropic":
            shape_ok = shape_ok and body.get("type") == "error"
        if not shape_ok:
            return outcome + "-bad-error-body"
        if response.code == 429 and not response.headers.hasHeader("retry-after"):
            return outcome + "-no-retry-after"
        return outcome

    async def worker(self, client: HTTPClient, until: float) -> None:
        while (
            time.monotonic() < until
            and self.sent < self.args.max_requests
            and not self.stopping
        ):
            await self.one(client)

    stopping = False
    lag_max = 0.0


def _name(e: BaseException) -> str:
    name = type(e).__name__
    reasons = getattr(e, "reasons", None)
    if reasons:
        name += "(" + ",".join(type(r.value).__name__ for r in reasons) + ")"
    return name


def _last(events: list[Event]) -> str:
    return f"-after-{len(events)}-events"


def _whole_text(data: Any, api: str) -> str | None:
    try:
        if api == "openai":
            return str(data["choices"][0]["message"]["content"])
        return "".join(b["text"] for b in data["content"] if b["type"] == "text")
    except (KeyError, IndexError, TypeError):
        return None


def _stream_outcome(events: list[Event], api: str) -> str:
    """
    Classify a stream that ended cleanly at the HTTP level.
    """
    text: list[str] = []
    for i, event in enumerate(events):
        last = i == len(events) - 1
        if api == "openai":
            if event.data == "[DONE]":
                if not last:
                    return "events-after-done"
                return "ok" if "".join(text) == TEXT else "text-mismatch"
            try:
                obj = json.loads(event.data)
            except ValueError:
                return "bad-event-json"
            if isinstance(obj, dict) and "error" in obj:
                if not last:
                    return "events-after-error"
                return f"event-{obj['error'].get('type')}"
            for choice in obj.get("choices") or ():
                text.append((choice.get("delta") or {}).get("content") or "")
        else:
            try:
                obj = json.loads(event.data)
            except ValueError:
                return "bad-event-json"
            if event.type == "error":
                if not last:
                    return "events-after-error"
                return f"event-{obj['error'].get('type')}"
            if event.type == "content_block_delta":
                delta = obj.get("delta") or {}
                if delta.get("type") == "text_delta":
                    text.append(delta.get("text", ""))
            if event.type == "message_stop":
                if not last:
                    return "events-after-stop"
                return "ok" if "".join(text) == TEXT else "text-mismatch"
    return "truncated" + _last(events)


# -- the run -------------------------------------------------------------------


class _Backlog:
    """
    The reactor, but listening with a deeper accept queue: the fakes stand
    for providers, whose queues do not overflow (Twisted's default of 50
    would drop SYNs under this load, and the 1 s retransmission would look
    like a slow upstream).
    """

    def __init__(self, reactor: Any, backlog: int) -> None:
        self._reactor = reactor
        self._backlog = backlog

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        return self._reactor.listenTCP(
            port, factory, backlog=max(backlog, self._backlog), interface=interface
        )


def tcp_counters() -> dict[str, int]:
    """
    The kernel's TCP counters (system-wide) that tell of dropped SYNs.
    """
    found: dict[str, int] = {}
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return found
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        for k, v in zip(head.split()[1:], values.split()[1:], strict=False):
            if k in ("ListenOverflows", "TCPSynRetrans"):
                found[k] = int(v)
    return found


class Upstreams:
    """
    The fakes, and the book of upstream requests not yet ended.
    """

    def __init__(self, chunk_delay: float, backlog: int) -> None:
        self.fakes: dict[tuple[str, str], FakeProvider] = {}
        listener = _Backlog(reactor, backlog) if backlog else reactor
        for kind in KINDS:
            for fmt in FORMATS:
                self.fakes[kind, fmt] = FakeProvider(
                    listener,
                    clock=reactor,
                    default_reply=fake_reply(kind, fmt, chunk_delay),
                )
        #: (kind, request, seen at) of requests not yet ended
        self.open: list[tuple[str, Any, float]] = []
        self.total: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.disconnected: Counter[str] = Counter()
        #: The request numbers seen by the client_cancel upstreams.
        self._cancel_seen: set[int] = set()

    def seen(self, n: int) -> bool:
        """
        Whether a client_cancel upstream received request number C{n}.
        """
        if n in self._cancel_seen:
            self._cancel_seen.discard(n)
            return True
        marker = f"soak #{n}#".encode()
        return any(
            marker in r.body
            for fmt in FORMATS
            for r in self.fakes["client_cancel", fmt].requests
        )

    async def start(self) -> None:
        await gatherResults([f.start() for f in self.fakes.values()])

    def stop(self) -> Deferred[Any]:
        return gatherResults([f.stop() for f in self.fakes.values()])

    def sweep(self) -> None:
        """
        Take the new recorded requests, and forget the ended ones (counted).
        """
        now = time.monotonic()
        for (kind, _), fake in self.fakes.items():
            batch = fake.requests[:]
            del fake.requests[:]
            self.total[kind] += len(batch)
            if kind == "client_cancel":
                for r in batch:
                    m = re.search(rb"soak #(\d+)#", r.body)
                    if m:
                        self._cancel_seen.add(int(m.group(1)))
            if kind == "drop":
                continue  # the fake ends those itself, and says nothing
            self.open.extend((kind, r, now) for r in batch)
        still = []
        for kind, r, seen in self.open:
            if r.finished.called:
                self.finished[kind] += 1
            elif r.disconnected.called:
                self.disconnected[kind] += 1
            else:
                still.append((kind, r, seen))
        self.open = still

    def connections(self) -> int:
        return sum(f.open_connections for f in self.fakes.values())


def begin_logging(soak: Soak) -> None:
    """
    Report errors logged in this process (an unhandled error in a Deferred
    would mean a bug in the soak itself or in the fake).
    """

    def observer(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level in (LogLevel.error, LogLevel.critical):
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += "\n" + failure.getTraceback()
            soak.log_errors.append(text)
            if len(soak.log_errors) <= 5:
                print("soak process error:", text, file=sys.stderr)

    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def until(check: Any, seconds: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await deferLater(reactor, step, lambda: None)


async def run(args: argparse.Namespace) -> int:
    upstreams = Upstreams(args.chunk_delay, args.upstream_backlog)
    soak = Soak(args, upstreams)
    begin_logging(soak)
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, duration * 0.2)
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="pylon-soak-"))
    gateway = Gateway()
    control = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = args.concurrency
    pool.cachedConnectionTimeout = 10
    client = HTTPClient(Agent(reactor, pool=pool, connectTimeout=5))
    stats: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}

    # A watchdog: whatever happens, the run ends.
    hard_limit = duration + args.request_timeout + args.settle_timeout + 120

    def watchdog() -> None:
        print(f"soak: watchdog: still running after {hard_limit:.0f} s; killing")
        gateway.signal("KILL")
        soak.stopping = True
        os._exit(2)

    dog = reactor.callLater(hard_limit, watchdog)

    async def metrics() -> tuple[float | None, Counter[tuple[str, str]]]:
        response = await control.get(soak.base + "/metrics").addTimeout(10, reactor)
        return parse_metrics(await response.text())

    try:
        await upstreams.start()
        config = work / "pylon.toml"
        config.write_text(gateway_config(upstreams.fakes))
        port = free_port()
        soak.base = f"http://127.0.0.1:{port}"
        gateway.start(work, config, port, args.gateway_backlog)

        async def healthy() -> bool:
            if not gateway.alive:
                raise RuntimeError("the gateway exited:\n" + gateway.output.decode())
            try:
                r = await control.get(soak.base + "/healthz").addTimeout(2, reactor)
                await r.content()
                return r.code == 200
            except Exception:
                return False

        if not await until(healthy, 30, 0.1):
            raise RuntimeError("the gateway did not answer /healthz in 30 s")
        await deferLater(reactor, 1.0, lambda: None)
        stats["start"] = proc_stats(gateway.pid)
        print(
            f"soak: gateway pid {gateway.pid} on {soak.base}; {len(upstreams.fakes)} "
            f"fake upstreams; {args.minutes:g} min, concurrency {args.concurrency}, "
            f"fault rate {args.fault_rate:g}, seed {args.seed}; "
            f"start: {stats['start']['fds']:.0f} fds, "
            f"RSS {stats['start']['rss']:.1f} MiB",
            flush=True,
        )

        tcp_before = tcp_counters()
        began = time.monotonic()
        load_until = began + duration
        peak = {"fds": stats["start"]["fds"], "in_flight": 0.0}
        progress_every = min(30.0, max(5.0, duration / 10))

        async def sampler() -> None:
            next_print = began + progress_every
            while not soak.stopping:
                await deferLater(reactor, 1.0, lambda: None)
                now = time.monotonic()
                upstreams.sweep()
                if not gateway.alive:
                    failures.append("the gateway exited during the load")
                    soak.stopping = True
                    return
                s = proc_stats(gateway.pid)
                peak["fds"] = max(peak["fds"], s["fds"])
                peak["in_flight"] = max(peak["in_flight"], soak.in_flight)
                if "warm" not in stats and now - began >= warmup:
                    stats["warm"] = s
                    timings["warm"] = now - began
                if now >= next_print:
                    next_print += progress_every
                    rate = soak.done / (min(now, load_until) - began)
                    print(
                        f"soak: {now - began:6.0f} s  done {soak.done:7d}  "
                        f"{rate:6.0f}/s  in flight {soak.in_flight:4d}  "
                        f"unexpected {sum(soak.unexpected.values()):4d}  "
                        f"gw fds {s['fds']:5.0f}  RSS {s['rss']:6.1f} MiB  "
                        f"cpu {s['cpu']:6.1f} s",
                        flush=True,
                    )

        async def lag_monitor() -> None:
            # How late this process's own reactor runs a 0.1 s timer.
            while not soak.stopping:
                t = time.monotonic()
                await deferLater(reactor, 0.1, lambda: None)
                lag = time.monotonic() - t - 0.1
                soak.lag_max = max(soak.lag_max, lag)
                if lag > 0.5:
                    soak.lags.append((time.monotonic() - began, lag))

        async def prober() -> None:
            # How long the gateway takes to answer /healthz under the load.
            while not soak.stopping:
                t = time.monotonic()
                try:
                    r = await control.get(soak.base + "/healthz").addTimeout(
                        10, reactor
                    )
                    await r.content()
                    took = time.monotonic() - t
                except Exception:
                    took = 10.0
                soak.probes.append(took)
                if took > 1.0:
                    soak.slow_probes.append((t - began, took))
                await deferLater(reactor, 1.0, lambda: None)

        sampling = gatherResults(
            [
                ensureDeferred(sampler()),
                ensureDeferred(lag_monitor()),
                ensureDeferred(prober()),
            ]
        )
        workers = [
            ensureDeferred(soak.worker(client, load_until))
            for _ in range(args.concurrency)
        ]
        await gatherResults(workers)
        load_end = time.monotonic()
        timings["load"] = load_end - began
        stats["load_end"] = proc_stats(gateway.pid)
        stats.setdefault("warm", stats["load_end"])
        print(
            f"soak: load over after {timings['load']:.1f} s; settling "
            f"(up to {args.settle_timeout:.0f} s: the pools' idle timeout "
            f"is {POOL_IDLE:.0f} s)",
            flush=True,
        )

        # Settle: close the client's pool, and wait for the gateway's books,
        # fds and upstream connections to come back.
        await pool.closeCachedConnections()
        settle: dict[str, Any] = {}

        async def settled() -> bool:
            upstreams.sweep()
            in_flight, totals = await metrics()
            s = proc_stats(gateway.pid)
            settle.update(
                in_flight=in_flight,
                totals=totals,
                fds=s["fds"],
                upstream_connections=upstreams.connections(),
                upstream_open=len(upstreams.open),
            )
            return (
                in_flight == 0
                and totals == soak.server_expect
                and s["fds"] <= stats["start"]["fds"] + args.fd_slack
                and settle["upstream_connections"] == 0
                and not upstreams.open
            )

        ok = await until(settled, args.settle_timeout, 1.0)
        tcp_after = tcp_counters()
        timings.update(
            {f"tcp {k}": tcp_after[k] - tcp_before.get(k, 0) for k in tcp_after}
        )
        timings["settle"] = time.monotonic() - load_end
        soak.stopping = True
        await sampling
        stats["settled"] = proc_stats(gateway.pid)

        # SIGTERM: it must exit 0, promptly (nothing is in flight).
        t = time.monotonic()
        gateway.signal("TERM")
        try:
            code = await gateway.ended.addTimeout(20, reactor)
        except DeferredTimeout:
            code = None
        timings["exit"] = time.monotonic() - t

        # -- verdicts ---------------------------------------------------------
        lost = soak.sent - soak.done
        if lost:
            failures.append(f"{lost} requests sent got no outcome")
        n_unexpected = sum(soak.unexpected.values())
        if n_unexpected:
            failures.append(f"{n_unexpected} requests had an unexpected outcome")
        if not ok:
            if settle.get("in_flight") != 0:
                failures.append(
                    f"pylon_streams_in_flight is {settle.get('in_flight')}, not 0"
                )
            if settle.get("totals") != soak.server_expect:
                failures.append(
                    "the gateway's pylon_requests_total does not match the "
                    "requests sent"
                )
            if settle["fds"] > stats["start"]["fds"] + args.fd_slack:
                failures.append(
                    f"gateway fds {settle['fds']:.0f} > start "
                    f"{stats['start']['fds']:.0f} + {args.fd_slack} after "
                    f"{args.settle_timeout:.0f} s"
                )
            if settle["upstream_connections"]:
                failures.append(
                    f"{settle['upstream_connections']} upstream connections still open"
                )
            if settle["upstream_open"]:
                failures.append(
                    f"{settle['upstream_open']} upstream requests never ended "
                    f"({dict(Counter(k for k, _, _ in upstreams.open))})"
                )
        not_cancelled = upstreams.finished["client_cancel"]
        if not_cancelled:
            failures.append(
                f"{not_cancelled} upstream requests ran to the end although "
                "their client had left"
            )
        growth = stats["settled"]["rss"] - stats["warm"]["rss"]
        if growth > args.max_rss_growth_mib:
            failures.append(
                f"RSS grew {growth:.1f} MiB after the warm-up "
                f"(limit {args.max_rss_growth_mib:g})"
            )
        if code != 0:
            failures.append(f"the gateway's exit after SIGTERM: {code}")
        log_counts = scan_logs(work)
        for key in ("Traceback", "Unhandled", "Unexpected failure", "#critical]"):
            if log_counts[key]:
                failures.append(f"the gateway logged {key!r} {log_counts[key]} times")
        if soak.log_errors:
            failures.append(f"{len(soak.log_errors)} errors logged in the soak process")

        report(soak, upstreams, stats, peak, timings, settle, code, log_counts, args)
        dog.cancel()
        print()
        if failures:
            print("RESULT: FAIL")
            for f in failures:
                print("  -", f)
            print(f"  (gateway logs kept in {work})")
            return 1
        print(f"RESULT: PASS — {soak.done} requests, nothing lost, nothing leaked")
        if args.keep_logs:
            print(f"  (gateway logs in {work})")
        else:
            shutil.rmtree(work, True)
        return 0
    finally:
        soak.stopping = True
        if dog.active():
            dog.cancel()
        if gateway.alive:
            gateway.signal("KILL")
            try:
                await gateway.ended.addTimeout(5, reactor)
            except Exception:
                pass
        await pool.closeCachedConnections()
        await upstreams.stop()


def scan_logs(work: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in sorted(work.glob("gateway.log*")):
        with open(path, errors="replace") as f:
            for line in f:
                counts["lines"] += 1
                if "pylon_ai.requests#info]" in line:
                    counts["request lines"] += 1
                for key in ("Traceback", "Unhandled", "Unexpected failure"):
                    if key in line:
                        counts[key] += 1
                for level in ("#warn]", "#error]", "#critical]"):
                    if level in line:
                        counts[level] += 1
    return counts


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def report(
    soak: Soak,
    upstreams: Upstreams,
    stats: dict[str, dict[str, float]],
    peak: dict[str, float],
    timings: dict[str, float],
    settle: dict[str, Any],
    code: int | None,
    log_counts: Counter[str],
    args: argparse.Namespace,
) -> None:
    load = timings["load"]
    print()
    print("=" * 78)
    print(
        f"pylon_ai soak: {load:.0f} s of load, concurrency {args.concurrency}, "
        f"fault rate {args.fault_rate:g}, stream fraction {args.stream_fraction:g}, "
        f"seed {args.seed}"
    )
    print(
        f"requests: sent {soak.sent}, done {soak.done}, lost {soak.sent - soak.done}; "
        f"{soak.done / load:.0f}/s; {soak.streams} streaming; "
        f"peak in flight {peak['in_flight']:.0f}"
    )
    print()
    print(
        f"{'kind':14} {'sent':>7} {'expected':>9} {'unexpect':>9} "
        f"{'p50 s':>7} {'p99 s':>7} {'upstream':>9}  outcomes"
    )
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for (kind, outcome), n in soak.outcomes.items():
        by_kind[kind][outcome] += n
    for kind in KINDS:
        outcomes = by_kind.get(kind, Counter())
        sent = sum(outcomes.values())
        bad = sum(n for (k, *_), n in soak.unexpected.items() if k == kind)
        lat = soak.latency.get(kind, [])
        shown = ", ".join(f"{o} {n}" for o, n in outcomes.most_common())
        print(
            f"{kind:14} {sent:7d} {sent - bad:9d} {bad:9d} "
            f"{_pct(lat, 0.5):7.2f} {_pct(lat, 0.99):7.2f} "
            f"{upstreams.total[kind]:9d}  {shown}"
        )
    errors: Counter[str] = Counter()
    for (_, outcome), n in soak.outcomes.items():
        if outcome != "ok":
            errors[outcome] += n
    print()
    print(
        "errors by kind: "
        + (", ".join(f"{o} {n}" for o, n in errors.most_common()) or "none")
    )
    if soak.unexpected:
        print("unexpected outcomes (kind, expected, got, route, upstream, stream):")
        for (kind, want, got, api, fmt, stream), n in soak.unexpected.most_common(20):
            print(
                f"  {n:6d}  {kind} want {want} got {got} ({api} -> {fmt}, "
                f"stream={stream})"
            )
    print()
    totals = settle.get("totals") or Counter()
    statuses = sorted({st for _, st in totals} | {st for _, st in soak.server_expect})

    def count(book: Counter[tuple[str, str]], status: str) -> int:
        return sum(n for (_, st), n in book.items() if st == status)

    print(
        f"gateway counted {sum(totals.values())} completion requests "
        f"(client view: {sum(soak.server_expect.values())}); by status, "
        "gateway/client: "
        + ", ".join(
            f"{s} {count(totals, s)}/{count(soak.server_expect, s)}" for s in statuses
        )
    )
    print(
        f"pylon_streams_in_flight at the end: {settle.get('in_flight')}; upstream "
        f"requests {sum(upstreams.total.values())}, never ended "
        f"{settle.get('upstream_open')}, cancelled by the gateway "
        f"{sum(upstreams.disconnected.values())} (client_cancel: "
        f"{upstreams.disconnected['client_cancel']} of "
        f"{upstreams.total['client_cancel']}); upstream connections open "
        f"{settle.get('upstream_connections')}"
    )
    print()
    print(
        f"gateway process   {'start':>9} {'warm-up':>9} {'load end':>9} {'settled':>9}"
    )
    cols = ("start", "warm", "load_end", "settled")
    print(
        "  open fds        "
        + " ".join(f"{stats[c]['fds']:9.0f}" for c in cols)
        + f"   (peak {peak['fds']:.0f}; sockets at the end "
        f"{stats['settled']['sockets']:.0f})"
    )
    print(
        "  RSS MiB         "
        + " ".join(f"{stats[c]['rss']:9.1f}" for c in cols)
        + f"   (peak {stats['settled']['hwm']:.1f}; growth after warm-up "
        f"{stats['settled']['rss'] - stats['warm']['rss']:+.1f})"
    )
    print("  CPU s           " + " ".join(f"{stats[c]['cpu']:9.1f}" for c in cols))
    print(
        f"  warm-up taken at {timings.get('warm', load):.0f} s; settled "
        f"{timings['settle']:.1f} s after the load"
    )
    print(
        f"soak process reactor lag: max {soak.lag_max:.2f} s"
        + (
            "; > 0.5 s at "
            + ", ".join(f"{t:.0f} s ({lag:.1f})" for t, lag in soak.lags[:10])
            if soak.lags
            else ""
        )
    )
    print(
        f"/healthz under load: {len(soak.probes)} probes, p50 "
        f"{_pct(soak.probes, 0.5) * 1000:.0f} ms, max "
        f"{max(soak.probes, default=0) * 1000:.0f} ms"
        + (
            "; > 1 s at "
            + ", ".join(f"{t:.0f} s ({x:.1f})" for t, x in soak.slow_probes[:10])
            if soak.slow_probes
            else ""
        )
    )
    print(
        "kernel TCP counters during the run (system-wide): "
        + ", ".join(
            f"{k[4:]} +{v:.0f}" for k, v in timings.items() if k.startswith("tcp ")
        )
    )
    soak_rss = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"soak process: CPU {soak_rss.ru_utime + soak_rss.ru_stime:.1f} s, "
        f"peak RSS {soak_rss.ru_maxrss / 1024:.1f} MiB"
    )
    print(
        f"SIGTERM: exit code {code} after {timings['exit']:.2f} s; gateway log: "
        f"{log_counts['lines']} lines ({log_counts['request lines']} request "
        f"lines), {log_counts['#warn]']} warnings, {log_counts['#error]']} errors, "
        f"{log_counts['Traceback']} tracebacks"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="load duration")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--fault-rate", type=float, default=0.1, help="fraction of faulty requests"
    )
    parser.add_argument("--stream-fraction", type=float, default=0.7)
    parser.add_argument(
        "--chunk-delay", type=float, default=0.01, help="seconds between chunks"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="per request, seconds"
    )
    parser.add_argument("--max-requests", type=int, default=5_000_000)
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the RSS baseline (default: 20%% of the run, ≤ 60)",
    )
    parser.add_argument("--max-rss-growth-mib", type=float, default=50.0)
    parser.add_argument("--fd-slack", type=int, default=3)
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=POOL_IDLE + 30,
        help="seconds for fds and books to come back after the load",
    )
    parser.add_argument(
        "--gateway-backlog",
        type=int,
        default=1024,
        help="listen backlog of the gateway (0: Twisted's default, 50, which "
        "drops SYNs under this load: each costs a 1 s retransmission)",
    )
    parser.add_argument(
        "--upstream-backlog",
        type=int,
        default=1024,
        help="listen backlog of the fake upstreams (0: Twisted's default, 50)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if not Path("/proc/self/fd").is_dir():
        sys.exit("soak.py reads /proc: Linux only")

    result: list[int] = []

    async def go() -> None:
        result.append(await run(args))

    def done(outcome: Any) -> None:
        if isinstance(outcome, Failure):
            print("soak: crashed:", outcome.getTraceback(), file=sys.stderr)
            result.append(2)
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(go()).addBoth(done))
    reactor.run()
    sys.exit(result[0] if result else 2)


if __name__ == "__main__":
    main()
