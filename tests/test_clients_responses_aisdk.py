"""
The Vercel AI SDK (npm C{ai} and C{@ai-sdk/openai}) as the gateway's client,
with its default OpenAI provider, C{createOpenAI({baseURL, apiKey})(model)},
which speaks the Responses API: C{generateText}, C{streamText} and
C{generateObject} (a zod schema), with a tool round in C{generateText} and
C{streamText}, on models of every upstream format.

Each case is one run of C{node tests/clients/aisdk.cjs CASE}, which prints
what the SDK returned as JSON.  The packages come from C{.ci/node_modules}
(C{npm ci --prefix .ci} installs the versions C{.ci/package.json} pins);
without them, or without C{node}, the tests skip, except in CI (C{CI=true}),
where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase, Todo, makeTodo

from pylon_ai.testing import FakeReply

try:
    from tests._responses_clients import (
        CHAT_MODEL,
        MESSAGES_MODEL,
        NODE_MODULES,
        RESPONSES_MODEL,
        ROOT,
        ToolRound,
        call_id_for,
        completions,
        missing,
        run_program,
        tool_results,
        upstream_log,
    )
    from tests._service import CLIENT_KEY, Service, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _responses_clients import (  # type: ignore[no-redef]
        CHAT_MODEL,
        MESSAGES_MODEL,
        NODE_MODULES,
        RESPONSES_MODEL,
        ROOT,
        ToolRound,
        call_id_for,
        completions,
        missing,
        run_program,
        tool_results,
        upstream_log,
    )
    from _service import CLIENT_KEY, Service, start_service  # type: ignore[no-redef]

SCRIPT = ROOT / "tests" / "clients" / "aisdk.cjs"
#: What the script's weather tool returns for Paris.
TOOL_OUTPUT = "Sunny, 21 C in Paris"
FINAL = ["In Paris it is ", "sunny and 21 C."]
PERSON_CHUNKS = ['{"name": ', '"Ada", "age"', ": 36}"]
THINKING = ["The user wants ", "the weather."]
SIGNATURE = "sig-aisdk-1"


def find_node() -> str:
    """
    The path of C{node}, once the AI SDK's packages are installed.

    @raise SkipTest: Either is missing, outside CI.
    @raise RuntimeError: Either is missing, in CI (C{CI=true}).
    """
    node = os.environ.get("PYLON_NODE") or shutil.which("node")
    packages = ("ai", "@ai-sdk/openai", "zod")
    if not node or not all(
        (NODE_MODULES / p / "package.json").is_file() for p in packages
    ):
        raise missing(
            "the AI SDK is not installed: run `npm ci --prefix .ci` (Node and"
            " npm needed)"
        )
    return node


class _AISDK:
    """
    A mixin for L{TestCase}: the AI SDK against a gateway in front of a
    fake, on the gateway model L{model}.
    """

    model: ClassVar[str]
    #: Test name -> why it is expected to fail for now (trial's C{todo}: an
    #: unexpected success fails the run, so each entry goes once its work
    #: lands).
    pending: ClassVar[dict[str, str]] = {}
    service: Service
    node: str
    _testMethodName: str

    def getTodo(self) -> Todo | None:
        reason = self.pending.get(self._testMethodName)
        if reason is not None:
            return makeTodo(reason)
        todo: Todo | None = super().getTodo()  # type: ignore[misc]
        return todo

    def setUp(self) -> Deferred[None]:
        self.node = find_node()
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self)  # type: ignore[arg-type]
        self.call_id = call_id_for(self.model)

    async def sdk(self, case: str, store: bool | None = None) -> Any:
        """
        Run one case of the script.

        @param store: L{False} sets the provider option C{store: false}.

        @return: What it printed, parsed.
        @raise AssertionError: It failed; the message holds what it said
            and what the upstream got.
        """
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NODE_PATH": str(NODE_MODULES),
            "PYLON_BASE_URL": f"{self.service.url}/v1",
            "PYLON_KEY": CLIENT_KEY,
            "PYLON_MODEL": self.model,
        }
        if store is not None:
            env["PYLON_STORE"] = json.dumps(store)
        args = [self.node, str(SCRIPT), case]
        out, err, code = await run_program(args, env, str(ROOT))
        if code != 0:
            raise AssertionError(
                f"the AI SDK failed ({case}, exit {code})\nstderr: {err[-4000:]}\n"
                f"upstream requests: {upstream_log(self.service.fake.requests)}"
            )
        # The SDK prints its warnings on the standard output too: the
        # script's JSON is the last line.
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(
                f"the AI SDK printed no JSON ({case})\nstdout: {out[-2000:]}\n"
                f"stderr: {err[-4000:]}"
            ) from None

    def tool_round(self) -> ToolRound:
        """
        Make the fake call the script's weather tool once.
        """
        round = ToolRound(
            {"get_weather": {"city": "Paris"}},
            self.call_id,
            FINAL,
            ["Let me look."],
            # Each reply thinks first: Anthropic's signed thinking must come
            # back to it through the SDK.
            {"thinking": THINKING, "signature": SIGNATURE},
        )
        self.service.fake.responder = round
        return round

    def check_tool_round(
        self, result: Any, round: ToolRound, whole: bool = True
    ) -> None:
        """
        One call of the tool, its output sent back (with the signed
        thinking, to an Anthropic upstream), the fake's last text as the
        final text.

        @param whole: The SDK sent its earlier output items whole
            (C{store: false}).  Otherwise it sent references to them, which
            the stateless gateway leaves out: the signed thinking cannot
            come back, and the upstream's assistant turn starts with the
            call (thinking is off for that turn).
        """
        log = upstream_log(self.service.fake.requests)
        self.assertEqual(result["text"], "".join(FINAL), log)
        self.assertEqual(result["finishReason"], "stop")
        steps = result["steps"]
        self.assertEqual(
            steps[0]["calls"], [{"name": "get_weather", "input": {"city": "Paris"}}]
        )
        self.assertEqual(steps[0]["results"], [TOOL_OUTPUT])
        self.assertEqual(len(steps), 2, steps)
        self.assertEqual(round.calls, 1, log)
        requests = completions(self.service.fake.requests)
        self.assertEqual(len(requests), 2, log)
        self.assertEqual(tool_results(requests[1].json).get(self.call_id), TOOL_OUTPUT)
        if self.model == MESSAGES_MODEL:
            # The signed thinking goes first in the assistant turn.
            messages = requests[1].json["messages"]
            turns = [m for m in messages if m["role"] == "assistant"]
            if not whole:
                self.assertEqual(turns[0]["content"][0]["type"], "tool_use", log)
                self.assertNotIn("thinking", requests[1].json, log)
                return
            self.assertEqual(
                turns[0]["content"][0],
                {
                    "type": "thinking",
                    "thinking": "".join(THINKING),
                    "signature": SIGNATURE,
                },
            )

    async def test_generate_text(self) -> None:
        """
        C{generateText}: the text, the stop and the usage.
        """
        self.service.fake.enqueue(FakeReply(["Hello", " there."], usage=(11, 3)))
        result = await self.sdk("generate-text")
        self.assertEqual(result["text"], "Hello there.")
        self.assertEqual(result["finishReason"], "stop")
        self.assertEqual(result["usage"], {"inputTokens": 11, "outputTokens": 3})

    async def test_stream_text(self) -> None:
        """
        C{streamText}: the text in its deltas, the stop and the usage.
        """
        self.service.fake.enqueue(FakeReply(["Hel", "lo", " there."], usage=(11, 3)))
        result = await self.sdk("stream-text")
        self.assertEqual(result["deltas"], ["Hel", "lo", " there."])
        self.assertEqual(result["text"], "Hello there.")
        self.assertEqual(result["finishReason"], "stop")
        self.assertEqual(result["usage"], {"inputTokens": 11, "outputTokens": 3})

    async def test_generate_object(self) -> None:
        """
        C{generateObject} with a zod schema: the object parsed from the
        upstream's JSON text.
        """
        self.service.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(20, 8)))
        result = await self.sdk("generate-object")
        self.assertEqual(result["object"], {"name": "Ada", "age": 36})

    async def test_generate_text_tools(self) -> None:
        """
        C{generateText} with a tool: the SDK runs the call the upstream
        asks for and sends the output back.
        """
        round = self.tool_round()
        result = await self.sdk("generate-text-tools")
        self.check_tool_round(result, round, whole=False)

    async def test_stream_text_tools(self) -> None:
        """
        C{streamText} with a tool: the same round, streamed.
        """
        round = self.tool_round()
        result = await self.sdk("stream-text-tools")
        self.check_tool_round(result, round, whole=False)
        self.assertEqual(result["deltas"], ["Let me look.", *FINAL])

    async def test_generate_text_tools_store_false(self) -> None:
        """
        C{generateText} with a tool and the provider option C{store: false}:
        the SDK sends its earlier output whole, not by reference.
        """
        round = self.tool_round()
        result = await self.sdk("generate-text-tools", store=False)
        self.check_tool_round(result, round)

    async def test_stream_text_tools_store_false(self) -> None:
        """
        C{streamText} with a tool and C{store: false}.
        """
        round = self.tool_round()
        result = await self.sdk("stream-text-tools", store=False)
        self.check_tool_round(result, round)


class AISDKChatCompletionsTests(_AISDK, TestCase):
    """
    The AI SDK on a model whose upstream speaks Chat Completions.
    """

    model = CHAT_MODEL


class AISDKMessagesTests(_AISDK, TestCase):
    """
    The AI SDK on a model whose upstream speaks Anthropic's Messages format.
    """

    model = MESSAGES_MODEL


class AISDKPassThroughTests(_AISDK, TestCase):
    """
    The AI SDK on a model whose upstream speaks Responses itself.
    """

    model = RESPONSES_MODEL
