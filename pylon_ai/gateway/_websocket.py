"""
C{GET /v1/ws}: completions over a WebSocket, many at once on one socket.

Every message is a JSON object with a C{type}.  The client sends C{auth},
C{completion} and C{cancel}; the service answers with C{auth_ok}, C{chunk},
C{done}, C{error} and C{cancelled}, each reply carrying the C{id} of the
completion it belongs to.  The protocol is described in DESIGN.md; this
module is the only one that knows about autobahn, so the WebSocket
implementation can change without touching the rest.

Limits: before the socket authenticated only frames up to
L{PRE_AUTH_MAX_BYTES} are read; after, up to C{max_body_bytes}.  What the
service sends is never held to those (a reply may be longer than any
request).  A client that does not read pauses the upstreams of its socket
once C{ws_pause_bytes} wait for it, and the socket is closed once more than
C{ws_max_queued_bytes} do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from attrs import define, field
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from zope.interface import implementer

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from pylon_ai._errors import ProviderError
from pylon_ai._json import dumps, loads
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.events import ModelEvent, TextDelta, Usage, merge_usage
from pylon_ai.gateway._accounting import record_request
from pylon_ai.gateway._apierrors import ApiError, api_error
from pylon_ai.gateway._attempts import Attempts
from pylon_ai.gateway._gateway import Gateway, UnknownModel, check_request
from pylon_ai.gateway._intake import host_allowed
from pylon_ai.gateway._limits import Admission, when_admitted
from pylon_ai.gateway._metrics import Metrics
from pylon_ai.gateway._server import key_ok, origin_allowed, presented_key
from pylon_ai.gateway._state import Release, usage_tokens

ROUTE = "/v1/ws"
#: Close code for a missing or wrong key sent in a message (policy violation).
CLOSE_POLICY = 1008
#: Close code when the service cannot go on with a socket (internal error).
CLOSE_INTERNAL = 1011
#: Seconds a socket may stay open without authenticating when keys are set.
AUTH_TIMEOUT = 30.0
#: Completions one socket may have in flight at once.
MAX_IN_FLIGHT = 64
#: The longest request id accepted.
MAX_ID_LENGTH = 256
#: Seconds between WebSocket pings, and to wait for the pong.
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
#: The largest frame or message accepted before the socket authenticated.
PRE_AUTH_MAX_BYTES = 8192
#: C{done} carries the whole text only when it is shorter than this (in
#: UTF-8 bytes); the chunks carried it anyway.
MAX_DONE_TEXT = 1 << 20
#: What a frame header adds to a message, at most (RFC 6455 5.2).
_FRAME_HEADER = 10

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

    @ivar text: The text so far, while it is shorter than L{MAX_DONE_TEXT};
        then L{None} (C{done} will not carry it).
    @ivar paused: The upstream producer this socket paused, if any.
    """

    id: str
    model: str
    received: float
    call: Attempts | None = None
    ttft: float | None = None
    text: list[str] | None = field(factory=list)
    text_bytes: int = 0
    usage: Usage | None = None
    on_shutdown: Callable[[], object] | None = None
    release: Release | None = None
    paused: Any = None

    def shutdown(self) -> None:
        """
        The service is stopping and the grace period is over.
        """
        if self.on_shutdown is not None:
            self.on_shutdown()

    def add_text(self, text: str) -> None:
        """
        Keep C{text} for C{done}, unless the whole is too long to repeat.
        """
        if self.text is None:
            return
        self.text_bytes += len(text) if text.isascii() else len(text.encode())
        if self.text_bytes < MAX_DONE_TEXT:
            self.text.append(text)
        else:
            self.text = None


