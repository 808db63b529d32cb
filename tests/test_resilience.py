"""
Retries, other deployments, cooldowns and fallbacks, over real sockets with
the fake provider scripted to fail.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai._errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeout,
    ProviderTLSError,
)
from pylon_ai.gateway._attempts import classify
from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._service import json_data, sse_data
except ImportError:  # run from inside tests/
    from _service import json_data, sse_data  # type: ignore[no-redef]

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


class ClassifyTests(TestCase):
    """
    Which failures are worth another attempt.
    """

    def test_kinds(self) -> None:
        self.assertEqual(classify(ProviderConnectionError("refused")), "retry")
        self.assertEqual(classify(ProviderTimeout("slow")), "retry")
        self.assertEqual(classify(ProviderTLSError("bad cert")), "failover")
        for status in (408, 409, 429, 500, 502, 503, 529):
            self.assertEqual(classify(ProviderError("x", status=status)), "retry")
        for status in (401, 403):
            self.assertEqual(classify(ProviderError("x", status=status)), "failover")
        for status in (400, 404, 413, 422):
            self.assertEqual(classify(ProviderError("x", status=status)), "final")
        self.assertEqual(classify(ProviderStreamError("dropped")), "retry")
        self.assertEqual(classify(ValueError("bug")), "final")


class _Case(TestCase):
    """
    Fakes as upstreams and a gateway with the models a test names.
    """

    timeout = 20

    async def fake(self) -> FakeProvider:
        fake = FakeProvider(reactor)
        await fake.start()
        self.addCleanup(fake.stop)
        return fake

    async def gateway(self, models: list[dict[str, Any]]) -> str:
        config = parse_config({"models": models}, {})
        self.gw = Gateway(config, reactor)
        self.addCleanup(self.gw.close)
        site = make_site(self.gw)
        self.addCleanup(site.close_connections, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        return f"http://127.0.0.1:{port.getHost().port}"

    async def post(self, url: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
        d: Deferred[Any] = self.http.post(
            url + CHAT,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        response = await d.addTimeout(15, reactor)
        content = await treq.content(response)
        return response.code, response.headers, content


def _model(fake: FakeProvider | str, name: str = "m", **extra: Any) -> dict[str, Any]:
    base = fake if isinstance(fake, str) else fake.base_url
    return {
        "name": name,
        "provider": "custom",
        "base_url": base,
        "api_key": "",
        "retry_backoff_s": 0.01,
        **extra,
    }


class RetryTests(_Case):
    """
    Failures before the first byte are retried; after it, never.
    """

    async def test_429_retry_after_then_success(self) -> None:
        """
        A 429 with C{retry-after} is retried after the time it asks for (not
        the short backoff), and the client only sees the success.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake)])
        fake.enqueue(FakeReply(status=429, retry_after=0.3), FakeReply(chunks=["ok"]))
        began = reactor.seconds()
        status, _, body = await self.post(url, {"model": "m", "messages": HI})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "ok")
        self.assertEqual(len(fake.requests), 2)
        self.assertGreaterEqual(reactor.seconds() - began, 0.29)

    async def test_500_then_success_streaming(self) -> None:
        """
        A 500 before the stream began is retried; the client gets one clean
        stream.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake)])
        fake.enqueue(FakeReply(status=500), FakeReply(chunks=["a", "b"]))
        status, _, body = await self.post(
            url, {"model": "m", "messages": HI, "stream": True}
        )
        self.assertEqual(status, 200)
        chunks = json_data(body)
        text = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in chunks
            if c.get("choices")
        )
        self.assertEqual(text, "ab")
        self.assertEqual(sse_data(body)[-1], "[DONE]")
        self.assertEqual(len(fake.requests), 2)

    async def test_attempts_bounded(self) -> None:
        """
        At most C{retries} + 1 attempts; then the last failure reaches the
        client.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake, retries=2)])
        fake.enqueue(*[FakeReply(status=503)] * 5)
        status, _, _ = await self.post(url, {"model": "m", "messages": HI})
        self.assertEqual(status, 502)
        self.assertEqual(len(fake.requests), 3)

    async def test_client_mistake_not_retried(self) -> None:
        """
        An upstream 400 is the client's: passed on at once.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake)])
        fake.enqueue(FakeReply(status=400, message="bad"), FakeReply(chunks=["x"]))
        status, _, _ = await self.post(url, {"model": "m", "messages": HI})
        self.assertEqual(status, 400)
        self.assertEqual(len(fake.requests), 1)

    async def test_no_retry_after_first_byte(self) -> None:
        """
        A stream that broke after it began is never retried (the client
        would get a spliced stream): it ends with an error event.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake)])
        fake.enqueue(FakeReply(chunks=["a", "b", "c"], drop_after=2))
        fake.enqueue(FakeReply(chunks=["x"]))
        status, _, body = await self.post(
            url, {"model": "m", "messages": HI, "stream": True}
        )
        self.assertEqual(status, 200)
        self.assertIn("error", json.loads(sse_data(body)[-1]))
        self.assertEqual(len(fake.requests), 1)

    async def test_retry_after_capped(self) -> None:
        """
        A C{retry-after} longer than C{retry_max_wait_s} waits no longer
        than that.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake, retry_max_wait_s=0.1)])
        fake.enqueue(FakeReply(status=429, retry_after=60), FakeReply(chunks=["ok"]))
        began = reactor.seconds()
        status, _, _ = await self.post(url, {"model": "m", "messages": HI})
        self.assertEqual(status, 200)
        self.assertLess(reactor.seconds() - began, 5)

    async def test_budget(self) -> None:
        """
        No attempt starts past C{retry_budget_s}: the failure is returned.
        """
        fake = await self.fake()
        url = await self.gateway(
            [_model(fake, retry_budget_s=0.5, retry_max_wait_s=10)]
        )
        fake.enqueue(FakeReply(status=429, retry_after=5), FakeReply(chunks=["x"]))
        status, headers, _ = await self.post(url, {"model": "m", "messages": HI})
        self.assertEqual(status, 429)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"5"])
        self.assertEqual(len(fake.requests), 1)


class DeploymentTests(_Case):
    """
    Several deployments under one name: load spread, failover, cooldown,
    and fallbacks to other names.
    """

    async def test_connection_refused_goes_to_other_deployment(self) -> None:
        """
        A deployment that refuses connections is skipped for another one at
        once, within the same request.
        """
        fake = await self.fake()
        dead = await self.fake()
        dead_url = dead.base_url
        await dead.stop()
        url = await self.gateway([_model(dead_url), _model(fake)])
        fake.enqueue(FakeReply(chunks=["up"]), FakeReply(chunks=["up"]))
        for _ in range(2):
            status, _, body = await self.post(url, {"model": "m", "messages": HI})
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "up")

    async def test_cooldown(self) -> None:
        """
        A deployment that failed C{cooldown_failures} times in a row rests:
        the next requests go straight to the other one.
        """
        bad = await self.fake()
        good = await self.fake()
        url = await self.gateway(
            [
                _model(bad, cooldown_failures=1, cooldown_s=60),
                _model(good, cooldown_failures=1, cooldown_s=60),
            ]
        )
        bad.enqueue(*[FakeReply(status=500)] * 5)
        good.enqueue(*[FakeReply(chunks=["ok"])] * 5)
        for _ in range(4):
            status, _, _ = await self.post(url, {"model": "m", "messages": HI})
            self.assertEqual(status, 200)
        self.assertLessEqual(len(bad.requests), 1)
        self.assertEqual(len(good.requests), 4)

    async def test_spread(self) -> None:
        """
        Concurrent requests are spread: the deployment with fewer requests
        in flight gets the next one.
        """
        a = await self.fake()
        b = await self.fake()
        url = await self.gateway([_model(a), _model(b)])
        slow = FakeReply(chunks=["s"], first_byte_delay=0.3)
        a.enqueue(slow, slow)
        b.enqueue(slow, slow)
        results = await Deferred.fromCoroutine(self._both(url))
        self.assertEqual([r[0] for r in results], [200, 200])
        self.assertEqual((len(a.requests), len(b.requests)), (1, 1))

    async def _both(self, url: str) -> list[Any]:
        from twisted.internet.defer import gatherResults

        body = {"model": "m", "messages": HI}
        return await gatherResults(
            [
                Deferred.fromCoroutine(self.post(url, body)),
                Deferred.fromCoroutine(self.post(url, body)),
            ]
        )

    async def test_fallback(self) -> None:
        """
        When every deployment of a model failed, its fallbacks are tried in
        order, whatever their format.
        """
        first = await self.fake()
        second = await self.fake()
        url = await self.gateway(
            [
                _model(first, retries=0, fallbacks=["other"]),
                {
                    "name": "other",
                    "provider": "anthropic",
                    "model": "claude-fb",
                    "api_key": "k",
                    "base_url": second.base_url,
                },
            ]
        )
        first.enqueue(FakeReply(status=500))
        second.enqueue(FakeReply(chunks=["from ", "fallback"]))
        status, _, body = await self.post(
            url, {"model": "m", "messages": HI, "stream": True}
        )
        self.assertEqual(status, 200)
        text = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in json_data(body)
            if c.get("choices")
        )
        self.assertEqual(text, "from fallback")
        self.assertEqual(second.requests[0].path, "/v1/messages")

    async def test_401_fails_over_not_retried(self) -> None:
        """
        An upstream 401 (the gateway's own key) is not retried on the same
        deployment, but another deployment is tried.
        """
        bad = await self.fake()
        good = await self.fake()
        url = await self.gateway([_model(bad), _model(good)])
        bad.enqueue(*[FakeReply(status=401)] * 3)
        good.enqueue(FakeReply(chunks=["ok"]))
        status, _, _ = await self.post(url, {"model": "m", "messages": HI})
        self.assertEqual(status, 200)
        self.assertLessEqual(len(bad.requests), 1)


class TimeoutTests(_Case):
    """
    First-byte and whole-request timeouts, in the caller's format.
    """

    async def test_first_byte_timeout_is_504(self) -> None:
        """
        No first byte within C{first_byte_timeout_s}: 504 before streaming,
        and the upstream request is closed.
        """
        fake = await self.fake()
        url = await self.gateway(
            [_model(fake, retries=0, first_byte_timeout_s=0.2, timeout_s=30)]
        )
        fake.enqueue(FakeReply(chunks=["late"], first_byte_delay=10))
        status, _, body = await self.post(
            url, {"model": "m", "messages": HI, "stream": True}
        )
        self.assertEqual(status, 504)
        self.assertEqual(json.loads(body)["error"]["type"], "timeout_error")
        await fake.requests[0].disconnected.addTimeout(5, reactor)

    async def test_first_byte_timeout_retried(self) -> None:
        """
        A first-byte timeout is worth another attempt.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake, first_byte_timeout_s=0.2)])
        fake.enqueue(
            FakeReply(chunks=["late"], first_byte_delay=10), FakeReply(chunks=["ok"])
        )
        status, _, _ = await self.post(
            url, {"model": "m", "messages": HI, "stream": True}
        )
        self.assertEqual(status, 200)
        self.assertEqual(len(fake.requests), 2)

    async def test_request_timeout_mid_stream(self) -> None:
        """
        A stream that outlives C{request_timeout_s} ends with an error event
        (the chunks before it were delivered), and no C{[DONE]}.
        """
        fake = await self.fake()
        url = await self.gateway([_model(fake, retries=0, request_timeout_s=0.5)])
        fake.enqueue(FakeReply(chunks=["a"] * 50, chunk_delay=0.05))
        status, _, body = await self.post(
            url, {"model": "m", "messages": HI, "stream": True}
        )
        self.assertEqual(status, 200)
        data = sse_data(body)
        self.assertNotIn("[DONE]", data)
        error = json.loads(data[-1])["error"]
        self.assertEqual(error["type"], "timeout_error")
        self.assertGreater(len(data), 3)


