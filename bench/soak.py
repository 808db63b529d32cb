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

Alongside that load run two attacks on the gateway's hardening:

    WebSocket clients that never read
                   C{--ws-sockets} (4) sockets at a time open C{/v1/ws}
                   (a raw client: the handshake, then C{--ws-completions}
                   (6) completions of a model whose upstream streams
                   C{--ws-reply-mib} (4) MiB over C{--ws-reply-seconds}
                   (60), then its transport is paused for good).  Each
                   lives C{--ws-lifetime} (5 to 45) seconds, then its
                   client closes it, or the gateway closes it first (seen
                   in the kernel's TCP state); a new one takes its place.
                   Within C{--release-timeout} (10 s) of a socket's end,
                   every upstream request it started must have ended.
    slowloris      every C{--slowloris-every} (60) seconds, from 2 s into
                   the load, a batch of C{--slowloris} (200) connections
                   sends a request's header section one byte per second
                   (half of them from the first byte, half after a whole
                   request line and Host).  The generated config sets
                   C{header_timeout_s} to C{--header-timeout} (2): each
                   connection must be closed by the gateway within
                   C{--slowloris-grace} (10) seconds past it, while the
                   normal load keeps its expected outcomes.

Every outcome is compared with what its fault should give.  At the end it
requires: every request sent got an outcome (none lost or hung), every
outcome was the expected one, the gateway counted each request once (its
C{pylon_requests_total} by status matches the client's view, and its
C{/v1/ws} count matches the completions the stalled sockets sent), its
C{pylon_streams_in_flight} is back to 0, every upstream request was ended
(a client's cancel reached the upstream; a stalled socket's end released
its requests), every WebSocket handshake succeeded, every slowloris
connection was closed by the gateway, the gateway's open fds come back to
the level before the load (after its pools' idle timeout), RSS after the
load is at most C{--max-rss-ratio} (1.10) times the warm RSS (taken after
the warm-up) and grew by at most C{--max-rss-growth-mib}, nothing alarming
was logged, and SIGTERM ends the gateway with exit code 0.  It exits 0 when
all held, 1 otherwise.  Everything connects to 127.0.0.1 only, and every
loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
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
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.internet.error import (  # noqa: E402
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionLost,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.protocol import (  # noqa: E402
    Factory,
    ProcessProtocol,
    Protocol,
    connectionDone,
)
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
WS_ROUTE = "/v1/ws"
#: The upstreams of the WebSocket clients that never read: a large reply,
#: streamed slowly enough to outlive any of those sockets.
LARGE = "large"
#: The size of one text chunk of the large reply.
LARGE_PIECE = 16 * 1024


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


def large_reply(mib: float, seconds: float) -> FakeReply:
    """
    A reply of C{mib} MiB of text, streamed evenly over C{seconds}.
    """
    n = max(1, int(mib * (1 << 20) / LARGE_PIECE))
    return FakeReply(
        chunks=("x" * LARGE_PIECE,) * n, usage=(12, n), chunk_delay=seconds / n
    )


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


def gateway_config(
    fakes: dict[tuple[str, str], FakeProvider], header_timeout: float
) -> str:
    lines = [
        "[server]",
        "shutdown_grace_s = 5",
        # Short, so that the slowloris batches see the deadline at work.
        f"header_timeout_s = {header_timeout:g}",
        "",
    ]
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


def parse_metrics(
    text: str,
) -> tuple[float | None, Counter[tuple[str, str]], Counter[str]]:
    """
    C{pylon_streams_in_flight}, C{pylon_requests_total} by (route, status)
    for the HTTP completion routes, and by status for C{/v1/ws}.
    """
    in_flight = None
    totals: Counter[tuple[str, str]] = Counter()
    ws: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("pylon_streams_in_flight "):
            in_flight = float(line.split()[1])
        m = re.match(r"pylon_requests_total\{([^}]*)\}\s+(\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("route") in ROUTE.values():
                totals[labels["route"], labels["status"]] += int(float(m.group(2)))
            elif labels.get("route") == WS_ROUTE:
                ws[labels.get("status", "?")] += int(float(m.group(2)))
    return in_flight, totals, ws


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
        #: Slowloris batches running now; the requests that ended during
        #: one, the unexpected ones among them, and the probes then.
        self.slowloris_active = 0
        self.slowloris_done = 0
        self.slowloris_unexpected = 0
        self.slowloris_probes: list[float] = []
        #: Requests sent again after a kept-alive connection closed under them.
        self.resent = 0

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
        if self.slowloris_active:
            self.slowloris_done += 1
            if got != want:
                self.slowloris_unexpected += 1

    async def _exchange(
        self, client: HTTPClient, n: int, kind: str, api: str, fmt: str, stream: bool
    ) -> str:
        headers = {"content-type": ["application/json"]}
        if api == "anthropic":
            headers["anthropic-version"] = ["2023-06-01"]
        for attempt in (1, 2):
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
                if attempt == 1 and all(
                    r.check(ConnectionDone, ConnectionLost) for r in e.reasons
                ):
                    # The gateway closed a kept-alive connection (idle for
                    # header_timeout_s) as this request went out on it: a
                    # client sends it again on a new one.  Counted; the
                    # gateway's books show whether it had seen the first.
                    self.resent += 1
                    continue
                return f"conn-error-{_name(e)}"
            except Exception as e:
                return f"conn-error-{_name(e)}"
            break
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

    def __init__(self, chunk_delay: float, backlog: int, large: FakeReply) -> None:
        self.fakes: dict[tuple[str, str], FakeProvider] = {}
        listener = _Backlog(reactor, backlog) if backlog else reactor
        for kind in KINDS:
            for fmt in FORMATS:
                self.fakes[kind, fmt] = FakeProvider(
                    listener,
                    clock=reactor,
                    default_reply=fake_reply(kind, fmt, chunk_delay),
                )
        for fmt in FORMATS:
            self.fakes[LARGE, fmt] = FakeProvider(
                listener, clock=reactor, default_reply=large
            )
        #: The large requests by (socket, completion), from their marker.
        self.large: dict[tuple[int, int], Any] = {}
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
            if kind == LARGE:
                for r in batch:
                    m = re.search(rb"wsoak (\d+)\.(\d+)#", r.body)
                    if m:
                        self.large[int(m.group(1)), int(m.group(2))] = r
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

    def large_ports(self) -> set[int]:
        return {
            int(self.fakes[LARGE, fmt].base_url.rsplit(":", 1)[1]) for fmt in FORMATS
        }


# -- the hardening load: WebSocket clients that never read, slowloris -----------


def tcp_queues(ports: set[int], gateway_port: int, clients: set[int]) -> dict[str, int]:
    """
    Bytes waiting in the kernel's TCP queues (from C{/proc/net/tcp}):
    C{unread} by the gateway on its connections to the upstreams on
    C{ports} (it grows while the gateway keeps those upstreams paused), and
    C{unsent} by the gateway to the local ports C{clients}.
    """
    found = {"unread": 0, "unsent": 0}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        cols = line.split()
        if len(cols) < 5 or cols[3] != "01":  # ESTABLISHED only
            continue
        local = int(cols[1].rsplit(":", 1)[1], 16)
        remote = int(cols[2].rsplit(":", 1)[1], 16)
        tx, rx = (int(x, 16) for x in cols[4].split(":"))
        if remote in ports:
            found["unread"] += rx
        elif local == gateway_port and remote in clients:
            found["unsent"] += tx
    return found


def _ws_frame(payload: bytes) -> bytes:
    """
    One masked text frame (a client's frames must be masked).
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return head + mask + body


#: A client key sent once in a WebSocket handshake (header and query): it
#: must never reach the gateway's log.
CANARY = "sk-soak-canary-" + os.urandom(6).hex()

#: Linux's TCP states (tcp_states.h) seen on a client socket.
TCP_ESTABLISHED = 1


class _StalledSocket(Protocol):
    """
    A WebSocket client that does the handshake, sends its completions, and
    then never reads again (its transport is paused for good).
    """

    def __init__(
        self, host: str, frames: list[bytes], path: str = WS_ROUTE, extra: str = ""
    ) -> None:
        self.host = host
        self.frames = frames
        self.path = path
        self.extra = extra
        self.buffer = b""
        self.status = ""
        self.handshake: Deferred[str] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def dataReceived(self, data: bytes) -> None:
        if self.handshake.called:
            return  # what came in the same read as the handshake's end
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > 65536:
                self._answer("handshake reply too long")
            return
        status = self.buffer.split(b"\r\n", 1)[0].decode("latin-1")
        self.buffer = b""
        if status.split(" ")[1:2] != ["101"]:
            self._answer(status)
            return
        # Stop reading before the first reply can come: pauseProducing()
        # takes the socket out of the reactor's read set, so the kernel's
        # receive buffer fills and the gateway's sends back up.
        self.transport.pauseProducing()
        self.transport.write(b"".join(self.frames))
        self._answer("101")

    def _answer(self, status: str) -> None:
        if not self.handshake.called:
            self.handshake.callback(status)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._answer("connection lost during the handshake")
        self.lost.callback(None)

    def tcp_state(self) -> int:
        """
        The kernel's state of this socket: while its reads are paused, the
        reactor would not notice that the gateway closed it.
        """
        try:
            handle = self.transport.getHandle()
            info = handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        except (OSError, AttributeError):
            return 0
        return int(info[0])

    def local_port(self) -> int:
        try:
            return int(self.transport.getHost().port)
        except Exception:
            return 0


class StalledWebSockets:
    """
    A few WebSocket clients at a time that start completions of a large
    reply and never read; each is replaced when it has lived its time (the
    client closes it) or when the gateway closes it.  After each socket
    goes, every upstream request it started must end within
    C{release_timeout} seconds.
    """

    def __init__(self, args: argparse.Namespace, soak: Soak, upstreams: Upstreams):
        self.args = args
        self.soak = soak
        self.upstreams = upstreams
        self.rng = random.Random(args.seed + 1)
        self.port = 0
        self.next_id = 0
        self.live: dict[int, _StalledSocket] = {}
        self.opened = 0
        self.completions = 0
        self.closed_by_client = 0
        #: Sockets the gateway closed, and how old they were then.
        self.closed_by_gateway: list[float] = []
        self.handshake_failures: Counter[str] = Counter()
        #: Upstream requests that had not ended C{release_timeout} after
        #: their socket went, and some examples of them.
        self.unreleased = 0
        self.unreleased_examples: list[str] = []
        #: Upstream requests that ended, and how long after their socket.
        self.released = 0
        self.release_after: list[float] = []
        self.never_upstream = 0
        self.peak_unread = 0
        self.peak_unsent = 0
        self._checks: list[Deferred[None]] = []

    def client_ports(self) -> set[int]:
        return {s.local_port() for s in self.live.values()}

    def sample_queues(self) -> None:
        if not self.live:
            return
        q = tcp_queues(self.upstreams.large_ports(), self.port, self.client_ports())
        self.peak_unread = max(self.peak_unread, q["unread"])
        self.peak_unsent = max(self.peak_unsent, q["unsent"])

    async def canary(self) -> None:
        """
        One handshake that presents L{CANARY} as its key (refused in no-key
        mode): the key must not show up in the gateway's log.
        """
        proto = _StalledSocket(
            f"127.0.0.1:{self.port}",
            [],
            f"{WS_ROUTE}?api_key={CANARY}",
            f"Authorization: Bearer {CANARY}\r\n",
        )
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        try:
            await endpoint.connect(Factory.forProtocol(lambda: proto)).addTimeout(
                10, reactor
            )
            self.canary_status = await proto.handshake.addTimeout(10, reactor)
        except Exception as e:
            self.canary_status = _name(e)
        if proto.transport is not None:
            proto.transport.abortConnection()

    canary_status = ""

    async def run(self, until: float) -> None:
        if self.args.ws_sockets <= 0:
            return
        await self.canary()
        await gatherResults(
            [ensureDeferred(self._slot(until)) for _ in range(self.args.ws_sockets)]
        )
        await gatherResults(self._checks)

    async def _slot(self, until: float) -> None:
        # Bounded by time (each socket lives at least a second or ends on a
        # failed handshake, followed by a pause) and by count.
        attempts = 0
        while (
            time.monotonic() < until - 1
            and not self.soak.stopping
            and attempts < 10_000
        ):
            attempts += 1
            if not await self._one(until):
                await deferLater(reactor, 1.0, lambda: None)

    async def _one(self, until: float) -> bool:
        sid = self.next_id
        self.next_id += 1
        frames = [
            _ws_frame(
                json.dumps(
                    {
                        "type": "completion",
                        "id": f"c{k}",
                        "model": f"{LARGE}-{FORMATS[k % len(FORMATS)]}",
                        "messages": [{"role": "user", "content": f"wsoak {sid}.{k}#"}],
                    }
                ).encode()
            )
            for k in range(self.args.ws_completions)
        ]
        proto = _StalledSocket(f"127.0.0.1:{self.port}", frames)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        try:
            await endpoint.connect(Factory.forProtocol(lambda: proto)).addTimeout(
                10, reactor
            )
            status = await proto.handshake.addTimeout(10, reactor)
        except Exception as e:
            self.handshake_failures[_name(e)] += 1
            if proto.transport is not None:
                proto.transport.abortConnection()
            return False
        if status != "101":
            self.handshake_failures[status] += 1
            proto.transport.abortConnection()
            return False
        self.opened += 1
        self.completions += len(frames)
        self.live[sid] = proto
        opened = time.monotonic()
        low, high = self.args.ws_lifetime
        end = min(opened + self.rng.uniform(low, high), until)
        by_gateway = False
        while time.monotonic() < end and not self.soak.stopping:
            await deferLater(reactor, 1.0, lambda: None)
            if proto.lost.called or proto.tcp_state() != TCP_ESTABLISHED:
                by_gateway = True
                break
        del self.live[sid]
        if by_gateway:
            self.closed_by_gateway.append(time.monotonic() - opened)
        else:
            self.closed_by_client += 1
        gone = time.monotonic()
        if not proto.lost.called:
            proto.transport.abortConnection()
        self._checks.append(ensureDeferred(self._released(sid, gone)))
        return True

    async def _released(self, sid: int, gone: float) -> None:
        """
        Wait until every upstream request of socket C{sid} has ended.
        """
        pending: list[int] = []
        deadline = gone + self.args.release_timeout
        while True:
            self.upstreams.sweep()
            pending = []
            for k in range(self.args.ws_completions):
                r = self.upstreams.large.get((sid, k))
                if r is None or not (r.finished.called or r.disconnected.called):
                    pending.append(k)
            if not pending or time.monotonic() > deadline:
                break
            await deferLater(reactor, 0.5, lambda: None)
        ended = self.args.ws_completions - len(pending)
        self.released += ended
        if ended:
            self.release_after.append(time.monotonic() - gone)
        for k in pending:
            r = self.upstreams.large.pop((sid, k), None)
            if r is None:
                # The gateway never sent it upstream (it refused it, or the
                # socket went first): nothing to release.
                self.never_upstream += 1
            else:
                self.unreleased += 1
                if len(self.unreleased_examples) < 5:
                    self.unreleased_examples.append(f"socket {sid} completion c{k}")
        for k in range(self.args.ws_completions):
            self.upstreams.large.pop((sid, k), None)

    def close_all(self) -> None:
        for proto in list(self.live.values()):
            if proto.transport is not None and not proto.lost.called:
                proto.transport.abortConnection()


class _SlowClient(Protocol):
    """
    Sends a request's header section one byte per tick, and notes when the
    gateway closes the connection and what it answered.
    """

    def __init__(self, batch: SlowlorisBatch, prefix: bytes) -> None:
        self.batch = batch
        self.prefix = prefix
        self.sent = 0
        self.reply = b""
        self.connected_at = 0.0
        self.closed_at: float | None = None

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()
        self.batch.connected.append(self)
        if self.prefix:
            self.transport.write(self.prefix)

    def tick(self) -> None:
        if self.closed_at is None:
            # The request line, a Host, then a header value without end.
            head = SLOW_HEAD + b"X-Slow: "
            byte = head[self.sent : self.sent + 1] or b"a"
            self.sent += 1
            self.transport.write(byte)

    def dataReceived(self, data: bytes) -> None:
        if len(self.reply) < 256:
            self.reply += data[:256]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed_at = time.monotonic()


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class SlowlorisBatch:
    """
    C{n} connections to the gateway, each sending one header byte per
    second (half of them after a whole request line and C{Host}).  The
    gateway must close each within its header deadline; what is still open
    after C{limit} seconds is closed here and counted.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.connected: list[_SlowClient] = []
        self.connect_failures: Counter[str] = Counter()
        self.not_closed = 0
        self.latencies: list[float] = []
        self.replies: Counter[str] = Counter()

    async def run(self, port: int, limit: float) -> None:
        began = time.monotonic()
        attempts: list[Deferred[Any]] = []
        for i in range(self.n):
            prefix = SLOW_HEAD if i % 2 else b""
            client = _SlowClient(self, prefix)
            if prefix:
                client.sent = len(SLOW_HEAD)
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
            attempts.append(
                endpoint.connect(Factory.forProtocol(lambda c=client: c)).addErrback(
                    lambda f: self.connect_failures.update([_name(f.value)])
                )
            )
        await gatherResults(attempts)
        next_tick = time.monotonic() + 1.0
        while time.monotonic() - began < limit:
            if all(c.closed_at is not None for c in self.connected):
                break
            await deferLater(reactor, 0.1, lambda: None)
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                for c in self.connected:
                    c.tick()
        for c in self.connected:
            if c.closed_at is None:
                self.not_closed += 1
                c.transport.abortConnection()
            else:
                self.latencies.append(c.closed_at - c.connected_at)
                first = c.reply.split(b"\r\n", 1)[0].decode("latin-1")
                self.replies[first or "(closed without a reply)"] += 1


class Slowloris:
    """
    Slowloris batches now and then during the load, each bounded in count
    and time.
    """

    def __init__(self, args: argparse.Namespace, soak: Soak) -> None:
        self.args = args
        self.soak = soak
        self.port = 0
        self.batches: list[SlowlorisBatch] = []
        #: (seconds into the load) when each batch began
        self.began_at: list[float] = []

    async def run(self, began: float, until: float) -> None:
        args = self.args
        if args.slowloris <= 0:
            return
        limit = args.header_timeout + args.slowloris_grace
        start = began + min(2.0, max(0.0, until - began - limit))
        while (
            not self.soak.stopping
            and len(self.batches) < 1000
            and start + limit <= until
        ):
            wait = start - time.monotonic()
            if wait > 0:
                await deferLater(reactor, wait, lambda: None)
            if self.soak.stopping:
                break
            batch = SlowlorisBatch(args.slowloris)
            self.batches.append(batch)
            self.began_at.append(time.monotonic() - began)
            self.soak.slowloris_active += 1
            try:
                await batch.run(self.port, limit)
            finally:
                self.soak.slowloris_active -= 1
            start += args.slowloris_every

    def summary(self) -> dict[str, Any]:
        latencies = [x for b in self.batches for x in b.latencies]
        replies: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for b in self.batches:
            replies.update(b.replies)
            failures.update(b.connect_failures)
        return {
            "batches": len(self.batches),
            "connections": sum(len(b.connected) for b in self.batches),
            "not_closed": sum(b.not_closed for b in self.batches),
            "latencies": latencies,
            "replies": replies,
            "connect_failures": failures,
        }


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
    upstreams = Upstreams(
        args.chunk_delay,
        args.upstream_backlog,
        large_reply(args.ws_reply_mib, args.ws_reply_seconds),
    )
    soak = Soak(args, upstreams)
    stalled = StalledWebSockets(args, soak, upstreams)
    slowloris = Slowloris(args, soak)
    begin_logging(soak)
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, duration * 0.2)
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="pylon-soak-"))
    gateway = Gateway()
    control = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = args.concurrency
    # The gateway closes a kept-alive connection idle for header_timeout_s;
    # a pool that kept it longer would race that close with a new POST
    # (which is not retried).  Drop idle connections first, as a client
    # must.
    pool.cachedConnectionTimeout = min(10.0, args.header_timeout / 2)
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

    async def metrics() -> tuple[float | None, Counter[tuple[str, str]], Counter[str]]:
        response = await control.get(soak.base + "/metrics").addTimeout(10, reactor)
        return parse_metrics(await response.text())

    try:
        await upstreams.start()
        config = work / "pylon.toml"
        config.write_text(gateway_config(upstreams.fakes, args.header_timeout))
        port = free_port()
        soak.base = f"http://127.0.0.1:{port}"
        stalled.port = slowloris.port = port
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
        peak = {
            "fds": stats["start"]["fds"],
            "in_flight": 0.0,
            "rss": stats["start"]["rss"],
        }
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
                stalled.sample_queues()
                peak["fds"] = max(peak["fds"], s["fds"])
                peak["rss"] = max(peak["rss"], s["rss"])
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
                if soak.slowloris_active:
                    soak.slowloris_probes.append(took)
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
        hardening = gatherResults(
            [
                ensureDeferred(stalled.run(load_until)),
                ensureDeferred(slowloris.run(began, load_until)),
            ]
        )
        workers = [
            ensureDeferred(soak.worker(client, load_until))
            for _ in range(args.concurrency)
        ]
        await gatherResults(workers)
        # The stalled sockets end by the end of the load; then each one's
        # upstream requests get release_timeout to end.
        await hardening
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
            in_flight, totals, ws_totals = await metrics()
            s = proc_stats(gateway.pid)
            settle.update(
                in_flight=in_flight,
                totals=totals,
                ws_totals=ws_totals,
                fds=s["fds"],
                upstream_connections=upstreams.connections(),
                upstream_open=len(upstreams.open),
            )
            return (
                in_flight == 0
                and totals == soak.server_expect
                and sum(ws_totals.values()) == stalled.completions
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
        if soak.resent > max(10, soak.sent // 100):
            failures.append(
                f"{soak.resent} requests had to be sent again (more than 1%): "
                "the gateway closes kept-alive connections as requests arrive"
            )
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
            ws_counted = sum(settle.get("ws_totals", Counter()).values())
            if ws_counted != stalled.completions:
                failures.append(
                    f"the gateway counted {ws_counted} {WS_ROUTE} requests, "
                    f"the stalled sockets sent {stalled.completions}"
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
        if stats["settled"]["rss"] > args.max_rss_ratio * stats["warm"]["rss"]:
            failures.append(
                f"RSS after the load {stats['settled']['rss']:.1f} MiB > "
                f"{args.max_rss_ratio:g} x warm {stats['warm']['rss']:.1f} MiB"
            )
        failures.extend(hardening_failures(stalled, slowloris, args))
        if code != 0:
            failures.append(f"the gateway's exit after SIGTERM: {code}")
        log_counts = scan_logs(work)
        for key in ("Traceback", "Unhandled", "Unexpected failure", "#critical]"):
            if log_counts[key]:
                failures.append(f"the gateway logged {key!r} {log_counts[key]} times")
        if soak.log_errors:
            failures.append(f"{len(soak.log_errors)} errors logged in the soak process")
        if log_counts["canary key"]:
            failures.append(
                f"the client key of the WebSocket canary handshake is in the gateway "
                f"log ({log_counts['canary key']} lines)"
            )
        if log_counts["prompt"]:
            failures.append(
                f"a prompt of the soak is in the gateway log ({log_counts['prompt']} "
                "lines)"
            )

        report(soak, upstreams, stats, peak, timings, settle, code, log_counts, args)
        report_hardening(soak, stalled, slowloris, upstreams, stats, peak, settle, args)
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
        stalled.close_all()
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


def hardening_failures(
    stalled: StalledWebSockets, slowloris: Slowloris, args: argparse.Namespace
) -> list[str]:
    """
    What the WebSocket clients that never read and the slowloris batches
    found wrong.
    """
    failures = []
    if args.ws_sockets > 0 and not stalled.opened:
        failures.append("no WebSocket client that never reads got connected")
    if stalled.handshake_failures:
        failures.append(
            f"{sum(stalled.handshake_failures.values())} WebSocket handshakes "
            f"failed: {dict(stalled.handshake_failures)}"
        )
    if stalled.unreleased:
        failures.append(
            f"{stalled.unreleased} upstream requests of WebSocket clients that "
            f"never read had not ended {args.release_timeout:g} s after their "
            f"socket closed (e.g. {', '.join(stalled.unreleased_examples)})"
        )
    sl = slowloris.summary()
    if args.slowloris > 0 and not sl["batches"]:
        failures.append("no slowloris batch ran (the load was too short)")
    if sl["not_closed"]:
        failures.append(
            f"{sl['not_closed']} of {sl['connections']} slowloris connections "
            f"were still open {args.header_timeout + args.slowloris_grace:g} s "
            f"after connecting (header_timeout_s = {args.header_timeout:g})"
        )
    if sl["connect_failures"]:
        failures.append(
            f"{sum(sl['connect_failures'].values())} slowloris connections "
            f"failed to connect: {dict(sl['connect_failures'])}"
        )
    return failures


def report_hardening(
    soak: Soak,
    stalled: StalledWebSockets,
    slowloris: Slowloris,
    upstreams: Upstreams,
    stats: dict[str, dict[str, float]],
    peak: dict[str, float],
    settle: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    mib = 1 << 20
    print()
    by_gw = stalled.closed_by_gateway
    print(
        f"WebSocket clients that never read ({args.ws_sockets} at a time, "
        f"{args.ws_completions} completions of {args.ws_reply_mib:g} MiB each): "
        f"{stalled.opened} sockets, {stalled.completions} completions; closed by "
        f"the client {stalled.closed_by_client}, by the gateway {len(by_gw)}"
        + (f" (after {_pct(by_gw, 0.5):.0f} s median)" if by_gw else "")
        + (
            f"; handshakes failed {dict(stalled.handshake_failures)}"
            if stalled.handshake_failures
            else ""
        )
    )
    ws_totals = settle.get("ws_totals") or Counter()
    print(f"  canary handshake with a client key: {stalled.canary_status or '-'}")
    print(
        f"  upstream requests: {upstreams.total[LARGE]}; ended after their "
        f"socket went {stalled.released} (p50 {_pct(stalled.release_after, 0.5):.1f} "
        f"s, max {max(stalled.release_after, default=0):.1f} s), not ended "
        f"{stalled.unreleased}, never sent upstream {stalled.never_upstream}; "
        f"cancelled by the gateway {upstreams.disconnected[LARGE]}, ran to the "
        f"end {upstreams.finished[LARGE]}"
    )
    print(
        f"  gateway counted {sum(ws_totals.values())} {WS_ROUTE} requests "
        f"({', '.join(f'{k} {v}' for k, v in sorted(ws_totals.items())) or 'none'});"
        f" peak bytes from their upstreams left unread by the gateway "
        f"{stalled.peak_unread / mib:.1f} MiB (it grows while they are paused), "
        "peak "
        f"unsent to the stalled clients in its kernel "
        f"{stalled.peak_unsent / mib:.1f} MiB"
    )
    sl = slowloris.summary()
    lat = sl["latencies"]
    closed = (
        f"closed by the gateway {len(lat)}, after p50 {_pct(lat, 0.5):.1f} s, "
        f"max {max(lat):.1f} s"
        if lat
        else "none closed by the gateway"
    )
    print(
        f"slowloris: {sl['batches']} batches of {args.slowloris} at "
        f"{', '.join(f'{t:.0f}' for t in slowloris.began_at) or '-'} s, "
        f"{sl['connections']} connected; {closed} (header_timeout_s "
        f"{args.header_timeout:g}); still open at "
        f"{args.header_timeout + args.slowloris_grace:g} s: {sl['not_closed']}"
    )
    print(
        "  the gateway's answers: "
        + (", ".join(f"{k!r} {v}" for k, v in sl["replies"].most_common(4)) or "-")
        + (
            f"; connect failures {dict(sl['connect_failures'])}"
            if sl["connect_failures"]
            else ""
        )
    )
    print(
        f"  normal load during the batches: {soak.slowloris_done} requests ended, "
        f"{soak.slowloris_unexpected} unexpected; /healthz p50 "
        f"{_pct(soak.slowloris_probes, 0.5) * 1000:.0f} ms, max "
        f"{max(soak.slowloris_probes, default=0) * 1000:.0f} ms"
    )
    warm, end = stats["warm"]["rss"], stats["settled"]["rss"]
    print(
        f"RSS: warm {warm:.1f} MiB, end {end:.1f} MiB ({end / warm:.2f} x warm, "
        f"limit {args.max_rss_ratio:g}), peak sampled {peak['rss']:.1f} MiB; "
        f"open fds: before the load {stats['start']['fds']:.0f}, end "
        f"{stats['settled']['fds']:.0f} (slack {args.fd_slack}); "
        f"pylon_streams_in_flight at the end {settle.get('in_flight')}"
    )


def scan_logs(work: Path) -> Counter[str]:
    """
    Count the gateway log's lines, the alarming ones (outside debug
    events), and those holding the canary key or a prompt of the soak.
    """
    counts: Counter[str] = Counter()
    level = "info"
    for path in sorted(work.glob("gateway.log*")):
        with open(path, errors="replace") as f:
            for line in f:
                counts["lines"] += 1
                m = LOG_EVENT.match(line)
                if m:
                    level = m.group(1)  # continuation lines keep the level
                    if level == "debug":
                        counts["debug events"] += 1
                if "pylon_ai.requests#info]" in line:
                    counts["request lines"] += 1
                if CANARY in line:
                    counts["canary key"] += 1
                if "soak #" in line or "wsoak " in line:
                    counts["prompt"] += 1
                if level == "debug":
                    # A library's chatter ("Traceback (failure with no
                    # frames): ConnectionLost" on a client that left).
                    continue
                for key in ("Traceback", "Unhandled", "Unexpected failure"):
                    if key in line:
                        counts[key] += 1
                for level in ("#warn]", "#error]", "#critical]"):
                    if level in line:
                        counts[level] += 1
    return counts


#: The start of a log event's first line: C{<time> [<namespace>#<level>]}.
LOG_EVENT = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \[[^\]]*#(\w+)\]")


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
        f"peak in flight {peak['in_flight']:.0f}; sent again after a kept-alive "
        f"connection closed under them {soak.resent}"
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
        f"{log_counts['Traceback']} tracebacks, {log_counts['debug events']} debug "
        f"events; the canary key in {log_counts['canary key']} lines, prompts in "
        f"{log_counts['prompt']}"
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
    parser.add_argument(
        "--max-rss-ratio",
        type=float,
        default=1.10,
        help="RSS after the load, once the pools idled out, at most this x warm",
    )
    parser.add_argument(
        "--ws-sockets",
        type=int,
        default=4,
        help="WebSocket clients that never read, open at a time (0: none)",
    )
    parser.add_argument(
        "--ws-completions", type=int, default=6, help="completions per such socket"
    )
    parser.add_argument(
        "--ws-reply-mib", type=float, default=4.0, help="size of their reply"
    )
    parser.add_argument(
        "--ws-reply-seconds",
        type=float,
        default=60.0,
        help="the upstream streams that reply over this long (more than a "
        "socket lives, so every one must be cancelled)",
    )
    parser.add_argument(
        "--ws-lifetime",
        type=float,
        nargs=2,
        default=(5.0, 45.0),
        metavar=("MIN", "MAX"),
        help="seconds such a socket stays open before its client closes it",
    )
    parser.add_argument(
        "--release-timeout",
        type=float,
        default=10.0,
        help="seconds for a closed socket's upstream requests to end",
    )
    parser.add_argument(
        "--slowloris",
        type=int,
        default=200,
        help="connections per slowloris batch (0: none)",
    )
    parser.add_argument(
        "--slowloris-every", type=float, default=60.0, help="seconds between batches"
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=2.0,
        help="the gateway's header_timeout_s in the generated config",
    )
    parser.add_argument(
        "--slowloris-grace",
        type=float,
        default=10.0,
        help="seconds past the header deadline before an open slowloris "
        "connection counts as never closed",
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
