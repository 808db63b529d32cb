"""
The streaming hot path of L{pylon_ai._upstream.StreamCall}: a same-format
stream passed through as the upstream's own bytes (whatever the read split),
and the first event of a burst written before the rest is processed.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import treq
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from pylon_ai._errors import ProviderStreamError
from pylon_ai._upstream import StreamCall
from pylon_ai.formats.chat import OpenAIStreamDecoder
from pylon_ai.formats.events import ModelEvent, TextDelta, Usage
from pylon_ai.formats.messages import AnthropicStreamDecoder
from pylon_ai.formats.responses import ResponsesStreamDecoder
from pylon_ai.testing import FakeReply
from tests._service import CLIENT_KEY, Service, start_service


def oa(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def an(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + json.dumps(obj).encode() + b"\n\n"


def oa_chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    return oa(
        {
            "id": "c1",
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": None,
        }
    )


OA_USAGE = oa(
    {
        "id": "c1",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
)


def openai_stream(n: int = 5, usage: bool = True) -> list[bytes]:
    frames = [oa_chunk(f"t{i}") for i in range(n)]
    frames.append(oa_chunk(None, "stop"))
    if usage:
        frames.append(OA_USAGE)
    frames.append(b"data: [DONE]\n\n")
    return frames


def anthropic_stream(n: int = 5) -> list[bytes]:
    return [
        an(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "model": "m",
                    "usage": {"input_tokens": 3, "output_tokens": 1},
                },
            },
        ),
        an(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        an("ping", {"type": "ping"}),
        *(
            an(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": f"t{i}"},
                },
            )
            for i in range(n)
        ),
        an("content_block_stop", {"type": "content_block_stop", "index": 0}),
        an(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 4},
            },
        ),
        an("message_stop", {"type": "message_stop"}),
    ]


class FakeResponse:
    """
    A 200 event-stream response whose body the test feeds by hand.
    """

    code = 200

    def __init__(self) -> None:
        self.headers = Headers({b"content-type": [b"text/event-stream"]})
        self.protocol: Any = None
        self.transport = StringTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class FakeAgent:
    """
    Answers every request with one L{FakeResponse}.
    """

    def __init__(self) -> None:
        self.response = FakeResponse()

    def request(self, *args: object) -> Deferred[FakeResponse]:
        return succeed(self.response)


class Harness:
    """
    One L{StreamCall} on a fake agent, recording what it delivers.
    """

    def __init__(self, decoder: Any, **kwargs: Any) -> None:
        self.events: list[ModelEvent] = []
        #: The model events seen at each flush.
        self.flushes: list[int] = []
        self.agent = FakeAgent()
        self.call = StreamCall(
            Clock(),
            decoder,
            self.events.append,
            label="http://upstream",
            timeout=60,
            on_flush=self.flush,
            **kwargs,
        )
        self.call.start(self.agent, "http://upstream/v1", {}, b"{}")
        self.outcome: list[object] = []
        self.call.deferred.addBoth(self.outcome.append)

    def flush(self) -> bool:
        self.flushes.append(len(self.events))
        return True

    def feed(self, *reads: bytes) -> None:
        for data in reads:
            self.agent.response.protocol.dataReceived(data)

    def end(self) -> None:
        self.agent.response.protocol.connectionLost(Failure(ResponseDone()))


class FirstByteTests(SynchronousTestCase):
    """
    A burst of events in one read: the consumer is flushed after the first
    event, before the rest of the read is decoded.
    """

    def test_translated_burst(self) -> None:
        """
        An Anthropic stream decoded in full (translation): the first flush
        comes after the first event, not after the whole read.
        """
        h = Harness(AnthropicStreamDecoder())
        h.feed(b"".join(anthropic_stream(20)))
        h.end()
        self.assertEqual(h.outcome, [None])
        self.assertEqual(h.flushes[0], 2)  # message_start: start and usage
        self.assertGreater(len(h.events), 20)

    def test_eager_until_written(self) -> None:
        """
        Events that the consumer did not write out (its flush returns a
        false value) keep the flushing eager until one is written.
        """
        h = Harness(OpenAIStreamDecoder())
        written: list[int] = []

        def flush() -> bool:
            written.append(len(h.events))
            return any(type(e) is TextDelta for e in h.events)

        h.call.on_flush = flush
        h.feed(b"".join(openai_stream(10)))
        h.end()
        self.assertEqual(h.outcome, [None])
        # Start + first text: written; then only the flush after the read.
        self.assertEqual(written[:1], [2])
        self.assertEqual(len(written), 2)


def rs(obj: dict[str, Any]) -> bytes:
    return (
        b"event: "
        + obj["type"].encode()
        + b"\ndata: "
        + json.dumps(obj, separators=(",", ":")).encode()
        + b"\n\n"
    )


def responses_stream(n: int = 5) -> list[bytes]:
    response = {"id": "resp_1", "model": "m", "status": "in_progress", "error": None}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    return [
        rs({"type": "response.created", "response": response, "sequence_number": 0}),
        rs({"type": "response.output_item.added", "output_index": 0, "item": item}),
        *(
            rs(
                {
                    "type": "response.output_text.delta",
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": f"t{i}",
                }
            )
            for i in range(n)
        ),
        rs({"type": "response.output_item.done", "output_index": 0, "item": item}),
        rs(
            {
                "type": "response.completed",
                "response": dict(
                    response,
                    status="completed",
                    usage={"input_tokens": 3, "output_tokens": 4},
                ),
            }
        ),
    ]


STREAMS = {
    "openai": (lambda: OpenAIStreamDecoder(light=True), openai_stream(6)),
    "anthropic": (lambda: AnthropicStreamDecoder(light=True), anthropic_stream(6)),
    "responses": (lambda: ResponsesStreamDecoder(light=True), responses_stream(6)),
}


class Relayed(Harness):
    """
    A pass-through L{StreamCall}: what it forwards, and when it committed.
    """

    def __init__(self, fmt: str, drop_usage: bool = False, **kwargs: Any) -> None:
        self.out: list[bytes] = []
        self.counts: list[int] = []
        self.order: list[str] = []
        super().__init__(
            STREAMS[fmt][0](),
            on_bytes=self.forward,
            drop_usage=drop_usage,
            on_start=lambda: self.order.append("start"),
            **kwargs,
        )

    def forward(self, data: bytes, count: int) -> None:
        self.order.append("bytes")
        self.out.append(data)
        self.counts.append(count)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


class PassThroughBytesTests(SynchronousTestCase):
    """
    A same-format stream reaches the consumer as the upstream's own bytes,
    whatever the read split; the books still get what they need.
    """

    def check(self, fmt: str, reads: list[bytes], drop_usage: bool = False) -> Relayed:
        frames = STREAMS[fmt][1]
        h = Relayed(fmt, drop_usage)
        h.feed(*reads)
        h.end()
        self.assertEqual(h.outcome, [None])
        expected = [f for f in frames if not (drop_usage and f == OA_USAGE)]
        self.assertEqual(b"".join(h.out), b"".join(expected))
        self.assertEqual(sum(h.counts), len(expected))
        self.assertEqual(h.order[0], "start")
        self.assertIn(Usage, [type(e) for e in h.events])
        return h

    def test_one_read_per_event(self) -> None:
        """
        One read per event: one write per read, each the event's bytes.
        """
        for fmt, (_, frames) in STREAMS.items():
            h = self.check(fmt, frames)
            self.assertEqual(h.out, frames, fmt)

    def test_one_read(self) -> None:
        """
        The whole stream in one read: the first event at once, the rest in
        one write.
        """
        for fmt, (_, frames) in STREAMS.items():
            h = self.check(fmt, [b"".join(frames)])
            self.assertEqual(h.out[0], frames[0], fmt)
            self.assertEqual(len(h.out), 2, fmt)

    def test_byte_by_byte(self) -> None:
        """
        One byte per read: nothing but complete events is forwarded.
        """
        for fmt, (_, frames) in STREAMS.items():
            data = b"".join(frames)
            h = self.check(fmt, [data[i : i + 1] for i in range(len(data))])
            self.assertEqual(h.out, frames, fmt)

    @settings(max_examples=60, deadline=None)
    @given(
        st.sampled_from(sorted(STREAMS)),
        st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12),
        st.booleans(),
    )
    def test_any_split(self, fmt: str, cuts: list[int], drop: bool) -> None:
        """
        Any split: the same bytes (minus the usage chunk the gateway asked
        for itself, when the client did not).
        """
        data = b"".join(STREAMS[fmt][1])
        self.check(fmt, splits(data, cuts), drop_usage=drop and fmt == "openai")

    @settings(max_examples=40, deadline=None)
    @given(
        st.sampled_from(sorted(STREAMS)),
        st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=8),
        st.lists(st.sampled_from([b"\n", b": keep-alive\n\n"]), max_size=4),
    )
    def test_blank_lines_and_comments(
        self, fmt: str, cuts: list[int], extra: list[bytes]
    ) -> None:
        """
        Extra blank lines and comments between events go out as they came,
        in any split, and the books are kept.
        """
        frames = STREAMS[fmt][1]
        data = frames[0] + b"".join(f + b"".join(extra) for f in frames[1:])
        h = Relayed(fmt)
        h.feed(*splits(data, cuts))
        h.end()
        self.assertEqual(h.outcome, [None])
        # All of it but blank lines alone at the very end (a blank line read
        # on its own is held until an event follows it).
        out = b"".join(h.out)
        self.assertTrue(data.startswith(out))
        self.assertEqual(out.rstrip(b"\n"), data.rstrip(b"\n"))
        self.assertIn(Usage, [type(e) for e in h.events])

    def test_consumer_raises(self) -> None:
        """
        An exception from the consumer of the bytes, on any read, stops the
        upstream and fails the call with it.
        """
        frames = openai_stream(4)
        for bad in range(1, 5):
            h = Relayed("openai")
            calls: list[int] = []

            def forward(
                data: bytes, count: int, bad: int = bad, calls: list[int] = calls
            ) -> None:
                calls.append(count)
                if len(calls) == bad:
                    raise ZeroDivisionError()

            h.agent.response.protocol._on_bytes = forward
            h.feed(*frames)
            self.assertEqual(len(calls), bad)
            assert isinstance(h.outcome[0], Failure)
            self.assertIsInstance(h.outcome[0].value, ZeroDivisionError)
            self.assertEqual(h.agent.response.transport.producerState, "stopped")

    def test_usage_chunk_cut_out(self) -> None:
        """
        The usage chunk the gateway asked for is cut out of the read that
        carries it; its usage still counts.
        """
        frames = STREAMS["openai"][1]
        for reads in (
            [b"".join(frames)],
            frames,
            [b"".join(frames[:-3]), b"".join(frames[-3:])],
        ):
            h = self.check("openai", reads, drop_usage=True)
            self.assertNotIn(b'"choices":[]', b"".join(h.out))
            self.assertIn(Usage(3, 4), h.events)

    def test_error_event_mid_stream(self) -> None:
        """
        An error event after content: what came before it goes out, the
        call fails with the upstream's error, and the error event itself is
        left to the consumer's failure path.
        """
        frames = openai_stream(3)
        error = oa({"error": {"message": "overloaded", "type": "server_error"}})
        h = Relayed("openai")
        h.feed(b"".join(frames[:3]) + error + b"".join(frames[3:]))
        self.assertEqual(len(h.outcome), 1)
        failure = h.outcome[0]
        assert isinstance(failure, Failure)
        self.assertIsInstance(failure.value, ProviderStreamError)
        self.assertIn("overloaded", str(failure.value))
        self.assertEqual(b"".join(h.out), b"".join(frames[:3]))

    def test_error_event_first(self) -> None:
        """
        An error event before anything: nothing is forwarded and the
        attempt is not committed (it may be retried).
        """
        error = an(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
        )
        h = Relayed("anthropic")
        h.feed(error)
        self.assertEqual((h.out, h.order), ([], []))
        assert isinstance(h.outcome[0], Failure)
        self.assertIsInstance(h.outcome[0].value, ProviderStreamError)

    def test_garbled_chunk(self) -> None:
        """
        A content chunk that is not JSON fails the stream, after the events
        before it went out.
        """
        frames = openai_stream(4)
        bad = b'data: {"choices":[{"delta":{"content":"x"}} oops\n\n'
        for reads in (
            [b"".join(frames[:3]), frames[3] + bad + b"".join(frames[4:])],
            [*frames[:4], bad, *frames[4:]],
        ):
            h = Relayed("openai")
            h.feed(*reads)
            assert isinstance(h.outcome[0], Failure)
            self.assertIsInstance(h.outcome[0].value, ProviderStreamError)
            self.assertEqual(b"".join(h.out), b"".join(frames[:4]))

    def test_event_over_bound(self) -> None:
        """
        An event larger than the bound fails the stream, whole or in
        pieces, and stops the upstream.
        """
        frames = openai_stream(2)
        big = oa_chunk("x" * 5000)
        for reads in ([big], [big[:3000], big[3000:]], [b"".join(frames[:2]) + big]):
            h = Relayed("openai", max_event_length=4096)
            h.feed(*reads)
            assert isinstance(h.outcome[0], Failure), reads
            self.assertIsInstance(h.outcome[0].value, ProviderStreamError)
            self.assertIn("larger than 4096", str(h.outcome[0].value))
            self.assertTrue(h.agent.response.transport.producerState == "stopped")

    def test_line_over_bound(self) -> None:
        """
        A line longer than the line bound fails the stream before it ends.
        """
        h = Relayed("openai", max_line_length=1024)
        h.feed(b"data: " + b"x" * 2000)
        assert isinstance(h.outcome[0], Failure)
        self.assertIn("longer than 1024", str(h.outcome[0].value))

    def test_ends_early(self) -> None:
        """
        A stream that ends before its end event is a failure.
        """
        for fmt, (_, frames) in STREAMS.items():
            h = Relayed(fmt)
            h.feed(*frames[:4])
            h.end()
            assert isinstance(h.outcome[0], Failure), fmt
            self.assertIsInstance(h.outcome[0].value, ProviderStreamError)

    def test_crlf(self) -> None:
        """
        CRLF line ends: the events still go out (framed again with LF), and
        the books are kept.
        """
        frames = openai_stream(3)
        h = Relayed("openai")
        h.feed(*(f.replace(b"\n", b"\r\n") for f in frames))
        h.end()
        self.assertEqual(h.outcome, [None])
        self.assertEqual(b"".join(h.out), b"".join(frames))
        self.assertIn(Usage(3, 4), h.events)

    def test_invalid_utf8(self) -> None:
        """
        Bytes that are not UTF-8 reach the consumer as replacement
        characters, in valid UTF-8.
        """
        frames = openai_stream(3)
        bad = frames[1].replace(b"t1", b"t\xff1")
        h = Relayed("openai")
        h.feed(frames[0], bad, *frames[2:])
        h.end()
        self.assertEqual(h.outcome, [None])
        out = b"".join(h.out)
        self.assertIn("t\ufffd1", out.decode("utf-8"))


ROUTES = {
    "openai": ("/v1/chat/completions", "local"),
    "anthropic": ("/v1/messages", "claude"),
    "responses": ("/v1/responses", "gpt"),
}


class GatewayPassThroughTests(TestCase):
    """
    Through the gateway, on a real socket: the client gets the upstream's
    bytes on every same-format route.
    """

    async def stream(
        self, fmt: str, raw: bytes, **extra: Any
    ) -> tuple[Service, int, bytes]:
        service = await start_service(self)
        service.fake.enqueue(FakeReply(raw_body=raw))
        path, model = ROUTES[fmt]
        body: dict[str, Any] = {"model": model, "stream": True, **extra}
        if fmt == "responses":
            body["input"] = "hi"
        else:
            body["messages"] = [{"role": "user", "content": "hi"}]
            body["max_tokens"] = 10
        response = await treq.post(
            service.url + path,
            json=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            persistent=False,
        )
        content = await treq.content(response)
        return service, response.code, content

    def requests(self, service: Service, fmt: str, status: str) -> float | None:
        path, model = ROUTES[fmt]
        return service.gateway.metrics.registry.get_sample_value(
            "pylon_requests_total",
            {"model": model, "route": path, "status": status},
        )

    async def test_same_bytes(self) -> None:
        """
        Each format: the client's body is the upstream's, minus the usage
        chunk of a Chat Completions client that did not ask for usage.
        """
        for fmt, (_, frames) in STREAMS.items():
            service, code, content = await self.stream(fmt, b"".join(frames))
            self.assertEqual(code, 200, fmt)
            expected = [f for f in frames if f != OA_USAGE]
            self.assertEqual(content, b"".join(expected), fmt)
            self.assertEqual(self.requests(service, fmt, "200"), 1.0, fmt)
            tokens = service.gateway.metrics.registry.get_sample_value(
                "pylon_tokens_total",
                {"direction": "out", "model": ROUTES[fmt][1]},
            )
            self.assertEqual(tokens, 4.0, fmt)

    async def test_usage_asked(self) -> None:
        """
        A client that asked for usage gets the usage chunk as it came.
        """
        frames = STREAMS["openai"][1]
        _, code, content = await self.stream(
            "openai",
            b"".join(frames),
            stream_options={"include_usage": True},
        )
        self.assertEqual((code, content), (200, b"".join(frames)))

    async def test_error_mid_stream(self) -> None:
        """
        An error event after content: the client gets the content, then an
        error event, and the stream ends; the request counts as failed.
        """
        frames = openai_stream(3)
        error = oa({"error": {"message": "overloaded", "type": "server_error"}})
        service, code, content = await self.stream(
            "openai", b"".join(frames[:3]) + error
        )
        self.assertEqual(code, 200)
        self.assertTrue(content.startswith(b"".join(frames[:3])))
        tail = content[len(b"".join(frames[:3])) :]
        # The gateway's own error event, in the client's format, with what
        # the provider said (not "the stream broke off").
        self.assertTrue(tail.startswith(b'data: {"error":'), tail)
        self.assertTrue(tail.endswith(b"\n\n"))
        error_body = json.loads(tail[len(b"data: ") :])["error"]
        self.assertEqual(
            error_body["message"],
            "the upstream provider reported an error: overloaded",
        )
        self.assertIsNone(self.requests(service, "openai", "200"))
        self.assertEqual(self.requests(service, "openai", "502"), 1.0)

    async def test_error_mid_stream_anthropic(self) -> None:
        """
        The same on the Anthropic route: an C{event: error} with the
        provider's message follows the content.
        """
        frames = anthropic_stream(3)
        error = an(
            "error",
            {"type": "error", "error": {"type": "api_error", "message": "Boom"}},
        )
        _, code, content = await self.stream("anthropic", b"".join(frames[:4]) + error)
        self.assertEqual(code, 200)
        self.assertTrue(content.startswith(b"".join(frames[:4])))
        tail = content[len(b"".join(frames[:4])) :]
        self.assertTrue(tail.startswith(b"event: error\ndata: "), tail)
        body = json.loads(tail.split(b"data: ", 1)[1])
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], "api_error")
        self.assertEqual(
            body["error"]["message"], "the upstream provider reported an error: Boom"
        )
