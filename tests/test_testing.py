"""
Tests for L{pylon_ai.testing}: the fake provider, over real loopback sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall


class Body(Protocol):
    """
    Collect a response body, and let a test wait for parts of it.
    """

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None
        self.done: Deferred[None] = Deferred()
        self._waits: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        waits, self._waits = self._waits, []
        for predicate, d in waits:
            if predicate(self.data):
                d.callback(self.data)
            else:
                self._waits.append((predicate, d))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason
        for _, d in self._waits:
            d.errback(AssertionError(f"body ended first: {self.data!r}"))
        self._waits = []
        self.done.callback(None)

    def until(self, predicate: Callable[[bytes], bool]) -> Deferred[bytes]:
        """
        Fire once the body received so far satisfies C{predicate}.
        """
        if predicate(self.data):
            return succeed(self.data)
        d: Deferred[bytes] = Deferred()
        self._waits.append((predicate, d))
        return d

    def abort(self) -> None:
        """
        Close the connection from the client side, as a cancelled call does.
        """
        assert self.transport is not None
        self.transport.stopProducing()  # type: ignore[attr-defined]


def events(data: bytes) -> list[tuple[str | None, Any]]:
    """
    The C{(event name, data)} of each SSE event, data parsed as JSON.
    """
    out: list[tuple[str | None, Any]] = []
    for block in data.decode("utf-8").split("\n\n"):
        if not block:
            continue
        name = None
        lines = []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            else:
                lines.append(value)
        text = "\n".join(lines)
        out.append((name, text if text == "[DONE]" else json.loads(text)))
    return out


def anthropic_text(data: bytes) -> str:
    return "".join(
        e["delta"]["text"]
        for name, e in events(data)
        if name == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )


def openai_text(data: bytes) -> str:
    return "".join(
        (e["choices"][0]["delta"].get("content") or "")
        for _, e in events(data)
        if isinstance(e, dict) and e.get("choices")
    )


class FakeProviderTests(TestCase):
    """
    L{FakeProvider} over plain HTTP.
    """

    tls = False
    timeout = 15

    async def start(self, **kwargs: Any) -> FakeProvider:
        from twisted.internet import reactor

        self.reactor: IReactorTCP = reactor
        fake = FakeProvider(self.reactor, tls=self.tls, **kwargs)
        await fake.start()
        self.addCleanup(fake.stop)
        self.fake = fake
        self.client: HTTPClient = fake.http_client()
        return fake

    def request(
        self, path: str, body: dict[str, Any], method: str = "POST"
    ) -> Deferred[IResponse]:
        return self.client.request(  # type: ignore[return-value]
            method,
            self.fake.base_url + path,
            json=body,
            headers=Headers({"x-api-key": ["sk-test"]}),
            unbuffered=True,
        )

    async def body(self, response: IResponse) -> Body:
        body = Body()
        response.deliverBody(body)
        await body.done
        return body

    async def test_anthropic_stream(self) -> None:
        """
        A streaming request to C{/v1/messages} gets Anthropic's event stream,
        and the request is recorded.
        """
        fake = await self.start()
        fake.enqueue(FakeReply(chunks=["Hel", "lo"], usage=(10, 2)))
        response = await self.request(
            "/v1/messages", {"model": "claude-x", "stream": True, "messages": []}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"),
            ["text/event-stream; charset=utf-8"],
        )
        body = await self.body(response)
        assert body.reason is not None
        body.reason.trap(ResponseDone)
        got = events(body.data)
        self.assertEqual(
            [name for name, _ in got],
            ["message_start", "content_block_start"]
            + ["content_block_delta"] * 2
            + ["content_block_stop", "message_delta", "message_stop"],
        )
        self.assertEqual(anthropic_text(body.data), "Hello")
        self.assertEqual(got[0][1]["message"]["model"], "claude-x")
        self.assertEqual(got[0][1]["message"]["usage"]["input_tokens"], 10)
        self.assertEqual(got[-2][1]["usage"], {"output_tokens": 2})
        self.assertEqual(got[-2][1]["delta"]["stop_reason"], "end_turn")
        [recorded] = fake.requests
        self.assertEqual((recorded.method, recorded.path), ("POST", "/v1/messages"))
        self.assertEqual(recorded.headers["x-api-key"], "sk-test")
        self.assertEqual(recorded.json["model"], "claude-x")
        self.assertTrue(recorded.stream)
        await recorded.finished
        self.assertFalse(recorded.disconnected.called)

    async def test_openai_stream_tools_usage(self) -> None:
        """
        A streaming request to C{/v1/chat/completions} gets OpenAI chunks:
        text, tool-call fragments, C{tool_calls} finish, the usage chunk
        when asked for, C{[DONE]}.
        """
        fake = await self.start()
        fake.enqueue(
            FakeReply(
                chunks=["Let me look."],
                tool_calls=[FakeToolCall("call_1", "lookup", ['{"q":', '"x"}'])],
                usage=(7, 5),
                model="gpt-upstream",
            )
        )
        response = await self.request(
            "/v1/chat/completions",
            {"model": "gpt", "stream": True, "stream_options": {"include_usage": True}},
        )
        body = await self.body(response)
        got = [data for _, data in events(body.data)]
        self.assertEqual(got[-1], "[DONE]")
        self.assertEqual(
            got[-2]["usage"],
            {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
        )
        self.assertEqual(got[-2]["choices"], [])
        self.assertEqual(got[-3]["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(openai_text(body.data), "Let me look.")
        calls = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in got[:-1]
            if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
        ]
        self.assertEqual(calls[0]["id"], "call_1")
        self.assertEqual(calls[0]["function"]["name"], "lookup")
        self.assertEqual(
            "".join(c["function"]["arguments"] for c in calls), '{"q":"x"}'
        )
        self.assertEqual({c["model"] for c in got[:-1]}, {"gpt-upstream"})

    async def test_whole_bodies(self) -> None:
        """
        Without C{"stream": true} the reply is a whole JSON body, in the
        format of the path; a custom path speaks OpenAI's format.
        """
        fake = await self.start()
        reply = FakeReply(
            chunks=["a", "b"],
            tool_calls=[FakeToolCall("t1", "f", ['{"k"', ":1}"])],
            usage=(1, 2),
        )
        fake.enqueue(reply, reply)
        response = await self.request("/v1/messages", {"model": "m"})
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json"]
        )
        anthropic = json.loads((await self.body(response)).data)
        self.assertEqual(
            anthropic["content"],
            [
                {"type": "text", "text": "ab"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"k": 1}},
            ],
        )
        self.assertEqual(anthropic["stop_reason"], "tool_use")
        self.assertEqual(anthropic["usage"], {"input_tokens": 1, "output_tokens": 2})
        response = await self.request("/custom/generate", {"model": "m"})
        openai = json.loads((await self.body(response)).data)
        self.assertEqual(openai["object"], "chat.completion")
        self.assertEqual(openai["choices"][0]["message"]["content"], "ab")
        self.assertEqual(
            openai["choices"][0]["message"]["tool_calls"][0]["function"],
            {"name": "f", "arguments": '{"k":1}'},
        )
        self.assertEqual(openai["usage"]["total_tokens"], 3)

    async def test_queue_then_default(self) -> None:
        """
        Queued replies are served in order, then the default reply.
        """
        fake = await self.start(default_reply=FakeReply(chunks=["default"]))
        fake.enqueue(FakeReply(chunks=["one"]), FakeReply(chunks=["two"]))
        texts = []
        for _ in range(3):
            response = await self.request(
                "/v1/chat/completions", {"model": "m", "stream": True}
            )
            texts.append(openai_text((await self.body(response)).data))
        self.assertEqual(texts, ["one", "two", "default"])

    async def test_status_errors(self) -> None:
        """
        A non-200 reply is an error body in the shape of the path's format,
        with C{retry-after} and extra headers.
        """
        fake = await self.start()
        limited = FakeReply(status=429, retry_after=3, headers={"x-extra": "1"})
        fake.enqueue(limited, limited)
        response = await self.request("/v1/messages", {"model": "m", "stream": True})
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["3"])
        self.assertEqual(response.headers.getRawHeaders("x-extra"), ["1"])
        self.assertEqual(
            json.loads((await self.body(response)).data),
            {
                "type": "error",
                "error": {"type": "rate_limit_error", "message": limited.message},
            },
        )
        response = await self.request("/v1/chat/completions", {"model": "m"})
        error = json.loads((await self.body(response)).data)["error"]
        self.assertEqual(error["type"], "rate_limit_error")
        self.assertEqual(error["message"], limited.message)

    async def test_bad_requests(self) -> None:
        """
        A body that is not a JSON object gets a 400, another method a 405;
        neither consumes a queued reply.
        """
        fake = await self.start()
        fake.enqueue(FakeReply(chunks=["kept"]))
        response: IResponse = await self.client.post(
            fake.base_url + "/v1/messages", data=b"{", unbuffered=True
        )
        self.assertEqual(response.code, 400)
        await self.body(response)
        response = await self.client.get(fake.base_url + "/v1/models")
        self.assertEqual(response.code, 405)
        await self.body(response)
        response = await self.request("/v1/chat/completions", {"stream": True})
        self.assertEqual(openai_text((await self.body(response)).data), "kept")
        self.assertEqual(len(fake.requests), 3)

    async def test_stream_errors(self) -> None:
        """
        C{stream_error} ends a 200 stream with the format's error event; the
        OpenAI-style one is followed by C{[DONE]}, as vLLM does.
        """
        fake = await self.start()
        failing = FakeReply(chunks=["x"], stream_error=True, message="busy")
        fake.enqueue(failing, failing)
        response = await self.request("/v1/messages", {"model": "m", "stream": True})
        got = events((await self.body(response)).data)
        self.assertEqual(
            got[-1],
            (
                "error",
                {
                    "type": "error",
                    "error": {"type": "overloaded_error", "message": "busy"},
                },
            ),
        )
        response = await self.request(
            "/v1/chat/completions", {"model": "m", "stream": True}
        )
        got = events((await self.body(response)).data)
        self.assertEqual(got[-1], (None, "[DONE]"))
        self.assertEqual(got[-2][1]["error"]["message"], "busy")
        self.assertEqual(got[-2][1]["error"]["type"], "overloaded_error")
        self.assertNotIn("finish_reason", json.dumps(got[-2][1]))

    async def test_raw_body(self) -> None:
        fake = await self.start()
        raw = b"event: message_start\ndata: {not json\n\n"
        fake.enqueue(FakeReply(raw_body=raw, headers={"content-type": "text/plain"}))
        response = await self.request("/v1/messages", {"stream": True})
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain"])
        body = await self.body(response)
        self.assertEqual(body.data, raw)
        assert body.reason is not None
        body.reason.trap(ResponseDone)

    async def test_drop_after(self) -> None:
        """
        C{drop_after} aborts the connection after that many chunks: the
        client sees a failure, not a clean end, and no C{disconnected}.
        """
        fake = await self.start()
        fake.enqueue(FakeReply(chunks=["a", "b", "c"], drop_after=2))
        response = await self.request("/v1/messages", {"stream": True})
        body = await self.body(response)
        assert body.reason is not None
        self.assertTrue(body.reason.check(ResponseFailed), body.reason)
        self.assertEqual(
            anthropic_text(body.data.rsplit(b"\n\n", 1)[0] + b"\n\n"), "ab"
        )
        self.assertNotIn(b"message_stop", body.data)
        self.assertFalse(fake.requests[0].disconnected.called)
        self.assertFalse(fake.requests[0].finished.called)

    async def test_drop_whole_body(self) -> None:
        fake = await self.start()
        fake.enqueue(FakeReply(chunks=["a" * 100], drop_after=0))
        response = await self.request("/v1/chat/completions", {"model": "m"})
        body = await self.body(response)
        assert body.reason is not None
        self.assertTrue(body.reason.check(ResponseFailed), body.reason)
        self.assertRaises(ValueError, json.loads, body.data)

    async def test_stall_and_disconnect(self) -> None:
        """
        C{stall_after} sends that many chunks then nothing, keeping the
        connection open; when the client closes it, C{disconnected} fires.
        """
        clock = Clock()
        fake = await self.start(clock=clock)
        fake.enqueue(FakeReply(chunks=["a", "b", "c"], stall_after=2))
        response = await self.request("/v1/chat/completions", {"stream": True})
        body = Body()
        response.deliverBody(body)
        await body.until(lambda data: openai_text(data) == "ab")
        self.assertEqual(clock.getDelayedCalls(), [])
        recorded = fake.requests[0]
        self.assertFalse(recorded.finished.called)
        self.assertEqual(fake.open_connections, 1)
        body.abort()
        await recorded.disconnected
        await body.done
        self.assertNotIn(b"[DONE]", body.data)
        self.assertEqual(openai_text(body.data), "ab")

    async def test_delays_with_clock(self) -> None:
        """
        C{first_byte_delay} and C{chunk_delay} are scheduled on the clock.
        """
        clock = Clock()
        fake = await self.start(clock=clock)
        fake.enqueue(FakeReply(chunks=["a", "b"], first_byte_delay=5, chunk_delay=1))
        requested = self.request("/v1/messages", {"stream": True})
        responses: list[IResponse] = []

        def got(response: IResponse) -> IResponse:
            responses.append(response)
            return response

        requested.addCallback(got)
        await fake.wait_for_request()
        clock.advance(4.5)
        self.assertEqual(responses, [])
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.5)
        response = await requested
        body = Body()
        response.deliverBody(body)
        await body.until(lambda data: b"message_start" in data)
        self.assertEqual(anthropic_text(body.data), "")
        clock.advance(1)
        await body.until(lambda data: anthropic_text(data) == "a")
        self.assertNotIn(b"message_stop", body.data)
        clock.advance(1)
        await body.done
        self.assertEqual(anthropic_text(body.data), "ab")
        self.assertIn(b"message_stop", body.data)
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_cancel_before_headers(self) -> None:
        """
        Cancelling a request that waits for its headers closes the
        connection: C{disconnected} fires and the pending delay is cancelled.
        """
        clock = Clock()
        fake = await self.start(clock=clock)
        fake.enqueue(FakeReply(chunks=["a"], first_byte_delay=30))
        requested = self.request("/v1/messages", {"stream": True})
        recorded = await fake.wait_for_request()
        requested.cancel()
        # Agent reports a cancel before the response as ResponseNeverReceived.
        self.failureResultOf(requested, ResponseNeverReceived, CancelledError)
        await recorded.disconnected
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(fake.open_connections, 0)

    async def test_stop_closes_connections(self) -> None:
        """
        L{FakeProvider.stop} closes open connections and cancels pending
        delays; the port no longer accepts connections.
        """
        clock = Clock()
        fake = await self.start(clock=clock)
        fake.enqueue(FakeReply(chunks=["a", "b"], chunk_delay=10))
        response = await self.request("/v1/messages", {"stream": True})
        body = Body()
        response.deliverBody(body)
        await body.until(lambda data: b"message_start" in data)
        self.assertEqual(fake.open_connections, 1)
        await fake.stop()
        self.assertEqual(fake.open_connections, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        await body.done
        assert body.reason is not None
        self.assertTrue(body.reason.check(ResponseFailed), body.reason)
        self.assertFalse(fake.requests[0].disconnected.called)

    async def test_not_started(self) -> None:
        from twisted.internet import reactor

        fake = FakeProvider(reactor)
        self.assertRaises(RuntimeError, lambda: fake.base_url)
        self.assertRaises(RuntimeError, lambda: fake.ca)


class TLSFakeProviderTests(FakeProviderTests):
    """
    The same, over HTTPS with a test CA.
    """

    tls = True

    async def test_base_url(self) -> None:
        fake = await self.start()
        self.assertTrue(fake.base_url.startswith("https://localhost:"))
        self.assertIn("BEGIN CERTIFICATE", fake.ca.cert_pem.bytes().decode())

    async def test_untrusted(self) -> None:
        """
        A client that does not trust the test CA is refused.
        """
        fake = await self.start()
        pool = HTTPConnectionPool(self.reactor, persistent=False)
        client = HTTPClient(Agent(self.reactor, pool=pool))
        requested = client.post(fake.base_url + "/v1/messages", json={})
        failure = await self.assertFailure(requested, Exception)
        self.assertIn("certificate", repr(failure).lower())
        self.assertEqual(fake.requests, [])
