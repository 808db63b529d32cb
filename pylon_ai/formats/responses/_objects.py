"""
The pieces of Responses bodies that whole replies and the stream encoder
share: ids, the request fields a C{response} repeats, C{usage}, the status of
a stop, C{error.code}, the C{response} object and its output items.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from pylon_ai.formats.canonical import JSON
from pylon_ai.formats.events import Stop
from pylon_ai.formats.responses._tools import ToolNames

__all__ = [
    "call_item",
    "failure_code",
    "message_item",
    "new_id",
    "output_text",
    "reasoning_item",
    "response_echo",
    "response_object",
    "status_of",
    "usage_object",
]


#: Request fields a C{response} object repeats, with the API's defaults.
_ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}


def new_id(prefix: str) -> str:
    """
    A fresh id in OpenAI's style (C{resp_...}, C{msg_...}, C{fc_...}).
    """
    return f"{prefix}_{uuid.uuid4().hex}"


def response_echo(body: JSON) -> JSON:
    """
    The fields of a client's request body that its C{response} object
    repeats, with the API's defaults for those it did not send.

    C{store} is always C{false}: the gateway stores nothing, whatever the
    client asked.
    """
    echo = {
        key: body[key] if body.get(key) is not None else default
        for key, default in _ECHO_DEFAULTS.items()
    }
    echo["store"] = False
    return echo


def usage_object(
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_creation_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> JSON:
    """
    A Responses C{usage} object.

    @param input_tokens: Prompt tokens without cache reads and writes (the
        canonical count); C{input_tokens} in the object counts them all.
    """
    prompt = input_tokens + cache_read_tokens + cache_creation_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": cache_read_tokens,
            "cache_write_tokens": cache_creation_tokens,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": prompt + output_tokens,
    }


def status_of(stop: Stop) -> tuple[str, str | None]:
    """
    The C{status} of a response that ended with C{stop}, and the reason of
    its C{incomplete_details}.
    """
    if stop.reason == "max_tokens":
        return "incomplete", "max_output_tokens"
    if stop.reason == "refusal":
        return "incomplete", "content_filter"
    return "completed", None


def failure_code(error_type: str | None, status: int | None) -> str:
    """
    The C{error.code} of a failed response: one of the codes the SDKs
    accept.
    """
    if status == 429 or error_type in ("rate_limit_error", "rate_limit_exceeded"):
        return "rate_limit_exceeded"
    return "server_error"


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[JSON],
    usage: JSON | None,
    echo: JSON,
    error: JSON | None = None,
    incomplete_reason: str | None = None,
) -> JSON:
    """
    A C{response} object.

    @param echo: The request fields it repeats (L{response_echo}).
    """
    body: JSON = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": (
            {"reason": incomplete_reason} if incomplete_reason is not None else None
        ),
        "model": model,
        "output": output,
        **echo,
        "usage": usage,
    }
    return body


def reasoning_item(
    item_id: str, summary: Iterable[str], encrypted_content: str | None
) -> JSON:
    """
    A C{reasoning} output item.
    """
    item: JSON = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": s} for s in summary],
    }
    if encrypted_content is not None:
        item["encrypted_content"] = encrypted_content
    return item


def message_item(item_id: str, text: str, status: str = "completed") -> JSON:
    """
    An assistant C{message} output item of one C{output_text} part.
    """
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> JSON:
    """
    An C{output_text} content part.
    """
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    item_id: str,
    call_id: str,
    name: str,
    arguments: str,
    names: ToolNames,
    status: str = "completed",
) -> JSON:
    """
    A C{function_call} output item, under the client's name for the tool.
    """
    namespace, client_name = names.client_name(name)
    item: JSON = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": client_name,
        "arguments": arguments,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item
