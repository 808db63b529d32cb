"""
The Chat Completions format: the canonical request encoded as a request body.
"""

from __future__ import annotations

import json
from typing import Any

from pylon_ai.formats._check import (
    JOIN,
    emit_extras,
    refuse,
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
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    add_output_tool,
)
from pylon_ai.formats.chat._decode_request import API, FORMAT, TOOL_ERROR_PREFIX
from pylon_ai.formats.errors import TranslationError


# -- requests: encode ------------------------------------------------------------
def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_request(
    req: CanonicalRequest,
    *,
    upstream_model: str | None,
    max_tokens_field: str = "max_tokens",
    native_structured_output: bool = True,
    reasoning: bool = True,
    reasoning_history: bool = False,
) -> JSON:
    """
    Encode a canonical request as a Chat Completions request body.

    A streaming request also asks for usage (C{stream_options}).

    @param upstream_model: The model to ask for, or L{None} for the
        request's own.
    @param max_tokens_field: Where the length limit goes: OpenAI wants
        C{"max_completion_tokens"}, compatible servers C{"max_tokens"}.
    @param native_structured_output: The upstream honours
        C{response_format}; if not, the forced-tool technique is used.
    @param reasoning: The upstream takes C{reasoning_effort}; if not, the
        requested reasoning is dropped.
    @param reasoning_history: Send earlier turns' reasoning back as
        C{reasoning_content} and C{thinking_blocks} (for upstreams that want
        it, e.g. one that relays to Anthropic).
    @return: A new request body.
    @raise TranslationError: For what this format cannot express, naming
        the client's field.
    """
    out: JSON = {"model": _model(req, upstream_model)}
    messages: list[JSON] = []
    if req.system:
        content = JOIN.join(part.text for part in req.system)
        messages.append({"role": "system", "content": content})
    for msg in req.messages:
        messages.extend(_encode_message(msg, reasoning_history))
    out["messages"] = messages
    if req.max_tokens is not None:
        out[max_tokens_field] = req.max_tokens
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    if req.top_k is not None:
        raise TranslationError(
            f"Parameter 'top_k' with this value cannot be translated to the {API}.",
            "top_k",
        )
    if req.stop:
        out["stop"] = list(req.stop)
    if req.stream is not None:
        out["stream"] = req.stream
        if req.stream:
            out["stream_options"] = {"include_usage": True}
    _encode_tools(req, out, native_structured_output)
    if native_structured_output and req.output_format is not None:
        out["response_format"] = _response_format(req.output_format)
    if reasoning and req.reasoning is not None:
        effort = req.reasoning.requested_effort()
        if effort is not None:
            out["reasoning_effort"] = effort
    if req.user is not None:
        out["user"] = req.user
    emit_extras(out, req.extras, FORMAT, API)
    return out


def _model(req: CanonicalRequest, upstream_model: str | None) -> str:
    model = upstream_model if upstream_model is not None else req.model
    if model is None:
        raise TranslationError("Missing required parameter 'model'.", "model")
    return model


def _response_format(output: OutputFormat) -> JSON:
    if output.kind == "json_object":
        return {"type": "json_object"}
    spec: JSON = {"name": output.name or "response", "schema": output.schema}
    if output.description is not None:
        spec["description"] = output.description
    if output.strict is not None:
        spec["strict"] = output.strict
    return {"type": "json_schema", "json_schema": spec}


def _function(tool: Tool) -> JSON:
    fn: JSON = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def uses_forced_tool(req: CanonicalRequest, *, native_structured_output: bool) -> bool:
    """
    Whether L{encode_request} asks for C{req}'s output format with the
    forced-tool technique (see L{pylon_ai.formats.canonical}): only when the
    upstream has no native structured output.
    """
    return not native_structured_output and req.output_format is not None


def _encode_tools(req: CanonicalRequest, out: JSON, native: bool) -> None:
    tools: list[JSON] = []
    for tool in req.tools:
        if isinstance(tool, HostedTool):
            if tool.format != FORMAT:
                raise refuse(f"tool type {tool.kind!r}", tool.origin, API)
            tools.append(tool.spec)
        else:
            tools.append(_function(tool))
    choice = req.tool_choice
    forced = uses_forced_tool(req, native_structured_output=native)
    if forced:
        assert req.output_format is not None
        names = [t.get("function", {}).get("name") for t in tools]
        choice = add_output_tool(
            tools, names, req.output_format, choice, "'response_format'", _function
        )
    if not tools:
        return
    out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "tool"
            else choice.mode
        )
    if req.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = req.parallel_tool_calls


def _encode_message(msg: Message, reasoning_history: bool) -> list[JSON]:
    if msg.role == "assistant":
        return [encode_assistant(msg.parts, reasoning_history)]
    results: list[JSON] = []
    parts: list[JSON] = []
    for part in msg.parts:
        if isinstance(part, ToolResultPart):
            results.append(_encode_tool_result(part))
        else:
            parts.append(_encode_user_part(part))
    if parts or not results:
        single = len(parts) == 1 and parts[0]["type"] == "text"
        results.append(
            {"role": "user", "content": parts[0]["text"] if single else parts}
        )
    return results


def _encode_user_part(part: Part) -> JSON:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        image: JSON = {"url": part.url or f"data:{part.media_type};base64,{part.data}"}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(part, DocumentPart) and part.source == "base64":
        spec: JSON = {"file_data": f"data:{part.media_type};base64,{part.data}"}
        spec["filename"] = part.title or "document.pdf"
        return {"type": "file", "file": spec}
    if isinstance(part, DocumentPart) and part.source == "file":
        spec = {"file_id": part.file_id}
        if part.title is not None:
            spec["filename"] = part.title
        return {"type": "file", "file": spec}
    kind = "document" if isinstance(part, DocumentPart) else type(part).__name__
    raise refuse(f"content block type {kind!r}", part.origin, API)


def _encode_tool_result(part: ToolResultPart) -> JSON:
    if isinstance(part.content, str):
        text = part.content
    else:
        texts = []
        for item in part.content:
            if not isinstance(item, TextPart):
                raise TranslationError(
                    f"{item.origin!r} must be a text part here.", item.origin
                )
            texts.append(item.text)
        text = JOIN.join(texts)
    if part.is_error:
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": part.call_id, "content": text}


def _tool_call(part: ToolCallPart) -> JSON:
    return {
        "id": part.id,
        "type": "function",
        "function": {"name": part.name, "arguments": _dump(part.arguments)},
    }


def _reasoning_fields(parts: tuple[Part, ...], message: JSON) -> None:
    """
    Write the reasoning among C{parts} into an assistant C{message}.
    """
    texts = [p.text for p in parts if isinstance(p, ReasoningPart) and p.text]
    blocks: list[JSON] = []
    for part in parts:
        if isinstance(part, ReasoningPart) and part.signature:
            blocks.append(
                {"type": "thinking", "thinking": part.text, "signature": part.signature}
            )
        elif isinstance(part, RedactedReasoningPart):
            blocks.append({"type": "redacted_thinking", "data": part.data})
    if texts:
        message["reasoning_content"] = JOIN.join(texts)
    if blocks:
        message["thinking_blocks"] = blocks


def encode_assistant(parts: tuple[Part, ...], reasoning_history: bool) -> JSON:
    texts = [p.text for p in parts if isinstance(p, TextPart)]
    calls = [_tool_call(p) for p in parts if isinstance(p, ToolCallPart)]
    # Several text blocks are one text (Anthropic splits it around citations).
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning_history:
        _reasoning_fields(parts, message)
    return message
