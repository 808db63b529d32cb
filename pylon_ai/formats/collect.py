"""
A whole reply collected from a stream's events, so that a reply streamed
from an upstream in one format is answered in another format's whole body.
"""

from __future__ import annotations

from attrs import define, field

from pylon_ai._json import loads
from pylon_ai.formats.canonical import (
    Part,
    ReasoningPart,
    RedactedReasoningPart,
    Reply,
    TextPart,
    ToolCallPart,
    reply_usage,
)
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    Stop,
    TextDelta,
    ToolCallDelta,
    Usage,
    merge_usage,
)

__all__ = ["ReplyCollector"]


@define
class _Pending:
    kind: str  # "text", "reasoning", "redacted" or "tool"
    pieces: list[str] = field(factory=list)
    signature: str | None = None
    call_id: str | None = None
    name: str | None = None


@define
class ReplyCollector:
    """
    Collects the events of one reply into a L{Reply}.

    Parts keep the order in which they began: each block of reasoning (up
    to its signature) is one L{ReasoningPart}, consecutive text deltas one
    L{TextPart}, and the fragments of one tool call (by index) one
    L{ToolCallPart} where its first fragment came.
    """

    _id: str | None = field(default=None, init=False)
    _model: str | None = field(default=None, init=False)
    _usage: Usage | None = field(default=None, init=False)
    _stop: Stop | None = field(default=None, init=False)
    _parts: list[_Pending] = field(factory=list, init=False)
    _tools: dict[int, _Pending] = field(factory=dict, init=False)

    def add(self, event: ModelEvent) -> None:
        """
        Collect one event.
        """
        if isinstance(event, TextDelta):
            self._piece("text").pieces.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._piece("reasoning").pieces.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self._tool(event)
        elif isinstance(event, ReasoningSignature):
            self._piece("reasoning").signature = event.signature
        elif isinstance(event, RedactedReasoning):
            self._parts.append(_Pending("redacted", [event.data]))
        elif isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
        elif isinstance(event, MessageStart):
            self._id = self._id or event.id
            self._model = self._model or event.model
        elif isinstance(event, Stop):
            self._stop = event

    def _piece(self, kind: str) -> _Pending:
        last = self._parts[-1] if self._parts else None
        # A signed block of reasoning is closed: more reasoning is a new one.
        if last is None or last.kind != kind or last.signature is not None:
            last = _Pending(kind)
            self._parts.append(last)
        return last

    def _tool(self, event: ToolCallDelta) -> None:
        entry = self._tools.get(event.index)
        if entry is None:
            entry = self._tools[event.index] = _Pending("tool")
            self._parts.append(entry)
        entry.call_id = entry.call_id or event.id
        entry.name = entry.name or event.name
        entry.pieces.append(event.arguments)

    def reply(self) -> Reply:
        """
        The reply collected so far.

        @raise ValueError: A tool call's arguments are not a JSON object.
        """
        parts: list[Part] = []
        for entry in self._parts:
            text = "".join(entry.pieces)
            if entry.kind == "text":
                parts.append(TextPart(text))
            elif entry.kind == "reasoning":
                parts.append(ReasoningPart(text, signature=entry.signature))
            elif entry.kind == "redacted":
                parts.append(RedactedReasoningPart(text))
            else:
                arguments = loads(text) if text.strip() else {}
                if not isinstance(arguments, dict):
                    raise ValueError(
                        f"tool call {entry.call_id} arguments are not an object"
                    )
                parts.append(
                    ToolCallPart(entry.call_id or "", entry.name or "", arguments)
                )
        stop = self._stop
        if stop is None:
            has_calls = any(isinstance(p, ToolCallPart) for p in parts)
            stop = Stop("tool_use" if has_calls else "end_turn")
        return Reply(
            id=self._id,
            model=self._model,
            parts=tuple(parts),
            stop=stop,
            usage=reply_usage(self._usage or Usage()),
        )
