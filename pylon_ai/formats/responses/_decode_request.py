"""
Decoding a Responses request body (a client's C{POST /v1/responses}) into
the canonical request: its fields, tools, text format and reasoning options.
Its C{input} items become the messages in
L{pylon_ai.formats.responses._decode_input}.

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
"""

from __future__ import annotations

from typing import Any

from pylon_ai.formats._check import (
    NO_DEFAULT,
    extras,
    field,
    items,
    positive,
)
from pylon_ai.formats.canonical import (
    EFFORTS,
    JSON,
    CanonicalRequest,
    Effort,
    HostedTool,
    OutputFormat,
    Reasoning,
    TextPart,
    Tool,
    ToolChoice,
)
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.responses._decode_input import _decode_input

__all__ = ["API", "FORMAT", "decode_request"]


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
_SUMMARIES = ("auto", "concise", "detailed")


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
