"""
The service's HTTP intake, before any model is involved: the C{Host} and
content-type rules of no-key mode, malformed header bytes, unexpected
errors, the deadline for request headers, the cap on open connections and
who may read C{/metrics}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import frozen

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._intake import host_allowed
from pylon_ai.gateway._server import GatewaySite, make_site
from pylon_ai.gateway._websocket import make_websocket_resource
from pylon_ai.testing import FakeReply

try:
    from tests._service import (
        CLIENT_KEY,
        Hold,
        RawClient,
        Service,
        raw_connect,
        start_service,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import (  # type: ignore[no-redef]
        CLIENT_KEY,
        Hold,
        RawClient,
        Service,
        raw_connect,
        start_service,
    )

CHAT = b"/v1/chat/completions"
MESSAGES = b"/v1/messages"
CHAT_BODY = json.dumps(
    {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
).encode()
MESSAGES_BODY = json.dumps(
    {"model": "gpt", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
).encode()
JSON = b"application/json"
BEARER = b"Bearer " + CLIENT_KEY.encode()
#: How long a test waits for something that should come at once.
WAIT = 5.0
REBIND = b"rebind.attacker.example"


def within(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


@frozen
class Response:
    """
    A response read off a raw socket.
    """

    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _dechunk(body)
    return Response(status, headers, body)


def raw_request(
    method: bytes,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None = None,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """
    The bytes of a request with exactly these headers (no C{Host} unless
    given), a content length for a body, and C{connection: close}.
    """
    lines = [b"%s %s %s" % (method, path, version)]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


async def send(case: TestCase, port: int, data: bytes) -> Response:
    """
    Send one request that closes its connection; the response.
    """
    client = await raw_connect(case, port)
    client.send(data)
    await within(client.closed)
    return parse_response(client.data)


def host(service: Service, name: bytes = b"127.0.0.1") -> tuple[bytes, bytes]:
    return (b"Host", b"%s:%d" % (name, service.port_number))


class LogCapture:
    """
    The log events emitted while a test runs.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        observer: ILogObserver = self.events.append  # type: ignore[assignment]
        globalLogPublisher.addObserver(observer)
        case.addCleanup(globalLogPublisher.removeObserver, observer)

    def failures(self) -> list[LogEvent]:
        return [e for e in self.events if "log_failure" in e]


class _IntakeCase(TestCase):
    timeout = 20
    server: dict[str, Any] | None = None
    service: Service

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self, self.server)

    async def send(self, data: bytes) -> Response:
        return await send(self, self.service.port_number, data)

    async def get(
        self, path: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> Response:
        return await self.send(
            raw_request(b"GET", path, [host(self.service), *(headers or [])])
        )

    async def post(
        self,
        path: bytes,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes | None = JSON,
    ) -> Response:
        extra = [(b"Content-Type", content_type)] if content_type is not None else []
        return await self.send(
            raw_request(
                b"POST", path, [host(self.service), *extra, *(headers or [])], body
            )
        )

    def requests_counted(self) -> dict[tuple[str, str, str], float]:
        """
        C{pylon_requests_total} by C{(route, model, status)}.
        """
        counts = {}
        for family in self.service.gateway.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "pylon_requests_total":
                    labels = sample.labels
                    counts[(labels["route"], labels["model"], labels["status"])] = (
                        sample.value
                    )
        return counts

    def assertOpenAIError(
        self, response: Response, status: int, error_type: str
    ) -> None:
        self.assertEqual(response.status, status, response)
        self.assertEqual(response.headers[b"content-type"], JSON)
        error = response.json()["error"]
        self.assertEqual(error["type"], error_type)
        self.assertIsInstance(error["message"], str)
        self.assertIn("code", error)

    def assertAnthropicError(
        self, response: Response, status: int, error_type: str
    ) -> None:
        self.assertEqual(response.status, status, response)
        self.assertEqual(response.headers[b"content-type"], JSON)
        body = response.json()
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], error_type)
        self.assertIsInstance(body["error"]["message"], str)


