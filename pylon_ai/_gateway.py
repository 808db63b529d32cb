"""
The gateway: configured models, their backends, and preparing a client
request for the upstream that will serve it.
"""

from __future__ import annotations

from typing import Any, Literal

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from pylon_ai._backends import Backend, Call, OnEvent, OnSSE
from pylon_ai._config import Config
from pylon_ai._http import make_http_client
from pylon_ai._metrics import Metrics
from pylon_ai._translate import (
    TranslationError,
    anthropic_request_to_openai,
    openai_request_to_anthropic,
)

Api = Literal["openai", "anthropic"]


def deadline(d: Deferred[None], timer: Any) -> Deferred[None]:
    """
    Cancel C{timer} (a C{DelayedCall} that ends the wait the hard way) once
    C{d} fired.

    @return: C{d}.
    """

    def stop_timer(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    return d.addBoth(stop_timer)


class UnknownModel(LookupError):
    """
    No configured model has the requested name.
    """


def check_request(api: Api, body: Any) -> None:
    """
    The checks every completion request passes before it goes anywhere.

    @raise TranslationError: Naming the first bad field.
    """
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("model is required and must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise TranslationError("stream must be a boolean", "stream")
    messages = body.get("messages")
    if not isinstance(messages, list) or (api == "anthropic" and not messages):
        raise TranslationError("messages must be a non-empty list", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise TranslationError(
                f"messages[{i}] must be an object with a string role",
                f"messages[{i}]",
            )
    if api == "openai" and body.get("stream_options") is not None:
        if not isinstance(body["stream_options"], dict):
            raise TranslationError("stream_options must be an object", "stream_options")
    if api == "anthropic" and "max_tokens" in body:
        value = body["max_tokens"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TranslationError(
                "max_tokens must be a positive integer", "max_tokens"
            )


class Gateway:
    """
    Everything the routes share: the configuration, one backend per
    deployment, the HTTP clients and the metrics.
    """

    def __init__(
        self, config: Config, clock: IReactorTime, http_client: Any = None
    ) -> None:
        """
        @param http_client: The client for upstreams without a C{ca_file};
            by default one with a persistent pool and the platform's trust.
        """
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.active: set[Any] = set()
        self._drained: list[Deferred[None]] = []
        self._clients: dict[str | None, Any] = {}
        if http_client is not None:
            self._clients[None] = http_client
        self.backends: dict[str, list[Backend]] = {}
        for model in config.models:
            client = None
            if model.provider != "mock":
                client = self._client(model.ca_file)
            self.backends.setdefault(model.name, []).append(
                Backend(model, config.server, clock, client)
            )

    def _client(self, ca_file: str | None) -> Any:
        client = self._clients.get(ca_file)
        if client is None:
            client = make_http_client(self.clock, ca_file=ca_file)
            self._clients[ca_file] = client
        return client

    def close(self) -> Any:
        """
        Close the pooled upstream connections.

        @return: A L{Deferred} that fires when they are closed.
        """
        from twisted.internet.defer import gatherResults

        return gatherResults(
            [c._agent._pool.closeCachedConnections() for c in self._clients.values()]
        )

    def track(self, request: Any) -> None:
        """
        Note a request in flight; it must have a C{shutdown()} method and call
        L{untrack} when it ends.
        """
        self.active.add(request)

    def untrack(self, request: Any) -> None:
        """
        Note that a request ended.
        """
        self.active.discard(request)
        if not self.active and self._drained:
            waiters, self._drained = self._drained, []
            for d in waiters:
                d.callback(None)

    def drain(self, grace: float) -> Deferred[None]:
        """
        Let the requests in flight finish for up to C{grace} seconds, then end
        the rest (streams get an error event).

        @return: A L{Deferred} that fires when none is left.
        """
        if not self.active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return deadline(d, self.clock.callLater(grace, self._end_all))

    def _end_all(self) -> None:
        for request in list(self.active):
            request.shutdown()
        # Whatever did not end by itself is dropped from the books.
        for request in list(self.active):
            self.untrack(request)

    def model_names(self) -> list[str]:
        """
        The names clients may ask for.
        """
        return list(self.backends)

    def pick(self, name: str) -> Backend:
        """
        The deployment of C{name} to use now: the one with the fewest
        requests in flight.

        @raise UnknownModel: If no model has that name.
        """
        group = self.backends.get(name)
        if not group:
            raise UnknownModel(name)
        return min(group, key=lambda b: b.in_flight)

    def open(
        self,
        api: Api,
        body: dict[str, Any],
        on_event: OnEvent,
        on_sse: OnSSE | None = None,
    ) -> tuple[Backend, Call]:
        """
        Start serving a checked request of API C{api}.

        @param on_sse: For pass-through: called with the raw SSE events when
            the upstream speaks C{api} too (and only then).
        @return: The backend chosen and the call in progress.
        @raise UnknownModel: If the model is not configured.
        @raise TranslationError: If the request cannot be translated.
        """
        backend = self.pick(body["model"])
        if backend.format == "mock" or backend.format == api:
            upstream_body = body
        elif api == "openai":
            upstream_body = openai_request_to_anthropic(
                body,
                upstream_model=backend.model,
                default_max_tokens=backend.config.max_tokens,
            )
        else:
            upstream_body = anthropic_request_to_openai(
                body,
                upstream_model=backend.model,
                max_tokens_field=backend.max_tokens_field,
            )
        passthrough = on_sse if backend.format == api else None
        return backend, backend.open(upstream_body, on_event, passthrough)
