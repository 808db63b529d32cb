"""
Encoding a canonical request as a Responses request body, for a Responses
upstream behind a Chat Completions or Messages client: the shapes that
L{pylon_ai.formats.responses._decode_request} reads, written back with
C{store: false}.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pylon_ai.formats._check import JOIN, emit_extras, refuse
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
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.responses._decode_request import API, FORMAT

__all__ = ["encode_request"]


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_request(
    req: CanonicalRequest,
    *,
    upstream_model: str | None,
    native_structured_output: bool = True,
    reasoning: bool = True,
) -> JSON:
    """
    Encode a canonical request as a Responses request body, for an upstream
    that speaks Responses.

    The body asks the upstream to store nothing (C{store: false}) unless the
    client's own Responses request said otherwise.

    @param upstream_model: The model to ask for, or L{None} for the
        request's own.
    @param native_structured_output: The upstream honours C{text.format}; if
        not, the forced-tool technique is used.
    @param reasoning: The upstream takes C{reasoning}; if not, the requested
        reasoning is dropped.
    @return: A new request body.
    @raise TranslationError: For what this format cannot express (C{stop},
        C{top_k}, another format's hosted tools), naming the client's field.
    """
    model = upstream_model if upstream_model is not None else req.model
    if model is None:
        raise TranslationError("Missing required parameter 'model'.", "model")
    out: JSON = {"model": model}
    if req.system:
        out["instructions"] = JOIN.join(part.text for part in req.system)
    out["input"] = [item for msg in req.messages for item in _encode_message(msg)]
    if req.max_tokens is not None:
        out["max_output_tokens"] = req.max_tokens
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    for key, present in (("top_k", req.top_k is not None), ("stop", bool(req.stop))):
        if present:
            raise TranslationError(
                f"Parameter {key!r} cannot be translated to the {API}.", key
            )
    if req.stream is not None:
        out["stream"] = req.stream
    _encode_tools(req, out, native_structured_output)
    if native_structured_output and req.output_format is not None:
        out["text"] = {"format": _text_format(req.output_format)}
    if reasoning and req.reasoning is not None:
        encoded: JSON = {}
        effort = req.reasoning.requested_effort()
        if effort is not None:
            encoded["effort"] = effort
        if req.reasoning.summary is not None:
            encoded["summary"] = req.reasoning.summary
        if encoded:
            out["reasoning"] = encoded
    if req.user is not None:
        out["user"] = req.user
    emit_extras(out, req.extras, FORMAT, API)
    out.setdefault("store", False)
    return out


def _text_format(output: OutputFormat) -> JSON:
    if output.kind == "json_object":
        return {"type": "json_object"}
    spec: JSON = {
        "type": "json_schema",
        "name": output.name or "response",
        "schema": output.schema,
    }
    if output.description is not None:
        spec["description"] = output.description
    if output.strict is not None:
        spec["strict"] = output.strict
    return spec


def _function(tool: Tool) -> JSON:
    out: JSON = {"type": "function", "name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["parameters"] = tool.parameters
    out["strict"] = tool.strict if tool.strict is not None else False
    return out


def _encode_tools(req: CanonicalRequest, out: JSON, native: bool) -> None:
    tools: list[JSON] = []
    spaces: dict[str, JSON] = {}
    for tool in req.tools:
        if isinstance(tool, HostedTool):
            if tool.format != FORMAT:
                raise refuse(f"tool type {tool.kind!r}", tool.origin, API)
            tools.append(tool.spec)
        elif tool.namespace is not None:
            space = spaces.get(tool.namespace)
            if space is None:
                space = spaces[tool.namespace] = {
                    "type": "namespace",
                    "name": tool.namespace,
                    "description": tool.namespace,
                    "tools": [],
                }
                tools.append(space)
            space["tools"].append(_function(tool))
        else:
            tools.append(_function(tool))
    choice = req.tool_choice
    if not native and req.output_format is not None:
        names = [t.get("name") for t in tools]
        choice = add_output_tool(
            tools, names, req.output_format, choice, "'text.format'", _function
        )
    if not tools:
        return
    out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = (
            {"type": "function", "name": choice.name}
            if choice.mode == "tool"
            else choice.mode
        )
    if req.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = req.parallel_tool_calls


def _image(part: ImagePart) -> JSON:
    return {
        "type": "input_image",
        "image_url": part.url or f"data:{part.media_type};base64,{part.data}",
        "detail": part.detail or "auto",
    }


def _input_part(part: Part) -> JSON:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        return _image(part)
    if isinstance(part, DocumentPart):
        out: JSON = {"type": "input_file"}
        if part.source == "base64":
            out["file_data"] = f"data:{part.media_type};base64,{part.data}"
        elif part.source == "url":
            out["file_url"] = part.url
        elif part.source == "file":
            out["file_id"] = part.file_id
        else:
            raise refuse("a text document", part.origin, API)
        if part.title is not None:
            out["filename"] = part.title
        return out
    raise refuse(f"content block type {type(part).__name__!r}", part.origin, API)


def _encode_message(msg: Message) -> list[JSON]:
    out: list[JSON] = []
    pending: list[JSON] = []

    def flush() -> None:
        if pending:
            role = msg.role
            out.append({"type": "message", "role": role, "content": list(pending)})
            pending.clear()

    for part in msg.parts:
        if isinstance(part, ToolResultPart):
            flush()
            out.append(_encode_output(part))
        elif isinstance(part, ToolCallPart):
            flush()
            call: JSON = {
                "type": "function_call",
                "call_id": part.id,
                "name": part.name,
                "arguments": _dump(part.arguments),
            }
            if part.namespace is not None:
                call["namespace"] = part.namespace
            out.append(call)
        elif isinstance(part, ReasoningPart):
            flush()
            item = _encode_reasoning(part)
            if item is not None:
                out.append(item)
        elif isinstance(part, RedactedReasoningPart):
            continue  # Anthropic's, meaningless to a Responses upstream
        elif msg.role == "assistant" and isinstance(part, TextPart):
            pending.append({"type": "output_text", "text": part.text})
        else:
            pending.append(_input_part(part))
    flush()
    return out


def _encode_output(part: ToolResultPart) -> JSON:
    output: str | list[JSON]
    if isinstance(part.content, str):
        output = part.content
    else:
        output = [_input_part(item) for item in part.content]
    return {"type": "function_call_output", "call_id": part.call_id, "output": output}


def _encode_reasoning(part: ReasoningPart) -> JSON | None:
    # Only a Responses upstream's own encrypted reasoning can go back to one;
    # signed Anthropic thinking and plain reasoning text cannot.
    if part.encrypted_content is None or part.signature:
        return None
    return {
        "type": "reasoning",
        "id": part.id or f"rs_{uuid.uuid4().hex}",
        "summary": [{"type": "summary_text", "text": s} for s in part.summary],
        "encrypted_content": part.encrypted_content,
    }
