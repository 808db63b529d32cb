"""
The Messages format: model events encoded as an Anthropic event stream.

The encoder is pure (events in, bytes out).  The service uses it to
translate a stream from another format and the fake provider in
L{pylon_ai.testing} uses it to speak Messages, so it follows the published
shapes exactly.  It runs once per event of every translated stream: the
parts of a frame that do not change within a block are rendered once, and a
text delta costs one C{json.dumps} of its text.
"""

from __future__ import annotations

import uuid
from typing import Any

from attrs import define, field

from pylon_ai._json import dumps
from pylon_ai.formats._frames import sse_frame
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
    merge_usage,
)

__all__ = ["AnthropicStreamEncoder", "anthropic_error_body", "usage_fields"]

_TEXT = "text"
_TOOL = "tool"
_THINKING = "thinking"


def anthropic_error_body(error_type: str, message: str) -> dict[str, Any]:
    """
    An error in Anthropic's shape, for a response body or an C{error} event.

    @param error_type: Anthropic's error type, e.g. C{"overloaded_error"}.
    @param message: Readable text.
    @return: C{{"type": "error", "error": {"type", "message"}}}.
    """
    return {"type": "error", "error": {"type": error_type, "message": message}}


def message_id() -> str:
    """
    A new C{msg_...} id.
    """
    return "msg_" + uuid.uuid4().hex


def usage_fields(usage: Usage) -> dict[str, int]:
    """
    The Messages C{usage} object of a L{Usage}: C{input_tokens} and
    C{output_tokens} (0 when unknown), and the cache counts when reported.
    """
    out = {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
    }
    if usage.cache_read_tokens is not None:
        out["cache_read_input_tokens"] = usage.cache_read_tokens
    if usage.cache_creation_tokens is not None:
        out["cache_creation_input_tokens"] = usage.cache_creation_tokens
    return out


