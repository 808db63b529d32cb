"""
Tests for L{pylon_ai.gateway._websocket}: the C{/v1/ws} protocol over real loopback
sockets, with autobahn's client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import TestCase

from pylon_ai.gateway._config import Config, default_config, parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.gateway._websocket import make_websocket_resource, origin_allowed
from pylon_ai.testing import FakeProvider, FakeReply

KEY = "sk-test-key"

Message = dict[str, Any]


class HandshakeRefused(Exception):
    """
    The server refused the opening handshake.
    """


class _Client(WebSocketClientProtocol):
    """
    A test client: records every message and lets a test wait for them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[_Client] = Deferred()
        self.closed: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.received: list[Message] = []
        self._waiters: list[tuple[Callable[[Message], bool], Deferred[Message]]] = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.received.append(message)
        waiting, self._waiters = self._waiters, []
        for predicate, d in waiting:
            if predicate(message):
                d.callback(message)
            else:
                self._waiters.append((predicate, d))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(HandshakeRefused(self.wasNotCleanReason or reason))
        self.closed.callback((wasClean, code, reason))

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)

    def send_json(self, message: Message) -> None:
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    def wait_for(self, predicate: Callable[[Message], bool]) -> Deferred[Message]:
        """
        The first message, already received or still to come, that matches.
        """
        for message in self.received:
            if predicate(message):
                return Deferred.fromCoroutine(_now(message))
        d: Deferred[Message] = Deferred()
        self._waiters.append((predicate, d))
        return d

    def wait_type(self, kind: str, request_id: str | None = None) -> Deferred[Message]:
        return self.wait_for(
            lambda m: (
                m["type"] == kind and (request_id is None or m.get("id") == request_id)
            )
        )

    def of(self, request_id: str) -> list[Message]:
        return [m for m in self.received if m.get("id") == request_id]


async def _now(value: Message) -> Message:
    return value


class _TrackedConnection(ProtocolWrapper):
    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        # Only now has the wrapped protocol seen the loss too.
        self.factory.connection_gone()


class _Tracking(WrappingFactory):
    """
    Keeps count of the server's connections, so a test can wait for them to
    be gone.
    """

    protocol = _TrackedConnection

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._idle: list[Deferred[None]] = []

    def connection_gone(self) -> None:
        if not self.protocols:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def wait_idle(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if not self.protocols:
            d.callback(None)
        else:
            self._idle.append(d)
        return d


def _completion(request_id: str, text: str, model: str = "mock") -> Message:
    return {
        "type": "completion",
        "id": request_id,
        "model": model,
        "messages": [{"role": "user", "content": text}],
    }


class WebSocketTestsMixin:
    """
    Starts the service on a loopback port and connects clients to it.
    """

    config: Config = default_config()

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.gateway = Gateway(self.config, reactor)
        site = make_site(self.gateway, make_websocket_resource(self.gateway))
        self.tracking = _Tracking(site)
        self.port = self.reactor.listenTCP(0, self.tracking, interface="127.0.0.1")
        self.clients: list[_Client] = []
        self.addCleanup(self._stop)  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        for client in self.clients:
            if client.transport is not None and not client.lost.called:
                client.transport.abortConnection()
        await gatherResults([c.lost for c in self.clients])
        await self.tracking.wait_idle()
        await self.port.stopListening()
        await self.gateway.close()

    def url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port.getHost().port}/v1/ws{query}"

    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def connect(
        self,
        query: str = "",
        headers: dict[str, str] | None = None,
        origin: str | None = None,
    ) -> Deferred[_Client]:
        """
        Open a socket; fires with the client once the handshake succeeded,
        or fails with L{HandshakeRefused}.
        """
        factory = WebSocketClientFactory(
            self.url(query), origin=origin, headers=headers or {}
        )
        factory.protocol = self._build
        self.reactor.connectTCP("127.0.0.1", self.port.getHost().port, factory)
        d: Deferred[_Client] = Deferred()
        self._pending = d
        return d

    def _build(self) -> _Client:
        client = _Client()
        self.clients.append(client)
        client.opened.chainDeferred(self._pending)
        return client

    def metric(self, status: str, model: str = "mock") -> float:
        counter = self.gateway.metrics.requests.labels("/v1/ws", model, status)
        return float(counter._value.get())


