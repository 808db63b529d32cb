"""
Tests for L{pylon_ai.testing}: the fake provider, over real loopback sockets.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
from treq.client import HTTPClient

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import (
    CannotListenError,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

import pylon_ai.testing
from pylon_ai import AiMessage, AiProxyPlugin, make_http_client
from pylon_ai.testing import (
    FakeProvider,
    FakeReply,
    FakeScript,
    FakeToolCall,
    ScriptError,
)
from pylon_ai.testing._cli import main
from pylon_ai.testing._script import SCRIPT_HELP


def scratch_file(case: SynchronousTestCase) -> Path:
    """
    A path in a temporary directory removed after the test (not
    C{case.mktemp()}: under pytest that writes into the working directory).
    """
    directory = tempfile.TemporaryDirectory(prefix="pylon-fake-")
    case.addCleanup(directory.cleanup)
    return Path(directory.name) / "file"


#: The repository: the command-line tests run C{python -m pylon_ai.testing}
#: from it, so that they use this tree's package.
ROOT = Path(__file__).resolve().parent.parent


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
        self.assertEqual(got[-2][1]["usage"], {"input_tokens": 10, "output_tokens": 2})
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

    def free_port(self) -> int:
        """
        A port that nothing listens on now (the kernel's pick, released).
        """
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        return port

    async def test_fixed_port(self) -> None:
        """
        C{port=} names the port to listen on; L{FakeProvider.base_url} and
        L{FakeProvider.listening_port} give it.
        """
        port = self.free_port()
        fake = await self.start(port=port)
        self.assertEqual(fake.listening_port, port)
        self.assertTrue(
            fake.base_url.endswith(
                f"://{'localhost' if self.tls else '127.0.0.1'}:{port}"
            )
        )
        response = await self.request("/v1/chat/completions", {"stream": True})
        self.assertEqual(
            openai_text((await self.body(response)).data), "Hello from the fake."
        )

    async def test_port_zero(self) -> None:
        """
        The default port 0 is a free port the system picks; the real one is
        reported.
        """
        fake = await self.start()
        self.assertEqual(fake.port, 0)
        self.assertNotEqual(fake.listening_port, 0)
        self.assertTrue(fake.base_url.endswith(f":{fake.listening_port}"))

    async def test_port_in_use(self) -> None:
        """
        A port that is taken fails L{FakeProvider.start} with
        L{CannotListenError}.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            from twisted.internet import reactor

            fake = FakeProvider(reactor, tls=self.tls, port=taken.getsockname()[1])
            await self.assertFailure(fake.start(), CannotListenError)
        self.assertRaises(RuntimeError, lambda: fake.base_url)

    async def test_host(self) -> None:
        """
        C{host=} names the address to listen on (here another loopback
        address); with TLS the certificate names it too.
        """
        fake = await self.start(host="127.0.0.2")
        scheme = "https" if self.tls else "http"
        self.assertEqual(fake.base_url, f"{scheme}://127.0.0.2:{fake.listening_port}")
        response = await self.request("/v1/messages", {"stream": True})
        self.assertEqual(
            anthropic_text((await self.body(response)).data), "Hello from the fake."
        )

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

    async def test_alpn_clients(self) -> None:
        """
        Clients that offer ALPN, as the official SDKs (httpx) and curl do,
        get HTTP/1.1 rather than a failed handshake.
        """
        fake = await self.start()
        fake.enqueue(FakeReply(chunks=["Over ", "TLS"]))
        context = ssl.create_default_context(cadata=fake.ca.cert_pem.bytes().decode())

        def ask() -> Any:
            with openai.OpenAI(
                base_url=fake.base_url + "/v1",
                api_key="sk-test",
                max_retries=0,
                http_client=openai.DefaultHttpxClient(verify=context),
            ) as client:
                return client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )

        completion = await deferToThread(ask)
        self.assertEqual(completion.choices[0].message.content, "Over TLS")

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


