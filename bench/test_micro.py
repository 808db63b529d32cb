"""
Micro-benchmarks of the streaming hot path (pytest-benchmark; not part of the
CI test run, which collects tests/ only).

    /work/venv/bin/pip install pytest-benchmark
    python -m pytest bench/test_micro.py --benchmark-columns=mean,median,ops -q

Each benchmark processes one stream of L{EVENTS} text chunks (plus the
stream's framing events), the same bytes bench/upstream.js sends; the time
per event is the mean divided by L{EVENTS} (also in C{extra_info}).  Two
arrivals are measured: the whole stream in one read (a fast upstream) and one
read per event (a slow upstream, where per-read overhead dominates).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest

from pylon_ai._relay import Relay
from pylon_ai._sse import Event, SSEProtocol
from pylon_ai.formats.chat import OpenAIStreamDecoder, OpenAIStreamEncoder
from pylon_ai.formats.messages import AnthropicStreamDecoder, AnthropicStreamEncoder

EVENTS = 200


def _token(i: int) -> str:
    return "Hello" if i == 0 else f" tok{i % 100}"


def openai_frames(n: int = EVENTS, usage: bool = True) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        obj = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    frames = [
        chunk(
            {"role": "assistant", "content": _token(0)}
            if i == 0
            else {"content": _token(i)},
            None,
        )
        for i in range(n)
    ]
    frames.append(chunk({}, "stop"))
    if usage:
        obj = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "m",
            "choices": [],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": n,
                "total_tokens": 10 + n,
            },
        }
        frames.append(
            b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
        )
    frames.append(b"data: [DONE]\n\n")
    return frames


def anthropic_frames(n: int = EVENTS) -> list[bytes]:
    def ev(kind: str, obj: dict[str, Any]) -> bytes:
        return (
            b"event: "
            + kind.encode()
            + b"\ndata: "
            + json.dumps(obj, separators=(",", ":")).encode()
            + b"\n\n"
        )

    frames = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": "m",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        ),
        ev(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ev("ping", {"type": "ping"}),
    ]
    frames += [
        ev(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": _token(i)},
            },
        )
        for i in range(n)
    ]
    frames += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return frames


OPENAI = openai_frames()
ANTHROPIC = anthropic_frames()
ARRIVALS = {"one_read": lambda fr: [b"".join(fr)], "read_per_event": lambda fr: fr}


def _openai_decoder() -> OpenAIStreamDecoder:
    return OpenAIStreamDecoder()


def _openai_light_decoder() -> OpenAIStreamDecoder:
    # The pass-through decoder, where this version of pylon_ai has one.
    if "light" in inspect.signature(OpenAIStreamDecoder).parameters:
        return OpenAIStreamDecoder(light=True)  # type: ignore[call-arg]
    return OpenAIStreamDecoder()


def _feed(reads: list[bytes], on_event: Callable[[Event], object]) -> None:
    proto = SSEProtocol(on_event)
    for data in reads:
        proto.dataReceived(data)
    proto.connectionLost(None)


def _info(benchmark: Any) -> None:
    benchmark.extra_info["events_per_round"] = EVENTS
    benchmark.extra_info["note"] = "time per event = mean / events_per_round"


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_sse_parse(benchmark: Any, arrival: str) -> None:
    """
    SSEProtocol alone: bytes to Event objects.
    """
    reads = ARRIVALS[arrival](OPENAI)
    seen: list[Event] = []

    def run() -> None:
        seen.clear()
        _feed(reads, seen.append)

    _info(benchmark)
    benchmark(run)
    assert len(seen) == len(OPENAI)


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_passthrough_openai(benchmark: Any, arrival: str) -> None:
    """
    Same-format forwarding as it was before L{Relay}: parse, decode for
    bookkeeping (usage, stop), and frame the event's own data again for the
    client, dropping the usage chunk the client did not ask for.
    """
    reads = ARRIVALS[arrival](OPENAI)
    out: list[bytes] = []

    def run() -> None:
        out.clear()
        decoder = _openai_light_decoder()

        def on_event(event: Event) -> None:
            events = list(decoder.feed(event.type, event.data))
            data = event.data
            if '"choices":[]' in data and events:
                return
            out.append(b"data: " + data.encode("utf-8") + b"\n\n")

        _feed(reads, on_event)
        list(decoder.finish() or ())

    _info(benchmark)
    benchmark(run)
    assert out[-1] == b"data: [DONE]\n\n"


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_passthrough_anthropic(benchmark: Any, arrival: str) -> None:
    """
    Same-format forwarding on the Anthropic route, as before L{Relay}.
    """
    reads = ARRIVALS[arrival](ANTHROPIC)
    out: list[bytes] = []

    def run() -> None:
        out.clear()
        decoder = AnthropicStreamDecoder(light=True)

        def on_event(event: Event) -> None:
            list(decoder.feed(event.type, event.data))
            out.append(
                b"event: "
                + event.type.encode("utf-8")
                + b"\ndata: "
                + event.data.encode("utf-8")
                + b"\n\n"
            )

        _feed(reads, on_event)
        list(decoder.finish() or ())

    _info(benchmark)
    benchmark(run)
    assert out[-1].startswith(b"event: message_stop")


def _relay(reads: list[bytes], decoder: Any, out: list[bytes], drop: bool) -> None:
    events: list[Any] = []

    def emit(evs: Any) -> None:
        events.extend(evs)

    relay = Relay(
        decoder,
        lambda data, count: out.append(data),
        on_read=lambda: None,
        on_start=lambda: None,
        emit=emit,
        max_line_length=1 << 20,
        max_event_length=16 << 20,
        drop_usage=drop,
    )
    for data in reads:
        relay.dataReceived(data)
    relay.connectionLost(None)
    list(decoder.finish() or ())


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_relay_openai(benchmark: Any, arrival: str) -> None:
    """
    Same-format forwarding as the gateway does it now (L{Relay}): the
    reads' bytes as they came, scanned for what the books need, the usage
    chunk the client did not ask for cut out.
    """
    reads = ARRIVALS[arrival](OPENAI)
    out: list[bytes] = []

    def run() -> None:
        out.clear()
        _relay(reads, OpenAIStreamDecoder(light=True), out, True)

    _info(benchmark)
    benchmark(run)
    assert out[-1].endswith(b"data: [DONE]\n\n")
    assert b'"choices":[]' not in b"".join(out)


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_relay_anthropic(benchmark: Any, arrival: str) -> None:
    """
    Same-format forwarding on the Anthropic route (L{Relay}).
    """
    reads = ARRIVALS[arrival](ANTHROPIC)
    out: list[bytes] = []

    def run() -> None:
        out.clear()
        _relay(reads, AnthropicStreamDecoder(light=True), out, False)

    _info(benchmark)
    benchmark(run)
    assert b"".join(out) == b"".join(ANTHROPIC)


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_translate_anthropic_upstream_to_openai_client(
    benchmark: Any, arrival: str
) -> None:
    """
    Cross-format: parse, AnthropicStreamDecoder, OpenAIStreamEncoder.
    """
    reads = ARRIVALS[arrival](ANTHROPIC)
    out: list[bytes] = []

    def run() -> None:
        out.clear()
        decoder = AnthropicStreamDecoder()
        encoder = OpenAIStreamEncoder("m", include_usage=False)

        def on_event(event: Event) -> None:
            for e in decoder.feed(event.type, event.data):
                b = encoder.encode(e)
                if b:
                    out.append(b)

        _feed(reads, on_event)
        for e in decoder.finish() or ():
            b = encoder.encode(e)
            if b:
                out.append(b)
        out.append(encoder.finish())

    _info(benchmark)
    benchmark(run)
    assert b"[DONE]" in out[-1]


@pytest.mark.parametrize("arrival", ARRIVALS)
def test_translate_openai_upstream_to_anthropic_client(
    benchmark: Any, arrival: str
) -> None:
    """
    Cross-format: parse, OpenAIStreamDecoder, AnthropicStreamEncoder.
    """
    reads = ARRIVALS[arrival](OPENAI)
    out: list[bytes] = []

    def run() -> None:
        out.clear()
        decoder = _openai_decoder()
        encoder = AnthropicStreamEncoder("m")

        def on_event(event: Event) -> None:
            for e in decoder.feed(event.type, event.data):
                b = encoder.encode(e)
                if b:
                    out.append(b)

        _feed(reads, on_event)
        for e in decoder.finish() or ():
            b = encoder.encode(e)
            if b:
                out.append(b)
        out.append(encoder.finish())

    _info(benchmark)
    benchmark(run)
    assert b"message_stop" in out[-1]
