"""
The routes that are not completions: C{POST /v1/messages/count_tokens},
C{POST /v1/embeddings} and C{GET /v1/models/{id}}.

Token counting and embeddings are one upstream request each with a whole
JSON reply, returned to the client as it came; where the upstream cannot
serve them, the gateway answers itself (an offline token estimate, the mock
model's embeddings) or says why not.  The resources that route here, with
the checks every route makes (keys, C{Host}, content type, limits), are in
L{pylon_ai.gateway._completion_routes} and L{pylon_ai.gateway._route_base}.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from pylon_ai._body_call import BodyCall
from pylon_ai._errors import ProviderError
from pylon_ai._json import dumps, loads
from pylon_ai.formats._tokens import estimate_tokens
from pylon_ai.formats.events import Usage
from pylon_ai.gateway._accounting import record_request
from pylon_ai.gateway._apierrors import ApiError, api_error
from pylon_ai.gateway._backends import Backend, Forwarded
from pylon_ai.gateway._exchange import respond_error
from pylon_ai.gateway._gateway import (
    Api,
    Gateway,
    check_messages,
    check_model,
    invalid,
)
from pylon_ai.gateway._mock import EmbeddingRequestError, mock_embeddings
from pylon_ai.gateway._state import usage_tokens

#: The C{created} time of every model in OpenAI's shape, and Anthropic's.
_CREATED = 0
_CREATED_AT = "2025-01-01T00:00:00Z"


def model_entry(name: str, anthropic: bool) -> dict[str, Any]:
    """
    One configured model in the shape of C{GET /v1/models}' entries.

    @param name: The model name clients ask for.
    @param anthropic: Anthropic's shape (the request carries
        C{anthropic-version}) rather than OpenAI's.
    """
    if anthropic:
        return {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": _CREATED_AT,
        }
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "pylon_ai"}


def check_count_tokens(body: Any) -> None:
    """
    The checks of a C{count_tokens} body before it goes anywhere: a model
    and a non-empty list of messages with roles (a Messages request without
    C{max_tokens}).

    @raise TranslationError: Naming the first bad field.
    """
    check_model(body)
    check_messages(body)


def check_embeddings(body: Any) -> None:
    """
    The checks of an embeddings body before it goes anywhere: a model and
    an C{input}.  The rest is the upstream's to judge.

    @raise TranslationError: Naming the first bad field.
    """
    check_model(body)
    if body.get("input") is None:
        raise invalid("input", "Field required")


class _OneShot:
    """
    Serves one request that is a single upstream call with a whole reply,
    or answered by the gateway itself: the client gets the reply's bytes as
    they came, or an error in its API's shape; the upstream call ends when
    the client leaves; one log line at the end.
    """

    log = Logger()
    route = ""
    api: Api = "openai"

    def __init__(
        self,
        gateway: Gateway,
        request: Request,
        release: Any = None,
    ) -> None:
        """
        @param release: Called once when the request is over (the limits'
            count of requests in flight).
        """
        self._gateway = gateway
        self._request = request
        self._release = release
        self._received = time.perf_counter()
        self._model = "unknown"
        self._provider = "-"
        self._call: BodyCall | None = None
        self._body = b""
        self._usage: Usage | None = None
        self._status = 0
        self._gone = False
        self._over = False
        self._shutting_down = False

    def run(self, body: dict[str, Any]) -> None:
        """
        Start serving a checked body whose model is configured.
        """
        self._model = body["model"]
        self._request.notifyFinish().addErrback(self._client_gone)
        try:
            answer = self.start(body)
        except ApiError as e:
            self._error(e)
            return
        if isinstance(answer, bytes):
            self._reply(answer)
            return
        self._call = answer
        self._gateway.track(self)
        answer.deferred.addCallbacks(lambda _: self._reply(self._body), self._failed)

    def start(self, body: dict[str, Any]) -> bytes | BodyCall:
        """
        The reply, or the upstream call that will bring it.

        @raise ApiError: When the request cannot be served.
        """
        raise NotImplementedError

    def usage(self, reply: bytes) -> Usage | None:
        """
        The tokens a reply consumed, for the metrics, if it says.
        """
        return None

    def _got_body(self, body: bytes, _: dict[str, Any]) -> None:
        self._body = body

    def upstream(self, backend: Backend) -> None:
        """
        Note the deployment that serves the request.
        """
        self._provider = backend.provider

    def shutdown(self) -> None:
        """
        The service is stopping and the grace period is over: end this
        request with an error.
        """
        self._shutting_down = True
        if self._call is not None and not self._call.deferred.called:
            self._call.deferred.cancel()

    def _client_gone(self, reason: Failure) -> None:
        self._gone = True
        if self._call is not None and not self._call.deferred.called:
            self._call.deferred.cancel()

    def _reply(self, body: bytes) -> None:
        if self._gone:
            self._status = 499
        else:
            self._usage = self.usage(body)
            self._status = 200
            request = self._request
            request.setResponseCode(200)
            request.setHeader(b"content-type", b"application/json")
            request.write(body)
            request.finish()
        self._end()

    def _failed(self, failure: Failure) -> None:
        exc = failure.value
        if self._gone:
            self._status = 499
            self._end()
            return
        if self._shutting_down:
            self._error(ApiError(503, "the gateway is shutting down"))
            return
        if isinstance(exc, ProviderError):
            self._gateway.scrubber.error(exc)
        elif not failure.check(CancelledError, ApiError):
            self.log.failure(
                "Unexpected failure serving {route} for model {model}",
                failure,
                route=self.route,
                model=self._model,
            )
        self._error(api_error(exc or Exception()))

    def _error(self, error: ApiError) -> None:
        self._status = error.status
        respond_error(self._request, self.api, error)
        self._end()

    def _end(self) -> None:
        if self._over:
            return
        self._over = True
        self._gateway.untrack(self)
        if self._release is not None:
            self._release(usage_tokens(self._usage))
        record_request(
            self._gateway.metrics,
            route=self.route,
            model=self._model,
            provider=self._provider,
            status=self._status,
            latency=time.perf_counter() - self._received,
            ttft=None,
            usage=self._usage,
        )


class CountTokensExchange(_OneShot):
    """
    C{POST /v1/messages/count_tokens}: forwarded to an Anthropic-format
    deployment (its key, its model name, the client's C{anthropic-beta}
    header and query string), else answered with the offline estimate of
    L{pylon_ai.formats._tokens} in the same shape.
    """

    route = "/v1/messages/count_tokens"
    api: Api = "anthropic"

    def start(self, body: dict[str, Any]) -> bytes | BodyCall:
        backend = self._gateway.least_busy(self._gateway.backends[body["model"]])
        self.upstream(backend)
        url = backend.count_tokens_url
        if backend.format != "anthropic" or url is None:
            return dumps({"input_tokens": estimate_tokens(body)})
        request = self._request
        upstream = dict(body)
        upstream["model"] = backend.model
        return backend.post(
            url,
            upstream,
            self._got_body,
            Forwarded.from_request(request.requestHeaders, request.uri or b""),
            self._gateway.config.server.max_reply_bytes,
        )


class EmbeddingsExchange(_OneShot):
    """
    C{POST /v1/embeddings}: forwarded to an OpenAI-format deployment with
    its model name, the body otherwise as it came; the mock model makes its
    own; any other model is a 400.
    """

    route = "/v1/embeddings"

    def start(self, body: dict[str, Any]) -> bytes | BodyCall:
        name = body["model"]
        group = self._gateway.backends[name]
        able = [b for b in group if b.format == "mock" or b.embeddings_url]
        if not able:
            providers = ", ".join(sorted({b.provider for b in group}))
            detail = (
                "its custom URL does not end in /chat/completions, so its "
                "embeddings URL is unknown"
                if providers == "custom"
                else f"the {providers} API has no embeddings"
            )
            raise ApiError(
                400, f"model {name!r} cannot make embeddings: {detail}", "model"
            )
        backend = self._gateway.least_busy(able)
        self.upstream(backend)
        if backend.format == "mock" or backend.embeddings_url is None:
            try:
                return dumps(mock_embeddings(body))
            except EmbeddingRequestError as e:
                raise ApiError(400, str(e), e.param) from None
        upstream = dict(body)
        upstream["model"] = backend.model
        return backend.post(
            backend.embeddings_url,
            upstream,
            self._got_body,
            None,
            self._gateway.config.server.max_reply_bytes,
        )

    def usage(self, reply: bytes) -> Usage | None:
        try:
            tokens = loads(reply)["usage"]["prompt_tokens"]
        except (ValueError, KeyError, TypeError):
            return None
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
            return Usage(tokens, 0)
        return None
