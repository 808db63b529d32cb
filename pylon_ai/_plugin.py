"""
L{AiProxyPlugin}: completions from Anthropic, OpenAI or any OpenAI-compatible
endpoint, as Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from pylon_ai._http import shared_http_client
from pylon_ai._json import dumps
from pylon_ai._messages import AiMessage
from pylon_ai._provider import (
    ANTHROPIC_BASE_URL,
    OPENAI_BASE_URL,
    AnthropicProvider,
    CustomProvider,
    OpenAIProvider,
    Provider,
)
from pylon_ai._sse import DEFAULT_MAX_EVENT_LENGTH, DEFAULT_MAX_LINE_LENGTH
from pylon_ai._stream_call import StreamCall, StreamDecoder
from pylon_ai.formats import chat as chat_format
from pylon_ai.formats import messages as messages_format
from pylon_ai.formats.events import ModelEvent, TextDelta

DEFAULT_MAX_TOKENS = 4096
DEFAULT_TIMEOUT = 120.0


class AiProxyPlugin:
    """
    Streams completions from one configured provider.

    Build one with L{anthropic}, L{openai}, L{custom} or
    L{custom_with_model}.  Every call returns a cancellable L{Deferred};
    failures are L{ProviderError}s.  What a provider says in an error (its
    message, body or error event) may repeat the request's headers: the
    plugin's own key, and anything else that looks like a credential, is
    scrubbed from every L{ProviderError} before the caller sees it, so
    errors are safe to log.  The plugin never starts or stops the reactor.

    @cvar name: C{"ai-proxy"}.
    """

    name = "ai-proxy"

    def __init__(
        self,
        provider: Provider,
        *,
        http_client: Any = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout: float = DEFAULT_TIMEOUT,
        reactor: Any = None,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_event_length: int = DEFAULT_MAX_EVENT_LENGTH,
    ) -> None:
        """
        @param provider: Where requests go.
        @param http_client: A C{treq.HTTPClient}, so the caller controls the
            agent, pool and TLS trust; by default one client with a
            persistent pool is shared, trusting the platform's store.
        @param max_tokens: The most tokens a reply may have; sent as
            C{max_tokens} (Anthropic, custom) or C{max_completion_tokens}
            (OpenAI).
        @param timeout: Seconds without progress (connecting, waiting for
            headers, or between two reads) before a call fails.  It resets on
            every read; it is not a deadline.
        @param reactor: The reactor (for timers and the default client); the
            global one if L{None}.
        @param max_line_length: The longest line accepted in a stream.
        @param max_event_length: The largest event accepted in a stream, all
            its C{data} lines together; past it the call fails with a
            L{ProviderStreamError}.
        """
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_line_length < 1 or max_event_length < 1:
            raise ValueError("max_line_length and max_event_length must be positive")
        self._provider = provider
        self._http_client = http_client
        self._reactor = reactor
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_line_length = max_line_length
        self.max_event_length = max_event_length

    @classmethod
    def anthropic(
        cls, api_key: str, model: str, *, base_url: str | None = None, **options: Any
    ) -> AiProxyPlugin:
        """
        A plugin for Anthropic's Messages API.

        @param base_url: C{scheme://host[:port]} without C{/v1}; Anthropic's
            own by default.
        @param options: See L{AiProxyPlugin.__init__}.
        """
        provider = AnthropicProvider(api_key, model, base_url or ANTHROPIC_BASE_URL)
        return cls(provider, **options)

    @classmethod
    def openai(
        cls, api_key: str, model: str, *, base_url: str | None = None, **options: Any
    ) -> AiProxyPlugin:
        """
        A plugin for OpenAI's Chat Completions API.

        @param base_url: C{scheme://host[:port]} without C{/v1}; OpenAI's own
            by default.
        @param options: See L{AiProxyPlugin.__init__}.
        """
        provider = OpenAIProvider(api_key, model, base_url or OPENAI_BASE_URL)
        return cls(provider, **options)

    @classmethod
    def custom(cls, base_url: str, api_key: str, **options: Any) -> AiProxyPlugin:
        """
        A plugin for an OpenAI-compatible endpoint that names no model.

        @param base_url: The endpoint: a URL with a path is used as it is, a
            bare C{scheme://host[:port]} gets C{/v1/chat/completions}.
        @param api_key: Sent as a bearer token unless empty.
        @param options: See L{AiProxyPlugin.__init__}.
        """
        return cls(CustomProvider(base_url, api_key), **options)

    @classmethod
    def custom_with_model(
        cls, base_url: str, api_key: str, model: str, **options: Any
    ) -> AiProxyPlugin:
        """
        Like L{custom}, naming C{model} in requests (an empty C{model} names
        none).
        """
        return cls(CustomProvider(base_url, api_key, model), **options)

    @property
    def provider(self) -> Provider:
        """
        The configured provider, an immutable value.
        """
        return self._provider

    def __repr__(self) -> str:
        return f"AiProxyPlugin({self._provider!r})"

    def _clock(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            return reactor
        return self._reactor

    def _request(
        self, messages: Sequence[AiMessage]
    ) -> tuple[str, dict[str, str], bytes, StreamDecoder]:
        p = self._provider
        decoder: StreamDecoder
        if isinstance(p, AnthropicProvider):
            headers = messages_format.request_headers(p.api_key)
            body = messages_format.request_body(messages, p.model, self.max_tokens)
            decoder = messages_format.AnthropicStreamDecoder()
        else:
            headers = chat_format.request_headers(p.api_key)
            body = chat_format.request_body(
                messages,
                p.model,
                self.max_tokens,
                max_tokens_field=(
                    "max_completion_tokens"
                    if isinstance(p, OpenAIProvider)
                    else "max_tokens"
                ),
            )
            decoder = chat_format.OpenAIStreamDecoder()
        return p.url, headers, dumps(body), decoder

    def stream_events(
        self,
        messages: Sequence[AiMessage],
        on_event: Callable[[ModelEvent], object],
    ) -> Deferred[None]:
        """
        Stream a completion as typed events: text, tool-call fragments,
        usage and the stop reason.

        @param messages: The conversation.
        @param on_event: Called with each model event, in order, as the bytes
            arrive.  If it raises, the request is aborted and the L{Deferred}
            fails with that exception.
        @return: A L{Deferred} firing with L{None} once the stream finished.
        """
        url, headers, body, decoder = self._request(list(messages))
        clock: IReactorTime = self._clock()
        client = self._http_client or shared_http_client(clock)
        call = StreamCall(
            clock,
            decoder,
            on_event,
            label=StreamCall.label_for(url),
            timeout=self.timeout,
            max_line_length=self.max_line_length,
            max_event_length=self.max_event_length,
        )
        return call.start(client, url, headers, body)

    def stream_completion(
        self,
        messages: Sequence[AiMessage],
        on_chunk: Callable[[str], object],
    ) -> Deferred[str]:
        """
        Stream a completion, calling C{on_chunk} with each piece of text.

        @param messages: The conversation; for Anthropic, every C{system}
            message goes into the top-level C{system} field.
        @param on_chunk: Called once per non-empty text delta, in order, as
            bytes arrive.  If it raises, the request is aborted and the
            L{Deferred} fails with that exception.
        @return: A L{Deferred} firing with the full text, or failing with a
            L{ProviderError}; cancelling it closes the upstream connection.
        """
        parts: list[str] = []

        def on_event(event: ModelEvent) -> None:
            if type(event) is TextDelta:
                parts.append(event.text)
                on_chunk(event.text)

        d = self.stream_events(messages, on_event)
        return d.addCallback(lambda _: "".join(parts))

    def completion(self, messages: Sequence[AiMessage]) -> Deferred[str]:
        """
        The full text of a completion (streamed on the wire all the same).

        @return: A L{Deferred} firing with the text.
        """
        return self.stream_completion(messages, _ignore)


def _ignore(text: str) -> None:
    pass
