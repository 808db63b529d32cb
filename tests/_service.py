"""
The service on a real loopback socket, in front of a L{FakeProvider}, for the
integration tests (C{test_service_sdk}, C{test_service_http}).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import define

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import GatewaySite, make_site
from pylon_ai.testing import FakeProvider

#: The key clients present.
CLIENT_KEY = "sk-local"
#: The keys the gateway sends upstream.
ANTHROPIC_UPSTREAM_KEY = "sk-up-anthropic"
OPENAI_UPSTREAM_KEY = "sk-up-openai"


def models(base_url: str, **options: Any) -> list[dict[str, Any]]:
    """
    The C{[[models]]} of every test: one per provider kind, all but the mock
    pointing at the fake.  Retries are off (each scripted reply answers
    exactly one request) unless C{options} turn them on.
    """
    options = {"retries": 0, **options}
    upstream = [
        {
            "name": "claude",
            "provider": "anthropic",
            "model": "claude-up",
            "api_key": ANTHROPIC_UPSTREAM_KEY,
            "base_url": base_url,
        },
        {
            "name": "gpt",
            "provider": "openai",
            "model": "gpt-up",
            "api_key": OPENAI_UPSTREAM_KEY,
            "base_url": base_url,
        },
        {"name": "local", "provider": "custom", "base_url": base_url, "api_key": ""},
    ]
    return [
        *(dict(m, **options) for m in upstream),
        {"name": "mock", "provider": "mock"},
    ]


@define
class Service:
    """
    A running gateway and the fake behind it.
    """

    fake: FakeProvider
    gateway: Gateway
    site: GatewaySite
    port: IListeningPort

    @property
    def port_number(self) -> int:
        return int(self.port.getHost().port)  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_number}"


async def start_service(
    case: TestCase, server: dict[str, Any] | None = None
) -> Service:
    """
    Start a fake upstream and a gateway in front of it; the cleanups of
    C{case} stop both.

    @param server: The C{[server]} table; by default one client key,
        L{CLIENT_KEY}.
    """
    fake = FakeProvider(reactor)
    await fake.start()
    case.addCleanup(fake.stop)
    config = parse_config(
        {
            "server": {"api_keys": [CLIENT_KEY]} if server is None else server,
            "models": models(fake.base_url),
        },
        {},
    )
    gateway = Gateway(config, reactor)
    case.addCleanup(gateway.close)
    site = make_site(gateway)
    case.addCleanup(site.close_connections, reactor)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    return Service(fake, gateway, site, port)


def sse_data(body: bytes) -> list[str]:
    """
    The C{data:} payloads of an event stream, in order.
    """
    out = []
    for frame in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [
            line[5:].lstrip(b" ")
            for line in frame.split(b"\n")
            if line.startswith(b"data:")
        ]
        if lines:
            out.append(b"\n".join(lines).decode("utf-8"))
    return out


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """
    The C{(event name, data)} of each event of an event stream.
    """
    out = []
    for frame in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name = None
        data = []
        for line in frame.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8")
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if name is not None or data:
            out.append((name, b"\n".join(data).decode("utf-8")))
    return out


def json_data(body: bytes) -> list[Any]:
    """
    The JSON C{data:} payloads of an event stream (C{[DONE]} left out).
    """
    return [json.loads(d) for d in sse_data(body) if d != "[DONE]"]


class RawClient(Protocol):
    """
    A raw TCP client: sends bytes, collects what comes back, and lets a test
    wait for a part of it or for the close.
    """

    def __init__(self) -> None:
        self.data = b""
        self.connected_d: Deferred[RawClient] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._waits: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []

    def connectionMade(self) -> None:
        self.connected_d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        waits, self._waits = self._waits, []
        for predicate, d in waits:
            if predicate(self.data):
                d.callback(self.data)
            else:
                self._waits.append((predicate, d))

    def connectionLost(self, reason: Failure | None = None) -> None:
        waits, self._waits = self._waits, []
        for _, d in waits:
            d.errback(AssertionError(f"connection closed first: {self.data!r}"))
        self.closed.callback(None)

    def until(self, predicate: Callable[[bytes], bool]) -> Deferred[bytes]:
        """
        Fire once the bytes received so far satisfy C{predicate}.
        """
        if predicate(self.data):
            return succeed(self.data)
        d: Deferred[bytes] = Deferred()
        self._waits.append((predicate, d))
        return d

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


async def raw_connect(case: TestCase, port: int) -> RawClient:
    """
    Connect a L{RawClient} to C{127.0.0.1:port}; the cleanups of C{case}
    close it.
    """
    client = RawClient()
    factory = ClientFactory.forProtocol(lambda: client)
    connector = reactor.connectTCP("127.0.0.1", port, factory)

    def cleanup() -> Deferred[None]:
        connector.disconnect()
        return client.closed

    case.addCleanup(cleanup)
    return await client.connected_d


def http_request(
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """
    The bytes of an HTTP/1.1 request.
    """
    if isinstance(body, dict):
        body = json.dumps(body).encode("utf-8")
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Hold(Resource):
    """
    A route that answers only when told: its requests wait in C{requests}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        return NOT_DONE_YET


class WriteRecorder(StringTransport):
    """
    A string transport that keeps what each write carried (a sequence
    counts as one write).
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, seq: Any) -> None:
        self.write(b"".join(seq))
