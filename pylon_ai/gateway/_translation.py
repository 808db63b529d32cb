"""
A client's request on its way to the upstreams that may serve it: as it
came for an upstream that speaks the client's format, translated through the
canonical model (L{pylon_ai.formats}) for the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from pylon_ai.formats import chat, messages, responses
from pylon_ai.formats.canonical import CanonicalRequest
from pylon_ai.formats.responses import Adapted, ToolNames

if TYPE_CHECKING:
    from pylon_ai.gateway._backends import Backend

#: The gateway's API names and the format modules that speak them.
_FORMATS = {"openai": chat, "anthropic": messages, "responses": responses}


class Translation:
    """
    One client request and its upstream bodies.  It is decoded into the
    canonical request once, when the first upstream of another format needs
    it, however many attempts follow.

    A Responses request is also adapted for upstreams without its tools
    (L{responses.adapt_request}): namespace tools flattened, hosted tools
    dropped, or refused on a model with C{strict_tools}.
    """

    log = Logger()

    def __init__(self, api: str, body: dict[str, Any]) -> None:
        """
        @param api: The API the client called (C{"openai"}, C{"anthropic"},
            C{"responses"}).
        @param body: The checked request body, in that API's format.
        """
        self.api = api
        self.body = body
        self._canonical: CanonicalRequest | None = None
        self._adapted: dict[bool, Adapted] = {}
        self._logged = False

    def canonical(self) -> CanonicalRequest:
        """
        The request in the canonical model.

        @raise TranslationError: If the body cannot be decoded.
        """
        if self._canonical is None:
            self._canonical = _FORMATS[self.api].decode_request(self.body)
        return self._canonical

    @property
    def names(self) -> ToolNames:
        """
        The client's names of the tools an upstream of another format knows
        by flat names (a Responses request's namespace tools); none before
        a translation was made.
        """
        for adapted in self._adapted.values():
            return adapted.names
        return ToolNames()

    def _request_for(self, backend: Backend) -> CanonicalRequest:
        req = self.canonical()
        if self.api != "responses":
            return req
        strict = backend.config.strict_tools
        adapted = self._adapted.get(strict)
        if adapted is None:
            adapted = responses.adapt_request(req, strict_tools=strict)
            self._adapted[strict] = adapted
            if adapted.dropped and not self._logged:
                # Codex sends web_search with every request: say so once,
                # without anything of the prompt.
                self._logged = True
                self.log.info(
                    "Dropped hosted tools {tools} of a /v1/responses request "
                    "for model {model}: its upstream cannot run them",
                    tools=", ".join(adapted.dropped),
                    model=backend.name,
                )
        return adapted.request

    def body_for(self, backend: Backend) -> dict[str, Any]:
        """
        The request in the format C{backend} speaks: the client's own body
        for a backend that speaks the client's format (and the mock, for
        Chat Completions and Messages), a translation otherwise.

        @raise TranslationError: If the request cannot be translated, naming
            the client's field.
        """
        if self._as_is(backend):
            return self.body
        req = self._request_for(backend)
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

    def _as_is(self, backend: Backend) -> bool:
        if backend.format == "mock":
            # The mock reads Chat Completions and Messages bodies.
            return self.api != "responses"
        return backend.speaks(self.api)

    def forced_tool(self, backend: Backend) -> bool:
        """
        Whether the body for C{backend} asks for the output format with the
        forced-tool technique, whose call the reply's events must turn back
        into text (L{pylon_ai.formats.structured}).
        """
        if self._as_is(backend):
            return False
        module = messages if backend.format == "anthropic" else chat
        return module.uses_forced_tool(
            self._request_for(backend), native_structured_output=True
        )
