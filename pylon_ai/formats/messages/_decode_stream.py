"""
The Messages format: an upstream's event stream decoded into model events.

Thinking blocks become reasoning events: their text as L{ReasoningDelta}s,
the C{signature_delta} that closes each as a L{ReasoningSignature}, a
C{redacted_thinking} block as one L{RedactedReasoning}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pylon_ai._errors import ANTHROPIC_ERROR_STATUS, ProviderStreamError, excerpt
from pylon_ai._json import loads
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    stop_from_anthropic,
)


def _count(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return value if isinstance(value, int) else None


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        _count(raw, "input_tokens"),
        _count(raw, "output_tokens"),
        _count(raw, "cache_read_input_tokens"),
        _count(raw, "cache_creation_input_tokens"),
    )


def error_event(data: dict[str, Any], raw: str) -> StreamError:
    """
    The L{StreamError} for an Anthropic error object
    (C{{"type": "error", "error": {"type", "message"}}}).
    """
    err = data.get("error")
    if not isinstance(err, dict):
        err = {}
    error_type = err.get("type")
    if not isinstance(error_type, str):
        error_type = None
    message = err.get("message")
    return StreamError(
        ANTHROPIC_ERROR_STATUS.get(error_type or ""),
        error_type,
        message if isinstance(message, str) else "provider reported an error",
        excerpt(raw),
    )


class AnthropicStreamDecoder:
    """
    Turns the events of a Messages stream into L{ModelEvent}s.

    Feed it each SSE event's type and data with L{feed}; call L{finish} at
    the end of the stream.

    A I{light} decoder serves pass-through, where the events are forwarded
    as they are and only the bookkeeping is needed: once the first content
    arrived, C{content_block_delta} events are only checked to be JSON.
    """

    def __init__(self, light: bool = False) -> None:
        """
        @param light: Skip parsing content deltas once content began.
        """
        self._tool_index: dict[int, int] = {}
        self._stop_reason: str | None = None
        self._light = light
        self._content_seen = False
        self.finished = False

    def feed(self, event_type: str, data: str) -> Iterable[ModelEvent]:
        """
        Decode one SSE event.

        @return: The model events it carries (often none).
        @raise ProviderStreamError: If the data is not the JSON object the
            event type calls for.
        """
        if event_type == "ping":
            return ()
        try:
            obj = loads(data)
        except ValueError:
            raise ProviderStreamError(
                f"malformed Anthropic stream: {event_type} event is not JSON",
                body=excerpt(data),
            ) from None
        if self._content_seen and event_type == "content_block_delta":
            return ()  # valid JSON, and nothing the books need
        if not isinstance(obj, dict):
            raise ProviderStreamError(
                "malformed Anthropic stream: event data is not an object",
                body=excerpt(data),
            )
        kind = obj.get("type", event_type)
        try:
            return self._decode(kind, obj, data)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise ProviderStreamError(
                f"malformed Anthropic stream: unexpected {kind} event",
                body=excerpt(data),
            ) from None

    def interesting(self, data: bytes) -> bool:
        """
        Whether some complete events, as bytes, may carry what the books
        need: anything before content began, then C{message_delta},
        C{message_stop} or an error.  A false answer is sure; a true one
        may be wrong (the events are then decoded one by one).

        @param data: Complete events as the upstream sent them.
        """
        return (
            not self._content_seen
            or b'"message_' in data
            or b'"error"' in data
            or b"event: error" in data
        )

    def plain(self, obj: object) -> bool:
        """
        Whether one parsed event surely carries nothing the books need
        (L{interesting} for one event already parsed): a content delta once
        content began.
        """
        return (
            self._content_seen
            and type(obj) is dict
            and obj.get("type") == "content_block_delta"
        )

    def _decode(self, kind: str, obj: dict[str, Any], raw: str) -> Iterable[ModelEvent]:
        if kind == "content_block_delta":
            delta = obj["delta"]
            dtype = delta["type"]
            if dtype == "text_delta":
                text = delta["text"]
                if not text:
                    return ()
                self._content_seen = self._light
                return (TextDelta(text),)
            if dtype == "input_json_delta":
                part = delta["partial_json"]
                index = self._tool_index[obj["index"]]
                self._content_seen = self._light
                return (ToolCallDelta(index, arguments=part),) if part else ()
            if dtype == "thinking_delta":
                thinking = delta["thinking"]
                self._content_seen = self._light
                return (ReasoningDelta(thinking),) if thinking else ()
            if dtype == "signature_delta":
                return (ReasoningSignature(delta["signature"]),)
            return ()  # citations and delta types added later
        if kind == "content_block_start":
            block = obj["content_block"]
            if block["type"] == "tool_use":
                index = len(self._tool_index)
                self._tool_index[obj["index"]] = index
                return (ToolCallDelta(index, block["id"], block["name"]),)
            if block["type"] == "text" and block.get("text"):
                return (TextDelta(block["text"]),)
            if block["type"] == "thinking" and block.get("thinking"):
                return (ReasoningDelta(block["thinking"]),)
            if block["type"] == "redacted_thinking":
                return (RedactedReasoning(block["data"]),)
            return ()
        if kind == "message_start":
            message = obj["message"]
            events: list[ModelEvent] = [
                MessageStart(message.get("id"), message.get("model"))
            ]
            usage = _usage(message.get("usage"))
            if usage is not None:
                events.append(usage)
            return events
        if kind == "message_delta":
            self._stop_reason = obj["delta"].get("stop_reason")
            usage = _usage(obj.get("usage"))
            return (usage,) if usage is not None else ()
        if kind == "message_stop":
            self.finished = True
            return (stop_from_anthropic(self._stop_reason),)
        if kind == "error":
            return (error_event(obj, raw),)
        return ()  # content_block_stop and event types added later

    def finish(self) -> None:
        """
        The stream ended.

        @raise ProviderStreamError: If it ended before C{message_stop}.
        """
        if not self.finished:
            raise ProviderStreamError(
                "Anthropic stream ended before message_stop (connection closed early)"
            )
