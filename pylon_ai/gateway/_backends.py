"""
Backends: the runtime side of each configured deployment.

A backend takes a request body already in its own wire format, opens the
upstream stream and reports model events (and, for pass-through, the raw SSE
events).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from pylon_ai import _anthropic, _openai
from pylon_ai._events import ModelEvent
from pylon_ai._json import dumps
from pylon_ai._provider import (
    ANTHROPIC_BASE_URL,
    OPENAI_BASE_URL,
    AnthropicProvider,
    CustomProvider,
    OpenAIProvider,
)
from pylon_ai._sse import Event
from pylon_ai._upstream import StreamCall
from pylon_ai.gateway._config import ModelConfig, ServerConfig
from pylon_ai.gateway._mock import MOCK_MODEL, MockCall
from pylon_ai.gateway._unary import UnaryCall

OnEvent = Callable[[ModelEvent], object]
OnSSE = Callable[[Event, list[ModelEvent]], object]


class Call(Protocol):
    """
    An upstream reply in progress.
    """

    deferred: Deferred[None]

    @property
    def producer(self) -> Any: ...


class Backend:
    """
    One deployment of a model name.

    @ivar format: The wire format it speaks: C{"anthropic"}, C{"openai"}, or
        C{"mock"} (which reads a body of either format).
    @ivar in_flight: Requests open on it now.
    """

    def __init__(
        self,
        config: ModelConfig,
        server: ServerConfig,
        clock: IReactorTime,
        http_client: Any,
    ) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self._client = http_client
        self._timeout = config.timeout_s or server.upstream_timeout_s
        self._max_line = server.max_line_bytes
        self._max_event = server.max_event_bytes
        self.in_flight = 0
        #: Consecutive failures, and until when the deployment rests.
        self.failures = 0
        self.cooldown_until = 0.0
        self.provider = config.provider
        self.url = ""
        #: Where this deployment counts tokens (Anthropic format) and makes
        #: embeddings (OpenAI format); L{None} where it cannot.
        self.count_tokens_url: str | None = None
        self.embeddings_url: str | None = None
        # Only a custom model may have none configured; Ollama and vLLM
        # refuse a request without one, so send the name clients ask for
        # (this deployment's, not the request's, which may name a model this
        # one stands in for as a fallback).
        self.model: str = config.model or config.name
        if config.provider == "anthropic":
            self.format = "anthropic"
            anthropic = AnthropicProvider(
                config.api_key,
                config.model or "",
                config.base_url or ANTHROPIC_BASE_URL,
            )
            self.url = anthropic.url
            self.count_tokens_url = anthropic.count_tokens_url
        elif config.provider == "openai":
            self.format = "openai"
            openai = OpenAIProvider(
                config.api_key, config.model or "", config.base_url or OPENAI_BASE_URL
            )
            self.url = openai.url
            self.embeddings_url = openai.embeddings_url
        elif config.provider == "custom":
            self.format = "openai"
            custom = CustomProvider(config.base_url or "", config.api_key, config.model)
            self.url = custom.url
            self.embeddings_url = custom.embeddings_url
        else:
            self.format = "mock"
            self.model = MOCK_MODEL
        self.label = StreamCall.label_for(self.url) if self.url else "mock"
        # Built once: every request of this deployment sends the same ones.
        self._url = self.url.encode("ascii")
        headers = (
            _anthropic.request_headers(config.api_key)
            if self.format == "anthropic"
            else _openai.request_headers(config.api_key)
        )
        self._headers = Headers({k: [v] for k, v in headers.items()})

    def failed(self, now: float) -> None:
        """
        An attempt on this deployment failed in a way that counts against
        it; enough in a row put it into cooldown.
        """
        self.failures += 1
        if self.failures >= self.config.cooldown_failures:
            self.cooldown_until = now + self.config.cooldown_s
            self.failures = 0

    def succeeded(self) -> None:
        """
        An attempt on this deployment succeeded.
        """
        self.failures = 0
        self.cooldown_until = 0.0

    @property
    def max_tokens_field(self) -> str:
        """
        How this upstream names the reply length limit.
        """
        return "max_completion_tokens" if self.provider == "openai" else "max_tokens"

    def open(
        self,
        body: dict[str, Any],
        on_event: OnEvent,
        on_sse: OnSSE | None,
        on_start: Callable[[], object] | None = None,
        on_flush: Callable[[], object] | None = None,
    ) -> Call:
        """
        Start a streaming request.

        @param body: The request, in this backend's format (the mock takes
            either); C{model} and C{stream} are set here.
        @param on_event: Called with each model event.
        @param on_sse: Called with each raw SSE event, for pass-through.
        @param on_start: Called once before the first event is delivered.
        @param on_flush: Called after each batch of events was delivered.
        """
        self.in_flight += 1
        call: StreamCall | MockCall
        if self.format == "mock":
            if on_start is not None:
                on_start()
            call = MockCall(self._clock, body, on_event, on_flush=on_flush)
            call.start()
        else:
            body = dict(body)
            body["stream"] = True
            if self.format == "anthropic":
                body["model"] = self.model
                body.setdefault("max_tokens", self.config.max_tokens)
                # Pass-through forwards the events as they come: the decoder
                # only keeps the books.
                light = on_sse is not None
                decoder: Any = _anthropic.AnthropicStreamDecoder(light)
            else:
                body["model"] = self.model
                body["stream_options"] = {"include_usage": True}
                decoder = _openai.OpenAIStreamDecoder(on_sse is not None)
            call = StreamCall(
                self._clock,
                decoder,
                on_event,
                label=self.label,
                timeout=self._timeout,
                max_line_length=self._max_line,
                max_event_length=self._max_event,
                on_sse=on_sse,
                first_byte_timeout=self.config.first_byte_timeout_s,
                request_timeout=self.config.request_timeout_s,
                on_start=on_start,
                on_flush=on_flush,
            )
            call.start(self._client, self._url, self._headers, dumps(body))
        call.deferred.addBoth(self._finished)
        return call

    def post(
        self,
        url: str,
        body: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
        max_reply: int = 8 * 1024 * 1024,
    ) -> UnaryCall:
        """
        Start a request whose reply is one JSON body (token counting,
        embeddings), with this deployment's key and timeouts; one attempt.

        @param url: One of this deployment's URLs.
        @param body: The request, in this backend's format, ready to send.
        @param extra_headers: Client headers this upstream may see (such as
            C{anthropic-beta}).
        @param max_reply: The largest reply read.
        @return: The call; its C{deferred} fires with the reply's bytes.
        """
        headers = (
            _anthropic.request_headers(self.config.api_key)
            if self.format == "anthropic"
            else _openai.request_headers(self.config.api_key)
        )
        headers["accept"] = "application/json"
        headers.update(extra_headers or {})
        call = UnaryCall(
            self._clock,
            label=StreamCall.label_for(url),
            timeout=self._timeout,
            first_byte_timeout=self.config.first_byte_timeout_s,
            request_timeout=self.config.request_timeout_s,
            max_body=max_reply,
        )
        self.in_flight += 1
        call.start(self._client, url, headers, dumps(body))
        call.deferred.addBoth(self._finished)
        return call

    def _finished(self, result: object) -> object:
        self.in_flight -= 1
        return result
