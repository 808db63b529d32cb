"""
Responses request bodies to and from the canonical request.

Decoding (a client's C{POST /v1/responses}):

  - C{input}, a string or a list of items, becomes the messages:
    C{message} items (C{input_text}, C{input_image}, C{input_file},
    C{output_text} and C{refusal} parts), C{function_call} and
    C{function_call_output} items and C{reasoning} items.  Consecutive items
    of one side form one turn: reasoning, assistant text and calls the
    assistant's; user text and call outputs the user's.  C{system} and
    C{developer} messages join C{instructions} in the system prompt.
  - A reasoning item whose C{encrypted_content} packs Anthropic thinking
    (L{pylon_ai.formats.responses._thinking}) is that signed block again;
    any other keeps its summary, encrypted content and id for a Responses
    upstream.
  - Records of hosted tool calls (C{web_search_call}, ...) are left out:
    the model ran them, no upstream takes them back.
  - C{tools}: C{function} tools, C{namespace} tools (their functions, each
    with its namespace), and hosted tools (C{web_search}, C{file_search},
    C{custom}, ...) kept whole as L{HostedTool}s;
    L{adapt_request<pylon_ai.formats.responses.adapt_request>} drops those
    for other formats.
  - C{text.format}, C{reasoning} (C{effort}, C{summary}),
    C{max_output_tokens}, C{temperature}, C{top_p}, C{tool_choice},
    C{parallel_tool_calls}, C{user} and C{stream} have canonical slots.
  - C{store} is accepted and ignored: the gateway stores nothing.
    C{previous_response_id} and C{conversation} need stored state: they are
    refused unless the caller says that the upstream keeps it.
    C{item_reference} items are left out (nothing is stored to resolve
    them; the items sent whole carry the conversation).  C{include},
    C{prompt_cache_key}, C{client_metadata}, C{service_tier}, C{truncation},
    C{metadata}, ... are advisory.

Encoding (for a Responses upstream behind a Chat Completions or Messages
client) writes the same shapes back, with C{store: false}.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pylon_ai.formats._check import (
    JOIN,
    NO_DEFAULT,
    emit_extras,
    extras,
    field,
    items,
    json_object,
    positive,
    refuse,
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
    add_output_tool,
)
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.responses._thinking import unpack_thinking

__all__ = ["API", "FORMAT", "decode_request", "encode_request"]

#: This format's name in L{CanonicalRequest.source} and L{Extra.format}.
FORMAT = "responses"
#: This format's name in error messages.
API = "OpenAI Responses API"

_STATELESS = (
    "The gateway is stateless: it stores no responses or conversations, so "
    "{what} cannot be used with this model; send the whole conversation in "
    "'input' instead."
)

_HANDLED = frozenset(
    "model input instructions tools tool_choice parallel_tool_calls text "
    "reasoning max_output_tokens temperature top_p user stream".split()
)
_ADVISORY = frozenset(
    "store include prompt_cache_key prompt_cache_retention prompt_cache_options "
    "client_metadata service_tier truncation metadata safety_identifier "
    "stream_options max_tool_calls context_management".split()
)
_REFUSED: dict[str, Any] = {
    "background": False,
    "top_logprobs": 0,
    "prompt": NO_DEFAULT,
    "moderation": NO_DEFAULT,
}
#: Items that record a call the provider ran itself: no upstream takes
#: them back, and the model has seen their outcome in the text after them.
_HOSTED_RECORDS = frozenset(
    "web_search_call file_search_call code_interpreter_call "
    "image_generation_call mcp_list_tools mcp_call tool_search_call "
    "tool_search_output".split()
)
_SUMMARIES = ("auto", "concise", "detailed")


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- requests: decode ------------------------------------------------------------


def decode_request(body: Any, *, stateful: bool = False) -> CanonicalRequest:
    """
    Decode a Responses request body.

    @param body: The decoded JSON of the client's request (left untouched).
    @param stateful: The upstream keeps state (an OpenAI upstream reached
        through this format): C{previous_response_id} and C{conversation}
        are then kept as extras for it instead of refused.
    @return: The canonical request.
    @raise TranslationError: For an unknown or malformed field, or for state
        the gateway does not keep; C{param} names the field.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    stateful_keys = {"previous_response_id": NO_DEFAULT, "conversation": NO_DEFAULT}
    for key in stateful_keys:
        if body.get(key) is not None and not stateful:
            raise TranslationError(_STATELESS.format(what=repr(key)), key)
    found = extras(body, FORMAT, _HANDLED, _ADVISORY, {**_REFUSED, **stateful_keys})
    instructions = field(body, "instructions", str, "instructions")
    system = [TextPart(instructions, origin="instructions")] if instructions else []
    more, messages = _decode_input(body.get("input"), stateful)
    tools = field(body, "tools", list, "tools")
    decoded = _decode_tools(tools or [])
    stream = field(body, "stream", bool, "stream")
    return CanonicalRequest(
        source=FORMAT,
        model=field(body, "model", str, "model"),
        messages=messages,
        system=tuple(system + more),
        max_tokens=positive(body, "max_output_tokens"),
        temperature=field(body, "temperature", (int, float), "temperature"),
        top_p=field(body, "top_p", (int, float), "top_p"),
        stream=stream,
        # The Responses stream always ends with its usage.
        include_usage=bool(stream),
        tools=decoded,
        tool_choice=_decode_tool_choice(body.get("tool_choice"), bool(decoded)),
        parallel_tool_calls=field(
            body, "parallel_tool_calls", bool, "parallel_tool_calls"
        ),
        output_format=_decode_text(field(body, "text", dict, "text")),
        reasoning=_decode_reasoning(field(body, "reasoning", dict, "reasoning")),
        user=field(body, "user", str, "user"),
        extras=found,
    )


