"""
The Anthropic Messages format: request bodies and whole replies to and from
the canonical model (L{pylon_ai.formats.canonical}).

Requests
========

  - C{system} (a string, or text blocks with their C{cache_control}) is the
    canonical system prompt; C{cache_control} on blocks and tools is kept
    as a hint that only this format sends on.
  - C{thinking} (C{enabled} with C{budget_tokens}, C{adaptive},
    C{disabled}, C{between_tools}) and C{output_config.effort} are the
    canonical L{Reasoning}; C{output_config.format} (and the older beta
    C{output_format}) the output format; C{metadata.user_id} the user.
  - C{context_management}, C{service_tier}, top-level C{cache_control},
    C{inference_geo} and C{speed} are advisory: other formats drop them.
    C{container} and C{mcp_servers} change the reply: other formats refuse
    them.  Server tools (C{web_search_...}, ...) are L{HostedTool}s.

Encoding for an upstream:

  - An effort level without a thinking mode (from another format) becomes
    C{thinking: {type: enabled, budget_tokens}} per
    L{pylon_ai.formats.canonical.budget_for_effort}, the budget kept below
    C{max_tokens} as Anthropic requires: when the client set no limit the
    limit is the default plus the budget; when its limit leaves less than
    1024 tokens of budget, thinking stays off.  Such translated thinking
    also stays off when a tool choice forces a call (Anthropic refuses
    both), and when the request continues a tool call whose assistant turn
    does not begin with signed thinking (Anthropic requires it back); it
    drops C{temperature}, C{top_k} and a C{top_p} below 0.95, which
    Anthropic refuses with thinking.
  - Reasoning in assistant turns is sent only signed (C{thinking} with its
    signature, C{redacted_thinking}): unsigned reasoning (from another
    provider) is left out.
  - C{json_schema} output is C{output_config.format}; C{json_object} (which
    Anthropic lacks) and any output format on an upstream without native
    structured output use the forced-tool technique.
  - Adjacent messages of one role are merged, as Anthropic wants turns to
    alternate.
"""

from __future__ import annotations

from typing import Any

from pylon_ai._events import stop_from_anthropic
from pylon_ai._translate_request import TranslationError
from pylon_ai.formats._check import (
    JOIN,
    NO_DEFAULT,
    count,
    emit_extras,
    extras,
    fail,
    field,
    items,
    need,
    positive,
    refuse,
    string_item,
)
from pylon_ai.formats.canonical import (
    JSON,
    MIN_BUDGET,
    STRUCTURED_OUTPUT_TOOL,
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
    Reply,
    ReplyUsage,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    budget_for_effort,
    structured_output_tool,
)

