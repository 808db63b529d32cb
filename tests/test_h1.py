"""
Tests for L{pylon_ai._h1}, the lean HTTP/1.1 client: against real loopback
sockets (plain and TLS) for what the network does, and against an in-memory
transport for every split of a reply into reads.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface import implementer

from twisted.internet import reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectError, ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory

from pylon_ai._h1 import MAX_HEAD, H1Connection, LeanPool, LeanResponse, ProtocolError
from pylon_ai._http import make_http_client

try:
    from tests._service import WriteRecorder
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import WriteRecorder  # type: ignore[no-redef]

# -- replies ---------------------------------------------------------------

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
    b"hello world"
)
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def length_head(size: int, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n" % (
        b"".join(e + b"\r\n" for e in extra),
        size,
    )


class Body(Protocol):
    """
    A body protocol that keeps what it is given.

    @ivar reasons: Every C{connectionLost} reason, in order.
    """

    def __init__(self, on_data: Callable[[Body, bytes], None] | None = None) -> None:
        self.data: list[bytes] = []
        self.reasons: list[Failure] = []
        self.first: Deferred[None] = Deferred()
        self.done: Deferred[None] = Deferred()
        self.on_data = on_data

    @property
    def body(self) -> bytes:
        return b"".join(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)
        if self.on_data is not None:
            self.on_data(self, data)
        if not self.first.called:
            self.first.callback(None)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.reasons.append(reason)
        if not self.done.called:
            self.done.callback(None)


async def read(response: LeanResponse, body: Body | None = None) -> Body:
    """
    Deliver the body of C{response} and wait for its end.
    """
    body = Body() if body is None else body
    response.deliverBody(body)
    await body.done
    return body


# -- a scripted server -----------------------------------------------------

Reply = Callable[["Peer"], None]


def answer(*pieces: bytes, close: bool = False) -> Reply:
    """
    A reply: C{pieces} written one by one, then the connection closed if
    C{close}.
    """

    def reply(peer: Peer) -> None:
        assert peer.transport is not None
        for piece in pieces:
            peer.transport.write(piece)
        if close:
            peer.transport.loseConnection()

    return reply


def hold(peer: Peer) -> None:
    """
    A reply the test writes itself (or never).
    """


class Peer(Protocol):
    """
    The server's side of one connection: it records the bytes it got and
    answers each whole request with the next scripted reply.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.received = b""
        self.requests: list[bytes] = []
        self.closed: Deferred[None] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        self.server.peers.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = re.search(
                rb"\r\ncontent-length: *(\d+)", self._buffer[:end], re.IGNORECASE
            )
            size = end + 4 + (int(length.group(1)) if length else 0)
            if len(self._buffer) < size:
                return
            request, self._buffer = self._buffer[:size], self._buffer[size:]
            self.requests.append(request)
            self.server.requests.append(request)
            self.server.replies.pop(0)(self)
            arrivals, self.server.arrivals = self.server.arrivals, []
            for arrival in arrivals:
                arrival.callback(self)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.closed.callback(None)


class Server(Factory):
    noisy = False

    def __init__(self, replies: tuple[Reply, ...]) -> None:
        self.replies = list(replies)
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []
        self.arrivals: list[Deferred[Peer]] = []

    def buildProtocol(self, addr: Any) -> Peer:
        return Peer(self)

    def arrived(self) -> Deferred[Peer]:
        """
        A L{Deferred} that fires with the L{Peer} of the next whole request.
        """
        d: Deferred[Peer] = Deferred()
        self.arrivals.append(d)
        return d


# -- client connections, seen from the test --------------------------------