def _decode_reasoning(value: JSON | None) -> Reasoning | None:
    if value is None:
        return None
    effort = value.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise TranslationError(
            f"'reasoning.effort' must be one of {', '.join(EFFORTS)}.",
            "reasoning.effort",
        )
    summary = value.get("summary") or value.get("generate_summary")
    if summary is not None and summary not in _SUMMARIES:
        raise TranslationError(
            f"'reasoning.summary' must be one of {', '.join(_SUMMARIES)}.",
            "reasoning.summary",
        )
    if effort is None and summary is None:
        return None
    level: Effort | None = effort
    return Reasoning(effort=level, summary=summary)


def _decode_text(value: JSON | None) -> OutputFormat | None:
    if value is None:
        return None
    spec = field(value, "format", dict, "text.format")
    # text.verbosity is advisory: no other format has it.
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    if kind != "json_schema":
        raise TranslationError(
            f"'text.format': type {kind!r} cannot be translated.", "text.format.type"
        )
    return OutputFormat(
        "json_schema",
        schema=field(spec, "schema", dict, "text.format.schema", required=True),
        name=field(spec, "name", str, "text.format.name"),
        description=field(spec, "description", str, "text.format.description"),
        strict=field(spec, "strict", bool, "text.format.strict"),
    )


def _decode_function(tool: JSON, path: str, namespace: str | None) -> Tool:
    schema = field(tool, "parameters", dict, f"{path}.parameters")
    return Tool(
        name=field(tool, "name", str, f"{path}.name", required=True),
        description=field(tool, "description", str, f"{path}.description"),
        parameters=schema
        if schema is not None
        else {"type": "object", "properties": {}},
        strict=field(tool, "strict", bool, f"{path}.strict"),
        namespace=namespace,
        origin=path,
    )


def _decode_tools(tools: list[Any]) -> tuple[Tool | HostedTool, ...]:
    out: list[Tool | HostedTool] = []
    for path, tool in items(tools, "tools"):
        kind = field(tool, "type", str, f"{path}.type", required=True)
        if kind == "function":
            out.append(_decode_function(tool, path, None))
        elif kind == "namespace":
            namespace = field(tool, "name", str, f"{path}.name", required=True)
            children = field(tool, "tools", list, f"{path}.tools", required=True)
            for p, child in items(children, f"{path}.tools"):
                if child.get("type", "function") == "function":
                    out.append(_decode_function(child, p, namespace))
                else:
                    # A namespaced custom tool: as hosted as a custom one.
                    out.append(
                        HostedTool(FORMAT, str(child.get("type")), child, origin=p)
                    )
        else:
            out.append(HostedTool(FORMAT, kind, tool, origin=path))
    return tuple(out)


