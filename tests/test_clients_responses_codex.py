"""
OpenAI's Codex CLI (the C{@openai/codex} npm package, C{codex exec}) as the
gateway's client: it speaks only the Responses API (C{POST /v1/responses}),
so these tests are the proof that a model of any upstream format serves it.

Codex runs with its default configuration (web search on, its own tools),
a custom provider whose C{base_url} is the gateway, approvals never and a
sandbox that lets it run the command.  The fake upstream reads the tool
Codex offers for shell commands from the request (C{exec_command} in
today's Codex; older ones call it C{shell}), asks for one call, and answers
the request that carries its output with text.

Codex is looked for in C{$PYLON_CODEX} (the path of its C{codex} program),
then in C{.ci/node_modules/.bin/codex} (where C{npm ci --prefix .ci}
installs the version C{.ci/package.json} pins), then on C{PATH}.  Without
it the tests skip, except in CI (C{CI=true}), where a missing install is a
failure.  It runs with a throwaway C{HOME} and C{CODEX_HOME}, and needs no
network beyond loopback.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

try:
    from tests._responses_clients import (
        CHAT_MODEL,
        MESSAGES_MODEL,
        RESPONSES_MODEL,
        ToolRound,
        call_id_for,
        completions,
        find_program,
        run_program,
        temporary_directory,
        tool_results,
        upstream_log,
        upstream_tools,
    )
    from tests._service import CLIENT_KEY, Service, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _responses_clients import (  # type: ignore[no-redef]
        CHAT_MODEL,
        MESSAGES_MODEL,
        RESPONSES_MODEL,
        ToolRound,
        call_id_for,
        completions,
        find_program,
        run_program,
        temporary_directory,
        tool_results,
        upstream_log,
        upstream_tools,
    )
    from _service import CLIENT_KEY, Service, start_service  # type: ignore[no-redef]

#: The command the fake asks Codex to run, and what it prints: the output
#: differs from the command, so finding it proves the command ran.
COMMAND = "echo pylon-$((6*7))"
COMMAND_OUTPUT = "pylon-42"
FINAL_TEXT = "Codex ran it: pylon-42."
THINKING = ["The user wants ", "a command run."]
SIGNATURE = "sig-codex-1"

#: The shell tools Codex has offered, and the arguments that run COMMAND.
SHELL_TOOLS: dict[str, dict[str, Any]] = {
    "exec_command": {"cmd": COMMAND},
    "shell_command": {"command": COMMAND},
    "shell": {"command": ["bash", "-lc", COMMAND]},
}


class _Codex:
    """
    A mixin for L{TestCase}: C{codex exec} against a gateway in front of a
    fake, on the gateway model L{model}.
    """

    model: ClassVar[str]
    service: Service
    codex: str

    def setUp(self) -> Deferred[None]:
        self.codex = find_program("codex", "PYLON_CODEX", "Codex CLI (@openai/codex)")
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self)  # type: ignore[arg-type]
        self.call_id = call_id_for(self.model)
        # Codex names its shell tool itself: the fake reads it from the
        # request.
        # Each reply thinks first, as the models Codex expects do.
        self.service.fake.responder = ToolRound(
            SHELL_TOOLS,
            self.call_id,
            ["Codex ran it: ", "pylon-42."],
            ["Running it."],
            {"thinking": THINKING, "signature": SIGNATURE},
        )
        base = temporary_directory(self)  # type: ignore[arg-type]
        self.home = base / "home"
        self.codex_home = self.home / ".codex"
        self.project = base / "project"
        self.codex_home.mkdir(parents=True)
        self.project.mkdir()
        (self.codex_home / "config.toml").write_text(
            f'model_provider = "pylon"\n'
            f'model = "{self.model}"\n'
            'approval_policy = "never"\n'
            'sandbox_mode = "danger-full-access"\n'
            "\n"
            "[model_providers.pylon]\n"
            'name = "pylon"\n'
            f'base_url = "{self.service.url}/v1"\n'
            'env_key = "PYLON_KEY"\n'
            'wire_api = "responses"\n',
            encoding="utf-8",
        )

    async def codex_exec(self, prompt: str) -> str:
        """
        Run C{codex exec PROMPT} in the project directory.

        @return: What it printed on its standard output.
        @raise AssertionError: It failed; the message holds what it said
            and what the upstream got.
        """
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "CODEX_HOME": str(self.codex_home),
            "PYLON_KEY": CLIENT_KEY,
            "RUST_LOG": "error",
            "NO_COLOR": "1",
        }
        args = [self.codex, "exec", "--skip-git-repo-check", prompt]
        out, err, code = await run_program(args, env, str(self.project))
        if code != 0:
            raise AssertionError(
                f"codex exited with {code}\nstdout: {out[-2000:]}\n"
                f"stderr: {err[-3000:]}\nupstream requests:"
                f" {upstream_log(self.service.fake.requests)}"
            )
        self.stderr = err
        return out

    async def test_tool_round(self) -> None:
        """
        The upstream asks Codex to run a shell command; Codex runs it and
        sends the output back; the upstream's second reply is what Codex
        prints last.
        """
        out = await self.codex_exec(f"Run `{COMMAND}` and tell me what it printed.")
        log = upstream_log(self.service.fake.requests)
        self.assertEqual(out.strip().splitlines()[-1:], [FINAL_TEXT], self.stderr)
        requests = completions(self.service.fake.requests)
        self.assertGreaterEqual(len(requests), 2, log)
        first, last = requests[0].json, requests[-1].json
        self.assertNotIn(self.call_id, tool_results(first), log)
        self.assertIn(COMMAND_OUTPUT, tool_results(last).get(self.call_id, ""), log)
        self.check_upstream(first)

    def check_upstream(self, body: dict[str, Any]) -> None:
        """
        What the upstream got for Codex's first request, in its own format.
        """
        raise NotImplementedError


class CodexChatCompletionsTests(_Codex, TestCase):
    """
    Codex on a model whose upstream speaks Chat Completions (a custom
    provider): its Responses requests are translated.
    """

    model = CHAT_MODEL

    def check_upstream(self, body: dict[str, Any]) -> None:
        self.assertIn("messages", body)
        # Codex's namespace tools arrive flattened; its hosted web_search
        # has no Chat Completions equivalent and is dropped.
        names = upstream_tools(body)
        self.assertIn("exec_command", names)
        self.assertTrue(any(n.startswith("multi_agent_v1") for n in names), names)
        self.assertFalse(
            [t for t in body.get("tools", []) if t.get("type") != "function"], body
        )


class CodexMessagesTests(_Codex, TestCase):
    """
    Codex on a model whose upstream speaks Anthropic's Messages format.
    """

    model = MESSAGES_MODEL

    def check_upstream(self, body: dict[str, Any]) -> None:
        self.assertIn("messages", body)
        self.assertIn("system", body)
        self.assertIn("exec_command", upstream_tools(body))

    async def test_tool_round(self) -> None:
        """
        The tool round, and the signed thinking of the call's turn comes
        back to the upstream first in the assistant turn (through the
        reasoning item's C{encrypted_content}), as Anthropic requires for
        tool use with thinking.
        """
        await super().test_tool_round()
        last = completions(self.service.fake.requests)[-1].json
        turns = [m for m in last["messages"] if m["role"] == "assistant"]
        self.assertEqual(len(turns), 1, last["messages"])
        self.assertEqual(
            turns[0]["content"][0],
            {"type": "thinking", "thinking": "".join(THINKING), "signature": SIGNATURE},
        )


class CodexPassThroughTests(_Codex, TestCase):
    """
    Codex on a model whose upstream speaks Responses itself (provider
    C{openai}): the request goes through as Codex sent it.
    """

    model = RESPONSES_MODEL

    def check_upstream(self, body: dict[str, Any]) -> None:
        self.assertIn("input", body)
        types = [t.get("type") for t in body.get("tools", [])]
        self.assertIn("web_search", types)
        self.assertIn("namespace", types)
