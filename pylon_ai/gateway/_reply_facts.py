"""
What the gateway needs of an upstream's whole (non-streaming) reply, as
model events.
"""

from __future__ import annotations

from typing import Any

from pylon_ai.formats.events import MessageStart, ModelEvent, Usage


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def reply_facts(format: str, obj: dict[str, Any]) -> list[ModelEvent]:
    """
    What the gateway needs of a whole reply, as model events: a
    L{MessageStart} with its id and model, and its L{Usage} (input and
    output tokens, counted as streams count them: cache tokens apart).

    @param format: C{"anthropic"} (a message), C{"openai"} (a Chat
        Completions completion) or C{"responses"} (a C{response} object).
    @param obj: The reply.
    """
    model = obj.get("model")
    message_id = obj.get("id")
    events: list[ModelEvent] = [
        MessageStart(
            message_id if isinstance(message_id, str) else None,
            model if isinstance(model, str) else None,
        )
    ]
    usage = obj.get("usage")
    if isinstance(usage, dict):
        if format == "anthropic":
            inp, out = usage.get("input_tokens"), usage.get("output_tokens")
        elif format == "responses":
            inp, out = usage.get("input_tokens"), usage.get("output_tokens")
            # Counted as the stream decoder counts them: cache reads apart.
            details = usage.get("input_tokens_details")
            cached = (
                _count(details.get("cached_tokens"))
                if isinstance(details, dict)
                else None
            )
            total = _count(inp)
            if total is not None and cached:
                inp = max(total - cached, 0)
        else:
            inp, out = usage.get("prompt_tokens"), usage.get("completion_tokens")
        events.append(Usage(_count(inp), _count(out)))
    return events