class TLSRequirementTests(SynchronousTestCase):
    """
    C{tls=True} needs C{trustme}, from the C{test} extra.
    """

    def test_without_trustme(self) -> None:
        """
        Without C{trustme}, C{FakeProvider(tls=True)} raises an
        L{ImportError} that says what to install.
        """
        from twisted.internet import reactor

        saved = sys.modules.get("trustme")
        sys.modules["trustme"] = None  # type: ignore[assignment]

        def restore() -> None:
            if saved is None:
                del sys.modules["trustme"]
            else:
                sys.modules["trustme"] = saved

        self.addCleanup(restore)
        error = self.assertRaises(ImportError, FakeProvider, reactor, tls=True)
        self.assertIn("pip install 'pylon_ai[test]'", str(error))
        self.assertIn("tls=True", str(error))
        FakeProvider(reactor)  # plain HTTP needs nothing more


#: The example script of the documentation.
DOC_SCRIPT = {
    "replies": [
        {"chunks": ["Hel", "lo"], "usage": [10, 2]},
        {
            "tool_calls": [
                {"id": "call_1", "name": "lookup", "arguments": {"q": "weather"}}
            ]
        },
        {"status": 429, "retry_after": 1, "message": "slow down"},
        {"chunks": ["a", "b", "c"], "chunk_delay": 0.5, "drop_after": 2},
    ],
    "default": {"chunks": ["Out of script."]},
}


