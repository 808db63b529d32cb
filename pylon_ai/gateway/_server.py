"""
The HTTP side of the service: the routes, client authentication, CORS, the
rules of no-key mode, and the limits on what a client may send (body size,
time to send the headers, open connections).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from importlib import resources as importlib_resources
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from pylon_ai._json import dumps, loads
from pylon_ai.formats.errors import TranslationError
from pylon_ai.gateway._accounting import record_request
from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._exchange import Exchange, respond_error, respond_json
from pylon_ai.gateway._gateway import (
    Api,
    Gateway,
    check_request,
    check_responses_request,
    deadline,
)
from pylon_ai.gateway._intake import Busy, GatewayChannel, host_allowed, is_json_type
from pylon_ai.gateway._limits import Admission, Release, when_admitted
from pylon_ai.gateway._routes import (
    CountTokensExchange,
    EmbeddingsExchange,
    check_count_tokens,
    check_embeddings,
    model_entry,
)

_ANTHROPIC_PATHS = (b"/v1/messages",)
_CORS_ALLOW_HEADERS = (
    b"authorization, content-type, x-api-key, anthropic-version, anthropic-beta, "
    b"openai-organization, openai-project, x-stainless-arch, x-stainless-lang, "
    b"x-stainless-os, x-stainless-package-version, x-stainless-runtime, "
    b"x-stainless-runtime-version, x-stainless-retry-count, x-stainless-timeout, "
    b"x-stainless-helper-method, anthropic-dangerous-direct-browser-access"
)


def api_for_path(path: bytes) -> Api:
    """
    Which API's error shape a path calls for: Anthropic's for
    C{/v1/messages} and every path under it, OpenAI's for the rest.
    """
    path = path.split(b"?", 1)[0].rstrip(b"/")
    for prefix in _ANTHROPIC_PATHS:
        if path == prefix or path.startswith(prefix + b"/"):
            return "anthropic"
    return "openai"


def presented_key(request: Any) -> str | None:
    """
    The client key of a request: C{Authorization: Bearer KEY} or
    C{x-api-key: KEY}.
    """
    auth = request.getHeader("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return str(value.strip())
    key = request.getHeader("x-api-key")
    return str(key) if key else None


def key_ok(keys: tuple[str, ...], presented: str | None) -> bool:
    """
    Whether C{presented} is one of C{keys}, in time that does not depend on
    where the strings differ.
    """
    if not keys:
        return True
    if presented is None:
        return False
    given = presented.encode("utf-8", "surrogateescape")
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode("utf-8"))
    return ok


def origin_allowed(
    origin: str | None, host: str | None, allowed: tuple[str, ...]
) -> bool:
    """
    Whether a handshake's C{Origin} may open a socket: none at all (not a
    browser), the service's own (same host and port), or a configured one.

    @param origin: The C{Origin} header, if any.
    @param host: The C{Host} header, if any.
    @param allowed: The configured C{cors_origins}.
    """
    if origin is None:
        return True
    if origin in allowed:
        return True
    scheme, sep, rest = origin.partition("://")
    return (
        bool(sep)
        and scheme.lower() in ("http", "https")
        and host is not None
        and rest.lower() == host.lower()
    )


class _BadHeader(ValueError):
    """
    A header the service reads is not UTF-8.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _text_header(request: Request, raw_name: bytes, name: str) -> str | None:
    values = request.requestHeaders.getRawHeaders(raw_name)
    if values is None:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise _BadHeader(name) from None


def _client_headers(request: Request) -> tuple[str | None, str | None, str | None]:
    """
    The C{Host}, C{Origin} and client key of a request, decoded.

    @raise _BadHeader: If one of them, C{Authorization} or C{x-api-key} is
        not UTF-8 (Twisted's own decoding would raise deep inside a route).
    """
    hosts = request.requestHeaders.getRawHeaders(b"host")
    host = _text_header(request, b"host", "Host")
    if hosts is not None and len(hosts) > 1:
        host = None  # which one the client meant is anybody's guess
    origin = _text_header(request, b"origin", "Origin")
    auth = _text_header(request, b"authorization", "Authorization")
    key = _text_header(request, b"x-api-key", "x-api-key")
    return host, origin, _key_of(auth, key)


