"""
Errors as the gateway's clients see them: a status, and a body or stream
event in the shape of the API that was called.

What an upstream says reaches a client only through L{api_error}, after the
gateway's L{Scrubber} (L{gateway_scrubber}) took every configured secret and
every upstream address out of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from attrs import frozen

from twisted.internet.defer import CancelledError

from pylon_ai._errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeout,
    Scrubber,
)
from pylon_ai._json import dumps, loads
from pylon_ai.formats._frames import sse_frame
from pylon_ai.formats.chat import openai_error_body
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.messages import anthropic_error_body
from pylon_ai.gateway._config import Config

_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
_OPENAI_TYPE = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    405: ("invalid_request_error", None),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: ("api_error", "cancelled"),
    502: ("upstream_error", "upstream_error"),
    503: ("overloaded_error", "overloaded"),
    504: ("timeout_error", "upstream_timeout"),
}
#: Upstream statuses that are the client's own mistake: passed on as they are.
_CLIENT_MISTAKES = frozenset((400, 404, 413, 422))
#: The most of a non-JSON upstream error body shown to a client.
_DETAIL_CHARS = 300
_SPACE = re.compile(r"\s+")


def gateway_scrubber(config: Config, upstream_urls: Iterable[str]) -> Scrubber:
    """
    The one L{Scrubber} of a gateway: every model's C{api_key} and every
    client key of the configuration are secrets, and the upstreams' URLs are
    addresses no client may see.

    @param upstream_urls: The URLs the gateway's deployments send to.
    """
    secrets = [model.api_key for model in config.models]
    secrets.extend(config.server.api_keys)
    return Scrubber(secrets, [url for url in upstream_urls if url])


@frozen
class ApiError(Exception):
    """
    An error to answer a client with.

    @ivar status: The HTTP status.
    @ivar message: Readable text (never a key).
    @ivar param: The offending request field, if known.
    @ivar retry_after: Seconds for a C{retry-after} header, if any.
    @ivar error_type: Anthropic's error type when the status alone does not
        tell it (an overloaded upstream is a 502 C{overloaded_error}).
    """

    status: int
    message: str
    param: str | None = None
    retry_after: str | None = None
    error_type: str | None = None

    def body(self, api: str) -> dict[str, Any]:
        """
        The error body in the shape of C{api}.
        """
        if api == "anthropic":
            return anthropic_error_body(self.anthropic_type, self.message)
        error_type, code = self.openai_type
        body = openai_error_body(self.message, error_type, code)
        body["error"]["param"] = self.param
        return body

    @property
    def openai_type(self) -> tuple[str, str | None]:
        """
        OpenAI's error type and code for this error.
        """
        return _OPENAI_TYPE.get(self.status, ("api_error", None))

    @property
    def anthropic_type(self) -> str:
        """
        Anthropic's error type for this error.
        """
        return self.error_type or _ANTHROPIC_TYPE.get(self.status, "api_error")

    def event(self, api: str) -> bytes:
        """
        The stream event that ends a stream that already began.
        """
        if api == "anthropic":
            return sse_frame(dumps(self.body(api)), "error")
        return sse_frame(dumps(self.body(api)))


def _parsed(body: str | None) -> Any:
    # The upstream's body as JSON; None when there is none or it is not.
    if not body:
        return None
    try:
        return loads(body)
    except ValueError:
        return None


def _their_words(obj: Any) -> str | None:
    # The message of an error object in the upstream's parsed body
    # ({"error": {"message"}}, {"type": "error", "error": {...}},
    # {"detail"}...).
    if not isinstance(obj, dict):
        return None
    err = obj.get("error", obj)
    if isinstance(err, dict):
        for key in ("message", "detail"):
            if isinstance(err.get(key), str):
                return str(err[key])
    if isinstance(err, str):
        return err
    return None


def _upstream_detail(error: ProviderError) -> str:
    # The upstream's own words, from its body: never the error's message,
    # which names the upstream (its address, for a custom endpoint).
    obj = _parsed(error.body)
    said = _their_words(obj)
    if said is not None:
        return said
    if error.body and obj is None:
        text = _SPACE.sub(" ", error.body[:_DETAIL_CHARS]).strip()
        if text:
            return f"the upstream provider rejected the request: {text}"
    return f"the upstream provider rejected the request (HTTP {error.status})"


def api_error(exc: BaseException) -> ApiError:
    """
    The client-facing error for what went wrong.

    Upstream 400/404/413/422 are the client's mistake and keep their status
    and the upstream's message; an upstream 401/403 is the gateway's own
    key, a 502; 429 stays 429; timeouts are 504; everything else is a 502
    that does not show upstream addresses (an error event inside a stream
    says what the provider said in it).  The upstream's message is taken
    as it is: the gateway scrubs a L{ProviderError} before it gets here.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TranslationError):
        return ApiError(400, exc.message, exc.param)
    if isinstance(exc, ProviderTimeout):
        return ApiError(504, "the upstream provider timed out")
    if isinstance(exc, ProviderError):
        status = exc.status
        if status in _CLIENT_MISTAKES:
            return ApiError(status, _upstream_detail(exc))
        if status == 429:
            return ApiError(
                429,
                "the upstream provider is rate limiting requests",
                retry_after=exc.retry_after or "1",
            )
        if status in (529, 503) or exc.error_type == "overloaded_error":
            return ApiError(
                502,
                "the upstream provider is overloaded",
                error_type="overloaded_error",
            )
        if isinstance(exc, ProviderStreamError):
            # An error event inside the stream: what the provider said, not
            # "broke off" (a client shows this message to its user).
            said = _their_words(_parsed(exc.body))
            if said is not None:
                return ApiError(502, f"the upstream provider reported an error: {said}")
        if status is not None:
            return ApiError(502, f"the upstream provider failed (HTTP {status})")
        return ApiError(502, f"the upstream provider failed: {_public(exc)}")
    if isinstance(exc, CancelledError):
        return ApiError(499, "the request was cancelled")
    return ApiError(502, "the upstream stream could not be handled")


def _public(exc: ProviderError) -> str:
    # The library's messages name the upstream's address; clients get the
    # kind of failure only.
    if isinstance(exc, ProviderConnectionError):
        return "could not connect"
    return "the stream broke off or was malformed"
