#!/usr/bin/env python3
"""
The pylon_ai benchmark matrix: one command installs what it needs, runs every
scenario against "direct" (the scripted upstream itself), pylon_ai, LiteLLM
and Portkey, and writes results.json, results.md and results.png.

    python3 bench/run.py            # everything (about 12 minutes once installed)
    python3 bench/run.py --quick    # a fast smoke run, into bench/.work/quick/

See bench/README.md for what is measured and how.  Standard library only: the
chart is drawn by bench/chart.py in a venv of its own.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / ".work"
LOGS = WORK / "logs"
TMP = WORK / "tmp"

GATEWAY_CPU = "0"
LOAD_CPU = "1"
# relay: Twisted's TCP port forwarder on the gateway's core, the TTFT cases of
# b c=1 only: what any process in the path adds (run with pylon_ai).
# pylon_ai_redis: pylon_ai with [server] state on a local Redis (scenario b
# only; asked for by name).  portkey_shim: Portkey with today's npm resolution
# and the shim (--portkey-variant latest-shim).
TARGETS = (
    "direct",
    "relay",
    "pylon_ai",
    "pylon_ai_redis",
    "litellm",
    "portkey",
    "portkey_shim",
)
DEFAULT_GATEWAYS = ("direct", "pylon_ai", "litellm", "portkey")
# Pinned so that runs compare; bump deliberately (the stamps reinstall).
LITELLM_SPEC = "litellm[proxy]==1.108.7"
# What LiteLLM's proxy runs on: recorded with the results (pip resolves them
# within the wheel's ranges; see README).
LITELLM_DEPS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "pydantic",
    "httpx",
    "aiohttp",
    "openai",
    "orjson",
)
PORTKEY_VERSION = "1.15.2"
# Portkey's runtime packages that decide how it streams.
PORTKEY_DEPS = ("hono", "@hono/node-server")
PORTKEY_VARIANTS = {"lockfile": "portkey", "latest-shim": "portkey_shim"}
LABELS = {
    "direct": "direct",
    "relay": "byte relay (floor)",
    "pylon_ai": "pylon_ai",
    "pylon_ai_redis": "pylon_ai (Redis state)",
    "litellm": "LiteLLM",
    "portkey": "Portkey",
    "portkey_shim": "Portkey (latest deps + shim)",
}
SCENARIOS = ("a", "b", "c", "d", "e", "r")
# issue 11's added TTFT p50 limits at c=1, ms, per case of scenario b.
TTFT_LIMITS = (("burst", 1.0), ("spaced", 0.3))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_procs: list[subprocess.Popen[bytes]] = []
SETTLE_LIMIT = [20.0]
_deadline = [0.0]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- processes ---------------------------------------------------------------


def spawn(
    argv: list[str],
    name: str,
    cpu: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """
    Start a long-running process pinned to C{cpu}, in its own process group,
    its output in bench/.work/logs/NAME.log.
    """
    LOGS.mkdir(parents=True, exist_ok=True)
    out = open(LOGS / f"{name}.log", "wb")
    full_env = dict(os.environ)
    full_env.pop("DATABASE_URL", None)  # LiteLLM: no database
    full_env.update(env or {})
    proc = subprocess.Popen(
        ["taskset", "-c", cpu, *argv],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=str(cwd or WORK),
        start_new_session=True,
    )
    out.close()
    _procs.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """
    End C{proc}'s process group: SIGTERM, then SIGKILL after C{grace}.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        pass
    if proc in _procs:
        _procs.remove(proc)


def stop_all() -> None:
    for proc in list(_procs):
        stop(proc, 2.0)


def _on_signal(signum: int, frame: Any) -> None:
    stop_all()
    sys.exit(128 + signum)


def busy_seconds() -> float:
    """
    CPU seconds all processes of the machine were busy since boot.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def own_seconds() -> float:
    """
    CPU seconds of this run: itself and its (waited-for) children.
    """
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], limit: float, name: str
) -> float:
    """
    Poll C{url} until it answers 200, at most C{limit} seconds.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {proc.returncode}: {log_tail(name)} "
                f"(see {LOGS}/{name}.log)"
            )
        try:
            status, _ = http_get(url, 1.0)
            if status == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {limit:.0f}s; see {LOGS}/")


def log_tail(name: str) -> str:
    """
    The last non-empty line of C{name}'s log, which says why it stopped.
    """
    try:
        lines = (LOGS / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "?"
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1][:200] if lines else "no output"


def run(argv: list[str], timeout: float, cpu: str | None = None) -> str:
    """
    Run a bounded command (pinned when C{cpu} is given); its stdout.
    """
    if time.monotonic() > _deadline[0]:
        raise RuntimeError("the run's overall time limit was reached")
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    res = subprocess.run(
        argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"{argv[0:4]} exited {res.returncode}: {res.stderr.decode()[-500:]}"
        )
    return res.stdout.decode()


# -- /proc ---------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """
    C{pid} and all its descendants.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


class RssSampler(threading.Thread):
    """
    Samples the RSS of a process tree every 50 ms; keeps the peak.
    """

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = rss_bytes(pids)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pids))

    def finish(self) -> int:
        self._halt.set()
        self.join(2)
        return self.peak


# -- installs ------------------------------------------------------------------


