"""
The Chat Completions format: request bodies decoded into the canonical request.
"""

from __future__ import annotations

from typing import Any

from pylon_ai.formats._check import (
    JOIN,
    NO_DEFAULT,
    extras,
    field,
    items,
    json_object,
    positive,
    string_item,
)
from pylon_ai.formats.canonical import (
    EFFORTS,
    JSON,
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
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from pylon_ai.formats.errors import TranslationError

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


def decode_reasoning(msg: JSON, path: str) -> list[Part]:
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
    parts = decode_reasoning(msg, path)
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
