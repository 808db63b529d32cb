"""
What the library and the gateway buffer from an upstream is bounded: one
event of an event stream (L{SSEProtocol}'s C{max_event_length}), and a reply
collected for a non-streaming request (C{max_reply_bytes}).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pylon_ai import AiMessage, AiProxyPlugin, ProviderStreamError
from pylon_ai.sse import (
    DEFAULT_MAX_EVENT_LENGTH,
    Event,
    EventTooLong,
    LineTooLong,
    SSEProtocol,
)
from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall

try:
    from tests._service import CLIENT_KEY
    from tests.test_service_http import CHAT, MESSAGES, _HTTPCase, within
except ImportError:  # run from inside tests/
    from _service import CLIENT_KEY  # type: ignore[no-redef]
    from test_service_http import (  # type: ignore[no-redef]
        CHAT,
        MESSAGES,
        _HTTPCase,
        within,
    )

BOUND = 4096


def padded_stream() -> bytes:
    """
    An OpenAI-format stream whose first event is valid JSON spread over a
    hundred C{data:} lines of about 1 KB (blank padding between tokens).
    """
    chunk = (
        b'{"id": "c1", "object": "chat.completion.chunk", "model": "m", '
        b'"choices": [{"index": 0, "delta": {"content": "hi"}, '
        b'"finish_reason": "stop"}]'
    )
    padding = (b"data: " + b" " * 1000 + b"\n") * 100
    return b"data: " + chunk + b"\n" + padding + b"data: }\n\ndata: [DONE]\n\n"


def parser(bound: int = BOUND) -> tuple[SSEProtocol, list[Event], StringTransport]:
    events: list[Event] = []
    proto = SSEProtocol(events.append, max_line_length=1024, max_event_length=bound)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, events, transport


class EventBoundTests(SynchronousTestCase):
    """
    L{SSEProtocol} fails the stream when one event's lines together pass
    C{max_event_length}, each line being under the line bound.
    """

    def test_default(self) -> None:
        self.assertEqual(DEFAULT_MAX_EVENT_LENGTH, 16 * 1024 * 1024)
        self.assertEqual(
            SSEProtocol(lambda e: None).max_event_length, DEFAULT_MAX_EVENT_LENGTH
        )

    def test_many_data_lines(self) -> None:
        """
        Data lines that never end the event, fed one read each: the stream
        fails with L{EventTooLong}, naming the bound, the transport is told
        to stop, and no event is dispatched.
        """
        proto, events, transport = parser()
        line = b"data: " + b"x" * 100 + b"\n"
        for _ in range(100):
            proto.dataReceived(line)
        failure = self.failureResultOf(proto.done, EventTooLong)
        self.assertIn(str(BOUND), str(failure.value))
        self.assertEqual(transport.producerState, "stopped")
        self.assertEqual(events, [])
        proto.dataReceived(b"\n")  # nothing more is parsed
        self.assertEqual(events, [])

    def test_one_read(self) -> None:
        """
        The same lines in a single read.
        """
        proto, events, _ = parser()
        proto.dataReceived((b"data: " + b"x" * 100 + b"\n") * 100 + b"\n")
        self.failureResultOf(proto.done, EventTooLong)
        self.assertEqual(events, [])

    def test_empty_data_lines(self) -> None:
        """
        C{data} fields with no value count too: each adds a line end.
        """
        proto, _, _ = parser()
        proto.dataReceived(b"data\n" * 2000)
        self.failureResultOf(proto.done, EventTooLong)

    def test_events_under_bound(self) -> None:
        """
        The bound is per event: many events, each under it, all arrive.
        """
        proto, events, _ = parser()
        event = (b"data: " + b"y" * 500 + b"\n") * 4 + b"\n"
        for _ in range(50):
            proto.dataReceived(event)
        proto.dataReceived(event * 50)
        proto.connectionLost(None)
        self.assertIsNone(self.successResultOf(proto.done))
        self.assertEqual(len(events), 100)
        self.assertEqual(len(events[0].data), 2003)

    def test_not_a_line_error(self) -> None:
        """
        L{EventTooLong} is its own error, not L{LineTooLong}.
        """
        self.assertFalse(issubclass(EventTooLong, LineTooLong))


class PluginEventBoundTests(TestCase):
    """
    The library's calls fail with a L{ProviderStreamError} on an event past
    the plugin's C{max_event_length}.
    """

    timeout = 15

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        from twisted.internet import reactor

        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)

    async def test_event_too_long(self) -> None:
        """
        The padded event is fine under the default bound and fails past a
        smaller one, naming it.
        """
        plugins = [
            AiProxyPlugin.custom(
                self.fake.base_url, "k", http_client=self.fake.http_client(), **options
            )
            for options in ({}, {"max_event_length": 65536})
        ]
        reply = FakeReply(
            raw_body=padded_stream(), headers={"content-type": "text/event-stream"}
        )
        self.fake.enqueue(reply, reply)
        self.assertEqual(await plugins[0].completion([AiMessage.user("hi")]), "hi")
        error = await self.assertFailure(
            plugins[1].completion([AiMessage.user("hi")]), ProviderStreamError
        )
        self.assertIn("65536", error.message)


def _request(route: str, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    if route == MESSAGES:
        body["max_tokens"] = 10
    return body


class GatewayBoundTests(_HTTPCase):
    """
    The gateway's bounds: C{max_event_bytes} on each upstream event,
    C{max_reply_bytes} on a reply it collects for a non-streaming request.
    """

    server = {
        "api_keys": [CLIENT_KEY],
        "max_event_bytes": 65536,
        "max_reply_bytes": 32768,
    }

    def assert_error(self, route: str, content: bytes) -> str:
        body = json.loads(content)
        if route == CHAT:
            self.assertEqual(body["error"]["type"], "upstream_error")
        else:
            self.assertEqual(body["type"], "error")
            self.assertEqual(body["error"]["type"], "api_error")
        return str(body["error"]["message"])

    async def test_event_too_long(self) -> None:
        """
        One upstream event past C{max_event_bytes}: a 502.
        """
        for route in (CHAT, MESSAGES):
            self.fake.enqueue(
                FakeReply(
                    raw_body=padded_stream(),
                    headers={"content-type": "text/event-stream"},
                )
            )
            status, _, content = await self.post(route, _request(route, "local", True))
            self.assertEqual(status, 502, route)
            self.assert_error(route, content)

    async def test_reply_too_large(self) -> None:
        """
        A non-streaming reply whose text passes C{max_reply_bytes}: a 502 in
        the caller's format naming the bound, and the upstream connection is
        closed (the upstream would otherwise keep it open: it stalls).  A
        same-format reply is the upstream's whole body, refused likewise.
        """
        big = b'{"pad": "' + b"x" * 40 * 1024 + b'"}'
        for route, model in [(CHAT, "gpt"), (MESSAGES, "claude"), (CHAT, "claude")]:
            translated = (route == CHAT) != (model == "gpt")
            if translated:
                self.fake.enqueue(FakeReply(chunks=["x" * 1024] * 40, stall_after=40))
            else:
                self.fake.enqueue(FakeReply(raw_body=big))
            status, _, content = await self.post(route, _request(route, model, False))
            self.assertEqual(status, 502, route)
            message = self.assert_error(route, content)
            self.assertIn("32768", message)
            if translated:
                await within(self.fake.requests[-1].disconnected)

    async def test_tool_arguments_too_large(self) -> None:
        """
        Tool-call arguments count towards the bound too (in a reply
        collected from a translated stream).
        """
        fragments = ['{"a": "'] + ["y" * 1024] * 40 + ['"}']
        self.fake.enqueue(
            FakeReply(
                tool_calls=[FakeToolCall("c1", "f", fragments)],
                stall_after=len(fragments),
            )
        )
        status, _, content = await self.post(CHAT, _request(CHAT, "claude", False))
        self.assertEqual(status, 502)
        self.assert_error(CHAT, content)
        await within(self.fake.requests[-1].disconnected)

    async def test_under_bound(self) -> None:
        """
        A reply under the bound is answered as before; a streamed reply is
        not collected, so the bound does not apply to it.
        """
        self.fake.enqueue(
            FakeReply(chunks=["x" * 1024] * 20),
            FakeReply(chunks=["x" * 1024] * 40),
        )
        status, _, content = await self.post(CHAT, _request(CHAT, "gpt", False))
        self.assertEqual(status, 200)
        text = json.loads(content)["choices"][0]["message"]["content"]
        self.assertEqual(len(text), 20 * 1024)
        status, _, content = await self.post(CHAT, _request(CHAT, "gpt", True))
        self.assertEqual(status, 200)
        self.assertIn(b"[DONE]", content)
