"""
The routes beside the completions: C{POST /v1/messages/count_tokens},
C{POST /v1/embeddings} and C{GET /v1/models/{id}}, with the official SDKs
(and raw HTTP where the shape of an error is the point) against a gateway in
front of a L{FakeProvider}; and the pure parts they use: the offline token
estimate, the mock's embeddings and the upstream URLs.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai._provider import AnthropicProvider, CustomProvider, OpenAIProvider
from pylon_ai.formats._tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    count_text,
    estimate_tokens,
)
from pylon_ai.gateway._mock import (
    MOCK_MODEL,
    EmbeddingRequestError,
    mock_embeddings,
    mock_vector,
)
from pylon_ai.testing import FakeReply

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
HI = [{"role": "user", "content": "hi"}]
#: How long a test waits for something that should come at once.
WAIT = 5.0


def in_thread(f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run a blocking SDK call off the reactor thread.
    """
    return deferToThread(f, *args, **kwargs)


def within(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


def _floats(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


class _RouteCase(TestCase):
    """
    A gateway in front of a fake, the two SDKs and a raw HTTP client.
    """

    timeout = 20
    server: dict[str, Any] | None = None
    service: Service

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self, self.server)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    @property
    def fake(self) -> Any:
        return self.service.fake

    def anthropic(self) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=self.service.url, api_key=CLIENT_KEY, max_retries=0
        )
        self.addCleanup(client.close)
        return client

    def openai(self) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{self.service.url}/v1", api_key=CLIENT_KEY, max_retries=0
        )
        self.addCleanup(client.close)
        return client

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        all_headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        response = await within(
            self.http.request(
                method, self.service.url + path, data=data, headers=all_headers
            )
        )
        return response.code, response.headers, await within(treq.content(response))

    def assertAnthropicError(self, content: bytes, error_type: str) -> str:
        body = json.loads(content)
        self.assertEqual(set(body), {"type", "error"})
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], error_type)
        return str(body["error"]["message"])

    def assertOpenAIError(self, content: bytes, error_type: str) -> str:
        body = json.loads(content)
        self.assertEqual(list(body), ["error"])
        self.assertEqual(body["error"]["type"], error_type)
        return str(body["error"]["message"])

    async def requests_total(self) -> dict[tuple[str, str, str], float]:
        status, _, content = await self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        out = {}
        for family in text_string_to_metric_families(content.decode()):
            for sample in family.samples:
                if sample.name == "pylon_requests_total":
                    labels = sample.labels
                    key = (labels["route"], labels["model"], labels["status"])
                    out[key] = sample.value
        return out


