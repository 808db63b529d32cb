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

The model lives in private modules with one job each, exported here:
L{pylon_ai.formats._canonical_parts} (the messages and their parts),
L{pylon_ai.formats._canonical_request} (the request, its tools and options,
the effort levels), L{pylon_ai.formats._canonical_reply} (the whole reply)
and L{pylon_ai.formats._canonical_output} (the forced-tool technique).
"""

from pylon_ai.formats._canonical_output import (
    STRUCTURED_OUTPUT_TOOL,
    add_output_tool,
    forced_tool_choice,
    structured_output_tool,
    unwrap_structured_output,
)
from pylon_ai.formats._canonical_parts import (
    JSON,
    DocumentPart,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from pylon_ai.formats._canonical_reply import Reply, ReplyUsage, ToolCall, reply_usage
from pylon_ai.formats._canonical_request import (
    EFFORTS,
    MIN_BUDGET,
    CanonicalRequest,
    Effort,
    Extra,
    HostedTool,
    OutputFormat,
    Reasoning,
    ThinkingMode,
    Tool,
    ToolChoice,
    budget_for_effort,
    effort_for_budget,
)

__all__ = [
    "EFFORTS",
    "JSON",
    "MIN_BUDGET",
    "STRUCTURED_OUTPUT_TOOL",
    "CanonicalRequest",
    "DocumentPart",
    "Effort",
    "Extra",
    "HostedTool",
    "ImagePart",
    "Message",
    "OutputFormat",
    "Part",
    "Reasoning",
    "ReasoningPart",
    "RedactedReasoningPart",
    "Reply",
    "ReplyUsage",
    "TextPart",
    "ThinkingMode",
    "Tool",
    "ToolCall",
    "ToolCallPart",
    "ToolChoice",
    "ToolResultPart",
    "add_output_tool",
    "budget_for_effort",
    "effort_for_budget",
    "forced_tool_choice",
    "reply_usage",
    "structured_output_tool",
    "unwrap_structured_output",
]