class Client:
    """
    A client connection: its L{H1Connection} and a L{Deferred} that fires
    once it is closed.
    """

    def __init__(self, protocol: H1Connection) -> None:
        self.protocol = protocol
        self.closed: Deferred[None] = Deferred()
        # The connection has no hook of its own for its end (its "lost" is
        # L{LeanPool.close}'s): wrap its connectionLost, after which it fires.
        lost = protocol.connectionLost

        def connectionLost(reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
            lost(reason)
            self.closed.callback(None)

        protocol.connectionLost = connectionLost  # type: ignore[method-assign]


class _Recording(Factory):
    noisy = False

    def __init__(self, inner: Factory, clients: list[Client]) -> None:
        self._inner = inner
        self._clients = clients

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self._inner.buildProtocol(addr)
        self._clients.append(Client(protocol))
        return protocol


@implementer(IStreamClientEndpoint)
class _RecordingEndpoint:
    def __init__(self, inner: IStreamClientEndpoint, clients: list[Client]) -> None:
        self._inner = inner
        self._clients = clients

    def connect(self, factory: Factory) -> Deferred[Any]:
        return self._inner.connect(_Recording(factory, self._clients))


@implementer(IAgentEndpointFactory)
class Recording:
    """
    An endpoint factory (the library's own, by default) that records the
    connections made through it.
    """

    def __init__(self, inner: IAgentEndpointFactory | None = None) -> None:
        if inner is None:
            inner = make_http_client(reactor)._agent._endpointFactory
        self._inner = inner
        self.clients: list[Client] = []

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return _RecordingEndpoint(self._inner.endpointForURI(uri), self.clients)


class SocketTestCase(TestCase):
    """
    A scripted server on 127.0.0.1 and a L{LeanPool} talking to it.
    """

    timeout = 5

    def setUp(self) -> None:
        self.pool = LeanPool(reactor)
        self.endpoints = Recording()
        self.base = ""

    async def serve(
        self, *replies: Reply, tls: PrivateCertificate | None = None
    ) -> Server:
        server = Server(replies)
        if tls is None:
            endpoint: Any = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
            scheme = "http"
        else:
            endpoint = SSL4ServerEndpoint(
                reactor, 0, tls.options(), interface="127.0.0.1"
            )
            scheme = "https"
        port = await endpoint.listen(server)
        self.base = f"{scheme}://127.0.0.1:{port.getHost().port}"
        self.addCleanup(self._stop, server, port)
        return server

    async def _stop(self, server: Server, port: Any) -> None:
        await self.pool.close()
        waits = []
        for client in self.endpoints.clients:
            if not client.closed.called:
                waits.append(client.closed)
                client.protocol.transport.abortConnection()
        for peer in server.peers:
            if not peer.closed.called:
                waits.append(peer.closed)
                peer.transport.abortConnection()
        await gatherResults(waits)
        await port.stopListening()

    def request(
        self,
        path: str = "/p",
        headers: Headers | None = None,
        body: bytes = b"{}",
    ) -> Deferred[LeanResponse]:
        return self.pool.request(
            self.endpoints,
            (self.base + path).encode("ascii"),
            Headers() if headers is None else headers,
            body,
        )


# -- the request -----------------------------------------------------------


class RequestTests(SocketTestCase):
    """
    What the server receives.
    """

    async def test_request_bytes(self) -> None:
        """
        One C{POST path?query HTTP/1.1}, C{Host} with the port (not the
        scheme's default), the given headers (every value), a
        C{Content-Length} and the body: nothing more.
        """
        server = await self.serve(answer(OK))
        headers = Headers(
            {
                b"Authorization": [b"Bearer k"],
                b"Content-Type": [b"application/json"],
                b"X-Multi": [b"a", b"b"],
            }
        )
        body = b'{"messages": []}'
        response = await self.request("/v1/chat?x=1&y=%20", headers, body)
        self.assertEqual((await read(response)).body, b"hello world")
        [peer] = server.peers
        self.assertEqual(server.requests, [peer.received])
        # Replies' pieces do not wait on Nagle.
        self.assertTrue(self.endpoints.clients[0].protocol.transport.getTcpNoDelay())
        head, _, sent = peer.received.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"POST /v1/chat?x=1&y=%20 HTTP/1.1")
        port = self.base.rsplit(":", 1)[1].encode()
        self.assertEqual(
            sorted(lines[1:]),
            sorted(
                [
                    b"Host: 127.0.0.1:" + port,
                    b"Authorization: Bearer k",
                    b"Content-Type: application/json",
                    b"X-Multi: a",
                    b"X-Multi: b",
                    b"Content-Length: %d" % len(body),
                ]
            ),
        )
        self.assertEqual(sent, body)

    async def test_empty_body(self) -> None:
        """
        An empty body is sent as C{Content-Length: 0}.
        """
        server = await self.serve(answer(OK))
        await read(await self.request(body=b""))
        self.assertIn(b"\r\nContent-Length: 0\r\n\r\n", server.requests[0])
        self.assertTrue(server.requests[0].endswith(b"\r\n\r\n"))


# -- replies on a real socket ---------------------------------------------


