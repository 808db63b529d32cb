"""
Helpers for the tests that drive Responses API clients (Codex CLI, the
OpenAI Agents SDK, the Vercel AI SDK, pydantic-ai) through the gateway: the
Node programs they need, a process runner, and a fake upstream that plays
one tool round whatever format the gateway sends it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from attrs import define, field

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from pylon_ai.testing import FakeReply, FakeToolCall, RecordedRequest

ROOT = Path(__file__).resolve().parent.parent
#: Where C{npm ci --prefix .ci} installs the Node packages.
NODE_MODULES = ROOT / ".ci" / "node_modules"
#: Seconds one run of a client program may take (they take one or two).
RUN_TIMEOUT = 60.0

#: The gateway models of L{tests._service.models} by the format their
#: upstream speaks: C{local} is a custom provider (Chat Completions).
CHAT_MODEL = "local"
MESSAGES_MODEL = "claude"
RESPONSES_MODEL = "gpt"


def missing(message: str) -> SkipTest:
    """
    What to raise when a client is not installed: a skip, but in CI
    (C{CI=true}) a failure, so that a broken install cannot pass unseen.
    """
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(message)
    return SkipTest(message)


def find_program(name: str, variable: str, package: str) -> str:
    """
    The path of a Node program that C{npm ci --prefix .ci} installs.

    @param name: The program, e.g. C{codex}.
    @param variable: An environment variable that may name its path.
    @param package: The npm package that brings it, for the message.
    @raise SkipTest: There is none, outside CI.
    @raise RuntimeError: There is none, in CI (C{CI=true}).
    """
    candidates = [
        os.environ.get(variable),
        str(NODE_MODULES / ".bin" / name),
        shutil.which(name),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise missing(
        f"{package} is not installed: run `npm ci --prefix .ci` (Node and npm"
        f" needed), or set {variable} to the path of a `{name}` program"
    )


class ProgramRun(ProcessProtocol):
    """
    One run of a program with no standard input: its output, error output
    and exit code.  Cancelling L{done} kills it.
    """

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done: Deferred[tuple[str, str, int]] = Deferred(self._kill)

    def connectionMade(self) -> None:
        # Programs that read a prompt from standard input when it is not a
        # terminal (codex exec) must not wait for one.
        assert self.transport is not None
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        if self.done.called:
            return
        code = 0 if reason.check(ProcessDone) else reason.value.exitCode
        out = b"".join(self.out).decode("utf-8", "replace")
        err = b"".join(self.err).decode("utf-8", "replace")
        self.done.callback((out, err, code if code is not None else -1))

    def _kill(self, d: Deferred[Any]) -> None:
        assert self.transport is not None
        try:
            self.transport.signalProcess("KILL")
        except Exception:  # already gone
            pass


async def run_program(
    args: list[str], env: dict[str, str], cwd: str
) -> tuple[str, str, int]:
    """
    Run C{args} (the program first) in C{cwd} with exactly C{env}, killed
    after L{RUN_TIMEOUT} seconds.

    @return: Its output, error output and exit code.
    """
    run = ProgramRun()
    reactor.spawnProcess(run, args[0], args, env=env, path=cwd)
    run.done.addTimeout(RUN_TIMEOUT, reactor)
    return await run.done


def temporary_directory(case: TestCase) -> Path:
    """
    A new directory that the cleanups of C{case} remove.
    """
    path = tempfile.mkdtemp(prefix="pylon-client-")
    case.addCleanup(shutil.rmtree, path, True)
    return Path(path)


def upstream_tools(body: dict[str, Any]) -> list[str]:
    """
    The function tool names of an upstream request in any of the three
    formats.
    """
    names = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if isinstance(function, dict):  # Chat Completions
            names.append(str(function.get("name")))
        elif "name" in tool:  # Messages, Responses
            names.append(str(tool["name"]))
    return names


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return str(content)


def tool_results(body: dict[str, Any]) -> dict[str, str]:
    """
    The tool results an upstream request carries, by call id, in any of
    the three formats (list contents joined as text).
    """
    found: dict[str, str] = {}
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool":  # Chat Completions
            found[str(message.get("tool_call_id"))] = _text(message.get("content"))
        elif isinstance(message.get("content"), list):  # Messages
            for block in message["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    found[str(block.get("tool_use_id"))] = _text(block.get("content"))
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            found[str(item.get("call_id"))] = _text(item.get("output"))
    return found


def completions(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    """
    The completion requests among those the fake got (not token counts or
    embeddings), in order.
    """
    ends = ("/chat/completions", "/messages", "/responses")
    return [
        r
        for r in requests
        if r.method == "POST"
        and r.path.split("?")[0].endswith(ends)
        and isinstance(r.json, dict)
    ]


def upstream_log(requests: list[RecordedRequest]) -> str:
    """
    A summary of what the upstream got, for failure messages.
    """
    lines = []
    for request in requests:
        body = request.json if isinstance(request.json, dict) else {}
        fields = sorted(k for k in body if k not in ("messages", "input", "tools"))
        lines.append(
            f"{request.method} {request.path} fields={fields}"
            f" tools={upstream_tools(body)} results={tool_results(body)}"
        )
    return "\n  " + "\n  ".join(lines) if lines else "(none)"


def call_id_for(model: str) -> str:
    """
    A tool call id in the style of the upstream behind C{model}.
    """
    return "toolu_round1" if model == MESSAGES_MODEL else "call_round1"


@define
class ToolRound:
    """
    A L{FakeProvider.responder<pylon_ai.testing.FakeProvider.responder>}
    that plays one tool round: a request that offers one of L{arguments}'
    tools gets a call of the first it offers (streamed in two argument
    fragments) after L{preamble}; the request that carries that call's
    result gets L{final}.  Requests offering none of them get the fake's
    queue or default.

    @ivar arguments: Tool name -> the arguments of its call.
    @ivar call_id: The call's id.
    @ivar final: The text chunks of the last reply.
    @ivar preamble: Text chunks before the call.
    @ivar options: More fields of both replies, e.g. C{thinking}.
    @ivar calls: How many calls it scripted.
    """

    arguments: dict[str, dict[str, Any]]
    call_id: str
    final: list[str]
    preamble: list[str] = field(factory=list)
    options: dict[str, Any] = field(factory=dict)
    calls: int = 0

    def __call__(self, request: RecordedRequest) -> FakeReply | None:
        body = request.json if isinstance(request.json, dict) else {}
        offered = [n for n in upstream_tools(body) if n in self.arguments]
        if not offered:
            return None
        if self.call_id in tool_results(body):
            return FakeReply(self.final, usage=(120, 9), **self.options)
        self.calls += 1
        arguments = json.dumps(self.arguments[offered[0]])
        call = FakeToolCall(self.call_id, offered[0], [arguments[:9], arguments[9:]])
        return FakeReply(
            self.preamble, tool_calls=[call], usage=(100, 12), **self.options
        )
