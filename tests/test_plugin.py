"""
Tests for L{pylon_ai.AiProxyPlugin}: every provider against the fake provider
over real loopback sockets (HTTP and HTTPS), the requests on the wire, errors,
cancellation and the idle timeout.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import attrs
import trustme
from treq.client import HTTPClient

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from pylon_ai import (
    AiMessage,
    AiProxyPlugin,
    AnthropicProvider,
    CustomProvider,
    MessageStart,
    ModelEvent,
    OpenAIProvider,
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeout,
    Stop,
    TextDelta,
    ToolCallDelta,
    Usage,
    make_http_client,
)
from pylon_ai.testing import FakeProvider, FakeReply, FakeToolCall
from pylon_ai.testing._fake import _TrackingFactory

KEY = "sk-secret-key-123"
HELLO = [AiMessage.user("Hello")]


class Chunks:
    """
    An C{on_chunk} callback that records the chunks and lets a test wait for
    the C{n}th one.
    """

    def __init__(self) -> None:
        self.got: list[str] = []
        self._waits: list[tuple[int, Deferred[None]]] = []

    def __call__(self, text: str) -> None:
        self.got.append(text)
        ready = [d for n, d in self._waits if n <= len(self.got)]
        self._waits = [(n, d) for n, d in self._waits if n > len(self.got)]
        for d in ready:
            d.callback(None)

    def wait(self, n: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.got) >= n:
            d.callback(None)
        else:
            self._waits.append((n, d))
        return d


class PluginValueTests(SynchronousTestCase):
    """
    The plain values: the plugin's name and provider, L{AiMessage}.
    """

    def test_name(self) -> None:
        self.assertEqual(AiProxyPlugin.name, "ai-proxy")
        self.assertEqual(AiProxyPlugin.openai(KEY, "gpt").name, "ai-proxy")

    def test_messages(self) -> None:
        for make, role in [
            (AiMessage.system, "system"),
            (AiMessage.user, "user"),
            (AiMessage.assistant, "assistant"),
        ]:
            message = make("some text")
            self.assertEqual((message.role, message.content), (role, "some text"))
        self.assertEqual(AiMessage.user("x"), AiMessage("user", "x"))
        self.assertRaises(
            attrs.exceptions.FrozenInstanceError,
            setattr,
            AiMessage.user("x"),
            "content",
            "y",
        )

    def test_providers(self) -> None:
        """
        Each constructor configures its provider; the defaults are the real
        APIs' URLs.
        """
        p = AiProxyPlugin.anthropic(KEY, "claude").provider
        self.assertIsInstance(p, AnthropicProvider)
        self.assertEqual(p.url, "https://api.anthropic.com/v1/messages")
        p = AiProxyPlugin.openai(KEY, "gpt").provider
        self.assertIsInstance(p, OpenAIProvider)
        self.assertEqual(p.url, "https://api.openai.com/v1/chat/completions")
        p = AiProxyPlugin.anthropic(KEY, "c", base_url="http://h:81").provider
        self.assertEqual(p.url, "http://h:81/v1/messages")
        p = AiProxyPlugin.openai(KEY, "g", base_url="https://gw.example/").provider
        self.assertEqual(p.url, "https://gw.example/v1/chat/completions")
        custom = AiProxyPlugin.custom("http://h:11434", "").provider
        self.assertIsInstance(custom, CustomProvider)
        assert isinstance(custom, CustomProvider)
        self.assertIsNone(custom.model)
        self.assertEqual(custom.url, "http://h:11434/v1/chat/completions")
        custom = AiProxyPlugin.custom_with_model("http://h/", KEY, "").provider
        assert isinstance(custom, CustomProvider)
        self.assertIsNone(custom.model)
        self.assertEqual(custom.url, "http://h/v1/chat/completions")
        custom = AiProxyPlugin.custom_with_model("https://h/api/x", KEY, "m").provider
        assert isinstance(custom, CustomProvider)
        self.assertEqual((custom.model, custom.url), ("m", "https://h/api/x"))

    def test_provider_immutable_and_secret(self) -> None:
        """
        The provider is a frozen value whose repr (and the plugin's) does not
        show the key.
        """
        for plugin in [
            AiProxyPlugin.anthropic(KEY, "claude"),
            AiProxyPlugin.openai(KEY, "gpt"),
            AiProxyPlugin.custom("http://localhost:1234", KEY),
            AiProxyPlugin.custom_with_model("http://localhost:1234", KEY, "m"),
        ]:
            provider = plugin.provider
            self.assertRaises(
                attrs.exceptions.FrozenInstanceError,
                setattr,
                provider,
                "api_key",
                "other",
            )
            self.assertRaises(
                attrs.exceptions.FrozenInstanceError,
                setattr,
                provider,
                "base_url",
                "http://evil.example",
            )
            self.assertEqual(provider.api_key, KEY)
            self.assertNotIn(KEY, repr(provider))
            self.assertNotIn(KEY, str(provider))
            self.assertNotIn(KEY, repr(plugin))
            with self.assertRaises(AttributeError):
                plugin.provider = provider  # type: ignore[misc]

    def test_bad_options(self) -> None:
        self.assertRaises(ValueError, AiProxyPlugin.custom, "ftp://h/x", "")
        self.assertRaises(ValueError, AiProxyPlugin.custom, "localhost:8080", "")
        self.assertRaises(ValueError, AiProxyPlugin.openai, KEY, "g", max_tokens=0)
        self.assertRaises(ValueError, AiProxyPlugin.openai, KEY, "g", timeout=0)


class _PluginTestsBase(TestCase):
    timeout = 15

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: IReactorTCP = reactor

    async def start(self, tls: bool = False, **kwargs: Any) -> FakeProvider:
        fake = FakeProvider(self.reactor, tls=tls, **kwargs)
        await fake.start()
        self.addCleanup(fake.stop)
        self.fake = fake
        self.client: HTTPClient = fake.http_client()
        return fake

    def own_client(self, **kwargs: Any) -> HTTPClient:
        """
        A client from L{make_http_client} whose pool is closed at cleanup.
        """
        client = make_http_client(self.reactor, **kwargs)
        self.addCleanup(client._agent._pool.closeCachedConnections)
        return client

    async def settle(self) -> None:
        """
        Wait until the connection of a call that failed on an event is
        really closed (the fake sees no open connection): an abandoned
        stream's connection is closed, never kept in the pool.
        """
        for _ in range(1000):
            if not self.fake.open_connections:
                break
            await deferLater(self.reactor, 0, lambda: None)  # type: ignore[arg-type]
        self.assertEqual(self.fake.open_connections, 0)

    def plugins(self, **options: Any) -> dict[str, AiProxyPlugin]:
        """
        One plugin per constructor, pointed at the fake.
        """
        base, client = self.fake.base_url, self.client
        return {
            "anthropic": AiProxyPlugin.anthropic(
                KEY, "claude-x", base_url=base, http_client=client, **options
            ),
            "openai": AiProxyPlugin.openai(
                KEY, "gpt-x", base_url=base, http_client=client, **options
            ),
            "custom": AiProxyPlugin.custom(base, KEY, http_client=client, **options),
            "custom_with_model": AiProxyPlugin.custom_with_model(
                base, KEY, "local-x", http_client=client, **options
            ),
        }

    async def events(
        self, plugin: AiProxyPlugin, messages: list[AiMessage] = HELLO
    ) -> list[ModelEvent]:
        got: list[ModelEvent] = []
        result = await plugin.stream_events(messages, got.append)
        self.assertIsNone(result)
        return got


class StreamingTests(_PluginTestsBase):
    """
    Completions from every provider, and the requests they send.
    """

    async def test_stream_completion(self) -> None:
        """
        C{on_chunk} is called once per non-empty delta, in order, and the
        Deferred fires with the whole text.
        """
        await self.start()
        for name, plugin in self.plugins().items():
            self.fake.enqueue(FakeReply(chunks=["Hel", "", "lo", " wor", "ld!"]))
            chunks = Chunks()
            text = await plugin.stream_completion(HELLO, chunks)
            self.assertEqual(text, "Hello world!", name)
            self.assertEqual(chunks.got, ["Hel", "lo", " wor", "ld!"], name)
            self.assertTrue(self.fake.requests[-1].stream, name)

    async def test_completion(self) -> None:
        """
        C{completion()} returns the text, streamed on the wire.
        """
        await self.start()
        for name, plugin in self.plugins().items():
            self.fake.enqueue(FakeReply(chunks=["¿Qué", " tal", " 🐍?"]))
            self.assertEqual(await plugin.completion(HELLO), "¿Qué tal 🐍?", name)
            self.assertIs(self.fake.requests[-1].json["stream"], True, name)

    async def test_many_at_once(self) -> None:
        """
        Calls on one plugin run side by side, each with its own reply.
        """
        await self.start()
        plugin = self.plugins()["openai"]
        self.fake.enqueue(*(FakeReply(chunks=[f"r{i}"]) for i in range(5)))
        texts = [await d for d in [plugin.completion(HELLO) for _ in range(5)]]
        self.assertEqual(sorted(texts), [f"r{i}" for i in range(5)])

    async def test_default_reactor(self) -> None:
        """
        With no C{reactor}, the global one runs the timers (and Trial's
        dirty-reactor check finds none left behind).
        """
        await self.start()
        plugin = AiProxyPlugin.anthropic(
            KEY, "claude-x", base_url=self.fake.base_url, http_client=self.client
        )
        self.assertEqual(await plugin.completion(HELLO), "Hello from the fake.")

    async def test_no_timers_left(self) -> None:
        """
        Whatever the outcome, the call cancels its timeout timer.
        """
        await self.start()
        clock = Clock()
        plugin = AiProxyPlugin.openai(
            KEY,
            "g",
            base_url=self.fake.base_url,
            http_client=self.client,
            reactor=clock,
        )
        self.fake.enqueue(FakeReply(chunks=["ok"]), FakeReply(status=500))
        self.assertEqual(await plugin.completion(HELLO), "ok")
        self.assertEqual(clock.getDelayedCalls(), [])
        await self.assertFailure(plugin.completion(HELLO), ProviderError)
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_events_anthropic_tools(self) -> None:
        """
        C{stream_events} gives text, tool-call fragments, usage and the stop
        reason from an Anthropic stream.
        """
        await self.start()
        self.fake.enqueue(
            FakeReply(
                chunks=["Let me look."],
                tool_calls=[
                    FakeToolCall("toolu_1", "lookup", ['{"q":', '"x"}']),
                    FakeToolCall("toolu_2", "clock", ["{}"]),
                ],
                usage=(7, 5),
                model="claude-upstream",
            )
        )
        got = await self.events(self.plugins()["anthropic"])
        self.assertEqual(got[0], MessageStart(got[0].id, "claude-upstream"))  # type: ignore[union-attr]
        self.assertEqual(got[-1], Stop("tool_use", "tool_use"))
        self.assertEqual(
            [e.text for e in got if isinstance(e, TextDelta)], ["Let me look."]
        )
        self.assert_tool_calls(got)
        usages = [e for e in got if isinstance(e, Usage)]
        self.assertEqual(usages[0].input_tokens, 7)
        self.assertEqual(usages[-1].output_tokens, 5)

    async def test_events_openai_tools(self) -> None:
        """
        The same from an OpenAI stream; the stop reason is normalised.
        """
        await self.start()
        self.fake.enqueue(
            FakeReply(
                chunks=["Let me look."],
                tool_calls=[
                    FakeToolCall("toolu_1", "lookup", ['{"q":', '"x"}']),
                    FakeToolCall("toolu_2", "clock", ["{}"]),
                ],
            )
        )
        got = await self.events(self.plugins()["openai"])
        self.assertIsInstance(got[0], MessageStart)
        self.assertEqual(got[-1], Stop("tool_use", "tool_calls"))
        self.assertEqual(
            [e.text for e in got if isinstance(e, TextDelta)], ["Let me look."]
        )
        self.assert_tool_calls(got)

    def assert_tool_calls(self, got: list[ModelEvent]) -> None:
        calls = [e for e in got if isinstance(e, ToolCallDelta)]
        self.assertEqual(
            [(c.index, c.id, c.name) for c in calls if c.id is not None],
            [(0, "toolu_1", "lookup"), (1, "toolu_2", "clock")],
        )
        for c in calls:
            if c.id is None:
                self.assertIsNone(c.name)
        self.assertEqual(
            ["".join(c.arguments for c in calls if c.index == i) for i in (0, 1)],
            ['{"q":"x"}', "{}"],
        )
        # Every fragment comes after the text and before the stop.
        first = got.index(calls[0])
        self.assertTrue(all(not isinstance(e, TextDelta) for e in got[first:]))

    async def test_events_openai_usage(self) -> None:
        """
        A compatible server that reports usage (and a finish reason without
        C{[DONE]}) gives L{Usage} and L{Stop} events.
        """
        await self.start()
        role = {"role": "assistant"}
        chunks = [
            {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": role}]},
            {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
            {"id": "c1", "choices": [{"delta": {}, "finish_reason": "length"}]},
            {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3}},
        ]
        raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        self.fake.enqueue(FakeReply(raw_body=raw))
        got = await self.events(self.plugins()["custom"])
        self.assertEqual(
            got,
            [
                MessageStart("c1", "m"),
                TextDelta("Hi"),
                Usage(3, None),
                Stop("max_tokens", "length"),
            ],
        )

    async def test_anthropic_request(self) -> None:
        """
        Anthropic gets its headers, C{max_tokens}, and every system message
        in the top-level C{system} field, joined with a blank line in order.
        """
        await self.start()
        plugin = self.plugins()["anthropic"]
        messages = [
            AiMessage.system("Be brief."),
            AiMessage.user("u1"),
            AiMessage.system("Be kind."),
            AiMessage.assistant("a1"),
            AiMessage.user("u2"),
            AiMessage.system("Answer in French."),
        ]
        await plugin.completion(messages)
        request = self.fake.requests[0]
        self.assertEqual((request.method, request.path), ("POST", "/v1/messages"))
        self.assertEqual(request.headers["x-api-key"], KEY)
        self.assertEqual(request.headers["anthropic-version"], "2023-06-01")
        self.assertNotIn("authorization", request.headers)
        self.assertIn("application/json", request.headers["content-type"])
        body = request.json
        self.assertEqual(body["model"], "claude-x")
        self.assertEqual(body["max_tokens"], 4096)
        self.assertIs(body["stream"], True)
        self.assertEqual(body["system"], "Be brief.\n\nBe kind.\n\nAnswer in French.")
        self.assertEqual(
            body["messages"],
            [
                {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "u2"},
            ],
        )
        custom = AiProxyPlugin.anthropic(
            KEY,
            "claude-y",
            base_url=self.fake.base_url + "/",
            http_client=self.client,
            max_tokens=123,
        )
        await custom.completion([AiMessage.user("only")])
        request = self.fake.requests[1]
        self.assertEqual(request.path, "/v1/messages")
        self.assertEqual(request.json["max_tokens"], 123)
        self.assertEqual(request.json["model"], "claude-y")
        self.assertNotIn("system", request.json)
        self.assertEqual(
            request.json["messages"], [{"role": "user", "content": "only"}]
        )

    async def test_openai_request(self) -> None:
        """
        OpenAI gets a bearer token, the model, C{max_completion_tokens}, and
        the messages as they are.
        """
        await self.start()
        messages = [
            AiMessage.system("s"),
            AiMessage.user("u"),
            AiMessage.assistant("a"),
            AiMessage.user("u2"),
        ]
        await self.plugins()["openai"].completion(messages)
        plugin = AiProxyPlugin.openai(
            KEY,
            "gpt-y",
            base_url=self.fake.base_url,
            http_client=self.client,
            max_tokens=77,
        )
        await plugin.completion(HELLO)
        first, second = self.fake.requests
        self.assertEqual(first.path, "/v1/chat/completions")
        self.assertEqual(first.headers["authorization"], f"Bearer {KEY}")
        self.assertNotIn("x-api-key", first.headers)
        self.assertEqual(first.json["model"], "gpt-x")
        self.assertEqual(first.json["max_completion_tokens"], 4096)
        self.assertNotIn("max_tokens", first.json)
        self.assertIs(first.json["stream"], True)
        self.assertEqual(
            first.json["messages"],
            [{"role": m.role, "content": m.content} for m in messages],
        )
        self.assertEqual(second.json["max_completion_tokens"], 77)
        self.assertEqual(second.json["model"], "gpt-y")

    async def test_custom_request(self) -> None:
        """
        A custom endpoint gets C{max_tokens}, a bearer token unless the key is
        empty, and a model only when one is set.
        """
        fake = await self.start()
        base, client = fake.base_url, self.client
        await AiProxyPlugin.custom(base, "", http_client=client).completion(HELLO)
        await AiProxyPlugin.custom_with_model(
            base, "", "", http_client=client
        ).completion(HELLO)
        await AiProxyPlugin.custom_with_model(
            base, KEY, "llama3", http_client=client, max_tokens=9
        ).completion(HELLO)
        await AiProxyPlugin.custom(base, KEY, http_client=client).completion(HELLO)
        no_key, empty_model, model, key = fake.requests
        for request in (no_key, empty_model):
            self.assertNotIn("authorization", request.headers)
            self.assertNotIn("model", request.json)
            self.assertEqual(request.json["max_tokens"], 4096)
            self.assertNotIn("max_completion_tokens", request.json)
            self.assertEqual(request.path, "/v1/chat/completions")
        self.assertEqual(model.json["model"], "llama3")
        self.assertEqual(model.json["max_tokens"], 9)
        self.assertEqual(model.headers["authorization"], f"Bearer {KEY}")
        self.assertEqual(key.headers["authorization"], f"Bearer {KEY}")
        self.assertNotIn("model", key.json)
        self.assertEqual(key.json["messages"], [{"role": "user", "content": "Hello"}])

    async def test_custom_urls(self) -> None:
        """
        A bare URL (or one ending in C{/}) gets C{/v1/chat/completions}; a
        URL with a path is used as it is; the port is honoured.
        """
        fake = await self.start()
        base = fake.base_url
        self.assertRegex(base, r"^http://127\.0\.0\.1:\d+$")
        for url in [base, base + "/", base + "/api/chat/x", base + "/v2/generate/"]:
            plugin = AiProxyPlugin.custom(url, "", http_client=self.client)
            self.assertEqual(await plugin.completion(HELLO), "Hello from the fake.")
        self.assertEqual(
            [r.path for r in fake.requests],
            [
                "/v1/chat/completions",
                "/v1/chat/completions",
                "/api/chat/x",
                "/v2/generate/",
            ],
        )


class TLSTests(_PluginTestsBase):
    """
    HTTPS is real: the certificate and the host name are verified.
    """

    async def test_trusted(self) -> None:
        """
        A client that trusts the fake's CA gets through, whether it comes
        from the fake or from L{make_http_client}.
        """
        fake = await self.start(tls=True)
        self.assertTrue(fake.base_url.startswith("https://"))
        trust = Certificate.loadPEM(fake.ca.cert_pem.bytes())
        for client in [self.client, self.own_client(trust_root=trust)]:
            for plugin in [
                AiProxyPlugin.anthropic(
                    KEY, "c", base_url=fake.base_url, http_client=client
                ),
                AiProxyPlugin.custom_with_model(
                    fake.base_url + "/x/y", KEY, "m", http_client=client
                ),
            ]:
                chunks = Chunks()
                text = await plugin.stream_completion(HELLO, chunks)
                self.assertEqual(text, "Hello from the fake.")
                self.assertEqual(chunks.got, ["Hello", " from", " the", " fake."])
        self.assertEqual(len(fake.requests), 4)

    async def test_ca_file(self) -> None:
        """
        C{make_http_client(ca_file=...)} trusts that CA beside the platform
        store.
        """
        fake = await self.start(tls=True)
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "ca.pem")
        fake.ca.cert_pem.write_to_path(path)
        client = self.own_client(ca_file=path)
        plugin = AiProxyPlugin.openai(
            KEY, "g", base_url=fake.base_url, http_client=client
        )
        self.assertEqual(await plugin.completion(HELLO), "Hello from the fake.")

    async def test_untrusted(self) -> None:
        """
        A client on the platform's trust store refuses the test CA: a
        connection error without a status, naming TLS.
        """
        fake = await self.start(tls=True)
        plugin = AiProxyPlugin.anthropic(
            KEY, "c", base_url=fake.base_url, http_client=self.own_client()
        )
        error = await self.assertFailure(plugin.completion(HELLO), ProviderError)
        self.assertIsInstance(error, ProviderConnectionError)
        self.assertIsNone(error.status)
        self.assertIsNone(error.body)
        self.assertIn("TLS", error.message)
        self.assertIn("certificate verify failed", error.message)
        self.assertNotIn(KEY, str(error))
        self.assertEqual(fake.requests, [])

    async def test_wrong_host_name(self) -> None:
        """
        A certificate from a trusted CA but for another host name is refused
        for the host name.
        """
        ca = trustme.CA()
        cert = ca.issue_cert("other.example")
        options = PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()
        ).options()
        resource = Resource()
        factory = _TrackingFactory(Site(resource))
        port: IListeningPort = await SSL4ServerEndpoint(
            self.reactor, 0, options, interface="127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.close_all)
        client = self.own_client(trust_root=Certificate.loadPEM(ca.cert_pem.bytes()))
        number = port.getHost().port  # type: ignore[attr-defined]
        for url in [f"https://localhost:{number}", f"https://127.0.0.1:{number}"]:
            plugin = AiProxyPlugin.custom(url, KEY, http_client=client)
            error = await self.assertFailure(plugin.completion(HELLO), ProviderError)
            self.assertIsInstance(error, ProviderConnectionError)
            self.assertIsNone(error.status)
            self.assertIn("host name", error.message)
            self.assertIn(url, error.message)


class ErrorTests(_PluginTestsBase):
    """
    Failures are L{ProviderError}s with the status, type, message and body.
    """

    async def test_http_errors(self) -> None:
        await self.start()
        plugins = self.plugins()
        cases = [
            ("anthropic", 429, "rate_limit_error", "Slow down."),
            ("openai", 429, "rate_limit_error", "Slow down."),
            ("anthropic", 500, "api_error", "Internal."),
            ("custom", 500, "api_error", "Internal."),
            ("anthropic", 400, "invalid_request_error", "Bad field: foo."),
            ("openai", 400, "invalid_request_error", "Bad field: foo."),
            ("openai", 529, "overloaded_error", "Busy."),
        ]
        for name, status, error_type, message in cases:
            self.fake.enqueue(
                FakeReply(
                    status=status,
                    error_type=error_type,
                    message=message,
                    retry_after=3 if status == 429 else None,
                )
            )
            chunks = Chunks()
            error = await self.assertFailure(
                plugins[name].stream_completion(HELLO, chunks), ProviderError
            )
            label = f"{name} {status}"
            self.assertIs(type(error), ProviderError, label)
            self.assertEqual(error.status, status, label)
            self.assertEqual(error.error_type, error_type, label)
            self.assertIn(message, error.message, label)
            self.assertIn(str(status), error.message, label)
            assert error.body is not None
            self.assertLessEqual(len(error.body), 4096)
            body = json.loads(error.body)
            self.assertIn(message, json.dumps(body))
            self.assertEqual(chunks.got, [], label)
            self.assertNotIn(KEY, str(error), label)
            self.assertNotIn(KEY, repr(error), label)

    async def test_long_error_body(self) -> None:
        """
        The body kept on an error is at most 4 KiB; a body that is not JSON
        still gives a readable message.
        """
        await self.start()
        raw = b"<html>" + b"x" * 10000 + b"</html>"
        self.fake.enqueue(
            FakeReply(status=502, raw_body=raw, headers={"content-type": "text/html"})
        )
        error = await self.assertFailure(
            self.plugins()["openai"].completion(HELLO), ProviderError
        )
        self.assertEqual(error.status, 502)
        self.assertIsNone(error.error_type)
        self.assertEqual(error.body, raw[:4096].decode())
        self.assertIn("<html>", error.message)
        self.assertLess(len(error.message), 400)

    async def test_connection_refused(self) -> None:
        """
        A port where nothing listens gives a L{ProviderConnectionError}
        without a status.
        """
        port = await TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        number = port.getHost().port  # type: ignore[attr-defined]
        await port.stopListening()
        client = self.own_client()
        for plugin in [
            AiProxyPlugin.anthropic(
                KEY, "c", base_url=f"http://127.0.0.1:{number}", http_client=client
            ),
            AiProxyPlugin.custom(
                f"http://127.0.0.1:{number}/x", KEY, http_client=client
            ),
        ]:
            error = await self.assertFailure(plugin.completion(HELLO), ProviderError)
            self.assertIsInstance(error, ProviderConnectionError)
            self.assertIsNone(error.status)
            self.assertIsNone(error.error_type)
            self.assertIn(str(number), error.message)
            self.assertNotIn(KEY, str(error))

    async def test_anthropic_stream_error(self) -> None:
        """
        Anthropic's C{event: error} inside a 200 stream fails the call with
        the status its type stands for; the text before it was delivered.
        """
        await self.start()
        self.fake.enqueue(
            FakeReply(chunks=["par", "tial"], stream_error=True, message="Overloaded")
        )
        chunks = Chunks()
        error = await self.assertFailure(
            self.plugins()["anthropic"].stream_completion(HELLO, chunks),
            ProviderError,
        )
        self.assertIsInstance(error, ProviderStreamError)
        self.assertEqual(error.status, 529)
        self.assertEqual(error.error_type, "overloaded_error")
        self.assertIn("Overloaded", error.message)
        assert error.body is not None
        self.assertIn("overloaded_error", error.body)
        self.assertEqual(chunks.got, ["par", "tial"])
        await self.settle()

    async def test_next_request_after_stream_error(self) -> None:
        """
        A call that failed on an error event does not leave its closing
        connection in the pool: the next call on the same client succeeds
        (the rest of the failed response arrives in the same read, so
        Twisted would otherwise pool the dying connection).
        """
        await self.start()
        self.fake.enqueue(
            FakeReply(chunks=["a"], stream_error=True), FakeReply(chunks=["ok"])
        )
        plugin = self.plugins()["openai"]
        await self.assertFailure(plugin.completion(HELLO), ProviderStreamError)
        await deferLater(self.reactor, 0, lambda: None)  # type: ignore[arg-type]
        self.assertEqual(await plugin.completion(HELLO), "ok")

    async def test_openai_stream_error_then_done(self) -> None:
        """
        An OpenAI-style C{{"error": ...}} in a 200 stream is a failure even
        though C{[DONE]} follows it.
        """
        await self.start()
        for name in ("openai", "custom"):
            self.fake.enqueue(
                FakeReply(
                    chunks=["a"],
                    stream_error=True,
                    error_type="rate_limit_error",
                    message="Too many",
                )
            )
            chunks = Chunks()
            error = await self.assertFailure(
                self.plugins()[name].stream_completion(HELLO, chunks), ProviderError
            )
            self.assertIsInstance(error, ProviderStreamError)
            self.assertEqual(error.error_type, "rate_limit_error")
            self.assertIn("Too many", error.message)
            self.assertEqual(chunks.got, ["a"])
            await self.settle()

    async def test_dropped_mid_stream(self) -> None:
        """
        A connection lost mid-stream is a L{ProviderStreamError}; the chunks
        before the drop were delivered.
        """
        await self.start()
        for name, plugin in self.plugins().items():
            self.fake.enqueue(FakeReply(chunks=["a", "b", "c", "d"], drop_after=2))
            chunks = Chunks()
            error = await self.assertFailure(
                plugin.stream_completion(HELLO, chunks), ProviderError
            )
            self.assertIsInstance(error, ProviderStreamError, name)
            self.assertEqual(chunks.got, ["a", "b"], name)

    async def test_ended_early(self) -> None:
        """
        A stream that ends cleanly but before it finished (Anthropic: no
        C{message_stop}; OpenAI: no finish reason and no C{[DONE]}) fails.
        """
        await self.start()
        anthropic = (
            b'event: message_start\ndata: {"type":"message_start","message":'
            b'{"id":"m","model":"c","usage":{"input_tokens":1}}}\n\n'
            b'event: content_block_delta\ndata: {"type":"content_block_delta",'
            b'"index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        )
        openai = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        self.fake.enqueue(FakeReply(raw_body=anthropic), FakeReply(raw_body=openai))
        for name in ("anthropic", "openai"):
            chunks = Chunks()
            error = await self.assertFailure(
                self.plugins()[name].stream_completion(HELLO, chunks), ProviderError
            )
            self.assertIsInstance(error, ProviderStreamError, name)
            self.assertIsNone(error.status, name)
            self.assertEqual(chunks.got, ["Hi"], name)

    async def test_malformed_streams(self) -> None:
        """
        Malformed streams are L{ProviderError}s, never a bare C{KeyError} or
        C{ValueError}.
        """
        await self.start()
        sse = {"content-type": "text/event-stream"}
        cases: list[tuple[str, FakeReply]] = [
            ("anthropic", FakeReply(raw_body=b"event: message_start\ndata: {nope\n\n")),
            ("openai", FakeReply(raw_body=b"data: {nope\n\n")),
            ("custom", FakeReply(raw_body=b"data: [1, 2]\n\n")),
            ("openai", FakeReply(raw_body=b'data: {"choices": [{"delta": 5}]}\n\n')),
            (
                "anthropic",
                FakeReply(
                    raw_body=b'event: content_block_delta\ndata: {"type": '
                    b'"content_block_delta", "delta": {}}\n\n'
                ),
            ),
            (
                "anthropic",
                FakeReply(
                    raw_body=b'{"type": "message", "content": []}',
                    headers={"content-type": "application/json"},
                ),
            ),
            (
                "openai",
                FakeReply(
                    raw_body=b"<html>hello</html>",
                    headers={"content-type": "text/html"},
                ),
            ),
            ("openai", FakeReply(raw_body=b"data: " + b"x" * 5000, headers=sse)),
            (
                "anthropic",
                FakeReply(raw_body=b"data: " + b"x" * 5000, headers=sse, drop_after=0),
            ),
        ]
        for name, reply in cases:
            self.fake.enqueue(reply)
            plugin = self.plugins(max_line_length=1024)[name]
            error = await self.assertFailure(plugin.completion(HELLO), Exception)
            self.assertIsInstance(error, ProviderError, (name, reply.raw_body))
            if reply.headers and reply.headers != tuple(sse.items()):
                # Not an event stream: the body is kept for the reader.
                self.assertIn("event-stream", error.message)
                self.assertEqual(error.body, reply.raw_body.decode())  # type: ignore[union-attr]

    async def test_line_too_long(self) -> None:
        """
        A line past C{max_line_length} fails the call with a message naming
        the bound; the text before it was delivered.
        """
        fake = await self.start()
        head = b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
        fake.enqueue(FakeReply(raw_body=head + b"data: " + b"x" * 5000))
        plugin = self.plugins(max_line_length=1024)["openai"]
        chunks = Chunks()
        error = await self.assertFailure(
            plugin.stream_completion(HELLO, chunks), ProviderError
        )
        self.assertIsInstance(error, ProviderStreamError)
        self.assertIn("1024", error.message)
        self.assertEqual(chunks.got, ["ok"])
        await self.settle()

    async def test_on_chunk_raises(self) -> None:
        """
        If C{on_chunk} raises, the request is aborted (the fake sees the
        connection closed) and the Deferred fails with that exception.
        """
        clock = Clock()
        fake = await self.start(clock=clock)
        for name, plugin in self.plugins().items():
            fake.enqueue(FakeReply(chunks=["a", "b", "c"], chunk_delay=1))
            boom = RuntimeError(f"boom {name}")
            seen: list[str] = []

            def on_chunk(
                text: str, boom: RuntimeError = boom, seen: list[str] = seen
            ) -> None:
                seen.append(text)
                if text == "b":
                    raise boom

            d = plugin.stream_completion(HELLO, on_chunk)
            recorded = await fake.wait_for_request(len(fake.requests) + 1)
            clock.advance(1)
            clock.advance(1)
            error = await self.assertFailure(d, RuntimeError)
            self.assertIs(error, boom)
            await recorded.disconnected
            self.assertFalse(recorded.finished.called)
            self.assertEqual(seen, ["a", "b"])
            self.assertEqual(clock.getDelayedCalls(), [])

    async def test_on_event_raises(self) -> None:
        """
        The same for C{stream_events}' callback.
        """
        fake = await self.start()
        fake.enqueue(FakeReply(chunks=["a", "b"], stall_after=2))

        def on_event(event: ModelEvent) -> None:
            if isinstance(event, TextDelta):
                raise KeyError(event.text)

        d = self.plugins()["anthropic"].stream_events(HELLO, on_event)
        error = await self.assertFailure(d, KeyError)
        self.assertEqual(error.args, ("a",))
        await fake.requests[0].disconnected


class CancelTests(_PluginTestsBase):
    """
    Cancelling a call closes its upstream connection.
    """

    async def test_cancel_mid_stream(self) -> None:
        fake = await self.start()
        for name, plugin in self.plugins().items():
            fake.enqueue(FakeReply(chunks=["a", "b", "c"], stall_after=1))
            chunks = Chunks()
            d = plugin.stream_completion(HELLO, chunks)
            await chunks.wait(1)
            # The chunk came as the bytes arrived, not at the end.
            self.assertFalse(d.called, name)
            recorded = fake.requests[-1]
            self.assertFalse(recorded.disconnected.called, name)
            d.cancel()
            self.failureResultOf(d, CancelledError)
            await recorded.disconnected
            self.assertEqual(chunks.got, ["a"], name)
            self.assertFalse(recorded.finished.called, name)

    async def test_cancel_before_headers(self) -> None:
        clock = Clock()
        fake = await self.start(clock=clock)
        for name, plugin in self.plugins().items():
            fake.enqueue(FakeReply(chunks=["a"], first_byte_delay=30))
            chunks = Chunks()
            d = plugin.stream_completion(HELLO, chunks)
            recorded = await fake.wait_for_request(len(fake.requests) + 1)
            self.assertFalse(d.called, name)
            d.cancel()
            self.failureResultOf(d, CancelledError)
            await recorded.disconnected
            self.assertEqual(chunks.got, [], name)
            self.assertEqual(clock.getDelayedCalls(), [], name)
        self.assertEqual(fake.open_connections, 0)

    async def test_cancel_before_connected(self) -> None:
        """
        Cancelling at once (the request not yet sent) is clean too.
        """
        fake = await self.start()
        d = self.plugins()["openai"].completion(HELLO)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(fake.requests, [])

    async def test_cancel_after_done(self) -> None:
        """
        Cancelling a finished call changes nothing.
        """
        await self.start()
        d = self.plugins()["anthropic"].completion(HELLO)
        texts: list[str] = []
        d.addCallback(texts.append)
        await self.fake.wait_for_request()
        await self.fake.requests[0].finished
        while not texts:
            await deferLater(self.reactor, 0, lambda: None)  # type: ignore[arg-type]
        d.cancel()
        self.assertEqual(texts, ["Hello from the fake."])
        self.assertIsNone(self.successResultOf(d))


class TimeoutTests(_PluginTestsBase):
    """
    The idle timeout runs on the plugin's clock; every read resets it.
    """

    async def test_stall_mid_stream(self) -> None:
        clock, fake_clock = Clock(), Clock()
        fake = await self.start(clock=fake_clock)
        for name, plugin in self.plugins(reactor=clock, timeout=5).items():
            fake.enqueue(
                FakeReply(chunks=["a", "b", "c"], chunk_delay=1, stall_after=2)
            )
            chunks = Chunks()
            d = plugin.stream_completion(HELLO, chunks)
            recorded = await fake.wait_for_request(len(fake.requests) + 1)
            clock.advance(4)
            fake_clock.advance(1)
            await chunks.wait(1)
            clock.advance(4)  # 8 s since the start, 4 s since "a"
            self.assertFalse(d.called, name)
            fake_clock.advance(1)
            await chunks.wait(2)
            clock.advance(4.9)  # 4.9 s since "b"
            self.assertFalse(d.called, name)
            clock.advance(0.2)
            error = self.failureResultOf(d, ProviderTimeout).value
            self.assertIsNone(error.status, name)
            self.assertIn("mid-stream", error.message)
            self.assertEqual(chunks.got, ["a", "b"], name)
            self.assertEqual(clock.getDelayedCalls(), [], name)
            await recorded.disconnected

    async def test_stall_before_headers(self) -> None:
        clock, fake_clock = Clock(), Clock()
        fake = await self.start(clock=fake_clock)
        for name, plugin in self.plugins(reactor=clock, timeout=2.5).items():
            fake.enqueue(FakeReply(chunks=["a"], first_byte_delay=60))
            d = plugin.completion(HELLO)
            recorded = await fake.wait_for_request(len(fake.requests) + 1)
            clock.advance(2.4)
            self.assertFalse(d.called, name)
            clock.advance(0.1)
            error = self.failureResultOf(d, ProviderTimeout).value
            self.assertIsInstance(error, ProviderError)
            self.assertIsNone(error.status)
            self.assertIn("2.5", error.message)
            self.assertIn("waiting for the response", error.message)
            await recorded.disconnected
            self.assertEqual(clock.getDelayedCalls(), [], name)

    async def test_real_timeout(self) -> None:
        """
        With the real reactor, a short timeout fails a stalled call.
        """
        fake = await self.start()
        fake.enqueue(FakeReply(chunks=["a", "b"], stall_after=1))
        chunks = Chunks()
        plugin = self.plugins(timeout=0.2)["openai"]
        error = await self.assertFailure(
            plugin.stream_completion(HELLO, chunks), ProviderError
        )
        self.assertIsInstance(error, ProviderTimeout)
        self.assertEqual(chunks.got, ["a"])
        await fake.requests[0].disconnected


class PausedUpstreamTests(_PluginTestsBase):
    """
    A client that stops reading pauses the upstream through
    C{StreamCall.producer}; the idle timeout does not run while it is
    paused (the upstream is not silent: we stopped reading it).
    """

    async def test_pause_is_not_idle(self) -> None:
        from twisted.web.http_headers import Headers

        from pylon_ai._upstream import StreamCall
        from pylon_ai.formats.chat import OpenAIStreamDecoder, request_headers

        clock, fake_clock = Clock(), Clock()
        fake = await self.start(clock=fake_clock)
        fake.enqueue(FakeReply(chunks=["a", "b"], chunk_delay=1))
        got: list[Any] = []
        call = StreamCall(
            clock, OpenAIStreamDecoder(), got.append, label="fake", timeout=5
        )
        headers = Headers({k: [v] for k, v in request_headers("k").items()})
        body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
        call.start(
            self.client, fake.base_url.encode() + b"/v1/chat/completions", headers, body
        )
        recorded = await fake.wait_for_request()
        while call.producer is None:
            await deferLater(self.reactor, 0, lambda: None)  # type: ignore[arg-type]
        call.producer.pauseProducing()
        clock.advance(60)  # paused far longer than the idle timeout
        self.assertFalse(call.deferred.called)
        call.producer.resumeProducing()
        clock.advance(4.9)
        self.assertFalse(call.deferred.called)
        clock.advance(0.2)  # idle again, and not paused: it counts now
        self.failureResultOf(call.deferred, ProviderTimeout)
        await recorded.disconnected
