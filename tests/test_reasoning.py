"""
Reasoning and structured output translated by the gateway (issue 9): the
official SDKs as clients, a L{FakeProvider} upstream of the other format
scripted with thinking, signatures and JSON, and the bodies the upstream got.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from pylon_ai.formats.canonical import STRUCTURED_OUTPUT_TOOL
from pylon_ai.testing import FakeReply, FakeToolCall

try:
    from tests._service import CLIENT_KEY, Service, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import (  # type: ignore[no-redef]
        CLIENT_KEY,
        Service,
        start_service,
    )

T = TypeVar("T")

THINKING = ("Paris is ", "in France.")
THINKING_TEXT = "".join(THINKING)
SIGNATURE = "sig-EqQBCkgIAxABGAIiQL"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}
JSON_CHUNKS = ('{"name"', ': "Ada"}')


def in_thread(f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run a blocking SDK call off the reactor thread.
    """
    return deferToThread(f, *args, **kwargs)


class _Translated(TestCase):
    service: Service

    async def setUp(self) -> None:  # type: ignore[override]
        self.service = await start_service(self)

    def sent(self, number: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = self.service.fake.requests[number].json
        return body


class OpenAIClientAnthropicUpstreamTests(_Translated):
    """
    The C{openai} SDK asks for model C{claude}, whose upstream speaks
    Anthropic's Messages.
    """

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.service.url + "/v1", api_key=CLIENT_KEY, max_retries=0
        )

    def create(self, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("model", "claude")
        kwargs.setdefault("messages", [{"role": "user", "content": "Paris?"}])
        return in_thread(self.client().chat.completions.create, **kwargs)

    def stream(self, **kwargs: Any) -> Deferred[list[Any]]:
        client = self.client()
        kwargs.setdefault("model", "claude")
        kwargs.setdefault("messages", [{"role": "user", "content": "Paris?"}])

        def run() -> list[Any]:
            with client.chat.completions.create(stream=True, **kwargs) as stream:
                return list(stream)

        return in_thread(run)

    async def test_reasoning_effort_is_a_budget(self) -> None:
        """
        C{reasoning_effort} becomes C{thinking} with the budget of that
        effort level; the thinking comes back as C{reasoning_content} and
        the signed block as C{thinking_blocks}.
        """
        self.service.fake.enqueue(
            FakeReply(["Yes."], thinking=THINKING, signature=SIGNATURE)
        )
        reply = await self.create(reasoning_effort="medium", max_tokens=16000)
        self.assertEqual(
            self.sent()["thinking"], {"type": "enabled", "budget_tokens": 8192}
        )
        message = reply.choices[0].message
        self.assertEqual(message.content, "Yes.")
        extra = message.model_extra
        self.assertEqual(extra["reasoning_content"], THINKING_TEXT)
        self.assertEqual(
            extra["thinking_blocks"],
            [{"type": "thinking", "thinking": THINKING_TEXT, "signature": SIGNATURE}],
        )

    async def test_reasoning_stream(self) -> None:
        """
        Streamed thinking arrives as C{delta.reasoning_content} before the
        text, and its signature as a C{thinking_blocks} delta holding the
        whole signed block.
        """
        self.service.fake.enqueue(
            FakeReply(["Yes", "."], thinking=THINKING, signature=SIGNATURE)
        )
        chunks = await self.stream(reasoning_effort="low", max_tokens=16000)
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        reasoning = [
            d.model_extra["reasoning_content"]
            for d in deltas
            if d.model_extra.get("reasoning_content")
        ]
        self.assertEqual(reasoning, list(THINKING))
        blocks = [b for d in deltas for b in d.model_extra.get("thinking_blocks") or []]
        self.assertEqual(
            blocks,
            [{"type": "thinking", "thinking": THINKING_TEXT, "signature": SIGNATURE}],
        )
        first_text = next(i for i, d in enumerate(deltas) if d.content)
        last_reasoning = max(
            i for i, d in enumerate(deltas) if d.model_extra.get("thinking_blocks")
        )
        self.assertLess(last_reasoning, first_text)
        self.assertEqual("".join(d.content or "" for d in deltas), "Yes.")

    async def _tool_round(self, stream: bool) -> None:
        call = FakeToolCall("toolu_w1", "get_weather", ['{"city": "Paris"}'])
        self.service.fake.enqueue(
            FakeReply(thinking=THINKING, signature=SIGNATURE, tool_calls=[call]),
            FakeReply(["Sunny."]),
        )
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Paris?"}]
        options = {
            "tools": [WEATHER],
            "reasoning_effort": "medium",
            "max_tokens": 16000,
        }
        if stream:
            # What a client keeps of a stream: the deltas' fields, joined.
            deltas = [
                c.choices[0].delta
                for c in await self.stream(messages=messages, **options)
                if c.choices
            ]
            calls = [t for d in deltas for t in d.tool_calls or []]
            assistant: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0].id,
                        "type": "function",
                        "function": {
                            "name": calls[0].function.name,
                            "arguments": "".join(
                                t.function.arguments or "" for t in calls
                            ),
                        },
                    }
                ],
                "thinking_blocks": [
                    b
                    for d in deltas
                    for b in d.model_extra.get("thinking_blocks") or []
                ],
            }
        else:
            first = await self.create(messages=messages, **options)
            assistant = first.choices[0].message.model_dump(exclude_none=True)
        call_id = assistant["tool_calls"][0]["id"]
        messages.append(assistant)
        messages.append({"role": "tool", "tool_call_id": call_id, "content": "22C"})
        second = await self.create(messages=messages, **options)
        self.assertEqual(second.choices[0].message.content, "Sunny.")
        sent = self.sent(1)
        self.assertEqual(sent["thinking"]["type"], "enabled")
        turn = sent["messages"][1]
        self.assertEqual(turn["role"], "assistant")
        self.assertEqual(
            turn["content"][0],
            {"type": "thinking", "thinking": THINKING_TEXT, "signature": SIGNATURE},
        )
        self.assertEqual(turn["content"][1]["type"], "tool_use")
        self.assertEqual(turn["content"][1]["id"], "toolu_w1")
        result = sent["messages"][2]["content"][0]
        self.assertEqual(
            (result["type"], result["tool_use_id"]), ("tool_result", "toolu_w1")
        )

    async def test_tool_round_signed_thinking_back(self) -> None:
        """
        The assistant message as the SDK gave it, sent back with the tool
        result, reaches the upstream with the signed thinking block first in
        the assistant turn, so Anthropic accepts the next turn with thinking.
        """
        await self._tool_round(stream=False)

    async def test_tool_round_signed_thinking_back_stream(self) -> None:
        """
        The same from a streamed first turn: the C{thinking_blocks} of the
        deltas are what the client sends back.
        """
        await self._tool_round(stream=True)

    async def test_json_schema_is_output_config(self) -> None:
        """
        C{response_format} C{json_schema} becomes C{output_config.format}.
        """
        self.service.fake.enqueue(FakeReply(JSON_CHUNKS))
        reply = await self.create(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": SCHEMA},
            }
        )
        self.assertEqual(
            self.sent()["output_config"]["format"],
            {"type": "json_schema", "schema": SCHEMA},
        )
        self.assertEqual(json.loads(reply.choices[0].message.content), {"name": "Ada"})

    def forced_reply(self) -> FakeReply:
        # Anthropic's answer to the forced tool: a call whose input is the JSON.
        call = FakeToolCall("toolu_s1", STRUCTURED_OUTPUT_TOOL, list(JSON_CHUNKS))
        return FakeReply(tool_calls=[call], stop_reason="tool_use")

    def check_forced(self) -> None:
        sent = self.sent()
        self.assertEqual(
            sent["tool_choice"], {"type": "tool", "name": STRUCTURED_OUTPUT_TOOL}
        )
        self.assertEqual([t["name"] for t in sent["tools"]], [STRUCTURED_OUTPUT_TOOL])

    async def test_json_object_forced_tool(self) -> None:
        """
        C{json_object}, which Anthropic lacks, goes up as a forced tool; the
        client gets the tool's input as JSON text, ending with C{stop}.
        """
        self.service.fake.enqueue(self.forced_reply())
        reply = await self.create(response_format={"type": "json_object"})
        self.check_forced()
        choice = reply.choices[0]
        self.assertEqual(json.loads(choice.message.content), {"name": "Ada"})
        self.assertIsNone(choice.message.tool_calls)
        self.assertEqual(choice.finish_reason, "stop")

    async def test_json_object_forced_tool_stream(self) -> None:
        """
        Streamed, the forced tool's argument fragments are content deltas,
        and the finish reason is C{stop}.
        """
        self.service.fake.enqueue(self.forced_reply())
        chunks = await self.stream(response_format={"type": "json_object"})
        self.check_forced()
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        self.assertFalse([d for d in deltas if d.tool_calls])
        text = "".join(d.content or "" for d in deltas)
        self.assertEqual(json.loads(text), {"name": "Ada"})
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
        self.assertEqual([r for r in reasons if r], ["stop"])

    async def test_cache_usage(self) -> None:
        """
        A translated whole reply keeps the upstream's cache counts:
        Anthropic's cache reads are OpenAI's cached prompt tokens, and every
        prompt token is in C{prompt_tokens}.
        """
        body = (
            'event: message_start\ndata: {"type":"message_start","message":'
            '{"id":"msg_1","type":"message","role":"assistant","content":[],'
            '"model":"claude-up","stop_reason":null,"stop_sequence":null,'
            '"usage":{"input_tokens":3,"cache_read_input_tokens":100,'
            '"cache_creation_input_tokens":20,"output_tokens":1}}}\n\n'
            'event: content_block_start\ndata: {"type":"content_block_start",'
            '"index":0,"content_block":{"type":"text","text":""}}\n\n'
            'event: content_block_delta\ndata: {"type":"content_block_delta",'
            '"index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
            'event: content_block_stop\ndata: {"type":"content_block_stop",'
            '"index":0}\n\n'
            'event: message_delta\ndata: {"type":"message_delta","delta":'
            '{"stop_reason":"end_turn","stop_sequence":null},'
            '"usage":{"output_tokens":5}}\n\n'
            'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )
        self.service.fake.enqueue(
            FakeReply(
                raw_body=body.encode(),
                headers={"content-type": "text/event-stream"},
            )
        )
        reply = await self.create()
        self.assertEqual(reply.choices[0].message.content, "Hi")
        self.assertEqual(reply.usage.prompt_tokens, 123)
        self.assertEqual(reply.usage.completion_tokens, 5)
        self.assertEqual(reply.usage.prompt_tokens_details.cached_tokens, 100)


class AnthropicClientOpenAIUpstreamTests(_Translated):
    """
    The C{anthropic} SDK asks for model C{gpt}, whose upstream speaks Chat
    Completions.
    """

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.service.url, api_key=CLIENT_KEY, max_retries=0
        )

    def create(self, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("model", "gpt")
        kwargs.setdefault("max_tokens", 4096)
        kwargs.setdefault("messages", [{"role": "user", "content": "Paris?"}])
        return in_thread(self.client().messages.create, **kwargs)

    def stream(self, **kwargs: Any) -> Deferred[tuple[list[Any], Any]]:
        client = self.client()
        kwargs.setdefault("model", "gpt")
        kwargs.setdefault("max_tokens", 4096)
        kwargs.setdefault("messages", [{"role": "user", "content": "Paris?"}])

        def run() -> tuple[list[Any], Any]:
            with client.messages.stream(**kwargs) as stream:
                events = list(stream)
                return events, stream.get_final_message()

        return in_thread(run)

    async def test_output_config_is_response_format(self) -> None:
        """
        C{output_config.format} becomes C{response_format} C{json_schema}.
        """
        self.service.fake.enqueue(FakeReply(JSON_CHUNKS))
        reply = await self.create(
            output_config={"format": {"type": "json_schema", "schema": SCHEMA}}
        )
        response_format = self.sent()["response_format"]
        self.assertEqual(response_format["type"], "json_schema")
        self.assertEqual(response_format["json_schema"]["schema"], SCHEMA)
        self.assertEqual(json.loads(reply.content[0].text), {"name": "Ada"})

    async def test_thinking_stream(self) -> None:
        """
        An upstream's C{reasoning_content} deltas reach an Anthropic client
        as a thinking block before the text block; C{message_start} and
        C{message_delta} both carry the input tokens.
        """
        self.service.fake.enqueue(
            FakeReply(["Yes", "."], thinking=THINKING, usage=(11, 7))
        )
        events, final = await self.stream(
            thinking={"type": "enabled", "budget_tokens": 2048}
        )
        self.assertEqual(self.sent()["reasoning_effort"], "low")
        self.assertEqual([b.type for b in final.content], ["thinking", "text"])
        self.assertEqual(final.content[0].thinking, THINKING_TEXT)
        self.assertEqual(final.content[1].text, "Yes.")
        self.assertEqual(final.usage.input_tokens, 11)
        self.assertEqual(final.usage.output_tokens, 7)
        delta = next(e for e in events if e.type == "message_delta")
        self.assertEqual(delta.usage.input_tokens, 11)

    async def test_thinking_whole(self) -> None:
        """
        A whole translated reply carries the reasoning as a thinking block.
        """
        self.service.fake.enqueue(FakeReply(["Yes."], thinking=THINKING))
        reply = await self.create(thinking={"type": "enabled", "budget_tokens": 2048})
        self.assertEqual([b.type for b in reply.content], ["thinking", "text"])
        self.assertEqual(reply.content[0].thinking, THINKING_TEXT)
