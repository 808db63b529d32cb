"""
Provider settings: immutable values that say where a plugin sends requests.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from attrs import field, frozen

from pylon_ai.formats.chat import CHAT_PATH
from pylon_ai.formats.messages import MESSAGES_PATH

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
OPENAI_BASE_URL = "https://api.openai.com"
#: Anthropic's token counting, beside its Messages path.
COUNT_TOKENS_PATH = MESSAGES_PATH + "/count_tokens"
#: OpenAI's embeddings, beside its Chat Completions path.
EMBEDDINGS_PATH = "/v1/embeddings"
#: OpenAI's Responses API, beside its Chat Completions path.
RESPONSES_PATH = "/v1/responses"
_CHAT_SUFFIX = "/chat/completions"


def _check_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL must be http:// or https:// with a host: {url!r}")
    return url


def _none_if_empty(model: str | None) -> str | None:
    return model or None


def _mask(key: str) -> str:
    return "''" if not key else "'***'"


@frozen(repr=False)
class AnthropicProvider:
    """
    Anthropic's Messages API.

    @ivar api_key: The key sent as C{x-api-key}; never shown in C{repr}.
    @ivar model: The model, e.g. C{"claude-sonnet-4-20250514"}.
    @ivar base_url: C{scheme://host[:port]} without C{/v1}.
    """

    kind: ClassVar[str] = "anthropic"
    api_key: str
    model: str
    base_url: str = field(default=ANTHROPIC_BASE_URL, converter=_check_base)

    @property
    def url(self) -> str:
        """
        The full URL requests go to.
        """
        return self.base_url.rstrip("/") + MESSAGES_PATH

    @property
    def count_tokens_url(self) -> str:
        """
        The URL of the token counting endpoint.
        """
        return self.base_url.rstrip("/") + COUNT_TOKENS_PATH

    def __repr__(self) -> str:
        return (
            f"AnthropicProvider(api_key={_mask(self.api_key)}, model={self.model!r}, "
            f"base_url={self.base_url!r})"
        )


@frozen(repr=False)
class OpenAIProvider:
    """
    OpenAI's Chat Completions API.

    @ivar api_key: The key sent as C{Authorization: Bearer}; never shown in
        C{repr}.
    @ivar model: The model, e.g. C{"gpt-4o"}.
    @ivar base_url: C{scheme://host[:port]} without C{/v1}.
    """

    kind: ClassVar[str] = "openai"
    api_key: str
    model: str
    base_url: str = field(default=OPENAI_BASE_URL, converter=_check_base)

    @property
    def url(self) -> str:
        """
        The full URL requests go to.
        """
        return self.base_url.rstrip("/") + CHAT_PATH

    @property
    def embeddings_url(self) -> str:
        """
        The URL of the embeddings endpoint.
        """
        return self.base_url.rstrip("/") + EMBEDDINGS_PATH

    @property
    def responses_url(self) -> str:
        """
        The URL of the Responses API.
        """
        return self.base_url.rstrip("/") + RESPONSES_PATH

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(api_key={_mask(self.api_key)}, model={self.model!r}, "
            f"base_url={self.base_url!r})"
        )


@frozen(repr=False)
class CustomProvider:
    """
    Any OpenAI-compatible endpoint (Ollama, vLLM, Groq, Together...).

    @ivar base_url: The endpoint.  A URL with a path other than C{/} is used
        as it is; a bare C{scheme://host[:port]} (or one ending in C{/}) gets
        C{/v1/chat/completions}.  The port is honoured.
    @ivar api_key: Sent as C{Authorization: Bearer} unless empty.
    @ivar model: The model to name in requests, or L{None} to name none.
    """

    kind: ClassVar[str] = "custom"
    base_url: str = field(converter=_check_base)
    api_key: str
    model: str | None = field(default=None, converter=_none_if_empty)

    @property
    def url(self) -> str:
        """
        The full URL requests go to.
        """
        parts = urlsplit(self.base_url)
        if parts.path in ("", "/"):
            return self.base_url.rstrip("/") + CHAT_PATH
        return self.base_url

    @property
    def embeddings_url(self) -> str | None:
        """
        The URL of the embeddings endpoint: C{/v1/embeddings} on a bare
        C{scheme://host[:port]}; for a full URL that ends in
        C{/chat/completions}, that end replaced by C{/embeddings} (so
        C{.../openai/v1/chat/completions} gives C{.../openai/v1/embeddings});
        L{None} for any other full URL, whose embeddings endpoint cannot be
        told.
        """
        return self._beside_chat(EMBEDDINGS_PATH, "/embeddings")

    @property
    def responses_url(self) -> str | None:
        """
        The URL of the endpoint's Responses API (vLLM and others serve
        one), by the rules of L{embeddings_url}: C{/v1/responses} on a bare
        C{scheme://host[:port]}, C{.../responses} in place of
        C{.../chat/completions}, L{None} for any other full URL.
        """
        return self._beside_chat(RESPONSES_PATH, "/responses")

    def _beside_chat(self, bare_path: str, suffix: str) -> str | None:
        parts = urlsplit(self.base_url)
        if parts.path in ("", "/"):
            return self.base_url.rstrip("/") + bare_path
        path = parts.path.rstrip("/")
        if not path.endswith(_CHAT_SUFFIX):
            return None
        path = path[: -len(_CHAT_SUFFIX)] + suffix
        return urlunsplit(parts._replace(path=path))

    def __repr__(self) -> str:
        return (
            f"CustomProvider(base_url={self.base_url!r}, "
            f"api_key={_mask(self.api_key)}, model={self.model!r})"
        )


Provider = AnthropicProvider | OpenAIProvider | CustomProvider