class _RequestError(Exception):
    """
    A client message that cannot be served; answered with an C{error}.
    """

    def __init__(self, message: str, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class _Unsent(Exception):
    """
    A chunk could not be sent to the client; raised to the upstream, which
    then stops.
    """


class _BadMessage(_RequestError):
    """
    A message that is not a JSON object with a known C{type}; counted in
    the metrics by C{reason}.
    """

    def __init__(
        self, message: str, reason: str, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = request_id


def _parse(payload: bytes) -> dict[str, Any]:
    """
    A client message as a dict with a string C{type}.

    @raise _BadMessage: If it is not one.
    """
    try:
        message = loads(payload)
    except ValueError:
        # Also what is not UTF-8 (a binary frame), nests too deeply, or
        # holds NaN.
        raise _BadMessage("the message is not valid JSON", "json") from None
    if not isinstance(message, dict):
        raise _BadMessage("a message must be a JSON object", "shape")
    raw_id = message.get("id")
    request_id = raw_id if isinstance(raw_id, str) else None
    kind = message.get("type")
    if not isinstance(kind, str):
        raise _BadMessage("a message needs a string type", "shape", request_id)
    if kind not in ("auth", "completion", "cancel"):
        raise _BadMessage(
            f"unknown message type {kind!r} (known: auth, completion, cancel)",
            "shape",
            request_id,
        )
    return message


class _Session:
    """
    The completions of one socket, and its authentication.

    It knows nothing of autobahn: it gets the client's messages and answers
    through C{send} and C{close}.  C{send} may raise (a message the socket
    refuses): the request it belonged to then ends with an C{error}, and if
    even that cannot be sent the socket is closed.
    """

    log = Logger()

    def __init__(
        self,
        gateway: Gateway,
        send: Callable[[bytes], object],
        close: Callable[[int, str], object],
        authenticated: bool,
        on_authenticated: Callable[[], object] | None = None,
    ) -> None:
        """
        @param on_authenticated: Called when an C{auth} message succeeded.
        """
        self._gateway = gateway
        self._send_bytes = send
        self._close_socket = close
        self._authenticated = authenticated
        self._on_authenticated = on_authenticated
        #: The client key the socket authenticated with (C{""} if none).
        self.key = ""
        self._in_flight: dict[str, _Completion] = {}
        self._auth_timer: IDelayedCall | None = None
        self._gone = False
        self._paused = False
        if not authenticated:
            self._auth_timer = gateway.clock.callLater(
                AUTH_TIMEOUT, self._auth_timed_out
            )

    def closed(self, cancel_later: bool = False) -> None:
        """
        The socket closed: cancel everything in flight on it.

        @param cancel_later: Cancel the upstream calls in the next reactor
            turn rather than now (from inside one of their deliveries); the
            requests end now all the same.
        """
        if self._gone:
            return
        self._gone = True
        self._stop_auth_timer()
        in_flight, self._in_flight = self._in_flight, {}
        for completion in in_flight.values():
            if cancel_later:
                self._gateway.clock.callLater(0, self._abort, completion)
            else:
                self._abort(completion)
            self._record(completion, 499)

    # -- flow control -------------------------------------------------------

    def pause_upstreams(self) -> None:
        """
        The client is not reading: pause the upstream of every request on
        the socket (and of those that start streaming while paused).
        """
        self._paused = True
        for completion in self._in_flight.values():
            self._pause(completion)

    def resume_upstreams(self) -> None:
        """
        The client caught up: let the upstreams flow again.
        """
        self._paused = False
        for completion in self._in_flight.values():
            producer, completion.paused = completion.paused, None
            if producer is not None:
                producer.resumeProducing()

    def _pause(self, completion: _Completion) -> None:
        # The producer changes when the stream starts flowing or another
        # attempt takes over; a finished attempt's is left alone.
        call = completion.call
        producer = call.producer if call is not None else None
        if producer is not None and producer is not completion.paused:
            producer.pauseProducing()
            completion.paused = producer

    def _flushed(self, completion: _Completion) -> None:
        if self._paused and self._current(completion):
            self._pause(completion)

    # -- client messages ----------------------------------------------------

    def message_received(self, payload: bytes) -> None:
        """
        Serve one client message.
        """
        try:
            message = _parse(payload)
        except _BadMessage as e:
            self._gateway.metrics.ws_bad_messages.labels(e.reason).inc()
            if self._authenticated:
                self._error(e.request_id, e.error_type, e.message)
            else:
                self._close(CLOSE_POLICY, "authenticate first: send an auth message")
            return
        raw_id = message.get("id")
        request_id = raw_id if isinstance(raw_id, str) else None
        kind = message["type"]
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
            else:
                self._auth(message)
        except _RequestError as e:
            self._error(request_id, e.error_type, e.message)

    def _auth(self, message: dict[str, Any]) -> None:
        key = message.get("api_key")
        if not isinstance(key, str) or not key_ok(
            self._gateway.config.server.api_keys, key
        ):
            self._close(CLOSE_POLICY, "invalid API key")
            return
        was_authenticated, self._authenticated = self._authenticated, True
        self.key = key
        self._stop_auth_timer()
        if not was_authenticated and self._on_authenticated is not None:
            self._on_authenticated()
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
        if model not in self._gateway.backends:
            # Before the limits: a mistyped name spends no quota.
            self._error(
                request_id, "not_found_error", f"model {model!r} is not configured"
            )
            self._gateway.metrics.requests.labels(ROUTE, "unknown", "404").inc()
            return
        completion = _Completion(
            request_id,
            model if model in self._gateway.backends else "unknown",
            time.perf_counter(),
        )
        when_admitted(
            self._gateway.limits.admit(self.key),
            lambda release: self._admitted(completion, body, release),
            lambda: self._gone,
        )

    def _admitted(
        self, completion: _Completion, body: dict[str, Any], release: Admission
    ) -> None:
        request_id, model = completion.id, body["model"]
        if isinstance(release, ApiError):
            self._error(request_id, release.anthropic_type, release.message)
            self._gateway.metrics.requests.labels(
                ROUTE, completion.model, str(release.status)
            ).inc()
            return
        if request_id in self._in_flight:
            # The same id came again while this one waited for the shared
            # state.
            release()
            self._error(
                request_id,
                "invalid_request_error",
                f"a request with id {request_id!r} is already in flight",
            )
            return
        completion.release = release
        self._in_flight[request_id] = completion
        try:
            call = self._gateway.open(
                "openai",
                body,
                lambda event: self._event(completion, event),
                on_flush=lambda: self._flushed(completion),
            )
        except UnknownModel:
            self._fail(completion, ApiError(404, f"model {model!r} is not configured"))
            return
        except TranslationError as e:
            self._fail(completion, ApiError(400, e.message, e.param))
            return
        except Exception:
            self.log.failure("Could not start a request on {route}", route=ROUTE)
            self._fail(completion, ApiError(500, "the request could not be started"))
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
            completion.add_text(text)
            if not self._send({"type": "chunk", "id": completion.id, "text": text}):
                # The client would miss a piece: the rest is worthless.
                self._fail(completion, ApiError(500, "a reply chunk could not be sent"))
                raise _Unsent("a reply chunk could not be sent")  # aborts upstream
        elif kind is Usage:
            completion.usage = merge_usage(completion.usage, event)  # type: ignore[arg-type]

    def _done(self, completion: _Completion) -> None:
        if not self._current(completion):
            return
        del self._in_flight[completion.id]
        usage = completion.usage or Usage()
        reply: dict[str, Any] = {"type": "done", "id": completion.id}
        if completion.text is not None:
            reply["text"] = "".join(completion.text)
        reply["usage"] = {
            "input_tokens": usage.input_tokens or 0,
            "output_tokens": usage.output_tokens or 0,
        }
        status = 200
        if not self._send(reply):
            status = 500
            self._error(completion.id, "api_error", "the reply could not be sent")
        self._record(completion, status)

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
        try:
            self._error(completion.id, error.anthropic_type, error.message)
        finally:
            self._record(completion, error.status)

    # -- helpers ------------------------------------------------------------

    def _abort(self, completion: _Completion) -> None:
        call = completion.call
        if call is not None and not call.deferred.called:
            call.deferred.cancel()

    def _send(self, message: dict[str, Any]) -> bool:
        """
        Send C{message}; C{False} if the socket refused it.
        """
        if self._gone:
            return True  # nobody to tell; closed() ended everything
        try:
            self._send_bytes(dumps(message))
        except Exception:
            self.log.failure(
                "Could not send a {kind} message on {route}",
                kind=message.get("type"),
                route=ROUTE,
            )
            return False
        return True

    def _error(self, request_id: str | None, error_type: str, message: str) -> None:
        reply: dict[str, Any] = {"type": "error"}
        if request_id is not None:
            reply["id"] = request_id
        reply["error"] = {"type": error_type, "message": message}
        if not self._send(reply):
            # Not even an error gets through: the client must learn by the
            # close that its requests are over.
            self._close(CLOSE_INTERNAL, "internal error")

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
        completion.paused = None
        self._gateway.untrack(completion)
        if completion.release is not None:
            release, completion.release = completion.release, None
            release(usage_tokens(completion.usage))
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


@implementer(IPushProducer)
class _SendFlow:
    """
    How much of a socket's output waits for its client, told by the
    transport: registered as the transport's producer, it hears when the
    transport's buffer is full (C{pauseProducing}) and when it emptied
    again (C{resumeProducing}).

    While the transport is full, everything sent counts as waiting; past
    C{pause_bytes} the socket's upstreams are paused until the transport
    empties, and past C{max_bytes} the socket is given up.
    """

    def __init__(
        self,
        pause_bytes: int,
        max_bytes: int,
        pause: Callable[[], object],
        resume: Callable[[], object],
        overflow: Callable[[], object],
        metrics: Metrics,
    ) -> None:
        self._pause_bytes = pause_bytes
        self._max_bytes = max_bytes
        self._pause = pause
        self._resume = resume
        self._overflow = overflow
        self._metrics = metrics
        self._full = False
        #: Bytes sent since the transport was last known not to be full.
        self.waiting = 0
        self.paused = False
        self.over = False

    def sending(self, size: int) -> None:
        """
        C{size} bytes are about to be written.
        """
        if not self._full:
            # The transport holds less than its own buffer size: little
            # enough to count as nothing.
            self.waiting = 0
        self.waiting += size

    def sent(self) -> None:
        """
        The bytes announced by L{sending} were written (and may have filled
        the transport).
        """
        if not self._full or self.over:
            return
        if self.waiting > self._max_bytes:
            self.over = True
            self._overflow()
        elif self.waiting >= self._pause_bytes and not self.paused:
            self.paused = True
            self._metrics.ws_upstream_pauses.inc()
            self._pause()

    def pauseProducing(self) -> None:
        self._full = True

    def resumeProducing(self) -> None:
        self._full = False
        self.waiting = 0
        if self.paused:
            self.paused = False
            self._resume()

    def stopProducing(self) -> None:
        self._full = False


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
