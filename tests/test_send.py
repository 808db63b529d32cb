"""
Bytes that must not wait for the reactor's next turn: L{send_now}, the lean
client's requests, the gateway's replies before their log line.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from pylon_ai._http import make_http_client
from pylon_ai._send import send_now, write_through
from pylon_ai.testing import FakeReply
from tests._service import start_service


def _peek(sock: socket.socket) -> bytes:
    # What the kernel holds for this socket right now, without reading it.
    try:
        return sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


class _Accepted(Protocol):
    def __init__(self, made: Deferred[_Accepted]) -> None:
        self._made = made
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self._made.callback(self)

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)


class SendNowTests(TestCase):
    """
    L{send_now} gives a transport's bytes to the kernel at once.
    """

    async def _pair(self) -> tuple[_Accepted, socket.socket]:
        made: Deferred[_Accepted] = Deferred()
        port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: _Accepted(made)), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        server = await made
        self.addCleanup(
            lambda: (
                server.transport.abortConnection()  # type: ignore[union-attr]
                if server.transport and not server.transport.disconnected  # type: ignore[attr-defined]
                else None
            )
        )
        return server, client

    async def test_sent_at_once(self) -> None:
        server, client = await self._pair()
        assert server.transport is not None
        server.transport.write(b"first")
        self.assertEqual(_peek(client), b"", "Twisted holds a write until its turn")
        send_now(server.transport)
        self.assertEqual(_peek(client), b"first")

    async def test_closing_transport_untouched(self) -> None:
        # A transport asked to close is left to the reactor, which sends
        # what it holds and then closes it.
        server, client = await self._pair()
        assert server.transport is not None
        server.transport.write(b"last words")
        server.transport.loseConnection()
        send_now(server.transport)
        self.assertEqual(_peek(client), b"")
        await server.lost
        client.settimeout(5)
        self.assertEqual(client.recv(100), b"last words")
        self.assertEqual(client.recv(100), b"")

    async def test_write_through(self) -> None:
        """
        With nothing waiting to be sent, the bytes go straight to the
        socket, with no writer registered with the reactor; otherwise the
        usual write keeps them in order behind what waits.
        """
        server, client = await self._pair()
        transport: Any = server.transport
        self.assertTrue(write_through(transport, b"one "))
        self.assertEqual(_peek(client), b"one ")
        self.assertNotIn(transport, reactor.getWriters())
        transport.write(b"two ")  # held until the reactor's turn
        self.assertFalse(write_through(transport, b"three"))
        transport.write(b"three")
        client.settimeout(5)
        received = b""
        while received != b"one two three":
            await deferLater(reactor, 0.001, lambda: None)
            received += _peek(client)[len(received) :]
        transport.loseConnection()
        self.assertFalse(write_through(transport, b"late"))

    async def test_write_through_what_the_kernel_refuses(self) -> None:
        # A full socket buffer: what the kernel does not take is written
        # the usual way, in order.
        server, client = await self._pair()
        transport: Any = server.transport
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 4096  # 1 MiB
        self.assertTrue(write_through(transport, big))
        self.assertIn(transport, reactor.getWriters())
        client.setblocking(False)
        received = bytearray()
        while len(received) < len(big):
            await deferLater(reactor, 0.001, lambda: None)
            try:
                received += client.recv(1 << 20)
            except BlockingIOError:
                pass
        self.assertEqual(bytes(received), big)

    async def test_write_through_leaves_tls_alone(self) -> None:
        # A connection that started TLS (startTLS) sends through its TLS
        # layer: its socket takes nothing straight.
        server, client = await self._pair()
        transport: Any = server.transport
        transport.TLS = True  # what startTLS leaves on the transport
        try:
            self.assertFalse(write_through(transport, b"plain"))
            self.assertEqual(_peek(client), b"")
        finally:
            transport.TLS = False

    def test_other_transports(self) -> None:
        # Not TCP (or nothing at all): nothing happens, nothing fails.
        transport = StringTransport()
        transport.write(b"kept")
        send_now(transport)
        send_now(None)
        self.assertFalse(write_through(transport, b"more"))
        self.assertFalse(write_through(None, b"more"))
        self.assertEqual(transport.value(), b"kept")


class LeanRequestTests(TestCase):
    """
    The lean client's request is on the wire when C{request} returns.
    """

    async def test_request_sent_at_once(self) -> None:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        client = make_http_client(reactor)
        pool = client._agent._pool  # type: ignore[attr-defined]
        self.addCleanup(pool.closeCachedConnections)
        endpoints = client._agent._endpointFactory  # type: ignore[attr-defined]
        url = f"http://127.0.0.1:{port}/v1/x".encode()

        first = pool.lean.request(endpoints, url, Headers(), b"{}")
        conn: socket.socket | None = None
        while conn is None:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                await deferLater(reactor, 0.001, lambda: None)
        self.addCleanup(conn.close)
        data = b""
        while not data.endswith(b"{}"):
            await deferLater(reactor, 0.001, lambda: None)
            data += _peek(conn)[len(data) :]
        conn.recv(len(data))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        response = await first
        body: Deferred[None] = Deferred()

        class _Body(Protocol):
            def connectionLost(self, reason: object = None) -> None:
                body.callback(None)

        response.deliverBody(_Body())
        await body

        # The connection is pooled now: the next request goes out before
        # request() returns, not at the reactor's next turn.
        second = pool.lean.request(endpoints, url, Headers(), b'{"n": 2}')
        self.assertTrue(_peek(conn).startswith(b"POST /v1/x HTTP/1.1\r\n"))
        self.assertTrue(_peek(conn).endswith(b'{"n": 2}'))
        second.cancel()
        second.addErrback(lambda _: None)


class ReplyBeforeLogTests(TestCase):
    """
    The gateway's reply leaves before its log line is written (the log
    line is work the client must not wait for).
    """

    async def _logged_with(self, body: dict[str, Any]) -> bytes:
        service = await start_service(self, server={})
        service.fake.enqueue(FakeReply(chunks=["Hello", " world"]))
        client = socket.create_connection(("127.0.0.1", service.port_number))
        self.addCleanup(client.close)
        seen: Deferred[bytes] = Deferred()

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "pylon_ai.requests" and not seen.called:
                seen.callback(_peek(client))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        raw = json.dumps(body).encode()
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(raw)
            + raw
        )
        return await seen

    async def test_whole_reply(self) -> None:
        held = await self._logged_with(
            {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
        )
        self.assertTrue(held.startswith(b"HTTP/1.1 200 "), held[:40])
        self.assertIn(b"Hello world", held)

    async def test_stream(self) -> None:
        held = await self._logged_with(
            {
                "model": "local",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        self.assertTrue(held.startswith(b"HTTP/1.1 200 "), held[:40])
        self.assertIn(b"data: [DONE]", held)
