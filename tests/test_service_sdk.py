"""
The service with the official C{openai} and C{anthropic} SDKs as clients, over
real loopback sockets, in front of a L{FakeProvider} that speaks the other
(or the same) format.

The SDKs are synchronous: each call runs in a thread (L{deferToThread}) so
that the reactor keeps serving it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import anthropic
import openai

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from pylon_ai.testing import FakeReply, FakeToolCall

try:
    from tests._service import (
        ANTHROPIC_UPSTREAM_KEY,
        CLIENT_KEY,
        OPENAI_UPSTREAM_KEY,
        Service,
        start_service,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import (  # type: ignore[no-redef]
        ANTHROPIC_UPSTREAM_KEY,
        CLIENT_KEY,
        OPENAI_UPSTREAM_KEY,
        Service,
        start_service,
    )

T = TypeVar("T")

UPSTREAM_MODEL = "upstream-model-7"
CHUNKS = ("Hel", "lo, ", "wor", "ld", "!")
TEXT = "".join(CHUNKS)
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
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TOOL_CALL = FakeToolCall(
    "call_w1", "get_weather", ['{"ci', 'ty": "Pa', 'ris", "days"', ": 3}"]
)
TOOL_ARGS = {"city": "Paris", "days": 3}


def in_thread(f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run a blocking SDK call off the reactor thread.
    """
    return deferToThread(f, *args, **kwargs)


class _SDKCase:
    """
    A mixin for L{TestCase}: a gateway in front of a fake; the C{model} of
    the subclass names the upstream it reaches (C{"gpt"}: OpenAI format,
    C{"claude"}: Anthropic).  The mixins are not test cases themselves, so
    that neither pytest nor trial runs them without an upstream.
    """

    model: ClassVar[str]
    upstream: ClassVar[str]
    service: Service

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self)

    @property
    def fake(self) -> Any:
        return self.service.fake

    def upstream_key_check(self) -> None:
        """
        The upstream got the gateway's key for it, never the client's.
        """
        headers = self.fake.requests[0].headers
        if self.upstream == "anthropic":
            self.assertEqual(headers.get("x-api-key"), ANTHROPIC_UPSTREAM_KEY)
            self.assertNotIn("authorization", headers)
        else:
            self.assertEqual(
                headers.get("authorization"), f"Bearer {OPENAI_UPSTREAM_KEY}"
            )
            self.assertNotIn("x-api-key", headers)
        self.assertNotIn(CLIENT_KEY, json.dumps(headers))


