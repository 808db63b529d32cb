"""
The OpenAI Chat Completions format: request bodies and whole replies to and
from the canonical model (L{pylon_ai.formats.canonical}).

Requests
========

  - C{system} and C{developer} messages, wherever they stand, are the
    canonical system prompt (one text part each, in order); C{tool}
    messages are user turns of one L{ToolResultPart}.
  - Assistant reasoning comes back as C{thinking_blocks} (Anthropic's signed
    C{thinking} / C{redacted_thinking} blocks, as LiteLLM carries them),
    else as C{reasoning_content} or C{reasoning} (unsigned text).
  - C{reasoning_effort} is an effort level; C{response_format}
    (C{json_schema}, C{json_object}) the output format; C{user} the user.
  - Advisory fields (C{seed}, C{store}, C{metadata}, ...) and fields that
    change the reply but have no canonical slot (C{n}, C{logprobs},
    C{audio}, ...) are L{Extra}s: sent on to a Chat Completions upstream,
    dropped (advisory) or refused by other formats.  A refusable field
    holding its default value is dropped here.

Encoding for an upstream sends C{reasoning_effort} per
L{Reasoning.requested_effort}, and leaves reasoning out of the assistant
history unless asked (DeepSeek's reasoner refuses C{reasoning_content} in
its input).  Without native structured output it uses the forced-tool
technique (see L{pylon_ai.formats.canonical}).

Replies
=======

  The first choice's text (or its refusal) and tool calls are the reply's
  parts, after its reasoning (C{thinking_blocks}, else C{reasoning_content}
  or C{reasoning}).  C{prompt_tokens} counts every prompt token: the cached
  ones are the cache reads.  Encoding a reply writes reasoning as
  C{reasoning_content} and, when it is signed, C{thinking_blocks}, so that a
  client can send it back for multi-turn tool use with thinking.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pylon_ai._events import stop_from_openai, stop_to_openai
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
    json_object,
    need,
    positive,
    refuse,
    string_item,
)
from pylon_ai.formats.canonical import (
    EFFORTS,
    JSON,
    STRUCTURED_OUTPUT_TOOL,
    CanonicalRequest,
    DocumentPart,
    Effort,
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
    structured_output_tool,
)

__all__ = [
    "API",
    "FORMAT",
    "TOOL_ERROR_PREFIX",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

#: This format's name in L{CanonicalRequest.source} and L{Extra.format}.
FORMAT = "chat"
#: This format's name in error messages.
API = "OpenAI Chat Completions API"
#: Prefix of a tool result's text when the tool reported an error: Chat
#: Completions has no C{is_error} flag.
TOOL_ERROR_PREFIX = "Error: "

_CONTENT = "a string or an array of content parts"

_HANDLED = frozenset(
    "model messages max_tokens max_completion_tokens temperature top_p stop stream "
    "stream_options tools tool_choice parallel_tool_calls reasoning_effort "
    "response_format user".split()
)
_ADVISORY = frozenset(
    "seed service_tier store metadata prompt_cache_key prompt_cache_retention "
    "prompt_cache_options safety_identifier moderation".split()
)
_REFUSED: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": 0,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": {},
    "modalities": ["text"],
    "audio": NO_DEFAULT,
    "functions": NO_DEFAULT,
    "function_call": NO_DEFAULT,
    "verbosity": NO_DEFAULT,
    "prediction": NO_DEFAULT,
    "web_search_options": NO_DEFAULT,
}


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- requests: decode ------------------------------------------------------------


def decode_request(body: Any) -> CanonicalRequest:
    """
    Decode a Chat Completions request body.

    @param body: The decoded JSON of the client's request (left untouched).
    @return: The canonical request.
    @raise TranslationError: For an unknown or malformed field; C{param}
        names it.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    found = extras(body, FORMAT, _HANDLED, _ADVISORY, _REFUSED)
    model = field(body, "model", str, "model")
    system, messages = _decode_messages(body.get("messages"))
    limit = positive(body, "max_completion_tokens")
    max_tokens = limit or positive(body, "max_tokens")
    stop = field(body, "stop", (str, list), "stop")
    if isinstance(stop, str):
        stops: tuple[str, ...] = (stop,)
    else:
        stops = tuple(string_item(s, f"stop[{i}]") for i, s in enumerate(stop or ()))
    options = field(body, "stream_options", dict, "stream_options") or {}
    usage = field(options, "include_usage", bool, "stream_options.include_usage")
    tools = field(body, "tools", list, "tools")
    decoded = tuple(_decode_tool(t, p) for p, t in items(tools or [], "tools"))
    parallel = field(body, "parallel_tool_calls", bool, "parallel_tool_calls")
    return CanonicalRequest(
        source=FORMAT,
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=field(body, "temperature", (int, float), "temperature"),
        top_p=field(body, "top_p", (int, float), "top_p"),
        stop=stops,
        stream=field(body, "stream", bool, "stream"),
        include_usage=bool(usage),
        tools=decoded,
        tool_choice=_decode_tool_choice(body.get("tool_choice"), bool(decoded)),
        parallel_tool_calls=parallel,
        output_format=_decode_response_format(body.get("response_format")),
        reasoning=_decode_effort(body.get("reasoning_effort")),
        user=field(body, "user", str, "user"),
        extras=found,
    )


