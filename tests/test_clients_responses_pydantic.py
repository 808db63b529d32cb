"""
pydantic-ai (C{pydantic-ai-slim[openai]}) as the gateway's client, with its
Responses API model: C{OpenAIResponsesModel} on an C{OpenAIProvider} whose
C{base_url} is the gateway.  An agent with one tool plays one tool round
with C{Agent.run} (whole responses) and C{Agent.run_stream} (event
streams), on models of every upstream format.

pydantic-ai runs on asyncio: each run is C{asyncio.run} in a thread
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


class _PydanticAI:
    """
    A mixin for L{TestCase}: a pydantic-ai agent on the gateway model
    L{model}, with the C{get_weather} tool, in front of a fake that calls it
    once.
    """

    model: ClassVar[str]
    service: Service

    def setUp(self) -> Deferred[None]:
        try:
            import pydantic_ai.models.openai  # noqa: F401
        except ImportError:
            raise missing(
                "pydantic-ai is not installed: pip install 'pydantic-ai-slim[openai]'"
                " (in the test extra: pip install '.[test]')"
            ) from None
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self)  # type: ignore[arg-type]
        self.call_id = call_id_for(self.model)
        # No text before the call: run_stream takes the first text it sees
        # as the final output.
        self.round = ToolRound({"get_weather": {"city": "Paris"}}, self.call_id, FINAL)
        self.service.fake.responder = self.round

    def agent(self) -> Any:
        """
        The agent, on a new client (made in the running event loop).
        """
        from pydantic_ai import Agent
        from pydantic_ai.models.openai import OpenAIResponsesModel
        from pydantic_ai.providers.openai import OpenAIProvider

        provider = OpenAIProvider(base_url=f"{self.service.url}/v1", api_key=CLIENT_KEY)
        model = OpenAIResponsesModel(self.model, provider=provider)
        return Agent(
            model,
            instructions="Answer with the weather tool.",
            tools=[get_weather],
        )

    def check_round(self, output: Any, messages: list[Any]) -> None:
        """
        The agent called the tool once, sent its output back, and ended
        with the fake's last text.
        """
        log = upstream_log(self.service.fake.requests)
        self.assertEqual(output, "".join(FINAL), log)
        kinds = [part.part_kind for message in messages for part in message.parts]
        self.assertEqual(kinds.count("tool-call"), 1, kinds)
        returns = [
            part.content
            for message in messages
            for part in message.parts
            if part.part_kind == "tool-return"
        ]
        self.assertEqual(returns, [TOOL_OUTPUT], kinds)
        self.assertEqual(self.round.calls, 1, log)
        requests = completions(self.service.fake.requests)
        self.assertEqual(len(requests), 2, log)
        self.assertEqual(tool_results(requests[1].json).get(self.call_id), TOOL_OUTPUT)

    async def test_run(self) -> None:
        """
        C{Agent.run}: whole responses.
        """

        async def run() -> Any:
            return await self.agent().run("What is the weather in Paris?")

        result = await in_asyncio(run)
        self.check_round(result.output, result.all_messages())

    async def test_run_stream(self) -> None:
        """
        C{Agent.run_stream}: the final text arrives as deltas.
        """

        async def run() -> tuple[str, list[str], list[Any]]:
            agent = self.agent()
            async with agent.run_stream("What is the weather in Paris?") as result:
                # debounce_by=None: every delta as it came, not grouped.
                stream = result.stream_text(delta=True, debounce_by=None)
                deltas = [d async for d in stream]
                output = await result.get_output()
            return output, deltas, result.all_messages()

        output, deltas, messages = await in_asyncio(run)
        self.check_round(output, messages)
        self.assertEqual(deltas, FINAL)


class PydanticAIChatCompletionsTests(_PydanticAI, TestCase):
    """
    pydantic-ai on a model whose upstream speaks Chat Completions.
    """

    model = CHAT_MODEL


class PydanticAIMessagesTests(_PydanticAI, TestCase):
    """
    pydantic-ai on a model whose upstream speaks Anthropic's Messages format.
    """

    model = MESSAGES_MODEL


class PydanticAIPassThroughTests(_PydanticAI, TestCase):
    """
    pydantic-ai on a model whose upstream speaks Responses itself.
    """

    model = RESPONSES_MODEL
