"""
Reasoning and structured output through the gateway with the official
C{openai} and C{anthropic} SDKs as clients, in every pairing of client format
and upstream format (same-format and translated), streaming and not, in front
of a L{FakeProvider} that scripts thinking (with signatures) and JSON replies.

The first class drives the fake directly with the SDKs: its scripted thinking
must be what the real providers send, or the gateway tests prove nothing.

The SDKs are synchronous: each call runs in a thread (L{deferToThread}) so
that the reactor keeps serving it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import anthropic
import openai
import pydantic

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall

try:
    from tests._service import CLIENT_KEY, Service, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import (  # type: ignore[no-redef]
        CLIENT_KEY,
        Service,
        start_service,
    )

T = TypeVar("T")

THINKING = ("The user wants ", "a number. ", "42 it is.")
THINKING_TEXT = "".join(THINKING)
SIGNATURE = "sig-EqQBCkgIAxABGAIiQL"
ANSWER = ("The answer", " is 42.")
ANSWER_TEXT = "".join(ANSWER)

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON_CHUNKS = ('{"name": ', '"Ada", "age"', ": 36}")
PERSON = {"name": "Ada", "age": 36}


class Person(pydantic.BaseModel):
    """
    The structured output the tests ask for.
    """

    name: str
    age: int


WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": WEATHER_TOOL_OPENAI["function"]["parameters"],  # type: ignore[index]
}


def in_thread(f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run a blocking SDK call off the reactor thread.
    """
    return deferToThread(f, *args, **kwargs)


def property_types(schema: dict[str, Any]) -> dict[str, str]:
    """
    The type of each property of an object schema (SDKs add titles).
    """
    return {name: p["type"] for name, p in schema["properties"].items()}


def thinking_reply(**kwargs: Any) -> FakeReply:
    """
    A reply that thinks (signed) before it answers.
    """
    kwargs.setdefault("usage", (20, 9))
    kwargs.setdefault("signature", SIGNATURE)
    return FakeReply(ANSWER, thinking=THINKING, **kwargs)