class HostCheckTests(_IntakeCase):
    """
    With no C{api_keys}, only requests whose C{Host} is a loopback name (or
    one of C{allowed_hosts}) are served: a DNS-rebinding page reaches the
    service under its own host name and gets a 403.
    """

    server: dict[str, Any] = {"allowed_hosts": ["pylon.internal", "Box:8080"]}

    async def test_rebinding_host_refused_everywhere(self) -> None:
        rebound = b"%s:%d" % (REBIND, self.service.port_number)
        headers = [(b"Host", rebound), (b"Origin", b"http://" + rebound)]
        requests = [
            raw_request(b"GET", b"/v1/models", headers),
            raw_request(b"GET", b"/", headers),
            raw_request(b"GET", b"/healthz", headers),
            raw_request(b"GET", b"/metrics", headers),
            raw_request(b"GET", b"/nowhere", headers),
            raw_request(
                b"OPTIONS",
                CHAT,
                [*headers, (b"Access-Control-Request-Method", b"POST")],
            ),
            raw_request(b"POST", CHAT, [*headers, (b"Content-Type", JSON)], CHAT_BODY),
        ]
        for data in requests:
            response = await self.send(data)
            self.assertOpenAIError(response, 403, "permission_error")
            self.assertNotIn(b"access-control-allow-origin", response.headers)
        response = await self.send(
            raw_request(
                b"POST", MESSAGES, [*headers, (b"Content-Type", JSON)], MESSAGES_BODY
            )
        )
        self.assertAnthropicError(response, 403, "permission_error")
        self.assertNotIn(b"access-control-allow-origin", response.headers)
        self.assertEqual(self.service.fake.requests, [])
        self.assertEqual(
            self.requests_counted()[("/v1/chat/completions", "unknown", "403")], 2.0
        )

    async def test_loopback_hosts_served(self) -> None:
        port = b"%d" % self.service.port_number
        for name in (
            b"localhost",
            b"localhost:" + port,
            b"LocalHost:" + port,
            b"127.0.0.1",
            b"127.0.0.1:" + port,
            b"[::1]",
            b"[::1]:" + port,
            b"pylon.internal",
            b"pylon.internal:" + port,
            b"box:8080",
        ):
            response = await self.send(
                raw_request(b"GET", b"/v1/models", [(b"Host", name)])
            )
            self.assertEqual(response.status, 200, name)

    async def test_other_hosts_refused(self) -> None:
        for name in (
            b"box:9090",
            b"box",
            b"localhost.attacker.example",
            b"127.0.0.1.nip.io:80",
            b"localhost:80x",
            b"[::1]x",
        ):
            response = await self.send(
                raw_request(b"GET", b"/v1/models", [(b"Host", name)])
            )
            self.assertOpenAIError(response, 403, "permission_error")

    async def test_missing_host_refused(self) -> None:
        response = await self.send(
            raw_request(b"GET", b"/v1/models", [], version=b"HTTP/1.0")
        )
        self.assertOpenAIError(response, 403, "permission_error")

    async def test_websocket_handshake(self) -> None:
        """
        The WebSocket handshake is refused for a foreign C{Host}, even with
        an C{Origin} that matches it.
        """
        gateway = self.service.gateway
        site = make_site(gateway, make_websocket_resource(gateway))
        self.addCleanup(site.close_connections, reactor)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port

        async def handshake(name: bytes) -> bytes:
            client = await raw_connect(self, port)
            client.send(
                b"GET /v1/ws HTTP/1.1\r\n"
                b"Host: %s:%d\r\n"
                b"Origin: http://%s:%d\r\n"
                b"Upgrade: websocket\r\n"
                b"Connection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n" % (name, port, name, port)
            )
            data = await within(client.until(lambda d: b"\r\n\r\n" in d))
            client.close()
            return data.split(b"\r\n", 1)[0]

        self.assertIn(b" 101 ", await handshake(b"127.0.0.1"))
        status = await handshake(REBIND)
        self.assertNotIn(b" 101 ", status)
        self.assertIn(b" 403 ", status)


class HostCheckWithKeysTests(_IntakeCase):
    """
    With C{api_keys} the key protects the service: any C{Host} is served.
    """

    async def test_any_host_with_key(self) -> None:
        response = await self.send(
            raw_request(
                b"GET",
                b"/v1/models",
                [(b"Host", REBIND), (b"Authorization", BEARER)],
            )
        )
        self.assertEqual(response.status, 200)


class HostAllowedTests(SynchronousTestCase):
    def test_names(self) -> None:
        self.assertTrue(host_allowed("localhost"))
        self.assertTrue(host_allowed("[::1]:8080"))
        self.assertTrue(host_allowed("a.lan:1", ("A.LAN",)))
        self.assertFalse(host_allowed(None))
        self.assertFalse(host_allowed(""))
        self.assertFalse(host_allowed("::1"))
        self.assertFalse(host_allowed("localhost:"))
        self.assertFalse(host_allowed("a.lan:2", ("a.lan:1",)))