class ScriptTests(SynchronousTestCase):
    """
    L{FakeScript}: the JSON script files of C{python -m pylon_ai.testing}.
    """

    def test_documented_example(self) -> None:
        """
        The example in the module's documentation parses to the replies it
        describes, and the documentation holds the field reference that
        C{--help} shows.
        """
        doc = pylon_ai.testing.__doc__
        assert doc is not None
        match = re.search(r"^( +)\{\n(.*?)^\1\}\n", doc, re.M | re.S)
        assert match is not None, "no JSON example in the docstring"
        self.assertEqual(json.loads(match.group(0)), DOC_SCRIPT)
        for line in SCRIPT_HELP.strip().splitlines():
            self.assertIn(line.strip(), doc)
        script = FakeScript.from_json(DOC_SCRIPT)
        self.assertEqual(
            script.replies,
            (
                FakeReply(chunks=["Hel", "lo"], usage=(10, 2)),
                FakeReply(
                    tool_calls=[FakeToolCall("call_1", "lookup", ['{"q":"weather"}'])]
                ),
                FakeReply(status=429, retry_after=1, message="slow down"),
                FakeReply(chunks=["a", "b", "c"], chunk_delay=0.5, drop_after=2),
            ),
        )
        self.assertEqual(script.default, FakeReply(chunks=["Out of script."]))

    def test_every_field(self) -> None:
        """
        Every field of L{FakeReply} can be scripted.
        """
        reply = {
            "chunks": ["x"],
            "tool_calls": [
                {"id": "t1", "name": "f", "arguments_fragments": ['{"a"', ":1}"]},
                {"id": "t2", "name": "g", "arguments": '{"b":2}'},
            ],
            "usage": None,
            "stop_reason": "max_tokens",
            "model": "m",
            "status": 200,
            "error_type": "overloaded_error",
            "message": "busy",
            "retry_after": "7",
            "headers": {"x-one": "1"},
            "first_byte_delay": 1,
            "chunk_delay": 0.25,
            "drop_after": None,
            "stall_after": 3,
            "stream_error": True,
            "raw_body": "data: caf\u00e9\n\n",
            "thinking": ["Hm", "m."],
            "signature": "sig-1",
            "input_tokens": 12,
            "embeddings": [[0.5, 1]],
        }
        self.assertEqual(set(reply), {f.name for f in attrs.fields(FakeReply)})
        [got] = FakeScript.from_json([reply]).replies
        self.assertEqual(
            got,
            FakeReply(
                chunks=["x"],
                tool_calls=[
                    FakeToolCall("t1", "f", ['{"a"', ":1}"]),
                    FakeToolCall("t2", "g", ['{"b":2}']),
                ],
                usage=None,
                stop_reason="max_tokens",
                model="m",
                error_type="overloaded_error",
                message="busy",
                retry_after="7",
                headers={"x-one": "1"},
                first_byte_delay=1.0,
                chunk_delay=0.25,
                stall_after=3,
                stream_error=True,
                raw_body="data: café\n\n".encode(),
                thinking=["Hm", "m."],
                signature="sig-1",
                input_tokens=12,
                embeddings=[[0.5, 1.0]],
            ),
        )
        self.assertEqual(
            FakeScript.from_json({"replies": [{"headers": [["a", "1"], ["a", "2"]]}]})
            .replies[0]
            .headers,
            (("a", "1"), ("a", "2")),
        )
        empty = FakeScript.from_json({})
        self.assertEqual((empty.replies, empty.default), ((), None))

    def test_errors(self) -> None:
        """
        A script that is not valid raises L{ScriptError} (a L{ValueError})
        naming the place of the mistake.
        """
        cases: list[tuple[Any, str]] = [
            ("hello", "a script is a JSON object or a list of replies"),
            ({"reply": []}, "unknown key 'reply'"),
            ({"replies": {}}, "replies: expected a list of replies"),
            ([{"chunk": ["a"]}], "replies[0]: unknown field 'chunk'"),
            ([{}, "x"], "replies[1]: expected a JSON object"),
            ([{"chunks": "abc"}], "replies[0].chunks: expected a list of strings"),
            ([{"chunks": ["a", 1]}], "replies[0].chunks: expected a list of strings"),
            (
                [{"usage": [1]}],
                "replies[0].usage: expected [input_tokens, output_tokens]",
            ),
            (
                [{"usage": [1, -2]}],
                "replies[0].usage: expected [input_tokens, output_tokens]",
            ),
            ([{"stop_reason": "stop"}], "replies[0].stop_reason: expected one of"),
            ([{"status": "429"}], "replies[0].status: expected an HTTP status"),
            ([{"status": 42}], "replies[0].status: expected an HTTP status"),
            ([{"status": True}], "replies[0].status: expected an HTTP status"),
            (
                [{"chunk_delay": -1}],
                "replies[0].chunk_delay: expected a number of seconds",
            ),
            (
                [{"first_byte_delay": "1"}],
                "replies[0].first_byte_delay: expected a number of seconds",
            ),
            ([{"drop_after": 1.5}], "replies[0].drop_after: expected a whole number"),
            ([{"stall_after": -1}], "replies[0].stall_after: expected a whole number"),
            ([{"stream_error": 1}], "replies[0].stream_error: expected true or false"),
            (
                [{"retry_after": [1]}],
                "replies[0].retry_after: expected a number or a string",
            ),
            ([{"headers": {"a": 1}}], "replies[0].headers: expected"),
            ([{"model": 3}], "replies[0].model: expected a string"),
            ([{"message": None}], "replies[0].message: expected a string"),
            ([{"raw_body": 3}], "replies[0].raw_body: expected a string"),
            ([{"tool_calls": [{"id": "a"}]}], "replies[0].tool_calls[0]: expected"),
            (
                [{"tool_calls": [{"id": "a", "name": "f", "arguments": 3}]}],
                "replies[0].tool_calls[0].arguments: expected a JSON object",
            ),
            (
                [
                    {
                        "tool_calls": [
                            {
                                "id": "a",
                                "name": "f",
                                "arguments": "{}",
                                "arguments_fragments": [],
                            }
                        ]
                    }
                ],
                "replies[0].tool_calls[0]: give arguments or arguments_fragments",
            ),
            (
                [{"tool_calls": [{"id": "a", "name": "f", "extra": 1}]}],
                "replies[0].tool_calls[0]: unknown field 'extra'",
            ),
            ({"default": []}, "default: expected a JSON object"),
        ]
        for data, expected in cases:
            with self.subTest(data=data):
                error = self.assertRaises(ScriptError, FakeScript.from_json, data)
                self.assertIsInstance(error, ValueError)
                self.assertIn(expected, str(error))

    def test_files(self) -> None:
        """
        L{FakeScript.from_file} reads a UTF-8 JSON file; a missing file, a
        file that is not JSON and a bad script raise L{ScriptError} naming
        the file.
        """
        path = scratch_file(self)
        path.write_text(json.dumps(DOC_SCRIPT), encoding="utf-8")
        self.assertEqual(
            FakeScript.from_file(str(path)), FakeScript.from_json(DOC_SCRIPT)
        )
        missing = str(path) + ".missing"
        error = self.assertRaises(ScriptError, FakeScript.from_file, missing)
        self.assertIn(missing, str(error))
        self.assertIn("cannot read", str(error))
        for text, expected in [
            ("{", "not JSON"),
            ('{"replies": [{"chunk_delay": NaN}]}', "not JSON"),
            ('[{"usage": 3}]', "replies[0].usage"),
        ]:
            path.write_text(text, encoding="utf-8")
            error = self.assertRaises(ScriptError, FakeScript.from_file, str(path))
            self.assertIn(str(path), str(error))
            self.assertIn(expected, str(error))
            self.assertNotIn("\n", str(error))

    def test_enqueue(self) -> None:
        """
        L{FakeScript.install} queues the replies on a provider and sets its
        default reply when the script has one.
        """
        from twisted.internet import reactor

        fake = FakeProvider(reactor)
        builtin = fake.default_reply
        FakeScript.from_json([{"chunks": ["a"]}]).install(fake)
        self.assertEqual(fake.default_reply, builtin)
        FakeScript.from_json(DOC_SCRIPT).install(fake)
        self.assertEqual(fake.default_reply, FakeReply(chunks=["Out of script."]))
        self.assertEqual(len(fake._queue), 5)