class _OpenAIClientTests(_SDKCase):
    """
    The C{openai} SDK against the gateway's C{/v1/chat/completions}.
    """

    def client(self, key: str = CLIENT_KEY) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{self.service.url}/v1", api_key=key, max_retries=0
        )
        self.addCleanup(client.close)
        return client

    def create(self, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])
        return in_thread(self.client().chat.completions.create, **kwargs)

    def stream(self, **kwargs: Any) -> Deferred[list[Any]]:
        """
        A streaming call; all its chunks.
        """
        client = self.client()
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])

        def run() -> list[Any]:
            with client.chat.completions.create(stream=True, **kwargs) as stream:
                return list(stream)

        return in_thread(run)

    async def test_text(self) -> None:
        """
        A non-streaming completion: the text, the upstream's model, the
        stop reason and the usage.
        """
        self.fake.enqueue(FakeReply(CHUNKS, usage=(11, 5), model=UPSTREAM_MODEL))
        completion = await self.create()
        self.assertEqual(completion.choices[0].message.content, TEXT)
        self.assertEqual(completion.choices[0].message.role, "assistant")
        self.assertEqual(completion.choices[0].finish_reason, "stop")
        self.assertEqual(completion.model, UPSTREAM_MODEL)
        self.assertEqual(completion.usage.prompt_tokens, 11)
        self.assertEqual(completion.usage.completion_tokens, 5)
        self.assertEqual(completion.usage.total_tokens, 16)
        self.upstream_key_check()

    async def test_stream_text(self) -> None:
        """
        A stream: the deltas join to the scripted text; without
        C{include_usage} no chunk carries usage.
        """
        self.fake.enqueue(FakeReply(CHUNKS, usage=(11, 5), model=UPSTREAM_MODEL))
        chunks = await self.stream()
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, TEXT)
        self.assertEqual([c.usage for c in chunks], [None] * len(chunks))
        self.assertEqual(
            [c.choices[0].finish_reason for c in chunks if c.choices][-1], "stop"
        )
        self.assertEqual({c.model for c in chunks}, {UPSTREAM_MODEL})
        self.upstream_key_check()

    async def test_stream_usage(self) -> None:
        """
        With C{stream_options.include_usage} the last chunk has the usage and
        no choices.
        """
        self.fake.enqueue(FakeReply(CHUNKS, usage=(11, 5)))
        chunks = await self.stream(stream_options={"include_usage": True})
        with_usage = [c for c in chunks if c.usage is not None]
        self.assertEqual(len(with_usage), 1)
        self.assertEqual(with_usage[0].choices, [])
        self.assertEqual(with_usage[0].usage.prompt_tokens, 11)
        self.assertEqual(with_usage[0].usage.completion_tokens, 5)
        self.assertIs(chunks[-1], with_usage[0])
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, TEXT)

    async def test_upstream_request(self) -> None:
        """
        The upstream gets its own model name, the client's messages (a system
        message in the middle included), and a stream with usage.
        """
        self.fake.enqueue(FakeReply(["ok"]))
        await self.create(
            messages=[
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "second"},
            ],
            max_tokens=77,
        )
        sent = self.fake.requests[0].json
        # A same-format non-streaming request goes upstream unstreamed.
        self.assertEqual(sent["stream"], self.upstream != "openai")
        if self.upstream == "anthropic":
            self.assertEqual(self.fake.requests[0].path, "/v1/messages")
            self.assertEqual(sent["model"], "claude-up")
            self.assertEqual(sent["system"], "Be brief.")
            self.assertEqual(sent["max_tokens"], 77)
            self.assertEqual(
                [(m["role"], _text(m["content"])) for m in sent["messages"]],
                [("user", "first"), ("assistant", "reply"), ("user", "second")],
            )
            self.assertNotIn("stream_options", sent)
        else:
            self.assertEqual(self.fake.requests[0].path, "/v1/chat/completions")
            self.assertEqual(sent["model"], "gpt-up")
            self.assertNotIn("stream_options", sent)
            self.assertEqual(
                [(m["role"], m["content"]) for m in sent["messages"]],
                [
                    ("user", "first"),
                    ("assistant", "reply"),
                    ("system", "Be brief."),
                    ("user", "second"),
                ],
            )
        self.upstream_key_check()

    async def test_stream_upstream_asked_for_usage(self) -> None:
        """
        A stream that did not ask for usage still asks the upstream for it
        (when the upstream speaks OpenAI's format).
        """
        self.fake.enqueue(FakeReply(["ok"], usage=(3, 1)))
        await self.stream()
        sent = self.fake.requests[0].json
        if self.upstream == "openai":
            self.assertEqual(sent["stream_options"], {"include_usage": True})
        else:
            self.assertNotIn("stream_options", sent)
        self.assertEqual(sent["stream"], True)

    async def test_tool_call(self) -> None:
        """
        A scripted tool call with fragmented arguments arrives whole.
        """
        self.fake.enqueue(FakeReply(["Let me check."], tool_calls=[TOOL_CALL]))
        completion = await self.create(tools=[WEATHER_TOOL_OPENAI])
        choice = completion.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        self.assertEqual(choice.message.content, "Let me check.")
        self.assertEqual(len(choice.message.tool_calls), 1)
        call = choice.message.tool_calls[0]
        self.assertEqual(call.id, "call_w1")
        self.assertEqual(call.type, "function")
        self.assertEqual(call.function.name, "get_weather")
        self.assertEqual(json.loads(call.function.arguments), TOOL_ARGS)
        tools = self.fake.requests[0].json["tools"]
        if self.upstream == "anthropic":
            self.assertEqual(tools, [WEATHER_TOOL_ANTHROPIC])
        else:
            self.assertEqual(tools, [WEATHER_TOOL_OPENAI])

    async def test_stream_tool_call(self) -> None:
        """
        A streamed tool call: the deltas carry the id and name once, and the
        argument fragments join to the scripted JSON.
        """
        self.fake.enqueue(FakeReply(tool_calls=[TOOL_CALL]))
        chunks = await self.stream(tools=[WEATHER_TOOL_OPENAI])
        calls: dict[int, dict[str, str]] = {}
        deltas = [
            delta
            for chunk in chunks
            if chunk.choices
            for delta in chunk.choices[0].delta.tool_calls or []
        ]
        for delta in deltas:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "args": ""})
            entry["id"] += delta.id or ""
            if delta.function is not None:
                entry["name"] += delta.function.name or ""
                entry["args"] += delta.function.arguments or ""
        self.assertEqual(list(calls), [0])
        self.assertEqual(calls[0]["id"], "call_w1")
        self.assertEqual(calls[0]["name"], "get_weather")
        self.assertEqual(json.loads(calls[0]["args"]), TOOL_ARGS)
        self.assertEqual(
            [c.choices[0].finish_reason for c in chunks if c.choices][-1],
            "tool_calls",
        )

    async def test_length(self) -> None:
        """
        Anthropic's C{max_tokens} stop is OpenAI's C{length}, streaming and
        not.
        """
        self.fake.enqueue(
            FakeReply(["cut"], stop_reason="max_tokens"),
            FakeReply(["cut"], stop_reason="max_tokens"),
        )
        completion = await self.create()
        self.assertEqual(completion.choices[0].finish_reason, "length")
        chunks = await self.stream()
        self.assertEqual(
            [c.choices[0].finish_reason for c in chunks if c.choices][-1], "length"
        )

    async def test_wrong_key(self) -> None:
        """
        A wrong client key is an C{AuthenticationError}; nothing goes
        upstream.
        """
        client = self.client("sk-wrong")
        with self.assertRaises(openai.AuthenticationError) as caught:
            await in_thread(
                client.chat.completions.create,
                model=self.model,
                messages=[{"role": "user", "content": "hi"}],
            )
        self.assertEqual(caught.exception.status_code, 401)
        self.assertEqual(self.fake.requests, [])

    async def test_unknown_model(self) -> None:
        """
        An unknown model is a C{NotFoundError}.
        """
        with self.assertRaises(openai.NotFoundError) as caught:
            await self.create(model="no-such-model")
        self.assertEqual(caught.exception.status_code, 404)
        self.assertEqual(self.fake.requests, [])

    async def test_bad_request(self) -> None:
        """
        A message without a role is a C{BadRequestError}.
        """
        with self.assertRaises(openai.BadRequestError) as caught:
            await self.create(messages=[{"content": "no role"}])
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(self.fake.requests, [])

    async def test_upstream_500(self) -> None:
        """
        An upstream 500 is a 502 for the client.
        """
        self.fake.enqueue(FakeReply(status=500))
        with self.assertRaises(openai.InternalServerError) as caught:
            await self.create()
        self.assertEqual(caught.exception.status_code, 502)

    async def test_upstream_429(self) -> None:
        """
        An upstream 429 is a C{RateLimitError}.
        """
        self.fake.enqueue(FakeReply(status=429, retry_after=7))
        with self.assertRaises(openai.RateLimitError) as caught:
            await self.create()
        self.assertEqual(caught.exception.status_code, 429)

    async def test_stream_error(self) -> None:
        """
        A provider error inside the upstream's 200 stream raises from the
        SDK's iteration, after the text that came before it.
        """
        self.fake.enqueue(FakeReply(["partial"], stream_error=True))
        client = self.client()
        seen: list[str] = []

        def run() -> None:
            stream = client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
            )
            with stream:
                for chunk in stream:
                    if chunk.choices:
                        seen.append(chunk.choices[0].delta.content or "")

        with self.assertRaises(openai.APIError):
            await in_thread(run)
        self.assertEqual("".join(seen), "partial")

    async def test_stream_drop(self) -> None:
        """
        An upstream connection lost mid-stream raises from the SDK's
        iteration rather than ending the stream cleanly.
        """
        self.fake.enqueue(FakeReply(["a", "b", "c"], drop_after=2))
        with self.assertRaises(openai.APIError):
            await self.stream()