class ContentTypeTests(_IntakeCase):
    """
    With no C{api_keys}, POST routes take only C{application/json}: a page
    on another origin can send C{text/plain} without a preflight.
    """

    server: dict[str, Any] = {}

    async def test_text_plain_refused(self) -> None:
        response = await self.post(CHAT, CHAT_BODY, content_type=b"text/plain")
        self.assertOpenAIError(response, 415, "invalid_request_error")
        response = await self.post(MESSAGES, MESSAGES_BODY, content_type=b"text/plain")
        self.assertAnthropicError(response, 415, "invalid_request_error")
        response = await self.post(
            CHAT, CHAT_BODY, content_type=b"application/x-www-form-urlencoded"
        )
        self.assertOpenAIError(response, 415, "invalid_request_error")
        response = await self.post(CHAT, CHAT_BODY, content_type=None)
        self.assertOpenAIError(response, 415, "invalid_request_error")
        self.assertEqual(self.service.fake.requests, [])
        self.assertEqual(
            self.requests_counted()[("/v1/chat/completions", "unknown", "415")], 3.0
        )

    async def test_json_with_parameters(self) -> None:
        for content_type in (
            b"application/json; charset=utf-8",
            b"Application/JSON",
            b"application/json;charset=UTF-8",
        ):
            response = await self.post(CHAT, CHAT_BODY, content_type=content_type)
            self.assertEqual(response.status, 200, response)


class ContentTypeWithKeysTests(_IntakeCase):
    """
    With C{api_keys}, the key is what stops a foreign page: a body sent as
    C{text/plain} by a client with the key is still served.
    """

    async def test_text_plain_with_key(self) -> None:
        response = await self.post(
            CHAT,
            CHAT_BODY,
            [(b"Authorization", BEARER)],
            content_type=b"text/plain",
        )
        self.assertEqual(response.status, 200, response)


class MalformedBytesTests(_IntakeCase):
    """
    Bytes that are not UTF-8 in the headers the service reads are a 400 in
    the route's shape, counted, with no traceback.
    """

    async def assertRefused(self, headers: list[tuple[bytes, bytes]]) -> None:
        log = LogCapture(self)
        response = await self.post(CHAT, CHAT_BODY, headers)
        self.assertOpenAIError(response, 400, "invalid_request_error")
        response = await self.post(MESSAGES, MESSAGES_BODY, headers)
        self.assertAnthropicError(response, 400, "invalid_request_error")
        response = await self.get(b"/v1/models", headers)
        self.assertOpenAIError(response, 400, "invalid_request_error")
        self.assertEqual(log.failures(), [])
        counted = self.requests_counted()
        self.assertEqual(counted[("/v1/chat/completions", "unknown", "400")], 1.0)
        self.assertEqual(counted[("/v1/messages", "unknown", "400")], 1.0)
        self.assertEqual(self.service.fake.requests, [])

    async def test_authorization(self) -> None:
        await self.assertRefused([(b"Authorization", b"Bearer \xff\xfe")])

    async def test_x_api_key(self) -> None:
        await self.assertRefused([(b"x-api-key", b"sk-\xc3")])

    async def test_origin(self) -> None:
        await self.assertRefused(
            [(b"Authorization", BEARER), (b"Origin", b"http://\xff.example")]
        )

    async def test_host(self) -> None:
        log = LogCapture(self)
        response = await self.send(
            raw_request(
                b"GET",
                b"/v1/models",
                [(b"Host", b"\xff\xfe"), (b"Authorization", BEARER)],
            )
        )
        self.assertOpenAIError(response, 400, "invalid_request_error")
        self.assertEqual(log.failures(), [])

    async def test_deep_nesting(self) -> None:
        log = LogCapture(self)
        auth = [(b"Authorization", BEARER)]
        response = await self.post(CHAT, b"[" * 1000, auth)
        self.assertOpenAIError(response, 400, "invalid_request_error")
        response = await self.post(MESSAGES, b"[" * 1000 + b"]" * 1000, auth)
        self.assertAnthropicError(response, 400, "invalid_request_error")
        self.assertEqual(log.failures(), [])


class MalformedBytesNoKeysTests(MalformedBytesTests):
    server: dict[str, Any] = {}

    async def test_host(self) -> None:
        response = await self.send(
            raw_request(b"GET", b"/v1/models", [(b"Host", b"localhost\xff")])
        )
        self.assertOpenAIError(response, 400, "invalid_request_error")


