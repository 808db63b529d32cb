"""
The Messages format: the canonical request encoded as a request body.
"""

from __future__ import annotations

from pylon_ai.formats._check import (
    JOIN,
    emit_extras,
    refuse,
)
from pylon_ai.formats.canonical import (
    JSON,
    MIN_BUDGET,
    CanonicalRequest,
    DocumentPart,
    HostedTool,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    add_output_tool,
    budget_for_effort,
)
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.messages._decode_request import API, EFFORT_NEAREST, FORMAT

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


def uses_forced_tool(req: CanonicalRequest, *, native_structured_output: bool) -> bool:
    """
    Whether L{encode_request} asks for C{req}'s output format with the
    forced-tool technique (see L{pylon_ai.formats.canonical}): always for
    C{json_object}, which Anthropic lacks, and for any format when the
    upstream has no native structured output.
    """
    output = req.output_format
    return output is not None and (
        not native_structured_output or output.kind == "json_object"
    )


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
    forced_output = uses_forced_tool(req, native_structured_output=native)
    if forced_output:
        assert output is not None
        names = [t.get("name") for t in tools]
        choice = add_output_tool(
            tools,
            names,
            output,
            choice,
            "a structured output format",
            lambda tool: _tool(tool, False),
        )
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
            config["effort"] = EFFORT_NEAREST.get(r.effort, r.effort)
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
            if (block := encode_part(part, same_format)) is not None
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


def encode_part(part: Part, same_format: bool) -> JSON | None:
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
            content = [encode_part(item, same_format) for item in part.content]
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