def _decode_effort(value: Any) -> Reasoning | None:
    if value is None:
        return None
    if value not in EFFORTS:
        raise TranslationError(
            f"'reasoning_effort' must be one of {', '.join(EFFORTS)}.",
            "reasoning_effort",
        )
    effort: Effort = value
    return Reasoning(effort=effort)


def _decode_response_format(value: Any) -> OutputFormat | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TranslationError(
            "'response_format' must be an object.", "response_format"
        )
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    if kind != "json_schema":
        raise TranslationError(
            f"'response_format': type {kind!r} cannot be translated.",
            "response_format.type",
        )
    path = "response_format.json_schema"
    spec = field(value, "json_schema", dict, path, required=True)
    schema = field(spec, "schema", dict, f"{path}.schema")
    return OutputFormat(
        "json_schema" if schema is not None else "json_object",
        schema=schema,
        name=field(spec, "name", str, f"{path}.name"),
        description=field(spec, "description", str, f"{path}.description"),
        strict=field(spec, "strict", bool, f"{path}.strict"),
    )


def _decode_tool(tool: JSON, path: str) -> Tool | HostedTool:
    kind = field(tool, "type", str, f"{path}.type", required=True)
    if kind != "function":
        return HostedTool(FORMAT, kind, tool, origin=path)
    fn = field(tool, "function", dict, f"{path}.function", required=True)
    schema = field(fn, "parameters", dict, f"{path}.function.parameters")
    return Tool(
        name=field(fn, "name", str, f"{path}.function.name", required=True),
        description=field(fn, "description", str, f"{path}.function.description"),
        parameters=schema
        if schema is not None
        else {"type": "object", "properties": {}},
        strict=field(fn, "strict", bool, f"{path}.function.strict"),
        origin=path,
    )


def _decode_tool_choice(value: Any, has_tools: bool) -> ToolChoice | None:
    choice: ToolChoice
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        choice = ToolChoice(value)
    elif (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("function"), dict)
        and isinstance(value["function"].get("name"), str)
    ):
        choice = ToolChoice("tool", value["function"]["name"])
    else:
        raise TranslationError(
            "'tool_choice' has a form that cannot be translated.", "tool_choice"
        )
    if not has_tools:
        # "auto" or "none" without tools is moot.
        if choice.mode in ("required", "tool"):
            raise TranslationError("'tool_choice' requires 'tools'.", "tool_choice")
        return None
    return choice


def _decode_messages(value: Any) -> tuple[tuple[TextPart, ...], tuple[Message, ...]]:
    system: list[TextPart] = []
    out: list[Message] = []
    for path, msg in items(value, "messages"):
        role = field(msg, "role", str, f"{path}.role", required=True)
        content = msg.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, f"{path}.content")
            system.append(TextPart(text, origin=f"{path}.content"))
        elif role == "user":
            parts = _decode_user(content, f"{path}.content")
            out.append(Message("user", parts, origin=path))
        elif role == "assistant":
            out.append(Message("assistant", _decode_assistant(msg, path), origin=path))
        elif role == "tool":
            out.append(Message("user", (_decode_tool_result(msg, path),), origin=path))
        else:
            raise TranslationError(
                f"'{path}.role': role {role!r} cannot be translated.", f"{path}.role"
            )
    return tuple(system), tuple(out)


def _texts(content: Any, path: str) -> list[TextPart]:
    parts = []
    for p, part in items(content, path, _CONTENT):
        if part.get("type") != "text":
            raise TranslationError(f"{p!r} must be a text part here.", p)
        parts.append(TextPart(field(part, "text", str, f"{p}.text", required=True)))
    return parts


def _text_of(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    return JOIN.join(p.text for p in _texts(content, path))


def _decode_user(content: Any, path: str) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content, origin=path),)
    parts: list[Part] = []
    for p, part in items(content, path, _CONTENT):
        kind = part.get("type")
        if kind == "text":
            text = field(part, "text", str, f"{p}.text", required=True)
            if text:
                parts.append(TextPart(text, origin=p))
        elif kind == "image_url":
            image = field(
                part, "image_url", (dict, str), f"{p}.image_url", required=True
            )
            detail = None
            if isinstance(image, dict):
                detail = field(image, "detail", str, f"{p}.image_url.detail")
                image = field(image, "url", str, f"{p}.image_url.url", required=True)
            parts.append(_decode_image(image, detail, p))
        elif kind == "file":
            parts.append(_decode_file(part, p))
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
    return tuple(parts)


