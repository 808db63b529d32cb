"""
What a failed call to a provider means: the L{ProviderError} for a non-2xx
reply (L{error_from_body}), for a request that got no reply
(L{connection_error}) or for a whole reply that is too large
(L{BodyTooLarge}); how long the provider asks us to wait
(L{retry_after_seconds}); and the request's credentials to scrub out of all
of it (L{request_secrets}).
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError

from twisted.internet.error import ConnectError, DNSLookupError
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from pylon_ai._errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderTLSError,
    Scrubber,
    excerpt,
)
from pylon_ai._json import loads

#: The request headers whose values are credentials.
_SECRET_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
)
_SCHEMES = frozenset(("bearer", "basic", "token", "digest"))


def request_secrets(headers: dict[str, str] | Headers) -> list[str]:
    """
    The credentials a request carries in its headers: the values of
    C{authorization} (with and without its scheme), C{x-api-key} and the
    like.

    @param headers: The request headers.
    @return: The secret values, for a L{Scrubber}.
    """
    values: list[str] = []
    if isinstance(headers, Headers):
        for name in _SECRET_HEADERS:
            for raw in headers.getRawHeaders(name) or ():
                values.append(raw if isinstance(raw, str) else raw.decode("latin-1"))
    else:
        wanted = set(_SECRET_HEADERS)
        values.extend(v for k, v in headers.items() if k.lower() in wanted)
    secrets: list[str] = []
    for value in values:
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() in _SCHEMES:
            # Never the scheme alone ("Bearer " with an empty key): that
            # would scrub the word wherever it stands.
            if rest.strip():
                secrets.extend((value, rest.strip()))
        elif value.strip():
            secrets.append(value)
    return secrets


def _scrubbed_text(body: bytes, scrubber: Scrubber | None) -> str:
    # The whole body is scrubbed before it is cut, so that no cut leaves the
    # start of a key behind.
    text = body.decode("utf-8", "replace")
    return scrubber.text(text) if scrubber is not None else text


def error_from_body(
    label: str,
    status: int,
    body: bytes,
    retry_after: str | None = None,
    scrubber: Scrubber | None = None,
) -> ProviderError:
    """
    The L{ProviderError} for a non-2xx response.

    Understands Anthropic's C{{"type": "error", "error": {...}}}, OpenAI's
    C{{"error": {"message", "type", "code"}}} and the C{{"error": "..."}},
    C{{"detail": ...}} and C{{"message": ...}} shapes of compatible servers.

    @param scrubber: Scrubs the body and the message (with the request's
        own credentials, at least).
    """
    error_type: str | None = None
    detail: str | None = None
    text = _scrubbed_text(body, scrubber)
    try:
        obj = loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, str):
            detail = err
        elif isinstance(err, dict):
            if isinstance(err.get("type"), str):
                error_type = err["type"]
            for key in ("message", "detail"):
                if isinstance(err.get(key), str):
                    detail = err[key]
                    break
    if detail is None:
        detail = text[:200].strip() or "(empty body)"
    return ProviderError(
        f"{label} returned HTTP {status}: {detail}",
        status=status,
        error_type=error_type,
        body=excerpt(text),
        retry_after=retry_after,
    )


def retry_after_seconds(headers: Any) -> str | None:
    """
    How long the provider asks us to wait, in seconds, from C{retry-after-ms}
    (OpenAI, Anthropic) or C{retry-after} (seconds or an HTTP date).

    @param headers: The response's C{Headers}.
    @return: The seconds as text (e.g. C{"1.5"}), or L{None}.
    """
    raw = headers.getRawHeaders(b"retry-after-ms")
    if raw:
        try:
            ms = float(raw[0])
        except ValueError:
            pass
        else:
            if 0 <= ms < 1e9:
                return f"{ms / 1000:g}"
    raw = headers.getRawHeaders(b"retry-after")
    if not raw:
        return None
    text = raw[0].decode("ascii", "replace").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not 0 <= seconds < 1e9:
        return "0" if seconds < 0 else None
    return f"{seconds:g}"


def connection_error(label: str, failure: Failure) -> ProviderError:
    """
    The L{ProviderError} for a request that got no response.
    """
    reasons = [failure]
    inner = getattr(failure.value, "reasons", None)
    if inner:
        reasons.extend(inner)
    for reason in reasons:
        if reason.check(VerificationError):
            return ProviderTLSError(
                f"TLS certificate of {label} does not match its host name"
            )
        if reason.check(SSL.Error):
            return ProviderTLSError(
                f"TLS handshake with {label} failed: {_ssl_reason(reason.value)}"
            )
    for reason in reasons:
        if reason.check(DNSLookupError):
            return ProviderConnectionError(f"cannot resolve the host of {label}")
        if reason.check(ConnectError):
            return ProviderConnectionError(
                f"cannot connect to {label}: {reason.getErrorMessage()}"
            )
    return ProviderConnectionError(
        f"connection to {label} failed before a response: "
        f"{type(reasons[-1].value).__name__}"
    )


def _ssl_reason(err: BaseException | None) -> str:
    args = getattr(err, "args", ())
    for group in args:
        for item in group if isinstance(group, list) else ():
            if isinstance(item, tuple) and item and isinstance(item[-1], str):
                return item[-1]
    return "TLS error"


class BodyTooLarge(ProviderError):
    """
    A whole reply was larger than the caller reads.  Asking again would
    only bring it again: it is not worth a retry.

    @ivar limit: The bound, in bytes.
    """

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit
