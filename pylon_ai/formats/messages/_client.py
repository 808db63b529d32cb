"""
The Messages requests of the library (L{pylon_ai.AiProxyPlugin}): headers
and a plain-text conversation's body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pylon_ai._messages import AiMessage

ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"


def request_headers(api_key: str) -> dict[str, str]:
    """
    The headers of a Messages request.
    """
    return {
        "x-api-key": api_key,
        "anthropic-version": ANTHROPIC_VERSION,
        "content-type": "application/json",
        "accept": "text/event-stream",
    }


def request_body(
    messages: Sequence[AiMessage], model: str, max_tokens: int, stream: bool = True
) -> dict[str, Any]:
    """
    A Messages request body for a plain-text conversation.

    Every C{system} message, wherever it stands, goes into the top-level
    C{system} field (several joined with a blank line, in order): the API
    rejects C{system} as a message role.
    """
    system = [m.content for m in messages if m.role == "system"]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [
            {"role": m.role, "content": m.content}
            for m in messages
            if m.role != "system"
        ],
        "stream": stream,
    }
    if system:
        body["system"] = "\n\n".join(system)
    return body