def _key_of(auth: str | None, x_api_key: str | None) -> str | None:
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key or None


def _error_body(api: Api, error: ApiError) -> dict[str, Any]:
    body = error.body(api)
    if api != "anthropic" and error.status == 415:
        # Not in the status table of the upstream errors: a client mistake.
        body["error"]["type"] = "invalid_request_error"
    return body


def _respond_error(
    request: Request,
    api: Api,
    error: ApiError,
    headers: dict[bytes, bytes] | None = None,
) -> None:
    if error.status == 415:
        respond_json(request, error.status, _error_body(api, error), headers)
    else:
        respond_error(request, api, error, headers)


def _fail(request: Request, api: Api) -> None:
    """
    End a request whose handling raised: a JSON 500 when nothing was sent
    yet, else a cut connection (a stream that stops short is an error to
    the client; a clean end would not be).
    """
    if request.finished or request._disconnected:
        return
    if request.startedWriting:
        request.loseConnection()
        return
    respond_error(request, api, ApiError(500, "internal error in the gateway"))


class GatewayRequest(Request):
    """
    A request that refuses a body over the limit from its C{Content-Length}
    (or as a chunked body grows past it) with a 413, then closes the
    connection, without reading the body.
    """

    max_body_bytes = 32 * 1024 * 1024
    _too_large = False
    _received = 0
    _log = Logger()

    def processingFailed(self, reason: Failure) -> None:
        # Twisted's own answer is an HTML page; the routes catch their own
        # errors, so this is for what happens outside them.
        self._log.failure("Unexpected error serving a request", failure=reason)
        _fail(self, api_for_path(self.path))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_bytes:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self.max_body_bytes:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._too_large:
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._too_large = True
        path = getattr(self.channel, "_path", b"")
        error = ApiError(
            413, f"request body larger than {self.max_body_bytes} bytes", None
        )
        body = dumps(error.body(api_for_path(path)))
        head = (
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"content-type: application/json\r\n"
            b"connection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        transport = self.channel.transport
        assert transport is not None
        transport.write(head + body)
        transport.loseConnection()


class _Base(Resource):
    """
    Shared by the routes: the checks of every request (header bytes, the
    C{Host} and content type of no-key mode), CORS and client
    authentication; an unexpected exception is a JSON 500.
    """

    isLeaf = True
    log = Logger()
    needs_key = True
    api: Api = "openai"
    #: The route's label in metrics.
    route = ""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.settings = gateway.config.server

    def api_of(self, request: Request) -> Api:
        """
        The API whose error shape C{request} gets.
        """
        return self.api

    def render(self, request: Request) -> Any:
        try:
            try:
                host, origin, key = _client_headers(request)
            except _BadHeader as e:
                self._refuse(
                    request, ApiError(400, f"the {e.name} header is not valid UTF-8")
                )
                return NOT_DONE_YET
            if not self.settings.api_keys and not host_allowed(
                host, self.settings.allowed_hosts
            ):
                self._refuse(
                    request,
                    ApiError(
                        403,
                        "this Host is not served without api_keys: use localhost, "
                        "127.0.0.1 or [::1], or list it in [server] allowed_hosts",
                    ),
                )
                return NOT_DONE_YET
            return self._serve(request, host, origin, key)
        except Exception:
            self.log.failure(
                "Unexpected error serving {route}",
                route=self.route or type(self).__name__,
            )
            if not (request.finished or request.startedWriting):
                self._count(500)
            _fail(request, self.api_of(request))
            return NOT_DONE_YET

    def _serve(
        self, request: Request, host: str | None, origin: str | None, key: str | None
    ) -> Any:
        """
        Answer a request that passed the checks every route makes.
        """
        if origin is not None and origin_allowed(
            origin, host, self.settings.cors_origins
        ):
            request.setHeader(b"access-control-allow-origin", origin.encode())
            request.setHeader(b"vary", b"Origin")
            if request.method == b"OPTIONS":
                request.setHeader(
                    b"access-control-allow-methods", b"GET, POST, OPTIONS"
                )
                request.setHeader(b"access-control-allow-headers", _CORS_ALLOW_HEADERS)
                request.setHeader(b"access-control-max-age", b"600")
                request.setResponseCode(204)
                return b""
        keys = self.settings.api_keys
        if self.needs_key and not key_ok(keys, key):
            self._refuse(
                request,
                ApiError(401, "missing or invalid API key"),
                {b"www-authenticate": b"Bearer"},
            )
            return NOT_DONE_YET
        if (
            not keys
            and request.method == b"POST"
            and not is_json_type(request.getHeader(b"content-type"))
        ):
            # A page on another origin may POST text/plain (or a body with
            # no type) without a CORS preflight; JSON needs one.
            self._refuse(
                request,
                ApiError(
                    415,
                    "the request body must be sent as content-type: application/json",
                    error_type="invalid_request_error",
                ),
            )
            return NOT_DONE_YET
        try:
            return super().render(request)
        except UnsupportedMethod as e:
            method = request.method.decode("ascii", "replace")
            respond_error(
                request,
                self.api,
                ApiError(405, f"method {method} not allowed here"),
                {b"allow": b", ".join(e.allowedMethods)},
            )
            return NOT_DONE_YET

    def _refuse(
        self,
        request: Request,
        error: ApiError,
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        """
        Answer with C{error} before any model is involved, and count it.
        """
        _respond_error(request, self.api_of(request), error, headers)
        self._count(error.status)

    def _count(self, status: int) -> None:
        if self.route:
            self.gateway.metrics.requests.labels(
                self.route, "unknown", str(status)
            ).inc()


def _gone(request: Request) -> bool:
    # The client left while its admission waited for the shared state.
    return bool(getattr(request, "_disconnected", False) or request.finished)


class _Completions(_Base):
    route = "/v1/chat/completions"

    def render_POST(self, request: Request) -> Any:
        try:
            body = loads(request.content.read())  # type: ignore[union-attr]
        except ValueError:
            self._refuse(request, ApiError(400, "the request body is not valid JSON"))
            return NOT_DONE_YET
        try:
            self._check(body)
        except TranslationError as e:
            self._refuse(request, ApiError(400, e.message, e.param))
            return NOT_DONE_YET
        if body["model"] not in self.gateway.backends:
            # Answered before the limits: a mistyped name spends no quota.
            self._refuse(
                request,
                ApiError(404, f"model {body['model']!r} is not configured", "model"),
            )
            return NOT_DONE_YET
        when_admitted(
            self.gateway.limits.admit(presented_key(request) or ""),
            lambda release: self._admitted(request, body, release),
            lambda: _gone(request),
        )
        return NOT_DONE_YET

    def _admitted(
        self, request: Request, body: dict[str, Any], release: Admission
    ) -> None:
        if isinstance(release, ApiError):
            self._refuse(request, release)
            return
        try:
            self._start(request, body, release)
        except Exception:
            release()  # never leak a slot, whatever went wrong
            raise

    def _check(self, body: Any) -> None:
        """
        Check a request body before anything else looks at it.

        @raise TranslationError: Naming the bad field.
        """
        check_request(self.api, body)

    def _start(self, request: Request, body: dict[str, Any], release: Release) -> None:
        """
        Serve a checked, admitted request; C{release} once it is over.
        """
        Exchange(self.gateway, request, self.api, self.route, release).run(body)


class ChatCompletions(_Completions):
    """
    C{POST /v1/chat/completions}: OpenAI Chat Completions.
    """


class Messages(_Completions):
    """
    C{POST /v1/messages}: Anthropic Messages.
    """

    api = "anthropic"
    route = "/v1/messages"


class Responses(_Completions):
    """
    C{POST /v1/responses}: the OpenAI Responses API, passed through to
    upstreams that speak it, translated for the others; errors in OpenAI's
    shape.
    """

    api = "responses"
    route = "/v1/responses"

    def _check(self, body: Any) -> None:
        check_responses_request(body)


class CountTokens(_Completions):
    """
    C{POST /v1/messages/count_tokens}: Anthropic's token counting, forwarded
    to Anthropic-format upstreams, estimated for the others.
    """

    api = "anthropic"
    route = "/v1/messages/count_tokens"

    def _check(self, body: Any) -> None:
        check_count_tokens(body)

    def _start(self, request: Request, body: dict[str, Any], release: Release) -> None:
        CountTokensExchange(self.gateway, request, release).run(body)


class Embeddings(_Completions):
    """
    C{POST /v1/embeddings}: OpenAI embeddings, forwarded to OpenAI-format
    upstreams.
    """

    route = "/v1/embeddings"

    def _check(self, body: Any) -> None:
        check_embeddings(body)

    def _start(self, request: Request, body: dict[str, Any], release: Release) -> None:
        EmbeddingsExchange(self.gateway, request, release).run(body)


class Models(_Base):
    """
    C{GET /v1/models}: the configured names, in OpenAI's list shape, or
    Anthropic's when the request carries C{anthropic-version}.
    """

    route = "/v1/models"

    def render_GET(self, request: Request) -> bytes:
        names = self.gateway.model_names()
        request.setHeader(b"content-type", b"application/json")
        if request.getHeader("anthropic-version"):
            data = [model_entry(name, True) for name in names]
            return dumps(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": names[0] if names else None,
                    "last_id": names[-1] if names else None,
                }
            )
        return dumps(
            {
                "object": "list",
                "data": [model_entry(name, False) for name in names],
            }
        )


#: The start of C{GET /v1/models/{id}}.
MODEL_PREFIX = b"/v1/models/"


class ModelInfo(_Base):
    """
    C{GET /v1/models/{id}}: one configured model, in OpenAI's shape, or
    Anthropic's when the request carries C{anthropic-version}; a 404 in the
    same shape when it is not configured.
    """

    route = "/v1/models/{id}"

    def api_of(self, request: Request) -> Api:
        return "anthropic" if request.getHeader("anthropic-version") else "openai"

    def render_GET(self, request: Request) -> Any:
        received = time.perf_counter()
        raw = unquote_to_bytes(request.path[len(MODEL_PREFIX) :].rstrip(b"/"))
        name = raw.decode("utf-8", "replace")
        if name not in self.gateway.backends:
            self._refuse(
                request, ApiError(404, f"model {name!r} is not configured", "model")
            )
            return NOT_DONE_YET
        when_admitted(
            self.gateway.limits.admit(presented_key(request) or ""),
            lambda release: self._admitted(request, name, received, release),
            lambda: _gone(request),
        )
        return NOT_DONE_YET

    def _admitted(
        self, request: Request, name: str, received: float, release: Admission
    ) -> None:
        if isinstance(release, ApiError):
            self._refuse(request, release)
            return
        release()
        anthropic = self.api_of(request) == "anthropic"
        respond_json(request, 200, model_entry(name, anthropic))
        record_request(
            self.gateway.metrics,
            route=self.route,
            model=name,
            provider="-",
            status=200,
            latency=time.perf_counter() - received,
            ttft=None,
            usage=None,
        )


class Health(_Base):
    """
    C{GET /healthz}.
    """

    needs_key = False
    route = "/healthz"

    def __init__(
        self, gateway: Gateway, extra: Mapping[str, object] | None = None
    ) -> None:
        """
        @param extra: Fields added to the reply (a worker's number and pid).
        """
        super().__init__(gateway)
        self._body = dumps({"status": "ok", **(extra or {})})

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return self._body


class MetricsPage(_Base):
    """
    C{GET /metrics}: Prometheus text format.
    """

    route = "/metrics"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        # The metrics name every model, which /v1/models shows only to
        # clients with a key.
        self.needs_key = not self.settings.public_metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.gateway.metrics.render()


class ChatPage(_Base):
    """
    C{GET /}: the chat page.
    """

    needs_key = False
    route = "/"

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return (
            importlib_resources.files("pylon_ai")
            .joinpath("web/index.html")
            .read_bytes()
        )


class NotFound(_Base):
    """
    Any other path: a 404 in the shape of the API the path looks like.
    """

    needs_key = False

    def api_of(self, request: Request) -> Api:
        return api_for_path(request.path)

    def _serve(
        self, request: Request, host: str | None, origin: str | None, key: str | None
    ) -> Any:
        api = self.api_of(request)
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        body = ApiError(404, f"no route {method} {path}").body(api)
        if api == "openai":
            body["error"]["code"] = None  # a URL, not a model, was not found
        respond_json(request, 404, body)
        return NOT_DONE_YET


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
