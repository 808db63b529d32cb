"""
The routes the gateway answers itself, without an upstream: the model list
and one model's entry, C{/healthz}, C{/metrics}, the chat page, and the 404
of any other path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib import resources as importlib_resources
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web.server import NOT_DONE_YET, Request

from pylon_ai._json import dumps
from pylon_ai.gateway._accounting import record_request
from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._client_checks import api_for_path, presented_key
from pylon_ai.gateway._exchange import respond_json
from pylon_ai.gateway._gateway import Api, Gateway
from pylon_ai.gateway._limits import Admission, when_admitted
from pylon_ai.gateway._route_base import _Base, _gone
from pylon_ai.gateway._routes import model_entry


class Models(_Base):
    """
    C{GET /v1/models}: the configured names, in OpenAI's list shape, or
    Anthropic's when the request carries C{anthropic-version}.
    """

    route = "/v1/models"

    def render_GET(self, request: Request) -> bytes:
        names = self.gateway.model_names()
        request.setHeader(b"content-type", b"application/json")
        if request.getHeader("anthropic-version"):
            data = [model_entry(name, True) for name in names]
            return dumps(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": names[0] if names else None,
                    "last_id": names[-1] if names else None,
                }
            )
        return dumps(
            {
                "object": "list",
                "data": [model_entry(name, False) for name in names],
            }
        )


#: The start of C{GET /v1/models/{id}}.
MODEL_PREFIX = b"/v1/models/"


class ModelInfo(_Base):
    """
    C{GET /v1/models/{id}}: one configured model, in OpenAI's shape, or
    Anthropic's when the request carries C{anthropic-version}; a 404 in the
    same shape when it is not configured.
    """

    route = "/v1/models/{id}"

    def api_of(self, request: Request) -> Api:
        return "anthropic" if request.getHeader("anthropic-version") else "openai"

    def render_GET(self, request: Request) -> Any:
        received = time.perf_counter()
        raw = unquote_to_bytes(request.path[len(MODEL_PREFIX) :].rstrip(b"/"))
        name = raw.decode("utf-8", "replace")
        if name not in self.gateway.backends:
            self._refuse(
                request, ApiError(404, f"model {name!r} is not configured", "model")
            )
            return NOT_DONE_YET
        when_admitted(
            self.gateway.limits.admit(presented_key(request) or ""),
            lambda release: self._admitted(request, name, received, release),
            lambda: _gone(request),
        )
        return NOT_DONE_YET

    def _admitted(
        self, request: Request, name: str, received: float, release: Admission
    ) -> None:
        if isinstance(release, ApiError):
            self._refuse(request, release)
            return
        release()
        anthropic = self.api_of(request) == "anthropic"
        respond_json(request, 200, model_entry(name, anthropic))
        record_request(
            self.gateway.metrics,
            route=self.route,
            model=name,
            provider="-",
            status=200,
            latency=time.perf_counter() - received,
            ttft=None,
            usage=None,
        )


class Health(_Base):
    """
    C{GET /healthz}.
    """

    needs_key = False
    route = "/healthz"

    def __init__(
        self, gateway: Gateway, extra: Mapping[str, object] | None = None
    ) -> None:
        """
        @param extra: Fields added to the reply (a worker's number and pid).
        """
        super().__init__(gateway)
        self._body = dumps({"status": "ok", **(extra or {})})

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return self._body


class MetricsPage(_Base):
    """
    C{GET /metrics}: Prometheus text format.
    """

    route = "/metrics"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        # The metrics name every model, which /v1/models shows only to
        # clients with a key.
        self.needs_key = not self.settings.public_metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.gateway.metrics.render()


class ChatPage(_Base):
    """
    C{GET /}: the chat page.
    """

    needs_key = False
    route = "/"

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return (
            importlib_resources.files("pylon_ai")
            .joinpath("web/index.html")
            .read_bytes()
        )


class NotFound(_Base):
    """
    Any other path: a 404 in the shape of the API the path looks like.
    """

    needs_key = False

    def api_of(self, request: Request) -> Api:
        return api_for_path(request.path)

    def _serve(
        self, request: Request, host: str | None, origin: str | None, key: str | None
    ) -> Any:
        api = self.api_of(request)
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        body = ApiError(404, f"no route {method} {path}").body(api)
        if api == "openai":
            body["error"]["code"] = None  # a URL, not a model, was not found
        respond_json(request, 404, body)
        return NOT_DONE_YET
