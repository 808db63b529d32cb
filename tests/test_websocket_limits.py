"""
Tests for the limits of L{pylon_ai.gateway._websocket}: replies larger than the
incoming frame limit, small frames before C{auth}, bad frames and handshake
headers, and backpressure towards a client that does not read.

Real loopback sockets, autobahn's client, and the fake provider upstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._websocket import MAX_DONE_TEXT, PRE_AUTH_MAX_BYTES, _Session
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._service import http_request, raw_connect
    from tests.test_websocket import (
        KEY,
        WebSocketTestsMixin,
        _completion,
    )
except ImportError:  # pragma: no cover - run from inside tests/
    from _service import http_request, raw_connect  # type: ignore[no-redef]
    from test_websocket import (  # type: ignore[no-redef]
        KEY,
        WebSocketTestsMixin,
        _completion,
    )

Message = dict[str, Any]


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.005
) -> None:
    """
    Wait, turning the reactor, until C{predicate()} holds.

    @raise AssertionError: If it did not within C{timeout} seconds.
    """
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await deferLater(reactor, step, lambda: None)
        waited += step


def pending_bytes(transport: Any) -> int:
    """
    The bytes a TCP transport holds, not yet handed to the kernel.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def within(d: Deferred[Any], seconds: float = 5.0) -> Deferred[Any]:
    """
    C{d}, failing after C{seconds} rather than at the test's own timeout.
    """
    return d.addTimeout(seconds, reactor)