class CompletionTests(WebSocketTestsMixin, TestCase):
    """
    Completions, cancellation and bad messages, with no keys configured.
    """

    async def test_completion_streams_chunks_then_done(self) -> None:
        """
        A completion streams one C{chunk} per text delta, then a C{done}
        whose text is the chunks joined, with usage.
        """
        client = await self.connect()
        client.send_json(_completion("r1", "hello there"))
        done = await client.wait_type("done", "r1")
        chunks = [m for m in client.of("r1") if m["type"] == "chunk"]
        self.assertGreater(len(chunks), 1)
        self.assertEqual("".join(m["text"] for m in chunks), done["text"])
        self.assertIn("You said: hello there", done["text"])
        self.assertEqual(
            {"input_tokens": 2, "output_tokens": len(chunks)}, done["usage"]
        )
        self.assertEqual(client.of("r1")[-1], done)
        self.assertEqual(1.0, self.metric("200"))
        self.assertEqual(0.0, self.gateway.metrics.streams_in_flight._value.get())

    async def test_options_ride_along(self) -> None:
        """
        C{max_tokens} reaches the model.
        """
        client = await self.connect()
        request = _completion("r1", "one two three")
        request["max_tokens"] = 3
        request["temperature"] = 0.5
        client.send_json(request)
        done = await client.wait_type("done", "r1")
        self.assertEqual(3, done["usage"]["output_tokens"])

    async def test_interleaved(self) -> None:
        """
        Two requests on one socket stream at the same time and both finish.
        """
        client = await self.connect()
        client.send_json(_completion("a", "first question"))
        client.send_json(_completion("b", "second question"))
        done_a, done_b = await gatherResults(
            [client.wait_type("done", "a"), client.wait_type("done", "b")]
        )
        self.assertIn("You said: first question", done_a["text"])
        self.assertIn("You said: second question", done_b["text"])
        ids = [m["id"] for m in client.received]
        # Interleaved: b's first chunk arrives before a is done.
        self.assertLess(ids.index("b"), len(ids) - 1 - ids[::-1].index("a"))

    async def test_cancel(self) -> None:
        """
        C{cancel} answers C{cancelled} and nothing more comes for that id.
        """
        client = await self.connect()
        client.send_json(_completion("r1", "a long question to answer"))
        await client.wait_type("chunk", "r1")
        client.send_json({"type": "cancel", "id": "r1"})
        await client.wait_type("cancelled", "r1")
        # Another whole reply is time enough for a stray r1 message.
        client.send_json(_completion("r2", "something else"))
        await client.wait_type("done", "r2")
        after = client.of("r1")
        self.assertEqual({"type": "cancelled", "id": "r1"}, after[-1])
        self.assertNotIn("done", [m["type"] for m in after])
        self.assertEqual(1.0, self.metric("499"))
        # The id is free again.
        client.send_json(_completion("r1", "again"))
        done = await client.wait_type("done", "r1")
        self.assertIn("You said: again", done["text"])

    async def test_cancel_unknown(self) -> None:
        """
        Cancelling an id that is not in flight is an C{invalid_request_error}.
        """
        client = await self.connect()
        client.send_json({"type": "cancel", "id": "nope"})
        error = await client.wait_type("error", "nope")
        self.assertEqual("invalid_request_error", error["error"]["type"])

    async def test_duplicate_id(self) -> None:
        """
        An id already in flight gets an C{invalid_request_error}; the first
        request carries on.
        """
        client = await self.connect()
        client.send_json(_completion("r1", "first"))
        client.send_json(_completion("r1", "second"))
        error = await client.wait_type("error", "r1")
        self.assertEqual("invalid_request_error", error["error"]["type"])
        self.assertIn("already in flight", error["error"]["message"])
        done = await client.wait_type("done", "r1")
        self.assertIn("You said: first", done["text"])

    async def test_unknown_model(self) -> None:
        """
        An unknown model is a C{not_found_error} for that id.
        """
        client = await self.connect()
        client.send_json(_completion("r1", "hi", model="no-such-model"))
        error = await client.wait_type("error", "r1")
        self.assertEqual("not_found_error", error["error"]["type"])
        self.assertIn("no-such-model", error["error"]["message"])
        self.assertEqual(1.0, self.metric("404", "unknown"))

    async def test_invalid_json(self) -> None:
        """
        A message that is not JSON gets an error without id, and the socket
        stays usable.
        """
        client = await self.connect()
        client.sendMessage(b"{not json", isBinary=False)
        error = await client.wait_type("error")
        self.assertEqual({"type": "error", "error": error["error"]}, error)
        self.assertEqual("invalid_request_error", error["error"]["type"])
        client.send_json(_completion("r1", "still here"))
        done = await client.wait_type("done", "r1")
        self.assertIn("You said: still here", done["text"])

    async def test_bad_messages(self) -> None:
        """
        Bad messages get an C{invalid_request_error}, with their id when they
        have one; the socket stays open.
        """
        client = await self.connect()
        bad: list[Message | list[int]] = [
            [1, 2],
            {"id": "t1"},
            {"type": "shout", "id": "t2"},
            {"type": "completion", "model": "mock", "messages": []},
            {"type": "completion", "id": "t4", "model": "mock", "messages": "hi"},
            {"type": "completion", "id": "t5", "messages": []},
            {**_completion("t6", "x"), "max_tokens": 0},
            {**_completion("t7", "x"), "temperature": "hot"},
            {**_completion("t8", "x"), "tools": []},
            {"type": "completion", "id": "t9", "model": "mock", "messages": [3]},
        ]
        for message in bad:
            client.sendMessage(json.dumps(message).encode(), isBinary=False)
        client.send_json(_completion("ok", "fine"))
        await client.wait_type("done", "ok")
        errors = [m for m in client.received if m["type"] == "error"]
        self.assertEqual(len(bad), len(errors))
        self.assertEqual(
            {"invalid_request_error"}, {e["error"]["type"] for e in errors}
        )
        self.assertEqual(
            [None, "t1", "t2", None, "t4", "t5", "t6", "t7", "t8", "t9"],
            [e.get("id") for e in errors],
        )
        self.assertIn("tools", errors[8]["error"]["message"])

    async def test_close_cancels_in_flight(self) -> None:
        """
        When the socket closes, every request in flight on it is cancelled.
        """
        client = await self.connect()
        client.send_json(_completion("a", "one"))
        client.send_json(_completion("b", "two"))
        await gatherResults(
            [client.wait_type("chunk", "a"), client.wait_type("chunk", "b")]
        )
        client.transport.abortConnection()
        await client.lost
        await self.tracking.wait_idle()
        self.assertEqual(2.0, self.metric("499"))
        self.assertEqual(0.0, self.gateway.metrics.streams_in_flight._value.get())
        backend = self.gateway.backends["mock"][0]
        self.assertEqual(0, backend.in_flight)

    async def test_no_origin_needed(self) -> None:
        """
        Clients that are not browsers send no C{Origin}; they are let in.
        """
        client = await self.connect()
        self.assertIsNotNone(client)

    async def test_own_origin(self) -> None:
        """
        The service's own origin may connect.
        """
        client = await self.connect(origin=self.origin())
        client.send_json(_completion("r1", "hi"))
        await client.wait_type("done", "r1")

    async def test_foreign_origin_refused(self) -> None:
        """
        Another origin is refused with 403.
        """
        with self.assertRaises(HandshakeRefused) as e:
            await self.connect(origin="http://evil.example")
        self.assertIn("[403]", str(e.exception))
        with self.assertRaises(HandshakeRefused) as e:
            await self.connect(origin="http://127.0.0.1:1")
        self.assertIn("[403]", str(e.exception))


