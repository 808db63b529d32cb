"""
Faithful same-format requests: a non-streaming request whose upstream speaks
the client's format is sent with C{stream: false} and its JSON body comes
back byte-equal (thinking blocks, signatures, cache usage, fields the gateway
does not know); an Anthropic upstream also gets the client's C{anthropic-beta}
header and query string, and nothing else of the client's headers.

Real loopback sockets, the fake provider as the upstream.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import treq
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from pylon_ai._errors import ProviderStreamError, ProviderTimeout
from pylon_ai._upstream import BodyCall, BodyTooLarge
from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._service import models, sse_events
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import models, sse_events  # type: ignore[no-redef]

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "hi"}]
BETA = "claude-code-20250219,interleaved-thinking-2025-05-14"
#: How long a test waits for something that should come at once.
WAIT = 10.0

#: An Anthropic reply with what a rebuilt body loses: a signed thinking
#: block, a redacted one, cache usage, and fields nobody knows yet.  Written
#: by hand (odd spacing, key order) so that byte equality means something.
ANTHROPIC_BODY = (
    b'{"id":"msg_01Faithful","type":"message","role":"assistant",'
    b'"model":"claude-up-2025",  "content":['
    b'{"type":"thinking","thinking":"Let me think.","signature":"EqQBCkgIAR-sig=="},'
    b'{"type":"redacted_thinking","data":"EmwKAhgBEgy-opaque"},'
    b'{"type":"text","text":"Hello!","citations":null}],'
    b'"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":11,"cache_creation_input_tokens":7,'
    b'"cache_read_input_tokens":1200,"output_tokens":5,'
    b'"service_tier":"standard","server_tool_use":{"web_search_requests":0}},'
    b'"container":null,"x_future_field":{"nested":[1,2.50,"\\u00e9"]}}'
)
#: A Chat Completions reply with fields the gateway does not know.
CHAT_BODY = (
    b'{"id":"chatcmpl-faithful","object":"chat.completion","created":1700000000,'
    b'"model":"gpt-up-0613","system_fingerprint":"fp_44709d6fcb",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hi there",'
    b'"refusal":null,"annotations":[],"reasoning_content":"because"},'
    b'"logprobs":{"content":[]},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,'
    b'"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":1}},'
    b'"service_tier":"default"}'
)
JSON_TYPE = {"content-type": "application/json"}


def within(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    """
    C{d}, failing with a timeout rather than hanging.
    """
    return d.addTimeout(seconds, reactor)


class _Case(TestCase):
    """
    A fake upstream and a gateway with the usual models (C{claude},
    C{gpt}, C{local}, C{mock}) in front of it.
    """

    timeout = 20

    async def start(self, server: dict[str, Any] | None = None, **options: Any) -> None:
        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)
        config = parse_config(
            {"server": server or {}, "models": models(self.fake.base_url, **options)},
            {},
        )
        self.gateway = Gateway(config, reactor)
        self.addCleanup(self.gateway.close)
        site = make_site(self.gateway)
        self.addCleanup(site.close_connections, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, Headers, bytes]:
        all_headers = {"content-type": "application/json", **(headers or {})}
        response = await within(
            self.http.post(
                self.url + path, data=json.dumps(body).encode(), headers=all_headers
            )
        )
        content = await within(treq.content(response))
        return response.code, response.headers, content

    def tokens(self, model: str, direction: str) -> float | None:
        value = self.gateway.metrics.registry.get_sample_value(
            "pylon_tokens_total", {"model": model, "direction": direction}
        )
        return value


def message(model: str = "claude", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": HI, **extra}


def chat(model: str = "gpt", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HI, **extra}


class WholeBodyTests(_Case):
    """
    Same-format non-streaming replies are the upstream's bytes.
    """

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.start())

    async def test_anthropic_byte_equal(self) -> None:
        """
        A non-streaming Messages request to an Anthropic upstream is sent
        with C{stream: false}, and the client gets the upstream's body as
        it came: thinking with its signature, redacted thinking, cache
        usage and unknown fields included.
        """
        self.fake.enqueue(FakeReply(raw_body=ANTHROPIC_BODY, headers=JSON_TYPE))
        status, headers, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 200)
        self.assertEqual(content, ANTHROPIC_BODY)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        sent = self.fake.requests[0].json
        self.assertIs(sent["stream"], False)
        self.assertEqual(sent["model"], "claude-up")

    async def test_chat_byte_equal(self) -> None:
        """
        The same for Chat Completions: fields the gateway does not know
        reach the client, and the upstream was not asked for a stream (nor
        for stream options, which OpenAI refuses without one).
        """
        self.fake.enqueue(FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE))
        status, headers, content = await self.post(
            CHAT, chat(stream_options={"include_usage": True})
        )
        self.assertEqual(status, 200)
        self.assertEqual(content, CHAT_BODY)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        sent = self.fake.requests[0].json
        self.assertIs(sent["stream"], False)
        self.assertNotIn("stream_options", sent)
        self.assertEqual(sent["model"], "gpt-up")

    async def test_custom_byte_equal(self) -> None:
        """
        A custom (OpenAI-compatible) upstream is the client's format too.
        """
        self.fake.enqueue(FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE))
        status, _, content = await self.post(CHAT, chat("local"))
        self.assertEqual((status, content), (200, CHAT_BODY))
        self.assertIs(self.fake.requests[0].json["stream"], False)

    async def test_tokens_counted(self) -> None:
        """
        The usage of a whole body is counted in C{pylon_tokens_total}.
        """
        self.fake.enqueue(FakeReply(raw_body=ANTHROPIC_BODY, headers=JSON_TYPE))
        self.fake.enqueue(FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE))
        await self.post(MESSAGES, message())
        await self.post(CHAT, chat())
        self.assertEqual(self.tokens("claude", "in"), 11.0)
        self.assertEqual(self.tokens("claude", "out"), 5.0)
        self.assertEqual(self.tokens("gpt", "in"), 9.0)
        self.assertEqual(self.tokens("gpt", "out"), 3.0)

    async def test_anthropic_sdk(self) -> None:
        """
        The official SDK, non-streaming, sees the thinking block with its
        signature and the cache usage.
        """
        self.fake.enqueue(FakeReply(raw_body=ANTHROPIC_BODY, headers=JSON_TYPE))
        client = anthropic.Anthropic(base_url=self.url, api_key="unused", max_retries=0)
        self.addCleanup(client.close)
        reply = await within(
            deferToThread(
                client.messages.create,
                model="claude",
                max_tokens=64,
                messages=[{"role": "user", "content": "hi"}],
            )
        )
        thinking = reply.content[0]
        self.assertEqual(thinking.type, "thinking")
        self.assertEqual(thinking.signature, "EqQBCkgIAR-sig==")
        self.assertEqual(reply.content[1].type, "redacted_thinking")
        self.assertEqual(reply.content[2].text, "Hello!")
        self.assertEqual(reply.usage.cache_read_input_tokens, 1200)
        self.assertEqual(reply.usage.cache_creation_input_tokens, 7)
        self.assertEqual(reply.model, "claude-up-2025")

    async def test_generated_reply(self) -> None:
        """
        A reply the fake builds itself comes through too (the fake's
        whole-body mode, not a stream).
        """
        self.fake.enqueue(FakeReply(["Hel", "lo"], usage=(3, 2)))
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 200)
        body = json.loads(content)
        self.assertEqual(body["content"], [{"type": "text", "text": "Hello"}])
        self.assertFalse(self.fake.requests[0].stream)

    async def test_mock_unchanged(self) -> None:
        """
        The built-in mock still answers a non-streaming request.
        """
        status, _, content = await self.post(MESSAGES, message("mock"))
        self.assertEqual(status, 200)
        self.assertIn("You said: hi", json.loads(content)["content"][0]["text"])

    async def test_upstream_400_keeps_its_shape(self) -> None:
        """
        An upstream error on a non-streaming request is handled as before:
        a 400 keeps its status and message, in the caller's shape.
        """
        self.fake.enqueue(FakeReply(status=400, message="max_tokens: too large"))
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 400)
        body = json.loads(content)
        self.assertEqual(body["type"], "error")
        self.assertIn("max_tokens: too large", body["error"]["message"])

    async def test_not_json(self) -> None:
        """
        A 200 whose body is not a JSON object is an upstream failure (502),
        never passed on.
        """
        self.fake.enqueue(FakeReply(raw_body=b"<html>oops</html>", headers=JSON_TYPE))
        status, _, content = await self.post(CHAT, chat())
        self.assertEqual(status, 502)
        self.assertNotIn(b"<html>", content)

    async def test_cut_body(self) -> None:
        """
        A body cut off by a dropped connection is a 502, not half a body.
        """
        self.fake.enqueue(FakeReply(["Hello"], drop_after=0))
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(content)["type"], "error")

    async def test_stream_unchanged(self) -> None:
        """
        A streaming same-format request is still streamed upstream.
        """
        self.fake.enqueue(FakeReply(["Hel", "lo"]))
        status, _, content = await self.post(MESSAGES, message(stream=True))
        self.assertEqual(status, 200)
        self.assertIs(self.fake.requests[0].json["stream"], True)
        self.assertIn("message_stop", [name for name, _ in sse_events(content)])


class BoundTests(_Case):
    """
    A whole body is bounded by C{max_reply_bytes}.
    """

    async def test_too_large(self) -> None:
        """
        A body over the bound is a 502 that says so; the upstream
        connection is closed and nothing is retried.
        """
        await self.start({"max_reply_bytes": 200}, retries=2, retry_backoff_s=0.01)
        self.fake.enqueue(FakeReply(raw_body=ANTHROPIC_BODY, headers=JSON_TYPE))
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 502)
        self.assertIn("max_reply_bytes", json.loads(content)["error"]["message"])
        self.assertEqual(len(self.fake.requests), 1)

    async def test_within_bound(self) -> None:
        """
        A body at the bound passes.
        """
        await self.start({"max_reply_bytes": len(CHAT_BODY)})
        self.fake.enqueue(FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE))
        status, _, content = await self.post(CHAT, chat())
        self.assertEqual((status, content), (200, CHAT_BODY))


class WholeBodyFaultTests(_Case):
    """
    Whole bodies that do not come, or come wrong.
    """

    async def test_request_timeout(self) -> None:
        """
        The headers of a non-streaming reply come once the whole reply was
        generated: the idle timeout does not apply before them, the request
        timeout does (a 504), and the upstream request is closed.
        """
        await self.start({"upstream_timeout_s": 0.1}, request_timeout_s=0.5)
        self.fake.enqueue(
            FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE, first_byte_delay=0.3),
            FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE, first_byte_delay=10),
        )
        status, _, content = await self.post(CHAT, chat())
        self.assertEqual((status, content), (200, CHAT_BODY))
        status, _, content = await self.post(CHAT, chat())
        self.assertEqual(status, 504)
        self.assertEqual(json.loads(content)["error"]["type"], "timeout_error")
        await within(self.fake.requests[1].disconnected)

    async def test_stall_mid_body(self) -> None:
        """
        Once the headers came, silence is idleness: a 504.
        """
        await self.start({"upstream_timeout_s": 0.2})
        self.fake.enqueue(FakeReply(["x"], stall_after=0))
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 504)
        self.assertEqual(json.loads(content)["error"]["type"], "timeout_error")
        await within(self.fake.requests[0].disconnected)

    async def test_invalid_utf8(self) -> None:
        """
        Bytes that are not UTF-8 are replaced, as in a stream: the client
        gets valid JSON.
        """
        await self.start()
        raw = CHAT_BODY.replace(b"Hi there", b"Hi \xff\xfe there")
        self.fake.enqueue(FakeReply(raw_body=raw, headers=JSON_TYPE))
        status, _, content = await self.post(CHAT, chat())
        self.assertEqual(status, 200)
        body = json.loads(content.decode("utf-8"))
        self.assertEqual(
            body["choices"][0]["message"]["content"], "Hi \ufffd\ufffd there"
        )

    async def test_client_leaves(self) -> None:
        """
        A client that disconnects while the reply is generated cancels the
        upstream request at once.
        """
        await self.start()
        self.fake.enqueue(FakeReply(raw_body=CHAT_BODY, first_byte_delay=30))
        d = self.http.post(
            self.url + CHAT,
            data=json.dumps(chat()).encode(),
            headers={"content-type": "application/json"},
        )
        recorded = await within(self.fake.wait_for_request())
        d.cancel()
        await within(recorded.disconnected)
        self.failureResultOf(d)


class AttemptTests(_Case):
    """
    Retries and fallbacks of non-streaming same-format requests.
    """

    async def test_500_retried(self) -> None:
        """
        An upstream 500 is retried as before, and the retry's body reaches
        the client byte-equal.
        """
        await self.start(retries=1, retry_backoff_s=0.01)
        self.fake.enqueue(FakeReply(status=500))
        self.fake.enqueue(FakeReply(raw_body=ANTHROPIC_BODY, headers=JSON_TYPE))
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual((status, content), (200, ANTHROPIC_BODY))
        self.assertEqual(len(self.fake.requests), 2)
        self.assertIs(self.fake.requests[1].json["stream"], False)

    async def test_cut_body_retried(self) -> None:
        """
        A body cut off before it was whole is retried: nothing of it
        reached the client.
        """
        await self.start(retries=1, retry_backoff_s=0.01)
        self.fake.enqueue(FakeReply(["Hello"], drop_after=0))
        self.fake.enqueue(FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE))
        status, _, content = await self.post(CHAT, chat())
        self.assertEqual((status, content), (200, CHAT_BODY))

    async def test_fallback_of_other_format_translated(self) -> None:
        """
        A fallback that speaks the other format gets the translated
        (streamed) path, and the client its usual body.
        """
        fake = FakeProvider(reactor)
        await fake.start()
        self.addCleanup(fake.stop)
        config = parse_config(
            {
                "models": [
                    {
                        "name": "claude",
                        "provider": "anthropic",
                        "model": "claude-up",
                        "api_key": "k1",
                        "base_url": fake.base_url,
                        "retries": 0,
                        "fallbacks": ["gpt"],
                    },
                    {
                        "name": "gpt",
                        "provider": "openai",
                        "model": "gpt-up",
                        "api_key": "k2",
                        "base_url": fake.base_url,
                        "retries": 0,
                    },
                ]
            },
            {},
        )
        self.fake = fake
        self.gateway = Gateway(config, reactor)
        self.addCleanup(self.gateway.close)
        site = make_site(self.gateway)
        self.addCleanup(site.close_connections, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        self.http = HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        )
        fake.enqueue(FakeReply(status=503))
        fake.enqueue(FakeReply(["Hi ", "there"], usage=(4, 2)))
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 200)
        body = json.loads(content)
        self.assertEqual(body["content"], [{"type": "text", "text": "Hi there"}])
        self.assertEqual(body["usage"]["input_tokens"], 4)
        first, second = fake.requests
        self.assertIs(first.json["stream"], False)
        self.assertTrue(first.path.endswith(MESSAGES))
        self.assertTrue(second.path.endswith(CHAT))
        self.assertIs(second.json["stream"], True)


class ForwardedTests(_Case):
    """
    C{anthropic-beta} and the query string reach an Anthropic upstream on
    same-format requests, and nothing else of the client's headers goes
    anywhere.
    """

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.start())

    #: Client headers that must never go upstream.
    CLIENT_ONLY = {
        "x-custom": "private",
        "cookie": "session=secret-cookie",
        "anthropic-version": "2099-01-01",
        "x-api-key": "sk-client-key",
        "user-agent": "claude-cli/2.1.0",
    }

    def assert_only_ours(self, headers: dict[str, str]) -> None:
        for name in ("x-custom", "cookie", "user-agent"):
            self.assertNotIn(name, headers)
        self.assertNotIn("secret-cookie", json.dumps(headers))
        self.assertNotIn("sk-client-key", json.dumps(headers))
        self.assertNotIn("claude-cli", json.dumps(headers))

    async def test_same_format_whole(self) -> None:
        """
        A non-streaming C{/v1/messages?beta=true} with C{anthropic-beta}:
        both reach the upstream; C{anthropic-version} stays the gateway's.
        """
        self.fake.enqueue(FakeReply(raw_body=ANTHROPIC_BODY, headers=JSON_TYPE))
        status, _, _ = await self.post(
            MESSAGES + "?beta=true",
            message(),
            {"anthropic-beta": BETA, **self.CLIENT_ONLY},
        )
        self.assertEqual(status, 200)
        seen = self.fake.requests[0]
        self.assertEqual(seen.path, "/v1/messages?beta=true")
        self.assertEqual(seen.headers["anthropic-beta"], BETA)
        self.assertEqual(seen.headers["anthropic-version"], "2023-06-01")
        self.assertEqual(seen.headers["x-api-key"], "sk-up-anthropic")
        self.assert_only_ours(seen.headers)

    async def test_same_format_stream(self) -> None:
        """
        The same for a streaming request.
        """
        self.fake.enqueue(FakeReply(["hi"]))
        status, _, _ = await self.post(
            MESSAGES + "?beta=true&x=%20y",
            message(stream=True),
            {"anthropic-beta": BETA, **self.CLIENT_ONLY},
        )
        self.assertEqual(status, 200)
        seen = self.fake.requests[0]
        self.assertEqual(seen.path, "/v1/messages?beta=true&x=%20y")
        self.assertEqual(seen.headers["anthropic-beta"], BETA)
        self.assertEqual(seen.headers["anthropic-version"], "2023-06-01")
        self.assert_only_ours(seen.headers)

    async def test_repeated_header_joined(self) -> None:
        """
        Several C{anthropic-beta} lines are one comma-separated list.
        """
        self.fake.enqueue(FakeReply(raw_body=ANTHROPIC_BODY, headers=JSON_TYPE))
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = await within(
            HTTPClient(agent).post(
                self.url + MESSAGES,
                data=json.dumps(message()).encode(),
                headers=Headers(
                    {
                        "content-type": ["application/json"],
                        "anthropic-beta": ["a-1", "b-2"],
                    }
                ),
            )
        )
        await within(treq.content(response))
        self.assertEqual(self.fake.requests[0].headers["anthropic-beta"], "a-1,b-2")

    async def test_not_across_formats(self) -> None:
        """
        A Messages request served by an OpenAI-format upstream carries
        neither the header nor the query string; nor does a Chat
        Completions request served by an Anthropic upstream.
        """
        self.fake.enqueue(FakeReply(["a"]), FakeReply(["b"]), FakeReply(["c"]))
        headers = {"anthropic-beta": BETA, **self.CLIENT_ONLY}
        status, _, _ = await self.post(MESSAGES + "?beta=true", message("gpt"), headers)
        self.assertEqual(status, 200)
        status, _, _ = await self.post(CHAT + "?beta=true", chat("claude"), headers)
        self.assertEqual(status, 200)
        status, _, _ = await self.post(
            MESSAGES + "?beta=true", message("gpt", stream=True), headers
        )
        self.assertEqual(status, 200)
        for seen in self.fake.requests:
            self.assertNotIn("?", seen.path)
            self.assertNotIn("anthropic-beta", seen.headers)
            self.assert_only_ours(seen.headers)

    async def test_chat_route_same_format(self) -> None:
        """
        Chat Completions to an OpenAI upstream never forwards them either
        (the header is Anthropic's).
        """
        self.fake.enqueue(FakeReply(raw_body=CHAT_BODY, headers=JSON_TYPE))
        await self.post(
            CHAT + "?beta=true", chat(), {"anthropic-beta": BETA, **self.CLIENT_ONLY}
        )
        seen = self.fake.requests[0]
        self.assertEqual(seen.path, CHAT)
        self.assertNotIn("anthropic-beta", seen.headers)
        self.assert_only_ours(seen.headers)


class BodyCallTests(TestCase):
    """
    L{BodyCall}'s timeouts and bounds, with the fake on real sockets and a
    L{Clock} for the call's timers.
    """

    timeout = 20

    async def call(
        self, reply: FakeReply, **options: Any
    ) -> tuple[BodyCall, Clock, Clock, list[tuple[bytes, Any]]]:
        fake_clock, clock = Clock(), Clock()
        fake = FakeProvider(reactor, clock=fake_clock)
        await fake.start()
        self.addCleanup(fake.stop)
        fake.enqueue(reply)
        got: list[tuple[bytes, Any]] = []
        options = {"timeout": 5.0, "max_body_length": 1 << 20, **options}
        call = BodyCall(
            clock, lambda raw, obj: got.append((raw, obj)), label="fake", **options
        )
        body = json.dumps({"model": "m", "messages": HI}).encode()
        call.start(
            fake.http_client(),
            fake.base_url.encode() + CHAT.encode(),
            Headers({"content-type": ["application/json"]}),
            body,
        )
        self.recorded = await within(fake.wait_for_request())
        return call, clock, fake_clock, got

    async def until_response(self, call: BodyCall) -> None:
        while call.response is None:
            await deferLater(reactor, 0, lambda: None)  # type: ignore[arg-type]

    async def test_waits_for_the_reply(self) -> None:
        """
        Without streaming the headers come once the whole reply was
        generated: the silence before them is bounded by the request
        timeout, not the idle timeout.
        """
        call, clock, fake_clock, got = await self.call(
            FakeReply(raw_body=CHAT_BODY, first_byte_delay=30), request_timeout=100
        )
        clock.advance(60)
        self.assertFalse(call.deferred.called)
        fake_clock.advance(30)
        await within(call.deferred)
        self.assertEqual(got[0][0], CHAT_BODY)
        self.assertEqual(got[0][1]["id"], "chatcmpl-faithful")
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_request_timeout(self) -> None:
        """
        The request timeout bounds the wait.
        """
        call, clock, _, _ = await self.call(
            FakeReply(raw_body=CHAT_BODY, first_byte_delay=300), request_timeout=100
        )
        clock.advance(99)
        self.assertFalse(call.deferred.called)
        clock.advance(1)
        self.failureResultOf(call.deferred, ProviderTimeout)
        await within(self.recorded.disconnected)

    async def test_idle_without_request_timeout(self) -> None:
        """
        With no request timeout, the idle timeout bounds the wait instead
        (the library's rule: never a hang).
        """
        call, clock, _, _ = await self.call(
            FakeReply(raw_body=CHAT_BODY, first_byte_delay=300)
        )
        clock.advance(5)
        self.failureResultOf(call.deferred, ProviderTimeout)
        await within(self.recorded.disconnected)

    async def test_idle_once_the_body_flows(self) -> None:
        """
        Once the headers came, silence in the body is idleness.
        """
        call, clock, _, _ = await self.call(
            FakeReply(["x"], stall_after=0), request_timeout=100
        )
        await self.until_response(call)
        clock.advance(4.9)
        self.assertFalse(call.deferred.called)
        clock.advance(0.2)
        error = self.failureResultOf(call.deferred, ProviderTimeout).value
        self.assertIn("for 5 s", error.message)
        await within(self.recorded.disconnected)

    async def test_too_large(self) -> None:
        """
        Past the bound the call fails with L{BodyTooLarge} and closes the
        connection.
        """
        call, _, _, got = await self.call(
            FakeReply(raw_body=CHAT_BODY), max_body_length=100
        )
        error = await self.assertFailure(within(call.deferred), BodyTooLarge)
        self.assertEqual(error.limit, 100)
        self.assertEqual(got, [])

    async def test_not_an_object(self) -> None:
        """
        A JSON array is not a reply.
        """
        call, _, _, got = await self.call(FakeReply(raw_body=b"[1, 2]"))
        await self.assertFailure(within(call.deferred), ProviderStreamError)
        self.assertEqual(got, [])

    async def test_on_body_raises(self) -> None:
        """
        What C{on_body} raises fails the call.
        """
        fake_clock, clock = Clock(), Clock()
        fake = FakeProvider(reactor, clock=fake_clock)
        await fake.start()
        self.addCleanup(fake.stop)
        fake.enqueue(FakeReply(raw_body=CHAT_BODY))

        def on_body(raw: bytes, obj: Any) -> None:
            raise ZeroDivisionError()

        call = BodyCall(clock, on_body, label="f", timeout=5, max_body_length=1000)
        call.start(fake.http_client(), fake.base_url + CHAT, {}, b"{}")
        await self.assertFailure(within(call.deferred), ZeroDivisionError)