class _UpstreamMixin(WebSocketTestsMixin):
    """
    The gateway in front of a fake provider: model C{local} (a custom
    upstream) and C{mock}.
    """

    server: dict[str, Any] = {}

    async def setUp(self) -> None:  # type: ignore[override]
        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)  # type: ignore[attr-defined]
        self.config = parse_config(
            {
                "server": self.server,
                "models": [
                    {
                        "name": "local",
                        "provider": "custom",
                        "base_url": self.fake.base_url,
                        "retries": 0,
                    },
                    {"name": "mock", "provider": "mock"},
                ],
            },
            {},
        )
        super().setUp()

    def in_flight(self) -> float:
        return float(self.gateway.metrics.streams_in_flight._value.get())

    def counter(self, name: str, **labels: str) -> float:
        value = self.gateway.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)

    async def http_status(self) -> bytes:
        """
        The status line of a plain HTTP completion (the mock model).
        """
        client = await raw_connect(self, self.port.getHost().port)  # type: ignore[arg-type]
        client.send(
            http_request(
                "POST",
                "/v1/chat/completions",
                {"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
            )
        )
        data = await within(client.until(lambda d: b"\r\n" in d))
        return bytes(data.split(b"\r\n", 1)[0])


class LargeReplyTests(_UpstreamMixin, TestCase):
    """
    Replies larger than the incoming frame limit (issue item 7).
    """

    server = {"max_body_bytes": 4096, "max_concurrent": 2}

    async def test_reply_over_frame_limit(self) -> None:
        """
        Two completions whose replies are larger than C{max_body_bytes} both
        get their chunks and their C{done}; their slots are released, so a
        later HTTP request is admitted.
        """
        self.fake.enqueue(
            FakeReply(chunks=["x" * 100] * 50), FakeReply(chunks=["y" * 5000])
        )
        client = await self.connect()
        client.send_json(_completion("a", "hi", model="local"))
        client.send_json(_completion("b", "hi", model="local"))
        done_a, done_b = await within(
            gatherResults(
                [client.wait_type("done", "a"), client.wait_type("done", "b")]
            )
        )
        self.assertEqual({"x" * 5000, "y" * 5000}, {done_a["text"], done_b["text"]})
        self.assertEqual(0.0, self.in_flight())
        self.assertEqual(0, self.gateway.limits.in_flight)
        # Nothing left for a SIGTERM to wait for.
        self.assertEqual(set(), self.gateway.active)
        self.assertEqual(b"HTTP/1.1 200 OK", await self.http_status())


class DoneTextTests(_UpstreamMixin, TestCase):
    """
    The text of C{done}.
    """

    async def test_done_text_only_under_limit(self) -> None:
        """
        C{done} leaves out C{text} when the reply is not under 1 MiB: the
        chunks carried it.
        """
        piece = "z" * 65536
        count = MAX_DONE_TEXT // len(piece) + 1
        self.fake.enqueue(FakeReply(chunks=[piece] * count))
        client = await self.connect()
        client.send_json(_completion("r1", "hi", model="local"))
        done = await within(client.wait_type("done", "r1"))
        self.assertNotIn("text", done)
        chunks = [m["text"] for m in client.of("r1") if m["type"] == "chunk"]
        self.assertEqual(piece * count, "".join(chunks))
        self.assertEqual(0.0, self.in_flight())


class _FailingSend:
    """
    A socket's C{send} that refuses some messages, as autobahn does one over
    its limit.
    """

    def __init__(self, refuse: Callable[[Message], bool]) -> None:
        self.refuse = refuse
        self.sent: list[Message] = []
        self.closed: list[tuple[int, str]] = []

    def send(self, data: bytes) -> None:
        message = json.loads(data)
        if self.refuse(message):
            raise ValueError("tried to send a message exceeding the limit")
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


class RefusedSendTests(SynchronousTestCase):
    """
    A message the socket refuses still ends its request: the slot is
    released and the client told (issue item 7).
    """

    def _serve(self, refuse: Callable[[Message], bool]) -> tuple[Gateway, _FailingSend]:
        clock = Clock()
        config = parse_config({"server": {"max_concurrent": 1}}, {})
        gateway = Gateway(config, clock)
        socket = _FailingSend(refuse)
        session = _Session(gateway, socket.send, socket.close, True)
        session.message_received(json.dumps(_completion("r1", "hello")).encode())
        clock.advance(0)
        for _ in range(100):
            clock.advance(0.1)
        return gateway, socket

    def _assert_released(self, gateway: Gateway) -> None:
        self.assertEqual(0, gateway.limits.in_flight)
        self.assertEqual(0.0, gateway.metrics.streams_in_flight._value.get())
        self.assertEqual(set(), gateway.active)
        self.flushLoggedErrors(ValueError)

    def test_done_refused(self) -> None:
        """
        When C{done} cannot be sent, the client gets an C{error} instead.
        """
        gateway, socket = self._serve(lambda m: m["type"] == "done")
        self.assertEqual("error", socket.sent[-1]["type"])
        self.assertEqual("r1", socket.sent[-1]["id"])
        self._assert_released(gateway)

    def test_chunk_refused(self) -> None:
        """
        A chunk that cannot be sent ends the request with an C{error}.
        """
        gateway, socket = self._serve(lambda m: m["type"] == "chunk")
        self.assertEqual(["error"], [m["type"] for m in socket.sent])
        self._assert_released(gateway)

    def test_nothing_can_be_sent(self) -> None:
        """
        When not even the C{error} can be sent, the socket is closed.
        """
        gateway, socket = self._serve(lambda m: m["type"] != "chunk")
        self.assertEqual(1011, socket.closed[0][0])
        self._assert_released(gateway)


class PreAuthTests(_UpstreamMixin, TestCase):
    """
    Before C{auth} only small frames are accepted (issue item 11).
    """

    server = {"api_keys": [KEY]}

    async def test_large_auth_message_closes(self) -> None:
        """
        An C{auth} message larger than the pre-auth limit closes the socket
        with 1009, even with the right key.
        """
        client = await self.connect()
        client.send_json(
            {"type": "auth", "api_key": KEY, "pad": "x" * PRE_AUTH_MAX_BYTES}
        )
        _, code, _ = await within(client.closed)
        self.assertEqual(1009, code)
        self.assertEqual([], client.received)

    async def test_announced_large_frame_closes_at_once(self) -> None:
        """
        The socket closes as soon as a frame announces more than the limit:
        the rest of it is never waited for.
        """
        client = await self.connect()
        client.beginMessage(isBinary=False)
        client.beginMessageFrame(1 << 20)
        client.sendMessageFrameData(b'{"type": "auth", "api_key": "')
        _, code, _ = await within(client.closed)
        self.assertEqual(1009, code)

    async def test_small_auth_message_then_large_frames(self) -> None:
        """
        After C{auth}, frames up to C{max_body_bytes} are accepted again.
        """
        client = await self.connect()
        client.send_json({"type": "auth", "api_key": KEY})
        await within(client.wait_type("auth_ok"))
        client.send_json(_completion("r1", "x" * (4 * PRE_AUTH_MAX_BYTES)))
        done = await within(client.wait_type("done", "r1"))
        self.assertIn("You said:", done["text"])

    async def test_header_key_gets_full_limit(self) -> None:
        """
        A socket that authenticated at the handshake takes large frames at
        once.
        """
        client = await self.connect(headers={"x-api-key": KEY})
        client.send_json(_completion("r1", "x" * (4 * PRE_AUTH_MAX_BYTES)))
        done = await within(client.wait_type("done", "r1"))
        self.assertIn("You said:", done["text"])


_HANDSHAKE = (
    b"GET /v1/ws HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


class BadFrameTests(_UpstreamMixin, TestCase):
    """
    Bad frames get an C{error} or a close with 1007/1008, are counted, and
    never raise (issue item 13).
    """

    server = {"api_keys": [KEY]}

    def bad(self, reason: str) -> float:
        return self.counter("pylon_ws_bad_messages_total", reason=reason)

    async def test_deep_json_before_auth(self) -> None:
        """
        Deeply nested JSON before C{auth} closes the socket with 1008.
        """
        client = await self.connect()
        depth = PRE_AUTH_MAX_BYTES // 2 - 16
        client.sendMessage(b"[" * depth + b"]" * depth, isBinary=False)
        _, code, _ = await within(client.closed)
        self.assertEqual(1008, code)
        self.assertEqual(1.0, self.bad("json"))

    async def test_deep_json_in_auth(self) -> None:
        """
        A deep value inside an C{auth} message closes the socket with 1008.
        """
        client = await self.connect()
        depth = 3000
        client.sendMessage(
            b'{"type": "auth", "api_key": ' + b"[" * depth + b"]" * depth + b"}",
            isBinary=False,
        )
        _, code, _ = await within(client.closed)
        self.assertEqual(1008, code)

    async def test_bad_frames_after_auth(self) -> None:
        """
        After C{auth}, deep, non-JSON, non-UTF-8 (binary), NaN and
        wrong-shaped messages each get an C{error}; the socket stays
        usable; each is counted.
        """
        client = await self.connect(headers={"x-api-key": KEY})
        depth = 5000
        frames = [
            (b"[" * depth + b"]" * depth, False),
            (b"{not json", False),
            (b'{"type": "auth", "api_key": "\xff\xfe"}', True),
            (b'{"type": "completion", "id": "n", "temperature": NaN}', False),
            (b"[1, 2]", False),
            (b'{"type": 5}', False),
        ]
        for payload, binary in frames:
            client.sendMessage(payload, isBinary=binary)
        client.send_json(_completion("ok", "fine"))
        await within(client.wait_type("done", "ok"))
        errors = [m for m in client.received if m["type"] == "error"]
        self.assertEqual(len(frames), len(errors))
        self.assertEqual(4.0, self.bad("json"))
        self.assertEqual(2.0, self.bad("shape"))

    async def test_invalid_utf8_text_frame(self) -> None:
        """
        A text frame that is not UTF-8 closes the socket with 1007, counted.
        """
        client = await self.connect(headers={"x-api-key": KEY})
        client.sendMessage(b'{"type": "\xff"}', isBinary=False)
        _, code, _ = await within(client.closed)
        self.assertEqual(1007, code)
        await within(self.tracking.wait_idle())
        self.assertEqual(1.0, self.bad("utf8"))

    async def test_too_large_counted(self) -> None:
        """
        A frame over the limit is counted too.
        """
        client = await self.connect()
        client.send_json({"type": "auth", "pad": "x" * PRE_AUTH_MAX_BYTES})
        await within(client.closed)
        await within(self.tracking.wait_idle())
        self.assertEqual(1.0, self.bad("too_large"))

    async def _handshake(self, header: bytes) -> bytes:
        client = await raw_connect(self, self.port.getHost().port)  # type: ignore[arg-type]
        client.send(_HANDSHAKE + header + b"\r\n\r\n")
        data = await within(client.until(lambda d: b"\r\n" in d))
        return bytes(data.split(b"\r\n", 1)[0])

    async def test_non_utf8_authorization(self) -> None:
        """
        A key that is not UTF-8 is refused (400 or 401), not a traceback.
        """
        status = await self._handshake(b"Authorization: Bearer \xff\xfe")
        self.assertIn(status[9:12], (b"400", b"401"), status)

    async def test_non_utf8_x_api_key(self) -> None:
        status = await self._handshake(b"x-api-key: \xc3\x28")
        self.assertIn(status[9:12], (b"400", b"401"), status)

    async def test_non_utf8_origin(self) -> None:
        status = await self._handshake(
            b"x-api-key: " + KEY.encode() + b"\r\nOrigin: http://\xff.example"
        )
        self.assertIn(status[9:12], (b"400", b"403"), status)


def _server_transport(case: WebSocketTestsMixin) -> Any:
    """
    The TCP transport of the gateway's only client connection.
    """
    (wrapper,) = case.tracking.protocols
    return wrapper.transport


class BackpressureTests(_UpstreamMixin, TestCase):
    """
    A client that does not read pauses its upstreams; past a bound its
    socket is closed (issue item 9).
    """

    server = {
        "ws_pause_bytes": 65536,
        "ws_max_queued_bytes": 64 << 20,
        "max_concurrent": 2,
    }

    async def test_slow_reader_pauses_upstream(self) -> None:
        """
        While the client reads nothing, what the gateway queues for it stays
        near C{ws_pause_bytes} although the upstream has megabytes more;
        once the client reads again, the whole reply arrives.
        """
        piece = "p" * 16384
        count = 1024  # 16 MiB
        self.fake.enqueue(FakeReply(chunks=[piece] * count))
        client = await self.connect()
        client.transport.pauseProducing()
        client.send_json(_completion("r1", "hi", model="local"))
        await within(self.fake.wait_for_request())
        server = _server_transport(self)
        last = [-1, 0]

        def settled() -> bool:
            # Nothing more queued for twenty polls: the upstream stopped.
            now = pending_bytes(server)
            if now != last[0]:
                last[:] = [now, 0]
            else:
                last[1] += 1
            return now > 0 and last[1] >= 20

        await wait_until(settled)
        queued = pending_bytes(server)
        self.assertLess(queued, 1 << 20)
        self.assertGreater(
            self.counter("pylon_ws_upstream_pauses_total"), 0.0, "never paused"
        )
        client.transport.resumeProducing()
        done = await within(client.wait_type("done", "r1"), 20)
        self.assertNotIn("text", done)
        total = sum(len(m["text"]) for m in client.of("r1") if m["type"] == "chunk")
        self.assertEqual(len(piece) * count, total)
        self.assertEqual(0.0, self.in_flight())


class OverflowTests(_UpstreamMixin, TestCase):
    """
    A socket over C{ws_max_queued_bytes} is closed and its requests
    released (issue item 9).
    """

    server = {
        "ws_pause_bytes": 16384,
        "ws_max_queued_bytes": 262144,
        "max_concurrent": 2,
    }

    async def test_over_bound_closes_and_releases(self) -> None:
        self.fake.enqueue(
            FakeReply(chunks=["q" * (1 << 19)]),
            FakeReply(chunks=["a", "b"], stall_after=1),
        )
        client = await self.connect()
        client.transport.pauseProducing()
        client.send_json(_completion("r1", "hi", model="local"))
        client.send_json(_completion("r2", "hi", model="local"))
        await within(self.tracking.wait_idle())
        self.assertEqual(0.0, self.in_flight())
        self.assertEqual(0, self.gateway.limits.in_flight)
        self.assertEqual(2.0, self.metric("499", "local"))
        self.assertEqual(1.0, self.counter("pylon_ws_overflow_closes_total"))
        client.transport.resumeProducing()
        await within(client.lost)
        # Both slots are free again.
        other = await self.connect()
        other.send_json(_completion("m1", "hi"))
        other.send_json(_completion("m2", "hi"))
        await within(
            gatherResults(
                [other.wait_type("done", "m1"), other.wait_type("done", "m2")]
            )
        )


class HandshakeLogTests(_UpstreamMixin, TestCase):
    """
    The raw handshake (keys in its headers and query) never reaches a log
    observer: autobahn's own debug lines hold it, and they must stay behind
    its log level.
    """

    server = {"api_keys": [KEY]}

    async def test_key_not_logged(self) -> None:
        from twisted.logger import formatEvent, globalLogPublisher

        emitted: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            emitted.append(formatEvent(event) + repr(sorted(map(str, event.values()))))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        client = await self.connect(
            query=f"?api_key={KEY}", headers={"authorization": f"Bearer {KEY}"}
        )
        client.send_json(_completion("r1", "hi"))
        await within(client.wait_type("done", "r1"))
        self.assertTrue(emitted)
        for text in emitted:
            self.assertNotIn(KEY, text)