class CountTokensTests(_RouteCase):
    """
    C{POST /v1/messages/count_tokens}: forwarded to Anthropic-format
    upstreams, estimated for the others.
    """

    server = {"api_keys": [CLIENT_KEY], "upstream_timeout_s": 0.5}

    def count(self, model: str, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("messages", HI)
        return in_thread(self.anthropic().messages.count_tokens, model=model, **kwargs)

    async def test_forwarded(self) -> None:
        """
        On an Anthropic-format model the count is the upstream's: the fake
        got the request with its own key and model, the client's body
        otherwise, the client's C{anthropic-beta} header and query string.
        """
        self.fake.enqueue(FakeReply(input_tokens=1234))
        tools = [{"name": "t", "input_schema": {"type": "object"}}]
        result = await self.count(
            "claude",
            system="Be brief.",
            tools=tools,
            extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
            extra_query={"beta": "true"},
        )
        self.assertEqual(result.input_tokens, 1234)
        (seen,) = self.fake.requests
        self.assertEqual(seen.path, "/v1/messages/count_tokens?beta=true")
        self.assertEqual(seen.headers["x-api-key"], ANTHROPIC_UPSTREAM_KEY)
        self.assertEqual(seen.headers["anthropic-version"], "2023-06-01")
        self.assertEqual(seen.headers["anthropic-beta"], "token-counting-2024-11-01")
        self.assertNotIn("authorization", seen.headers)
        self.assertNotIn(CLIENT_KEY, json.dumps(seen.headers))
        self.assertEqual(
            seen.json,
            {
                "model": "claude-up",
                "messages": HI,
                "system": "Be brief.",
                "tools": tools,
            },
        )

    async def test_reply_as_it_came(self) -> None:
        """
        The upstream's reply reaches the client byte for byte.
        """
        raw = b'{ "input_tokens" : 77, "context_management": null }'
        self.fake.enqueue(FakeReply(raw_body=raw))
        status, headers, content = await self.request(
            "POST",
            "/v1/messages/count_tokens",
            {"model": "claude", "messages": HI},
        )
        self.assertEqual((status, content), (200, raw))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])

    async def test_estimate(self) -> None:
        """
        On an OpenAI-format, a custom and the mock model the count is the
        offline estimate: positive, growing with the text, nothing sent
        upstream.
        """
        for model in ("gpt", "local", "mock"):
            short = await self.count(model)
            long = await self.count(
                model,
                messages=[{"role": "user", "content": "hi there " * 50}],
            )
            self.assertGreater(short.input_tokens, 0)
            self.assertGreater(long.input_tokens, short.input_tokens + 50)
            self.assertEqual(short.input_tokens, estimate_tokens({"messages": HI}))
        self.assertEqual(self.fake.requests, [])

    async def test_upstream_error(self) -> None:
        """
        An upstream 400 keeps its status and message, in Anthropic's shape,
        with the gateway's keys scrubbed out of it.
        """
        self.fake.enqueue(
            FakeReply(status=400, message=f"bad request for {ANTHROPIC_UPSTREAM_KEY}")
        )
        with self.assertRaises(anthropic.BadRequestError) as caught:
            await self.count("claude")
        text = json.dumps(caught.exception.body)
        self.assertIn("bad request for", text)
        self.assertNotIn(ANTHROPIC_UPSTREAM_KEY, text)
        self.assertEqual(caught.exception.body["type"], "error")

    async def test_upstream_timeout(self) -> None:
        """
        An upstream that does not answer in time is a 504 in Anthropic's
        shape; the upstream connection is closed.
        """
        self.fake.enqueue(FakeReply(stall_after=0))
        status, _, content = await self.request(
            "POST", "/v1/messages/count_tokens", {"model": "claude", "messages": HI}
        )
        self.assertEqual(status, 504)
        self.assertAnthropicError(content, "timeout_error")
        await within(self.fake.requests[0].disconnected)

    async def test_errors_in_anthropic_shape(self) -> None:
        """
        A bad body, an unknown model, a missing key and a wrong method are
        errors in Anthropic's shape.
        """
        path = "/v1/messages/count_tokens"
        status, _, content = await self.request("POST", path, {"model": "claude"})
        self.assertEqual(status, 400)
        self.assertIn(
            "messages", self.assertAnthropicError(content, "invalid_request_error")
        )
        status, _, content = await self.request(
            "POST", path, {"model": "nope", "messages": HI}
        )
        self.assertEqual(status, 404)
        self.assertAnthropicError(content, "not_found_error")
        status, _, content = await self.request(
            "POST",
            path,
            {"model": "claude", "messages": HI},
            headers={"Authorization": "Bearer wrong"},
        )
        self.assertEqual(status, 401)
        self.assertAnthropicError(content, "authentication_error")
        status, _, content = await self.request("GET", path)
        self.assertEqual(status, 405)
        self.assertAnthropicError(content, "invalid_request_error")
        self.assertEqual(self.fake.requests, [])

    async def test_client_leaves(self) -> None:
        """
        A client that disconnects cancels the upstream request.
        """
        self.fake.enqueue(FakeReply(stall_after=0))
        d = self.http.post(
            self.service.url + "/v1/messages/count_tokens",
            data=json.dumps({"model": "claude", "messages": HI}).encode(),
            headers={
                "Authorization": f"Bearer {CLIENT_KEY}",
                "Content-Type": "application/json",
            },
        )
        seen = await within(self.fake.wait_for_request())
        d.cancel()
        await within(seen.disconnected)
        self.failureResultOf(d)

    async def test_metrics(self) -> None:
        """
        Counted under their route and model.
        """
        self.fake.enqueue(FakeReply(input_tokens=5))
        await self.count("claude")
        await self.count("gpt")
        totals = await self.requests_total()
        route = "/v1/messages/count_tokens"
        self.assertEqual(totals[(route, "claude", "200")], 1.0)
        self.assertEqual(totals[(route, "gpt", "200")], 1.0)


