"""
The gateway: configured models, their backends, and preparing a client
request for the upstream that will serve it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from pylon_ai._http import make_http_client
from pylon_ai.formats.errors import TranslationError
from pylon_ai.gateway._apierrors import gateway_scrubber
from pylon_ai.gateway._attempts import Attempts
from pylon_ai.gateway._backends import Backend, Forwarded, OnBody, OnEvent, OnSSE
from pylon_ai.gateway._config import Config
from pylon_ai.gateway._limits import Limits
from pylon_ai.gateway._metrics import Metrics

Api = Literal["openai", "anthropic", "responses"]


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


#: The highest C{temperature} each API takes.
_MAX_TEMPERATURE = {"openai": 2, "anthropic": 1}


def _positive_int(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < 1
    ):
        raise invalid(key, "must be a positive integer")


def _number_in(body: dict[str, Any], key: str, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    # NaN fails the comparison, so "in range" also means finite.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= high
    ):
        raise invalid(key, f"must be a number between 0 and {high}")


def _strings(body: dict[str, Any], key: str, single: bool) -> None:
    value = body.get(key)
    if value is None or (single and isinstance(value, str)):
        return
    if not isinstance(value, list):
        kind = "a string or an array of strings" if single else "an array of strings"
        raise invalid(key, f"must be {kind}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise invalid(f"{key}[{i}]", "must be a string")


def invalid(param: str, text: str) -> TranslationError:
    """
    The error for a bad field: "field: problem", as Anthropic words it (its
    error shape has no C{param}); C{param} for OpenAI's.
    """
    return TranslationError(f"{param}: {text}", param)


def check_model(body: Any) -> None:
    """
    C{body} is a JSON object with a non-empty C{model} string.

    @raise TranslationError: Naming the bad field.
    """
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise invalid("model", "Field required")
    if not isinstance(model, str) or not model:
        raise invalid("model", "must be a non-empty string")


def check_messages(body: dict[str, Any]) -> None:
    """
    C{body} has a non-empty list of C{messages}, each an object with a
    C{role} string.

    @raise TranslationError: Naming the first bad field.
    """
    messages = body.get("messages")
    if messages is None:
        raise invalid("messages", "Field required")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "must be a non-empty array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{i}]", "must be an object")
        if not isinstance(message.get("role"), str):
            raise invalid(f"messages[{i}].role", "must be a string")


def check_request(api: Api, body: Any) -> None:
    """
    The checks every completion request passes before it goes anywhere, on
    both HTTP routes and the WebSocket: the fields the gateway relies on and
    those both formats share.  Everything else goes through unlooked-at (a
    same-format upstream judges it; a translation refuses what it cannot
    carry).

    @param api: The API the body is written in.
    @param body: The decoded request body; it is not changed.
    @raise TranslationError: Naming the first bad field, as C{param} and at
        the start of the message.
    """
    check_model(body)
    check_messages(body)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "must be a boolean")
    if api == "anthropic" and body.get("max_tokens") is None:
        raise invalid("max_tokens", "Field required")
    _positive_int(body, "max_tokens")
    _number_in(body, "temperature", _MAX_TEMPERATURE[api])
    _number_in(body, "top_p", 1)
    if api == "openai":
        _positive_int(body, "max_completion_tokens")
        _positive_int(body, "n")
        _strings(body, "stop", single=True)
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise invalid("stream_options", "must be an object")
    else:
        _strings(body, "stop_sequences", single=False)


def check_responses_request(body: Any) -> None:
    """
    The checks every C{/v1/responses} request passes before it goes
    anywhere: the fields the gateway relies on.  The rest is judged by an
    upstream that speaks Responses, or by the translation for the others.

    @param body: The decoded request body; it is not changed.
    @raise TranslationError: Naming the first bad field.
    """
    check_model(body)
    value = body.get("input")
    if value is not None and not isinstance(value, str | list):
        raise invalid("input", "must be a string or an array of items")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "must be a boolean")
    _positive_int(body, "max_output_tokens")
    _number_in(body, "temperature", 2)
    _number_in(body, "top_p", 1)


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
        self.limits = Limits(config.server, clock)
        self.active: set[Any] = set()
        self._drained: list[Deferred[None]] = []
        self._clients: dict[tuple[str | None, float], Any] = {}
        self._given_client = http_client
        self.backends: dict[str, list[Backend]] = {}
        for model in config.models:
            client = None
            if model.provider != "mock":
                client = self._client(model.ca_file, model.connect_timeout_s)
            self.backends.setdefault(model.name, []).append(
                Backend(model, config.server, clock, client)
            )
        # With Redis, cooldowns and in-flight counts are every instance's.
        self.limits.share(self.backends)
        #: Scrubs what upstreams say (keys, addresses) before a client or a
        #: log sees it.
        self.scrubber = gateway_scrubber(
            config, [b.url for group in self.backends.values() for b in group]
        )

    def _client(self, ca_file: str | None, connect_timeout: float) -> Any:
        if self._given_client is not None and ca_file is None:
            return self._given_client
        key = (ca_file, connect_timeout)
        client = self._clients.get(key)
        if client is None:
            client = make_http_client(
                self.clock, ca_file=ca_file, connect_timeout=connect_timeout
            )
            self._clients[key] = client
        return client

    def close(self) -> Any:
        """
        Close the pooled upstream connections, stop the limits' timers and
        close their connection to Redis, if any.

        @return: A L{Deferred} that fires when they are closed.
        """
        from twisted.internet.defer import gatherResults

        closing = [
            c._agent._pool.closeCachedConnections() for c in self._clients.values()
        ]
        stopped = self.limits.stop()  # with Redis, its connection closing
        if stopped is not None:
            closing.append(stopped)
        return gatherResults(closing)

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

    def fallbacks(self, name: str) -> list[str]:
        """
        The model names to try, in order, when every deployment of C{name}
        failed.
        """
        group = self.backends.get(name)
        return list(group[0].config.fallbacks) if group else []

    @overload
    def pick(self, name: str, tried: set[int]) -> Backend: ...

    @overload
    def pick(self, name: str, tried: set[int], fresh_only: bool) -> Backend | None: ...

    def pick(
        self, name: str, tried: set[int], fresh_only: bool = False
    ) -> Backend | None:
        """
        The deployment of C{name} for the next attempt: one not yet tried
        for this request if there is one, not in cooldown if there is one,
        and among those the one with the fewest requests in flight.

        @param tried: The C{id}s of the deployments already tried.
        @param fresh_only: Return L{None} rather than a tried deployment.
        @raise UnknownModel: If no model has that name.
        """
        group = self.backends.get(name)
        if not group:
            raise UnknownModel(name)
        fresh = [b for b in group if id(b) not in tried]
        if fresh_only and not fresh:
            return None
        return self.least_busy(fresh or group)

    def least_busy(self, pool: Sequence[Backend]) -> Backend:
        """
        Of C{pool} (not empty), a deployment not in cooldown if there is
        one, and among those the one with the fewest requests in flight.
        """
        now = self.clock.seconds()
        resting = [b for b in pool if b.resting_until() <= now] or pool
        return min(resting, key=lambda b: b.busy())

    def open(
        self,
        api: Api,
        body: dict[str, Any],
        on_event: OnEvent,
        on_sse: OnSSE | None = None,
        on_start: Callable[[Backend], object] | None = None,
        on_flush: Callable[[], object] | None = None,
        *,
        on_body: OnBody | None = None,
        forwarded: Forwarded | None = None,
    ) -> Attempts:
        """
        Start serving a checked request of API C{api}: the first attempt, and
        more (other deployments, fallbacks) while nothing reached the client.

        @param on_sse: For pass-through: called with the upstream's own
            bytes (one read's complete events) and how many events they
            hold, when the upstream speaks C{api} too (and only then).
        @param on_start: Called with the deployment whose reply is about to
            be delivered, before its first event.
        @param on_flush: Called after each batch of events (one upstream
            read) was delivered.
        @param on_body: For a non-streaming request: called with the
            upstream's JSON body, as it came, when the upstream speaks
            C{api} too (the client gets those bytes); C{on_event} still
            gets its L{MessageStart} and L{Usage}.  Upstreams of another
            format stream, through C{on_event}, as always.
        @param forwarded: The client's C{anthropic-beta} and query string,
            for an upstream that speaks C{api} too (Anthropic's only).
        @raise UnknownModel: If the model is not configured.
        @raise TranslationError: If the request cannot be translated.
        """
        return Attempts(
            self,
            api,
            body,
            on_event,
            on_sse,
            on_start,
            on_flush,
            on_body=on_body,
            forwarded=forwarded,
        ).start()
