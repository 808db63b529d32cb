"""
Translation between the OpenAI Chat Completions and Anthropic Messages formats.

This module is the one to import from.  It re-exports the request direction
OpenAI -> Anthropic (L{pylon_ai._translate_request}) and the response
translation (L{pylon_ai._translate_response}), and holds the request
direction Anthropic -> OpenAI itself.  Every function is pure: decoded JSON
in, new decoded JSON out, no I/O.

A client request that cannot be honoured raises L{TranslationError} (a 400
naming the field); a malformed upstream response raises
L{UpstreamFormatError} (a 502).
"""

from __future__ import annotations

import json
from typing import Any

from pylon_ai._translate_request import (
    _NO_DEFAULT,
    JSON,
    _check_fields,
    _field,
    _items,
    _max_tokens,
    _model,
    _number,
    _text_item,
    _text_of,
    openai_request_to_anthropic,
)
from pylon_ai._translate_response import (
    anthropic_response_to_openai,
    openai_response_to_anthropic,
)
from pylon_ai.formats.errors import TranslationError, UpstreamFormatError

__all__ = [
    "TOOL_ERROR_PREFIX",
    "TranslationError",
    "UpstreamFormatError",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
]

_ANTHROPIC_HANDLED = frozenset(
    "model messages system max_tokens temperature top_p stop_sequences stream "
    "tools tool_choice".split()
)
#: Advisory: the end-user id and the capacity tier.
_ANTHROPIC_DROPPED = frozenset(("metadata", "service_tier"))
_ANTHROPIC_REFUSED: dict[str, Any] = {
    "top_k": _NO_DEFAULT,
    "thinking": {"type": "disabled"},
    "container": _NO_DEFAULT,
    "mcp_servers": _NO_DEFAULT,
    "context_management": _NO_DEFAULT,
}
#: Prefix of a tool result's text when the tool reported an error: OpenAI
#: has no C{is_error} flag.
TOOL_ERROR_PREFIX = "Error: "


