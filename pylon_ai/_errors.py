"""
The exceptions the library raises, and the scrubbing that keeps keys (and,
for a gateway's clients, upstream addresses) out of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

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
        """
        C{"HTTP 429 rate_limit_error: <message>"}, C{"no response: <message>"}
        for a provider that could not be reached, the parts that are known
        otherwise.
        """
        if self.status is not None:
            head = f"HTTP {self.status}"
        elif isinstance(self, ProviderConnectionError):
            head = "no response"
        else:
            head = ""
        if self.error_type:
            head = f"{head} {self.error_type}" if head else self.error_type
        return f"{head}: {self.message}" if head else self.message


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


#: What a scrubbed secret or credential is replaced with.
REDACTED = "[redacted]"
#: What a scrubbed upstream address is replaced with.
UPSTREAM = "[upstream]"

# A value ends at white space, a quote, a backslash (a JSON escape) or a
# separator; at least 8 characters, so that prose ("Bearer token required")
# stays readable.  No brackets: a value already redacted is left alone.
_VALUE = r"[^\s\"'`,;}\[\]\\]{8,}"
# The separator between a header's name and value, in HTTP, JSON (escaped or
# not), Python reprs or query strings.
_SEP = r"\\?[\"']?\s*[:=]\s*\\?[\"']?\s*"
_CREDENTIALS = re.compile(
    # Header values: authorization (with its scheme, if any) and API keys.
    rf"(?i)(\b(?:proxy-)?authorization{_SEP}(?:(?:bearer|basic|token|digest)\s+)?)"
    rf"{_VALUE}"
    rf"|(\b(?:x-(?:goog-)?api-key|api[-_]?key|access[-_]token){_SEP}){_VALUE}"
    # A bearer token wherever it stands, and OpenAI-style secret keys.
    rf"|(\bbearer\s+){_VALUE}"
    r"|\b(sk-)[A-Za-z0-9_\-]{16,}"
)
#: The shortest start of a secret that a scrubbed text may not end with.
_CUT_PREFIX = 6


def _keep_name(match: re.Match[str]) -> str:
    # The header name and separator (or the key's C{sk-}) stay: the text
    # still says what was there.
    return next((g for g in match.groups() if g), "") + REDACTED


class Scrubber:
    """
    Removes secrets from what an upstream says, before it reaches a log or a
    client: every given secret (as is, JSON-escaped and URL-quoted),
    anything that looks like a credential (authorization or API-key header
    values, bearer tokens, C{sk-...} keys), and the given upstream
    addresses (URLs, C{host:port}, host names).

    Only error paths use it: building the patterns and scanning a text cost
    too much for every event of a stream.
    """

    def __init__(
        self, secrets: Iterable[str] = (), addresses: Iterable[str] = ()
    ) -> None:
        """
        @param secrets: The values to remove; empty ones are ignored.
        @param addresses: Upstream URLs (or C{scheme://host[:port]}) whose
            host is to be removed, with any scheme, port and path around it.
        """
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update((secret, secret.replace("/", "\\/"), quote(secret)))
        self._secrets = tuple(sorted(forms, key=len, reverse=True))
        self._secret_re = (
            re.compile("|".join(map(re.escape, self._secrets)))
            if self._secrets
            else None
        )
        hosts = set()
        for address in addresses:
            host = urlsplit(address).hostname if "//" in address else address
            if host:
                hosts.add(host)
        self._address_re = None
        if hosts:
            names = "|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True))
            self._address_re = re.compile(
                r"(?i)(?<![\w.-])(?:[a-z][a-z0-9+.-]*://)?(?:[^\s/@\"']*@)?"
                rf"\[?(?:{names})\]?(?::\d+)?(?:/[^\s\"'<>]*)?(?![\w-])"
            )

    def text(self, text: str) -> str:
        """
        C{text} with every secret, credential and address replaced.
        """
        if self._secret_re is not None:
            text = self._secret_re.sub(REDACTED, text)
            text = self._cut_tail(text)
        text = _CREDENTIALS.sub(_keep_name, text)
        if self._address_re is not None:
            text = self._address_re.sub(UPSTREAM, text)
        return text

    def _cut_tail(self, text: str) -> str:
        # An excerpt cut in the middle of a secret must not keep its start.
        for secret in self._secrets:
            for n in range(min(len(secret) - 1, len(text)), _CUT_PREFIX - 1, -1):
                if text.endswith(secret[:n]):
                    return text[:-n] + REDACTED
        return text

    def error(self, error: ProviderError) -> ProviderError:
        """
        Scrub a L{ProviderError}'s message and body, in place.

        @return: C{error}.
        """
        error.message = self.text(error.message)
        error.args = (error.message, *error.args[1:])
        if error.body is not None:
            error.body = self.text(error.body)
        return error
