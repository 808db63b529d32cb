"""
A Responses event stream from an upstream read into the event model:
L{ResponsesStreamDecoder}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pylon_ai._errors import ProviderStreamError, excerpt
from pylon_ai._json import loads
from pylon_ai.formats.canonical import JSON, RedactedReasoningPart
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    Stop,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from pylon_ai.formats.responses._reply import decode_reasoning

__all__ = ["ResponsesStreamDecoder"]


_DELTAS = frozenset(
    (
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.refusal.delta",
    )
)


class ResponsesStreamDecoder:
    """
    Turns the events of a Responses stream into L{ModelEvent}s.

    Text and refusal deltas are L{TextDelta}s; reasoning summary and
    reasoning text deltas L{ReasoningDelta}s (a reasoning item that packs
    Anthropic thinking, from a gateway in front, gives back its
    L{ReasoningSignature} or L{RedactedReasoning}); each C{function_call}
    item is a tool call, numbered in order.  C{response.completed} and
    C{response.incomplete} give the usage and the L{Stop};
    C{response.failed} and C{error} a L{StreamError}.  The client's
    namespace of a call is not kept: the event model has no slot for it.

    A I{light} decoder serves pass-through, where the events themselves are
    forwarded as they are and only the bookkeeping is needed: delta events
    are only checked to be JSON.
    """

    def __init__(self, light: bool = False) -> None:
        """
        @param light: Skip walking delta events.
        """
        self._light = light
        self._started = False
        self._calls: dict[str, list[Any]] = {}  # item id -> [index, args seen]
        self._called = False
        self.finished = False

    def feed(self, event_type: str, data: str) -> Iterable[ModelEvent]:
        """
        Decode one SSE event.

        @param event_type: The SSE event name (the data's C{type} decides).
        @raise ProviderStreamError: If the data is not a JSON object of the
            expected shape.
        """
        try:
            obj = loads(data)
        except ValueError:
            raise ProviderStreamError(
                "malformed Responses stream: data is not JSON", body=excerpt(data)
            ) from None
        if not isinstance(obj, dict):
            raise ProviderStreamError(
                "malformed Responses stream: data is not an object", body=excerpt(data)
            )
        kind = obj.get("type")
        if self._light and kind in _DELTAS:
            return ()
        try:
            return self._decode(kind, obj, data)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError):
            raise ProviderStreamError(
                "malformed Responses stream: unexpected event", body=excerpt(data)
            ) from None

    def interesting(self, data: bytes) -> bool:
        """
        Whether some complete events, as bytes, may carry what the books
        need: anything up to C{response.created}, then the end
        (C{response.completed}, C{.incomplete}, C{.failed}) or an error.  A
        false answer is sure; a true one may be wrong (the events are then
        decoded one by one).

        @param data: Complete events as the upstream sent them.
        """
        return (
            not self._started
            or b'"error"' in data
            or b'"response.completed"' in data
            or b'"response.incomplete"' in data
            or b'"response.failed"' in data
        )

    def plain(self, obj: object) -> bool:
        """
        Whether one parsed event surely carries nothing the books need
        (L{interesting} for one event already parsed): a delta once the
        response was created.
        """
        return self._started and type(obj) is dict and obj.get("type") in _DELTAS

    def _decode(self, kind: Any, obj: JSON, raw: str) -> list[ModelEvent]:
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return [TextDelta(obj["delta"])] if obj["delta"] else []
        if kind in (
            "response.reasoning_summary_text.delta",
            "response.reasoning_text.delta",
        ):
            return [ReasoningDelta(obj["delta"])] if obj["delta"] else []
        if kind == "response.function_call_arguments.delta":
            call = self._calls[obj["item_id"]]
            call[1] = True
            return (
                [ToolCallDelta(call[0], arguments=obj["delta"])] if obj["delta"] else []
            )
        if kind == "response.output_item.added":
            return self._added(obj["item"])
        if kind == "response.output_item.done":
            return self._done(obj["item"])
        if kind == "response.created":
            self._started = True
            response = obj["response"]
            return [MessageStart(response.get("id"), response.get("model"))]
        if kind in ("response.completed", "response.incomplete"):
            return self._end(obj["response"])
        if kind == "response.failed":
            self.finished = True
            error = obj["response"].get("error") or {}
            return [self._error(error.get("code"), error.get("message"), raw)]
        if kind == "error":
            self.finished = True
            return [self._error(obj.get("code"), obj.get("message"), raw)]
        return []

    def _added(self, item: JSON) -> list[ModelEvent]:
        if item.get("type") != "function_call":
            return []
        index = len(self._calls)
        self._called = True
        args = item.get("arguments") or ""
        self._calls[item["id"] if item.get("id") else item["call_id"]] = [
            index,
            bool(args),
        ]
        return [ToolCallDelta(index, item["call_id"], item["name"], args)]

    def _done(self, item: JSON) -> list[ModelEvent]:
        kind = item.get("type")
        if kind == "reasoning":
            part = decode_reasoning(item, "item")
            if isinstance(part, RedactedReasoningPart):
                return [RedactedReasoning(part.data)]
            if part.signature:
                return [ReasoningSignature(part.signature)]
            return []
        if kind != "function_call":
            return []
        key = item["id"] if item.get("id") else item["call_id"]
        call = self._calls.get(key)
        if call is None:
            # Announced only when done: the whole call at once.
            return self._added(item)
        if not call[1] and item.get("arguments"):
            call[1] = True
            return [ToolCallDelta(call[0], arguments=item["arguments"])]
        return []

    def _end(self, response: JSON) -> list[ModelEvent]:
        self.finished = True
        events: list[ModelEvent] = []
        usage = response.get("usage")
        if isinstance(usage, dict):
            details = usage.get("input_tokens_details") or {}
            cached = details.get("cached_tokens") or 0
            written = details.get("cache_write_tokens") or 0
            events.append(
                Usage(
                    max((usage.get("input_tokens") or 0) - cached - written, 0),
                    usage.get("output_tokens"),
                    cached,
                    written,
                )
            )
        details = response.get("incomplete_details") or {}
        if response.get("status") == "incomplete":
            reason = details.get("reason")
            if reason == "content_filter":
                events.append(Stop("refusal", reason))
            else:
                events.append(Stop("max_tokens", reason))
        else:
            events.append(Stop("tool_use" if self._called else "end_turn", "completed"))
        return events

    @staticmethod
    def _error(code: Any, message: Any, raw: str) -> StreamError:
        code = code if isinstance(code, str) else None
        status = {"rate_limit_exceeded": 429, "server_error": 500}.get(code or "")
        return StreamError(
            status,
            code,
            message if isinstance(message, str) else "provider reported an error",
            excerpt(raw),
        )

    def finish(self) -> Iterable[ModelEvent]:
        """
        The stream ended.

        @raise ProviderStreamError: If it ended before C{response.completed}
            (or C{.incomplete}, C{.failed}, C{error}).
        """
        if self.finished:
            return ()
        raise ProviderStreamError("stream ended before response.completed")