def anthropic_request_to_openai(
    body: JSON, *, upstream_model: str | None, max_tokens_field: str = "max_tokens"
) -> JSON:
    """
    Translate an Anthropic Messages request body to OpenAI Chat Completions.

    The top-level C{system} becomes a first C{system} message, C{tool_use}
    blocks become C{tool_calls} and C{tool_result} blocks become C{tool}
    messages placed before the rest of their user message.  A streaming
    request also asks for usage (C{stream_options.include_usage}).

    @param body: The decoded client request.
    @param upstream_model: The model to ask for, or L{None} for the body's.
    @param max_tokens_field: Where C{max_tokens} goes: OpenAI itself wants
        C{"max_completion_tokens"}, compatible servers C{"max_tokens"}.
    @return: A new OpenAI request body.
    @raise TranslationError: For a field that cannot be translated, an
        unknown field or a malformed one; C{param} names it.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    _check_fields(
        body,
        _ANTHROPIC_HANDLED,
        _ANTHROPIC_DROPPED,
        _ANTHROPIC_REFUSED,
        "OpenAI Chat Completions API",
    )
    out: JSON = {"model": _model(body, upstream_model)}
    messages: list[JSON] = []
    system = _field(body, "system", (str, list), "system")
    if system is not None:
        messages.append({"role": "system", "content": _text_of(system, "system")})
    for path, msg in _items(body.get("messages"), "messages"):
        messages.extend(_anthropic_message(msg, path))
    out["messages"] = messages
    if (limit := _max_tokens(body, "max_tokens")) is not None:
        out[max_tokens_field] = limit
    for key in ("temperature", "top_p"):
        if (value := _number(body, key)) is not None:
            out[key] = value
    stops = _field(body, "stop_sequences", list, "stop_sequences")
    if stops:
        out["stop"] = [
            _text_item(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)
        ]
    if (stream := _field(body, "stream", bool, "stream")) is not None:
        out["stream"] = stream
        if stream:
            out["stream_options"] = {"include_usage": True}
    tools = _field(body, "tools", list, "tools")
    if tools:
        out["tools"] = [_anthropic_tool(tool, p) for p, tool in _items(tools, "tools")]
    choice = _field(body, "tool_choice", dict, "tool_choice")
    if choice is not None:
        _anthropic_tool_choice(choice, bool(tools), out)
    return out


def _anthropic_tool(tool: JSON, path: str) -> JSON:
    if tool.get("type", "custom") != "custom":
        raise TranslationError(
            f"{path!r}: server tool {tool['type']!r} cannot be translated.", path
        )
    fn: JSON = {"name": _field(tool, "name", str, f"{path}.name", required=True)}
    description = _field(tool, "description", str, f"{path}.description")
    if description is not None:
        fn["description"] = description
    fn["parameters"] = _field(
        tool, "input_schema", dict, f"{path}.input_schema", required=True
    )
    return {"type": "function", "function": fn}


def _anthropic_tool_choice(choice: JSON, has_tools: bool, out: JSON) -> None:
    kind = choice.get("type")
    value: Any
    if kind in ("auto", "none"):
        value = kind
    elif kind == "any":
        value = "required"
    elif kind == "tool":
        name = _field(choice, "name", str, "tool_choice.name", required=True)
        value = {"type": "function", "function": {"name": name}}
    else:
        raise TranslationError(
            f"'tool_choice': type {kind!r} cannot be translated.", "tool_choice"
        )
    if not has_tools:
        if kind in ("any", "tool"):
            raise TranslationError("'tool_choice' requires 'tools'.", "tool_choice")
        return
    out["tool_choice"] = value
    serial = _field(
        choice,
        "disable_parallel_tool_use",
        bool,
        "tool_choice.disable_parallel_tool_use",
    )
    if serial and kind != "none":
        out["parallel_tool_calls"] = False


def _anthropic_message(msg: JSON, path: str) -> list[JSON]:
    role = _field(msg, "role", str, f"{path}.role", required=True)
    if role not in ("user", "assistant"):
        raise TranslationError(
            f"'{path}.role': {role!r} is not a Messages API role.", f"{path}.role"
        )
    content = _field(msg, "content", (str, list), f"{path}.content", required=True)
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        return [_anthropic_assistant(content, f"{path}.content")]
    results: list[JSON] = []
    parts: list[JSON] = []
    for p, block in _items(content, f"{path}.content"):
        kind = block.get("type")
        if kind == "text":
            parts.append(
                {
                    "type": "text",
                    "text": _field(block, "text", str, f"{p}.text", required=True),
                }
            )
        elif kind == "image":
            parts.append(
                {"type": "image_url", "image_url": {"url": _image_url(block, p)}}
            )
        elif kind == "tool_result":
            results.append(_anthropic_tool_result(block, p))
        else:
            raise TranslationError(
                f"{p!r}: content block type {kind!r} cannot be translated.", p
            )
    if parts or not results:
        single = len(parts) == 1 and parts[0]["type"] == "text"
        results.append(
            {"role": "user", "content": parts[0]["text"] if single else parts}
        )
    return results


def _image_url(block: JSON, path: str) -> str:
    source = _field(block, "source", dict, f"{path}.source", required=True)
    kind = source.get("type")
    if kind == "base64":
        media_type = _field(
            source, "media_type", str, f"{path}.source.media_type", required=True
        )
        data = _field(source, "data", str, f"{path}.source.data", required=True)
        return f"data:{media_type};base64,{data}"
    if kind == "url":
        url: str = _field(source, "url", str, f"{path}.source.url", required=True)
        return url
    raise TranslationError(
        f"'{path}.source': image source type {kind!r} cannot be translated.",
        f"{path}.source",
    )


def _anthropic_tool_result(block: JSON, path: str) -> JSON:
    tool_id = _field(block, "tool_use_id", str, f"{path}.tool_use_id", required=True)
    content = block.get("content")
    text = "" if content is None else _text_of(content, f"{path}.content")
    if _field(block, "is_error", bool, f"{path}.is_error"):
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": tool_id, "content": text}


def _anthropic_assistant(content: list[Any], path: str) -> JSON:
    texts: list[str] = []
    calls: list[JSON] = []
    for p, block in _items(content, path):
        kind = block.get("type")
        if kind == "text":
            texts.append(_field(block, "text", str, f"{p}.text", required=True))
        elif kind == "tool_use":
            tool_input = _field(block, "input", dict, f"{p}.input") or {}
            fn = {
                "name": _field(block, "name", str, f"{p}.name", required=True),
                "arguments": json.dumps(
                    tool_input, separators=(",", ":"), ensure_ascii=False
                ),
            }
            calls.append(
                {
                    "id": _field(block, "id", str, f"{p}.id", required=True),
                    "type": "function",
                    "function": fn,
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):
            raise TranslationError(
                f"{p!r}: content block type {kind!r} cannot be translated.", p
            )
    # Anthropic's adjacent text blocks are one text (citations split it).
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    return message