__all__ = [
    "API",
    "FORMAT",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

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
_EFFORT_NEAREST = {"minimal": "low"}


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
    messages = tuple(
        _decode_message(msg, path)
        for path, msg in items(body.get("messages"), "messages")
    )
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


def _decode_system(system: str | list[Any] | None) -> tuple[TextPart, ...]:
    if system is None:
        return ()
    if isinstance(system, str):
        return (TextPart(system, origin="system"),)
    parts = []
    for p, block in items(system, "system"):
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


# -- requests: encode ------------------------------------------------------------


def encode_request(
    req: CanonicalRequest,
    *,
    upstream_model: str | None,
    default_max_tokens: int = 4096,
    native_structured_output: bool = True,
    reasoning: bool = True,
) -> JSON:
    """
    Encode a canonical request as a Messages request body.

    @param upstream_model: The model to ask for, or L{None} for the
        request's own.
    @param default_max_tokens: C{max_tokens} when the client set none
        (Anthropic requires it).
    @param native_structured_output: The upstream model has
        C{output_config.format}; if not, the forced-tool technique is used.
    @param reasoning: The upstream model can think; if not, the requested
        reasoning is dropped.
    @return: A new request body.
    @raise TranslationError: For what this format cannot express, naming
        the client's field.
    """
    model = upstream_model if upstream_model is not None else req.model
    if model is None:
        raise TranslationError("Missing required parameter 'model'.", "model")
    out: JSON = {"model": model}
    if req.system:
        if any(part.cache_control for part in req.system):
            out["system"] = [_text_block(part) for part in req.system]
        else:
            out["system"] = JOIN.join(part.text for part in req.system)
    out["messages"] = _encode_messages(req.messages, req.source == FORMAT)
    out["max_tokens"] = req.max_tokens or default_max_tokens
    temperature = req.temperature
    if temperature is not None:
        if not 0 <= temperature <= 1:
            raise TranslationError(
                "'temperature' must be between 0 and 1 for this model.", "temperature"
            )
        out["temperature"] = temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    if req.top_k is not None:
        out["top_k"] = req.top_k
    if req.stop:
        out["stop_sequences"] = list(req.stop)
    if req.stream is not None:
        out["stream"] = req.stream
    forced = _encode_tools(req, out, native_structured_output)
    config: JSON = {}
    if native_structured_output and req.output_format is not None and not forced:
        config["format"] = {"type": "json_schema", "schema": req.output_format.schema}
    if reasoning and req.reasoning is not None:
        _encode_reasoning(req, req.reasoning, out, config, forced)
    if config:
        out["output_config"] = config
    if req.user is not None:
        out["metadata"] = {"user_id": req.user}
    emit_extras(out, req.extras, FORMAT, API)
    return out


def _text_block(part: TextPart) -> JSON:
    block: JSON = {"type": "text", "text": part.text}
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def _with_cache(block: JSON, cache: JSON | None) -> JSON:
    if cache is not None:
        block["cache_control"] = cache
    return block


def _encode_tools(req: CanonicalRequest, out: JSON, native: bool) -> bool:
    """
    Write C{tools} and C{tool_choice}.

    @return: Whether the tool choice forces a tool call.
    """
    tools: list[JSON] = []
    for tool in req.tools:
        if isinstance(tool, HostedTool):
            if tool.format != FORMAT:
                raise refuse(f"tool type {tool.kind!r}", tool.origin, API)
            tools.append(tool.spec)
        else:
            tools.append(_tool(tool, req.source == FORMAT))
    choice = req.tool_choice
    output = req.output_format
    if output is not None and (not native or output.kind == "json_object"):
        if any(t.get("name") == STRUCTURED_OUTPUT_TOOL for t in tools):
            raise TranslationError(
                f"A tool may not be named {STRUCTURED_OUTPUT_TOOL!r} with a "
                "structured output format on this model.",
                "tools",
            )
        own = bool(tools)
        tools.append(_tool(structured_output_tool(output), False))
        if not own or (choice is not None and choice.mode == "none"):
            choice = ToolChoice("tool", STRUCTURED_OUTPUT_TOOL)
        elif choice is None or choice.mode == "auto":
            choice = ToolChoice("required")
    serial = req.parallel_tool_calls is False
    encoded: JSON | None
    if choice is None:
        encoded = {"type": "auto"} if serial else None
    elif choice.mode == "tool":
        encoded = {"type": "tool", "name": choice.name}
    else:
        encoded = {"type": "any" if choice.mode == "required" else choice.mode}
    if tools:
        out["tools"] = tools
        if encoded is not None:
            if serial and encoded["type"] != "none":
                encoded["disable_parallel_tool_use"] = True
            out["tool_choice"] = encoded
    forced_output = output is not None and (not native or output.kind == "json_object")
    return forced_output or (encoded is not None and encoded["type"] in ("any", "tool"))


def _tool(tool: Tool, same_format: bool) -> JSON:
    result: JSON = {"name": tool.name}
    if tool.description is not None:
        result["description"] = tool.description
    result["input_schema"] = tool.parameters
    # Strict tools need a model with structured outputs: kept only where
    # the client asked this format for them.
    if same_format and tool.strict is not None:
        result["strict"] = tool.strict
    return _with_cache(result, tool.cache_control)


def _encode_reasoning(
    req: CanonicalRequest, r: Reasoning, out: JSON, config: JSON, forced: bool
) -> None:
    if r.mode is not None:
        # The client spoke Anthropic's own terms: send them as they came.
        thinking: JSON = {"type": r.mode}
        if r.budget_tokens is not None:
            thinking["budget_tokens"] = r.budget_tokens
        if r.display is not None:
            thinking["display"] = r.display
        out["thinking"] = thinking
        if r.effort is not None and r.effort != "none":
            config["effort"] = _EFFORT_NEAREST.get(r.effort, r.effort)
        return
    if r.effort is None or r.effort == "none":
        return
    if req.source == FORMAT:
        config["effort"] = r.effort
        return
    budget = budget_for_effort(r.effort)
    if budget is None or forced or not _thinking_allowed(req.messages):
        return
    if req.max_tokens is None:
        out["max_tokens"] += budget
    else:
        budget = min(budget, req.max_tokens - 1)
        if budget < MIN_BUDGET:
            return
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    for key in ("temperature", "top_k"):
        out.pop(key, None)
    if out.get("top_p", 1) < 0.95:
        del out["top_p"]


def _thinking_allowed(messages: tuple[Message, ...]) -> bool:
    """
    Whether thinking may be on: a request that continues a tool call must
    send back the signed thinking that began the calling turn.
    """
    if len(messages) < 2 or messages[-1].role != "user":
        return True
    if not any(isinstance(p, ToolResultPart) for p in messages[-1].parts):
        return True
    turn = messages[-2]
    if turn.role != "assistant" or not turn.parts:
        return True
    first = turn.parts[0]
    return isinstance(first, RedactedReasoningPart) or (
        isinstance(first, ReasoningPart) and bool(first.signature)
    )


def _encode_messages(messages: tuple[Message, ...], same_format: bool) -> list[JSON]:
    out: list[JSON] = []
    for msg in messages:
        blocks = [
            block
            for part in msg.parts
            if (block := _encode_part(part, same_format)) is not None
        ]
        if out and out[-1]["role"] == msg.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": msg.role, "content": blocks})
    for encoded in out:
        content = encoded["content"]
        if not content:
            encoded["content"] = ""
        elif len(content) == 1 and content[0].keys() == {"type", "text"}:
            encoded["content"] = content[0]["text"]
    return out


def _encode_part(part: Part, same_format: bool) -> JSON | None:
    if isinstance(part, TextPart):
        return _text_block(part)
    if isinstance(part, ImagePart):
        source: JSON = (
            {"type": "url", "url": part.url}
            if part.url is not None
            else {"type": "base64", "media_type": part.media_type, "data": part.data}
        )
        return _with_cache({"type": "image", "source": source}, part.cache_control)
    if isinstance(part, DocumentPart):
        return _encode_document(part, same_format)
    if isinstance(part, ToolCallPart):
        call: JSON = {"type": "tool_use", "id": part.id, "name": part.name}
        call["input"] = part.arguments
        return _with_cache(call, part.cache_control)
    if isinstance(part, ToolResultPart):
        content: str | list[JSON | None]
        if isinstance(part.content, str):
            content = part.content
        else:
            content = [_encode_part(item, same_format) for item in part.content]
        result: JSON = {"type": "tool_result", "tool_use_id": part.call_id}
        result["content"] = content
        if part.is_error:
            result["is_error"] = True
        return _with_cache(result, part.cache_control)
    if isinstance(part, ReasoningPart):
        if not part.signature:
            return None  # unsigned reasoning of another provider
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return {"type": "redacted_thinking", "data": part.data}


def _encode_document(part: DocumentPart, same_format: bool) -> JSON:
    source: JSON
    if part.source == "base64":
        source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    elif part.source == "text":
        source = {"type": "text", "media_type": part.media_type or "text/plain"}
        source["data"] = part.data
    elif part.source == "url":
        source = {"type": "url", "url": part.url}
    elif same_format:
        source = {"type": "file", "file_id": part.file_id}
    else:
        # Another provider's file id means nothing here.
        raise refuse("a document given by file id", part.origin, API)
    block: JSON = {"type": "document", "source": source}
    for key in ("title", "context", "citations"):
        if (value := getattr(part, key)) is not None:
            block[key] = value
    return _with_cache(block, part.cache_control)


# -- replies ------------------------------------------------------------------------


def decode_response(body: Any) -> Reply:
    """
    Decode an upstream's Messages reply.

    Block types the canonical model has no part for (server tool blocks)
    are left out.

    @param body: The decoded JSON of the reply.
    @return: The canonical reply.
    @raise UpstreamFormatError: When it is malformed.
    """
    if not isinstance(body, dict):
        raise fail("not an object.")
    parts: list[Part] = []
    for i, block in enumerate(need(body, "content", list, "content")):
        what = f"content[{i}]"
        kind = need(block, "type", str, f"{what}.type")
        if kind == "text":
            parts.append(TextPart(need(block, "text", str, f"{what}.text")))
        elif kind == "tool_use":
            parts.append(
                ToolCallPart(
                    need(block, "id", str, f"{what}.id"),
                    need(block, "name", str, f"{what}.name"),
                    need(block, "input", dict, f"{what}.input"),
                )
            )
        elif kind == "thinking":
            parts.append(
                ReasoningPart(
                    need(block, "thinking", str, f"{what}.thinking"),
                    signature=need(block, "signature", str, f"{what}.signature"),
                )
            )
        elif kind == "redacted_thinking":
            parts.append(
                RedactedReasoningPart(need(block, "data", str, f"{what}.data"))
            )
    stop_reason = body.get("stop_reason")
    if stop_reason is not None and not isinstance(stop_reason, str):
        raise fail("stop_reason is not a string.")
    stop_sequence = body.get("stop_sequence")
    usage = need(body, "usage", dict, "usage")
    return Reply(
        id=need(body, "id", str, "id"),
        model=need(body, "model", str, "model"),
        parts=tuple(parts),
        stop=stop_from_anthropic(stop_reason),
        usage=ReplyUsage(
            input_tokens=count(usage, "input_tokens"),
            output_tokens=count(usage, "output_tokens"),
            cache_read_tokens=count(usage, "cache_read_input_tokens"),
            cache_creation_tokens=count(usage, "cache_creation_input_tokens"),
        ),
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
    )


def encode_response(reply: Reply, *, model: str | None = None) -> JSON:
    """
    Encode a canonical reply as a Messages reply.

    Unsigned reasoning (from another provider) becomes a C{thinking} block
    with an empty signature, which the SDKs accept and
    L{encode_request} leaves out when it comes back.

    @param model: The model to report when the reply names none.
    @return: A new response body.
    """
    blocks: list[JSON] = []
    for part in reply.parts:
        if isinstance(part, ReasoningPart):
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": part.text,
                    "signature": part.signature or "",
                }
            )
        elif isinstance(part, TextPart | ToolCallPart | RedactedReasoningPart):
            block = _encode_part(part, True)
            assert block is not None
            blocks.append(block)
    usage: JSON = {
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
    }
    if reply.usage.cache_read_tokens:
        usage["cache_read_input_tokens"] = reply.usage.cache_read_tokens
    if reply.usage.cache_creation_tokens:
        usage["cache_creation_input_tokens"] = reply.usage.cache_creation_tokens
    return {
        "id": reply.id or "msg_unknown",
        "type": "message",
        "role": "assistant",
        "model": reply.model or model or "",
        "content": blocks,
        "stop_reason": reply.stop.reason,
        "stop_sequence": reply.stop_sequence,
        "usage": usage,
    }
