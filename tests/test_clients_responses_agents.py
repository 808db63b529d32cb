"""
The OpenAI Agents SDK (C{openai-agents}) as the gateway's client, with its
default model: a model name resolved by its default provider, which speaks
the Responses API, on a client set with C{set_default_openai_client}.  An
agent with one function tool plays one tool round, with C{Runner.run}
(whole responses) and C{Runner.run_streamed} (event streams), on models of
every upstream format.

The SDK runs on asyncio: each run is C{asyncio.run} in a thread
(L{deferToThread}), with its own client, so that the reactor keeps serving
the gateway and the fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

try:
    from tests._responses_clients import (
        CHAT_MODEL,
        MESSAGES_MODEL,
        RESPONSES_MODEL,
        ToolRound,
        call_id_for,
        completions,
        missing,
        tool_results,
        upstream_log,
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
        missing,
        tool_results,
        upstream_log,
    )
    from _service import CLIENT_KEY, Service, start_service  # type: ignore[no-redef]

T = TypeVar("T")

#: What the tool returns: the fake's second request must carry it.
TOOL_OUTPUT = "Sunny, 21 C in Paris"
FINAL = ["In Paris it is ", "sunny and 21 C."]
THINKING = ["The user wants ", "the weather."]
SIGNATURE = "sig-agents-1"


def get_weather(city: str) -> str:
    """
    Get the weather in a city.

    @param city: The city.
    """
    return TOOL_OUTPUT if city == "Paris" else f"No weather for {city!r}"


def in_asyncio(make: Callable[[], Awaitable[T]]) -> Deferred[T]:
    """
    Run the coroutine C{make()} in a new event loop, in a thread.
    """

    async def main() -> T:
        return await make()

    return deferToThread(asyncio.run, main())


class _Agents:
    """
    A mixin for L{TestCase}: an agent on the gateway model L{model}, with
    the C{get_weather} tool, in front of a fake that calls it once.
    """

    model: ClassVar[str]
    service: Service

    def setUp(self) -> Deferred[None]:
        try:
            import agents  # noqa: F401
        except ImportError:
            raise missing(
                "the OpenAI Agents SDK is not installed: pip install openai-agents"
                " (in the test extra: pip install '.[test]')"
            ) from None
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self)  # type: ignore[arg-type]
        self.call_id = call_id_for(self.model)
        self.round = ToolRound(
            {"get_weather": {"city": "Paris"}},
            self.call_id,
            FINAL,
            ["Let me look."],
            # Each reply thinks first: Anthropic's signed thinking must come
            # back to it through the SDK.
            {"thinking": THINKING, "signature": SIGNATURE},
        )
        self.service.fake.responder = self.round

    def agent(self) -> Any:
        """
        The agent, its client set as the SDK's default (in the running
        event loop, whose end closes it).
        """
        from agents import (
            Agent,
            function_tool,
            set_default_openai_client,
            set_tracing_disabled,
        )
        from openai import AsyncOpenAI

        set_tracing_disabled(True)
        client = AsyncOpenAI(
            base_url=f"{self.service.url}/v1", api_key=CLIENT_KEY, max_retries=0
        )
        set_default_openai_client(client, use_for_tracing=False)
        return Agent(
            name="Weather",
            instructions="Answer with the weather tool.",
            model=self.model,
            tools=[function_tool(get_weather)],
        )

    def check_round(self, final_output: Any, items: list[Any]) -> None:
        """
        The agent called the tool once, sent its output back (with the
        signed thinking, to an Anthropic upstream), and ended with the
        fake's last text.
        """
        log = upstream_log(self.service.fake.requests)
        self.assertEqual(final_output, "".join(FINAL), log)
        kinds = [item.type for item in items]
        self.assertEqual(kinds.count("tool_call_item"), 1, kinds)
        outputs = [
            item.output for item in items if item.type == "tool_call_output_item"
        ]
        self.assertEqual(outputs, [TOOL_OUTPUT], kinds)
        self.assertEqual(self.round.calls, 1, log)
        requests = completions(self.service.fake.requests)
        self.assertEqual(len(requests), 2, log)
        self.assertEqual(tool_results(requests[1].json).get(self.call_id), TOOL_OUTPUT)
        if self.model == MESSAGES_MODEL:
            # The signed thinking goes first in the assistant turn.
            turns = [
                m for m in requests[1].json["messages"] if m["role"] == "assistant"
            ]
            self.assertEqual(
                turns[0]["content"][0],
                {
                    "type": "thinking",
                    "thinking": "".join(THINKING),
                    "signature": SIGNATURE,
                },
            )

    async def test_run(self) -> None:
        """
        C{Runner.run}: whole responses.
        """
        from agents import Runner

        async def run() -> Any:
            return await Runner.run(self.agent(), "What is the weather in Paris?")

        result = await in_asyncio(run)
        self.check_round(result.final_output, result.new_items)

    async def test_run_streamed(self) -> None:
        """
        C{Runner.run_streamed}: event streams, the text arriving as deltas.
        """
        from agents import Runner

        async def run() -> tuple[Any, list[str]]:
            result = Runner.run_streamed(self.agent(), "What is the weather in Paris?")
            deltas = []
            async for event in result.stream_events():
                data = getattr(event, "data", None)
                if getattr(data, "type", None) == "response.output_text.delta":
                    deltas.append(data.delta)
            return result, deltas

        result, deltas = await in_asyncio(run)
        self.check_round(result.final_output, result.new_items)
        self.assertEqual(deltas, ["Let me look.", *FINAL])


class AgentsChatCompletionsTests(_Agents, TestCase):
    """
    The agent on a model whose upstream speaks Chat Completions.
    """

    model = CHAT_MODEL


class AgentsMessagesTests(_Agents, TestCase):
    """
    The agent on a model whose upstream speaks Anthropic's Messages format.
    """

    model = MESSAGES_MODEL


class AgentsPassThroughTests(_Agents, TestCase):
    """
    The agent on a model whose upstream speaks Responses itself.
    """

    model = RESPONSES_MODEL