def _parse_data_url(url: str, path: str) -> tuple[str, str]:
    header, comma, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type:
        raise TranslationError(
            f"{path!r}: only base64 data: URLs can be translated.", path
        )
    return media_type, data


def _decode_image(url: str, detail: str | None, path: str) -> ImagePart:
    where = f"{path}.image_url.url"
    if url.startswith("data:"):
        media_type, data = _parse_data_url(url, where)
        return ImagePart(media_type=media_type, data=data, detail=detail, origin=path)
    if url.startswith(("http://", "https://")):
        return ImagePart(url=url, detail=detail, origin=path)
    raise TranslationError(f"{where!r} must be a data:, http: or https: URL.", where)


def _decode_file(part: JSON, path: str) -> DocumentPart:
    spec = field(part, "file", dict, f"{path}.file", required=True)
    name = field(spec, "filename", str, f"{path}.file.filename")
    file_id = field(spec, "file_id", str, f"{path}.file.file_id")
    if file_id is not None:
        return DocumentPart("file", file_id=file_id, title=name, origin=path)
    data = field(spec, "file_data", str, f"{path}.file.file_data", required=True)
    media_type = "application/pdf"
    if data.startswith("data:"):
        media_type, data = _parse_data_url(data, f"{path}.file.file_data")
    return DocumentPart(
        "base64", media_type=media_type, data=data, title=name, origin=path
    )


def _decode_reasoning(msg: JSON, path: str) -> list[Part]:
    blocks = field(msg, "thinking_blocks", list, f"{path}.thinking_blocks")
    if blocks:
        parts: list[Part] = []
        for p, block in items(blocks, f"{path}.thinking_blocks"):
            if block.get("type") == "redacted_thinking":
                data = field(block, "data", str, f"{p}.data", required=True)
                parts.append(RedactedReasoningPart(data, origin=p))
            elif block.get("type") == "thinking":
                parts.append(
                    ReasoningPart(
                        field(block, "thinking", str, f"{p}.thinking") or "",
                        signature=field(block, "signature", str, f"{p}.signature"),
                        origin=p,
                    )
                )
            else:
                raise TranslationError(f"{p!r}: unknown thinking block type.", p)
        return parts
    for key in ("reasoning_content", "reasoning"):
        text = field(msg, key, str, f"{path}.{key}")
        if text:
            return [ReasoningPart(text, origin=f"{path}.{key}")]
    return []


def _decode_assistant(msg: JSON, path: str) -> tuple[Part, ...]:
    for key in ("function_call", "audio"):
        if msg.get(key) is not None:
            raise TranslationError(
                f"'{path}.{key}' cannot be translated.", f"{path}.{key}"
            )
    parts = _decode_reasoning(msg, path)
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            parts.append(TextPart(content, origin=f"{path}.content"))
    elif content is not None:
        for p, part in items(content, f"{path}.content", _CONTENT):
            kind = part.get("type")
            if kind not in ("text", "refusal"):
                raise TranslationError(
                    f"{p!r}: content part type {kind!r} cannot be translated.", p
                )
            text = field(part, kind, str, f"{p}.{kind}", required=True)
            if text:
                parts.append(TextPart(text, origin=p))
    calls = field(msg, "tool_calls", list, f"{path}.tool_calls")
    for p, call in items(calls or [], f"{path}.tool_calls"):
        if call.get("type", "function") != "function":
            raise TranslationError(
                f"'{p}.type': only function tool calls can be translated.", f"{p}.type"
            )
        fn = field(call, "function", dict, f"{p}.function", required=True)
        arguments = field(fn, "arguments", str, f"{p}.function.arguments") or "{}"
        parsed = json_object(arguments)
        if parsed is None:
            raise TranslationError(
                f"'{p}.function.arguments' must be a JSON object.",
                f"{p}.function.arguments",
            )
        parts.append(
            ToolCallPart(
                id=field(call, "id", str, f"{p}.id", required=True),
                name=field(fn, "name", str, f"{p}.function.name", required=True),
                arguments=parsed,
                origin=p,
            )
        )
    return tuple(parts)