class OpenAIToOpenAITests(_OpenAIClientTests, TestCase):
    model = "gpt"
    upstream = "openai"


class OpenAIToAnthropicTests(_OpenAIClientTests, TestCase):
    model = "claude"
    upstream = "anthropic"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


class _AnthropicClientTests(_SDKCase):
    """
    The C{anthropic} SDK against the gateway's C{/v1/messages}.
    """

    def client(self, key: str = CLIENT_KEY) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=self.service.url, api_key=key, max_retries=0
        )
        self.addCleanup(client.close)
        return client

    def _defaults(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("max_tokens", 100)
        kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])
        return kwargs

    def create(self, **kwargs: Any) -> Deferred[Any]:
        return in_thread(self.client().messages.create, **self._defaults(kwargs))

    def stream(self, **kwargs: Any) -> Deferred[tuple[list[str], Any]]:
        """
        A streaming call with C{messages.stream}: its text deltas and its
        final message.
        """
        client = self.client()
        kwargs = self._defaults(kwargs)

        def run() -> tuple[list[str], Any]:
            with client.messages.stream(**kwargs) as stream:
                texts = list(stream.text_stream)
                return texts, stream.get_final_message()

        return in_thread(run)

    async def test_text(self) -> None:
        """
        A non-streaming message: the text, the upstream's model, the stop
        reason and the usage.
        """
        self.fake.enqueue(FakeReply(CHUNKS, usage=(11, 5), model=UPSTREAM_MODEL))
        message = await self.create()
        self.assertEqual([block.type for block in message.content], ["text"])
        self.assertEqual(message.content[0].text, TEXT)
        self.assertEqual(message.role, "assistant")
        self.assertEqual(message.stop_reason, "end_turn")
        self.assertEqual(message.model, UPSTREAM_MODEL)
        self.assertEqual(message.usage.input_tokens, 11)
        self.assertEqual(message.usage.output_tokens, 5)
        self.upstream_key_check()

    async def test_stream_text(self) -> None:
        """
        A stream: the text deltas join to the scripted text; the final
        message has the stop reason, the usage and the upstream's model.
        """
        self.fake.enqueue(FakeReply(CHUNKS, usage=(11, 5), model=UPSTREAM_MODEL))
        texts, message = await self.stream()
        self.assertEqual("".join(texts), TEXT)
        self.assertEqual(message.content[0].text, TEXT)
        self.assertEqual(message.stop_reason, "end_turn")
        self.assertEqual(message.model, UPSTREAM_MODEL)
        self.assertEqual(message.usage.input_tokens, 11)
        self.assertEqual(message.usage.output_tokens, 5)
        self.upstream_key_check()

    async def test_upstream_request(self) -> None:
        """
        The upstream gets its own model name, the system prompt and the
        messages; an OpenAI upstream is asked for usage in the stream.
        """
        self.fake.enqueue(FakeReply(["ok"]))
        await self.create(
            system="Be brief.",
            messages=[
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": "second"},
            ],
            max_tokens=77,
        )
        sent = self.fake.requests[0].json
        # A same-format non-streaming request goes upstream unstreamed.
        self.assertEqual(sent["stream"], self.upstream != "anthropic")
        if self.upstream == "anthropic":
            self.assertEqual(self.fake.requests[0].path, "/v1/messages")
            self.assertEqual(sent["model"], "claude-up")
            self.assertEqual(sent["system"], "Be brief.")
            self.assertEqual(sent["max_tokens"], 77)
            self.assertEqual(
                [(m["role"], _text(m["content"])) for m in sent["messages"]],
                [("user", "first"), ("assistant", "reply"), ("user", "second")],
            )
        else:
            self.assertEqual(self.fake.requests[0].path, "/v1/chat/completions")
            self.assertEqual(sent["model"], "gpt-up")
            self.assertEqual(sent["stream_options"], {"include_usage": True})
            self.assertEqual(sent["max_completion_tokens"], 77)
            self.assertNotIn("max_tokens", sent)
            self.assertEqual(
                [(m["role"], _text(m["content"])) for m in sent["messages"]],
                [
                    ("system", "Be brief."),
                    ("user", "first"),
                    ("assistant", "reply"),
                    ("user", "second"),
                ],
            )
        self.upstream_key_check()

    async def test_tool_call(self) -> None:
        """
        A scripted tool call with fragmented arguments arrives as a whole
        C{tool_use} block.
        """
        self.fake.enqueue(FakeReply(["Let me check."], tool_calls=[TOOL_CALL]))
        message = await self.create(tools=[WEATHER_TOOL_ANTHROPIC])
        self.assertEqual(message.stop_reason, "tool_use")
        self.assertEqual([b.type for b in message.content], ["text", "tool_use"])
        self.assertEqual(message.content[0].text, "Let me check.")
        block = message.content[1]
        self.assertEqual(block.id, "call_w1")
        self.assertEqual(block.name, "get_weather")
        self.assertEqual(block.input, TOOL_ARGS)
        tools = self.fake.requests[0].json["tools"]
        if self.upstream == "anthropic":
            self.assertEqual(tools, [WEATHER_TOOL_ANTHROPIC])
        else:
            self.assertEqual(tools, [WEATHER_TOOL_OPENAI])

    async def test_stream_tool_call(self) -> None:
        """
        A streamed tool call: C{get_final_message} has the whole call.
        """
        self.fake.enqueue(FakeReply(tool_calls=[TOOL_CALL], usage=(9, 4)))
        texts, message = await self.stream(tools=[WEATHER_TOOL_ANTHROPIC])
        self.assertEqual(texts, [])
        self.assertEqual(message.stop_reason, "tool_use")
        self.assertEqual([b.type for b in message.content], ["tool_use"])
        block = message.content[0]
        self.assertEqual(block.id, "call_w1")
        self.assertEqual(block.name, "get_weather")
        self.assertEqual(block.input, TOOL_ARGS)
        self.assertEqual(message.usage.output_tokens, 4)

    async def test_tool_result_round_trip(self) -> None:
        """
        A conversation with a tool call and its result reaches the upstream
        in its own format.
        """
        self.fake.enqueue(FakeReply(["Sunny."]))
        message = await self.create(
            tools=[WEATHER_TOOL_ANTHROPIC],
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_w1",
                            "name": "get_weather",
                            "input": TOOL_ARGS,
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_w1",
                            "content": "sunny, 21C",
                        }
                    ],
                },
            ],
        )
        self.assertEqual(message.content[0].text, "Sunny.")
        sent = self.fake.requests[0].json["messages"]
        if self.upstream == "openai":
            self.assertEqual(sent[1]["role"], "assistant")
            call = sent[1]["tool_calls"][0]
            self.assertEqual(call["id"], "call_w1")
            self.assertEqual(call["function"]["name"], "get_weather")
            self.assertEqual(json.loads(call["function"]["arguments"]), TOOL_ARGS)
            self.assertEqual(sent[2]["role"], "tool")
            self.assertEqual(sent[2]["tool_call_id"], "call_w1")
            self.assertEqual(_text(sent[2]["content"]), "sunny, 21C")
        else:
            self.assertEqual(sent[1]["content"][0]["input"], TOOL_ARGS)
            self.assertEqual(sent[2]["content"][0]["tool_use_id"], "call_w1")

    async def test_max_tokens(self) -> None:
        """
        OpenAI's C{length} is Anthropic's C{max_tokens}, streaming and not.
        """
        self.fake.enqueue(
            FakeReply(["cut"], stop_reason="max_tokens"),
            FakeReply(["cut"], stop_reason="max_tokens"),
        )
        message = await self.create()
        self.assertEqual(message.stop_reason, "max_tokens")
        _, message = await self.stream()
        self.assertEqual(message.stop_reason, "max_tokens")

    async def test_wrong_key(self) -> None:
        """
        A wrong client key is an C{AuthenticationError}.
        """
        client = self.client("sk-wrong")
        with self.assertRaises(anthropic.AuthenticationError) as caught:
            await in_thread(
                client.messages.create,
                model=self.model,
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
            )
        self.assertEqual(caught.exception.status_code, 401)
        self.assertEqual(self.fake.requests, [])

    async def test_unknown_model(self) -> None:
        """
        An unknown model is a C{NotFoundError}.
        """
        with self.assertRaises(anthropic.NotFoundError) as caught:
            await self.create(model="no-such-model")
        self.assertEqual(caught.exception.status_code, 404)

    async def test_bad_request(self) -> None:
        """
        An empty message list is a C{BadRequestError}.
        """
        with self.assertRaises(anthropic.BadRequestError) as caught:
            await self.create(messages=[])
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(self.fake.requests, [])

    async def test_upstream_500(self) -> None:
        """
        An upstream 500 is a 502 for the client.
        """
        self.fake.enqueue(FakeReply(status=500))
        with self.assertRaises(anthropic.APIStatusError) as caught:
            await self.create()
        self.assertEqual(caught.exception.status_code, 502)
        self.assertIsInstance(caught.exception, anthropic.InternalServerError)

    async def test_upstream_429(self) -> None:
        """
        An upstream 429 is a C{RateLimitError}.
        """
        self.fake.enqueue(FakeReply(status=429, retry_after=7))
        with self.assertRaises(anthropic.RateLimitError) as caught:
            await self.create()
        self.assertEqual(caught.exception.status_code, 429)

    async def test_stream_error(self) -> None:
        """
        A provider error inside the upstream's 200 stream raises from the
        SDK's iteration, after the text that came before it.
        """
        self.fake.enqueue(FakeReply(["partial"], stream_error=True))
        client = self.client()
        seen: list[str] = []

        def run() -> None:
            with client.messages.stream(
                model=self.model,
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
            ) as stream:
                for text in stream.text_stream:
                    seen.append(text)

        with self.assertRaises((anthropic.APIStatusError, anthropic.APIError)):
            await in_thread(run)
        self.assertEqual("".join(seen), "partial")

    async def test_stream_drop(self) -> None:
        """
        An upstream connection lost mid-stream raises from the SDK's
        iteration rather than ending the stream cleanly.
        """
        self.fake.enqueue(FakeReply(["a", "b", "c"], drop_after=2))
        with self.assertRaises((anthropic.APIStatusError, anthropic.APIError)):
            await self.stream()