class CommandLineArgumentTests(SynchronousTestCase):
    """
    The arguments of C{python -m pylon_ai.testing}, checked in this process.
    """

    def run_main(self, *argv: str) -> tuple[int | str | None, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        exit = self.assertRaises(SystemExit, main, list(argv))
        return exit.code, out.getvalue(), err.getvalue()

    def test_help(self) -> None:
        """
        C{--help} names the options and documents the script format.
        """
        code, out, err = self.run_main("--help")
        self.assertEqual((code, err), (0, ""))
        for word in ["--port", "--host", "--tls", "--script", "--ca-file"]:
            self.assertIn(word, out)
        for line in SCRIPT_HELP.strip().splitlines():
            self.assertIn(line.strip(), out)

    def test_bad_arguments(self) -> None:
        """
        Bad arguments exit with status 2 and one line on standard error.
        """
        for argv, expected in [
            (["--port", "x"], "--port"),
            (["--port", "70000"], "--port"),
            (["--port", "-1"], "--port"),
            (["--nope"], "--nope"),
            (["extra"], "extra"),
            (["--host", ""], "--host"),
            (["--ca-file", "x.pem"], "--ca-file needs --tls"),
        ]:
            with self.subTest(argv=argv):
                code, out, err = self.run_main(*argv)
                self.assertEqual(code, 2)
                self.assertEqual(out, "")
                self.assertEqual(err.count("\n"), 1, err)
                self.assertTrue(err.startswith("pylon_ai.testing: "), err)
                self.assertIn(expected, err)

    def test_bad_script(self) -> None:
        """
        A missing or invalid script file exits with status 2 and one line
        naming the file and the mistake.
        """
        path = scratch_file(self)
        path.write_text('{"replies": [{"status": "oops"}]}', encoding="utf-8")
        for argv, expected in [
            (["--script", str(path)], "replies[0].status"),
            (["--script", str(path) + ".missing"], "cannot read"),
        ]:
            code, out, err = self.run_main(*argv)
            self.assertEqual((code, out), (2, ""))
            self.assertEqual(err.count("\n"), 1, err)
            self.assertIn(argv[1], err)
            self.assertIn(expected, err)

    def test_tls_without_trustme(self) -> None:
        """
        C{--tls} without C{trustme} exits with status 1 and one line saying
        what to install.
        """
        saved = sys.modules.get("trustme")
        sys.modules["trustme"] = None  # type: ignore[assignment]

        def restore() -> None:
            if saved is None:
                del sys.modules["trustme"]
            else:
                sys.modules["trustme"] = saved

        self.addCleanup(restore)
        code, out, err = self.run_main("--tls")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("pip install 'pylon_ai[test]'", err)


class Running(ProcessProtocol):
    """
    C{python -m pylon_ai.testing} in a child process: its first line of
    output, its standard error and its end.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.line: Deferred[str] = Deferred()
        self.ended: Deferred[ProcessDone | ProcessTerminated] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if b"\n" in self.out and not self.line.called:
            self.line.callback(self.out.split(b"\n", 1)[0].decode("utf-8"))

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        if not self.line.called:
            self.line.errback(
                AssertionError(f"exited before its line: {self.err.decode()!r}")
            )
        # The value, not the failure: a Failure given to callback() would
        # fire the errbacks.
        self.ended.callback(reason.value)


#: The line C{python -m pylon_ai.testing} prints once it listens.
LISTENING = re.compile(
    r"^pylon_ai\.testing: fake provider listening on (?P<url>https?://\S+:(?P<port>\d+))"
    r" \(OpenAI: /v1/chat/completions, Anthropic: /v1/messages\)"
    r"(?:; CA certificate: (?P<ca>\S+))?; Ctrl-C to stop$"
)


class CommandLineTests(TestCase):
    """
    C{python -m pylon_ai.testing} as a user runs it, in a child process.
    """

    timeout = 30

    async def spawn(self, *argv: str) -> tuple[Running, re.Match[str]]:
        """
        Start the command and wait for the line that says where it listens.
        """
        from twisted.internet import reactor

        running = Running()
        args = [sys.executable, "-m", "pylon_ai.testing", *argv]
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            running, sys.executable, args, env=dict(os.environ), path=str(ROOT)
        )

        async def end() -> None:
            try:
                process.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
            await running.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(end()))
        self.process = process
        line = await running.line
        match = LISTENING.match(line)
        assert match is not None, line
        return running, match

    async def stop(self, running: Running, how: str = "TERM") -> None:
        """
        Signal the command and check that it exits with status 0.
        """
        self.process.signalProcess(how)
        reason = await running.ended
        self.assertEqual(
            (reason.exitCode, reason.signal),
            (0, None),
            running.err.decode(),
        )

    async def test_serves_both_formats(self) -> None:
        """
        C{--port 0} prints the real port; the official SDKs get the default
        reply in both formats; each request is noted on standard error;
        SIGTERM ends the command with status 0.
        """
        running, match = await self.spawn("--port", "0")
        url = match["url"]
        self.assertNotEqual(int(match["port"]), 0)
        self.assertTrue(url.startswith("http://127.0.0.1:"))
        self.assertIsNone(match["ca"])

        def chat() -> str:
            with openai.OpenAI(
                base_url=url + "/v1", api_key="sk-test", max_retries=0
            ) as client:
                stream = client.chat.completions.create(
                    model="gpt-x",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                )
                return "".join(
                    c.choices[0].delta.content or "" for c in stream if c.choices
                )

        def message() -> str:
            with anthropic.Anthropic(
                base_url=url, api_key="sk-test", max_retries=0
            ) as client:
                reply = client.messages.create(
                    model="claude-x",
                    max_tokens=100,
                    messages=[{"role": "user", "content": "hi"}],
                )
                return "".join(b.text for b in reply.content if b.type == "text")

        self.assertEqual(await deferToThread(chat), "Hello from the fake.")
        self.assertEqual(await deferToThread(message), "Hello from the fake.")
        await self.stop(running)
        err = running.err.decode()
        self.assertIn("POST /v1/chat/completions model=gpt-x stream=true", err)
        self.assertIn("POST /v1/messages model=claude-x stream=false", err)
        self.assertNotIn("sk-test", err)

    async def test_script(self) -> None:
        """
        C{--script} serves the scripted replies in order, then the script's
        default; SIGINT (Ctrl-C) ends the command with status 0.
        """
        path = scratch_file(self)
        path.write_text(
            json.dumps(
                {
                    "replies": [
                        {"chunks": ["Scrip", "ted"], "model": "up"},
                        {"status": 429, "message": "slow down", "retry_after": 1},
                    ],
                    "default": {"chunks": ["Again"]},
                }
            ),
            encoding="utf-8",
        )
        running, match = await self.spawn("--port", "0", "--script", str(path))
        client = openai.OpenAI(
            base_url=match["url"] + "/v1", api_key="sk-test", max_retries=0
        )
        self.addCleanup(client.close)

        def ask() -> Any:
            return client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )

        first = await deferToThread(ask)
        self.assertEqual(
            (first.choices[0].message.content, first.model), ("Scripted", "up")
        )
        failed = await self.assertFailure(deferToThread(ask), openai.RateLimitError)
        self.assertIn("slow down", str(failed))
        for _ in range(2):
            again = await deferToThread(ask)
            self.assertEqual(again.choices[0].message.content, "Again")
        await self.stop(running, "INT")

    async def test_tls(self) -> None:
        """
        C{--tls} serves HTTPS and writes the CA certificate to the file it
        names; a client that trusts that file gets the reply.  The temporary
        file is removed at exit.
        """
        running, match = await self.spawn("--port", "0", "--tls")
        self.assertTrue(match["url"].startswith("https://localhost:"))
        ca = Path(match["ca"])
        pem = ca.read_bytes()
        self.assertIn(b"BEGIN CERTIFICATE", pem)
        from twisted.internet import reactor

        client = make_http_client(
            reactor, trust_root=Certificate.loadPEM(pem), persistent=False
        )
        plugin = AiProxyPlugin.openai(
            "sk-test", "gpt-x", base_url=match["url"], http_client=client
        )
        chunks: list[str] = []
        text = await plugin.stream_completion([AiMessage.user("hi")], chunks.append)
        self.assertEqual(text, "Hello from the fake.")
        self.assertEqual(len(chunks), 4)
        await self.stop(running)
        self.assertFalse(ca.exists())

    async def test_tls_ca_file(self) -> None:
        """
        C{--ca-file} writes the CA certificate where it says, and leaves it
        there at exit.
        """
        path = scratch_file(self)
        running, match = await self.spawn(
            "--port", "0", "--tls", "--ca-file", str(path)
        )
        self.assertEqual(Path(match["ca"]), path.resolve())
        self.assertIn(b"BEGIN CERTIFICATE", path.read_bytes())
        await self.stop(running)
        self.assertTrue(path.exists())

    async def test_port_in_use(self) -> None:
        """
        A port that is taken ends the command with status 1 and one line.
        """
        from twisted.internet.utils import getProcessOutputAndValue

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = str(taken.getsockname()[1])
            out, err, code = await getProcessOutputAndValue(
                sys.executable,
                ["-m", "pylon_ai.testing", "--port", port],
                env=dict(os.environ),
                path=str(ROOT),
            )
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(err.count(b"\n"), 1, err)
        self.assertIn(f"127.0.0.1:{port}".encode(), err)

    async def test_bad_arguments(self) -> None:
        """
        The command itself exits with status 2 and one line on bad
        arguments.
        """
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "pylon_ai.testing", "--port", "nine"],
            env=dict(os.environ),
            path=str(ROOT),
        )
        self.assertEqual((code, out), (2, b""))
        self.assertEqual(err.count(b"\n"), 1, err)
        self.assertIn(b"--port", err)
