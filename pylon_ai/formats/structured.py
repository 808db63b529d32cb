"""
The forced-tool technique of structured output, undone on a stream.

When a request's output format went upstream as a forced call of
L{STRUCTURED_OUTPUT_TOOL} (see L{pylon_ai.formats.canonical}), the
client asked for text, not a tool call: L{StructuredOutputEvents} turns
that call's argument fragments into text deltas, and the C{tool_use} stop
into C{end_turn} when no other tool was called.  The client's own tool calls
pass with their indices renumbered to stay consecutive.
"""

from __future__ import annotations

from collections.abc import Callable

from pylon_ai.formats.canonical import STRUCTURED_OUTPUT_TOOL
from pylon_ai.formats.events import ModelEvent, Stop, TextDelta, ToolCallDelta

__all__ = ["StructuredOutputEvents"]


class StructuredOutputEvents:
    """
    Wraps an event callback: the events of a reply to a request that used
    the forced-tool technique go in, the events the client expects come out.
    """

    def __init__(self, on_event: Callable[[ModelEvent], object]) -> None:
        """
        @param on_event: Called with each event, after the rewrite.
        """
        self._on_event = on_event
        self._answer: int | None = None
        # Upstream index of each of the client's own calls -> its index.
        self._calls: dict[int, int] = {}

    def __call__(self, event: ModelEvent) -> object:
        """
        Rewrite one event and pass it on.
        """
        kind = type(event)
        if kind is ToolCallDelta:
            assert isinstance(event, ToolCallDelta)
            index = event.index
            if index == self._answer or (
                event.name == STRUCTURED_OUTPUT_TOOL and self._answer is None
            ):
                self._answer = index
                if not event.arguments:
                    return None
                return self._on_event(TextDelta(event.arguments))
            own = self._calls.get(index)
            if own is None:
                own = self._calls[index] = len(self._calls)
            if own != index:
                event = ToolCallDelta(own, event.id, event.name, event.arguments)
        elif kind is Stop:
            assert isinstance(event, Stop)
            if event.reason == "tool_use" and not self._calls:
                event = Stop("end_turn", event.raw)
        return self._on_event(event)