def sh(argv: list[str], timeout: float = 900, **kw: Any) -> None:
    log("  $ " + " ".join(argv))
    subprocess.run(argv, check=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def venv(path: Path, packages: list[str], stamp_value: str) -> Path:
    """
    A venv at C{path} with C{packages}; skipped when its stamp matches.
    """
    stamp = path / ".bench-stamp"
    if stamp.exists() and stamp.read_text() == stamp_value:
        return path / "bin" / "python"
    if not (path / "bin" / "python").exists():
        sh([sys.executable, "-m", "venv", str(path)])
    options = []
    if any(Path(p).is_dir() for p in packages):
        # A source tree keeps its version from commit to commit: pip would
        # take an installed copy, or a wheel it cached, of the same version,
        # with the old code and the old dependencies.
        sh([str(path / "bin" / "pip"), "uninstall", "-q", "-y", "pylon_ai"])
        options.append("--no-cache-dir")
    sh([str(path / "bin" / "pip"), "install", "-q", "--upgrade", *options, *packages])
    stamp.write_text(stamp_value)
    return path / "bin" / "python"


def git_commit() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def install(args: argparse.Namespace, need: set[str]) -> dict[str, Any]:
    """
    Everything the matrix needs, each step skipped when already there.
    """
    WORK.mkdir(exist_ok=True)
    info: dict[str, Any] = {}
    if not shutil.which("wrk"):
        log("installing wrk (Debian)")
        sh(["apt-get", "update", "-qq"])
        sh(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if not shutil.which("node"):
        raise SystemExit("node is needed (the upstream and the TTFT client)")
    info["wrk"] = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        .stdout.split("[")[0]
        .strip()
        or "wrk"
    )
    info["node"] = subprocess.run(
        ["node", "--version"], capture_output=True, text=True
    ).stdout.strip()

    # The chart's venv.
    info["tools_python"] = str(venv(WORK / "venv-tools", ["matplotlib"], "matplotlib"))

    if need & {"pylon_ai", "pylon_ai_redis"}:
        install_pylon(args, info)
    if "relay" in need:
        # The relay needs only Twisted: asked for without pylon_ai, it takes
        # pylon_ai's venv as it is (whichever commit), built when missing.
        twistd = WORK / "venv-pylon" / "bin" / "twistd"
        if not twistd.exists():
            install_pylon(args, info)
        info["twisted"] = subprocess.run(
            [
                str(twistd.with_name("python")),
                "-c",
                "import twisted; print(twisted.__version__)",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
    if "litellm" in need:
        py = venv(WORK / "venv-litellm", [LITELLM_SPEC], LITELLM_SPEC)
        found = json.loads(
            subprocess.run(
                [
                    str(py),
                    "-c",
                    "import importlib.metadata as m, json, sys\n"
                    "out = {}\n"
                    "for n in sys.argv[1:]:\n"
                    "    try: out[n] = m.version(n)\n"
                    "    except m.PackageNotFoundError: out[n] = None\n"
                    "print(json.dumps(out))",
                    "litellm",
                    *LITELLM_DEPS,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        info["litellm"] = found.pop("litellm")
        info["litellm_deps"] = found
    if "portkey" in need:
        pk = WORK / "portkey-lockfile"
        src = BENCH / "portkey"
        lock = (src / "package-lock.json").read_bytes()
        key = hashlib.sha256(lock + (src / "package.json").read_bytes()).hexdigest()
        stamp = pk / ".bench-stamp"
        if not (stamp.exists() and stamp.read_text() == key):
            log(f"Portkey {PORTKEY_VERSION} with its release lockfile's versions")
            shutil.rmtree(pk, ignore_errors=True)
            pk.mkdir(parents=True)
            shutil.copy(src / "package.json", pk / "package.json")
            shutil.copy(src / "package-lock.json", pk / "package-lock.json")
            sh(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=str(pk))
            stamp.write_text(key)
        info["portkey"] = node_versions(pk)
    if "portkey_shim" in need:
        pk = WORK / "portkey"
        pkg_json = pk / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
        have = (
            json.loads(pkg_json.read_text())["version"] if pkg_json.exists() else None
        )
        if have != PORTKEY_VERSION:
            pk.mkdir(exist_ok=True)
            (pk / "package.json").write_text(
                json.dumps(
                    {
                        "name": "bench-portkey",
                        "private": True,
                        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
                    },
                    indent=1,
                )
                + "\n"
            )
            sh(["npm", "install", "--no-audit", "--no-fund"], cwd=str(pk))
        info["portkey_shim"] = node_versions(pk)
    if "pylon_ai_redis" in need:
        if not shutil.which("redis-server"):
            log("installing redis-server (Debian)")
            sh(["apt-get", "update", "-qq"])
            sh(
                ["apt-get", "install", "-y", "-qq", "redis-server"],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        info["redis"] = (
            subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True
            ).stdout.split(" sha=")[0]
            or "redis-server"
        )
    return info


def install_pylon(args: argparse.Namespace, info: dict[str, Any]) -> None:
    """
    pylon_ai as README installs it, from git HEAD or the work tree, into
    bench/.work/venv-pylon; skipped when its stamp matches.
    """
    if args.pylon_src == "head":
        commit = git_commit()
        src = WORK / "src-pylon"
        key = f"head {commit}"
        if (WORK / "venv-pylon" / ".bench-stamp").exists() and (
            WORK / "venv-pylon" / ".bench-stamp"
        ).read_text() == key:
            pass
        else:
            log(f"pylon_ai from git HEAD {commit[:10]}")
            shutil.rmtree(src, ignore_errors=True)
            src.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", "HEAD"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        pkg = [str(src)]
    else:
        commit = git_commit() + "+worktree"
        key = f"worktree {time.time()}"  # always reinstall the work tree
        pkg = [str(REPO)]
    # As README installs it (pip install ., no extras), so that an
    # optional speed-up users do not get is not measured; py-spy is a
    # separate binary for the profile.
    py = venv(WORK / "venv-pylon", [*pkg, "py-spy"], f"{key} as README")
    info["pylon_ai_commit"] = commit
    info["pylon_ai"] = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.metadata as m; print(m.version('pylon_ai'))",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()


def node_versions(prefix: Path) -> dict[str, str | None]:
    """
    The versions installed under C{prefix}/node_modules of Portkey's gateway
    and of the packages that decide how it streams.
    """
    out: dict[str, str | None] = {}
    for name in ("@portkey-ai/gateway", *PORTKEY_DEPS):
        pkg = prefix / "node_modules" / name / "package.json"
        out[name] = json.loads(pkg.read_text())["version"] if pkg.exists() else None
    return out


# -- the requests ----------------------------------------------------------------

PROMPT = [{"role": "user", "content": "Say hello."}]


class Target:
    """
    How to reach one system under test.
    """

    def __init__(self, name: str, port: int, up: int) -> None:
        self.name = name
        self.port = port
        self.up = up
        self.proc: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0
        self.pids: list[int] = []
        self.version = ""

    def request(self, kind: str, script: str) -> tuple[str, dict[str, str], bytes, str]:
        """
        (url, headers, body, expect) for a request of C{kind} whose upstream
        reply is C{script} ("c200-d0": 200 chunks, no delay).

        kinds: chat_json, chat_stream (OpenAI client and upstream),
        msg_stream (Anthropic client and upstream), cross_chat (OpenAI client,
        Anthropic upstream), cross_msg (Anthropic client, OpenAI upstream),
        resp_stream (OpenAI Responses client, Chat Completions upstream).
        """
        if kind == "resp_stream":
            return self._responses(script)
        chat = kind in ("chat_json", "chat_stream", "cross_chat")
        upstream_anthropic = kind in ("msg_stream", "cross_chat")
        path = "/v1/chat/completions" if chat else "/v1/messages"
        headers: dict[str, str] = {}
        model = script
        if self.name.startswith("pylon_ai") or self.name == "litellm":
            model = ("anth-" if upstream_anthropic else "") + script
        if not chat:
            headers["anthropic-version"] = "2023-06-01"
            headers["x-api-key"] = "x"
        if self.name.startswith("portkey"):
            if upstream_anthropic:
                headers["x-portkey-provider"] = "anthropic"
                headers["x-api-key"] = "x"
                headers["anthropic-version"] = "2023-06-01"
            else:
                headers["x-portkey-provider"] = "openai"
                headers["authorization"] = "Bearer x"
            headers["x-portkey-custom-host"] = f"http://127.0.0.1:{self.up}/v1"
        if self.name == "litellm":
            headers["authorization"] = "Bearer sk-bench"
        port = self.up if self.name == "direct" else self.port
        body: dict[str, Any] = {"model": model, "max_tokens": 1024, "messages": PROMPT}
        body["stream"] = kind != "chat_json"
        expect = "json"
        if body["stream"]:
            expect = "openai" if chat else "anthropic"
        return (
            f"http://127.0.0.1:{port}{path}",
            headers,
            json.dumps(body).encode(),
            expect,
        )

    def _responses(self, script: str) -> tuple[str, dict[str, str], bytes, str]:
        """
        A streamed C{POST /v1/responses} whose model's upstream speaks Chat
        Completions (the scripted upstream), so the gateway translates.
        """
        headers: dict[str, str] = {}
        model = script
        if self.name == "litellm":
            # custom_openai/ has no Responses config of its own: LiteLLM
            # bridges through /v1/chat/completions, as pylon_ai does.
            model = "resp-" + script
            headers["authorization"] = "Bearer sk-bench"
        body = {
            "model": model,
            "input": "Say hello.",
            "max_output_tokens": 1024,
            "stream": True,
        }
        return (
            f"http://127.0.0.1:{self.port}/v1/responses",
            headers,
            json.dumps(body).encode(),
            "responses",
        )


def write_lua(headers: dict[str, str], body: bytes, name: str) -> Path:
    TMP.mkdir(parents=True, exist_ok=True)
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [==[{body.decode()}]==]",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    path = TMP / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return round(float(m.group(1)) * _UNITS[m.group(2)], 3)


def wrk(
    target: Target, kind: str, script: str, conns: int, duration: float, tag: str
) -> dict[str, Any]:
    """
    A wrk run: requests/s and latency percentiles (total time per request).
    """
    url, headers, body, _ = target.request(kind, script)
    lua = write_lua(headers, body, f"{target.name}-{tag}")
    out = run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{math.ceil(duration)}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
        ],
        timeout=math.ceil(duration) + 30,
        cpu=LOAD_CPU,
    )
    res: dict[str, Any] = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if m:
        errors += sum(int(x) for x in m.groups())
    res["errors"] = errors
    if errors and errors >= res.get("requests", 0):
        res["error"] = "every request failed"
        res["rps"] = 0.0
    return res


def throughput(
    target: Target, kind: str, script: str, conns: int, duration: float, tag: str
) -> dict[str, Any]:
    """
    wrk's numbers; for a gateway so slow that fewer than C{conns} requests
    finished inside the window (each took longer than the run), the closed
    loop of bench/loadclient.js instead: C{conns} workers until the window
    ends, in-flight requests awaited, rate = completed / elapsed.
    """
    res, cpu = measured(target, lambda: wrk(target, kind, script, conns, duration, tag))
    if res.get("requests", 0) >= conns:
        res["method"] = "wrk"
        res["cpu_s"] = round(cpu, 3)
        return res
    settle(target, SETTLE_LIMIT[0])
    c, cpu = measured(
        target,
        lambda: client(target, kind, script, conns, 100000, duration, timeout=120),
    )
    return {
        "method": "loadclient (wrk window too short)",
        "rps": c["rate"],
        "requests": c["ok"],
        "p50_ms": c["total_ms"]["p50"],
        "p99_ms": c["total_ms"]["p99"],
        "errors": c["failed"],
        "wrk_requests": res.get("requests", 0),
        "cpu_s": round(cpu, 3),
    }


def client(
    target: Target,
    kind: str,
    script: str,
    conns: int,
    requests: int,
    duration: float,
    timeout: float = 30,
    warmup: int = 0,
) -> dict[str, Any]:
    """
    A bench/loadclient.js run: TTFT and total percentiles, completeness.
    """
    url, headers, body, expect = target.request(kind, script)
    spec = {
        "url": url,
        "headers": headers,
        "body": body.decode(),
        "concurrency": conns,
        "requests": requests,
        "duration_s": duration,
        "timeout_s": timeout,
        "expect": expect,
        "warmup": warmup,
    }
    out = run(
        ["node", str(BENCH / "loadclient.js"), json.dumps(spec)],
        timeout=duration + timeout + 30,
        cpu=LOAD_CPU,
    )
    return json.loads(out.strip().splitlines()[-1])


# -- the systems under test ------------------------------------------------------

# c10-d20: the "spaced" TTFT case (chunks 20 ms apart, each its own write).
SCRIPTS_OPENAI = ("c20-d0", "c200-d0", "c200-d0-f5", "c50-d100", "c10-d100", "c10-d20")


def pylon_config(up: int, path: Path, state: str | None = None) -> None:
    server = "[server]\nshutdown_grace_s = 1\n"
    if state:
        # Per-key limits far above the load, so that every admission is the
        # round trip to Redis (with none, admission never asks it).
        server += (
            f'state = "{state}"\n'
            "requests_per_minute_per_key = 1000000000\n"
            "max_concurrent_per_key = 1000000\n"
        )
    parts = [server]
    for s in SCRIPTS_OPENAI:
        parts.append(
            f'[[models]]\nname = "{s}"\nprovider = "custom"\nmodel = "{s}"\n'
            f'base_url = "http://127.0.0.1:{up}"\napi_key = ""\n'
        )
        parts.append(
            f'[[models]]\nname = "anth-{s}"\nprovider = "anthropic"\nmodel = "{s}"\n'
            f'base_url = "http://127.0.0.1:{up}"\napi_key = "x"\n'
        )
    path.write_text("\n".join(parts))


def litellm_config(up: int, path: Path) -> None:
    lines = ["model_list:"]
    for s in SCRIPTS_OPENAI:
        lines += [
            f"  - model_name: {s}",
            "    litellm_params:",
            f"      model: openai/{s}",
            f"      api_base: http://127.0.0.1:{up}/v1",
            "      api_key: x",
            f"  - model_name: anth-{s}",
            "    litellm_params:",
            f"      model: anthropic/{s}",
            f"      api_base: http://127.0.0.1:{up}",
            "      api_key: x",
            f"  - model_name: resp-{s}",
            "    litellm_params:",
            f"      model: custom_openai/{s}",
            f"      api_base: http://127.0.0.1:{up}/v1",
            "      api_key: x",
        ]
    lines += [
        "litellm_settings:",
        "  telemetry: false",
        "  drop_params: true",
        "general_settings:",
        "  master_key: sk-bench",
        "  disable_spend_logs: true",
    ]
    path.write_text("\n".join(lines) + "\n")


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    """
    A throw-away redis-server on a free loopback port, no persistence, its
    files in bench/.work/redis; pinned with the load (see README).
    """
    port = free_port()
    data = WORK / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],
        "redis",
        LOAD_CPU,
    )
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError("redis-server not ready after 10s")


def redis_commands(port: int) -> int | None:
    """
    How many commands the bench's redis-server has processed: proof that
    the gateway's state went through it.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), 2) as s:
            s.sendall(b"INFO stats\r\n")
            data = b""
            while b"total_commands_processed:" not in data or not data.endswith(
                b"\r\n"
            ):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    m = re.search(rb"total_commands_processed:(\d+)", data)
    return int(m.group(1)) if m else None


def start_target(
    target: Target, versions: dict[str, Any], args: argparse.Namespace
) -> None:
    name = target.name
    if name == "direct":
        target.version = "upstream.js"
        return
    port = target.port
    if name == "relay":
        # Copies bytes between the client's socket and the upstream's, parses
        # nothing: the cost of any process on another core in the path.
        proc = spawn(
            [
                str(WORK / "venv-pylon" / "bin" / "python"),
                str(BENCH / "relay.py"),
                str(port),
                str(target.up),
            ],
            name,
            GATEWAY_CPU,
        )
        ready = f"http://127.0.0.1:{port}/healthz"  # the upstream's, relayed
        limit = 30.0
        target.version = (
            f"Twisted {versions.get('twisted', '?')} portforward, TCP_NODELAY"
        )
    elif name.startswith("pylon_ai"):
        cfg = WORK / f"{name}.toml"
        state = None
        if name == "pylon_ai_redis":
            target.redis, rport = start_redis()
            target.redis_port = rport
            state = f"redis://127.0.0.1:{rport}/0"
        pylon_config(target.up, cfg, state)
        proc = spawn(
            [
                str(WORK / "venv-pylon" / "bin" / "twistd"),
                "-n",
                "--pidfile=",
                "pylon-ai",
                # A bare port, as the README's operator types it: loopback
                # only (no keys configured) and a listen queue of 1024.
                "--port",
                str(port),
                "--config",
                str(cfg),
                "--workers",
                str(args.workers),
            ],
            name,
            GATEWAY_CPU,
        )
        ready = f"http://127.0.0.1:{port}/healthz"
        limit = 60.0
        commit = versions.get("pylon_ai_commit", "")
        commit = commit[:10] + ("+worktree" if commit.endswith("+worktree") else "")
        target.version = f"{versions.get('pylon_ai', '?')} ({commit})"
        if args.workers != "1":
            target.version += f", --workers {args.workers}"
        if state:
            target.version += f", state on {versions.get('redis', 'Redis')}"
    elif name == "litellm":
        cfg = WORK / "litellm.yaml"
        litellm_config(target.up, cfg)
        proc = spawn(
            [
                str(WORK / "venv-litellm" / "bin" / "litellm"),
                "--config",
                str(cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            "litellm",
            GATEWAY_CPU,
            env={
                "LITELLM_TELEMETRY": "False",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "DISABLE_ADMIN_UI": "True",
                "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
                "LITELLM_LOG": "ERROR",
                "STORE_MODEL_IN_DB": "False",
                "NO_DOCS": "True",
                "NO_REDOC": "True",
            },
        )
        ready = f"http://127.0.0.1:{port}/health/liveliness"
        limit = 180.0
        deps = versions.get("litellm_deps") or {}
        target.version = (
            f"{versions.get('litellm', '?')} ("
            + ", ".join(f"{k} {v}" for k, v in deps.items())
            + ")"
        )
    elif name in ("portkey", "portkey_shim"):
        # The release's own versions need no shim; today's resolution does.
        home = WORK / ("portkey-lockfile" if name == "portkey" else "portkey")
        entry = home / "node_modules" / "@portkey-ai" / "gateway" / "build"
        shim = (
            []
            if name == "portkey"
            else ["--import", (BENCH / "portkey-shim.mjs").as_uri()]
        )
        proc = spawn(
            [
                "node",
                *shim,
                str(entry / "start-server.js"),
                f"--port={port}",
                "--headless",
            ],
            name,
            GATEWAY_CPU,
            env={"NODE_ENV": "production"},
            cwd=home,
        )
        ready = f"http://127.0.0.1:{port}/"
        limit = 60.0
        v = versions.get(name) or {}
        deps = ", ".join(f"{d} {v.get(d)}" for d in PORTKEY_DEPS)
        how = (
            "release lockfile, no shim"
            if name == "portkey"
            else "npm's resolution today + shim"
        )
        target.version = f"{v.get('@portkey-ai/gateway', '?')} ({deps}; {how})"
    else:
        raise ValueError(name)
    target.proc = proc
    took = wait_ready(ready, proc, limit, name)
    time.sleep(0.5)  # let workers that fork after readiness appear
    target.pids = tree(proc.pid)
    log(f"{name} ready in {took:.1f}s (pids {target.pids})")


def stop_target(target: Target) -> None:
    if target.proc is not None:
        stop(target.proc)
        target.proc = None
    if target.redis is not None:
        stop(target.redis)
        target.redis = None


# -- the scenarios ----------------------------------------------------------------


def settle(target: Target, limit: float) -> float:
    """
    Wait (at most C{limit} s) until the gateway is idle: below 10% CPU over
    0.3 s, so that a backlog of cut-off streams from the previous run (a
    gateway that goes on serving requests whose client left) does not load
    the next one.  Returns the seconds waited.
    """
    if target.name == "direct" or target.proc is None:
        return 0.0
    t0 = time.monotonic()
    pids = tree(target.proc.pid)
    while time.monotonic() - t0 < limit:
        c0 = cpu_seconds(pids)
        time.sleep(0.3)
        if cpu_seconds(pids) - c0 < 0.03:
            break
    return time.monotonic() - t0


def measured(target: Target, fn: Any) -> tuple[Any, float]:
    """
    Run C{fn}; its result and the gateway's CPU seconds meanwhile.
    """
    if target.name == "direct":
        return fn(), 0.0
    pids = tree(target.proc.pid) if target.proc else []
    before = cpu_seconds(pids)
    result = fn()
    return result, cpu_seconds(pids) - before


def attempt(results: dict[str, Any], key: str, target: Target, fn: Any) -> None:
    waited = settle(target, SETTLE_LIMIT[0])
    if waited > 1:
        log(f"  (waited {waited:.1f}s for {target.name} to finish earlier work)")
    t0 = time.monotonic()
    try:
        value = fn()
    except Exception as e:  # one failing scenario must not end the matrix
        value = {"error": f"{type(e).__name__}: {e}"[:300]}
    results.setdefault(key, {})[target.name] = value
    log(f"  {key:<14} {target.name:<9} {time.monotonic() - t0:5.1f}s  {_brief(value)}")


def _brief(v: Any) -> str:
    if not isinstance(v, dict):
        return str(v)
    keys = (
        "rps",
        "rate",
        "p50_ms",
        "p99_ms",
        "ok",
        "failed",
        "ttft_ms",
        "cpu_per_1k_chunks_s",
        "rss_per_stream_kib",
        "error",
    )
    return " ".join(f"{k}={v[k]}" for k in keys if k in v)[:200]


def run_target(
    target: Target, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    D = args.duration
    T = args.ttft_duration
    scen = set(args.scenarios)
    if target.name == "relay":
        relay_run(target, args, results)
        return
    if target.name == "pylon_ai_redis":
        scen &= {"b", "d"}  # the Redis variant of scenario b only
    slow_n, slow_script = args.slow_streams, args.slow_script
    slow_chunks = int(re.match(r"c(\d+)", slow_script).group(1))  # type: ignore[union-attr]
    fast_chunks = 200

    # The memory of a gateway that started and has served nothing yet.
    if target.proc is not None and target.name != "direct":
        pids = tree(target.proc.pid)
        results.setdefault("idle", {})[target.name] = {
            "rss_idle_mib": round(rss_bytes(pids) / 2**20, 1)
        }

    # Warm up every kind of request this target will see (JITs, pools).
    for kind, script in (
        ("chat_json", "c20-d0"),
        ("chat_stream", "c200-d0"),
        ("msg_stream", "c200-d0"),
        ("cross_chat", "c200-d0"),
    ):
        if target.name == "direct" and kind.startswith("cross"):
            continue
        if target.name == "pylon_ai_redis" and kind != "chat_stream":
            continue
        try:
            wrk(target, kind, script, 8, args.warmup, f"warm-{kind}")
        except Exception as e:
            log(f"  warm-up {kind} failed: {e}")

    if "a" in scen:
        for c in (1, 64):
            attempt(
                results,
                f"a_c{c}",
                target,
                lambda c=c: throughput(target, "chat_json", "c20-d0", c, D, f"a{c}"),
            )

    if "b" in scen or "d" in scen:
        for c in (1, 64):

            def b_run(c: int = c) -> dict[str, Any]:
                res = throughput(target, "chat_stream", "c200-d0", c, D, f"b{c}")
                cpu = res.pop("cpu_s", 0.0)
                if target.name != "direct" and res.get("requests"):
                    per_chunk(res, cpu, res["requests"] * fast_chunks)
                if c == 1:
                    res.update(ttft_c1(target, T))
                    return res
                # TTFT with the first chunk sent alone, 5 ms before the rest.
                ttft = client(target, "chat_stream", "c200-d0-f5", c, 20000, T)
                res["ttft_ms"] = ttft["ttft_ms"]
                res["total_ms_client"] = ttft["total_ms"]
                res["client_ok"] = ttft["ok"]
                res["client_failed"] = ttft["failed"]
                if ttft["failed"]:
                    res["client_errors"] = ttft["errors"]
                return res

            attempt(results, f"b_c{c}", target, b_run)

    if "c" in scen:

        def c_run() -> dict[str, Any]:
            pids = tree(target.proc.pid) if target.proc else []
            before = rss_bytes(pids)
            cpu0 = cpu_seconds(pids)
            sampler = RssSampler(pids)
            sampler.start()
            try:
                res = client(
                    target,
                    "chat_stream",
                    slow_script,
                    slow_n,
                    slow_n,
                    args.slow_timeout,
                    timeout=args.slow_timeout,
                )
            finally:
                peak = sampler.finish()
            cpu = cpu_seconds(pids) - cpu0
            time.sleep(0.5)
            res["streams"] = slow_n
            if pids:
                res["rss_before_mib"] = round(before / 2**20, 1)
                res["rss_peak_mib"] = round(peak / 2**20, 1)
                res["rss_after_mib"] = round(rss_bytes(pids) / 2**20, 1)
                res["rss_per_stream_kib"] = round((peak - before) / 1024 / slow_n, 1)
                if res["ok"]:
                    per_chunk(res, cpu, res["ok"] * slow_chunks)
                else:
                    res["cpu_s"] = round(cpu, 3)
            return res

        attempt(results, "c_slow", target, c_run)

    if "e" in scen:
        kinds = [("e_anthropic", "msg_stream")]
        if target.name != "direct":
            kinds += [("e_cross_oa", "cross_chat"), ("e_cross_ao", "cross_msg")]
        for key, kind in kinds:

            def e_run(kind: str = kind) -> dict[str, Any]:
                res = throughput(target, kind, "c200-d0", 64, D, f"{kind}64")
                cpu = res.pop("cpu_s", 0.0)
                if target.name != "direct" and res.get("requests"):
                    per_chunk(res, cpu, res["requests"] * fast_chunks)
                ttft = client(target, kind, "c200-d0-f5", 1, 20000, T)
                res["ttft_ms"] = ttft["ttft_ms"]
                res["client_ok"] = ttft["ok"]
                res["client_failed"] = ttft["failed"]
                if ttft["failed"]:
                    res["client_errors"] = ttft["errors"]
                if res.get("errors") and res.get("errors", 0) >= res.get("requests", 1):
                    res["error"] = "every request failed"
                elif ttft["failed"] and not ttft["ok"]:
                    res["error"] = f"every stream failed: {ttft['errors']}"
                return res

            attempt(results, key, target, e_run)

    if "r" in scen:
        reason = RESPONSES_NA.get(target.name)
        if reason:
            results.setdefault("r_responses", {})[target.name] = {"na": reason}
        else:
            attempt(results, "r_responses", target, lambda: r_run(target, D, T))


def relay_run(
    target: Target, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """
    The byte relay: only the TTFT cases of scenario b at c=1 (first chunk
    alone, burst, spaced), which give its added TTFT beside the gateways'.
    """
    try:
        wrk(target, "chat_stream", "c200-d0", 8, args.warmup, "warm-chat_stream")
    except Exception as e:
        log(f"  warm-up chat_stream failed: {e}")
    attempt(results, "b_c1", target, lambda: ttft_c1(target, args.ttft_duration))


def ttft_c1(target: Target, T: float) -> dict[str, Any]:
    """
    TTFT at c=1 of the three cases of scenario b: the first chunk alone
    (5 ms before the rest), all 200 chunks in one burst, and "spaced" (10
    chunks 20 ms apart, each its own write: 180 ms a stream, hence the
    longer window).  Gateways and the relay alike.
    """
    ttft = client(target, "chat_stream", "c200-d0-f5", 1, 20000, T)
    res: dict[str, Any] = {
        "ttft_ms": ttft["ttft_ms"],
        "total_ms_client": ttft["total_ms"],
        "client_ok": ttft["ok"],
        "client_failed": ttft["failed"],
    }
    if ttft["failed"]:
        res["client_errors"] = ttft["errors"]
    burst = client(target, "chat_stream", "c200-d0", 1, 20000, T)
    res["ttft_burst_ms"] = burst["ttft_ms"]
    spaced = client(target, "chat_stream", "c10-d20", 1, 20000, 3 * T)
    res["ttft_spaced_ms"] = spaced["ttft_ms"]
    res["spaced_ok"] = spaced["ok"]
    if spaced["failed"]:
        res["client_failed"] = res["client_failed"] + spaced["failed"]
        res["spaced_errors"] = spaced["errors"]
    return res


# Targets whose /v1/responses cannot be compared here, and why.
RESPONSES_NA = {
    "direct": "the scripted upstream speaks Chat Completions and Messages only",
    "portkey": "Portkey forwards /v1/responses to the provider's /v1/responses "
    "(no translation to Chat Completions), which the scripted upstream lacks",
    "portkey_shim": "as Portkey",
    "pylon_ai_redis": "scenario b only",
}


def r_run(target: Target, D: float, T: float) -> dict[str, Any]:
    """
    Scenario r: 200-chunk Responses streams at c=64 translated onto the Chat
    Completions upstream of scenario b, and TTFT at c=1 (first chunk alone).
    A gateway without the route gets one probe and an error, not a run.
    """
    url, headers, body, _ = target.request("resp_stream", "c200-d0")
    req = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", **headers}
    )
    assert url.startswith("http://127.0.0.1:")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if status != 200 or b"response.completed" not in text:
        snippet = text[:160].decode("utf-8", "replace")
        return {"error": f"probe: HTTP {status}: {snippet}"}
    res = throughput(target, "resp_stream", "c200-d0", 64, D, "r64")
    cpu = res.pop("cpu_s", 0.0)
    if res.get("requests"):
        # Per upstream chunk, as in b, so the two compare.
        per_chunk(res, cpu, res["requests"] * 200)
    ttft = client(target, "resp_stream", "c200-d0-f5", 1, 20000, T)
    res["ttft_ms"] = ttft["ttft_ms"]
    res["client_ok"] = ttft["ok"]
    res["client_failed"] = ttft["failed"]
    if ttft["failed"]:
        res["client_errors"] = ttft["errors"]
    return res


def per_chunk(res: dict[str, Any], cpu: float, chunks: int) -> None:
    """
    The gateway's CPU over a run, per 1,000 forwarded chunks (s) and per
    chunk (µs).
    """
    res["cpu_s"] = round(cpu, 3)
    if chunks:
        res["cpu_per_1k_chunks_s"] = round(cpu / (chunks / 1000), 5)
        res["cpu_us_per_chunk"] = round(cpu / chunks * 1e6, 2)


def profile_pylon(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """
    py-spy on pylon_ai during scenario b at c=64, then scenario a at c=64
    (separate runs, so the sampling does not disturb the measured numbers).
    """
    pyspy = WORK / "venv-pylon" / "bin" / "py-spy"
    assert target.proc is not None
    pid = target.proc.pid  # taskset execs twistd, which runs the service (-n)
    dur = max(3, int(args.duration))
    out: dict[str, Any] = {}
    for key, kind, script in (
        ("b_c64", "chat_stream", "c200-d0"),
        ("a_c64", "chat_json", "c20-d0"),
    ):
        raw = WORK / f"pylon-profile-{key}.txt"
        raw.unlink(missing_ok=True)
        prof = subprocess.Popen(
            [
                "taskset",
                "-c",
                LOAD_CPU,
                str(pyspy),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--duration",
                str(dur),
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _procs.append(prof)
        time.sleep(0.5)
        try:
            wrk(target, kind, script, 64, dur, f"profile-{key}")
            prof.wait(dur + 30)
        finally:
            stop(prof)
        out[key] = summarize_profile(raw)
    return out


def summarize_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """
    Self time per function, and inclusive time of pylon_ai's own functions
    and of the Twisted/treq frames that call out of the event loop.
    """
    selfs: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    if not raw.exists():
        return {"error": "py-spy wrote nothing"}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if "(threading.py" in stack:
            continue  # an idle helper thread (the reactor's thread pool)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f.replace(str(WORK) + "/", "") for f in frames]
        frames = [re.sub(r"\(.*?/site-packages/", "(", f) for f in frames]
        total += n
        selfs[frames[-1]] = selfs.get(frames[-1], 0) + n
        for f in set(frames):
            if "pylon_ai" in f or "treq/" in f or "twisted/web" in f:
                incl[f] = incl.get(f, 0) + n

    def rank(d: dict[str, int]) -> list[list[Any]]:
        return [
            [f, round(100 * n / total, 1)]
            for f, n in sorted(d.items(), key=lambda kv: -kv[1])[:top]
        ]

    return {"samples": total, "self_pct": rank(selfs), "inclusive_pct": rank(incl)}


# -- targets and reports ----------------------------------------------------------


def get(results: dict[str, Any], key: str, target: str, *path: str) -> float | None:
    v: Any = results.get(key, {}).get(target)
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v if isinstance(v, (int, float)) else None


def derive(results: dict[str, Any]) -> None:
    """
    Added TTFT at c=1: each gateway's TTFT minus direct's in the same run,
    p50 and p99, for the first chunk alone, the burst and the spaced chunks.
    """
    b1 = results.get("b_c1", {})
    direct = b1.get("direct")
    if not isinstance(direct, dict):
        return
    for name, v in b1.items():
        if name == "direct" or not isinstance(v, dict):
            continue
        added: dict[str, Any] = {}
        for case, field in (
            ("first_alone", "ttft_ms"),
            ("burst", "ttft_burst_ms"),
            ("spaced", "ttft_spaced_ms"),
        ):
            g, d = v.get(field) or {}, direct.get(field) or {}
            for pct in ("p50", "p99"):
                if g.get(pct) is not None and d.get(pct) is not None:
                    added.setdefault(case, {})[pct] = round(g[pct] - d[pct], 3)
        if added:
            v["added_ttft_ms"] = added


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, met: bool | None, detail: str) -> None:
        out.append({"target": name, "met": met, "detail": detail})

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    p, pk, ll = (
        get(results, "b_c64", t, "rps") for t in ("pylon_ai", "portkey", "litellm")
    )
    r = ratio(p, pk)
    add(
        "streaming throughput (b, c=64) >= Portkey",
        None if r is None else r >= 1,
        f"pylon_ai {p} streams/s vs Portkey {pk}: {r}x",
    )
    r = ratio(p, ll)
    add(
        "streaming throughput (b, c=64) >= 10x LiteLLM",
        None if r is None else r >= 10,
        f"pylon_ai {p} streams/s vs LiteLLM {ll}: {r}x",
    )
    p, pk = (get(results, "a_c64", t, "rps") for t in ("pylon_ai", "portkey"))
    r = ratio(p, pk)
    add(
        "non-streaming (a, c=64) >= Portkey",
        None if r is None else r >= 1,
        f"pylon_ai {p} req/s vs Portkey {pk}: {r}x",
    )
    p = get(results, "b_c1", "pylon_ai", "ttft_ms", "p50")
    d = get(results, "b_c1", "direct", "ttft_ms", "p50")
    added = round(p - d, 3) if p is not None and d is not None else None
    add(
        "added TTFT at c=1 < 1 ms over direct (p50)",
        None if added is None else added < 1.0,
        f"pylon_ai {p} ms vs direct {d} ms: +{added} ms",
    )
    c = results.get("c_slow", {})
    pc, dc = c.get("pylon_ai", {}), c.get("direct", {})
    if pc and "ok" in pc:
        add(
            "scenario c: all streams complete",
            pc["ok"] == pc.get("streams"),
            f"{pc['ok']}/{pc.get('streams')} "
            f"(direct {dc.get('ok')}/{dc.get('streams')})",
        )
        pt = (pc.get("ttft_ms") or {}).get("p99")
        dt = (dc.get("ttft_ms") or {}).get("p99")
        diff = round(pt - dt, 1) if pt is not None and dt is not None else None
        add(
            "scenario c: TTFT p99 within 100 ms of direct",
            None if diff is None else diff <= 100,
            f"pylon_ai {pt} ms vs direct {dt} ms: +{diff} ms",
        )
        rss = pc.get("rss_per_stream_kib")
        add(
            "scenario c: < 50 KiB RSS per open stream",
            None if rss is None else rss < 50,
            f"{rss} KiB per stream",
        )
    for key, label in (
        ("b_c64", "fast streams, b c=64"),
        ("c_slow", "slow streams, c"),
    ):
        p, pk = (
            get(results, key, t, "cpu_per_1k_chunks_s") for t in ("pylon_ai", "portkey")
        )
        r = ratio(p, pk)
        add(
            f"CPU per 1000 chunks <= Portkey's ({label})",
            None if r is None else r <= 1,
            f"pylon_ai {p} s vs Portkey {pk} s: {r}x",
        )
    for case, limit in TTFT_LIMITS:
        added = get(results, "b_c1", "pylon_ai", "added_ttft_ms", case, "p50")
        add(
            f"issue 11: added TTFT p50 at c=1 < {limit} ms ({case} chunks)",
            None if added is None else added < limit,
            f"pylon_ai +{added} ms over direct",
        )
        floor = relay_floor(results, case, limit)
        if floor:
            out[-1]["floor"] = floor
    for key, unit in (("b_c64", "streams/s"), ("a_c64", "req/s")):
        p, pk = (get(results, key, t, "rps") for t in ("pylon_ai", "portkey"))
        r = ratio(p, pk)
        add(
            f"issue 11: {key[0]} c=64 >= 2x Portkey (release lockfile)",
            None if r is None else r >= 2,
            f"pylon_ai {p} {unit} vs Portkey {pk}: {r}x",
        )
    p = get(results, "b_c64", "pylon_ai", "cpu_per_1k_chunks_s")
    add(
        "issue 11: pass-through CPU <= 0.005 s per 1000 chunks (b, c=64)",
        None if p is None else p <= 0.005,
        f"pylon_ai {p} s",
    )
    idle = get(results, "idle", "pylon_ai", "rss_idle_mib")
    add(
        "issue 11: idle RSS < 60 MiB (started, no request yet)",
        None if idle is None else idle < 60,
        f"pylon_ai {idle} MiB",
    )
    same = get(results, "b_c64", "pylon_ai", "cpu_per_1k_chunks_s")
    cross = get(results, "e_cross_oa", "pylon_ai", "cpu_per_1k_chunks_s")
    r = ratio(cross, same)
    add(
        "cross-format streaming cost within 1.5x of same-format pass-through",
        None if r is None else r <= 1.5,
        f"CPU/1000 chunks: OpenAI client on Anthropic upstream {cross} s vs "
        f"OpenAI pass-through {same} s: {r}x",
    )
    return out


def relay_floor(results: dict[str, Any], case: str, limit: float) -> str | None:
    """
    What the byte relay adds in C{case} (the floor any process in the path
    pays here) and what the target leaves a gateway beyond it, from this
    run's numbers; C{None} when the relay did not run.
    """
    p50, p99 = (
        get(results, "b_c1", "relay", "added_ttft_ms", case, pct)
        for pct in ("p50", "p99")
    )
    if p50 is None:
        return None
    text = (
        "floor: a byte relay (bench/relay.py: Twisted's portforward, no "
        f"parsing) on the gateway's core adds {p50:+.2f} ms p50"
        + ("" if p99 is None else f" ({p99:+.2f} ms p99)")
        + f" with {case} chunks; "
    )
    left = limit - p50
    if left > 0:
        text += f"the < {limit} ms target leaves a gateway {left:.2f} ms beyond it"
    else:
        text += f"the < {limit} ms target is below it: no proxy meets it here"
    gw = get(results, "b_c1", "pylon_ai", "added_ttft_ms", case, "p50")
    if gw is not None:
        text += f"; pylon_ai adds {gw - p50:+.2f} ms p50 over the relay"
    return text


ROWS: list[tuple[str, str, tuple[str, ...], str]] = [
    ("a_c1", "a. non-streaming c=1: req/s", ("rps",), "{:.0f}"),
    ("a_c1", "a. non-streaming c=1: p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.2f}"),
    ("a_c64", "a. non-streaming c=64: req/s", ("rps",), "{:.0f}"),
    ("a_c64", "a. non-streaming c=64: p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.1f}"),
    ("b_c1", "b. 200-chunk streams c=1: streams/s", ("rps",), "{:.0f}"),
    ("b_c1", "b. c=1: TTFT p50 / p99 ms", ("ttft_ms.p50", "ttft_ms.p99"), "{:.2f}"),
    (
        "b_c1",
        "b. c=1: TTFT p50 / p99 ms, 200 chunks in one burst",
        ("ttft_burst_ms.p50", "ttft_burst_ms.p99"),
        "{:.2f}",
    ),
    (
        "b_c1",
        "b. c=1: TTFT p50 / p99 ms, spaced chunks (20 ms apart)",
        ("ttft_spaced_ms.p50", "ttft_spaced_ms.p99"),
        "{:.2f}",
    ),
    (
        "b_c1",
        "b. c=1: added TTFT p50 / p99 ms, first chunk alone",
        ("added_ttft_ms.first_alone.p50", "added_ttft_ms.first_alone.p99"),
        "{:+.2f}",
    ),
    (
        "b_c1",
        "b. c=1: added TTFT p50 / p99 ms, burst",
        ("added_ttft_ms.burst.p50", "added_ttft_ms.burst.p99"),
        "{:+.2f}",
    ),
    (
        "b_c1",
        "b. c=1: added TTFT p50 / p99 ms, spaced",
        ("added_ttft_ms.spaced.p50", "added_ttft_ms.spaced.p99"),
        "{:+.2f}",
    ),
    ("b_c1", "b. c=1: total p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.2f}"),
    ("b_c64", "b. 200-chunk streams c=64: streams/s", ("rps",), "{:.0f}"),
    ("b_c64", "b. c=64: TTFT p50 / p99 ms", ("ttft_ms.p50", "ttft_ms.p99"), "{:.1f}"),
    ("b_c64", "b. c=64: total p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.1f}"),
    ("c_slow", "c. slow streams: completed", ("ok", "streams"), "{:.0f}"),
    ("c_slow", "c. TTFT p50 / p99 ms", ("ttft_ms.p50", "ttft_ms.p99"), "{:.1f}"),
    ("c_slow", "c. total p50 / p99 ms", ("total_ms.p50", "total_ms.p99"), "{:.0f}"),
    ("idle", "RSS idle MiB (started, no request yet)", ("rss_idle_mib",), "{:.1f}"),
    (
        "c_slow",
        "c. RSS before / peak MiB",
        ("rss_before_mib", "rss_peak_mib"),
        "{:.1f}",
    ),
    ("c_slow", "c. RSS per open stream KiB", ("rss_per_stream_kib",), "{:.1f}"),
    ("b_c64", "d. CPU s per 1000 chunks (b, c=64)", ("cpu_per_1k_chunks_s",), "{:.4f}"),
    (
        "b_c64",
        "d. CPU µs per forwarded chunk (b, c=64)",
        ("cpu_us_per_chunk",),
        "{:.1f}",
    ),
    (
        "c_slow",
        "d. CPU s per 1000 chunks (c, slow)",
        ("cpu_per_1k_chunks_s",),
        "{:.4f}",
    ),
    (
        "c_slow",
        "d. CPU µs per forwarded chunk (c, slow)",
        ("cpu_us_per_chunk",),
        "{:.1f}",
    ),
    ("e_anthropic", "e. /v1/messages streams c=64: streams/s", ("rps",), "{:.0f}"),
    (
        "e_anthropic",
        "e. /v1/messages c=1: TTFT p50 / p99 ms",
        ("ttft_ms.p50", "ttft_ms.p99"),
        "{:.2f}",
    ),
    (
        "e_anthropic",
        "e. /v1/messages CPU s / 1000 chunks",
        ("cpu_per_1k_chunks_s",),
        "{:.4f}",
    ),
    ("e_cross_oa", "e. cross OpenAI->Anthropic c=64: streams/s", ("rps",), "{:.0f}"),
    (
        "e_cross_oa",
        "e. cross OpenAI->Anthropic c=1: TTFT p50 / p99 ms",
        ("ttft_ms.p50", "ttft_ms.p99"),
        "{:.2f}",
    ),
    (
        "e_cross_oa",
        "e. cross OpenAI->Anthropic CPU s / 1000 chunks",
        ("cpu_per_1k_chunks_s",),
        "{:.4f}",
    ),
    ("e_cross_ao", "e. cross Anthropic->OpenAI c=64: streams/s", ("rps",), "{:.0f}"),
    (
        "e_cross_ao",
        "e. cross Anthropic->OpenAI CPU s / 1000 chunks",
        ("cpu_per_1k_chunks_s",),
        "{:.4f}",
    ),
    ("r_responses", "r. /v1/responses streams c=64: streams/s", ("rps",), "{:.0f}"),
    (
        "r_responses",
        "r. /v1/responses c=64: total p50 / p99 ms",
        ("p50_ms", "p99_ms"),
        "{:.1f}",
    ),
    (
        "r_responses",
        "r. /v1/responses c=1: TTFT p50 / p99 ms",
        ("ttft_ms.p50", "ttft_ms.p99"),
        "{:.2f}",
    ),
    (
        "r_responses",
        "r. /v1/responses CPU µs per upstream chunk",
        ("cpu_us_per_chunk",),
        "{:.1f}",
    ),
    (
        "upstream_connections",
        "upstream requests / connections opened",
        ("requests", "connections"),
        "{:.0f}",
    ),
    ("redis_commands", "Redis commands processed", ("commands",), "{:.0f}"),
]


def cell(v: Any, fields: tuple[str, ...], fmt: str) -> str:
    if v is None:
        return "—"
    if not isinstance(v, dict):
        return str(v)
    if "na" in v:
        return "n/a"
    vals = []
    for f in fields:
        x: Any = v
        for part in f.split("."):
            x = x.get(part) if isinstance(x, dict) else None
        vals.append(x)
    if all(x is None for x in vals):
        if "error" in v:
            return "failed"
        return "—"
    text = " / ".join("—" if x is None else fmt.format(x) for x in vals)
    if v.get("errors") or v.get("failed") or v.get("client_failed"):
        text += " (errors)"
    return text


def markdown(data: dict[str, Any]) -> str:
    res, meta = data["results"], data["meta"]
    cols = [t for t in TARGETS if any(t in res.get(k, {}) for k in res)]
    out = [
        "# pylon_ai benchmarks",
        "",
        f"{meta['date']} — {meta['cpu']}, {meta['cores']} cores; gateway pinned to "
        f"core {GATEWAY_CPU}, upstream + load generators to core {LOAD_CPU}. "
        f"Mode: {meta['mode']}, {meta['duration_s']} s per throughput run; other "
        f"processes on the machine used {meta['other_processes_cpu_pct']}% of its CPU "
        "during the run.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        "| scenario / metric | " + " | ".join(LABELS[c] for c in cols) + " |",
        "| --- | " + " | ".join("---:" for _ in cols) + " |",
    ]
    for key, label, fields, fmt in ROWS:
        if key not in res:
            continue
        row = [cell(res[key].get(c), fields, fmt) for c in cols]
        if all(x == "—" for x in row):
            continue
        out.append(f"| {label} | " + " | ".join(row) + " |")
    out += ["", "## Targets (pylon_ai, ratios from this run)", ""]
    for t in data["targets"]:
        mark = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        out.append(f"- **{mark}** — {t['target']}: {t['detail']}")
        if t.get("floor"):
            out.append(f"  - {t['floor']}")
    cmp = []
    for t in cols:
        r, b = get(res, "r_responses", t, "rps"), get(res, "b_c64", t, "rps")
        ru, bu = (get(res, k, t, "cpu_us_per_chunk") for k in ("r_responses", "b_c64"))
        if r is not None and b:
            line = f"- {LABELS[t]}: {r:.0f} vs {b:.0f} streams/s ({r / b:.2f}x)"
            if ru is not None and bu:
                line += f"; CPU {ru:.1f} vs {bu:.1f} µs per upstream chunk"
            cmp.append(line)
    if cmp:
        out += [
            "",
            "## Responses (r) against Chat Completions (b), same upstream, c=64",
            "",
            *cmp,
        ]
    if "pylon_ai_redis" in cols and "pylon_ai" in cols:
        m, r = (get(res, "b_c64", t, "rps") for t in ("pylon_ai", "pylon_ai_redis"))
        line = f"- b c=64: {r} streams/s with Redis vs {m} in memory"
        if m and r is not None:
            line += f" ({r / m:.2f}x)"
        lines = [line]
        for case in ("first_alone", "burst", "spaced"):
            a, b = (
                get(res, "b_c1", t, "added_ttft_ms", case, "p50")
                for t in ("pylon_ai", "pylon_ai_redis")
            )
            lines.append(
                f"- b c=1 added TTFT p50, {case.replace('_', ' ')}: "
                f"{b} ms with Redis vs {a} ms in memory"
            )
        out += ["", "## pylon_ai state: Redis against memory", "", *lines]
    na = [
        f"- {k} / {LABELS[t]}: {v['na']}"
        for k, row in res.items()
        for t, v in row.items()
        if isinstance(v, dict) and "na" in v
    ]
    if na:
        out += ["", "## n/a", "", *na]
    errs = [
        f"- {k} / {LABELS[t]}: "
        f"{v.get('error') or v.get('client_errors') or v.get('errors')}"
        for k, row in res.items()
        for t, v in row.items()
        if isinstance(v, dict) and (v.get("error") or v.get("client_errors"))
    ]
    if errs:
        out += ["", "## Errors", "", *errs]
    for key, prof in (data.get("profile") or {}).items():
        if not isinstance(prof, dict) or not prof.get("self_pct"):
            continue
        out += [
            "",
            f"## pylon_ai profile, scenario {key.replace('_', ' ')} (py-spy, "
            f"{prof['samples']} samples; % of samples)",
            "",
            "| self % | function | | inclusive % | function |",
            "| ---: | --- | --- | ---: | --- |",
        ]
        for (f, pct), (g, ipct) in zip(
            prof["self_pct"][:12], prof["inclusive_pct"][:12], strict=False
        ):
            out.append(f"| {pct} | `{f}` | | {ipct} | `{g}` |")
    return "\n".join(out) + "\n"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- main ----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run (short runs, 200 slow streams), "
        "written to bench/.work/quick/ unless --out says otherwise",
    )
    ap.add_argument(
        "--gateways",
        default=",".join(DEFAULT_GATEWAYS),
        help="comma-separated subset of "
        + ",".join(TARGETS)
        + " (default "
        + ",".join(DEFAULT_GATEWAYS)
        + "); pylon_ai_redis runs scenario b with [server] state on a local "
        "redis-server; relay (a byte relay on the gateway's core: the TTFT "
        "cases of b c=1 only) runs whenever pylon_ai does",
    )
    ap.add_argument(
        "--scenarios",
        default="abcder",
        help="letters of the scenarios to run (default abcder; r = /v1/responses)",
    )
    ap.add_argument(
        "--portkey-variant",
        default="lockfile",
        help="how Portkey is installed, comma-separated: lockfile (its release "
        "lockfile's versions, no shim; default), latest-shim (npm's resolution "
        "today + bench/portkey-shim.mjs); both show the shim's cost in one run",
    )
    ap.add_argument(
        "--workers",
        default="1",
        help="pylon_ai's --workers (N or auto; default 1); every worker shares "
        "the gateway's one core",
    )
    ap.add_argument("--duration", type=float, help="seconds per wrk run (default 5)")
    ap.add_argument(
        "--ttft-duration", type=float, help="seconds per TTFT client run (default 3)"
    )
    ap.add_argument(
        "--slow-streams", type=int, help="scenario c streams (default 1000)"
    )
    ap.add_argument("--slow-script", help="scenario c reply (default c50-d100)")
    ap.add_argument(
        "--pylon-src",
        choices=("head", "worktree"),
        default="head",
        help="benchmark git HEAD (default) or the uncommitted work tree",
    )
    ap.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy profile of pylon_ai"
    )
    ap.add_argument("--out", type=Path, help="results folder (default bench/results)")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=20,
        help="hard limit for the whole run (default 20)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    args.duration = args.duration or (1.5 if q else 5.0)
    args.ttft_duration = args.ttft_duration or (1.0 if q else 3.0)
    args.slow_streams = args.slow_streams or (200 if q else 1000)
    args.slow_script = args.slow_script or ("c10-d100" if q else "c50-d100")
    if args.slow_script not in SCRIPTS_OPENAI:
        ap.error(f"--slow-script must be one of {', '.join(SCRIPTS_OPENAI)}")
    args.slow_timeout = 60.0
    args.warmup = 0.5 if q else 1.0
    args.out = args.out or (WORK / "quick" if q else BENCH / "results")
    variants = [v.strip() for v in args.portkey_variant.split(",") if v.strip()]
    for v in variants:
        if v not in PORTKEY_VARIANTS:
            ap.error(f"--portkey-variant: unknown {v!r} (lockfile, latest-shim)")
    gateways: list[str] = []
    for g in (g.strip() for g in args.gateways.split(",")):
        if not g:
            continue
        if g not in TARGETS:
            ap.error(f"unknown gateway {g!r}")
        names = [PORTKEY_VARIANTS[v] for v in variants] if g == "portkey" else [g]
        gateways += [n for n in names if n not in gateways]
    if "pylon_ai" in gateways and "relay" not in gateways:
        # The floor beside pylon_ai's added TTFT (about 20 s).
        gateways.insert(gateways.index("pylon_ai"), "relay")
    args.gateways = gateways
    if not re.fullmatch(r"[1-9]\d*|auto", args.workers):
        ap.error("--workers: a positive number or auto")
    args.scenarios = [s for s in args.scenarios if s in SCENARIOS]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    _deadline[0] = t_start + args.max_minutes * 60
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores (gateway on one, load on the other)")

    log("installing / checking tools")
    versions = install(args, set(args.gateways))
    versions.pop("tools_python", None)
    tools_python = WORK / "venv-tools" / "bin" / "python"

    busy0, own0 = busy_seconds(), own_seconds()
    up = free_port()
    upstream = spawn(
        ["node", str(BENCH / "upstream.js"), "--port", str(up)], "upstream", LOAD_CPU
    )
    wait_ready(f"http://127.0.0.1:{up}/healthz", upstream, 20, "upstream")
    log(f"upstream on 127.0.0.1:{up}")

    results: dict[str, Any] = {}
    profile: dict[str, Any] | None = None
    gw_versions: dict[str, str] = {}
    for name in args.gateways:
        if name == "relay" and "b" not in args.scenarios:
            log("== relay skipped: it runs the TTFT cases of scenario b only")
            continue
        target = Target(name, free_port(), up)
        log(f"== {name}")
        try:
            start_target(target, versions, args)
        except Exception as e:
            log(f"{name} did not start: {e}")
            results.setdefault("start_errors", {})[name] = {"error": str(e)[:300]}
            stop_target(target)
            continue
        gw_versions[name] = target.version
        up0 = json.loads(http_get(f"http://127.0.0.1:{up}/healthz")[1])
        try:
            run_target(target, args, results)
            up1 = json.loads(http_get(f"http://127.0.0.1:{up}/healthz")[1])
            results.setdefault("upstream_connections", {})[name] = {
                "requests": up1["served"] - up0["served"],
                "connections": up1["connections"] - up0["connections"],
            }
            if target.redis_port:
                results.setdefault("redis_commands", {})[name] = {
                    "commands": redis_commands(target.redis_port)
                }
            if (
                name == "pylon_ai"
                and not args.no_profile
                and "b" in args.scenarios
                # py-spy follows one process: with workers it would sample
                # the supervisor.
                and args.workers == "1"
            ):
                try:
                    profile = profile_pylon(target, args)
                except Exception as e:
                    profile = {"error": {"error": str(e)[:300]}}
        finally:
            stop_target(target)
    stop(upstream)
    wall = time.monotonic() - t_start
    foreign = busy_seconds() - busy0 - (own_seconds() - own0)

    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mode": "quick" if args.quick else "full",
        "duration_s": args.duration,
        "ttft_duration_s": args.ttft_duration,
        "slow_streams": args.slow_streams,
        "slow_script": args.slow_script,
        "pylon_workers": args.workers,
        "peers": {
            k: versions[k]
            for k in ("litellm", "litellm_deps", "portkey", "portkey_shim", "redis")
            if k in versions
        },
        "other_processes_cpu_pct": round(
            100 * max(0.0, foreign) / wall / (os.cpu_count() or 1), 1
        ),
        "versions": {
            **{LABELS[k]: v for k, v in gw_versions.items() if k != "direct"},
            "node": versions.get("node"),
            "wrk": versions.get("wrk"),
        },
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    derive(results)
    data = {
        "meta": meta,
        "results": results,
        "targets": check_targets(results),
        "profile": profile,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "results.json", json.dumps(data, indent=1) + "\n")
    atomic_write(args.out / "results.md", markdown(data))
    if profile and any(
        "self_pct" in v for v in profile.values() if isinstance(v, dict)
    ):
        atomic_write(args.out / "profile.json", json.dumps(profile, indent=1) + "\n")
    try:
        subprocess.run(
            [
                str(tools_python),
                str(BENCH / "chart.py"),
                str(args.out / "results.json"),
                str(args.out / "results.png"),
            ],
            check=True,
            timeout=120,
        )
    except Exception as e:
        log(f"chart failed: {e}")
    log(f"done in {meta['wall_s']}s: {args.out}/results.md")
    print((args.out / "results.md").read_text())
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