class EmbeddingsTests(_RouteCase):
    """
    C{POST /v1/embeddings}: forwarded to OpenAI-format upstreams, made by the
    mock, refused for the others.
    """

    def embed(self, model: str, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("input", "hello")
        return in_thread(self.openai().embeddings.create, model=model, **kwargs)

    async def test_custom_byte_equal(self) -> None:
        """
        On a custom model the request reaches its C{/v1/embeddings} (with
        the model name, the body otherwise as sent) and the reply comes
        back byte for byte.
        """
        raw = (
            b'{"object": "list", "data": [{"object": "embedding", "index": 0,'
            b' "embedding": [0.5, -0.25, 1.0]}], "model": "emb-up",'
            b' "usage": {"prompt_tokens": 3, "total_tokens": 3}, "extra": 1}'
        )
        self.fake.enqueue(FakeReply(raw_body=raw))

        def call() -> Any:
            return self.openai().embeddings.with_raw_response.create(
                model="local", input=["a b c"], encoding_format="float", user="u1"
            )

        response = await in_thread(call)
        self.assertEqual(response.http_response.content, raw)
        self.assertEqual(response.parse().data[0].embedding, [0.5, -0.25, 1.0])
        (seen,) = self.fake.requests
        self.assertEqual(seen.path, "/v1/embeddings")
        self.assertEqual(
            seen.json,
            {
                "model": "local",
                "input": ["a b c"],
                "encoding_format": "float",
                "user": "u1",
            },
        )

    async def test_openai_forwarded(self) -> None:
        """
        On an OpenAI model the fake gets the upstream's key and model; the
        SDK's default base64 encoding goes through both ways.
        """
        self.fake.enqueue(FakeReply(embeddings=[(0.25, 0.5), (1.0, -1.0)]))
        result = await self.embed("gpt", input=["one", "two"])
        self.assertEqual([d.embedding for d in result.data], [[0.25, 0.5], [1.0, -1.0]])
        (seen,) = self.fake.requests
        self.assertEqual(seen.headers["authorization"], f"Bearer {OPENAI_UPSTREAM_KEY}")
        self.assertEqual(seen.json["model"], "gpt-up")
        self.assertEqual(seen.json["encoding_format"], "base64")
        totals = await self.requests_total()
        self.assertEqual(totals[("/v1/embeddings", "gpt", "200")], 1.0)

    async def test_mock(self) -> None:
        """
        The mock model makes deterministic unit vectors, the same as floats
        and as base64, different for different texts.
        """
        first = await self.embed("mock", input=["hello", "world"])
        again = await self.embed("mock", input="hello", encoding_format="float")
        self.assertEqual(first.model, MOCK_MODEL)
        vectors = [d.embedding for d in first.data]
        self.assertEqual(len(vectors[0]), 16)
        self.assertNotEqual(vectors[0], vectors[1])
        self.assertEqual(again.data[0].embedding, vectors[0])
        self.assertAlmostEqual(sum(v * v for v in vectors[0]), 1.0, places=5)
        self.assertEqual(self.fake.requests, [])

    async def test_anthropic_refused(self) -> None:
        """
        An Anthropic model cannot embed: a 400 that says so, nothing sent.
        """
        with self.assertRaises(openai.BadRequestError) as caught:
            await self.embed("claude")
        self.assertIn("cannot make embeddings", str(caught.exception))
        self.assertEqual(self.fake.requests, [])

    async def test_upstream_errors(self) -> None:
        """
        An upstream 401 is the gateway's own key: a 502 that names no key;
        a 400 keeps its status.
        """
        self.fake.enqueue(
            FakeReply(status=401, message=f"invalid key {OPENAI_UPSTREAM_KEY}"),
            FakeReply(status=400, message="input too long"),
        )
        status, _, content = await self.request(
            "POST", "/v1/embeddings", {"model": "gpt", "input": "x"}
        )
        self.assertEqual(status, 502)
        self.assertNotIn(OPENAI_UPSTREAM_KEY.encode(), content)
        self.assertOpenAIError(content, "upstream_error")
        status, _, content = await self.request(
            "POST", "/v1/embeddings", {"model": "gpt", "input": "x"}
        )
        self.assertEqual(status, 400)
        self.assertIn(
            "input too long", self.assertOpenAIError(content, "invalid_request_error")
        )

    async def test_bad_bodies(self) -> None:
        """
        A body without an input, and a mock request it cannot serve, are
        400s naming the field.
        """
        status, _, content = await self.request(
            "POST", "/v1/embeddings", {"model": "mock"}
        )
        self.assertEqual(status, 400)
        self.assertIn("input", self.assertOpenAIError(content, "invalid_request_error"))
        status, _, content = await self.request(
            "POST",
            "/v1/embeddings",
            {"model": "mock", "input": "x", "encoding_format": "int8"},
        )
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(content)["error"]["param"], "encoding_format")


