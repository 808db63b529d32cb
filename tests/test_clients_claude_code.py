"""
Claude Code itself (the C{@anthropic-ai/claude-code} npm package, in print
mode) as the gateway's client, with its default thinking, on a model whose
upstream speaks Anthropic's format (pass-through) and on one whose upstream
speaks Chat Completions (translated), in front of a L{FakeProvider}.

Claude Code is looked for in C{$PYLON_CLAUDE_CODE} (the path of its
C{claude} program), then in C{.ci/node_modules/.bin/claude} (where
C{npm ci --prefix .ci} installs the version C{.ci/package.json} pins), then
on C{PATH}.  Without it the tests skip, except in CI (C{CI=true}), where a
missing install is a failure.

Claude Code runs with a throwaway C{HOME}, its telemetry, auto-updater and
other non-essential traffic off, and the gateway as its only server: it
needs no network beyond loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase, Todo, makeTodo

from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall, RecordedRequest

try:
    from tests._responses_clients import find_program, run_program
    from tests._service import CLIENT_KEY, OPENAI_UPSTREAM_KEY, Service, models
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _responses_clients import (  # type: ignore[no-redef]
        find_program,
        run_program,
    )
    from _service import (  # type: ignore[no-redef]
        CLIENT_KEY,
        OPENAI_UPSTREAM_KEY,
        Service,
        models,
    )


THINKING = ("The user says hello. ", "Answer briefly.")
SIGNATURE = "sig-claude-code-1"

#: Why tests are expected to fail for now.

#: A gateway model named as a model Claude Code knows, with an upstream in
#: Chat Completions format.  Claude Code shapes its requests by the name:
#: for this one C{thinking} C{enabled} with a budget; for names it does not
#: know (C{claude}, C{gpt}) its newest shape (C{thinking} C{adaptive},
#: C{output_config.effort}, C{system} messages between the turns).
KNOWN_NAME = "claude-sonnet-4-5"


async def start_gateway(case: TestCase) -> Service:
    """
    Start a fake upstream and a gateway in front of it, with the models of
    L{models} and L{KNOWN_NAME}; the cleanups of C{case} stop both.
    """
    fake = FakeProvider(reactor)
    await fake.start()
    case.addCleanup(fake.stop)
    known = {
        "name": KNOWN_NAME,
        "provider": "openai",
        "model": "gpt-up",
        "api_key": OPENAI_UPSTREAM_KEY,
        "base_url": fake.base_url,
        "retries": 0,
    }
    config = parse_config(
        {
            "server": {"api_keys": [CLIENT_KEY]},
            "models": [*models(fake.base_url), known],
        },
        {},
    )
    gateway = Gateway(config, reactor)
    case.addCleanup(gateway.close)
    site = make_site(gateway)
    case.addCleanup(site.close_connections, reactor)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    return Service(fake, gateway, site, port)


class _ClaudeCode:
    """
    A mixin for L{TestCase}: Claude Code against a gateway in front of a
    fake; the C{model} of the subclass names the upstream (C{"claude"}:
    Anthropic's format, C{"gpt"}: Chat Completions).
    """

    model: ClassVar[str]
    upstream: ClassVar[str]
    #: Test name -> why it is expected to fail for now (trial's C{todo}: an
    #: unexpected success fails the run, so each entry goes once its work
    #: lands).
    pending: ClassVar[dict[str, str]] = {}
    service: Service
    claude: str
    _testMethodName: str

    def getTodo(self) -> Todo | None:
        reason = self.pending.get(self._testMethodName)
        if reason is not None:
            return makeTodo(reason)
        todo: Todo | None = super().getTodo()  # type: ignore[misc]
        return todo

    def setUp(self) -> Deferred[None]:
        self.claude = find_program(
            "claude", "PYLON_CLAUDE_CODE", "Claude Code (@anthropic-ai/claude-code)"
        )
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_gateway(self)  # type: ignore[arg-type]
        # Whatever else Claude Code asks (a title, a quota check) gets a
        # plain, thinking reply.
        self.service.fake.default_reply = self.reply(["Hello from the fake."])
        # Not mktemp(): under pytest it makes its directory in the working
        # directory, and Claude Code fills HOME with its own files.
        base = Path(tempfile.mkdtemp(prefix="pylon-claude-code-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.home = base / "home"
        self.project = base / "project"
        self.home.mkdir()
        self.project.mkdir()

    def reply(self, chunks: list[str], **kwargs: Any) -> FakeReply:
        """
        A reply that thinks first, as the models Claude Code expects do:
        signed thinking in Anthropic's format, C{reasoning_content} in
        Chat Completions.
        """
        kwargs.setdefault("usage", (100, 20))
        return FakeReply(chunks, thinking=THINKING, signature=SIGNATURE, **kwargs)

    async def claude_code(self, prompt: str, *options: str) -> tuple[str, str]:
        """
        Run C{claude -p PROMPT --model MODEL OPTIONS...} in the project
        directory.

        @return: Its output and error output.
        @raise AssertionError: It failed; the message holds what it said and
            what the upstream got.
        """
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "ANTHROPIC_BASE_URL": self.service.url,
            "ANTHROPIC_API_KEY": CLIENT_KEY,
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        args = [self.claude, "-p", prompt, "--model", self.model, *options]
        out, err, code = await run_program(args, env, str(self.project))
        if code != 0:
            raise AssertionError(
                f"claude exited with {code}\nstdout: {out[-2000:]}\n"
                f"stderr: {err[-2000:]}\nupstream requests: {self.upstream_log()}"
            )
        return out, err

    def upstream_log(self) -> str:
        """
        A summary of what the upstream got, for failure messages.
        """
        lines = []
        for request in self.service.fake.requests:
            body = request.json if isinstance(request.json, dict) else {}
            fields = sorted(k for k in body if k not in ("messages", "tools"))
            last = body.get("messages", [{}])[-1] if body.get("messages") else {}
            lines.append(
                f"{request.method} {request.path} fields={fields}"
                f" last={json.dumps(last)[:300]}"
            )
        return "\n  " + "\n  ".join(lines) if lines else "(none)"

    def completions(self) -> list[RecordedRequest]:
        """
        The completion requests the upstream got, in order.
        """
        path = "/messages" if self.upstream == "anthropic" else "/chat/completions"
        return [
            r
            for r in self.service.fake.requests
            if r.method == "POST" and r.path.split("?")[0].endswith(path)
        ]

    def check_tool_result_sent(self) -> None:
        """
        The upstream's last completion request carried the result of the
        Bash call (C{echo hi}) back, answering the scripted call.
        """
        requests = self.completions()
        self.assertGreaterEqual(len(requests), 2, self.upstream_log())
        messages = requests[-1].json["messages"]
        if self.upstream == "anthropic":
            turn = messages[-2]
            self.assertEqual(turn["role"], "assistant")
            # The signed thinking goes back first in the assistant turn.
            self.assertEqual(
                turn["content"][0],
                {
                    "type": "thinking",
                    "thinking": "".join(THINKING),
                    "signature": SIGNATURE,
                },
            )
            results = [
                block
                for block in messages[-1]["content"]
                if block.get("type") == "tool_result"
            ]
            self.assertEqual(len(results), 1, messages[-1])
            self.assertEqual(results[0]["tool_use_id"], "toolu_cc1")
            content = results[0]["content"]
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content)
        else:
            tool = [m for m in messages if m.get("role") == "tool"]
            self.assertEqual(len(tool), 1, messages[-3:])
            self.assertEqual(tool[0]["tool_call_id"], "toolu_cc1")
            content = tool[0]["content"]
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content)
        # Claude Code may append a <system-reminder> to the output.
        self.assertEqual(content.strip().splitlines()[0], "hi", content)

    def bash_call(self) -> FakeReply:
        arguments = json.dumps({"command": "echo hi", "description": "Say hi"})
        call = FakeToolCall("toolu_cc1", "Bash", [arguments[:12], arguments[12:]])
        return self.reply(["Let me run it."], tool_calls=[call])

    async def test_text(self) -> None:
        """
        A prompt: Claude Code prints the upstream's text.  It asked for
        thinking, and the upstream got it in its own terms.
        """
        self.service.fake.enqueue(self.reply(["Hi", " there", "!"]))
        out, err = await self.claude_code("Say hello.")
        self.assertEqual(out.strip(), "Hi there!", err)
        body = self.completions()[0].json
        if self.upstream == "anthropic":
            self.assertIn("thinking", body)
        else:
            self.assertNotIn("thinking", body)
            self.assertNotIn("output_config", body)
            self.assertIn("reasoning_effort", body)

    async def test_tool_round(self) -> None:
        """
        The upstream calls Bash; Claude Code runs it and sends the result
        back; the upstream's second reply is what it prints.
        """
        self.service.fake.enqueue(self.bash_call(), self.reply(["It said: hi."]))
        out, err = await self.claude_code("Run echo hi.", "--allowedTools", "Bash")
        self.assertEqual(out.strip(), "It said: hi.", err)
        self.check_tool_result_sent()

    async def test_stream_json(self) -> None:
        """
        C{--output-format stream-json}: JSON lines, the tool round among
        them, and a final C{result} with the upstream's last text.
        """
        self.service.fake.enqueue(self.bash_call(), self.reply(["Done", ": hi."]))
        out, _err = await self.claude_code(
            "Run echo hi.",
            "--allowedTools",
            "Bash",
            "--output-format",
            "stream-json",
            "--verbose",
        )
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        types = [line.get("type") for line in lines]
        self.assertEqual(types[0], "system", types)
        result = lines[-1]
        self.assertEqual(result["type"], "result", result)
        self.assertEqual(result["subtype"], "success", result)
        self.assertFalse(result["is_error"], result)
        self.assertEqual(result["result"], "Done: hi.")
        tool_uses = [
            block
            for line in lines
            if line.get("type") == "assistant"
            for block in line["message"]["content"]
            if block.get("type") == "tool_use"
        ]
        self.assertEqual(
            [(t["name"], t["input"]["command"]) for t in tool_uses],
            [("Bash", "echo hi")],
        )
        self.check_tool_result_sent()


class ClaudeCodeSameFormatTests(_ClaudeCode, TestCase):
    """
    Claude Code on a model whose upstream speaks Anthropic's format.
    """

    model = "claude"
    upstream = "anthropic"

    async def test_beta_forwarded(self) -> None:
        """
        Claude Code's C{anthropic-beta} header and C{?beta=true} reach the
        Anthropic upstream, with its C{context_management}.
        """
        self.service.fake.enqueue(self.reply(["Hi."]))
        await self.claude_code("Say hello.")
        request = self.completions()[0]
        self.assertTrue(request.path.endswith("?beta=true"), request.path)
        betas = request.headers.get("anthropic-beta", "").split(",")
        self.assertIn("claude-code-20250219", betas)
        self.assertIn("context_management", request.json)


class ClaudeCodeKnownModelCrossFormatTests(_ClaudeCode, TestCase):
    """
    Claude Code on a model it knows by name (so thinking with a budget),
    whose upstream speaks Chat Completions.
    """

    model = KNOWN_NAME
    upstream = "openai"


class ClaudeCodeCrossFormatTests(_ClaudeCode, TestCase):
    """
    Claude Code on a model whose upstream speaks Chat Completions.
    """

    model = "gpt"
    upstream = "openai"
