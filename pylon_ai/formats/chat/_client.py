"""
The Chat Completions requests of the library (L{pylon_ai.AiProxyPlugin}):
headers and a plain-text conversation's body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pylon_ai._messages import AiMessage

CHAT_PATH = "/v1/chat/completions"


def request_headers(api_key: str) -> dict[str, str]:
    """
    The headers of a Chat Completions request; no C{Authorization} when the
    key is empty (local servers such as Ollama need none).
    """
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def request_body(
    messages: Sequence[AiMessage],
    model: str | None,
    max_tokens: int,
    *,
    max_tokens_field: str = "max_tokens",
    stream: bool = True,
    include_usage: bool = False,
) -> dict[str, Any]:
    """
    A Chat Completions request body for a plain-text conversation.

    @param model: The model, or L{None} to send none.
    @param max_tokens_field: C{"max_completion_tokens"} for OpenAI itself,
        C{"max_tokens"} for compatible servers.
    """
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
    body[max_tokens_field] = max_tokens
    body["stream"] = stream
    if stream and include_usage:
        body["stream_options"] = {"include_usage": True}
    return body
