"""
What every HTTP route shares: the request class (the body size limit) and the
base resource (the checks of every request: header bytes, the C{Host} and
content type of no-key mode, CORS, client authentication; an unexpected
exception is a JSON 500).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from pylon_ai._json import dumps
from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._client_checks import (
    _BadHeader,
    _client_headers,
    _fail,
    _respond_error,
    api_for_path,
    key_ok,
    origin_allowed,
)
from pylon_ai.gateway._exchange import respond_error
from pylon_ai.gateway._gateway import Api, Gateway
from pylon_ai.gateway._intake import host_allowed, is_json_type

_CORS_ALLOW_HEADERS = (
    b"authorization, content-type, x-api-key, anthropic-version, anthropic-beta, "
    b"openai-organization, openai-project, x-stainless-arch, x-stainless-lang, "
    b"x-stainless-os, x-stainless-package-version, x-stainless-runtime, "
    b"x-stainless-runtime-version, x-stainless-retry-count, x-stainless-timeout, "
    b"x-stainless-helper-method, anthropic-dangerous-direct-browser-access"
)


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