@define
class AnthropicStreamEncoder:
    """
    Encode events as an Anthropic Messages event stream.

    Feed the events of one reply to L{encode}, in order, and send what it
    returns; call L{finish} at the end of a reply that did not fail.
    Reasoning, text and tool calls become content blocks with consecutive
    indices (C{thinking} and C{redacted_thinking}, C{text}, C{tool_use}); a
    block is closed before the next one opens, and a L{ReasoningSignature}
    closes its thinking block.

    C{message_start} is held back until the first content, stop or error (or
    L{start}), so that usage reported right after L{MessageStart} (the input
    tokens an upstream knows from its first chunk) lands in it.  The input
    tokens are in C{message_delta} too, where they are final: Anthropic's
    SDK reads them from either.

    Anthropic content blocks cannot interleave, while OpenAI-style streams
    may interleave the fragments of parallel tool calls.  So the first tool
    call streams live; fragments of any other call that arrive while one is
    open are accumulated by index and re-emitted whole, in index order, when
    the reply stops.  Only a tool call that resumes after a I{text} block
    interrupted it cannot be encoded: L{encode} raises L{ValueError}.

    @ivar model: The model named in C{message_start} when the stream's
        L{MessageStart} names none.
    @ivar message_id: The message id; if L{None}, the L{MessageStart}'s id, or
        a generated C{msg_...} id.
    """

    model: str
    message_id: str | None = None
    _started: bool = field(default=False, init=False)
    _done: bool = field(default=False, init=False)
    _usage: Usage | None = field(default=None, init=False)
    _stop: Stop | None = field(default=None, init=False)
    _next_block: int = field(default=0, init=False)
    _open_block: int | None = field(default=None, init=False)
    _open_kind: str | None = field(default=None, init=False)
    _open_tool: int | None = field(default=None, init=False)
    _closed_tools: set[int] = field(factory=set, init=False)
    _pending_tools: dict[int, list[Any]] = field(factory=dict, init=False)
    _text_prefix: bytes = field(default=b"", init=False)
    _json_prefix: bytes = field(default=b"", init=False)
    _thinking_prefix: bytes = field(default=b"", init=False)

    def encode(self, event: ModelEvent) -> bytes:
        """
        The bytes for one event.

        @param event: The next event of the reply.
        @return: Zero or more complete SSE events.
        @raise ValueError: A tool call resumed after another one began, or an
            event came after the stream ended.
        """
        if self._done:
            raise ValueError("the stream has ended")
        kind = type(event)
        if kind is TextDelta:
            out = self.start()
            if self._open_kind is not _TEXT:
                out += self._open(_TEXT, None, {"type": "text", "text": ""})
            return out + self._text_prefix + dumps(event.text) + b"}}\n\n"  # type: ignore[union-attr]
        if kind is ToolCallDelta:
            return self._tool(event)  # type: ignore[arg-type]
        if kind is ReasoningDelta:
            out = self.start()
            if self._open_kind is not _THINKING:
                out += self._open_thinking()
            return out + self._thinking_prefix + dumps(event.text) + b"}}\n\n"  # type: ignore[union-attr]
        if kind is ReasoningSignature:
            out = self.start()
            if self._open_kind is not _THINKING:
                out += self._open_thinking()
            index = self._open_block
            signature = {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "signature_delta", "signature": event.signature},  # type: ignore[union-attr]
            }
            return (
                out + sse_frame(dumps(signature), "content_block_delta") + self._close()
            )
        if kind is RedactedReasoning:
            out = self.start() + self._open(
                None,
                None,
                {"type": "redacted_thinking", "data": event.data},  # type: ignore[union-attr]
            )
            return out + self._close()
        if kind is Usage:
            self._usage = merge_usage(self._usage, event)  # type: ignore[arg-type]
            return b""
        if isinstance(event, MessageStart):
            if self._started:
                return b""
            if self.message_id is None:
                self.message_id = event.id
            if event.model:
                self.model = event.model
            return b""
        if isinstance(event, Stop):
            self._stop = event
            return self.start() + self._flush_tools()
        if isinstance(event, StreamError):
            return self.error(event.error_type or "api_error", event.message)
        raise TypeError(f"not an event: {event!r}")

    def start(self) -> bytes:
        """
        Send C{message_start} now if it has not been sent.

        @return: The C{message_start} event, or C{b""}.
        """
        if self._started:
            return b""
        if self._done:
            raise ValueError("the stream has ended")
        self._started = True
        if self.message_id is None:
            self.message_id = message_id()
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_fields(self._usage or Usage()),
        }
        return sse_frame(
            dumps({"type": "message_start", "message": message}), "message_start"
        )

    def ping(self) -> bytes:
        """
        A C{ping} event, to keep an idle stream alive.

        @return: The event (after C{message_start} if it was still pending).
        """
        return self.start() + b'event: ping\ndata: {"type":"ping"}\n\n'

    def finish(self) -> bytes:
        """
        End the reply: close the open block, then C{message_delta} (stop
        reason and usage) and C{message_stop}.

        @return: The closing events; C{b""} after an error.
        """
        if self._done:
            return b""
        out = self.start() + self._flush_tools()
        self._done = True
        stop = self._stop or Stop("end_turn")
        usage = self._usage or Usage()
        delta_usage: dict[str, int] = {}
        if usage.input_tokens is not None:
            delta_usage = usage_fields(usage)
        else:
            delta_usage = {"output_tokens": usage.output_tokens or 0}
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop.reason, "stop_sequence": None},
            "usage": delta_usage,
        }
        return (
            out
            + sse_frame(dumps(delta), "message_delta")
            + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )

    def error(self, error_type: str, message: str) -> bytes:
        """
        End the reply with an C{error} event.

        @param error_type: Anthropic's error type, e.g. C{"overloaded_error"}.
        @param message: Readable text.
        @return: The event; later calls to L{finish} return C{b""}.
        """
        self._done = True
        self._started = True
        return sse_frame(dumps(anthropic_error_body(error_type, message)), "error")

    def _open_thinking(self) -> bytes:
        return self._open(
            _THINKING, None, {"type": "thinking", "thinking": "", "signature": ""}
        )

    def _open(self, kind: str | None, tool: int | None, block: dict[str, Any]) -> bytes:
        out = self._close()
        index = self._next_block
        self._next_block += 1
        self._open_block = index
        self._open_kind = kind
        self._open_tool = tool
        head = (
            b"event: content_block_delta\ndata: "
            b'{"type":"content_block_delta","index":%d,"delta":{"type":' % index
        )
        if kind is _TEXT:
            self._text_prefix = head + b'"text_delta","text":'
        elif kind is _TOOL:
            self._json_prefix = head + b'"input_json_delta","partial_json":'
        elif kind is _THINKING:
            self._thinking_prefix = head + b'"thinking_delta","thinking":'
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return out + sse_frame(dumps(start), "content_block_start")

    def _flush_tools(self) -> bytes:
        """
        Close the open block, then emit the accumulated tool calls whole, in
        index order.
        """
        out = self._close()
        pending, self._pending_tools = self._pending_tools, {}
        for index in sorted(pending):
            call_id, name, parts = pending[index]
            out += self._tool(ToolCallDelta(index, call_id, name, "".join(parts)))
            out += self._close()
        return out

    def _close(self) -> bytes:
        if self._open_block is None:
            return b""
        index = self._open_block
        if self._open_tool is not None:
            self._closed_tools.add(self._open_tool)
        self._open_block = None
        self._open_kind = None
        self._open_tool = None
        return (
            b"event: content_block_stop\n"
            b'data: {"type":"content_block_stop","index":%d}\n\n' % index
        )

    def _tool(self, event: ToolCallDelta) -> bytes:
        out = self.start()
        pending = self._pending_tools.get(event.index)
        if pending is not None or (
            self._open_tool is not None and event.index != self._open_tool
        ):
            if pending is None:
                pending = self._pending_tools[event.index] = [None, None, []]
            pending[0] = pending[0] or event.id
            pending[1] = pending[1] or event.name
            pending[2].append(event.arguments)
            return out
        if event.index != self._open_tool:
            if event.index in self._closed_tools:
                raise ValueError(
                    f"tool call {event.index} resumed after another block began;"
                    " Anthropic content blocks cannot interleave"
                )
            block = {
                "type": "tool_use",
                "id": event.id or f"toolu_{uuid.uuid4().hex}",
                "name": event.name or "",
                "input": {},
            }
            out += self._open(_TOOL, event.index, block)
            if not event.arguments:
                return out
        return out + self._json_prefix + dumps(event.arguments) + b"}}\n\n"