class _Boom(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        raise ZeroDivisionError("boom")


class UnexpectedErrorTests(_IntakeCase):
    """
    No route answers with Twisted's HTML error page: an unexpected
    exception is a 500 in the route's JSON shape, logged once.
    """

    async def test_in_a_route(self) -> None:
        log = LogCapture(self)

        def broken() -> list[str]:
            raise ZeroDivisionError("boom")

        self.service.gateway.model_names = broken  # type: ignore[method-assign]
        response = await self.get(b"/v1/models", [(b"Authorization", BEARER)])
        self.assertOpenAIError(response, 500, "api_error")
        self.assertNotIn(b"boom", response.body)
        self.assertNotIn(b"Traceback", response.body)
        self.assertEqual(len(log.failures()), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.requests_counted()[("/v1/models", "unknown", "500")], 1.0)

    async def test_in_a_completion_route(self) -> None:
        log = LogCapture(self)
        self.patch(self.service.gateway.limits, "admit", lambda key: 1 / 0)
        response = await self.post(
            MESSAGES, MESSAGES_BODY, [(b"x-api-key", CLIENT_KEY.encode())]
        )
        self.assertAnthropicError(response, 500, "api_error")
        self.assertEqual(len(log.failures()), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_outside_the_routes(self) -> None:
        """
        Even a resource that is not one of the routes (the WebSocket
        hand-over) fails in JSON.
        """
        log = LogCapture(self)
        root = self.service.site.resource
        root._routes[b"/v1/messages"] = _Boom()  # type: ignore[attr-defined]
        response = await self.post(
            MESSAGES, MESSAGES_BODY, [(b"Authorization", BEARER)]
        )
        self.assertAnthropicError(response, 500, "api_error")
        self.assertNotIn(b"boom", response.body)
        self.assertEqual(len(log.failures()), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class MetricsAccessTests(_IntakeCase):
    """
    C{/metrics} names every model: with C{api_keys} it needs a key unless
    C{metrics_public} says otherwise.
    """

    async def test_key_needed(self) -> None:
        response = await self.get(b"/metrics")
        self.assertOpenAIError(response, 401, "authentication_error")
        response = await self.get(b"/metrics", [(b"Authorization", BEARER)])
        self.assertEqual(response.status, 200)
        self.assertIn(b"pylon_streams_in_flight", response.body)


class PublicMetricsTests(_IntakeCase):
    server: dict[str, Any] = {"api_keys": [CLIENT_KEY], "metrics_public": True}

    async def test_no_key_needed(self) -> None:
        response = await self.get(b"/metrics")
        self.assertEqual(response.status, 200)


class NoKeyMetricsTests(_IntakeCase):
    server: dict[str, Any] = {}

    async def test_no_key_needed(self) -> None:
        response = await self.get(b"/metrics")
        self.assertEqual(response.status, 200)


class HeaderDeadlineClockTests(SynchronousTestCase):
    """
    The request line and headers must be in within C{header_timeout_s} of
    the connection opening or of the first byte of a kept-alive connection's
    next request; after that, the deadline does not apply.  A kept-alive
    connection may wait C{keepalive_timeout_s} for its next request.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        config = parse_config(
            {
                "server": {
                    "api_keys": ["k"],
                    "header_timeout_s": 10,
                    "keepalive_timeout_s": 30,
                }
            },
            {},
        )
        self.gateway = Gateway(config, self.clock)
        self.site = make_site(self.gateway)
        self.hold = Hold()
        self.site.resource._routes[b"/hold"] = self.hold  # type: ignore[attr-defined]
        self.transport = StringTransport()
        self.protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9))
        self.protocol.makeConnection(self.transport)

    def test_partial_headers(self) -> None:
        self.protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: 12")
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 408 "))

    def test_trickle(self) -> None:
        """
        A byte a second does not keep the connection open.
        """
        data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 20
        for i in range(10):
            self.assertFalse(self.transport.disconnecting, i)
            self.protocol.dataReceived(data[i : i + 1])
            self.clock.advance(1.0)
        self.assertTrue(self.transport.disconnecting)

    def test_nothing_sent(self) -> None:
        self.clock.advance(10.1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")

    def test_keep_alive(self) -> None:
        """
        Between requests a kept-alive connection waits up to the keep-alive
        timeout (longer than the header deadline: pools keep connections
        idle for a while); an idle connection is closed without a response.
        """
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.clock.advance(9)
        self.protocol.dataReceived(request)
        self.assertIn(b"200 OK", self.transport.value())
        self.clock.advance(25)
        self.protocol.dataReceived(request)
        self.assertEqual(self.transport.value().count(b"200 OK"), 2)
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn(b"408", self.transport.value())

    def test_one_timer(self) -> None:
        """
        Requests on a kept-alive connection set no timer each: one lazy
        timer watches the connection's deadlines.
        """
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

        def deadlines() -> list[object]:
            return [
                c
                for c in self.clock.getDelayedCalls()
                if getattr(c.func, "__name__", "") == "_deadline"
            ]

        first = deadlines()
        self.assertEqual(len(first), 1)
        for _ in range(5):
            self.clock.advance(1)
            self.protocol.dataReceived(request)
        self.assertEqual(deadlines(), first)
        self.assertEqual(self.transport.value().count(b"200 OK"), 5)
        # The last request ended at 5 s: the keep-alive wait ends at 35 s.
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_keep_alive_then_trickle(self) -> None:
        """
        The next request's first byte starts the header deadline again.
        """
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.protocol.dataReceived(request)
        self.clock.advance(20)
        self.protocol.dataReceived(request[:5])
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.transport.value().endswith(b'request_timeout"}}'))

    def test_long_request(self) -> None:
        """
        Once the headers are in, a request may take as long as it needs.
        """
        self.protocol.dataReceived(
            b"GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k\r\n\r\n"
        )
        self.assertEqual(len(self.hold.requests), 1)
        self.clock.advance(1000)
        self.assertFalse(self.transport.disconnecting)
        request = self.hold.requests[0]
        request.write(b"done")
        request.finish()
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_pipelined(self) -> None:
        """
        A request that arrived whole while the previous one was served is
        not timed out.
        """
        self.protocol.dataReceived(
            b"GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k\r\n\r\n"
            b"GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k\r\n\r\n"
        )
        self.clock.advance(100)
        self.hold.requests[0].finish()
        self.assertEqual(len(self.hold.requests), 2)
        self.clock.advance(100)
        self.assertFalse(self.transport.disconnecting)


class HeaderDeadlineTests(_IntakeCase):
    server: dict[str, Any] = {"api_keys": [CLIENT_KEY], "header_timeout_s": 0.3}

    async def test_slow_headers_closed(self) -> None:
        client = await raw_connect(self, self.service.port_number)
        client.send(b"GET /healthz HTTP/1.1\r\nHo")
        await within(client.closed)
        self.assertTrue(client.data.startswith(b"HTTP/1.1 408 "), client.data)

    async def test_slow_stream_kept(self) -> None:
        """
        A stream that takes longer than the deadline is not cut.
        """
        self.service.fake.enqueue(FakeReply(["a", "b", "c"], chunk_delay=0.2))
        body = json.loads(CHAT_BODY)
        body["stream"] = True
        response = await self.post(
            CHAT, json.dumps(body).encode(), [(b"Authorization", BEARER)]
        )
        self.assertEqual(response.status, 200)
        self.assertIn(b"[DONE]", response.body)


class ConnectionCapTests(_IntakeCase):
    server: dict[str, Any] = {"api_keys": [CLIENT_KEY], "max_connections": 2}

    async def open(self) -> RawClient:
        """
        A connection that made one request and stays open.
        """
        client = await raw_connect(self, self.service.port_number)
        client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await within(client.until(lambda d: d.endswith(b'{"status":"ok"}')))
        return client

    async def test_cap(self) -> None:
        first = await self.open()
        await self.open()
        client = await raw_connect(self, self.service.port_number)
        await within(client.closed)
        self.assertTrue(client.data.startswith(b"HTTP/1.1 503 "), client.data)
        response = parse_response(client.data)
        self.assertEqual(response.json()["error"]["type"], "overloaded_error")
        first.close()
        await within(until(lambda: len(self.service.site.connections) < 2))
        await self.open()

    async def test_upgraded_connections_count(self) -> None:
        site: GatewaySite = self.service.site
        site.upgraded = lambda: 1
        await self.open()
        client = await raw_connect(self, self.service.port_number)
        await within(client.closed)
        self.assertTrue(client.data.startswith(b"HTTP/1.1 503 "), client.data)


def until(condition: Callable[[], bool]) -> Deferred[None]:
    """
    Fire once C{condition()} holds, checking at every reactor turn.
    """
    d: Deferred[None] = Deferred()

    def check() -> None:
        if condition():
            d.callback(None)
        else:
            reactor.callLater(0.01, check)

    check()
    return d
