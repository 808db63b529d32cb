"""
The canonical request (see L{pylon_ai.formats.canonical}, which exports it):
L{CanonicalRequest} with its tools and options (L{Tool}, L{HostedTool},
L{ToolChoice}, L{OutputFormat}, L{Reasoning}, L{Extra}), and the reasoning
effort levels with their thinking budgets (the table is in
L{pylon_ai.formats.canonical}'s docstring).
"""

from __future__ import annotations

from typing import Any, Literal

from attrs import field, frozen

from pylon_ai.formats._canonical_parts import JSON, Message, TextPart, _origin

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