class ModelInfoTests(_RouteCase):
    """
    C{GET /v1/models/{id}} with both SDKs.
    """

    async def test_openai(self) -> None:
        model = await in_thread(self.openai().models.retrieve, "gpt")
        self.assertEqual((model.id, model.object), ("gpt", "model"))
        self.assertEqual(model.owned_by, "pylon_ai")

    async def test_anthropic(self) -> None:
        model = await in_thread(self.anthropic().models.retrieve, "claude")
        self.assertEqual((model.id, model.type), ("claude", "model"))
        self.assertEqual(model.display_name, "claude")

    async def test_same_fields_as_the_list(self) -> None:
        for headers in ({}, {"anthropic-version": "2023-06-01"}):
            _, _, listed = await self.request("GET", "/v1/models", headers=headers)
            status, _, one = await self.request(
                "GET", "/v1/models/local", headers=headers
            )
            self.assertEqual(status, 200)
            entries = {e["id"]: e for e in json.loads(listed)["data"]}
            self.assertEqual(json.loads(one), entries["local"])

    async def test_unknown(self) -> None:
        """
        An unknown id is a 404 in the caller's shape.
        """
        with self.assertRaises(openai.NotFoundError) as caught:
            await in_thread(self.openai().models.retrieve, "nope")
        self.assertEqual(caught.exception.body["code"], "model_not_found")
        with self.assertRaises(anthropic.NotFoundError) as caught_a:
            await in_thread(self.anthropic().models.retrieve, "nope")
        self.assertEqual(caught_a.exception.body["type"], "error")
        self.assertEqual(caught_a.exception.body["error"]["type"], "not_found_error")

    async def test_key_needed(self) -> None:
        status, _, content = await self.request(
            "GET", "/v1/models/gpt", headers={"Authorization": "Bearer wrong"}
        )
        self.assertEqual(status, 401)
        self.assertOpenAIError(content, "authentication_error")

    async def test_metrics(self) -> None:
        await in_thread(self.openai().models.retrieve, "mock")
        totals = await self.requests_total()
        self.assertEqual(totals[("/v1/models/{id}", "mock", "200")], 1.0)


class MessagesPathsTests(_RouteCase):
    """
    Every path under C{/v1/messages} answers in Anthropic's shape.
    """

    async def test_unknown_path(self) -> None:
        for path in ("/v1/messages/nope", "/v1/messages/batches/x?beta=true"):
            status, _, content = await self.request("POST", path, {"model": "x"})
            self.assertEqual(status, 404)
            self.assertIn(
                "/v1/messages/", self.assertAnthropicError(content, "not_found_error")
            )

    async def test_lookalike_path(self) -> None:
        status, _, content = await self.request("GET", "/v1/messagesfoo")
        self.assertEqual(status, 404)
        self.assertOpenAIError(content, "invalid_request_error")


class NoKeyModeTests(_RouteCase):
    """
    Without keys, the new POST routes take JSON only (no page can drive
    them), as the others do.
    """

    server: dict[str, Any] | None = {}

    async def test_json_only(self) -> None:
        for path in ("/v1/messages/count_tokens", "/v1/embeddings"):
            response = await within(
                self.http.post(
                    self.service.url + path,
                    data=b'{"model": "mock", "input": "x", "messages": []}',
                    headers={"Content-Type": "text/plain"},
                )
            )
            self.assertEqual(response.code, 415, path)
            await treq.content(response)