class FakeThinkingTests(TestCase):
    """
    The SDKs read the fake's scripted thinking as they read the providers'.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)

    def anthropic_client(self) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=self.fake.base_url, api_key="k", max_retries=0
        )
        self.addCleanup(client.close)
        return client

    def openai_client(self) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=self.fake.base_url + "/v1", api_key="k", max_retries=0
        )
        self.addCleanup(client.close)
        return client

    async def test_anthropic_whole(self) -> None:
        """
        A whole Messages body: a signed C{thinking} block, then the text.
        """
        self.fake.enqueue(thinking_reply())
        message = await in_thread(
            self.anthropic_client().messages.create,
            model="m",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
        )
        self.assertEqual([b.type for b in message.content], ["thinking", "text"])
        self.assertEqual(message.content[0].thinking, THINKING_TEXT)
        self.assertEqual(message.content[0].signature, SIGNATURE)
        self.assertEqual(message.content[1].text, ANSWER_TEXT)

    async def test_anthropic_stream(self) -> None:
        """
        A Messages stream: C{thinking_delta} events, one C{signature_delta},
        then the text in the next block; the SDK's accumulated message has
        both blocks.
        """
        self.fake.enqueue(thinking_reply(), thinking_reply(signature=None))
        client = self.anthropic_client()

        def run() -> tuple[list[Any], Any]:
            with client.messages.stream(
                model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                events = list(stream)
                return events, stream.get_final_message()

        events, message = await in_thread(run)
        deltas = [e.delta for e in events if e.type == "content_block_delta"]
        self.assertEqual(
            [d.thinking for d in deltas if d.type == "thinking_delta"], list(THINKING)
        )
        self.assertEqual(
            [d.signature for d in deltas if d.type == "signature_delta"], [SIGNATURE]
        )
        self.assertEqual([b.type for b in message.content], ["thinking", "text"])
        self.assertEqual(message.content[0].thinking, THINKING_TEXT)
        self.assertEqual(message.content[0].signature, SIGNATURE)
        self.assertEqual(message.content[1].text, ANSWER_TEXT)

        events, message = await in_thread(run)
        self.assertEqual(message.content[0].signature, "")
        self.assertEqual(message.content[1].text, ANSWER_TEXT)

    async def test_anthropic_stream_tool_after_thinking(self) -> None:
        """
        Thinking, then a tool call: the blocks are numbered in order.
        """
        call = FakeToolCall("toolu_1", "get_weather", ['{"city":', ' "Paris"}'])
        self.fake.enqueue(
            FakeReply(thinking=THINKING, signature=SIGNATURE, tool_calls=[call])
        )
        client = self.anthropic_client()

        def run() -> Any:
            with client.messages.stream(
                model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                return stream.get_final_message()

        message = await in_thread(run)
        self.assertEqual([b.type for b in message.content], ["thinking", "tool_use"])
        self.assertEqual(message.content[1].input, {"city": "Paris"})
        self.assertEqual(message.stop_reason, "tool_use")

    async def test_openai_whole(self) -> None:
        """
        A whole Chat Completions body: C{message.reasoning_content}.
        """
        self.fake.enqueue(thinking_reply())
        completion = await in_thread(
            self.openai_client().chat.completions.create,
            model="m",
            messages=[{"role": "user", "content": "hi"}],
        )
        message = completion.choices[0].message
        self.assertEqual(getattr(message, "reasoning_content", None), THINKING_TEXT)
        self.assertEqual(message.content, ANSWER_TEXT)

    async def test_openai_stream(self) -> None:
        """
        A Chat Completions stream: C{delta.reasoning_content} chunks before
        the content chunks.
        """
        self.fake.enqueue(thinking_reply())
        client = self.openai_client()

        def run() -> list[Any]:
            with client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            ) as stream:
                return list(stream)

        chunks = await in_thread(run)
        kinds = []
        for chunk in chunks:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if getattr(delta, "reasoning_content", None):
                kinds.append(("reasoning", delta.reasoning_content))
            if delta.content:
                kinds.append(("text", delta.content))
        self.assertEqual(
            kinds,
            [("reasoning", t) for t in THINKING] + [("text", t) for t in ANSWER],
        )
        self.assertEqual(chunks[-1].usage.completion_tokens, 9)


class _Gateway:
    """
    A mixin for L{TestCase}: a gateway in front of a fake; the C{model} of
    the subclass names the upstream it reaches (C{"gpt"}: OpenAI format,
    C{"claude"}: Anthropic).
    """

    model: ClassVar[str]
    upstream: ClassVar[str]
    service: Service

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self)

    @property
    def fake(self) -> FakeProvider:
        return self.service.fake

    def sent(self, number: int = -1) -> dict[str, Any]:
        """
        The JSON body of a request the upstream got (the last by default).
        """
        body: dict[str, Any] = self.fake.requests[number].json
        return body


class _OpenAIClient(_Gateway):
    """
    The C{openai} SDK against C{/v1/chat/completions}: C{reasoning_effort}
    and C{response_format}.
    """

    def client(self) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{self.service.url}/v1", api_key=CLIENT_KEY, max_retries=0
        )
        self.addCleanup(client.close)
        return client

    def create(self, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])
        return in_thread(self.client().chat.completions.create, **kwargs)

    def stream(self, **kwargs: Any) -> Deferred[list[Any]]:
        client = self.client()
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])

        def run() -> list[Any]:
            with client.chat.completions.create(stream=True, **kwargs) as stream:
                return list(stream)

        return in_thread(run)

    def check_reasoning_sent(self, effort: str, number: int = -1) -> None:
        """
        The upstream was asked to reason: C{reasoning_effort} as it came to
        an OpenAI-format upstream, thinking to an Anthropic one.
        """
        sent = self.sent(number)
        if self.upstream == "openai":
            self.assertEqual(sent.get("reasoning_effort"), effort)
        else:
            thinking = sent.get("thinking")
            self.assertIsInstance(thinking, dict, sent)
            self.assertIn(thinking["type"], ("enabled", "adaptive"), sent)
            if thinking["type"] == "enabled":
                self.assertLess(thinking["budget_tokens"], sent["max_tokens"])

    def check_schema_sent(self) -> None:
        """
        The upstream was asked for the schema: C{response_format} as it came,
        or Anthropic's C{output_config.format}.
        """
        sent = self.sent()
        if self.upstream == "openai":
            self.assertEqual(sent["response_format"]["type"], "json_schema")
            schema = sent["response_format"]["json_schema"]["schema"]
        else:
            self.assertNotIn("response_format", sent)
            output_format = sent.get("output_config", {}).get("format")
            self.assertIsInstance(output_format, dict, sent)
            self.assertEqual(output_format["type"], "json_schema", sent)
            schema = output_format["schema"]
        self.assertEqual(property_types(schema), {"name": "string", "age": "integer"})

    async def test_reasoning_effort(self) -> None:
        """
        C{reasoning_effort}: the upstream reasons, and the client gets the
        reasoning as C{message.reasoning_content} beside the answer.
        """
        self.fake.enqueue(thinking_reply())
        completion = await self.create(reasoning_effort="low", max_tokens=4096)
        message = completion.choices[0].message
        self.assertEqual(message.content, ANSWER_TEXT)
        self.assertEqual(getattr(message, "reasoning_content", None), THINKING_TEXT)
        self.check_reasoning_sent("low")

    async def test_reasoning_effort_stream(self) -> None:
        """
        C{reasoning_effort}, streaming: C{delta.reasoning_content} chunks
        before the answer.
        """
        self.fake.enqueue(thinking_reply())
        chunks = await self.stream(reasoning_effort="high", max_tokens=32000)
        reasoning = "".join(
            getattr(c.choices[0].delta, "reasoning_content", None) or ""
            for c in chunks
            if c.choices
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(reasoning, THINKING_TEXT)
        self.assertEqual(text, ANSWER_TEXT)
        self.check_reasoning_sent("high")

    async def test_reasoning_tool_round(self) -> None:
        """
        Multi-turn tool use with reasoning: the client sends back the
        assistant message as it got it (with whatever reasoning fields the
        gateway put there) and the tool result; the upstream gets a valid
        second turn: toward Anthropic, either the signed thinking block
        first in the assistant turn or no thinking for that turn.
        """
        call = FakeToolCall("toolu_w1", "get_weather", ['{"city": "Paris"}'])
        self.fake.enqueue(
            FakeReply(
                thinking=THINKING, signature=SIGNATURE, tool_calls=[call], usage=(5, 5)
            ),
            FakeReply(["Sunny."], usage=(9, 2)),
        )
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Paris?"}]
        first = await self.create(
            messages=messages,
            tools=[WEATHER_TOOL_OPENAI],
            reasoning_effort="medium",
            max_tokens=16000,
        )
        assistant = first.choices[0].message
        self.assertEqual(assistant.tool_calls[0].function.name, "get_weather")
        messages.append(assistant.model_dump(exclude_none=True))
        messages.append(
            {
                "role": "tool",
                "tool_call_id": assistant.tool_calls[0].id,
                "content": "22C",
            }
        )
        second = await self.create(
            messages=messages,
            tools=[WEATHER_TOOL_OPENAI],
            reasoning_effort="medium",
            max_tokens=16000,
        )
        self.assertEqual(second.choices[0].message.content, "Sunny.")
        sent = self.sent(1)
        if self.upstream == "anthropic":
            turn = sent["messages"][1]
            self.assertEqual(turn["role"], "assistant")
            kinds = [block["type"] for block in turn["content"]]
            if sent.get("thinking", {}).get("type") in ("enabled", "adaptive"):
                self.assertEqual(kinds[0], "thinking", sent)
                self.assertEqual(turn["content"][0]["signature"], SIGNATURE)
            self.assertIn("tool_use", kinds)
            result = sent["messages"][2]["content"][0]
            self.assertEqual(result["type"], "tool_result")
            self.assertEqual(result["tool_use_id"], "toolu_w1")
        else:
            self.assertEqual(sent["messages"][2]["role"], "tool")
            self.assertEqual(sent["messages"][2]["content"], "22C")

    async def test_json_schema(self) -> None:
        """
        C{response_format} C{json_schema}: the upstream is asked for the
        schema; the client gets the JSON as the content.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(10, 8)))
        completion = await self.create(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON_SCHEMA},
            }
        )
        self.assertEqual(json.loads(completion.choices[0].message.content), PERSON)
        self.check_schema_sent()

    async def test_json_schema_stream(self) -> None:
        """
        C{response_format} C{json_schema}, streaming.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(10, 8)))
        chunks = await self.stream(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON_SCHEMA},
            }
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(json.loads(text), PERSON)
        self.check_schema_sent()

    def json_object_reply(self) -> FakeReply:
        """
        The upstream's answer to a C{json_object} request: the JSON as text
        from an OpenAI-format upstream; from an Anthropic one, which has no
        JSON mode, a call of the tool the gateway forces (its documented
        technique), which the client must get back as text.
        """
        if self.upstream == "openai":
            return FakeReply(PERSON_CHUNKS, usage=(10, 8))
        call = FakeToolCall("toolu_so", "structured_output", list(PERSON_CHUNKS))
        return FakeReply(tool_calls=[call], usage=(10, 8))

    def check_json_object_sent(self) -> None:
        sent = self.sent()
        if self.upstream == "openai":
            self.assertEqual(sent["response_format"], {"type": "json_object"})
        else:
            self.assertNotIn("response_format", sent)
            choice = sent["tool_choice"]
            self.assertEqual(
                (choice["type"], choice["name"]), ("tool", "structured_output")
            )
            self.assertEqual([t["name"] for t in sent["tools"]], ["structured_output"])

    async def test_json_object(self) -> None:
        """
        C{response_format} C{json_object}: the client gets the JSON as the
        content, never a tool call.
        """
        self.fake.enqueue(self.json_object_reply())
        completion = await self.create(
            messages=[{"role": "user", "content": "Ada as JSON, please."}],
            response_format={"type": "json_object"},
        )
        choice = completion.choices[0]
        self.assertEqual(json.loads(choice.message.content), PERSON)
        self.assertFalse(choice.message.tool_calls)
        self.assertEqual(choice.finish_reason, "stop")
        self.check_json_object_sent()

    async def test_json_object_stream(self) -> None:
        """
        C{response_format} C{json_object}, streaming: content deltas only.
        """
        self.fake.enqueue(self.json_object_reply())
        chunks = await self.stream(
            messages=[{"role": "user", "content": "Ada as JSON, please."}],
            response_format={"type": "json_object"},
        )
        choices = [c.choices[0] for c in chunks if c.choices]
        text = "".join(c.delta.content or "" for c in choices)
        self.assertEqual(json.loads(text), PERSON)
        self.assertEqual(
            [c.delta.tool_calls for c in choices if c.delta.tool_calls], []
        )
        self.assertEqual(choices[-1].finish_reason, "stop")
        self.check_json_object_sent()

    async def test_parse(self) -> None:
        """
        C{chat.completions.parse} with a pydantic model (and the older
        C{beta.chat.completions.parse} where this SDK still has it).
        """
        client = self.client()
        parsers = [client.chat.completions.parse]
        beta_chat = getattr(client.beta, "chat", None)
        if beta_chat is not None:
            parsers.append(beta_chat.completions.parse)
        for parse in parsers:
            self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(10, 8)))
            completion = await in_thread(
                parse,
                model=self.model,
                messages=[{"role": "user", "content": "Who?"}],
                response_format=Person,
            )
            self.assertEqual(completion.choices[0].message.parsed, Person(**PERSON))
            self.check_schema_sent()

    async def test_parse_stream(self) -> None:
        """
        C{chat.completions.stream} with a pydantic model: the final
        completion's parsed object.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(10, 8)))
        client = self.client()

        def run() -> Any:
            with client.chat.completions.stream(
                model=self.model,
                messages=[{"role": "user", "content": "Who?"}],
                response_format=Person,
            ) as stream:
                return stream.get_final_completion()

        completion = await in_thread(run)
        self.assertEqual(completion.choices[0].message.parsed, Person(**PERSON))
        self.check_schema_sent()


