"""
Backends: the runtime side of each configured deployment.

A backend takes a request body already in its own wire format, opens the
upstream stream and reports model events (and, for pass-through, the raw SSE
events), or, for a same-format non-streaming request, fetches the upstream's
whole JSON body and hands it on as it came.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from pylon_ai._body_call import BodyCall
from pylon_ai._json import dumps
from pylon_ai._provider import (
    ANTHROPIC_BASE_URL,
    OPENAI_BASE_URL,
    AnthropicProvider,
    CustomProvider,
    OpenAIProvider,
)
from pylon_ai._stream_call import StreamCall
from pylon_ai.formats import chat as chat_format
from pylon_ai.formats import messages as messages_format
from pylon_ai.formats import responses as responses_format
from pylon_ai.formats.events import ModelEvent
from pylon_ai.gateway._config_values import ModelConfig, ServerConfig
from pylon_ai.gateway._forwarded import Forwarded
from pylon_ai.gateway._mock import MOCK_MODEL, MockCall
from pylon_ai.gateway._reply_facts import reply_facts
from pylon_ai.gateway._state import SharedView

__all__ = ["Backend", "Call", "Forwarded", "OnBody", "OnEvent", "OnSSE"]

OnEvent = Callable[[ModelEvent], object]
#: Pass-through: the upstream's complete events as bytes, and their count.
OnSSE = Callable[[bytes, int], object]
OnBody = Callable[[bytes], object]


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
    @ivar responses: Whether its upstream also speaks the OpenAI Responses
        API (at L{responses_url}): C{/v1/responses} requests pass through.
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
        self._max_reply = server.max_reply_bytes
        self.in_flight = 0
        #: Consecutive failures, and until when the deployment rests.
        self.failures = 0
        self.cooldown_until = 0.0
        #: What other instances know of it, when the state is shared.
        self.shared: SharedView | None = None
        self.provider = config.provider
        self.url = ""
        #: Where this deployment counts tokens (Anthropic format) and makes
        #: embeddings (OpenAI format); L{None} where it cannot.
        self.count_tokens_url: str | None = None
        self.embeddings_url: str | None = None
        self.responses_url: str | None = None
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
            self.responses_url = openai.responses_url
        elif config.provider == "custom":
            self.format = "openai"
            custom = CustomProvider(config.base_url or "", config.api_key, config.model)
            self.url = custom.url
            self.embeddings_url = custom.embeddings_url
            self.responses_url = custom.responses_url
        else:
            self.format = "mock"
            self.model = MOCK_MODEL
        self.responses = config.responses and self.responses_url is not None
        self.label = StreamCall.label_for(self.url) if self.url else "mock"
        # Built once: every request of this deployment sends the same ones.
        self._url = self.url.encode("ascii")
        self._responses_url = (self.responses_url or "").encode("ascii")
        headers = (
            messages_format.request_headers(config.api_key)
            if self.format == "anthropic"
            else chat_format.request_headers(config.api_key)
        )
        self._headers = Headers({k: [v] for k, v in headers.items()})

    def speaks(self, api: str) -> bool:
        """
        Whether a request of C{api} (C{"openai"}, C{"anthropic"},
        C{"responses"}) goes to this deployment as the client wrote it.
        """
        if api == "responses":
            return self.responses
        return self.format == api

    def failed(self, now: float) -> None:
        """
        An attempt on this deployment failed in a way that counts against
        it; enough in a row put it into cooldown.
        """
        self.failures += 1
        if self.failures >= self.config.cooldown_failures:
            self.cooldown_until = now + self.config.cooldown_s
            self.failures = 0
        if self.shared is not None:
            self.shared.failed(now)

    def succeeded(self) -> None:
        """
        An attempt on this deployment succeeded.
        """
        self.failures = 0
        self.cooldown_until = 0.0
        if self.shared is not None:
            self.shared.succeeded()

    def resting_until(self) -> float:
        """
        When its cooldown ends, here or (shared state) on any instance.
        """
        if self.shared is None:
            return self.cooldown_until
        return max(self.cooldown_until, self.shared.cooldown_until)

    def busy(self) -> int:
        """
        Its requests in flight, here and (shared state) on other instances.
        """
        if self.shared is None:
            return self.in_flight
        return self.in_flight + self.shared.others_in_flight

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
        forwarded: Forwarded | None = None,
        api: str | None = None,
    ) -> Call:
        """
        Start a streaming request.

        @param body: The request, in this backend's format (the mock takes
            either); C{model} and C{stream} are set here.
        @param on_event: Called with each model event.
        @param on_sse: For pass-through: called with the upstream's
            complete events as bytes, as they came, and their count.
        @param on_start: Called once before the first event is delivered.
        @param on_flush: Called after each batch of events was delivered.
        @param forwarded: The client's beta header and query string, for a
            same-format request (an Anthropic upstream gets them).
        @param api: The body's format when it is not L{format}: only
            C{"responses"}, for a deployment that L{speaks} it.
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
            # Pass-through forwards the events as they come: the decoder
            # only keeps the books.
            light = on_sse is not None
            drop_usage = False
            if api == "responses":
                body["model"] = self.model
                decoder: Any = responses_format.ResponsesStreamDecoder(light)
            elif self.format == "anthropic":
                body["model"] = self.model
                body.setdefault("max_tokens", self.config.max_tokens)
                decoder = messages_format.AnthropicStreamDecoder(light)
            else:
                body["model"] = self.model
                options = body.get("stream_options")
                # The usage chunk is asked for here; a client that did not
                # ask must not get it (cut out of the passed-through bytes).
                drop_usage = not (
                    isinstance(options, dict) and options.get("include_usage") is True
                )
                body["stream_options"] = {"include_usage": True}
                decoder = chat_format.OpenAIStreamDecoder(light)
            call = StreamCall(
                self._clock,
                decoder,
                on_event,
                label=self.label,
                timeout=self._timeout,
                max_line_length=self._max_line,
                max_event_length=self._max_event,
                on_bytes=on_sse,
                drop_usage=drop_usage,
                first_byte_timeout=self.config.first_byte_timeout_s,
                request_timeout=self.config.request_timeout_s,
                on_start=on_start,
                on_flush=on_flush,
            )
            url, headers = self._target(forwarded, api)
            call.start(self._client, url, headers, dumps(body))
        call.deferred.addBoth(self._finished)
        return call

    def open_whole(
        self,
        body: dict[str, Any],
        on_event: OnEvent,
        on_body: OnBody,
        on_start: Callable[[], object] | None = None,
        forwarded: Forwarded | None = None,
        api: str | None = None,
    ) -> Call:
        """
        Start a non-streaming request whose reply goes to the client as it
        came (the client speaks this backend's format).

        The reply is read whole, bounded by C{max_reply_bytes}; what the
        gateway needs of it (the message id and model, the usage) goes to
        C{on_event} as model events before C{on_body} gets the bytes.

        @param body: The request, in this backend's format; C{model} and
            C{stream} are set here.
        @param on_event: Called with the L{MessageStart} and L{Usage} the
            body holds.
        @param on_body: Called with the body's bytes.
        @param on_start: Called once the whole body arrived, before
            C{on_event}: from then on the outcome is final.
        @param forwarded: The client's beta header and query string (an
            Anthropic upstream gets them).
        @param api: The body's format when it is not L{format}: only
            C{"responses"}, for a deployment that L{speaks} it.
        """
        body = dict(body)
        body["stream"] = False
        body["model"] = self.model
        wire = api or self.format
        if wire == "anthropic":
            body.setdefault("max_tokens", self.config.max_tokens)
        elif wire == "openai":
            # OpenAI refuses stream options without a stream.
            body.pop("stream_options", None)

        def whole(raw: bytes, obj: dict[str, Any]) -> None:
            for event in reply_facts(wire, obj):
                on_event(event)
            on_body(raw)

        call = BodyCall(
            self._clock,
            whole,
            label=self.label,
            timeout=self._timeout,
            max_body_length=self._max_reply,
            request_timeout=self.config.request_timeout_s,
            on_start=on_start,
        )
        self.in_flight += 1
        url, headers = self._target(forwarded, api)
        call.start(self._client, url, headers, dumps(body))
        call.deferred.addBoth(self._finished)
        return call

    def _target(
        self, forwarded: Forwarded | None, api: str | None = None
    ) -> tuple[bytes, Headers]:
        # The URL and headers of one request: an Anthropic upstream also
        # gets what the client forwards.
        if api == "responses":
            return self._responses_url, self._headers
        return self._forwarding(self._url, forwarded)

    def _forwarding(
        self, url: bytes, forwarded: Forwarded | None
    ) -> tuple[bytes, Headers]:
        # An Anthropic upstream also gets what the client forwards.
        if forwarded is None or self.format != "anthropic":
            return url, self._headers
        if forwarded.query:
            url += (b"&" if b"?" in url else b"?") + forwarded.query
        headers = self._headers
        if forwarded.beta is not None:
            headers = headers.copy()
            headers.setRawHeaders(b"anthropic-beta", [forwarded.beta])
        return url, headers

    def post(
        self,
        url: str,
        body: dict[str, Any],
        on_body: Callable[[bytes, dict[str, Any]], object],
        forwarded: Forwarded | None = None,
        max_reply: int = 8 * 1024 * 1024,
    ) -> BodyCall:
        """
        Start a request whose reply is one JSON body (token counting,
        embeddings), with this deployment's key and timeouts; one attempt.

        @param url: One of this deployment's URLs.
        @param body: The request, in this backend's format, ready to send.
        @param on_body: Called with the reply's bytes and the object they
            hold.
        @param forwarded: What of the client's request an Anthropic
            upstream gets.
        @param max_reply: The largest reply read.
        @return: The call.
        """
        call = BodyCall(
            self._clock,
            on_body,
            label=StreamCall.label_for(url),
            timeout=self._timeout,
            max_body_length=max_reply,
            request_timeout=self.config.request_timeout_s,
        )
        self.in_flight += 1
        target, headers = self._forwarding(url.encode("ascii"), forwarded)
        call.start(self._client, target, headers, dumps(body))
        call.deferred.addBoth(self._finished)
        return call

    def _finished(self, result: object) -> object:
        self.in_flight -= 1
        return result
