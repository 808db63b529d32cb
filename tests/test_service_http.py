"""
The service over raw HTTP (treq, and a raw socket where the client must
misbehave), in front of a L{FakeProvider}: error shapes and statuses, the
model list, health and metrics, pass-through, errors inside streams, client
disconnects, CORS and keyless loopback use.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai.formats.chat import OpenAIStreamEncoder
from pylon_ai.formats.messages import AnthropicStreamEncoder
from pylon_ai.testing import FakeReply, _exchange

try:
    from tests._service import (
        CLIENT_KEY,
        Service,
        http_request,
        json_data,
        raw_connect,
        sse_data,
        sse_events,
        start_service,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import (  # type: ignore[no-redef]
        CLIENT_KEY,
        Service,
        http_request,
        json_data,
        raw_connect,
        sse_data,
        sse_events,
        start_service,
    )

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "hi"}]
#: How long a test waits for something that should come at once.
WAIT = 5.0


def within(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    """
    C{d}, failing with a timeout after C{seconds} rather than hanging.
    """
    return d.addTimeout(seconds, reactor)


def chat(model: str = "gpt", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HI, **extra}


def message(model: str = "claude", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 50, "messages": HI, **extra}


class _HTTPCase(TestCase):
    """
    A gateway in front of a fake, and an HTTP client without a persistent
    pool.
    """

    timeout = 20
    service: Service
    server: dict[str, Any] | None = None

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self, self.server)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    @property
    def fake(self) -> Any:
        return self.service.fake

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        """
        One request; its status, headers and whole body.
        """
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        all_headers = {"Content-Type": "application/json"} if data else {}
        all_headers.update(AUTH if headers is None else headers)
        response = await within(
            self.http.request(
                method, self.service.url + path, data=data, headers=all_headers
            )
        )
        content = await within(treq.content(response))
        return response.code, response.headers, content

    async def post(
        self,
        path: str,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        return await self.request("POST", path, body, headers)

    def assertOpenAIError(
        self, content: bytes, error_type: str, code: str | None
    ) -> dict[str, Any]:
        """
        C{content} is an OpenAI error body of this type and code.
        """
        body = json.loads(content)
        self.assertEqual(list(body), ["error"])
        error = body["error"]
        self.assertLessEqual({"message", "type", "code"}, set(error))
        self.assertIsInstance(error["message"], str)
        self.assertNotEqual(error["message"], "")
        self.assertEqual((error["type"], error["code"]), (error_type, code))
        return error  # type: ignore[no-any-return]

    def assertAnthropicError(self, content: bytes, error_type: str) -> dict[str, Any]:
        """
        C{content} is an Anthropic error body of this type.
        """
        body = json.loads(content)
        self.assertEqual(body["type"], "error")
        self.assertEqual(set(body), {"type", "error"})
        error = body["error"]
        self.assertEqual(error["type"], error_type)
        self.assertIsInstance(error["message"], str)
        self.assertNotEqual(error["message"], "")
        return error  # type: ignore[no-any-return]


class ErrorShapeTests(_HTTPCase):
    """
    Errors answered before anything goes upstream, in each route's shape.
    """

    server = {"api_keys": [CLIENT_KEY], "max_body_bytes": 4096}

    async def test_invalid_json(self) -> None:
        status, _, content = await self.post(CHAT, b'{"model": "gpt", ')
        self.assertEqual(status, 400)
        self.assertOpenAIError(content, "invalid_request_error", None)
        status, _, content = await self.post(MESSAGES, b"not json")
        self.assertEqual(status, 400)
        self.assertAnthropicError(content, "invalid_request_error")
        self.assertEqual(self.fake.requests, [])

    async def test_body_not_object(self) -> None:
        status, _, content = await self.post(CHAT, b"[1, 2]")
        self.assertEqual(status, 400)
        self.assertOpenAIError(content, "invalid_request_error", None)
        status, _, content = await self.post(MESSAGES, b'"text"')
        self.assertEqual(status, 400)
        self.assertAnthropicError(content, "invalid_request_error")

    async def test_messages_not_list(self) -> None:
        status, _, content = await self.post(CHAT, chat(messages="hi"))
        self.assertEqual(status, 400)
        error = self.assertOpenAIError(content, "invalid_request_error", None)
        self.assertEqual(error["param"], "messages")
        status, _, content = await self.post(MESSAGES, message(messages={"a": 1}))
        self.assertEqual(status, 400)
        self.assertIn(
            "messages",
            self.assertAnthropicError(content, "invalid_request_error")["message"],
        )
        self.assertEqual(self.fake.requests, [])

    async def test_stream_not_bool(self) -> None:
        status, _, content = await self.post(CHAT, chat(stream="yes"))
        self.assertEqual(status, 400)
        error = self.assertOpenAIError(content, "invalid_request_error", None)
        self.assertEqual(error["param"], "stream")
        status, _, content = await self.post(MESSAGES, message(stream=1))
        self.assertEqual(status, 400)
        self.assertAnthropicError(content, "invalid_request_error")
        self.assertEqual(self.fake.requests, [])

    async def test_model_missing(self) -> None:
        status, _, content = await self.post(CHAT, {"messages": HI})
        self.assertEqual(status, 400)
        error = self.assertOpenAIError(content, "invalid_request_error", None)
        self.assertEqual(error["param"], "model")
        status, _, content = await self.post(
            MESSAGES, {"max_tokens": 5, "messages": HI}
        )
        self.assertEqual(status, 400)
        self.assertAnthropicError(content, "invalid_request_error")

    async def test_max_tokens_string(self) -> None:
        status, _, content = await self.post(MESSAGES, message(max_tokens="10"))
        self.assertEqual(status, 400)
        error = self.assertAnthropicError(content, "invalid_request_error")
        self.assertIn("max_tokens", error["message"])
        self.assertEqual(self.fake.requests, [])

    async def test_unknown_model(self) -> None:
        status, _, content = await self.post(CHAT, chat("nope"))
        self.assertEqual(status, 404)
        error = self.assertOpenAIError(
            content, "invalid_request_error", "model_not_found"
        )
        self.assertIn("nope", error["message"])
        status, _, content = await self.post(MESSAGES, message("nope"))
        self.assertEqual(status, 404)
        self.assertAnthropicError(content, "not_found_error")
        self.assertEqual(self.fake.requests, [])

    async def test_missing_key(self) -> None:
        for path, body in ((CHAT, chat()), (MESSAGES, message())):
            status, _, content = await self.post(path, body, headers={})
            self.assertEqual(status, 401)
            if path == CHAT:
                self.assertOpenAIError(
                    content, "authentication_error", "invalid_api_key"
                )
            else:
                self.assertAnthropicError(content, "authentication_error")
        status, _, content = await self.request("GET", "/v1/models", headers={})
        self.assertEqual(status, 401)
        self.assertOpenAIError(content, "authentication_error", "invalid_api_key")
        self.assertEqual(self.fake.requests, [])

    async def test_wrong_key(self) -> None:
        for headers in (
            {"Authorization": "Bearer sk-wrong"},
            {"x-api-key": "sk-wrong"},
            {"Authorization": f"Basic {CLIENT_KEY}"},
            {"x-api-key": CLIENT_KEY[:-1]},
        ):
            status, _, content = await self.post(CHAT, chat(), headers=headers)
            self.assertEqual(status, 401, headers)
            self.assertOpenAIError(content, "authentication_error", "invalid_api_key")
            status, _, content = await self.post(MESSAGES, message(), headers=headers)
            self.assertEqual(status, 401, headers)
            self.assertAnthropicError(content, "authentication_error")
        self.assertEqual(self.fake.requests, [])

    async def test_both_key_headers_accepted(self) -> None:
        for headers in (
            {"Authorization": f"Bearer {CLIENT_KEY}"},
            {"x-api-key": CLIENT_KEY},
        ):
            status, _, content = await self.post(CHAT, chat(), headers=headers)
            self.assertEqual(status, 200, content)
            status, _, content = await self.post(MESSAGES, message(), headers=headers)
            self.assertEqual(status, 200, content)
            status, _, _ = await self.request("GET", "/v1/models", headers=headers)
            self.assertEqual(status, 200)
        self.assertEqual(len(self.fake.requests), 4)

    async def _too_large(self, path: str) -> tuple[bytes, Any]:
        """
        Send only the headers of a request whose C{Content-Length} is over
        the limit; the response and the connection's end.
        """
        client = await raw_connect(self, self.service.port_number)
        client.send(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {CLIENT_KEY}\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 100000000\r\n\r\n".encode()
        )
        await within(client.closed)
        head, _, body = client.data.partition(b"\r\n\r\n")
        return head, body

    async def test_too_large(self) -> None:
        """
        A C{Content-Length} over C{max_body_bytes} is a 413 in the route's
        shape, sent without reading the body, and the connection closes.
        """
        head, body = await self._too_large(CHAT)
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertOpenAIError(body, "invalid_request_error", "request_too_large")
        head, body = await self._too_large(MESSAGES)
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertAnthropicError(body, "request_too_large")
        self.assertEqual(self.fake.requests, [])

    async def test_too_large_chunked(self) -> None:
        """
        A chunked body that grows past the limit gets the 413 too.
        """
        client = await raw_connect(self, self.service.port_number)
        client.send(
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {CLIENT_KEY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + b"1000\r\n"
            + b"x" * 0x1000
            + b"\r\n"
            + b"1000\r\n"
            + b"x" * 0x1000
            + b"\r\n"
        )
        await within(client.closed)
        head, _, body = client.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertOpenAIError(body, "invalid_request_error", "request_too_large")

    async def test_under_the_limit(self) -> None:
        """
        A body just under the limit is served.
        """
        body = json.dumps(chat(user="u" * 100)).encode()
        status, _, content = await self.post(CHAT, body + b" " * (4096 - len(body)))
        self.assertEqual(status, 200, content)

    async def test_unknown_route(self) -> None:
        """
        An unknown route is a 404 in OpenAI's shape (no key needed to learn
        that), and not a "model not found".
        """
        status, _, content = await self.request("GET", "/v2/nothing", headers={})
        self.assertEqual(status, 404)
        error = self.assertOpenAIError(content, "invalid_request_error", None)
        self.assertIn("/v2/nothing", error["message"])

    async def test_wrong_method(self) -> None:
        """
        A known route with a method it does not serve is an error in the
        route's JSON shape, not Twisted's HTML page.
        """
        status, headers, content = await self.request("GET", CHAT)
        self.assertEqual(status, 405)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertOpenAIError(content, "invalid_request_error", None)
        status, _, content = await self.request("GET", MESSAGES)
        self.assertEqual(status, 405)
        self.assertAnthropicError(content, "invalid_request_error")


class UpstreamErrorTests(_HTTPCase):
    """
    Upstream failures before the stream began: statuses and shapes.
    """

    server = {"api_keys": [CLIENT_KEY], "upstream_timeout_s": 0.3}

    async def test_upstream_500(self) -> None:
        self.fake.enqueue(FakeReply(status=500), FakeReply(status=500))
        status, _, content = await self.post(CHAT, chat())
        self.assertEqual(status, 502)
        error = self.assertOpenAIError(content, "upstream_error", "upstream_error")
        self.assertNotIn(self.fake.base_url, error["message"])
        status, _, content = await self.post(MESSAGES, message("gpt", stream=True))
        self.assertEqual(status, 502)
        self.assertAnthropicError(content, "api_error")

    async def test_upstream_401_is_502(self) -> None:
        """
        An upstream 401 is the gateway's own key: a 502, never a 401.
        """
        self.fake.enqueue(FakeReply(status=401))
        status, _, content = await self.post(CHAT, chat("claude"))
        self.assertEqual(status, 502)
        self.assertOpenAIError(content, "upstream_error", "upstream_error")

    async def test_upstream_400_kept(self) -> None:
        """
        An upstream 400 is the client's mistake: status and message kept.
        """
        self.fake.enqueue(
            FakeReply(status=400, message="messages.0.content: bad", error_type=None)
        )
        status, _, content = await self.post(MESSAGES, message())
        self.assertEqual(status, 400)
        error = self.assertAnthropicError(content, "invalid_request_error")
        self.assertEqual(error["message"], "messages.0.content: bad")

    async def test_upstream_429(self) -> None:
        """
        An upstream 429 is a 429 with C{retry-after}.
        """
        self.fake.enqueue(FakeReply(status=429, retry_after=7))
        status, headers, content = await self.post(CHAT, chat())
        self.assertEqual(status, 429)
        self.assertOpenAIError(content, "rate_limit_error", "rate_limit_exceeded")
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"7"])

    async def test_upstream_429_anthropic_route(self) -> None:
        self.fake.enqueue(FakeReply(status=429, retry_after=3))
        status, headers, content = await self.post(MESSAGES, message("gpt"))
        self.assertEqual(status, 429)
        self.assertAnthropicError(content, "rate_limit_error")
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"3"])

    async def test_untranslatable_field(self) -> None:
        """
        A field that cannot be translated is a 400 naming it; advisory ones
        are dropped.
        """
        status, _, content = await self.post(CHAT, chat("claude", n=2))
        self.assertEqual(status, 400)
        error = self.assertOpenAIError(content, "invalid_request_error", None)
        self.assertEqual(error["param"], "n")
        self.assertEqual(self.fake.requests, [])
        status, _, content = await self.post(
            CHAT, chat("claude", user="someone", seed=7)
        )
        self.assertEqual(status, 200, content)
        self.assertNotIn("seed", self.fake.requests[0].json)
        self.assertNotIn("user", self.fake.requests[0].json)

    async def test_upstream_timeout(self) -> None:
        """
        No answer from the upstream within the timeout is a 504 (on a
        streamed upstream request: a whole body is awaited up to
        C{request_timeout_s}, see C{test_faithful}).
        """
        self.fake.enqueue(FakeReply(["late"], first_byte_delay=10))
        status, _, content = await self.post(MESSAGES, message("gpt"))
        self.assertEqual(status, 504)
        self.assertAnthropicError(content, "timeout_error")
        await within(self.fake.requests[0].disconnected)

    async def test_stream_error_non_streaming(self) -> None:
        """
        A provider error inside the upstream's 200 stream fails a
        non-streaming request rather than returning the partial text.
        """
        self.fake.enqueue(FakeReply(["partial"], stream_error=True))
        status, _, content = await self.post(CHAT, chat("claude"))
        self.assertEqual(status, 502)
        self.assertOpenAIError(content, "upstream_error", "upstream_error")


class ModelsHealthMetricsTests(_HTTPCase):
    async def test_models_openai(self) -> None:
        status, headers, content = await self.request("GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        body = json.loads(content)
        self.assertEqual(body["object"], "list")
        self.assertEqual(
            [(m["id"], m["object"]) for m in body["data"]],
            [
                ("claude", "model"),
                ("gpt", "model"),
                ("local", "model"),
                ("mock", "model"),
            ],
        )

    async def test_models_anthropic(self) -> None:
        status, _, content = await self.request(
            "GET",
            "/v1/models",
            headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
        )
        self.assertEqual(status, 200)
        body = json.loads(content)
        self.assertEqual(
            [(m["id"], m["type"]) for m in body["data"]],
            [
                ("claude", "model"),
                ("gpt", "model"),
                ("local", "model"),
                ("mock", "model"),
            ],
        )
        self.assertEqual(
            (body["has_more"], body["first_id"], body["last_id"]),
            (False, "claude", "mock"),
        )

    async def test_healthz(self) -> None:
        status, _, content = await self.request("GET", "/healthz", headers={})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(content), {"status": "ok"})

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        # With api_keys, /metrics needs a key (metrics_public defaults off).
        status, _, content = await self.request("GET", "/metrics", headers=AUTH)
        self.assertEqual(status, 200)
        samples = {}
        for family in text_string_to_metric_families(content.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = (
                    sample.value
                )
        return samples

    async def test_metrics(self) -> None:
        """
        After requests, the counter of C{/metrics} has their route, model
        and status.
        """
        samples = await self.metrics()
        self.assertEqual(samples[("pylon_streams_in_flight", ())], 0.0)
        self.assertNotIn("pylon_requests_total", {name for name, _ in samples})
        self.fake.enqueue(FakeReply(["hi"], usage=(5, 2)))
        status, _, _ = await self.post(CHAT, chat())
        self.assertEqual(status, 200)
        status, _, _ = await self.post(MESSAGES, message("nope"))
        self.assertEqual(status, 404)
        samples = await self.metrics()
        requests = {
            labels: value
            for (name, labels), value in samples.items()
            if name == "pylon_requests_total"
        }
        self.assertEqual(
            requests,
            {
                (("model", "gpt"), ("route", CHAT), ("status", "200")): 1.0,
                (("model", "unknown"), ("route", MESSAGES), ("status", "404")): 1.0,
            },
        )
        self.assertEqual(
            samples[("pylon_tokens_total", (("direction", "in"), ("model", "gpt")))],
            5.0,
        )
        self.assertEqual(
            samples[("pylon_tokens_total", (("direction", "out"), ("model", "gpt")))],
            2.0,
        )

    async def test_metrics_count_refused_requests(self) -> None:
        """
        Requests refused before they reach a model (bad JSON, a wrong key)
        are counted too, so that an operator sees them.
        """
        status, _, _ = await self.post(CHAT, b"{nope")
        self.assertEqual(status, 400)
        status, _, _ = await self.post(MESSAGES, message(), headers={})
        self.assertEqual(status, 401)
        samples = await self.metrics()
        requests = {
            labels: value
            for (name, labels), value in samples.items()
            if name == "pylon_requests_total"
        }
        self.assertEqual(
            requests,
            {
                (("model", "unknown"), ("route", CHAT), ("status", "400")): 1.0,
                (("model", "unknown"), ("route", MESSAGES), ("status", "401")): 1.0,
            },
        )

    async def test_streams_in_flight(self) -> None:
        """
        A stream open now counts in C{pylon_streams_in_flight}; a stream
        whose client left does not any more.
        """
        self.fake.enqueue(FakeReply(["a", "b"], stall_after=1))
        client = await raw_connect(self, self.service.port_number)
        client.send(http_request("POST", CHAT, chat(stream=True), AUTH))
        await within(client.until(lambda data: b'"content":"a"' in data))
        samples = await self.metrics()
        self.assertEqual(samples[("pylon_streams_in_flight", ())], 1.0)
        client.close()
        await within(self.fake.requests[0].disconnected)
        samples = await self.metrics()
        self.assertEqual(samples[("pylon_streams_in_flight", ())], 0.0)


class OverheadHeaderTests(_HTTPCase):
    def overhead(self, headers: Any) -> float:
        values = headers.getRawHeaders(b"x-pylon-overhead-ms")
        self.assertEqual(len(values or []), 1, values)
        value = float(values[0])
        self.assertGreaterEqual(value, 0.0)
        self.assertLess(value, 5000.0)
        return value

    async def test_non_streaming(self) -> None:
        for path, body in ((CHAT, chat()), (MESSAGES, message("gpt"))):
            status, headers, _ = await self.post(path, body)
            self.assertEqual(status, 200)
            self.overhead(headers)

    async def test_streaming(self) -> None:
        for path, body in ((CHAT, chat(stream=True)), (MESSAGES, message(stream=True))):
            status, headers, content = await self.post(path, body)
            self.assertEqual(status, 200)
            self.assertEqual(
                headers.getRawHeaders(b"content-type"),
                [b"text/event-stream; charset=utf-8"],
            )
            self.overhead(headers)
            self.assertNotEqual(sse_data(content), [])

    async def test_error(self) -> None:
        self.fake.enqueue(FakeReply(status=500))
        status, headers, _ = await self.post(CHAT, chat())
        self.assertEqual(status, 502)
        self.overhead(headers)


def recording_encoders(case: TestCase) -> list[bytes]:
    """
    Make the fake's stream encoders note every byte they produce (what the
    fake sends), and return where they note it.
    """
    sent: list[bytes] = []

    def recording(cls: type) -> type:
        class Recording(cls):  # type: ignore[valid-type,misc]
            def start(self) -> bytes:
                out: bytes = super().start()
                sent.append(out)
                return out

            def encode(self, event: Any) -> bytes:
                out: bytes = super().encode(event)
                sent.append(out)
                return out

            def finish(self) -> bytes:
                out: bytes = super().finish()
                sent.append(out)
                return out

        return Recording

    case.patch(_exchange, "OpenAIStreamEncoder", recording(OpenAIStreamEncoder))
    case.patch(_exchange, "AnthropicStreamEncoder", recording(AnthropicStreamEncoder))
    return sent


class PassThroughTests(_HTTPCase):
    """
    A stream in the upstream's own format goes through unchanged.
    """

    async def test_openai_custom_events(self) -> None:
        """
        The C{data:} payloads the client gets are those the fake sent, but
        the usage chunk the gateway asked for itself.
        """
        sent = recording_encoders(self)
        self.fake.enqueue(FakeReply(["Hel", "lo"], usage=(4, 2)))
        status, _, content = await self.post(CHAT, chat("local", stream=True))
        self.assertEqual(status, 200)
        upstream = sse_data(b"".join(sent))
        self.assertEqual(
            [json.loads(d)["choices"] for d in upstream[:-1]][-1], []
        )  # the fake did send a usage chunk
        self.assertEqual(upstream[-1], "[DONE]")
        self.assertEqual(sse_data(content), [*upstream[:-2], "[DONE]"])
        self.assertNotIn("authorization", self.fake.requests[0].headers)

    async def test_custom_without_model(self) -> None:
        """
        A C{custom} model configured without an upstream C{model} sends the
        name the client asked for (Ollama and vLLM require a model), passed
        through or translated.
        """
        self.fake.enqueue(FakeReply(["a"]), FakeReply(["b"]))
        status, _, _ = await self.post(CHAT, chat("local", stream=True))
        self.assertEqual(status, 200)
        status, _, _ = await self.post(MESSAGES, message("local"))
        self.assertEqual(status, 200)
        self.assertEqual(
            [(r.json["model"], sorted(r.json)) for r in self.fake.requests],
            [
                ("local", ["messages", "model", "stream", "stream_options"]),
                (
                    "local",
                    ["max_tokens", "messages", "model", "stream", "stream_options"],
                ),
            ],
        )

    async def test_openai_custom_events_with_usage(self) -> None:
        """
        A client that asked for usage gets every event the fake sent.
        """
        sent = recording_encoders(self)
        self.fake.enqueue(FakeReply(["Hel", "lo"], usage=(4, 2)))
        status, _, content = await self.post(
            CHAT, chat("local", stream=True, stream_options={"include_usage": True})
        )
        self.assertEqual(status, 200)
        self.assertEqual(sse_data(content), sse_data(b"".join(sent)))
        self.assertEqual(json.loads(sse_data(content)[-2])["usage"]["total_tokens"], 6)

    async def test_openai_bytes(self) -> None:
        """
        The bytes of the events are the upstream's, not re-encoded (odd
        spacing and key order kept), without the usage chunk.
        """
        events = [
            b'data: {"id": "c1", "object": "chat.completion.chunk", "created": 1, '
            b'"model": "odd-model", "choices": [{"index": 0, "delta": {"role": '
            b'"assistant", "content": ""}, "finish_reason": null}], "usage": null}\n\n',
            b'data: {"choices": [{"delta": {"content": "Hi \\u00e9"}, "index": 0, '
            b'"finish_reason": null}], "id": "c1", "object": "chat.completion.chunk", '
            b'"created": 1, "model": "odd-model", "usage": null}\n\n',
            b'data: {"id": "c1", "object": "chat.completion.chunk", "created": 1, '
            b'"model": "odd-model", "choices": [{"index": 0, "delta": {}, '
            b'"finish_reason": "stop"}], "usage": null}\n\n',
        ]
        usage = (
            b'data: {"id": "c1", "object": "chat.completion.chunk", "created": 1, '
            b'"model": "odd-model", "choices": [], "usage": {"prompt_tokens": 3, '
            b'"completion_tokens": 2, "total_tokens": 5}}\n\n'
        )
        done = b"data: [DONE]\n\n"
        self.fake.enqueue(
            FakeReply(raw_body=b"".join([*events, usage, done])),
            FakeReply(raw_body=b"".join([*events, usage, done])),
        )
        status, _, content = await self.post(CHAT, chat("local", stream=True))
        self.assertEqual(status, 200)
        self.assertEqual(content, b"".join([*events, done]))
        status, _, content = await self.post(
            CHAT, chat("gpt", stream=True, stream_options={"include_usage": True})
        )
        self.assertEqual(status, 200)
        self.assertEqual(content, b"".join([*events, usage, done]))

    async def test_anthropic_events(self) -> None:
        """
        An Anthropic stream to the Anthropic route: the events the fake sent.
        """
        sent = recording_encoders(self)
        self.fake.enqueue(FakeReply(["Hel", "lo"], usage=(4, 2)))
        status, _, content = await self.post(MESSAGES, message(stream=True))
        self.assertEqual(status, 200)
        upstream = sse_events(b"".join(sent))
        self.assertEqual(upstream[-1][0], "message_stop")
        self.assertEqual(sse_events(content), upstream)


class StreamFailureTests(_HTTPCase):
    """
    A failure after the stream began ends it with an error event in the
    route's format: no clean end.
    """

    async def assertOpenAIStreamFailed(self, content: bytes, text: str) -> None:
        data = sse_data(content)
        self.assertNotIn("[DONE]", data)
        chunks = [json.loads(d) for d in data]
        self.assertEqual(
            "".join(
                c["choices"][0]["delta"].get("content") or ""
                for c in chunks
                if c.get("choices")
            ),
            text,
        )
        self.assertEqual([c for c in chunks if "error" in c], [chunks[-1]])
        self.assertLessEqual({"message", "type", "code"}, set(chunks[-1]["error"]))
        self.assertNotIn(
            "stop",
            [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")],
        )

    async def assertAnthropicStreamFailed(self, content: bytes, text: str) -> None:
        events = sse_events(content)
        names = [name for name, _ in events]
        self.assertEqual(names[-1], "error")
        self.assertEqual(names.count("error"), 1)
        self.assertNotIn("message_stop", names)
        body = json.loads(events[-1][1])
        self.assertEqual(body["type"], "error")
        self.assertEqual(set(body["error"]), {"type", "message"})
        deltas = [json.loads(d) for name, d in events if name == "content_block_delta"]
        self.assertEqual("".join(d["delta"].get("text", "") for d in deltas), text)

    async def test_openai_stream_error(self) -> None:
        for model in ("gpt", "claude", "local"):
            self.fake.enqueue(FakeReply(["par", "tial"], stream_error=True))
            status, _, content = await self.post(CHAT, chat(model, stream=True))
            self.assertEqual(status, 200)
            await self.assertOpenAIStreamFailed(content, "partial")

    async def test_anthropic_stream_error(self) -> None:
        for model in ("claude", "gpt"):
            self.fake.enqueue(
                FakeReply(
                    ["par", "tial"], stream_error=True, error_type="overloaded_error"
                )
            )
            status, _, content = await self.post(MESSAGES, message(model, stream=True))
            self.assertEqual(status, 200)
            await self.assertAnthropicStreamFailed(content, "partial")
            error = json.loads(sse_events(content)[-1][1])["error"]
            self.assertEqual(error["type"], "overloaded_error")

    async def test_openai_drop(self) -> None:
        for model in ("gpt", "claude"):
            self.fake.enqueue(FakeReply(["par", "tial", "more"], drop_after=2))
            status, _, content = await self.post(CHAT, chat(model, stream=True))
            self.assertEqual(status, 200)
            await self.assertOpenAIStreamFailed(content, "partial")

    async def test_anthropic_drop(self) -> None:
        for model in ("claude", "gpt"):
            self.fake.enqueue(FakeReply(["par", "tial", "more"], drop_after=2))
            status, _, content = await self.post(MESSAGES, message(model, stream=True))
            self.assertEqual(status, 200)
            await self.assertAnthropicStreamFailed(content, "partial")


class DisconnectTests(_HTTPCase):
    """
    A client that leaves cancels the upstream request at once.
    """

    async def _leave(
        self, path: str, body: dict[str, Any], reply: FakeReply, wait_for: bytes | None
    ) -> None:
        self.fake.enqueue(reply)
        client = await raw_connect(self, self.service.port_number)
        client.send(http_request("POST", path, body, AUTH))
        if wait_for is None:
            await within(self.fake.wait_for_request())
            self.assertEqual(client.data, b"")
        else:
            await within(client.until(lambda data: wait_for in data))
        client.close()
        await within(self.fake.requests[0].disconnected)
        self.assertEqual(self.service.gateway.active, set())
        self.assertEqual(
            [
                b.in_flight
                for group in self.service.gateway.backends.values()
                for b in group
            ],
            [0, 0, 0, 0],
        )

    async def test_mid_stream(self) -> None:
        await self._leave(
            CHAT,
            chat(stream=True),
            FakeReply([f"w{i} " for i in range(200)], chunk_delay=0.05),
            b'"content":"w0 "',
        )

    async def test_mid_stream_translated(self) -> None:
        await self._leave(
            MESSAGES,
            message("gpt", stream=True),
            FakeReply([f"w{i} " for i in range(200)], chunk_delay=0.05),
            b'"text":"w0 "',
        )

    async def test_before_first_byte(self) -> None:
        await self._leave(
            CHAT, chat(stream=True), FakeReply(["late"], first_byte_delay=30), None
        )

    async def test_non_streaming_before_headers(self) -> None:
        await self._leave(
            MESSAGES, message(), FakeReply(["late"], first_byte_delay=30), None
        )

    async def test_close_right_after_sending(self) -> None:
        """
        A client that closes right after sending its request: whether or
        not the request got to the upstream, nothing of it is left open.
        """
        self.fake.enqueue(FakeReply(["late"], first_byte_delay=30))
        client = await raw_connect(self, self.service.port_number)
        client.send(http_request("POST", CHAT, chat(stream=True), AUTH))
        client.close()
        await within(client.closed)
        # A request to the mock model, on another connection, for the
        # gateway to have handled the first one's close by the time it ends.
        status, _, _ = await self.post(CHAT, chat("mock"))
        self.assertEqual(status, 200)
        self.assertEqual(self.service.gateway.active, set())
        self.assertEqual(self.service.gateway.backends["gpt"][0].in_flight, 0)
        for request in self.fake.requests:
            await within(request.disconnected)

    async def test_non_streaming_while_upstream_streams(self) -> None:
        """
        A non-streaming request is served from an upstream stream; the client
        leaving in the middle of it cancels it.
        """
        self.fake.enqueue(FakeReply([f"w{i} " for i in range(200)], chunk_delay=0.05))
        client = await raw_connect(self, self.service.port_number)
        client.send(http_request("POST", CHAT, chat("claude"), AUTH))
        request = await within(self.fake.wait_for_request())
        self.assertEqual(request.json["stream"], True)
        client.close()
        await within(request.disconnected)
        self.assertEqual(client.data, b"")


class CorsTests(_HTTPCase):
    server = {"api_keys": [CLIENT_KEY], "cors_origins": ["https://app.example.com"]}

    async def preflight(self, origin: str) -> tuple[int, Any]:
        status, headers, _ = await self.request(
            "OPTIONS",
            CHAT,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        return status, headers

    async def test_allowed_origin(self) -> None:
        status, headers = await self.preflight("https://app.example.com")
        self.assertIn(status, (200, 204))
        self.assertEqual(
            headers.getRawHeaders(b"access-control-allow-origin"),
            [b"https://app.example.com"],
        )
        allowed = headers.getRawHeaders(b"access-control-allow-headers")[0].lower()
        self.assertIn(b"authorization", allowed)
        self.assertIn(b"content-type", allowed)
        self.assertIn(
            b"POST", headers.getRawHeaders(b"access-control-allow-methods")[0]
        )

    async def test_other_origin(self) -> None:
        _, headers = await self.preflight("https://evil.example.com")
        self.assertIsNone(headers.getRawHeaders(b"access-control-allow-origin"))
        self.assertIsNone(headers.getRawHeaders(b"access-control-allow-headers"))

    async def test_post_from_allowed_origin(self) -> None:
        status, headers, _ = await self.post(
            CHAT, chat(), headers={**AUTH, "Origin": "https://app.example.com"}
        )
        self.assertEqual(status, 200)
        self.assertEqual(
            headers.getRawHeaders(b"access-control-allow-origin"),
            [b"https://app.example.com"],
        )


class NoKeysTests(_HTTPCase):
    """
    With no C{api_keys}, a client on loopback needs no key.
    """

    server: dict[str, Any] = {}

    async def test_no_key(self) -> None:
        status, _, content = await self.post(CHAT, chat(), headers={})
        self.assertEqual(status, 200, content)
        self.assertEqual(
            json.loads(content)["choices"][0]["message"]["content"],
            "Hello from the fake.",
        )
        status, _, content = await self.post(
            MESSAGES, message("gpt", stream=True), headers={}
        )
        self.assertEqual(status, 200)
        self.assertEqual(
            "".join(
                d["delta"]["text"]
                for d in json_data(content)
                if d["type"] == "content_block_delta"
            ),
            "Hello from the fake.",
        )
        status, _, _ = await self.request("GET", "/v1/models", headers={})
        self.assertEqual(status, 200)
