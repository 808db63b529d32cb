"""
Tests for the stream decoders of L{pylon_ai.formats.messages} and
L{pylon_ai.formats.chat}, against the provider transcripts in the fixtures.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pylon_ai._errors import ProviderStreamError
from pylon_ai.formats.chat import OpenAIStreamDecoder
from pylon_ai.formats.events import (
    ModelEvent,
    Stop,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    merge_usage,
)
from pylon_ai.formats.messages import AnthropicStreamDecoder
from pylon_ai.sse import Event, SSEProtocol

try:
    from tests._fixtures import load_fixture
except ImportError:  # run from inside tests/
    from _fixtures import load_fixture  # type: ignore[no-redef]

Decoder = AnthropicStreamDecoder | OpenAIStreamDecoder


def events_of(raw: bytes) -> list[Event]:
    got: list[Event] = []
    proto = SSEProtocol(got.append)
    proto.dataReceived(raw)
    proto.connectionLost(None)
    return got


def decode(decoder: Decoder, raw: bytes) -> list[ModelEvent]:
    out: list[ModelEvent] = []
    for event in events_of(raw):
        out.extend(decoder.feed(event.type, event.data))
    out.extend(decoder.finish() or ())
    return out


def summary(events: list[ModelEvent]) -> dict[str, Any]:
    """
    Text, whole tool calls, final usage and stop reason of a reply.
    """
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            entry = calls.setdefault(e.index, ["", "", ""])
            entry[0] = entry[0] or (e.id or "")
            entry[1] = entry[1] or (e.name or "")
            entry[2] += e.arguments
    usage = None
    for e in events:
        if isinstance(e, Usage):
            usage = merge_usage(usage, e)
    stops = [e for e in events if isinstance(e, Stop)]
    return {
        "text": text,
        "tool_calls": [tuple(calls[i]) for i in sorted(calls)],
        "usage": usage,
        "stop": stops[-1].raw if stops else None,
        "stops": len(stops),
    }


class FixtureTests(SynchronousTestCase):
    """
    Every provider transcript decodes to the fixture's expected reply.
    """

    def check(self, name: str, decoder: Decoder) -> None:
        raw, spec = load_fixture(name)
        expected = spec["expected"]
        got = summary(decode(decoder, raw))
        self.assertEqual(got["text"], expected["text"])
        self.assertEqual(
            got["tool_calls"],
            [(t["id"], t["name"], t["arguments_json"]) for t in expected["tool_calls"]],
        )
        for (_, _, arguments), t in zip(
            got["tool_calls"], expected["tool_calls"], strict=True
        ):
            self.assertEqual(json.loads(arguments), json.loads(t["arguments_json"]))
        self.assertEqual(got["stop"], expected["stop_reason"])
        self.assertEqual(got["stops"], 1)
        usage = expected["usage"]
        if usage is None:
            self.assertIsNone(got["usage"])
        else:
            self.assertEqual(
                got["usage"],
                Usage(
                    usage.get("input_tokens", usage.get("prompt_tokens")),
                    usage.get("output_tokens", usage.get("completion_tokens")),
                ),
            )

    def test_anthropic(self) -> None:
        for name in ("anthropic_text_basic", "anthropic_tool_use"):
            self.check(name, AnthropicStreamDecoder())

    def test_openai(self) -> None:
        for name in ("openai_text_basic", "openai_tool_calls", "openai_with_usage"):
            self.check(name, OpenAIStreamDecoder())


class LightDecoderTests(SynchronousTestCase):
    """
    A light decoder (pass-through) keeps the books of a full one: first
    content, usage, stop, errors, completeness; it only skips the content
    it does not need.
    """

    def test_same_books(self) -> None:
        """
        On every transcript the light decoder reports the same usage and
        stop, and the first content, as the full one.
        """
        cases: list[tuple[str, type[AnthropicStreamDecoder | OpenAIStreamDecoder]]] = [
            ("anthropic_text_basic", AnthropicStreamDecoder),
            ("anthropic_tool_use", AnthropicStreamDecoder),
            ("openai_text_basic", OpenAIStreamDecoder),
            ("openai_tool_calls", OpenAIStreamDecoder),
            ("openai_with_usage", OpenAIStreamDecoder),
        ]
        for name, kind in cases:
            raw, _ = load_fixture(name)
            full = decode(kind(), raw)
            light = decode(kind(light=True), raw)
            self.assertEqual(summary(light)["usage"], summary(full)["usage"], name)
            self.assertEqual(summary(light)["stop"], summary(full)["stop"], name)
            first = next(e for e in full if isinstance(e, TextDelta | ToolCallDelta))
            self.assertIn(first, light, name)
            self.assertLess(len(light), len(full), name)

    def test_openai_error_after_content(self) -> None:
        """
        An error object after content began is still seen (vLLM's in-band
        error line), even with a space after the colon.
        """
        for error in (
            '{"error":{"message":"boom","code":500}}',
            '{"error": {"message": "boom", "code": 500}}',
        ):
            decoder = OpenAIStreamDecoder(light=True)
            list(decoder.feed("message", _chunk("hi")))
            list(decoder.feed("message", _chunk("there")))
            out = list(decoder.feed("message", error))
            self.assertEqual(len(out), 1)
            self.assertIsInstance(out[0], StreamError)
            self.assertEqual(out[0].status, 500)  # type: ignore[union-attr]

    def test_openai_usage_and_finish_after_content(self) -> None:
        """
        A finish reason or usage after content began is still parsed,
        however the JSON is spaced; null ones are skipped.
        """
        decoder = OpenAIStreamDecoder(light=True)
        list(decoder.feed("message", _chunk("hi")))
        self.assertEqual(list(decoder.feed("message", _chunk("x"))), [])
        spaced = _chunk("", finish="length").replace('":', '": ')
        self.assertEqual(list(decoder.feed("message", spaced)), [])
        usage = '{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
        self.assertEqual(list(decoder.feed("message", usage)), [Usage(3, 2)])
        self.assertEqual(
            list(decoder.feed("message", "[DONE]")), [Stop("max_tokens", "length")]
        )

    def test_anthropic_error_and_usage_after_content(self) -> None:
        """
        Anthropic errors, usage and the stop come in events of their own
        type, which a light decoder always parses.
        """
        decoder = AnthropicStreamDecoder(light=True)
        delta = (
            '{"type":"content_block_delta","index":0,'
            '"delta":{"type":"text_delta","text":"%s"}}'
        )
        self.assertEqual(
            list(decoder.feed("content_block_delta", delta % "a")), [TextDelta("a")]
        )
        self.assertEqual(list(decoder.feed("content_block_delta", delta % "b")), [])
        out = list(
            decoder.feed(
                "message_delta",
                '{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
                '"usage":{"output_tokens":7}}',
            )
        )
        self.assertEqual(out, [Usage(None, 7)])
        out = list(
            decoder.feed(
                "error",
                '{"type":"error","error":{"type":"overloaded_error","message":"x"}}',
            )
        )
        self.assertEqual(out[0].status, 529)  # type: ignore[union-attr]

    def test_incomplete_stream(self) -> None:
        """
        A light decoder still knows a stream that ended early.
        """
        decoder = OpenAIStreamDecoder(light=True)
        list(decoder.feed("message", _chunk("hi")))
        list(decoder.feed("message", _chunk("there")))
        self.assertRaises(ProviderStreamError, decoder.finish)


def _chunk(text: str, finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [
                {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            ],
            "usage": None,
        },
        separators=(",", ":"),
    )
