"""
C{GET /v1/ws}: completions over a WebSocket, many at once on one socket.

This module is the autobahn side: the handshake's checks, the frame limits
and the socket's output.  It is the only one that knows about autobahn, so
the WebSocket implementation can change without touching the rest: the
messages are in L{pylon_ai.gateway._ws_messages}, the completions of one
socket in L{pylon_ai.gateway._ws_session} and L{pylon_ai.gateway._ws_completion},
its flow control in L{pylon_ai.gateway._ws_flow}.  None of those imports
autobahn, which the service loads only when a WebSocket comes
(L{pylon_ai.tap}).

Limits: before the socket authenticated only frames up to
L{PRE_AUTH_MAX_BYTES} are read; after, up to C{max_body_bytes}.  What the
service sends is never held to those (a reply may be longer than any
request).  A client that does not read pauses the upstreams of its socket
once C{ws_pause_bytes} wait for it, and the socket is closed once more than
C{ws_max_queued_bytes} do.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest

from twisted.logger import Logger
from twisted.web.resource import IResource

from pylon_ai.gateway._client_checks import key_ok, origin_allowed, presented_key
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._intake import host_allowed
from pylon_ai.gateway._ws_completion import MAX_DONE_TEXT
from pylon_ai.gateway._ws_flow import _SendFlow
from pylon_ai.gateway._ws_messages import CLOSE_INTERNAL, ROUTE
from pylon_ai.gateway._ws_session import _Session

# Also what moved to the _ws_* modules and is still imported from here.
__all__ = [
    "MAX_DONE_TEXT",
    "PRE_AUTH_MAX_BYTES",
    "GatewayWebSocketFactory",
    "GatewayWebSocketProtocol",
    "_Session",
    "make_websocket_resource",
    "origin_allowed",
]

#: Seconds between WebSocket pings, and to wait for the pong.
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
#: The largest frame or message accepted before the socket authenticated.
PRE_AUTH_MAX_BYTES = 8192
#: What a frame header adds to a message, at most (RFC 6455 5.2).
_FRAME_HEADER = 10


class _Headers:
    """
    Lets L{presented_key} read the handshake's headers.
    """

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def getHeader(self, name: str) -> str | None:
        return self._headers.get(name.lower())


class GatewayWebSocketProtocol(WebSocketServerProtocol):
    """
    One client socket: checks the handshake, then hands messages to a
    L{_Session}.
    """

    # Not "log": that would replace autobahn's own logger, whose debug
    # lines hold the raw handshake (keys included).
    _pylon_log = Logger()

    _pylon_session: _Session | None = None
    _pylon_flow: _SendFlow | None = None
    _pylon_authenticated = False
    _pylon_key = ""

    @property
    def _pylon_gateway(self) -> Gateway:
        factory = self.factory
        assert isinstance(factory, GatewayWebSocketFactory)
        return factory.gateway

    def onConnect(self, request: ConnectionRequest) -> None:
        settings = self._pylon_gateway.config.server
        headers: dict[str, str] = request.headers
        if not settings.api_keys and not host_allowed(
            headers.get("host"), settings.allowed_hosts
        ):
            # No-key mode: a DNS-rebinding page names its own host here.
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "host not allowed")
        if not origin_allowed(
            headers.get("origin"), headers.get("host"), settings.cors_origins
        ):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        key = presented_key(_Headers(headers))
        if key is None:
            values = request.params.get("api_key")
            key = values[0] if values else None
        if key is not None:
            if not key_ok(settings.api_keys, key):
                raise ConnectionDeny(401, "invalid API key")
            self._pylon_authenticated = True
            self._pylon_key = key
        elif not settings.api_keys:
            self._pylon_authenticated = True
        if self._pylon_authenticated:
            self._pylon_full_limits()
        return None

    def _pylon_full_limits(self) -> None:
        # The factory's limits are the small ones of a socket that has not
        # authenticated yet; autobahn checks them per protocol.
        limit = self._pylon_gateway.config.server.max_body_bytes
        self.maxMessagePayloadSize = limit
        self.maxFramePayloadSize = limit

    def onOpen(self) -> None:
        factory = self.factory
        assert isinstance(factory, GatewayWebSocketFactory)
        factory.open_sockets.add(self)
        gateway = self._pylon_gateway
        session = self._pylon_session = _Session(
            gateway,
            self._pylon_send,
            self._pylon_close,
            self._pylon_authenticated,
            self._pylon_full_limits,
        )
        session.key = self._pylon_key
        settings = gateway.config.server
        flow = _SendFlow(
            settings.ws_pause_bytes,
            settings.ws_max_queued_bytes,
            session.pause_upstreams,
            session.resume_upstreams,
            self._pylon_overflow,
            gateway.metrics,
        )
        # The HTTP channel that served the handshake is still the
        # transport's producer; the socket's output is ours now.
        transport: Any = self.transport
        try:
            transport.unregisterProducer()
            transport.registerProducer(flow, True)
        except Exception:
            self._pylon_log.failure("No flow control for a WebSocket client")
            return
        self._pylon_flow = flow

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self._pylon_session
        if session is None:
            return
        try:
            session.message_received(payload)
        except Exception:
            self._pylon_log.failure(
                "Unexpected failure serving a message on {route}", route=ROUTE
            )
            self._pylon_close(CLOSE_INTERNAL, "internal error")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # autobahn leaves this timer running when the connection is lost
        # before the client answered our close (say, in the middle of the
        # frame that was refused).
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()
        factory = self.factory
        if isinstance(factory, GatewayWebSocketFactory):
            factory.open_sockets.discard(self)
            # autobahn refused a frame itself: counted with the bad messages.
            refused = {1007: "utf8", 1009: "too_large"}.get(self.localCloseCode or 0)
            if refused is not None and self.closedByMe:
                factory.gateway.metrics.ws_bad_messages.labels(refused).inc()
        session, self._pylon_session = self._pylon_session, None
        if session is not None:
            session.closed()

    def _pylon_send(self, data: bytes) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        flow = self._pylon_flow
        if flow is not None:
            if flow.over:
                return
            flow.sending(len(data) + _FRAME_HEADER)
        # autobahn holds outgoing messages to the incoming limit too; a
        # reply may well be longer than any request.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(data, isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit
        if flow is not None:
            flow.sent()

    def _pylon_close(self, code: int, reason: str) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            # sendClose() only allows application codes (1000, 3000-4999);
            # a policy violation is 1008 (RFC 6455 7.4.1).
            self.sendCloseFrame(code, reason.encode("utf-8")[:123], isReply=False)

    def _pylon_overflow(self) -> None:
        self._pylon_log.warn(
            "Closing a WebSocket client that does not read: more than "
            "{limit} bytes wait for it",
            limit=self._pylon_gateway.config.server.ws_max_queued_bytes,
        )
        self._pylon_gateway.metrics.ws_overflow_closes.inc()
        session, self._pylon_session = self._pylon_session, None
        if session is not None:
            # We are inside an upstream's delivery of an event: its call is
            # cancelled once that returned.
            session.closed(cancel_later=True)
        # A close frame would wait behind all the rest: cut the connection.
        self.dropConnection(abort=True)


class GatewayWebSocketFactory(WebSocketServerFactory):
    """
    Builds a L{GatewayWebSocketProtocol} for each socket.

    @ivar gateway: The gateway the sockets' completions go to.
    """

    protocol = GatewayWebSocketProtocol

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(reactor=gateway.clock)
        self.gateway = gateway
        self.open_sockets: set[GatewayWebSocketProtocol] = set()
        small = min(PRE_AUTH_MAX_BYTES, gateway.config.server.max_body_bytes)
        self.setProtocolOptions(
            webStatus=False,
            # Tell the client why (1009 message too big) rather than just
            # dropping the connection.
            failByDrop=False,
            # Until the socket authenticated: raised to max_body_bytes then.
            maxMessagePayloadSize=small,
            maxFramePayloadSize=small,
            autoPingInterval=PING_INTERVAL,
            autoPingTimeout=PING_TIMEOUT,
        )

    def close_all(self) -> None:
        """
        The service is stopping: close every socket with 1001 (going away).
        """
        for socket in list(self.open_sockets):
            socket._pylon_close(1001, "the gateway is shutting down")


def make_websocket_resource(gateway: Gateway) -> IResource:
    """
    The C{/v1/ws} resource, to mount in the service's C{Site}.

    @param gateway: Serves the completions.
    @return: A resource that takes over the connection of a WebSocket
        handshake.
    """
    resource: IResource = WebSocketResource(GatewayWebSocketFactory(gateway))
    return resource
