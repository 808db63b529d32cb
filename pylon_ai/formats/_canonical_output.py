"""
The forced-tool technique of structured output on canonical requests and
replies (see "Structured output without native support" in
L{pylon_ai.formats.canonical}, which exports these): the tool and the tool
choice that force the answer, and the reply's call turned back into text.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from attrs import evolve

from pylon_ai.formats._canonical_parts import JSON, Part, TextPart, ToolCallPart
from pylon_ai.formats._canonical_reply import Reply
from pylon_ai.formats._canonical_request import OutputFormat, Tool, ToolChoice
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.events import Stop

#: The name of the tool of the forced-tool structured output technique.
STRUCTURED_OUTPUT_TOOL = "structured_output"


def forced_tool_choice(choice: ToolChoice | None, own_tools: bool) -> ToolChoice:
    """
    The tool choice once the forced-tool technique added its tool: that tool
    alone when the client has no tools of its own (or chose none), else any
    tool (the client's or the answer) where the client let the model choose.

    @param choice: The client's tool choice, if any.
    @param own_tools: Whether the client sent tools of its own.
    """
    if not own_tools or (choice is not None and choice.mode == "none"):
        return ToolChoice("tool", STRUCTURED_OUTPUT_TOOL)
    if choice is None or choice.mode == "auto":
        return ToolChoice("required")
    return choice


def add_output_tool(
    tools: list[JSON],
    names: list[str | None],
    output: OutputFormat,
    choice: ToolChoice | None,
    asked_with: str,
    encode: Callable[[Tool], JSON],
) -> ToolChoice:
    """
    The forced-tool technique on a request's encoded tools: its tool is
    appended to C{tools}, and the tool choice that forces it is returned.

    @param names: The names of C{tools} (none may be the technique's).
    @param asked_with: How the client asked for the output format, for
        the error (e.g. C{"'response_format'"}).
    @param encode: Encodes a tool in the upstream's format.
    @raise TranslationError: If a client tool has the technique's name.
    """
    if STRUCTURED_OUTPUT_TOOL in names:
        raise TranslationError(
            f"A tool may not be named {STRUCTURED_OUTPUT_TOOL!r} with "
            f"{asked_with} on this model.",
            "tools",
        )
    own = bool(tools)
    tools.append(encode(structured_output_tool(output)))
    return forced_tool_choice(choice, own)


def structured_output_tool(output: OutputFormat) -> Tool:
    """
    The tool of the forced-tool technique for C{output}.
    """
    schema = output.schema if output.kind == "json_schema" else None
    return Tool(
        name=STRUCTURED_OUTPUT_TOOL,
        description=output.description
        or "Give your final answer by calling this tool; its input is the answer.",
        parameters=schema or {"type": "object"},
    )


def unwrap_structured_output(reply: Reply) -> Reply:
    """
    Undo the forced-tool technique on a reply: the call of
    L{STRUCTURED_OUTPUT_TOOL} becomes the text of the reply (its arguments
    as JSON), and a reply that called no other tool ends with C{end_turn}.

    @return: C{reply} itself when it has no such call.
    """
    parts: list[Part] = []
    found = False
    for part in reply.parts:
        if isinstance(part, ToolCallPart) and part.name == STRUCTURED_OUTPUT_TOOL:
            found = True
            text = json.dumps(part.arguments, separators=(",", ":"), ensure_ascii=False)
            parts.append(TextPart(text))
        else:
            parts.append(part)
    if not found:
        return reply
    stop = reply.stop
    if stop.reason == "tool_use" and not any(
        isinstance(p, ToolCallPart) for p in parts
    ):
        stop = Stop("end_turn", stop.raw)
    return evolve(reply, parts=tuple(parts), stop=stop)