class ReplyTests(SocketTestCase):
    """
    Each framing of a reply, from a real server.
    """

    async def test_content_length(self) -> None:
        """
        A body framed by C{Content-Length}: the status, the headers and
        the body, ending in L{ResponseDone}.
        """
        await self.serve(answer(OK))
        response = await self.request()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.phrase, b"OK")
        self.assertEqual(response.version, (b"HTTP", 1, 1))
        self.assertEqual(response.length, 11)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/plain"]
        )
        self.assertEqual(response.raw_header(b"content-type"), b"text/plain")
        body = await read(response)
        self.assertEqual(body.body, b"hello world")
        self.assertEqual(len(body.reasons), 1)
        body.reasons[0].trap(ResponseDone)

    async def test_chunked(self) -> None:
        """
        A chunked body, with chunk extensions and trailers, is the chunks'
        data.
        """
        await self.serve(
            answer(
                CHUNKED_HEAD,
                b"5;name=value\r\nhello\r\n",
                b'1 ; x="y"\r\n \r\nA\r\n0123456789\r\n',
                b"0\r\nX-Trailer: t\r\n\r\n",
            )
        )
        response = await self.request()
        self.assertIsNone(response.length)
        body = await read(response)
        self.assertEqual(body.body, b"hello 0123456789")
        body.reasons[0].trap(ResponseDone)

    async def test_until_close(self) -> None:
        """
        A body without a length ends with the connection, in
        L{PotentialDataLoss}.
        """
        await self.serve(answer(b"HTTP/1.1 200 OK\r\n\r\n", b"streamed", close=True))
        body = await read(await self.request())
        self.assertEqual(body.body, b"streamed")
        body.reasons[0].trap(PotentialDataLoss)

    async def test_no_content(self) -> None:
        """
        A 204 has no body: the protocol gets L{ResponseDone} and no data.
        """
        await self.serve(answer(b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"))
        response = await self.request()
        self.assertEqual(response.code, 204)
        self.assertEqual(response.length, 0)
        body = await read(response)
        self.assertEqual(body.data, [])
        body.reasons[0].trap(ResponseDone)

    async def test_continue(self) -> None:
        """
        A C{100 Continue} before the real status is skipped.
        """
        await self.serve(
            answer(b"HTTP/1.1 100 Continue\r\n\r\n", length_head(2, b"X-A: b"), b"ok")
        )
        response = await self.request()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.raw_header(b"x-a"), b"b")
        self.assertEqual((await read(response)).body, b"ok")

    async def test_error_status(self) -> None:
        """
        An error status is a response like any other, its body read.
        """
        await self.serve(
            answer(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\n\r\nslow")
        )
        response = await self.request()
        self.assertEqual((response.code, response.phrase), (429, b"Too Many Requests"))
        self.assertEqual((await read(response)).body, b"slow")


# -- keep-alive ------------------------------------------------------------


class KeepAliveTests(SocketTestCase):
    """
    Which connections are used again.
    """

    async def test_reused(self) -> None:
        """
        Two requests in a row use one connection, even when the second is
        made as the first body ends (here, from its C{connectionLost}: an
        C{await} resumes there).
        """
        server = await self.serve(
            answer(OK), answer(CHUNKED_HEAD, b"2\r\nok\r\n0\r\n\r\n")
        )
        self.assertEqual((await read(await self.request())).body, b"hello world")
        self.assertEqual((await read(await self.request())).body, b"ok")
        self.assertEqual(len(server.peers), 1)
        self.assertEqual(len(server.peers[0].requests), 2)

    async def _not_reused(self, first: bytes) -> None:
        server = await self.serve(answer(first), answer(OK))
        await read(await self.request())
        # The client closes it (the server does not).
        await server.peers[0].closed
        self.assertEqual((await read(await self.request())).body, b"hello world")
        self.assertEqual(len(server.peers), 2)

    async def test_connection_close(self) -> None:
        """
        A reply with C{Connection: close} ends its connection.
        """
        await self._not_reused(length_head(2, b"Connection: close") + b"ok")

    async def test_http10(self) -> None:
        """
        An HTTP/1.0 reply ends its connection.
        """
        await self._not_reused(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def test_bytes_after_reply(self) -> None:
        """
        Bytes after the end of a reply: the connection is not trusted again.
        """
        await self._not_reused(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def test_closed_while_idle(self) -> None:
        """
        A pooled connection that the server closed is not handed out again.
        """
        server = await self.serve(answer(OK), answer(OK))
        await read(await self.request())
        server.peers[0].transport.loseConnection()
        await self.endpoints.clients[0].closed
        self.assertEqual((await read(await self.request())).body, b"hello world")
        self.assertEqual(len(server.peers), 2)

    async def test_not_persistent(self) -> None:
        """
        A pool that is not persistent asks for C{Connection: close} and
        closes each connection after its reply.
        """
        self.pool = LeanPool(reactor, persistent=False)
        server = await self.serve(answer(OK), answer(OK))
        await read(await self.request())
        await server.peers[0].closed
        self.assertIn(b"\r\nConnection: close\r\n", server.requests[0])
        await read(await self.request())
        self.assertEqual(len(server.peers), 2)

    async def test_paused_at_the_end(self) -> None:
        """
        A body whose reader paused it just as it ended still leaves a
        connection that reads: the next request on it gets its reply.
        """
        server = await self.serve(answer(OK), answer(OK))
        body = await read(
            await self.request(), Body(lambda b, _: b.transport.pauseProducing())
        )
        self.assertEqual(body.body, b"hello world")
        self.assertEqual((await read(await self.request())).body, b"hello world")
        self.assertEqual(len(server.peers), 1)


# -- errors ----------------------------------------------------------------


class ErrorTests(SocketTestCase):
    """
    How requests fail.
    """

    async def test_refused(self) -> None:
        """
        A refused connection fails with a L{ConnectError}, as the agent's.
        """
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        await port.stopListening()
        await self.assertFailure(self.request(), ConnectError)

    async def test_closed_before_reply(self) -> None:
        """
        A server that closes before any reply: L{ResponseNeverReceived}.
        """
        await self.serve(answer(close=True))
        await self.assertFailure(self.request(), ResponseNeverReceived)

    async def test_closed_in_head(self) -> None:
        """
        A server that closes in the middle of the head: L{ResponseNeverReceived}.
        """
        await self.serve(answer(b"HTTP/1.1 200 OK\r\nContent-Le", close=True))
        await self.assertFailure(self.request(), ResponseNeverReceived)

    async def _cut(self, *pieces: bytes) -> Body:
        await self.serve(answer(*pieces, close=True))
        body = await read(await self.request())
        self.assertEqual(len(body.reasons), 1)
        body.reasons[0].trap(ResponseFailed)
        return body

    async def test_closed_mid_length(self) -> None:
        """
        A body cut short of its C{Content-Length}: L{ResponseFailed}, after
        the bytes that came.
        """
        body = await self._cut(length_head(11), b"hello")
        self.assertEqual(body.body, b"hello")

    async def test_closed_mid_chunked(self) -> None:
        """
        A chunked body cut before its last chunk: L{ResponseFailed}.
        """
        body = await self._cut(CHUNKED_HEAD, b"5\r\nhello\r\n3\r\nab")
        self.assertEqual(body.body, b"helloab")

    async def _bad_head(self, reply: bytes, message: str) -> None:
        server = await self.serve(answer(reply))
        error = await self.assertFailure(self.request(), ResponseNeverReceived)
        [reason] = error.reasons
        reason.trap(ProtocolError)
        self.assertIn(message, str(reason.value))
        # The client drops the connection.
        await server.peers[0].closed

    async def test_bad_status_line(self) -> None:
        """
        A malformed status line fails the request with a L{ProtocolError}
        that shows it, and closes the connection.
        """
        await self._bad_head(b"HTTP/1.1 2x0 OK\r\n\r\n", "bad status code")

    async def test_head_too_large(self) -> None:
        """
        A head over L{MAX_HEAD} fails the request and closes the connection.
        """
        await self._bad_head(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD, "too large"
        )

    async def test_bad_chunk_size(self) -> None:
        """
        A bad chunk size fails the body with L{ResponseFailed} (a
        L{ProtocolError} inside) and closes the connection.
        """
        server = await self.serve(answer(CHUNKED_HEAD, b"5\r\nhello\r\nzz\r\n"))
        body = await read(await self.request())
        body.reasons[0].trap(ResponseFailed)
        body.reasons[0].value.reasons[0].trap(ProtocolError)
        self.assertIn("bad chunk size", str(body.reasons[0].value.reasons[0].value))
        await server.peers[0].closed

    async def test_cancel_new_connection(self) -> None:
        """
        Cancelling while the head is awaited on a new connection closes it
        and fails with L{CancelledError}.
        """
        server = await self.serve(hold)
        arrived = server.arrived()
        d = self.request()
        peer = await arrived
        d.cancel()
        await self.assertFailure(d, CancelledError)
        await peer.closed

    async def test_cancel_pooled_connection(self) -> None:
        """
        Cancelling while the head is awaited on a pooled connection closes
        it and fails with L{CancelledError}; the next request connects anew.
        """
        server = await self.serve(answer(OK), hold, answer(OK))
        await read(await self.request())
        arrived = server.arrived()
        d = self.request()
        peer = await arrived
        self.assertEqual(server.peers, [peer])
        d.cancel()
        await self.assertFailure(d, CancelledError)
        await peer.closed
        await read(await self.request())
        self.assertEqual(len(server.peers), 2)

    async def test_stop_producing(self) -> None:
        """
        The body transport's C{stopProducing} in the middle of the body
        closes the connection; the body protocol hears of it once.
        """
        server = await self.serve(answer(length_head(11), b"hello"))
        body = await read(
            await self.request(), Body(lambda b, _: b.transport.stopProducing())
        )
        self.assertEqual(body.body, b"hello")
        body.reasons[0].trap(ResponseFailed)
        await server.peers[0].closed
        await self.endpoints.clients[0].closed
        self.assertEqual(len(body.reasons), 1)

    async def test_pause_resume(self) -> None:
        """
        Pausing the body transport stops reading the socket; resuming reads
        again.
        """
        server = await self.serve(hold)
        arrived = server.arrived()
        d = self.request()
        peer = await arrived
        peer.transport.write(length_head(11) + b"hello")
        response = await d
        body = Body(lambda b, _: b.transport.pauseProducing())
        response.deliverBody(body)
        await body.first
        socket = self.endpoints.clients[0].protocol.transport
        self.assertNotIn(socket, reactor.getReaders())
        peer.transport.write(b" world")
        self.assertEqual(body.body, b"hello")
        body.on_data = None
        body.transport.resumeProducing()
        self.assertIn(socket, reactor.getReaders())
        await body.done
        self.assertEqual(body.body, b"hello world")


# -- the pool --------------------------------------------------------------


class PoolTests(SocketTestCase):
    """
    L{LeanPool.close} and the idle timer.
    """

    async def test_close(self) -> None:
        """
        C{close()} closes idle connections, and its L{Deferred} fires once
        they are closed.
        """
        server = await self.serve(answer(OK), answer(OK))
        first, second = self.request(), self.request()
        await read(await first)
        await read(await second)
        self.assertEqual(len(server.peers), 2)
        closing = self.pool.close()
        self.assertFalse(closing.called)
        await closing
        self.assertEqual(
            [bool(c.protocol.transport.disconnected) for c in self.endpoints.clients],
            [True, True],
        )
        await gatherResults([peer.closed for peer in server.peers])

    def test_close_nothing(self) -> None:
        """
        C{close()} with no idle connection fires at once.
        """
        self.assertIsNone(self.successResultOf(self.pool.close()))

    async def test_idle_timeout(self) -> None:
        """
        A connection idle for C{idle_seconds} is closed, and not used again.
        """
        self.pool = LeanPool(reactor, idle_seconds=0.01)
        server = await self.serve(answer(OK), answer(OK))
        await read(await self.request())
        await server.peers[0].closed
        await read(await self.request())
        self.assertEqual(len(server.peers), 2)


class TLSTests(SocketTestCase):
    """
    HTTPS through the library's endpoints (and so its TLS policy).
    """

    async def test_https(self) -> None:
        """
        Requests over HTTPS with a trusted test CA work and share one
        connection.
        """
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.endpoints = Recording(
            make_http_client(
                reactor, trust_root=Certificate.loadPEM(ca.cert_pem.bytes())
            )._agent._endpointFactory
        )
        server = await self.serve(
            answer(OK),
            answer(CHUNKED_HEAD, b"2\r\nok\r\n0\r\n\r\n"),
            tls=PrivateCertificate.loadPEM(cert.private_key_and_cert_chain_pem.bytes()),
        )
        self.assertTrue(self.base.startswith("https://"))
        self.assertEqual((await read(await self.request())).body, b"hello world")
        self.assertEqual((await read(await self.request())).body, b"ok")
        self.assertEqual(len(server.peers), 1)
        port = self.base.rsplit(":", 1)[1].encode()
        self.assertIn(b"\r\nHost: 127.0.0.1:" + port + b"\r\n", server.requests[0])


# -- in memory: every split of a reply ---------------------------------------


@implementer(IStreamClientEndpoint)
class _MemoryEndpoint:
    def __init__(self, endpoints: Memory) -> None:
        self._endpoints = endpoints

    def connect(self, factory: Factory) -> Deferred[Any]:
        if self._endpoints.pending is not None:
            return self._endpoints.pending
        protocol = factory.buildProtocol(None)
        transport = WriteRecorder()
        protocol.makeConnection(transport)
        self._endpoints.connections.append((protocol, transport))
        return succeed(protocol)


@implementer(IAgentEndpointFactory)
class Memory:
    """
    Endpoints whose connections are L{StringTransport}s, made at once (or
    left pending on C{pending}).
    """

    def __init__(self) -> None:
        self.connections: list[tuple[H1Connection, WriteRecorder]] = []
        self.pending: Deferred[Any] | None = None

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return _MemoryEndpoint(self)


def split(data: bytes, points: set[int]) -> list[bytes]:
    cuts = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]


class MemoryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = LeanPool(self.clock)
        self.endpoints = Memory()

    def request(self, url: bytes = b"http://example.com/p") -> Deferred[LeanResponse]:
        return self.pool.request(self.endpoints, url, Headers(), b"{}")

    def exchange(
        self, pieces: list[bytes], body: Body | None = None, late: bool = False
    ) -> tuple[LeanResponse | Failure, Body, H1Connection, WriteRecorder]:
        """
        Send a request, feed its connection C{pieces} one read each, and
        deliver the body to C{body} when the response comes (unless
        C{late}: the caller delivers it).
        """
        body = Body() if body is None else body
        d = self.request()
        connection, transport = self.endpoints.connections[-1]
        results: list[LeanResponse | Failure] = []

        def got(response: LeanResponse) -> None:
            results.append(response)
            if not late:
                response.deliverBody(body)

        d.addCallbacks(got, results.append)
        for piece in pieces:
            connection.dataReceived(piece)
        self.assertEqual(len(results), 1)
        return results[0], body, connection, transport


# (name, reply, body, code, end, reused, closes)
SCENARIOS = [
    ("length", OK, b"hello world", 200, ResponseDone, True, False),
    (
        "chunked",
        CHUNKED_HEAD + b'5;name=val\r\nhello\r\n1\r\n \r\nA ; x="y"\r\n0123456789\r\n'
        b"0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n",
        b"hello 0123456789",
        200,
        ResponseDone,
        True,
        False,
    ),
    (
        "chunked, CRLF in the data",
        CHUNKED_HEAD + b"4\r\n\r\n\r\n\r\n1a\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n",
        b"\r\n\r\n" + b"z" * 26,
        200,
        ResponseDone,
        True,
        False,
    ),
    (
        "until close",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        b"until close",
        200,
        PotentialDataLoss,
        False,
        True,
    ),
    (
        "no content",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"",
        204,
        ResponseDone,
        True,
        False,
    ),
    ("length 0", length_head(0), b"", 200, ResponseDone, True, False),
    (
        "continue",
        b"HTTP/1.1 100 Continue\r\n\r\n" + length_head(2) + b"ok",
        b"ok",
        200,
        ResponseDone,
        True,
        False,
    ),
    (
        "http/1.0",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"ok",
        200,
        ResponseDone,
        False,
        False,
    ),
    (
        "http/1.0 keep-alive",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        b"ok",
        200,
        ResponseDone,
        True,
        False,
    ),
    (
        "connection close",
        length_head(2, b"Connection: close") + b"ok",
        b"ok",
        200,
        ResponseDone,
        False,
        False,
    ),
    (
        "bytes after the end",
        OK + b"HTTP/1.1",
        b"hello world",
        200,
        ResponseDone,
        False,
        False,
    ),
    (
        "chunked, bytes after the end",
        CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"ok",
        200,
        ResponseDone,
        False,
        False,
    ),
    (
        "bytes after a 204",
        b"HTTP/1.1 204 No Content\r\n\r\nxx",
        b"",
        204,
        ResponseDone,
        False,
        False,
    ),
]


class SplitTests(MemoryTestCase):
    """
    Whatever the split of a reply into reads, the body is exactly its
    payload, it ends the same way, and the connection is kept or not alike.
    """

    @settings(max_examples=300, deadline=None)
    @given(data=st.data())
    def test_any_split(self, data: st.DataObject) -> None:
        name, raw, payload, code, end, reused, closes = data.draw(
            st.sampled_from(SCENARIOS)
        )
        points = data.draw(st.sets(st.integers(1, len(raw) - 1)))
        late = data.draw(st.booleans())
        self.setUp()
        response, body, connection, transport = self.exchange(
            split(raw, points), late=late
        )
        assert isinstance(response, LeanResponse), (name, response)
        self.assertEqual(response.code, code)
        if closes:
            connection.connectionLost(Failure(ConnectionDone()))
        if late:
            response.deliverBody(body)
        self.assertEqual(body.body, payload, name)
        self.assertEqual(len(body.reasons), 1, name)
        self.assertTrue(body.reasons[0].check(end), (name, body.reasons[0]))
        if not closes:
            self.assertEqual(transport.disconnected, not reused, name)
        self.request()
        self.assertEqual(len(self.endpoints.connections), 1 if reused else 2, name)
        if reused:
            self.assertEqual(len(transport.writes), 2)

    @settings(max_examples=200, deadline=None)
    @given(
        chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=6),
        extensions=st.booleans(),
        upper=st.booleans(),
        trailers=st.lists(st.sampled_from([b"X-A: b", b"X-Checksum: 123", b"X: "])),
        data=st.data(),
    )
    def test_any_chunking(
        self,
        chunks: list[bytes],
        extensions: bool,
        upper: bool,
        trailers: list[bytes],
        data: st.DataObject,
    ) -> None:
        raw = CHUNKED_HEAD
        for chunk in chunks:
            size = b"%x" % len(chunk)
            raw += (size.upper() if upper else size) + (
                b" ;ext=1" if extensions else b""
            )
            raw += b"\r\n" + chunk + b"\r\n"
        raw += b"0" + (b";last" if extensions else b"") + b"\r\n"
        raw += b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
        points = data.draw(st.sets(st.integers(1, len(raw) - 1)))
        self.setUp()
        _, body, _, transport = self.exchange(split(raw, points))
        self.assertEqual(body.body, b"".join(chunks))
        body.reasons[0].trap(ResponseDone)
        self.assertFalse(transport.disconnected)

    @settings(max_examples=100, deadline=None)
    @given(data=st.data())
    def test_bad_chunk_keeps_what_came(self, data: st.DataObject) -> None:
        """
        A chunked body that goes bad fails after every byte of the good
        chunks before, whatever the split.
        """
        raw = CHUNKED_HEAD + b"5\r\nhello\r\n1\r\n \r\nzz\r\nworld\r\n"
        points = data.draw(st.sets(st.integers(1, len(raw) - 1)))
        self.setUp()
        _, body, _, transport = self.exchange(split(raw, points))
        self.assertEqual(body.body, b"hello ")
        body.reasons[0].trap(ResponseFailed)
        self.assertTrue(transport.disconnected)


class MemoryTests(MemoryTestCase):
    """
    The request's bytes and the connection's life, in memory.
    """

    def test_one_write(self) -> None:
        """
        The request goes in one write.
        """
        self.pool.request(
            self.endpoints,
            b"http://example.com/p",
            Headers({b"Authorization": [b"Bearer k"]}),
            b"x" * 1000,
        )
        [(_, transport)] = self.endpoints.connections
        self.assertEqual(len(transport.writes), 1)
        self.assertTrue(transport.writes[0].startswith(b"POST /p HTTP/1.1\r\n"))
        self.assertTrue(transport.writes[0].endswith(b"\r\n\r\n" + b"x" * 1000))

    def test_host(self) -> None:
        """
        C{Host} has the port unless it is the scheme's default; a URL
        without a path posts to C{/}.
        """
        cases = [
            (b"http://example.com/p", b"example.com"),
            (b"http://example.com:80/p", b"example.com"),
            (b"http://example.com:8080/p", b"example.com:8080"),
            (b"http://example.com:443/p", b"example.com:443"),
            (b"https://example.com/p", b"example.com"),
            (b"https://example.com:443/p", b"example.com"),
            (b"https://example.com:80/p", b"example.com:80"),
            (b"http://[::1]:8080/p", b"[::1]:8080"),
            (b"http://example.com", b"example.com"),
        ]
        for url, host in cases:
            self.request(url)
            _, transport = self.endpoints.connections[-1]
            head = transport.value().split(b"\r\n\r\n")[0].split(b"\r\n")
            path = b"/" if url == b"http://example.com" else b"/p"
            self.assertEqual(head[0], b"POST " + path + b" HTTP/1.1", url)
            self.assertEqual(
                [h for h in head if h.startswith(b"Host:")], [b"Host: " + host], url
            )

    def test_bad_urls(self) -> None:
        """
        A URL that is not http(s), or has whitespace in it, is refused.
        """
        for url in [
            b"ftp://example.com/p",
            b"http://example.com/a b",
            b"http://example.com/a\r\nX: y",
        ]:
            self.assertRaises(ValueError, self.request, url)

    def test_bad_heads(self) -> None:
        """
        A head that is not HTTP/1.x this client reads fails the request with
        a L{ProtocolError} and drops the connection.
        """
        for head in [
            b"HTTP/2 200 OK",
            b"ICY 200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.9 200 OK",
            b"HTTP/1.1",
            b"HTTP/1.1 200 OK\r\nno colon",
            b"HTTP/1.1 200 OK\r\n Folded: x",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3",
        ]:
            result, _, _, transport = self.exchange([head + b"\r\n\r\n"])
            assert isinstance(result, Failure), head
            result.trap(ResponseNeverReceived)
            result.value.reasons[0].trap(ProtocolError)
            self.assertTrue(transport.disconnected, head)

    def test_head_too_large(self) -> None:
        """
        A head over L{MAX_HEAD} fails, in many reads or in one.
        """
        big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD
        for pieces in [
            split(big, set(range(1000, len(big), 1000))),
            [big + b"\r\n\r\n"],
        ]:
            result, _, _, transport = self.exchange(pieces)
            assert isinstance(result, Failure)
            result.trap(ResponseNeverReceived)
            self.assertIn("too large", str(result.value.reasons[0].value))
            self.assertTrue(transport.disconnected)

    def test_bad_chunks(self) -> None:
        """
        A chunk size that is not plain hex digits, a chunk not ending in
        CRLF, or a chunk-size line too long: L{ResponseFailed}, the
        connection dropped.
        """
        for chunked in [
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b";x\r\nhello\r\n0\r\n\r\n",
            b"g\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5;" + b"x" * 5000,
        ]:
            _, body, _, transport = self.exchange([CHUNKED_HEAD + chunked])
            self.assertEqual(len(body.reasons), 1, chunked)
            body.reasons[0].trap(ResponseFailed)
            body.reasons[0].value.reasons[0].trap(ProtocolError)
            self.assertTrue(transport.disconnected, chunked)

    def test_idle_bytes(self) -> None:
        """
        Bytes on a pooled connection between requests drop it.
        """
        _, _, connection, transport = self.exchange([OK])
        self.assertFalse(transport.disconnected)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.assertTrue(transport.disconnected)
        self.request()
        self.assertEqual(len(self.endpoints.connections), 2)

    def test_closed_while_idle(self) -> None:
        """
        A pooled connection that closed is not handed out again.
        """
        _, _, connection, _ = self.exchange([OK])
        connection.connectionLost(Failure(ConnectionDone()))
        # Forgotten at once: its idle timer is gone too.
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.request()
        self.assertEqual(len(self.endpoints.connections), 2)

    def test_closing_while_idle(self) -> None:
        """
        A pooled connection that is closing (its end not yet seen) is not
        handed out again.
        """
        _, _, _, transport = self.exchange([OK])
        transport.loseConnection()
        self.request()
        self.assertEqual(len(self.endpoints.connections), 2)

    def test_closed_before_delivery(self) -> None:
        """
        A reply that was whole before the connection closed ends in
        L{ResponseDone}, even if its body is delivered after the close.
        """
        response, body, connection, _ = self.exchange([OK], late=True)
        assert isinstance(response, LeanResponse)
        connection.connectionLost(Failure(ConnectionDone()))
        response.deliverBody(body)
        self.assertEqual(body.body, b"hello world")
        self.assertEqual(len(body.reasons), 1)
        body.reasons[0].trap(ResponseDone)

    def test_idle_timer(self) -> None:
        """
        A pooled connection is closed after C{idle_seconds} idle; a
        connection taken from the pool is not closed by its old timer, and
        gets a new one when it is idle again.
        """
        self.pool = LeanPool(self.clock, idle_seconds=30)
        _, _, _, transport = self.exchange([OK])
        self.clock.advance(20)
        self.exchange([length_head(2)])  # the body is still coming
        self.assertEqual(len(self.endpoints.connections), 1)
        self.clock.advance(20)
        self.assertFalse(transport.disconnecting)
        connection, _ = self.endpoints.connections[0]
        connection.dataReceived(b"ok")
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_timer_for_the_pool(self) -> None:
        """
        However many connections wait in the pool, one timer watches them
        (not one per connection and request), and each is closed once it
        was idle for C{idle_seconds}.
        """
        self.pool = LeanPool(self.clock, idle_seconds=30)
        pending = [self.request() for _ in range(3)]
        connections = list(self.endpoints.connections)
        self.assertEqual(len(connections), 3)
        for d in pending:
            d.addCallback(lambda response: response.deliverBody(Body()))
        for i, (connection, _) in enumerate(connections):
            connection.dataReceived(OK)
            if i == 0:
                self.clock.advance(10)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(20)  # the first has been idle 30 s
        self.assertEqual(
            [t.disconnecting for _, t in connections], [True, False, False]
        )
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.assertTrue(all(t.disconnecting for _, t in connections))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_max_idle(self) -> None:
        """
        No more than C{max_idle_per_host} connections wait in the pool.
        """
        self.pool = LeanPool(self.clock, max_idle_per_host=1)
        first, second = self.request(), self.request()
        results: list[LeanResponse] = []
        first.addCallback(results.append)
        second.addCallback(results.append)
        for connection, _ in self.endpoints.connections:
            connection.dataReceived(OK)
        for response in results:
            response.deliverBody(Body())
        self.assertEqual(
            [t.disconnecting for _, t in self.endpoints.connections], [False, True]
        )

    def test_cancel_connecting(self) -> None:
        """
        Cancelling while the connection is made cancels the connection
        attempt.
        """
        cancelled: list[Deferred[Any]] = []
        self.endpoints.pending = Deferred(cancelled.append)
        d = self.request()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(cancelled), 1)

    def test_stop_producing_once(self) -> None:
        """
        C{stopProducing} mid-body drops the connection; the body protocol
        gets one C{connectionLost}, even when the connection's end follows.
        """
        body = Body(lambda b, _: b.transport.stopProducing())
        _, body, connection, transport = self.exchange(
            [length_head(11), b"hello"], body
        )
        self.assertTrue(transport.disconnected)
        connection.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(len(body.reasons), 1)
        body.reasons[0].trap(ResponseFailed)
        self.assertEqual(body.body, b"hello")

    def test_finished_body_transport_is_inert(self) -> None:
        """
        Once a body ended, its transport no longer reaches the connection:
        a late C{stopProducing} or C{pauseProducing} from its reader (a
        producer still registered with a slow client, say) does not touch
        the next request on that connection.
        """
        _, first, connection, transport = self.exchange([OK])
        first.reasons[0].trap(ResponseDone)
        _, second, _, _ = self.exchange([length_head(11), b"hello"])
        self.assertEqual(len(self.endpoints.connections), 1)
        first.transport.pauseProducing()
        self.assertEqual(transport.producerState, "producing")
        first.transport.stopProducing()
        self.assertFalse(transport.disconnected)
        connection.dataReceived(b" world")
        self.assertEqual(second.body, b"hello world")
        second.reasons[0].trap(ResponseDone)

    def test_pooled_connection_reads(self) -> None:
        """
        A body that ends while its reader paused it leaves a pooled
        connection that reads again.
        """
        _, body, _, transport = self.exchange(
            [OK], Body(lambda b, _: b.transport.pauseProducing())
        )
        body.reasons[0].trap(ResponseDone)
        self.assertFalse(transport.disconnected)
        self.assertEqual(transport.producerState, "producing")