def _decode_tool_choice(value: Any, has_tools: bool) -> ToolChoice | None:
    if value is None:
        return None
    choice: ToolChoice
    if value in ("auto", "none", "required"):
        choice = ToolChoice(value)
    elif (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("name"), str)
    ):
        choice = ToolChoice("tool", value["name"])
    else:
        raise TranslationError(
            "'tool_choice' has a form that cannot be translated.", "tool_choice"
        )
    if not has_tools:
        if choice.mode in ("required", "tool"):
            raise TranslationError("'tool_choice' requires 'tools'.", "tool_choice")
        return None
    return choice


class _Turns:
    """
    Items folded into alternating turns.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._role: str | None = None
        self._parts: list[Part] = []
        self._origin: str | None = None

    def add(self, role: str, parts: list[Part], origin: str) -> None:
        if role != self._role:
            self.flush()
            self._role, self._origin = role, origin
        self._parts.extend(parts)

    def flush(self) -> None:
        if self._role is not None and self._parts:
            role: Literal["user", "assistant"] = (
                "user" if self._role == "user" else "assistant"
            )
            self.messages.append(Message(role, tuple(self._parts), origin=self._origin))
        self._role, self._parts = None, []


def _decode_input(
    value: Any, stateful: bool
) -> tuple[list[TextPart], tuple[Message, ...]]:
    if isinstance(value, str):
        return [], (
            Message("user", (TextPart(value, origin="input"),), origin="input"),
        )
    system: list[TextPart] = []
    turns = _Turns()
    for path, item in items(value, "input", "a string or an array of items"):
        kind = item.get("type", "message")
        if kind == "message":
            role = field(item, "role", str, f"{path}.role", required=True)
            content = item.get("content")
            where = f"{path}.content"
            if role in ("system", "developer"):
                system.append(TextPart(_text_of(content, where), origin=where))
            elif role == "user":
                turns.add("user", _decode_user(content, where), path)
            elif role == "assistant":
                turns.add("assistant", _decode_assistant(content, where), path)
            else:
                raise TranslationError(
                    f"'{path}.role': role {role!r} cannot be translated.",
                    f"{path}.role",
                )
        elif kind == "function_call":
            turns.add("assistant", [_decode_call(item, path)], path)
        elif kind == "function_call_output":
            turns.add("user", [_decode_output(item, path)], path)
        elif kind == "reasoning":
            part = _decode_reasoning_item(item, path)
            if part is not None:
                turns.add("assistant", [part], path)
        elif kind in _HOSTED_RECORDS:
            continue
        elif kind == "item_reference":
            # A reference to an output item of an earlier response (the AI
            # SDK sends them unless told store: false).  The gateway keeps
            # nothing to resolve it with: the reference is left out, and the
            # items sent whole (calls, their outputs) carry the turn.
            continue
        else:
            raise TranslationError(
                f"{path!r}: item type {kind!r} cannot be translated.", f"{path}.type"
            )
    turns.flush()
    return system, tuple(turns.messages)


def _text_parts(content: Any, path: str) -> list[TextPart]:
    if isinstance(content, str):
        return [TextPart(content, origin=path)]
    parts = []
    for p, part in items(content, path, "a string or an array of content parts"):
        if part.get("type") not in ("input_text", "output_text", "text"):
            raise TranslationError(f"{p!r} must be a text part here.", p)
        parts.append(TextPart(field(part, "text", str, f"{p}.text", required=True)))
    return parts


def _text_of(content: Any, path: str) -> str:
    return JOIN.join(p.text for p in _text_parts(content, path))


def _parse_data_url(url: str, path: str) -> tuple[str, str]:
    header, comma, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type:
        raise TranslationError(
            f"{path!r}: only base64 data: URLs can be translated.", path
        )
    return media_type, data


def _decode_image(part: JSON, path: str) -> ImagePart:
    detail = field(part, "detail", str, f"{path}.detail")
    url = field(part, "image_url", str, f"{path}.image_url")
    if url is None:
        if part.get("file_id") is not None:
            raise TranslationError(
                f"{path!r}: an image given by file id cannot be translated.",
                f"{path}.file_id",
            )
        raise TranslationError(
            f"Missing required parameter '{path}.image_url'.", f"{path}.image_url"
        )
    if url.startswith("data:"):
        media_type, data = _parse_data_url(url, f"{path}.image_url")
        return ImagePart(media_type=media_type, data=data, detail=detail, origin=path)
    if url.startswith(("http://", "https://")):
        return ImagePart(url=url, detail=detail, origin=path)
    raise TranslationError(
        f"'{path}.image_url' must be a data:, http: or https: URL.",
        f"{path}.image_url",
    )


def _decode_file(part: JSON, path: str) -> DocumentPart:
    name = field(part, "filename", str, f"{path}.filename")
    file_id = field(part, "file_id", str, f"{path}.file_id")
    if file_id is not None:
        return DocumentPart("file", file_id=file_id, title=name, origin=path)
    url = field(part, "file_url", str, f"{path}.file_url")
    if url is not None:
        return DocumentPart("url", url=url, title=name, origin=path)
    data = field(part, "file_data", str, f"{path}.file_data", required=True)
    media_type = "application/pdf"
    if data.startswith("data:"):
        media_type, data = _parse_data_url(data, f"{path}.file_data")
    return DocumentPart(
        "base64", media_type=media_type, data=data, title=name, origin=path
    )


def _decode_user(content: Any, path: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content, origin=path)]
    parts: list[Part] = []
    for p, part in items(content, path, "a string or an array of content parts"):
        kind = part.get("type")
        if kind == "input_text":
            text = field(part, "text", str, f"{p}.text", required=True)
            if text:
                parts.append(TextPart(text, origin=p))
        elif kind == "input_image":
            parts.append(_decode_image(part, p))
        elif kind == "input_file":
            parts.append(_decode_file(part, p))
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
    return parts


def _decode_assistant(content: Any, path: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content, origin=path)] if content else []
    parts: list[Part] = []
    for p, part in items(content, path, "a string or an array of content parts"):
        kind = part.get("type")
        if kind in ("output_text", "input_text"):
            text = field(part, "text", str, f"{p}.text", required=True)
        elif kind == "refusal":
            text = field(part, "refusal", str, f"{p}.refusal", required=True)
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
        if text:
            parts.append(TextPart(text, origin=p))
    return parts


def _decode_call(item: JSON, path: str) -> ToolCallPart:
    arguments = field(item, "arguments", str, f"{path}.arguments") or "{}"
    parsed = json_object(arguments)
    if parsed is None:
        raise TranslationError(
            f"'{path}.arguments' must be a JSON object.", f"{path}.arguments"
        )
    return ToolCallPart(
        id=field(item, "call_id", str, f"{path}.call_id", required=True),
        name=field(item, "name", str, f"{path}.name", required=True),
        arguments=parsed,
        namespace=field(item, "namespace", str, f"{path}.namespace"),
        origin=path,
    )


def _decode_output(item: JSON, path: str) -> ToolResultPart:
    call_id = field(item, "call_id", str, f"{path}.call_id", required=True)
    output = item.get("output")
    if output is None or isinstance(output, str):
        return ToolResultPart(call_id, output or "", origin=path)
    parts: list[TextPart | ImagePart | DocumentPart] = []
    for p, part in items(output, f"{path}.output", "a string or an array"):
        kind = part.get("type")
        if kind == "input_text":
            parts.append(
                TextPart(field(part, "text", str, f"{p}.text", required=True), origin=p)
            )
        elif kind == "input_image":
            parts.append(_decode_image(part, p))
        elif kind == "input_file":
            parts.append(_decode_file(part, p))
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
    return ToolResultPart(call_id, tuple(parts), origin=path)


def _decode_reasoning_item(
    item: JSON, path: str
) -> ReasoningPart | RedactedReasoningPart | None:
    encrypted = field(item, "encrypted_content", str, f"{path}.encrypted_content")
    if encrypted is not None:
        packed = unpack_thinking(encrypted, path)
        if packed is not None:
            return packed
    summary = tuple(
        field(s, "text", str, f"{p}.text", required=True)
        for p, s in items(item.get("summary") or [], f"{path}.summary")
    )
    content = tuple(
        field(c, "text", str, f"{p}.text", required=True)
        for p, c in items(item.get("content") or [], f"{path}.content")
    )
    text = JOIN.join(content or summary)
    if not text and encrypted is None:
        return None
    return ReasoningPart(
        text,
        encrypted_content=encrypted,
        summary=summary,
        id=field(item, "id", str, f"{path}.id"),
        origin=path,
    )


# -- requests: encode ------------------------------------------------------------


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
