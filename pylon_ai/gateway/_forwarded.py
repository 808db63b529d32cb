"""
What of a client's own request an Anthropic upstream gets, beside the body.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from attrs import frozen

#: What a forwarded query string keeps as it is (RFC 3986's query
#: characters, and escapes); anything else is percent-encoded, so that the
#: upstream URL is always valid.
_QUERY_SAFE = "!$&'()*+,;=:@/?%-._~"


@frozen
class Forwarded:
    """
    What of the client's own request goes to an Anthropic upstream when the
    client speaks Anthropic's format too: the beta features it asked for
    and the query string (Claude Code sends C{?beta=true}).  No other client
    header ever goes upstream.

    @ivar beta: The C{anthropic-beta} value (several header lines joined
        with commas), or L{None}.
    @ivar query: The query string, without the C{?}; empty for none.
    """

    beta: bytes | None = None
    query: bytes = b""

    @classmethod
    def from_request(cls, headers: Any, uri: bytes) -> Forwarded | None:
        """
        What a client request carries that may be forwarded.

        @param headers: The request's C{Headers}.
        @param uri: The request target, with its query string.
        @return: L{None} when there is nothing to forward.
        """
        lines = headers.getRawHeaders(b"anthropic-beta") or []
        beta = b",".join(line.strip() for line in lines if line.strip()) or None
        query = uri.partition(b"?")[2]
        if query:
            query = quote(query, safe=_QUERY_SAFE).encode("ascii")
        if beta is None and not query:
            return None
        return cls(beta, query)
