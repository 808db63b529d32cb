"""
A client's request on its way to the upstreams that may serve it: as it
came for an upstream of the client's format, translated through the
canonical model (L{pylon_ai.formats}) for the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pylon_ai.formats import chat, messages
from pylon_ai.formats.canonical import CanonicalRequest

if TYPE_CHECKING:
    from pylon_ai.gateway._backends import Backend

#: The gateway's API names and the format modules that speak them.
_FORMATS = {"openai": chat, "anthropic": messages}


class Translation:
    """
    One client request and its upstream bodies.  It is decoded into the
    canonical request once, when the first upstream of another format needs
    it, however many attempts follow.
    """

    def __init__(self, api: str, body: dict[str, Any]) -> None:
        """
        @param api: The API the client called (C{"openai"}, C{"anthropic"}).
        @param body: The checked request body, in that API's format.
        """
        self.api = api
        self.body = body
        self._canonical: CanonicalRequest | None = None

    def canonical(self) -> CanonicalRequest:
        """
        The request in the canonical model.

        @raise TranslationError: If the body cannot be decoded.
        """
        if self._canonical is None:
            self._canonical = _FORMATS[self.api].decode_request(self.body)
        return self._canonical

    def body_for(self, backend: Backend) -> dict[str, Any]:
        """
        The request in the format C{backend} speaks: the client's own body
        for a same-format (or mock) backend, a translation otherwise.

        @raise TranslationError: If the request cannot be translated, naming
            the client's field.
        """
        if backend.format == "mock" or backend.format == self.api:
            return self.body
        req = self.canonical()
        if backend.format == "anthropic":
            return messages.encode_request(
                req,
                upstream_model=backend.model,
                default_max_tokens=backend.config.max_tokens,
            )
        return chat.encode_request(
            req,
            upstream_model=backend.model,
            max_tokens_field=backend.max_tokens_field,
        )

    def forced_tool(self, backend: Backend) -> bool:
        """
        Whether the body for C{backend} asks for the output format with the
        forced-tool technique, whose call the reply's events must turn back
        into text (L{pylon_ai.formats.structured}).
        """
        if backend.format == "mock" or backend.format == self.api:
            return False
        module = messages if backend.format == "anthropic" else chat
        return module.uses_forced_tool(self.canonical(), native_structured_output=True)
