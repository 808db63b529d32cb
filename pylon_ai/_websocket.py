"""
C{GET /v1/ws}: completions over a WebSocket, many at once on one socket.

Every message is a JSON object with a C{type}.  The client sends C{auth},
C{completion} and C{cancel}; the service answers with C{auth_ok}, C{chunk},
C{done}, C{error} and C{cancelled}, each reply carrying the C{id} of the
completion it belongs to.  The protocol is described in DESIGN.md; this
module is the only one that knows about autobahn, so the WebSocket
implementation can change without touching the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from attrs import define, field
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from pylon_ai._accounting import record_request
from pylon_ai._apierrors import ApiError, api_error
from pylon_ai._attempts import Attempts
from pylon_ai._errors import ProviderError
from pylon_ai._events import ModelEvent, TextDelta, Usage, merge_usage
from pylon_ai._gateway import Gateway, UnknownModel, check_request
from pylon_ai._intake import host_allowed
from pylon_ai._json import dumps, loads
from pylon_ai._server import key_ok, origin_allowed, presented_key
from pylon_ai._translate import TranslationError

ROUTE = "/v1/ws"
#: Close code for a missing or wrong key sent in a message (policy violation).
CLOSE_POLICY = 1008
#: Seconds a socket may stay open without authenticating when keys are set.
AUTH_TIMEOUT = 30.0
#: Completions one socket may have in flight at once.
MAX_IN_FLIGHT = 64
#: The longest request id accepted.
MAX_ID_LENGTH = 256
#: Seconds between WebSocket pings, and to wait for the pong.
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0

_COMPLETION_FIELDS = frozenset(
    ("type", "id", "model", "messages", "max_tokens", "temperature")
)


class _Headers:
    """
    Lets L{presented_key} read the handshake's headers.
    """

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def getHeader(self, name: str) -> str | None:
        return self._headers.get(name.lower())


@define(eq=False)
class _Completion:
    """
    One completion in flight on a socket.
    """

    id: str
    model: str
    received: float
    call: Attempts | None = None
    ttft: float | None = None
    text: list[str] = field(factory=list)
    usage: Usage | None = None
    on_shutdown: Callable[[], object] | None = None
    release: Callable[[], None] | None = None

    def shutdown(self) -> None:
        """
        The service is stopping and the grace period is over.
        """
        if self.on_shutdown is not None:
            self.on_shutdown()


class _RequestError(Exception):
    """
    A client message that cannot be served; answered with an C{error}.
    """

    def __init__(self, message: str, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class _Session:
    """
    The completions of one socket, and its authentication.

    It knows nothing of autobahn: it gets the client's messages and answers
    through C{send} and C{close}.
    """

    log = Logger()

    def __init__(
        self,
        gateway: Gateway,
        send: Callable[[bytes], object],
        close: Callable[[int, str], object],
        authenticated: bool,
    ) -> None:
        self._gateway = gateway
        self._send_bytes = send
        self._close_socket = close
        self._authenticated = authenticated
        #: The client key the socket authenticated with (C{""} if none).
        self.key = ""
        self._in_flight: dict[str, _Completion] = {}
        self._auth_timer: IDelayedCall | None = None
        self._gone = False
        if not authenticated:
            self._auth_timer = gateway.clock.callLater(
                AUTH_TIMEOUT, self._auth_timed_out
            )

    def closed(self) -> None:
        """
        The socket closed: cancel everything in flight on it.
        """
        self._gone = True
        self._stop_auth_timer()
        in_flight, self._in_flight = self._in_flight, {}
        for completion in in_flight.values():
            self._abort(completion)
            self._record(completion, 499)

    # -- client messages ----------------------------------------------------

    def message_received(self, payload: bytes) -> None:
        """
        Serve one client message.
        """
        try:
            message = loads(payload)
        except ValueError:
            self._error(None, "invalid_request_error", "the message is not valid JSON")
            return
        if not isinstance(message, dict):
            self._error(
                None, "invalid_request_error", "a message must be a JSON object"
            )
            return
        raw_id = message.get("id")
        request_id = raw_id if isinstance(raw_id, str) else None
        kind = message.get("type")
        if not self._authenticated:
            if kind == "auth":
                self._auth(message)
            else:
                self._close(CLOSE_POLICY, "authenticate first: send an auth message")
            return
        try:
            if kind == "completion":
                self._start(message)
            elif kind == "cancel":
                self._cancel(message)
            elif kind == "auth":
                self._auth(message)
            elif not isinstance(kind, str):
                raise _RequestError("a message needs a string type")
            else:
                raise _RequestError(
                    f"unknown message type {kind!r} (known: auth, completion, cancel)"
                )
        except _RequestError as e:
            self._error(request_id, e.error_type, e.message)

    def _auth(self, message: dict[str, Any]) -> None:
        key = message.get("api_key")
        if not isinstance(key, str) or not key_ok(
            self._gateway.config.server.api_keys, key
        ):
            self._close(CLOSE_POLICY, "invalid API key")
            return
        self._authenticated = True
        self.key = key
        self._stop_auth_timer()
        self._send({"type": "auth_ok"})

    def _start(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise _RequestError("id is required and must be a non-empty string")
        if len(request_id) > MAX_ID_LENGTH:
            raise _RequestError(f"id must be at most {MAX_ID_LENGTH} characters")
        if request_id in self._in_flight:
            raise _RequestError(
                f"a request with id {request_id!r} is already in flight"
            )
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            raise _RequestError(
                f"at most {MAX_IN_FLIGHT} requests may be in flight on one socket",
                "rate_limit_error",
            )
        unknown = sorted(set(message) - _COMPLETION_FIELDS)
        if unknown:
            raise _RequestError(f"unknown fields: {', '.join(unknown)}")
        body = _request_body(message)
        model = body["model"]
        completion = _Completion(
            request_id,
            model if model in self._gateway.backends else "unknown",
            time.perf_counter(),
        )
        release = self._gateway.limits.admit(self.key)
        if isinstance(release, ApiError):
            self._error(request_id, release.anthropic_type, release.message)
            self._gateway.metrics.requests.labels(
                ROUTE, completion.model, str(release.status)
            ).inc()
            return
        completion.release = release
        self._in_flight[request_id] = completion
        try:
            call = self._gateway.open(
                "openai", body, lambda event: self._event(completion, event)
            )
        except UnknownModel:
            self._fail(completion, ApiError(404, f"model {model!r} is not configured"))
            return
        except TranslationError as e:
            self._fail(completion, ApiError(400, e.message, e.param))
            return
        completion.call = call
        completion.on_shutdown = lambda: self._shutdown(completion)
        self._gateway.track(completion)
        self._gateway.metrics.streams_in_flight.inc()
        call.deferred.addCallbacks(
            lambda _: self._done(completion),
            lambda failure: self._failed(completion, failure),
        )

    def _cancel(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not isinstance(request_id, str):
            raise _RequestError("cancel needs the id of a request in flight")
        completion = self._in_flight.pop(request_id, None)
        if completion is None:
            raise _RequestError(f"no request with id {request_id!r} is in flight")
        self._abort(completion)
        self._record(completion, 499)
        self._send({"type": "cancelled", "id": request_id})

    # -- the upstream's side ------------------------------------------------

    def _current(self, completion: _Completion) -> bool:
        return self._in_flight.get(completion.id) is completion

    def _event(self, completion: _Completion, event: ModelEvent) -> None:
        if not self._current(completion):
            return
        kind = type(event)
        if kind is TextDelta:
            text = event.text  # type: ignore[union-attr]
            if completion.ttft is None:
                completion.ttft = time.perf_counter() - completion.received
            completion.text.append(text)
            self._send({"type": "chunk", "id": completion.id, "text": text})
        elif kind is Usage:
            completion.usage = merge_usage(completion.usage, event)  # type: ignore[arg-type]

    def _done(self, completion: _Completion) -> None:
        if not self._current(completion):
            return
        del self._in_flight[completion.id]
        usage = completion.usage or Usage()
        self._send(
            {
                "type": "done",
                "id": completion.id,
                "text": "".join(completion.text),
                "usage": {
                    "input_tokens": usage.input_tokens or 0,
                    "output_tokens": usage.output_tokens or 0,
                },
            }
        )
        self._record(completion, 200)

    def _failed(self, completion: _Completion, failure: Failure) -> None:
        if not self._current(completion):
            return
        if not failure.check(ProviderError, TranslationError):
            self.log.failure(
                "Unexpected failure serving {route} for model {model}",
                failure,
                route=ROUTE,
                model=completion.model,
            )
        self._fail(completion, api_error(failure.value or Exception()))

    def _fail(self, completion: _Completion, error: ApiError) -> None:
        self._in_flight.pop(completion.id, None)
        self._error(completion.id, error.anthropic_type, error.message)
        self._record(completion, error.status)

    # -- helpers ------------------------------------------------------------

    def _abort(self, completion: _Completion) -> None:
        call = completion.call
        if call is not None and not call.deferred.called:
            call.deferred.cancel()

    def _send(self, message: dict[str, Any]) -> None:
        if not self._gone:
            self._send_bytes(dumps(message))

    def _error(self, request_id: str | None, error_type: str, message: str) -> None:
        reply: dict[str, Any] = {"type": "error"}
        if request_id is not None:
            reply["id"] = request_id
        reply["error"] = {"type": error_type, "message": message}
        self._send(reply)

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        self._close(CLOSE_POLICY, "authentication timed out")

    def _close(self, code: int, reason: str) -> None:
        self._stop_auth_timer()
        if not self._gone:
            self._close_socket(code, reason)

    def _stop_auth_timer(self) -> None:
        timer, self._auth_timer = self._auth_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _record(self, completion: _Completion, status: int) -> None:
        self._gateway.untrack(completion)
        if completion.release is not None:
            completion.release()
        if completion.call is not None:
            self._gateway.metrics.streams_in_flight.dec()
        backend = completion.call.backend if completion.call is not None else None
        record_request(
            self._gateway.metrics,
            route=ROUTE,
            model=completion.model,
            provider=backend.provider if backend is not None else "-",
            status=status,
            latency=time.perf_counter() - completion.received,
            ttft=completion.ttft,
            usage=completion.usage,
        )

    def _shutdown(self, completion: _Completion) -> None:
        if self._current(completion):
            self._fail(completion, ApiError(503, "the gateway is shutting down"))
        self._abort(completion)


class GatewayWebSocketProtocol(WebSocketServerProtocol):
    """
    One client socket: checks the handshake, then hands messages to a
    L{_Session}.
    """

    _pylon_session: _Session | None = None
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
        return None

    def onOpen(self) -> None:
        factory = self.factory
        assert isinstance(factory, GatewayWebSocketFactory)
        factory.open_sockets.add(self)
        self._pylon_session = _Session(
            self._pylon_gateway,
            self._pylon_send,
            self._pylon_close,
            self._pylon_authenticated,
        )
        self._pylon_session.key = self._pylon_key

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._pylon_session is not None:
            self._pylon_session.message_received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        factory = self.factory
        if isinstance(factory, GatewayWebSocketFactory):
            factory.open_sockets.discard(self)
        session, self._pylon_session = self._pylon_session, None
        if session is not None:
            session.closed()

    def _pylon_send(self, data: bytes) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendMessage(data, isBinary=False)

    def _pylon_close(self, code: int, reason: str) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            # sendClose() only allows application codes (1000, 3000-4999);
            # a policy violation is 1008 (RFC 6455 7.4.1).
            self.sendCloseFrame(code, reason.encode("utf-8")[:123], isReply=False)


def _request_body(message: dict[str, Any]) -> dict[str, Any]:
    """
    The OpenAI chat request for a C{completion} message.

    @raise _RequestError: If a field is missing or has the wrong type.
    """
    body: dict[str, Any] = {
        "model": message.get("model"),
        "messages": message.get("messages"),
        "stream": True,
    }
    for key in ("max_tokens", "temperature"):
        if message.get(key) is not None:
            body[key] = message[key]
    # The HTTP routes' checks, in one place.
    try:
        check_request("openai", body)
    except TranslationError as e:
        raise _RequestError(e.message) from None
    return body


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
        limit = gateway.config.server.max_body_bytes
        self.setProtocolOptions(
            webStatus=False,
            # Tell the client why (1009 message too big) rather than just
            # dropping the connection.
            failByDrop=False,
            maxMessagePayloadSize=limit,
            maxFramePayloadSize=limit,
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
