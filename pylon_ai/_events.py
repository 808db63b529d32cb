"""
Where the event model used to live: it is L{pylon_ai.formats.events} now.

Kept for the modules not yet moved to the new home (import from
L{pylon_ai.formats.events} in new code).
"""

from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningEvent,
    ReasoningSignature,
    RedactedReasoning,
    Stop,
    StopReason,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    merge_usage,
    stop_from_anthropic,
    stop_from_openai,
    stop_to_openai,
)

__all__ = [
    "MessageStart",
    "ModelEvent",
    "ReasoningDelta",
    "ReasoningEvent",
    "ReasoningSignature",
    "RedactedReasoning",
    "Stop",
    "StopReason",
    "StreamError",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
    "merge_usage",
    "stop_from_anthropic",
    "stop_from_openai",
    "stop_to_openai",
]
