"""
The checks on a client and its request headers, shared by the HTTP routes and
the WebSocket: which API's error shape a path calls for, the client key and
its comparison, the C{Origin} rule, the decoding of the headers the service
reads, and the error answers given before any model is involved.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.web.server import Request

from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._exchange import respond_error, respond_json
from pylon_ai.gateway._gateway import Api

_ANTHROPIC_PATHS = (b"/v1/messages",)


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