class AnthropicToAnthropicTests(_AnthropicClientTests, TestCase):
    model = "claude"
    upstream = "anthropic"


class AnthropicToOpenAITests(_AnthropicClientTests, TestCase):
    model = "gpt"
    upstream = "openai"


class MockModelTests(_SDKCase, TestCase):
    """
    The built-in C{mock} model through both SDKs.
    """

    model = "mock"
    upstream = "mock"
    said = "Hello from the pylon_ai mock model. You said: hi there"

    async def test_openai(self) -> None:
        client = openai.OpenAI(
            base_url=f"{self.service.url}/v1", api_key=CLIENT_KEY, max_retries=0
        )
        self.addCleanup(client.close)
        messages = [{"role": "user", "content": "hi there"}]
        completion = await in_thread(
            client.chat.completions.create, model="mock", messages=messages
        )
        self.assertEqual(completion.choices[0].message.content, self.said)
        self.assertEqual(completion.choices[0].finish_reason, "stop")
        self.assertEqual(completion.model, "pylon-mock-1")
        self.assertEqual(completion.usage.prompt_tokens, 2)
        self.assertEqual(completion.usage.completion_tokens, 10)

        def run() -> list[Any]:
            with client.chat.completions.create(
                model="mock",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            ) as stream:
                return list(stream)

        chunks = await in_thread(run)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, self.said)
        self.assertEqual(chunks[-1].usage.completion_tokens, 10)
        self.assertEqual(self.fake.requests, [])

    async def test_anthropic(self) -> None:
        client = anthropic.Anthropic(
            base_url=self.service.url, api_key=CLIENT_KEY, max_retries=0
        )
        self.addCleanup(client.close)
        messages = [{"role": "user", "content": "hi there"}]
        message = await in_thread(
            client.messages.create, model="mock", max_tokens=100, messages=messages
        )
        self.assertEqual(message.content[0].text, self.said)
        self.assertEqual(message.stop_reason, "end_turn")
        self.assertEqual(message.model, "pylon-mock-1")

        def run() -> tuple[str, Any]:
            with client.messages.stream(
                model="mock", max_tokens=3, messages=messages
            ) as stream:
                return "".join(stream.text_stream), stream.get_final_message()

        text, final = await in_thread(run)
        self.assertEqual(text, "Hello from the")
        self.assertEqual(final.stop_reason, "max_tokens")
        self.assertEqual(final.usage.output_tokens, 3)
        self.assertEqual(self.fake.requests, [])
