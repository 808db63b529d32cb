"""
The exceptions the library raises.
"""

from __future__ import annotations

#: The most of a response body kept on an error, in bytes.
BODY_EXCERPT_BYTES = 4096

#: HTTP statuses equivalent to Anthropic's error types, for errors that arrive
#: inside a stream that began with 200.
ANTHROPIC_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class ProviderError(Exception):
    """
    A call to a provider failed.

    @ivar status: The HTTP status; for an error inside a 200 stream the
        provider's equivalent when known (e.g. 529 for C{overloaded_error}),
        else L{None}; L{None} when no response came.
    @ivar error_type: The provider's error type, such as
        C{"rate_limit_error"}, or L{None}.
    @ivar message: Readable text.  It never holds an API key.
    @ivar body: At most 4 KiB of the raw response body or event, or L{None}.
    @ivar retry_after: The provider's C{retry-after} header, if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        body: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.body = body
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status!r}, "
            f"error_type={self.error_type!r})"
        )

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(status {self.status}")
            parts[-1] += f", {self.error_type})" if self.error_type else ")"
        elif self.error_type:
            parts.append(f"({self.error_type})")
        return " ".join(parts)


class ProviderConnectionError(ProviderError):
    """
    The provider could not be reached: refused, reset, DNS or TLS failure.
    """


class ProviderTLSError(ProviderConnectionError):
    """
    The TLS handshake failed: the certificate is not trusted or does not
    match the host name.
    """


class ProviderTimeout(ProviderError):
    """
    No progress (connecting, waiting for headers, or between two reads) for
    longer than the configured timeout.
    """


class ProviderStreamError(ProviderError):
    """
    The stream was malformed, ended before it finished, or carried an error
    event.
    """


def excerpt(body: bytes | str | None) -> str | None:
    """
    At most L{BODY_EXCERPT_BYTES} of a body, as text.

    @param body: The raw body.
    @return: The decoded excerpt (invalid UTF-8 replaced), or L{None}.
    """
    if body is None:
        return None
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    return body[:BODY_EXCERPT_BYTES].decode("utf-8", "replace")