class LimitTests(WebSocketTestsMixin, TestCase):
    """
    Message size limit.
    """

    config = parse_config({"server": {"max_body_bytes": 4096}}, {})

    async def test_too_large(self) -> None:
        """
        A message larger than C{max_body_bytes} closes the socket with 1009.
        """
        client = await self.connect()
        client.send_json(_completion("r1", "x" * 5000))
        _, code, _ = await client.closed
        self.assertEqual(1009, code)


class AuthTests(WebSocketTestsMixin, TestCase):
    """
    With keys configured: a key by header, query parameter or first message,
    and allowed origins.
    """

    config = parse_config(
        {
            "server": {
                "api_keys": [KEY],
                "cors_origins": ["https://app.example.com"],
            }
        },
        {},
    )

    async def _works(self, client: _Client) -> None:
        client.send_json(_completion("r1", "authorised"))
        done = await client.wait_type("done", "r1")
        self.assertIn("You said: authorised", done["text"])

    async def test_bearer_header(self) -> None:
        await self._works(
            await self.connect(headers={"Authorization": f"Bearer {KEY}"})
        )

    async def test_x_api_key_header(self) -> None:
        await self._works(await self.connect(headers={"x-api-key": KEY}))

    async def test_query_parameter(self) -> None:
        await self._works(await self.connect(f"?api_key={KEY}"))

    async def test_auth_message(self) -> None:
        client = await self.connect()
        client.send_json({"type": "auth", "api_key": KEY})
        await client.wait_type("auth_ok")
        await self._works(client)

    async def test_wrong_header_key_refused(self) -> None:
        with self.assertRaises(HandshakeRefused) as e:
            await self.connect(headers={"Authorization": "Bearer wrong"})
        self.assertIn("[401]", str(e.exception))

    async def test_wrong_query_key_refused(self) -> None:
        with self.assertRaises(HandshakeRefused) as e:
            await self.connect("?api_key=wrong")
        self.assertIn("[401]", str(e.exception))

    async def test_wrong_auth_message_closes(self) -> None:
        client = await self.connect()
        client.send_json({"type": "auth", "api_key": "wrong"})
        _, code, _ = await client.closed
        self.assertEqual(1008, code)
        self.assertEqual([], client.received)

    async def test_first_message_must_authenticate(self) -> None:
        """
        With no key at the handshake, anything but C{auth} first closes the
        socket with 1008, and nothing is served.
        """
        client = await self.connect()
        client.send_json(_completion("r1", "sneaky"))
        _, code, _ = await client.closed
        self.assertEqual(1008, code)
        self.assertEqual([], client.received)
        self.assertEqual(0.0, self.metric("200"))

    async def test_configured_origin(self) -> None:
        client = await self.connect(f"?api_key={KEY}", origin="https://app.example.com")
        await self._works(client)

    async def test_origin_checked_before_key(self) -> None:
        with self.assertRaises(HandshakeRefused) as e:
            await self.connect(f"?api_key={KEY}", origin="https://evil.example")
        self.assertIn("[403]", str(e.exception))