class LimitTests(_Case):
    """
    Concurrency and rate limits answer in the caller's format with
    C{retry-after}, and free their slot when a request ends.
    """

    async def limited(self, server: dict[str, Any]) -> tuple[FakeProvider, str]:
        fake = await self.fake()
        config = parse_config({"server": server, "models": [_model(fake)]}, {})
        self.gw = Gateway(config, reactor)
        self.addCleanup(self.gw.close)
        site = make_site(self.gw)
        self.addCleanup(site.close_connections, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        return fake, f"http://127.0.0.1:{port.getHost().port}"

    async def post_key(
        self, url: str, key: str, path: str = CHAT
    ) -> tuple[int, Any, bytes]:
        body = {"model": "m", "messages": HI, "max_tokens": 5}
        d: Deferred[Any] = self.http.post(
            url + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "x-api-key": key},
        )
        response = await d.addTimeout(15, reactor)
        return response.code, response.headers, await treq.content(response)

    async def test_process_concurrency(self) -> None:
        """
        Past C{max_concurrent} requests in flight: 503 with retry-after, in
        the Anthropic shape on /v1/messages; the slot frees when the slow
        request ends.
        """
        fake, url = await self.limited({"api_keys": ["k1"], "max_concurrent": 1})
        fake.enqueue(FakeReply(chunks=["slow"], first_byte_delay=0.5))
        fake.enqueue(FakeReply(chunks=["next"]))
        slow = Deferred.fromCoroutine(self.post_key(url, "k1"))
        await fake.wait_for_request()
        status, headers, body = await self.post_key(url, "k1", "/v1/messages")
        self.assertEqual(status, 503)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertEqual(json.loads(body)["type"], "error")
        self.assertEqual((await slow)[0], 200)
        self.assertEqual((await self.post_key(url, "k1"))[0], 200)
        self.assertEqual(self.gw.limits.in_flight, 0)

    async def test_per_key_concurrency(self) -> None:
        """
        Past C{max_concurrent_per_key}: 429 for that key only.
        """
        fake, url = await self.limited(
            {"api_keys": ["k1", "k2"], "max_concurrent_per_key": 1}
        )
        fake.enqueue(FakeReply(chunks=["slow"], first_byte_delay=0.5))
        fake.enqueue(FakeReply(chunks=["other"]))
        slow = Deferred.fromCoroutine(self.post_key(url, "k1"))
        await fake.wait_for_request()
        status, headers, body = await self.post_key(url, "k1")
        self.assertEqual(status, 429)
        self.assertEqual(json.loads(body)["error"]["type"], "rate_limit_error")
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertEqual((await self.post_key(url, "k2"))[0], 200)
        self.assertEqual((await slow)[0], 200)

    async def test_requests_per_minute(self) -> None:
        """
        Past C{requests_per_minute_per_key}: 429 with the seconds until the
        window has room again.
        """
        fake, url = await self.limited(
            {"api_keys": ["k1", "k2"], "requests_per_minute_per_key": 2}
        )
        fake.enqueue(*[FakeReply(chunks=["x"])] * 3)
        self.assertEqual((await self.post_key(url, "k1"))[0], 200)
        self.assertEqual((await self.post_key(url, "k1"))[0], 200)
        status, headers, _ = await self.post_key(url, "k1")
        self.assertEqual(status, 429)
        wait = int(headers.getRawHeaders(b"retry-after")[0])
        self.assertTrue(55 <= wait <= 60, wait)
        self.assertEqual((await self.post_key(url, "k2"))[0], 200)

    async def test_unknown_model_spends_no_quota(self) -> None:
        """
        A request for a model that is not configured is a 404 answered
        before the limits: it does not count against the key's rate.
        """
        fake, url = await self.limited(
            {"api_keys": ["k1"], "requests_per_minute_per_key": 1}
        )
        fake.enqueue(FakeReply(chunks=["x"]))
        for _ in range(3):
            d: Deferred[Any] = self.http.post(
                url + CHAT,
                data=json.dumps({"model": "nope", "messages": HI}).encode(),
                headers={"content-type": "application/json", "x-api-key": "k1"},
            )
            response = await d.addTimeout(15, reactor)
            await treq.content(response)
            self.assertEqual(response.code, 404)
        self.assertEqual((await self.post_key(url, "k1"))[0], 200)
