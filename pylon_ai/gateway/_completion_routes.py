"""
The routes that send a request body to a model: Chat Completions, Messages,
Responses, token counting and embeddings.  Each checks its body, answers an
unknown model with a 404 before the limits, then waits for admission.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from pylon_ai._json import loads
from pylon_ai.formats.errors import TranslationError
from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._client_checks import presented_key
from pylon_ai.gateway._exchange import Exchange
from pylon_ai.gateway._gateway import check_request, check_responses_request
from pylon_ai.gateway._limits import Admission, Release, when_admitted
from pylon_ai.gateway._route_base import _Base, _gone
from pylon_ai.gateway._routes import (
    CountTokensExchange,
    EmbeddingsExchange,
    check_count_tokens,
    check_embeddings,
)


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
