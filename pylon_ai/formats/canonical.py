"""
The canonical request and reply: the hub every wire format decodes into and
encodes from.

A wire format module (L{pylon_ai.formats.chat}, L{pylon_ai.formats.messages})
turns its request body into a L{CanonicalRequest} and back, and its whole
reply body into a L{Reply} and back.  Translating between two formats is
C{decode} of one and C{encode} of the other; a same-format request is never
decoded (it passes through as it came).

What the model holds:

  - L{Message}s of typed parts: L{TextPart}, L{ImagePart}, L{DocumentPart},
    L{ToolCallPart}, L{ToolResultPart}, L{ReasoningPart} (with its Anthropic
    signature, or a Responses item's encrypted content and summary) and
    L{RedactedReasoningPart}.  There are two roles: tool results are parts of
    a user message (Anthropic's and, item by item, the Responses API's view),
    and a Chat Completions C{tool} message is decoded into one.
  - the system prompt, as text parts that keep their cache hints;
  - L{Tool}s (functions, with an optional namespace for the Responses API's
    namespace tools) and L{HostedTool}s (a format's own server-side tools,
    kept opaque), a L{ToolChoice} and C{parallel_tool_calls};
  - an L{OutputFormat} (C{json_schema} or C{json_object});
  - L{Reasoning}: Anthropic's thinking mode and budget, an effort level, and
    the display and summary settings;
  - sampling (C{temperature}, C{top_p}, C{top_k}), C{stop}, C{max_tokens},
    C{user}, the stream flags;
  - L{Extra}s: top-level fields of the source format the model has no slot
    for.  An advisory extra (C{seed}, C{context_management}, ...) is sent on
    by an encoder of the same format and dropped by the others; any other
    extra is sent on by the same format and refused (a 400 naming it) by the
    others.

Every part and tool carries C{origin}, its path in the client's request, so
that an encoder that cannot express it names the client's field.  C{origin}
takes no part in equality.

Reasoning effort and thinking budgets
=====================================

  Anthropic's C{thinking: {type: enabled, budget_tokens: N}} maps to an effort
  level by L{effort_for_budget}::

      budget_tokens        effort
      N <= 2048            low
      2048 < N <= 8192     medium
      8192 < N             high

  and an effort level to a budget by L{budget_for_effort} (each lands in its
  own band, so the round trip keeps the level)::

      none      no thinking
      minimal   1024 (Anthropic's minimum)
      low       2048
      medium    8192
      high      16384
      xhigh     24576
      max       31999

  C{thinking: {type: adaptive}} lets the model decide: its effort is
  C{output_config.effort} when given, else none is sent (the upstream's
  default applies).  C{disabled} and C{between_tools} send no effort.

Structured output without native support
========================================

  Where the target cannot constrain the reply to a schema (Anthropic has no
  C{json_object}; some models have no structured output at all), the
  encoders use the forced-tool technique: one extra tool named
  L{STRUCTURED_OUTPUT_TOOL} whose input schema is the wanted schema, and a
  tool choice that forces a call (that tool alone when the client has no
  tools of its own, any tool otherwise).  The reply's call of that tool is
  the answer: L{unwrap_structured_output} turns it back into text (its
  arguments as JSON) with the stop reason C{end_turn}.  Anthropic refuses
  thinking with a forced tool choice, so thinking is left off then.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from attrs import evolve, field, frozen

from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.events import Stop, Usage

JSON = dict[str, Any]

#: Reasoning effort levels: the union of OpenAI's C{reasoning_effort} and
#: Anthropic's C{output_config.effort} vocabularies, weakest first.
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
EFFORTS: tuple[Effort, ...] = (
    "none",
    "minimal",
    "low",
    "medium",
    "high",
    "xhigh",
    "max",
)

#: Anthropic's C{thinking.type}s.
ThinkingMode = Literal["enabled", "adaptive", "disabled", "between_tools"]

#: The smallest thinking budget Anthropic accepts.
MIN_BUDGET = 1024

_BUDGETS: dict[str, int] = {
    "minimal": MIN_BUDGET,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 31999,
}

#: The name of the tool of the forced-tool structured output technique.
STRUCTURED_OUTPUT_TOOL = "structured_output"


def effort_for_budget(budget: int) -> Effort:
    """
    The effort level of a thinking budget (see the module's table).

    @param budget: Anthropic's C{budget_tokens}.
    """
    if budget <= 2048:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


def budget_for_effort(effort: Effort) -> int | None:
    """
    The thinking budget for an effort level (see the module's table).

    @return: The budget, or L{None} for C{"none"} (no thinking).
    """
    return _BUDGETS.get(effort)


# -- content parts ---------------------------------------------------------------


def _origin() -> Any:
    return field(default=None, eq=False, kw_only=True)


@frozen
class TextPart:
    """
    Text.

    @ivar text: The text (may be empty where the client sent it so).
    @ivar cache_control: An Anthropic cache breakpoint after this part, kept
        for targets that have one.
    @ivar origin: Where the part stands in the client's request.
    """

    text: str
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ImagePart:
    """
    An image, by URL or inline.

    @ivar url: An C{http(s)} URL, or L{None} when inline.
    @ivar media_type: The inline image's type (C{"image/png"}).
    @ivar data: The inline image, base64.
    @ivar detail: OpenAI's resolution hint (C{"low"}, C{"high"}, C{"auto"}).
    """

    url: str | None = None
    media_type: str | None = None
    data: str | None = None
    detail: str | None = None
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class DocumentPart:
    """
    A document (a PDF or plain text).

    @ivar source: How it is given: C{"base64"} (C{data}, C{media_type}),
        C{"text"} (C{data} is the text), C{"url"} (C{url}) or C{"file"} (a
        provider file id in C{file_id}: valid only at that provider).
    @ivar title: Its title or file name.
    @ivar context: Anthropic's context text about it.
    @ivar citations: Anthropic's citation settings.
    """

    source: Literal["base64", "text", "url", "file"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    title: str | None = None
    context: str | None = None
    citations: JSON | None = None
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ToolCallPart:
    """
    A call of a tool by the assistant.

    @ivar id: The call id (C{tool_use} id, C{tool_call} id, C{call_id}).
    @ivar name: The tool name.
    @ivar arguments: The arguments, a JSON object.
    @ivar namespace: The Responses API namespace of the tool, if any.
    """

    id: str
    name: str
    arguments: JSON
    namespace: str | None = None
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ToolResultPart:
    """
    The result of a tool call, sent by the user side.

    @ivar call_id: The id of the call it answers.
    @ivar content: A string, or parts (text, images, documents): formats
        keep the distinction, so the canonical model keeps it too.
    @ivar is_error: The tool failed (Anthropic's C{is_error}).
    """

    call_id: str
    content: str | tuple[TextPart | ImagePart | DocumentPart, ...] = ""
    is_error: bool = False
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ReasoningPart:
    """
    Reasoning the assistant produced.

    @ivar text: The visible reasoning (Anthropic C{thinking}, Chat
        Completions C{reasoning_content}).
    @ivar signature: Anthropic's signature of C{text}: only with it can an
        Anthropic upstream take the block back.
    @ivar encrypted_content: A Responses reasoning item's opaque content.
    @ivar summary: A Responses reasoning item's summary texts.
    @ivar id: A Responses reasoning item's id.
    """

    text: str = ""
    signature: str | None = None
    encrypted_content: str | None = None
    summary: tuple[str, ...] = ()
    id: str | None = None
    origin: str | None = _origin()


@frozen
class RedactedReasoningPart:
    """
    Reasoning the provider encrypted (Anthropic C{redacted_thinking}).

    @ivar data: The opaque content, sent back as it came.
    """

    data: str
    origin: str | None = _origin()


Part = (
    TextPart
    | ImagePart
    | DocumentPart
    | ToolCallPart
    | ToolResultPart
    | ReasoningPart
    | RedactedReasoningPart
)


@frozen
class Message:
    """
    One turn of the conversation.

    @ivar role: C{"user"} (which also carries tool results) or
        C{"assistant"}.
    @ivar parts: Its content, in order.
    """

    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]
    origin: str | None = _origin()


# -- tools and options ------------------------------------------------------------


@frozen
class Tool:
    """
    A function the model may call.

    @ivar parameters: The JSON schema of its arguments.
    @ivar strict: OpenAI's and Anthropic's strict schema adherence, if set.
    @ivar namespace: The Responses API namespace it was flattened from.
    """

    name: str
    description: str | None = None
    parameters: JSON = field(factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    namespace: str | None = None
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class HostedTool:
    """
    A tool one format's provider runs itself (Anthropic's C{web_search_...},
    a Responses C{web_search} or C{file_search}, a Chat Completions
    C{custom} tool), kept as it came.  Its own format sends it on; another
    format translates it where it has an equivalent, or refuses it.

    @ivar format: The format it came in (C{"chat"}, C{"messages"}, ...).
    @ivar kind: Its C{type}.
    @ivar spec: The whole tool object.
    """

    format: str
    kind: str
    spec: JSON
    origin: str | None = _origin()


@frozen
class ToolChoice:
    """
    Which tool the model must call.

    @ivar mode: C{"auto"}, C{"none"}, C{"required"} (any tool) or C{"tool"}
        (the one named).
    """

    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None


@frozen
class OutputFormat:
    """
    A constraint on the reply's text.

    @ivar kind: C{"json_schema"} (C{schema} holds it) or C{"json_object"}.
    @ivar name: OpenAI's schema name.
    @ivar strict: OpenAI's strict adherence flag, if set.
    """

    kind: Literal["json_schema", "json_object"]
    schema: JSON | None = None
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


@frozen
class Reasoning:
    """
    How much the model should think.

    @ivar mode: Anthropic's C{thinking.type}, when the client set it.
    @ivar budget_tokens: Anthropic's thinking budget (mode C{enabled}).
    @ivar effort: An effort level (OpenAI's C{reasoning_effort}, Anthropic's
        C{output_config.effort}).
    @ivar display: Anthropic's C{thinking.display}.
    @ivar summary: The Responses API's C{reasoning.summary}.
    """

    mode: ThinkingMode | None = None
    budget_tokens: int | None = None
    effort: Effort | None = None
    display: str | None = None
    summary: str | None = None

    def requested_effort(self) -> Effort | None:
        """
        The effort level this asks for, in a format that has only levels:
        the explicit effort, else the level of an C{enabled} budget; L{None}
        for C{disabled}, C{between_tools} and a bare C{adaptive}.
        """
        if self.mode in ("disabled", "between_tools"):
            return None
        if self.effort is not None:
            return self.effort
        if self.mode == "enabled" and self.budget_tokens is not None:
            return effort_for_budget(self.budget_tokens)
        return None


@frozen
class Extra:
    """
    A top-level field of the source format the canonical model has no slot
    for.

    @ivar format: The source format.
    @ivar advisory: It does not change the reply, so other formats drop it.
    """

    format: str
    key: str
    value: Any
    advisory: bool


@frozen
class CanonicalRequest:
    """
    A completion request, independent of its wire format.

    @ivar source: The format it was decoded from.
    @ivar model: The model the client asked for, if it named one.
    @ivar max_tokens: The reply length limit (including thinking), if set.
    @ivar stream: The client's C{stream} flag, if it sent one.
    @ivar include_usage: The client asked for a usage report in the stream.
    @ivar parallel_tool_calls: L{False} when the client wants one tool call
        at most per turn; L{None} when it did not say.
    @ivar user: An end-user id (C{user}, C{metadata.user_id}).
    """

    source: str
    model: str | None
    messages: tuple[Message, ...]
    system: tuple[TextPart, ...] = ()
    max_tokens: int | None = None
    temperature: float | int | None = None
    top_p: float | int | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool | None = None
    include_usage: bool = False
    tools: tuple[Tool | HostedTool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    output_format: OutputFormat | None = None
    reasoning: Reasoning | None = None
    user: str | None = None
    extras: tuple[Extra, ...] = ()


# -- replies ------------------------------------------------------------------------


@frozen
class ReplyUsage:
    """
    Token counts of a whole reply.

    @ivar input_tokens: Prompt tokens neither read from nor written to a
        cache (Anthropic's C{input_tokens}).
    @ivar cache_read_tokens: Prompt tokens read from a cache.
    @ivar cache_creation_tokens: Prompt tokens written to a cache.
    @ivar reasoning_tokens: Output tokens spent reasoning, when reported.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        """
        Every prompt token, cached or not (OpenAI's C{prompt_tokens}).
        """
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens


def reply_usage(usage: Usage) -> ReplyUsage:
    """
    The L{ReplyUsage} of a stream's L{Usage} (counts not reported are 0).
    """
    return ReplyUsage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=usage.cache_read_tokens or 0,
        cache_creation_tokens=usage.cache_creation_tokens or 0,
    )


@frozen
class Reply:
    """
    A whole (non-streaming) reply.

    @ivar id: The provider's id, if it gave one.
    @ivar model: The model that answered, if the reply names it.
    @ivar parts: Text, tool calls and reasoning, in order.
    @ivar stop: Why it ended.
    @ivar stop_sequence: The stop sequence that ended it, if one did.
    """

    id: str | None
    model: str | None
    parts: tuple[Part, ...]
    stop: Stop
    usage: ReplyUsage = ReplyUsage()
    stop_sequence: str | None = None


@frozen
class ToolCall:
    """
    A complete tool call with its arguments as JSON text, as a whole reply
    is built from pieces (L{pylon_ai.testing}'s fake provider).

    @ivar id: The call id.
    @ivar name: The tool name.
    @ivar arguments: The arguments as a JSON document (C{""} means C{{}}).
    """

    id: str
    name: str
    arguments: str = ""

    def part(self) -> ToolCallPart:
        """
        The call as a L{ToolCallPart}.

        @raise ValueError: Its arguments are not a JSON object.
        """
        arguments = json.loads(self.arguments) if self.arguments.strip() else {}
        if not isinstance(arguments, dict):
            raise ValueError(f"tool call {self.id} arguments are not a JSON object")
        return ToolCallPart(self.id, self.name, arguments)


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