class EstimateTests(SynchronousTestCase):
    """
    The offline token estimate.
    """

    def test_words_and_punctuation(self) -> None:
        """
        Common words and punctuation are a token each, as in GPT-4's
        vocabulary.
        """
        self.assertEqual(count_text("Hello, world!"), 4)
        self.assertEqual(count_text("The quick brown fox jumps over the lazy dog."), 10)
        self.assertEqual(count_text(""), 0)

    def test_long_pieces_split(self) -> None:
        self.assertEqual(count_text("cat"), 1)
        self.assertGreater(count_text("antidisestablishmentarianism"), 4)
        self.assertEqual(count_text("1234567"), 3)  # 123 456 7

    def test_dense_scripts(self) -> None:
        """
        Scripts without spaces count about a token per character.
        """
        self.assertGreaterEqual(count_text("你好世界你好世界"), 8)

    def test_english_within_bounds(self) -> None:
        """
        An English paragraph comes out near the usual four characters a
        token.
        """
        text = (
            "Twisted is an event-driven networking engine written in Python. "
            "It supports many protocols, and it makes writing servers and "
            "clients that handle thousands of connections straightforward. "
        ) * 5
        tokens = count_text(text)
        self.assertGreater(tokens, len(text) / 5.5)
        self.assertLess(tokens, len(text) / 3.5)

    def test_request(self) -> None:
        """
        The estimate adds an overhead per message and counts the system
        prompt, block contents, tool calls, tool results and tools.
        """
        one = estimate_tokens({"messages": HI})
        two = estimate_tokens({"messages": HI * 2})
        self.assertEqual(two - one, MESSAGE_OVERHEAD + 1)
        with_system = estimate_tokens({"messages": HI, "system": "Be brief."})
        self.assertGreater(with_system, one)
        blocks = [{"type": "text", "text": "hi"}]
        self.assertEqual(
            estimate_tokens({"messages": [{"role": "user", "content": blocks}]}), one
        )
        image = {"type": "image", "source": {"type": "base64", "data": "AAAA"}}
        self.assertEqual(
            estimate_tokens({"messages": [{"role": "user", "content": [image]}]}),
            one - 1 + IMAGE_TOKENS,
        )
        tool_round = [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "get", "input": {"a": 1}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}
                ],
            },
        ]
        self.assertGreater(estimate_tokens({"messages": HI + tool_round}), two)
        tools = [{"name": "get", "input_schema": {"type": "object"}}]
        self.assertGreater(estimate_tokens({"messages": HI, "tools": tools}), one)

    def test_malformed_parts_skipped(self) -> None:
        body = {"messages": [None, {"content": 3}, {"content": [None, 5]}], "tools": 1}
        self.assertGreaterEqual(estimate_tokens(body), 1)
        self.assertGreaterEqual(estimate_tokens({}), 1)


class MockEmbeddingsTests(SynchronousTestCase):
    def test_deterministic_unit(self) -> None:
        vector = mock_vector("a")
        self.assertEqual(vector, mock_vector("a"))
        self.assertNotEqual(vector, mock_vector("b"))
        self.assertAlmostEqual(sum(v * v for v in vector), 1.0, places=5)

    def test_shapes(self) -> None:
        floats = mock_embeddings({"input": ["a", "b"], "dimensions": 40})
        self.assertEqual([len(d["embedding"]) for d in floats["data"]], [40, 40])
        self.assertEqual([d["index"] for d in floats["data"]], [0, 1])
        coded = mock_embeddings({"input": "a", "encoding_format": "base64"})
        self.assertEqual(_floats(coded["data"][0]["embedding"]), mock_vector("a"))
        tokens = mock_embeddings({"input": [[1, 2], [3]]})
        self.assertEqual(len(tokens["data"]), 2)

    def test_refused(self) -> None:
        for body, param in (
            ({"input": []}, "input"),
            ({"input": [1, "a"]}, "input"),
            ({"input": "a", "dimensions": 0}, "dimensions"),
            ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ):
            with self.assertRaises(EmbeddingRequestError) as caught:
                mock_embeddings(body)
            self.assertEqual(caught.exception.param, param)


class URLTests(SynchronousTestCase):
    """
    Where each provider counts tokens and makes embeddings.
    """

    def test_anthropic(self) -> None:
        provider = AnthropicProvider("k", "m", "http://h:8/")
        self.assertEqual(
            provider.count_tokens_url, "http://h:8/v1/messages/count_tokens"
        )

    def test_openai(self) -> None:
        provider = OpenAIProvider("k", "m", "https://api.example.com")
        self.assertEqual(
            provider.embeddings_url, "https://api.example.com/v1/embeddings"
        )

    def test_custom(self) -> None:
        for base, expected in (
            ("http://h:11434", "http://h:11434/v1/embeddings"),
            ("http://h:11434/", "http://h:11434/v1/embeddings"),
            (
                "https://h/openai/v1/chat/completions",
                "https://h/openai/v1/embeddings",
            ),
            ("https://h/v1/chat/completions?x=1", "https://h/v1/embeddings?x=1"),
            ("https://h/api/generate", None),
        ):
            self.assertEqual(CustomProvider(base, "").embeddings_url, expected, base)
