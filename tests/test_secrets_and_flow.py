"""
What a gateway must never do: show a key or a prompt, or buffer a whole
upstream reply in memory for a client that does not read.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from pylon_ai.testing import FakeReply, FakeToolCall

try:
    from tests._service import (
        ANTHROPIC_UPSTREAM_KEY,
        CLIENT_KEY,
        OPENAI_UPSTREAM_KEY,
        http_request,
        start_service,
    )
    from tests.test_service_http import AUTH, CHAT, MESSAGES, _HTTPCase
except ImportError:  # run from inside tests/
    from _service import (  # type: ignore[no-redef]
        ANTHROPIC_UPSTREAM_KEY,
        CLIENT_KEY,
        OPENAI_UPSTREAM_KEY,
        http_request,
        start_service,
    )
    from test_service_http import AUTH, CHAT, MESSAGES, _HTTPCase  # type: ignore[no-redef]

PROMPT = "PROMPT-CANARY-7f3a: my secret plan"
SECRETS = (CLIENT_KEY, ANTHROPIC_UPSTREAM_KEY, OPENAI_UPSTREAM_KEY, "PROMPT-CANARY")


class SecretsTests(_HTTPCase):
    """
    Keys and prompts never reach logs, metrics or responses, whatever fails.
    """

    def setUp(self) -> Any:
        self.emitted: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += failure.getTraceback()
            self.emitted.append(text + repr(sorted(map(str, event.values()))))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return super().setUp()

    def scan(self, what: str, text: str) -> None:
        for secret in SECRETS:
            self.assertNotIn(secret, text, f"{secret!r} found in {what}")

    async def test_nothing_leaks(self) -> None:
        """
        Successes and every kind of failure, on both routes and both
        upstream formats: no emitted log event, metric or response body holds
        a configured key or the prompt.
        """
        messages = [
            {"role": "system", "content": PROMPT},
            {"role": "user", "content": PROMPT},
        ]
        self.fake.enqueue(
            FakeReply(chunks=["ok"], usage=(3, 1)),
            FakeReply(tool_calls=[FakeToolCall("c1", "f", ['{"a":', "1}"])]),
            FakeReply(status=401, error_type="authentication_error"),
            FakeReply(status=500),
            FakeReply(chunks=["a", "b"], drop_after=1),
            FakeReply(chunks=["a"], stream_error=True),
            FakeReply(raw_body=b"data: {not json\n\n"),
        )
        bodies: list[bytes] = []
        for model in ("gpt", "claude", "gpt", "claude", "gpt", "claude", "gpt"):
            route = CHAT if model == "gpt" else MESSAGES
            body: dict[str, Any] = {
                "model": model,
                "messages": messages[1:] if route == MESSAGES else messages,
                "stream": True,
            }
            if route == MESSAGES:
                body["system"] = PROMPT
                body["max_tokens"] = 10
            _, _, content = await self.post(route, body)
            bodies.append(content)
        # Client-side mistakes, which echo nothing of the request either.
        for headers in ({"Authorization": f"Bearer {CLIENT_KEY}x"}, {}):
            _, _, content = await self.post(
                CHAT, {"model": "gpt", "messages": messages}, headers
            )
            bodies.append(content)
        _, _, content = await self.post(
            CHAT, {"model": "no-such-model", "messages": messages}
        )
        bodies.append(content)
        _, _, content = await self.post(CHAT, b"{" + PROMPT.encode())
        bodies.append(content)
        _, _, metrics = await self.request("GET", "/metrics")

        # The upstream really got the keys and the prompt: the scan is live.
        upstream = json.dumps([r.headers for r in self.fake.requests])
        self.assertIn(ANTHROPIC_UPSTREAM_KEY, upstream)
        self.assertIn(OPENAI_UPSTREAM_KEY, upstream)
        self.assertIn("PROMPT-CANARY", json.dumps([r.json for r in self.fake.requests]))
        self.assertGreater(len(self.emitted), 10)

        for i, content in enumerate(bodies):
            self.scan(f"response {i}", content.decode("utf-8", "replace"))
        self.scan("metrics", metrics.decode())
        for text in self.emitted:
            self.scan("the log", text)


class BackpressureTests(TestCase):
    """
    A client that stops reading stops the upstream: the gateway does not
    buffer the whole reply in memory.
    """

    timeout = 30

    async def test_slow_client_pauses_upstream(self) -> None:
        """
        The upstream sends 24 MiB as fast as it can to a client that reads
        nothing.  Once the upstream has handed all of it to its socket, the
        bulk of it is still in the upstream's own buffer (the gateway stopped
        reading), and the gateway holds only a small bounded amount.  When
        the client reads again, the whole stream arrives.
        """
        service = await start_service(self)
        piece = "x" * 65536
        service.fake.enqueue(FakeReply(chunks=[piece] * 384))
        client = _Counter()
        connector = reactor.connectTCP(
            "127.0.0.1", service.port_number, ClientFactory.forProtocol(lambda: client)
        )
        self.addCleanup(connector.disconnect)
        await client.made
        assert client.transport is not None
        client.transport.pauseProducing()  # read nothing
        body = {"model": "local", "stream": True, "messages": [{"role": "user"}]}
        client.transport.write(http_request("POST", CHAT, body, AUTH))
        recorded = await service.fake.wait_for_request()
        await recorded.finished.addTimeout(20, reactor)

        def gateway_buffered() -> int:
            total = 0
            for protocol in service.site.connections:
                transport = getattr(protocol, "_channel", protocol).transport
                total += len(transport.dataBuffer) + transport._tempDataLen
            return total

        # Let the reactor settle: whatever the gateway could read, it read.
        for _ in range(20):
            await deferLater(reactor, 0.01, lambda: None)
        self.assertLess(gateway_buffered(), 4 * 1024 * 1024)
        self.assertEqual(len(service.site.connections), 1)
        client.transport.resumeProducing()
        await client.done.addTimeout(20, reactor)
        self.assertGreater(client.received, 24 * 1024 * 1024)


class _Counter(Protocol):
    """
    Counts what arrives and notices the end of an OpenAI stream, without
    keeping megabytes around.
    """

    def __init__(self) -> None:
        self.received = 0
        self._tail = b""
        self.made: Deferred[None] = Deferred()
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._tail = (self._tail + data)[-64:]
        if b"data: [DONE]" in self._tail and not self.done.called:
            self.done.callback(None)


class NoDelayTests(TestCase):
    """
    Both sides of the gateway send each stream event at once: Nagle's
    algorithm is off on client connections and on pooled upstream ones
    (twisted.web does it; this guards the property).
    """

    async def test_no_delay(self) -> None:
        import socket

        service = await start_service(self)
        service.fake.enqueue(FakeReply(chunks=["a"]))
        client = _Counter()
        connector = reactor.connectTCP(
            "127.0.0.1", service.port_number, ClientFactory.forProtocol(lambda: client)
        )
        self.addCleanup(connector.disconnect)
        await client.made
        assert client.transport is not None
        body = {"model": "local", "stream": True, "messages": [{"role": "user"}]}
        client.transport.write(http_request("POST", CHAT, body, AUTH))
        await client.done.addTimeout(10, reactor)

        def nodelay(transport: Any) -> int:
            handle = transport.getHandle()
            return int(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        served = [getattr(p, "_channel", p).transport for p in service.site.connections]
        self.assertEqual([nodelay(t) for t in served], [1])
        pools = {
            id(c._agent._pool): c._agent._pool
            for c in service.gateway._clients.values()
        }
        upstream = [
            conn.transport
            for pool in pools.values()
            for conns in (*pool._connections.values(), *pool.lean._idle.values())
            for conn in conns
        ]
        self.assertEqual([nodelay(t) for t in upstream], [1])
