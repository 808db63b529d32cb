"""
The HTTP side of the service: the route table and the site, with the limits
on connections (time to send the headers, idle keep-alive, how many are open
at once) and their closing when the service stops.  The checks of every
request are in L{pylon_ai.gateway._route_base} and
L{pylon_ai.gateway._client_checks}; the routes in
L{pylon_ai.gateway._completion_routes} and L{pylon_ai.gateway._local_routes}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from pylon_ai.gateway._completion_routes import (
    ChatCompletions,
    CountTokens,
    Embeddings,
    Messages,
    Responses,
)
from pylon_ai.gateway._gateway import Gateway, deadline
from pylon_ai.gateway._intake import Busy, GatewayChannel
from pylon_ai.gateway._local_routes import (
    MODEL_PREFIX,
    ChatPage,
    Health,
    MetricsPage,
    ModelInfo,
    Models,
    NotFound,
)
from pylon_ai.gateway._route_base import GatewayRequest


class Root(Resource):
    """
    The route table.
    """

    def __init__(
        self,
        gateway: Gateway,
        websocket: IResource | None = None,
        health: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        self._routes: dict[bytes, Resource] = {
            b"/": ChatPage(gateway),
            b"/healthz": Health(gateway, health),
            b"/metrics": MetricsPage(gateway),
            b"/v1/models": Models(gateway),
            b"/v1/chat/completions": ChatCompletions(gateway),
            b"/chat/completions": ChatCompletions(gateway),
            b"/v1/messages": Messages(gateway),
            b"/v1/responses": Responses(gateway),
            b"/responses": Responses(gateway),
            b"/v1/messages/count_tokens": CountTokens(gateway),
            b"/v1/embeddings": Embeddings(gateway),
        }
        self._model_info = ModelInfo(gateway)
        if websocket is not None:
            self._routes[b"/v1/ws"] = _HandOver(websocket)
        self._not_found = NotFound(gateway)

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        # Route on the whole path at once; the resource tree walk is not
        # needed for a flat table.
        path = request.path.rstrip(b"/") or b"/"
        resource = self._routes.get(path)
        if resource is None:
            if path.startswith(MODEL_PREFIX):
                request.postpath = []
                return self._model_info
            return self._not_found
        request.postpath = []
        return resource


def _channel(protocol: Any) -> Any:
    # Site wraps each HTTPChannel in a protocol-switching proxy that does not
    # expose the channel's transport itself.
    return getattr(protocol, "_channel", protocol)


def _transport(protocol: Any) -> Any:
    return getattr(_channel(protocol), "transport", None)


def _gateway_channel(factory: Any) -> _GenericHTTPChannelProtocol:
    # Site.protocol: Twisted's own builds a plain HTTPChannel.
    return _GenericHTTPChannelProtocol(GatewayChannel())


class GatewaySite(Site):
    """
    A C{Site} that knows its open connections, so that a stopping service
    can flush and close them rather than cut them off, and so that it can
    cap them.

    @ivar upgraded: Counts the connections handed over to another protocol
        (WebSockets) and still open: they count towards the cap too.
    """

    # Not "log": Site.log is the access log, which make_site turns off.
    _logger = Logger()
    protocol = _gateway_channel

    def __init__(
        self,
        resource: Resource,
        *,
        reactor: Any = None,
        header_timeout: float | None = None,
        keepalive_timeout: float | None = None,
        max_connections: int = 0,
    ) -> None:
        """
        @param reactor: Times the connections; the global reactor if
            L{None}.
        @param header_timeout: Seconds a client has to send its request line
            and headers (see L{GatewayChannel}); L{None} for no limit.
        @param keepalive_timeout: Seconds a kept-alive connection may wait
            for its next request; L{None} for no limit.
        @param max_connections: Connections open at once (0: no limit); past
            it a new one gets a 503 and is closed.
        """
        # No route takes HTML forms; parsing the content type for them costs
        # ~140 us a request (the email package).
        super().__init__(resource, parsePOSTFormSubmission=False, reactor=reactor)
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self.upgraded: Callable[[], int] = lambda: 0
        self._connections: dict[int, Any] = {}
        self._closed: list[Deferred[None]] = []
        self._full = False

    @property
    def connections(self) -> list[Any]:
        """
        The HTTP connections open now.
        """
        return list(self._connections.values())

    def buildProtocol(self, addr: Any) -> Any:
        if self.max_connections and self._at_cap():
            return Busy()
        protocol = super().buildProtocol(addr)
        if protocol is None:
            return None
        channel = _channel(protocol)
        channel.header_timeout = self.header_timeout
        channel.keepalive_timeout = self.keepalive_timeout
        channel.clock = self.reactor
        key = id(channel)
        self._connections[key] = protocol
        lost = protocol.connectionLost

        def connection_lost(reason: Any) -> None:
            try:
                lost(reason)
            finally:
                self._forget(key)

        protocol.connectionLost = connection_lost
        return protocol

    def _at_cap(self) -> bool:
        full = len(self._connections) + self.upgraded() >= self.max_connections
        if full and not self._full:
            # Once per episode: a flood would otherwise log a line per
            # connection.
            self._logger.warn(
                "{n} client connections are open (max_connections): new "
                "ones get a 503 until some close",
                n=self.max_connections,
            )
        self._full = full
        return full

    def forget(self, channel: Any) -> None:
        """
        Stop tracking a connection that was handed over to another protocol
        (a WebSocket takes over the transport, and the HTTP channel never
        hears of the connection again).
        """
        self._forget(id(channel))

    def _forget(self, key: int) -> None:
        self._connections.pop(key, None)
        if not self._connections:
            self._fire_closed()

    def _fire_closed(self) -> None:
        waiters, self._closed = self._closed, []
        for d in waiters:
            d.callback(None)

    def close_connections(self, clock: Any, timeout: float = 5.0) -> Deferred[None]:
        """
        Close every connection once its pending output is written; abort
        those still open after C{timeout} seconds.

        @return: A L{Deferred} that fires when none is left, or at the
            latest a moment after the abort.
        """
        if not self._connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        for protocol in self.connections:
            transport = _transport(protocol)
            if transport is not None:
                transport.loseConnection()

        def abort() -> None:
            for protocol in self.connections:
                transport = _transport(protocol)
                if transport is not None:
                    transport.abortConnection()
            self._connections.clear()
            self._fire_closed()

        return deadline(d, clock.callLater(timeout, abort))


class _HandOver(Resource):
    """
    Renders a resource that may take over the connection (the WebSocket
    upgrade), and then stops the site tracking it as an HTTP connection.
    """

    isLeaf = True

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: Request) -> Any:
        result = self._inner.render(request)
        site = getattr(request, "site", None)
        if request.channel.transport is None and isinstance(site, GatewaySite):
            site.forget(request.channel)
            handed_over = getattr(request.channel, "handed_over", None)
            if handed_over is not None:
                handed_over()
        return result


def make_site(
    gateway: Gateway,
    websocket: IResource | None = None,
    *,
    health: Mapping[str, object] | None = None,
) -> GatewaySite:
    """
    The C{Site} serving every route.

    @param health: Fields C{/healthz} adds to C{"status"}.
    """
    settings = gateway.config.server
    site = GatewaySite(
        Root(gateway, websocket, health),
        reactor=gateway.clock,
        header_timeout=settings.header_timeout_s,
        keepalive_timeout=settings.keepalive_timeout_s,
        max_connections=settings.max_connections,
    )
    site.requestFactory = type(  # type: ignore[assignment]
        "GatewayRequest",
        (GatewayRequest,),
        {"max_body_bytes": settings.max_body_bytes},
    )
    site.displayTracebacks = False
    # Exchange logs one structured line per completion; the access log
    # would be a second, unstructured one.
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