class UpstreamTests(WebSocketTestsMixin, TestCase):
    """
    Real upstreams (the fake provider over HTTP): translation, upstream
    errors and cancellation.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        from twisted.internet import reactor

        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)
        self.config = parse_config(
            {
                "models": [
                    {
                        "name": "claude",
                        "provider": "anthropic",
                        "model": "claude-test",
                        "api_key": "upstream-key",
                        "base_url": self.fake.base_url,
                        "retries": 0,
                    },
                    {
                        "name": "local",
                        "provider": "custom",
                        "base_url": self.fake.base_url,
                        "retries": 0,
                    },
                ]
            },
            {},
        )
        super().setUp()

    async def test_translated(self) -> None:
        """
        An Anthropic upstream streams through the OpenAI-shaped request.
        """
        self.fake.enqueue(FakeReply(chunks=["Bon", "jour"], usage=(7, 2)))
        client = await self.connect()
        request = _completion("r1", "hi")
        request["messages"].insert(0, {"role": "system", "content": "Be brief."})
        request["max_tokens"] = 50
        client.send_json({**request, "model": "claude"})
        done = await client.wait_type("done", "r1")
        self.assertEqual("Bonjour", done["text"])
        self.assertEqual({"input_tokens": 7, "output_tokens": 2}, done["usage"])
        self.assertEqual(
            ["Bon", "jour"],
            [m["text"] for m in client.of("r1") if m["type"] == "chunk"],
        )
        sent = self.fake.requests[0].json
        self.assertEqual("Be brief.", sent["system"])
        self.assertEqual(50, sent["max_tokens"])
        self.assertEqual(1.0, self.metric("200", "claude"))

    async def test_upstream_rate_limited(self) -> None:
        """
        An upstream 429 is a C{rate_limit_error}.
        """
        self.fake.enqueue(FakeReply(status=429))
        client = await self.connect()
        client.send_json(_completion("r1", "hi", model="local"))
        error = await client.wait_type("error", "r1")
        self.assertEqual("rate_limit_error", error["error"]["type"])

    async def test_broken_stream(self) -> None:
        """
        A stream that breaks off ends with an error after the chunks that
        came.
        """
        self.fake.enqueue(FakeReply(chunks=["a", "b", "c"], drop_after=2))
        client = await self.connect()
        client.send_json(_completion("r1", "hi", model="local"))
        error = await client.wait_type("error", "r1")
        self.assertEqual("api_error", error["error"]["type"])
        self.assertEqual(
            ["chunk", "chunk", "error"], [m["type"] for m in client.of("r1")]
        )

    async def test_cancel_closes_upstream(self) -> None:
        """
        Cancelling aborts the upstream request.
        """
        self.fake.enqueue(FakeReply(chunks=["a", "b"], stall_after=1))
        client = await self.connect()
        client.send_json(_completion("r1", "hi", model="local"))
        await client.wait_type("chunk", "r1")
        client.send_json({"type": "cancel", "id": "r1"})
        await client.wait_type("cancelled", "r1")
        self.assertEqual(["chunk", "cancelled"], [m["type"] for m in client.of("r1")])


class OriginTests(TestCase):
    """
    L{origin_allowed}.
    """

    def test_rules(self) -> None:
        allowed = ("https://app.example.com",)
        self.assertTrue(origin_allowed(None, "h:1", allowed))
        self.assertTrue(origin_allowed("http://h:1", "h:1", allowed))
        self.assertTrue(origin_allowed("https://H:1", "h:1", allowed))
        self.assertTrue(origin_allowed("https://app.example.com", "h:1", allowed))
        self.assertFalse(origin_allowed("http://h:2", "h:1", allowed))
        self.assertFalse(origin_allowed("null", "h:1", allowed))
        self.assertFalse(origin_allowed("h:1", "h:1", allowed))
        self.assertFalse(origin_allowed("http://h:1", None, allowed))
        self.assertFalse(origin_allowed("https://app.example.com:8", "h:1", allowed))
