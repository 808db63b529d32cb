"""
pylon_ai: an LLM gateway and client library on Twisted.

Streams completions from Anthropic, OpenAI and any OpenAI-compatible server
as Deferreds::

    from pylon_ai import AiProxyPlugin, AiMessage

    plugin = AiProxyPlugin.anthropic(api_key, "claude-sonnet-4-20250514")
    d = plugin.stream_completion([AiMessage.user("Hello")], print)
"""

from pylon_ai._errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeout,
    ProviderTLSError,
)
from pylon_ai._http import make_http_client
from pylon_ai._messages import AiMessage
from pylon_ai._plugin import AiProxyPlugin
from pylon_ai._provider import AnthropicProvider, CustomProvider, OpenAIProvider
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    Stop,
    TextDelta,
    ToolCallDelta,
    Usage,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AiMessage",
    "AiProxyPlugin",
    "AnthropicProvider",
    "CustomProvider",
    "MessageStart",
    "ModelEvent",
    "OpenAIProvider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStreamError",
    "ProviderTLSError",
    "ProviderTimeout",
    "Stop",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
    "make_http_client",
]