class _AnthropicClient(_Gateway):
    """
    The C{anthropic} SDK against C{/v1/messages}: C{thinking},
    C{output_config}.
    """

    def client(self) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=self.service.url, api_key=CLIENT_KEY, max_retries=0
        )
        self.addCleanup(client.close)
        return client

    def create(self, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("max_tokens", 4096)
        kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])
        return in_thread(self.client().messages.create, **kwargs)

    def stream(self, **kwargs: Any) -> Deferred[tuple[list[Any], Any]]:
        """
        A streaming call: its events and the SDK's final message.
        """
        client = self.client()
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("max_tokens", 4096)
        kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])

        def run() -> tuple[list[Any], Any]:
            with client.messages.stream(**kwargs) as stream:
                events = list(stream)
                return events, stream.get_final_message()

        return in_thread(run)

    def check_thinking_sent(self, thinking: dict[str, Any]) -> None:
        """
        The upstream was asked to reason: the same C{thinking} to an
        Anthropic upstream, a C{reasoning_effort} to an OpenAI-format one.
        """
        sent = self.sent()
        if self.upstream == "anthropic":
            self.assertEqual(sent["thinking"], thinking)
        else:
            self.assertNotIn("thinking", sent)
            self.assertIn(
                sent.get("reasoning_effort"),
                ("minimal", "low", "medium", "high", "xhigh"),
                sent,
            )

    def check_thinking_block(self, message: Any) -> None:
        """
        The reply's first block is the thinking; signed as the upstream
        signed it when the upstream speaks Anthropic's format.
        """
        self.assertEqual([b.type for b in message.content], ["thinking", "text"])
        self.assertEqual(message.content[0].thinking, THINKING_TEXT)
        if self.upstream == "anthropic":
            self.assertEqual(message.content[0].signature, SIGNATURE)
        self.assertEqual(message.content[1].text, ANSWER_TEXT)

    def check_format_sent(self) -> None:
        """
        The upstream was asked for the schema: C{output_config.format} as it
        came, or C{response_format} C{json_schema}.
        """
        sent = self.sent()
        if self.upstream == "anthropic":
            schema = sent["output_config"]["format"]["schema"]
        else:
            self.assertNotIn("output_config", sent)
            self.assertEqual(sent["response_format"]["type"], "json_schema", sent)
            schema = sent["response_format"]["json_schema"]["schema"]
        self.assertEqual(property_types(schema), {"name": "string", "age": "integer"})

    async def test_thinking_enabled(self) -> None:
        """
        C{thinking} enabled with a budget: the reply opens with the thinking
        block.
        """
        self.fake.enqueue(thinking_reply())
        thinking = {"type": "enabled", "budget_tokens": 2048}
        message = await self.create(thinking=thinking)
        self.check_thinking_block(message)
        self.check_thinking_sent(thinking)

    async def test_thinking_enabled_stream(self) -> None:
        """
        C{thinking} enabled, streaming: C{thinking_delta} events, then the
        text; the SDK's final message holds both blocks.
        """
        self.fake.enqueue(thinking_reply())
        thinking = {"type": "enabled", "budget_tokens": 10000}
        events, message = await self.stream(thinking=thinking, max_tokens=16000)
        deltas = [e.delta for e in events if e.type == "content_block_delta"]
        self.assertEqual(
            "".join(d.thinking for d in deltas if d.type == "thinking_delta"),
            THINKING_TEXT,
        )
        self.check_thinking_block(message)
        self.check_thinking_sent(thinking)

    async def test_thinking_adaptive_stream(self) -> None:
        """
        What Claude Code's default model sends: C{thinking} adaptive and
        C{output_config.effort}.
        """
        self.fake.enqueue(thinking_reply())
        _, message = await self.stream(
            thinking={"type": "adaptive"},
            output_config={"effort": "high"},
            max_tokens=32000,
        )
        self.check_thinking_block(message)
        sent = self.sent()
        if self.upstream == "openai":
            self.assertEqual(sent.get("reasoning_effort"), "high", sent)
            self.assertNotIn("output_config", sent)
        else:
            self.assertEqual(sent["output_config"], {"effort": "high"})

    async def test_thinking_tool_round(self) -> None:
        """
        Multi-turn tool use with thinking: the client sends the thinking
        block back as it got it, with the tool result.
        """
        call = FakeToolCall("call_w1", "get_weather", ['{"city": "Paris"}'])
        self.fake.enqueue(
            FakeReply(
                thinking=THINKING, signature=SIGNATURE, tool_calls=[call], usage=(5, 5)
            ),
            FakeReply(["Sunny."], usage=(9, 2)),
        )
        thinking = {"type": "enabled", "budget_tokens": 4000}
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Paris?"}]
        first = await self.create(
            messages=messages,
            tools=[WEATHER_TOOL_ANTHROPIC],
            thinking=thinking,
            max_tokens=8000,
        )
        self.assertEqual([b.type for b in first.content], ["thinking", "tool_use"])
        messages.append({"role": "assistant", "content": first.content})
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": first.content[1].id,
                        "content": "22C",
                    }
                ],
            }
        )
        second = await self.create(
            messages=messages,
            tools=[WEATHER_TOOL_ANTHROPIC],
            thinking=thinking,
            max_tokens=8000,
        )
        self.assertEqual(second.content[-1].text, "Sunny.")
        sent = self.sent(1)
        if self.upstream == "anthropic":
            self.assertEqual(sent["messages"][1]["content"][0]["signature"], SIGNATURE)
        else:
            self.assertEqual(sent["messages"][-1]["role"], "tool")
            self.assertEqual(sent["messages"][-1]["content"], "22C")

    async def test_output_format(self) -> None:
        """
        C{output_config.format} C{json_schema}: the text is the JSON.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(10, 8)))
        message = await self.create(
            output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}
        )
        self.assertEqual(json.loads(message.content[0].text), PERSON)
        self.check_format_sent()

    async def test_output_format_stream(self) -> None:
        """
        C{output_config.format}, streaming.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(10, 8)))
        _, message = await self.stream(
            output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}
        )
        self.assertEqual(json.loads(message.content[0].text), PERSON)
        self.check_format_sent()

    async def test_parse(self) -> None:
        """
        C{messages.parse} with a pydantic model.
        """
        self.fake.enqueue(FakeReply(PERSON_CHUNKS, usage=(10, 8)))
        message = await in_thread(
            self.client().messages.parse,
            model=self.model,
            max_tokens=1024,
            messages=[{"role": "user", "content": "Who?"}],
            output_format=Person,
        )
        self.assertEqual(message.parsed_output, Person(**PERSON))
        self.check_format_sent()


class OpenAIClientOpenAIUpstreamTests(_OpenAIClient, TestCase):
    model = "gpt"
    upstream = "openai"


class OpenAIClientAnthropicUpstreamTests(_OpenAIClient, TestCase):
    model = "claude"
    upstream = "anthropic"


class AnthropicClientAnthropicUpstreamTests(_AnthropicClient, TestCase):
    model = "claude"
    upstream = "anthropic"


class AnthropicClientOpenAIUpstreamTests(_AnthropicClient, TestCase):
    model = "gpt"
    upstream = "openai"
