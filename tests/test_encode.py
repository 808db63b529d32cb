"""
Tests for the stream encoders and whole bodies of L{pylon_ai.formats}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pylon_ai._json import dumps
from pylon_ai.formats._frames import sse_frame
from pylon_ai.formats.canonical import ToolCall
from pylon_ai.formats.chat import OpenAIStreamEncoder, openai_completion_body
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    Stop,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    stop_from_openai,
)
from pylon_ai.formats.messages import AnthropicStreamEncoder, anthropic_message_body

try:
    from tests._fixtures import load_fixture
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _fixtures import load_fixture  # type: ignore[no-redef]


def fixture(name: str) -> dict[str, Any]:
    """
    The expectations (the C{.json} document) of a shared fixture.
    """
    return load_fixture(name)[1]


def parse_sse(data: bytes) -> list[tuple[str, str]]:
    """
    A strict parser for what the encoders produce: LF line ends, every event
    ended by a blank line, C{event} and C{data} fields only.

    @return: C{(event type, data)} pairs.
    """
    assert data.endswith(b"\n\n"), data[-50:]
    events = []
    for block in data[:-2].split(b"\n\n"):
        kind, lines = "message", []
        for line in block.decode("utf-8").split("\n"):
            name, _, value = line.partition(": ")
            if name == "event":
                kind = value
            else:
                assert name == "data", line
                lines.append(value)
        events.append((kind, "\n".join(lines)))
    return events


def payloads(data: bytes) -> list[tuple[str, Any]]:
    """
    The events of a stream with their data parsed as JSON (C{[DONE]} kept).
    """
    return [
        (kind, text if text == "[DONE]" else json.loads(text))
        for kind, text in parse_sse(data)
    ]


def encode_all(
    encoder: AnthropicStreamEncoder | OpenAIStreamEncoder,
    events: list[ModelEvent],
    finish: bool = True,
) -> bytes:
    out = b"".join(encoder.encode(event) for event in events)
    return out + encoder.finish() if finish else out


def strip(value: Any, keys: frozenset[str]) -> Any:
    """
    C{value} without the dict keys in C{keys}, at any depth.
    """
    if isinstance(value, dict):
        return {k: strip(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [strip(v, keys) for v in value]
    return value


class HelperTests(SynchronousTestCase):
    """
    L{sse_frame} and L{dumps}.
    """

    def test_frame(self) -> None:
        self.assertEqual(sse_frame(b"{}"), b"data: {}\n\n")
        self.assertEqual(sse_frame("{}", "ping"), b"event: ping\ndata: {}\n\n")

    def test_multiline(self) -> None:
        """
        Every line end in the data starts a new C{data:} line.
        """
        self.assertEqual(
            sse_frame("a\nb\r\nc\rd", "x"),
            b"event: x\ndata: a\ndata: b\ndata: c\ndata: d\n\n",
        )

    def test_dumps(self) -> None:
        """
        Compact, UTF-8, and a lone surrogate does not break it.
        """
        self.assertEqual(dumps({"a": [1, "é"]}), '{"a":[1,"é"]}'.encode())
        self.assertEqual(dumps("\ud83d"), b'"\\ud83d"')


def anthropic_tool_use_events() -> list[ModelEvent]:
    expected = fixture("anthropic_tool_use")["expected"]
    call = expected["tool_calls"][0]
    events: list[ModelEvent] = [
        MessageStart("msg_014p7gG3wDgGV9EUtLvnow3U", "claude-3-haiku-20240307"),
        Usage(472, 2),
    ]
    events += [TextDelta(chunk) for chunk in expected["text_chunks"]]
    events.append(ToolCallDelta(0, call["id"], call["name"]))
    events += [ToolCallDelta(0, arguments=f) for f in call["arguments_fragments"]]
    events += [Usage(output_tokens=89), Stop("tool_use", "tool_use")]
    return events


class AnthropicStreamEncoderTests(SynchronousTestCase):
    """
    L{AnthropicStreamEncoder}.
    """

    def expected(self, name: str) -> list[tuple[str, Any]]:
        """
        The fixture's events, with the input tokens of C{message_start} in
        C{message_delta} too: the encoder puts them in both, as the API does
        today (the documentation's older example has them only at the start).
        """
        events = [
            (event["type"], json.loads(event["data"]))
            for event in fixture(name)["sse_events"]
            if event["type"] != "ping"
        ]
        start = events[0][1]["message"]["usage"]
        for kind, data in events:
            if kind == "message_delta":
                data["usage"] = {"input_tokens": start["input_tokens"], **data["usage"]}
        return events

    def test_tool_use_fixture(self) -> None:
        """
        The events of the documentation's tool-use stream encode to the same
        events, payload by payload.
        """
        encoder = AnthropicStreamEncoder("unused")
        out = encode_all(encoder, anthropic_tool_use_events())
        self.assertEqual(payloads(out), self.expected("anthropic_tool_use"))

    def test_text_fixture(self) -> None:
        events: list[ModelEvent] = [
            MessageStart("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"),
            Usage(25, 1),
            TextDelta("Hello"),
            TextDelta("!"),
            Usage(output_tokens=15),
            Stop("end_turn"),
        ]
        out = encode_all(AnthropicStreamEncoder("claude-3-7-sonnet-20250219"), events)
        self.assertEqual(payloads(out), self.expected("anthropic_text_basic"))

    def test_exact_bytes(self) -> None:
        """
        The frames are compact JSON, C{event: NAME\\ndata: JSON\\n\\n}.
        """
        encoder = AnthropicStreamEncoder("m", "msg_1")
        out = encode_all(encoder, [TextDelta('a"\n')])
        self.assertEqual(
            out,
            b"event: message_start\n"
            b'data: {"type":"message_start","message":{"id":"msg_1","type":"message",'
            b'"role":"assistant","content":[],"model":"m","stop_reason":null,'
            b'"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
            b"event: content_block_start\n"
            b'data: {"type":"content_block_start","index":0,'
            b'"content_block":{"type":"text","text":""}}\n\n'
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"a\\"\\n"}}\n\n'
            b"event: content_block_stop\n"
            b'data: {"type":"content_block_stop","index":0}\n\n'
            b"event: message_delta\n"
            b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
            b'"stop_sequence":null},"usage":{"output_tokens":0}}\n\n'
            b"event: message_stop\n"
            b'data: {"type":"message_stop"}\n\n',
        )

    def test_blocks_alternate(self) -> None:
        """
        Tool calls and text become consecutive blocks; each is closed before
        the next opens.  A second tool call that starts while the first is
        still open is held back and sent whole when the reply stops.
        """
        events: list[ModelEvent] = [
            ToolCallDelta(0, "t0", "a", '{"x":'),
            ToolCallDelta(0, arguments="1}"),
            ToolCallDelta(1, "t1", "b"),
            TextDelta("after"),
            Stop("tool_use"),
        ]
        got = payloads(encode_all(AnthropicStreamEncoder("m"), events))
        kinds = [(kind, data.get("index")) for kind, data in got]
        self.assertEqual(
            kinds,
            [
                ("message_start", None),
                ("content_block_start", 0),
                ("content_block_delta", 0),
                ("content_block_delta", 0),
                ("content_block_stop", 0),
                ("content_block_start", 1),
                ("content_block_delta", 1),
                ("content_block_stop", 1),
                ("content_block_start", 2),
                ("content_block_stop", 2),
                ("message_delta", None),
                ("message_stop", None),
            ],
        )
        self.assertEqual(got[5][1]["content_block"], {"type": "text", "text": ""})
        self.assertEqual(
            got[8][1]["content_block"],
            {"type": "tool_use", "id": "t1", "name": "b", "input": {}},
        )
        self.assertEqual(got[10][1]["delta"]["stop_reason"], "tool_use")

    def test_interleaved_tool_calls(self) -> None:
        """
        Fragments of parallel tool calls may interleave (OpenAI-style); the
        first call streams, the others are accumulated by index and sent
        whole, in index order, so every call's arguments come out complete.
        """
        events: list[ModelEvent] = [
            ToolCallDelta(0, "a", "fa", '{"p":'),
            ToolCallDelta(2, "c", "fc", '{"r":'),
            ToolCallDelta(1, "b", "fb", '{"q":'),
            ToolCallDelta(0, arguments="1}"),
            ToolCallDelta(1, arguments="2}"),
            ToolCallDelta(2, arguments="3}"),
            Stop("tool_use"),
        ]
        got = payloads(encode_all(AnthropicStreamEncoder("m"), events))
        calls: dict[int, dict[str, Any]] = {}
        for kind, data in got:
            if kind == "content_block_start":
                calls[data["index"]] = dict(data["content_block"], json="")
            elif kind == "content_block_delta":
                calls[data["index"]]["json"] += data["delta"]["partial_json"]
        self.assertEqual(
            [(c["id"], c["name"], json.loads(c["json"])) for c in calls.values()],
            [("a", "fa", {"p": 1}), ("b", "fb", {"q": 2}), ("c", "fc", {"r": 3})],
        )
        self.assertEqual(sorted(calls), [0, 1, 2])

    def test_tool_call_resumed_after_text(self) -> None:
        """
        A tool call that resumes after a text block closed it cannot be
        encoded: Anthropic blocks do not interleave.
        """
        encoder = AnthropicStreamEncoder("m")
        encoder.encode(ToolCallDelta(0, "a", "a"))
        encoder.encode(TextDelta("t"))
        self.assertRaises(ValueError, encoder.encode, ToolCallDelta(0, arguments="x"))

    def test_late_input_tokens(self) -> None:
        """
        Input tokens learnt after C{message_start} ride in C{message_delta}.
        """
        encoder = AnthropicStreamEncoder("m")
        out = encode_all(encoder, [TextDelta("x"), Stop("end_turn"), Usage(7, 3)])
        delta = payloads(out)[-2][1]
        self.assertEqual(delta["usage"], {"input_tokens": 7, "output_tokens": 3})

    def test_error(self) -> None:
        """
        A L{StreamError} is an C{error} event and ends the stream.
        """
        encoder = AnthropicStreamEncoder("m")
        out = encoder.encode(TextDelta("x"))
        out += encoder.encode(StreamError(529, "overloaded_error", "Overloaded"))
        self.assertEqual(
            parse_sse(out)[-1],
            (
                "error",
                '{"type":"error","error":{"type":"overloaded_error",'
                '"message":"Overloaded"}}',
            ),
        )
        self.assertEqual(encoder.finish(), b"")
        self.assertRaises(ValueError, encoder.encode, TextDelta("late"))

    def test_ping(self) -> None:
        encoder = AnthropicStreamEncoder("m")
        self.assertEqual(
            [kind for kind, _ in parse_sse(encoder.ping())], ["message_start", "ping"]
        )
        self.assertEqual(encoder.ping(), b'event: ping\ndata: {"type":"ping"}\n\n')


OPENAI_NOISE = frozenset({"system_fingerprint", "service_tier", "obfuscation"})


class OpenAIStreamEncoderTests(SynchronousTestCase):
    """
    L{OpenAIStreamEncoder}.
    """

    def expected(self, name: str, noise: frozenset[str]) -> list[tuple[str, Any]]:
        return [
            (
                event["type"],
                event["data"]
                if event["data"] == "[DONE]"
                else strip(json.loads(event["data"]), noise),
            )
            for event in fixture(name)["sse_events"]
        ]

    def test_text_fixture(self) -> None:
        expected = fixture("openai_text_basic")["expected"]
        encoder = OpenAIStreamEncoder("gpt-4o-mini", "chatcmpl-123", 1694268190)
        events: list[ModelEvent] = [MessageStart()]
        events += [TextDelta(chunk) for chunk in expected["text_chunks"]]
        events.append(stop_from_openai("stop"))
        self.assertEqual(
            payloads(encode_all(encoder, events)),
            self.expected("openai_text_basic", OPENAI_NOISE),
        )

    def test_usage_fixture(self) -> None:
        """
        With C{include_usage} every chunk carries C{"usage": null} and the
        usage chunk (C{"choices": []}) comes after the finish chunk, before
        C{[DONE]}, even when the usage was known earlier.
        """
        expected = fixture("openai_with_usage")["expected"]
        encoder = OpenAIStreamEncoder("unused", created=1767225600, include_usage=True)
        events: list[ModelEvent] = [
            MessageStart(
                "chatcmpl-SyNtHeTiCUsAgE0000000000001", "gpt-4.1-mini-2025-04-14"
            ),
            Usage(19, 0),
        ]
        events += [TextDelta(chunk) for chunk in expected["text_chunks"]]
        events += [Usage(output_tokens=5), stop_from_openai("stop")]
        noise = OPENAI_NOISE | {
            "refusal",
            "prompt_tokens_details",
            "completion_tokens_details",
        }
        self.assertEqual(
            payloads(encode_all(encoder, events)),
            self.expected("openai_with_usage", noise),
        )

    def test_tool_calls_fixture(self) -> None:
        """
        The first fragment of a call carries its id, type and name; later ones
        only arguments.
        """
        data = fixture("openai_tool_calls")
        events: list[ModelEvent] = [MessageStart(None, "gpt-4o-2024-08-06")]
        for call in data["expected"]["tool_calls"]:
            events.append(ToolCallDelta(call["index"], call["id"], call["name"]))
            events += [
                ToolCallDelta(call["index"], arguments=fragment)
                for fragment in call["arguments_fragments"]
            ]
        events.append(stop_from_openai("tool_calls"))
        got = payloads(encode_all(OpenAIStreamEncoder("m"), events))
        self.assertEqual(
            got[0][1]["choices"][0]["delta"], {"role": "assistant", "content": ""}
        )
        want = [
            json.loads(event["data"])["choices"][0]
            for event in data["sse_events"]
            if event["data"] != "[DONE]"
        ]
        self.assertEqual(
            [chunk["choices"][0]["delta"].get("tool_calls") for _, chunk in got[1:-1]],
            [choice["delta"].get("tool_calls") for choice in want],
        )
        self.assertEqual(got[-2][1]["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(got[-1], ("message", "[DONE]"))
        self.assertEqual(
            {chunk["model"] for _, chunk in got[:-1]}, {"gpt-4o-2024-08-06"}
        )
        self.assertEqual(len({chunk["id"] for _, chunk in got[:-1]}), 1)

    def test_finish_without_stop(self) -> None:
        """
        L{OpenAIStreamEncoder.finish} without a L{Stop} finishes with
        C{"stop"}; without C{include_usage} no usage chunk is sent.
        """
        out = OpenAIStreamEncoder("m").finish()
        got = payloads(out)
        self.assertEqual(len(got), 3)
        self.assertEqual(got[1][1]["choices"][0]["finish_reason"], "stop")
        self.assertNotIn("usage", got[1][1])

    def test_stop_mapping(self) -> None:
        for reason, finish in [
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
            ("end_turn", "stop"),
        ]:
            encoder = OpenAIStreamEncoder("m")
            encoder.start()
            chunk = payloads(encoder.encode(Stop(reason)))[0][1]  # type: ignore[arg-type]
            self.assertEqual(chunk["choices"][0]["finish_reason"], finish)

    def test_error(self) -> None:
        """
        A L{StreamError} is a C{data: {"error": ...}} frame and no C{[DONE]}
        follows.
        """
        encoder = OpenAIStreamEncoder("m", include_usage=True)
        out = encoder.encode(TextDelta("x"))
        out += encoder.encode(StreamError(429, "rate_limit_error", "Slow down"))
        out += encoder.finish()
        self.assertEqual(
            out.split(b"\n\n")[-2],
            b'data: {"error":{"message":"Slow down","type":"rate_limit_error",'
            b'"param":null,"code":"429"}}',
        )
        self.assertNotIn(b"[DONE]", out)


class BodyTests(SynchronousTestCase):
    """
    L{anthropic_message_body} and L{openai_completion_body}.
    """

    call = ToolCall("call_1", "get_weather", '{"city":"Paris"}')

    def test_anthropic(self) -> None:
        body = anthropic_message_body(
            model="m",
            text="hi",
            tool_calls=[self.call],
            usage=Usage(3, 4),
            message_id="x",
        )
        self.assertEqual(
            body,
            {
                "id": "x",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [
                    {"type": "text", "text": "hi"},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 4},
            },
        )

    def test_anthropic_bad_arguments(self) -> None:
        self.assertRaises(
            ValueError,
            anthropic_message_body,
            model="m",
            tool_calls=[ToolCall("a", "b", "[1]")],
        )
        body = anthropic_message_body(model="m", tool_calls=[ToolCall("a", "b")])
        self.assertEqual(body["content"][0]["input"], {})

    def test_openai(self) -> None:
        body = openai_completion_body(
            model="m",
            tool_calls=[self.call],
            usage=Usage(3, 4),
            completion_id="c",
            created=5,
        )
        self.assertEqual(
            body,
            {
                "id": "c",
                "object": "chat.completion",
                "created": 5,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "refusal": None,
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {
                                        "name": "get_weather",
                                        "arguments": '{"city":"Paris"}',
                                    },
                                }
                            ],
                        },
                        "logprobs": None,
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {
                    "prompt_tokens": 3,
                    "completion_tokens": 4,
                    "total_tokens": 7,
                },
            },
        )

    def test_openai_text(self) -> None:
        body = openai_completion_body(model="m", text="hi", stop=Stop("max_tokens"))
        choice = body["choices"][0]
        self.assertEqual(
            choice["message"], {"role": "assistant", "content": "hi", "refusal": None}
        )
        self.assertEqual(choice["finish_reason"], "length")
