"""
The Messages format: request bodies decoded into the canonical request.
"""

from __future__ import annotations

from typing import Any

from pylon_ai.formats._check import (
    NO_DEFAULT,
    extras,
    field,
    items,
    positive,
    string_item,
)
from pylon_ai.formats.canonical import (
    JSON,
    CanonicalRequest,
    DocumentPart,
    HostedTool,
    ImagePart,
    Message,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from pylon_ai.formats.errors import TranslationError

#: This format's name in L{CanonicalRequest.source} and L{Extra.format}.
FORMAT = "messages"
#: This format's name in error messages.
API = "Anthropic Messages API"

_HANDLED = frozenset(
    "model messages system max_tokens temperature top_p top_k stop_sequences "
    "stream tools tool_choice thinking output_config output_format metadata".split()
)
_ADVISORY = frozenset(
    "service_tier context_management cache_control inference_geo speed".split()
)
_REFUSED: dict[str, Any] = {"container": NO_DEFAULT, "mcp_servers": NO_DEFAULT}

_THINKING = ("enabled", "adaptive", "disabled", "between_tools")
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
#: Other formats' effort levels Anthropic lacks, and its nearest.
EFFORT_NEAREST = {"minimal": "low"}


# -- requests: decode ------------------------------------------------------------


def decode_request(body: Any) -> CanonicalRequest:
    """
    Decode a Messages request body.

    @param body: The decoded JSON of the client's request (left untouched).
    @return: The canonical request.
    @raise TranslationError: For an unknown or malformed field; C{param}
        names it.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    found = extras(body, FORMAT, _HANDLED, _ADVISORY, _REFUSED)
    model = field(body, "model", str, "model")
    system = _decode_system(field(body, "system", (str, list), "system"))
    decoded_messages = []
    for path, msg in items(body.get("messages"), "messages"):
        if msg.get("role") == "system":
            # Not a Messages API role, but Claude Code sends such messages
            # between the turns for model names it does not know: their
            # text joins the system prompt.
            system += _decode_system(
                field(msg, "content", (str, list), f"{path}.content", required=True),
                f"{path}.content",
            )
        else:
            decoded_messages.append(_decode_message(msg, path))
    messages = tuple(decoded_messages)
    stops = field(body, "stop_sequences", list, "stop_sequences") or []
    tools = field(body, "tools", list, "tools")
    decoded = tuple(_decode_tool(t, p) for p, t in items(tools or [], "tools"))
    choice, parallel = _decode_tool_choice(
        field(body, "tool_choice", dict, "tool_choice"), bool(decoded)
    )
    config = field(body, "output_config", dict, "output_config") or {}
    for key in config:
        if key not in ("effort", "format"):
            raise TranslationError(
                f"Unknown parameter 'output_config.{key}'.", f"output_config.{key}"
            )
    output = None
    if config.get("format") is not None:
        output = _decode_format(config["format"], "output_config.format")
    elif body.get("output_format") is not None:
        output = _decode_format(body["output_format"], "output_format")
    metadata = field(body, "metadata", dict, "metadata") or {}
    return CanonicalRequest(
        source=FORMAT,
        model=model,
        messages=messages,
        system=system,
        max_tokens=positive(body, "max_tokens"),
        temperature=field(body, "temperature", (int, float), "temperature"),
        top_p=field(body, "top_p", (int, float), "top_p"),
        top_k=field(body, "top_k", int, "top_k"),
        stop=tuple(string_item(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)),
        stream=field(body, "stream", bool, "stream"),
        tools=decoded,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        output_format=output,
        reasoning=_decode_reasoning(body.get("thinking"), config.get("effort")),
        user=field(metadata, "user_id", str, "metadata.user_id"),
        extras=found,
    )


def _cache(block: JSON, path: str) -> JSON | None:
    value: JSON | None = field(block, "cache_control", dict, f"{path}.cache_control")
    return value


def _decode_system(
    system: str | list[Any] | None, where: str = "system"
) -> tuple[TextPart, ...]:
    if system is None:
        return ()
    if isinstance(system, str):
        return (TextPart(system, origin=where),)
    parts = []
    for p, block in items(system, where):
        if block.get("type") != "text":
            raise TranslationError(f"{p!r} must be a text part here.", p)
        text = field(block, "text", str, f"{p}.text", required=True)
        parts.append(TextPart(text, _cache(block, p), origin=p))
    return tuple(parts)


def _decode_reasoning(thinking: Any, effort: Any) -> Reasoning | None:
    if effort is not None and effort not in _EFFORTS:
        raise TranslationError(
            f"'output_config.effort' must be one of {', '.join(_EFFORTS)}.",
            "output_config.effort",
        )
    if thinking is None:
        return Reasoning(effort=effort) if effort is not None else None
    if not isinstance(thinking, dict):
        raise TranslationError("'thinking' must be an object.", "thinking")
    mode = thinking.get("type")
    if mode not in _THINKING:
        raise TranslationError(
            f"'thinking.type' must be one of {', '.join(_THINKING)}.", "thinking.type"
        )
    budget = None
    if mode == "enabled":
        budget = field(
            thinking, "budget_tokens", int, "thinking.budget_tokens", required=True
        )
    display = field(thinking, "display", str, "thinking.display")
    return Reasoning(mode=mode, budget_tokens=budget, effort=effort, display=display)


def _decode_format(value: Any, path: str) -> OutputFormat:
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        raise TranslationError(f"{path!r} must be a json_schema format.", path)
    schema = field(value, "schema", dict, f"{path}.schema", required=True)
    return OutputFormat("json_schema", schema=schema)


def _decode_tool(tool: JSON, path: str) -> Tool | HostedTool:
    kind = field(tool, "type", str, f"{path}.type") or "custom"
    if kind != "custom":
        return HostedTool(FORMAT, kind, tool, origin=path)
    return Tool(
        name=field(tool, "name", str, f"{path}.name", required=True),
        description=field(tool, "description", str, f"{path}.description"),
        parameters=field(
            tool, "input_schema", dict, f"{path}.input_schema", required=True
        ),
        strict=field(tool, "strict", bool, f"{path}.strict"),
        cache_control=_cache(tool, path),
        origin=path,
    )


def _decode_tool_choice(
    choice: JSON | None, has_tools: bool
) -> tuple[ToolChoice | None, bool | None]:
    if choice is None:
        return None, None
    kind = choice.get("type")
    if kind in ("auto", "none"):
        value = ToolChoice(kind)
    elif kind == "any":
        value = ToolChoice("required")
    elif kind == "tool":
        value = ToolChoice(
            "tool", field(choice, "name", str, "tool_choice.name", required=True)
        )
    else:
        raise TranslationError(
            f"'tool_choice': type {kind!r} cannot be translated.", "tool_choice"
        )
    if not has_tools:
        if kind in ("any", "tool"):
            raise TranslationError("'tool_choice' requires 'tools'.", "tool_choice")
        return None, None
    serial = field(
        choice,
        "disable_parallel_tool_use",
        bool,
        "tool_choice.disable_parallel_tool_use",
    )
    return value, (False if serial and kind != "none" else None)


def _decode_message(msg: JSON, path: str) -> Message:
    role = field(msg, "role", str, f"{path}.role", required=True)
    if role not in ("user", "assistant"):
        raise TranslationError(
            f"'{path}.role': {role!r} is not a Messages API role.", f"{path}.role"
        )
    content = field(msg, "content", (str, list), f"{path}.content", required=True)
    if isinstance(content, str):
        return Message(
            role, (TextPart(content, origin=f"{path}.content"),), origin=path
        )
    parts = tuple(
        _decode_block(block, p, role) for p, block in items(content, f"{path}.content")
    )
    return Message(role, parts, origin=path)


def _decode_block(block: JSON, path: str, role: str) -> Part:
    kind = block.get("type")
    if kind == "text":
        text = field(block, "text", str, f"{path}.text", required=True)
        return TextPart(text, _cache(block, path), origin=path)
    if role == "user":
        if kind == "image":
            return _decode_image(block, path)
        if kind == "document":
            return _decode_document(block, path)
        if kind == "tool_result":
            return _decode_tool_result(block, path)
    else:
        if kind == "tool_use":
            return ToolCallPart(
                id=field(block, "id", str, f"{path}.id", required=True),
                name=field(block, "name", str, f"{path}.name", required=True),
                arguments=field(block, "input", dict, f"{path}.input") or {},
                cache_control=_cache(block, path),
                origin=path,
            )
        if kind == "thinking":
            return ReasoningPart(
                field(block, "thinking", str, f"{path}.thinking", required=True),
                signature=field(block, "signature", str, f"{path}.signature"),
                origin=path,
            )
        if kind == "redacted_thinking":
            data = field(block, "data", str, f"{path}.data", required=True)
            return RedactedReasoningPart(data, origin=path)
    raise TranslationError(
        f"{path!r}: content block type {kind!r} cannot be translated.", path
    )


def _decode_image(block: JSON, path: str) -> ImagePart:
    source = field(block, "source", dict, f"{path}.source", required=True)
    kind = source.get("type")
    cache = _cache(block, path)
    if kind == "base64":
        where = f"{path}.source"
        return ImagePart(
            media_type=field(
                source, "media_type", str, f"{where}.media_type", required=True
            ),
            data=field(source, "data", str, f"{where}.data", required=True),
            cache_control=cache,
            origin=path,
        )
    if kind == "url":
        url = field(source, "url", str, f"{path}.source.url", required=True)
        return ImagePart(url=url, cache_control=cache, origin=path)
    raise TranslationError(
        f"'{path}.source': image source type {kind!r} cannot be translated.",
        f"{path}.source",
    )


def _decode_document(block: JSON, path: str) -> DocumentPart:
    where = f"{path}.source"
    source = field(block, "source", dict, where, required=True)
    kind = source.get("type")
    common: JSON = {
        "title": field(block, "title", str, f"{path}.title"),
        "context": field(block, "context", str, f"{path}.context"),
        "citations": field(block, "citations", dict, f"{path}.citations"),
        "cache_control": _cache(block, path),
        "origin": path,
    }
    if kind in ("base64", "text"):
        return DocumentPart(
            kind,
            media_type=field(source, "media_type", str, f"{where}.media_type"),
            data=field(source, "data", str, f"{where}.data", required=True),
            **common,
        )
    if kind == "url":
        url = field(source, "url", str, f"{where}.url", required=True)
        return DocumentPart("url", url=url, **common)
    if kind == "file":
        file_id = field(source, "file_id", str, f"{where}.file_id", required=True)
        return DocumentPart("file", file_id=file_id, **common)
    raise TranslationError(
        f"{where!r}: document source type {kind!r} cannot be translated.", where
    )


def _decode_tool_result(block: JSON, path: str) -> ToolResultPart:
    call_id = field(block, "tool_use_id", str, f"{path}.tool_use_id", required=True)
    content = block.get("content")
    result: str | tuple[TextPart | ImagePart | DocumentPart, ...]
    if content is None or isinstance(content, str):
        result = content or ""
    else:
        parts: list[TextPart | ImagePart | DocumentPart] = []
        for p, item in items(content, f"{path}.content", "a string or an array"):
            kind = item.get("type")
            if kind == "text":
                text = field(item, "text", str, f"{p}.text", required=True)
                parts.append(TextPart(text, _cache(item, p), origin=p))
            elif kind == "image":
                parts.append(_decode_image(item, p))
            elif kind == "document":
                parts.append(_decode_document(item, p))
            else:
                raise TranslationError(f"{p!r} must be a text part here.", p)
        result = tuple(parts)
    return ToolResultPart(
        call_id,
        result,
        is_error=bool(field(block, "is_error", bool, f"{path}.is_error")),
        cache_control=_cache(block, path),
        origin=path,
    )