def _decode_tool_result(msg: JSON, path: str) -> ToolResultPart:
    call_id = field(msg, "tool_call_id", str, f"{path}.tool_call_id", required=True)
    content = msg.get("content")
    if content is None or isinstance(content, str):
        return ToolResultPart(call_id, content or "", origin=path)
    texts = tuple(_texts(content, f"{path}.content"))
    return ToolResultPart(call_id, texts, origin=path)


# -- requests: encode ------------------------------------------------------------


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
    forced = not native and req.output_format is not None
    if forced:
        assert req.output_format is not None
        if any(
            t.get("function", {}).get("name") == STRUCTURED_OUTPUT_TOOL for t in tools
        ):
            raise TranslationError(
                f"A tool may not be named {STRUCTURED_OUTPUT_TOOL!r} with "
                "'response_format' on this model.",
                "tools",
            )
        own = bool(tools)
        tools.append(_function(structured_output_tool(req.output_format)))
        if not own or (choice is not None and choice.mode == "none"):
            choice = ToolChoice("tool", STRUCTURED_OUTPUT_TOOL)
        elif choice is None or choice.mode == "auto":
            choice = ToolChoice("required")
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
        return [_encode_assistant(msg.parts, reasoning_history)]
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


def _encode_assistant(parts: tuple[Part, ...], reasoning_history: bool) -> JSON:
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


# -- replies ------------------------------------------------------------------------


def decode_response(body: Any) -> Reply:
    """
    Decode an upstream's C{chat.completion} object.

    @param body: The decoded JSON of the reply.
    @return: The canonical reply (from its first choice).
    @raise UpstreamFormatError: When it is malformed, including tool call
        arguments that are not a JSON object.
    """
    if not isinstance(body, dict):
        raise fail("not an object.")
    choices = need(body, "choices", list, "choices")
    if not choices:
        raise fail("no choices.")
    message = need(choices[0], "message", dict, "choices[0].message")
    try:
        parts = _decode_reasoning(message, "choices[0].message")
    except TranslationError as e:
        raise fail(f"{e.param}.") from None
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    elif content is not None and not isinstance(content, str):
        raise fail("choices[0].message.content is not text.")
    refusal = message.get("refusal")
    text = content or (refusal if isinstance(refusal, str) else "")
    if text:
        parts.append(TextPart(text))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise fail("choices[0].message.tool_calls is not a list.")
    for i, call in enumerate(calls):
        what = f"choices[0].message.tool_calls[{i}]"
        fn = need(call, "function", dict, f"{what}.function")
        arguments = fn.get("arguments") or "{}"
        parsed = json_object(arguments) if isinstance(arguments, str) else None
        if parsed is None:
            raise fail(f"{what}.function.arguments is not a JSON object.")
        parts.append(
            ToolCallPart(
                need(call, "id", str, f"{what}.id"),
                need(fn, "name", str, f"{what}.function.name"),
                parsed,
            )
        )
    finish = choices[0].get("finish_reason")
    if isinstance(finish, str):
        stop = stop_from_openai(finish)
    else:
        stop = stop_from_openai("tool_calls" if calls else "stop")
    model = body.get("model")
    reply_id = body.get("id")
    return Reply(
        id=reply_id if isinstance(reply_id, str) and reply_id else None,
        model=model if isinstance(model, str) else None,
        parts=tuple(parts),
        stop=stop,
        usage=_decode_usage(body.get("usage") or {}),
    )


def _decode_usage(usage: Any) -> ReplyUsage:
    if not isinstance(usage, dict):
        raise fail("usage is not an object.")
    details = usage.get("prompt_tokens_details") or {}
    cached = count(details, "cached_tokens") if isinstance(details, dict) else 0
    out_details = usage.get("completion_tokens_details") or {}
    reasoning = None
    if isinstance(out_details, dict) and "reasoning_tokens" in out_details:
        reasoning = count(out_details, "reasoning_tokens")
    return ReplyUsage(
        input_tokens=max(count(usage, "prompt_tokens") - cached, 0),
        output_tokens=count(usage, "completion_tokens"),
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def encode_response(
    reply: Reply, *, created: int | None = None, model: str | None = None
) -> JSON:
    """
    Encode a canonical reply as a C{chat.completion} object.

    @param created: The C{created} timestamp; now when L{None}.
    @param model: The model to report when the reply names none.
    @return: A new response body.
    """
    message = _encode_assistant(reply.parts, reasoning_history=True)
    message = {
        "role": "assistant",
        "content": message["content"],
        "refusal": None,
        **{k: v for k, v in message.items() if k not in ("role", "content")},
    }
    usage = reply.usage
    prompt = usage.prompt_tokens
    body: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
    }
    if usage.cache_read_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    if usage.reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return {
        "id": reply.id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": reply.model or model or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": stop_to_openai(reply.stop),
            }
        ],
        "usage": body,
    }
