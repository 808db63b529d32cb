"""
Encoders from the event model (L{pylon_ai._events}) to the two wire formats.

They are pure: events in, bytes (streams) or dicts (whole bodies) out.  The
service uses them to translate a stream from one format to the other and the
fake provider in L{pylon_ai.testing} uses them to speak both, so they follow
the providers' published shapes exactly.

They run once per event of every translated stream: the parts of a frame that
do not change within a stream are rendered once, and a text delta costs one
C{json.dumps} of its text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from attrs import define, field, frozen

from pylon_ai._events import (
    MessageStart,
    ModelEvent,
    Stop,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    merge_usage,
    stop_to_openai,
)
from pylon_ai._json import dumps, loads

__all__ = [
    "AnthropicStreamEncoder",
    "OpenAIStreamEncoder",
    "ToolCall",
    "anthropic_error_body",
    "anthropic_message_body",
    "dumps",
    "openai_completion_body",
    "openai_error_body",
    "sse_frame",
]


def sse_frame(data: bytes | str, event: str | None = None) -> bytes:
    """
    One server-sent event.

    @param data: The event data.  Line ends inside it (CR, LF or CRLF) split
        it over several C{data:} lines, as the event-stream format requires.
    @param event: The event name, or L{None} for an unnamed (C{message})
        event.
    @return: C{event: NAME\\ndata: DATA\\n\\n} (without the C{event} line when
        C{event} is L{None}).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        body = b"data: " + data + b"\n"
    if event is None:
        return body + b"\n"
    return b"event: " + event.encode("utf-8") + b"\n" + body + b"\n"


def anthropic_error_body(error_type: str, message: str) -> dict[str, Any]:
    """
    An error in Anthropic's shape, for a response body or an C{error} event.

    @param error_type: Anthropic's error type, e.g. C{"overloaded_error"}.
    @param message: Readable text.
    @return: C{{"type": "error", "error": {"type", "message"}}}.
    """
    return {"type": "error", "error": {"type": error_type, "message": message}}


def openai_error_body(
    message: str, error_type: str, code: str | None = None
) -> dict[str, Any]:
    """
    An error in OpenAI's shape, for a response body or an in-stream chunk.

    @param message: Readable text.
    @param error_type: The error type, e.g. C{"invalid_request_error"}.
    @param code: The machine-readable code, or L{None}.
    @return: C{{"error": {"message", "type", "param", "code"}}}.
    """
    return {
        "error": {"message": message, "type": error_type, "param": None, "code": code}
    }


def _message_id() -> str:
    return "msg_" + uuid.uuid4().hex


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


@define
class AnthropicStreamEncoder:
    """
    Encode events as an Anthropic Messages event stream.

    Feed the events of one reply to L{encode}, in order, and send what it
    returns; call L{finish} at the end of a reply that did not fail.  Text and
    tool calls become content blocks with consecutive indices; a block is
    closed before the next one opens.

    C{message_start} is held back until the first content, stop or error (or
    L{start}), so that usage reported right after L{MessageStart} still lands
    in it.  Input tokens learnt only later (from an OpenAI stream, say) are
    added to the C{message_delta} usage, where Anthropic's SDK picks them up.

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
    _sent_input_tokens: int = field(default=0, init=False)
    _stop: Stop | None = field(default=None, init=False)
    _next_block: int = field(default=0, init=False)
    _open_block: int | None = field(default=None, init=False)
    _open_text: bool = field(default=False, init=False)
    _open_tool: int | None = field(default=None, init=False)
    _closed_tools: set[int] = field(factory=set, init=False)
    _pending_tools: dict[int, list[Any]] = field(factory=dict, init=False)
    _text_prefix: bytes = field(default=b"", init=False)
    _json_prefix: bytes = field(default=b"", init=False)

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
        if isinstance(event, TextDelta):
            out = self.start()
            if not self._open_text:
                out += self._open(True, None, {"type": "text", "text": ""})
            return out + self._text_prefix + dumps(event.text) + b"}}\n\n"
        if isinstance(event, ToolCallDelta):
            return self._tool(event)
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
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
            self.message_id = _message_id()
        usage = self._usage or Usage()
        self._sent_input_tokens = usage.input_tokens or 0
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._sent_input_tokens,
                "output_tokens": usage.output_tokens or 0,
            },
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
        if (
            usage.input_tokens is not None
            and usage.input_tokens != self._sent_input_tokens
        ):
            delta_usage["input_tokens"] = usage.input_tokens
        delta_usage["output_tokens"] = usage.output_tokens or 0
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

    def _open(self, text: bool, tool: int | None, block: dict[str, Any]) -> bytes:
        out = self._close()
        index = self._next_block
        self._next_block += 1
        self._open_block = index
        self._open_text = text
        self._open_tool = tool
        head = b'{"type":"content_block_delta","index":%d,"delta":{"type":' % index
        if text:
            self._text_prefix = (
                b"event: content_block_delta\ndata: " + head + b'"text_delta","text":'
            )
        else:
            self._json_prefix = (
                b"event: content_block_delta\ndata: "
                + head
                + b'"input_json_delta","partial_json":'
            )
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
        self._open_text = False
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
            out += self._open(False, event.index, block)
            if not event.arguments:
                return out
        return out + self._json_prefix + dumps(event.arguments) + b"}}\n\n"


@define
class OpenAIStreamEncoder:
    """
    Encode events as an OpenAI Chat Completions stream of
    C{chat.completion.chunk} objects.

    Feed the events of one reply to L{encode}, in order, and send what it
    returns; call L{finish} at the end of a reply that did not fail.  The
    first chunk carries C{{"role": "assistant", "content": ""}}; a L{Stop}
    gives the C{finish_reason} chunk; L{finish} adds the usage chunk (with
    C{include_usage}) and C{[DONE]}.

    @ivar model: The model named in the chunks when the stream's
        L{MessageStart} names none.
    @ivar completion_id: The completion id; if L{None}, the L{MessageStart}'s
        id, or a generated C{chatcmpl-...} id.
    @ivar created: The C{created} timestamp; the current time if L{None}.
    @ivar include_usage: Whether the client asked for
        C{stream_options.include_usage}: every chunk then carries
        C{"usage": null} and a last chunk with C{"choices": []} carries the
        usage.
    """

    model: str
    completion_id: str | None = None
    created: int | None = None
    include_usage: bool = False
    _started: bool = field(default=False, init=False)
    _done: bool = field(default=False, init=False)
    _stopped: bool = field(default=False, init=False)
    _usage: Usage | None = field(default=None, init=False)
    _seen_tools: set[int] = field(factory=set, init=False)
    _prefix: bytes = field(default=b"", init=False)
    _suffix: bytes = field(default=b"", init=False)

    def encode(self, event: ModelEvent) -> bytes:
        """
        The bytes for one event.

        @param event: The next event of the reply.
        @return: Zero or more complete C{data:} frames.
        @raise ValueError: An event came after the stream ended.
        """
        if self._done:
            raise ValueError("the stream has ended")
        if isinstance(event, TextDelta):
            return (
                self.start()
                + self._prefix
                + b'{"content":'
                + dumps(event.text)
                + b"}"
                + self._suffix
            )
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.index not in self._seen_tools:
                self._seen_tools.add(event.index)
                call["id"] = event.id or f"call_{uuid.uuid4().hex}"
                call["type"] = "function"
                call["function"] = {
                    "name": event.name or "",
                    "arguments": event.arguments,
                }
            else:
                call["function"] = {"arguments": event.arguments}
            return self.start() + self._chunk({"tool_calls": [call]})
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, MessageStart):
            if not self._started:
                if self.completion_id is None:
                    self.completion_id = event.id
                if event.model:
                    self.model = event.model
            return b""
        if isinstance(event, Stop):
            if self._stopped:
                return b""
            self._stopped = True
            return self.start() + self._chunk({}, stop_to_openai(event))
        if isinstance(event, StreamError):
            return self.error(
                event.message,
                event.error_type or "api_error",
                None if event.status is None else str(event.status),
            )
        raise TypeError(f"not an event: {event!r}")

    def start(self) -> bytes:
        """
        Send the first chunk (the assistant role) now if it has not been sent.

        @return: The chunk, or C{b""}.
        """
        if self._started:
            return b""
        if self._done:
            raise ValueError("the stream has ended")
        self._started = True
        if self.completion_id is None:
            self.completion_id = _completion_id()
        if self.created is None:
            self.created = int(time.time())
        head = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        # '{"id":...,"model":"m"' and the rest of a chunk around its delta.
        self._prefix = b"data: " + dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
        self._suffix = b',"logprobs":null,"finish_reason":null}]'
        if self.include_usage:
            self._suffix += b',"usage":null'
        self._suffix += b"}\n\n"
        return self._chunk({"role": "assistant", "content": ""})

    def finish(self) -> bytes:
        """
        End the reply: the C{finish_reason} chunk if no L{Stop} came (as
        C{"stop"}), the usage chunk if C{include_usage}, then C{[DONE]}.

        @return: The closing frames; C{b""} after an error.
        """
        if self._done:
            return b""
        out = self.start()
        if not self._stopped:
            out += self.encode(Stop("end_turn"))
        self._done = True
        if self.include_usage:
            usage = self._usage or Usage()
            prompt = usage.input_tokens or 0
            completion = usage.output_tokens or 0
            chunk: dict[str, Any] = {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
            out += b"data: " + dumps(chunk) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error(self, message: str, error_type: str, code: str | None = None) -> bytes:
        """
        End the reply with an error frame and no C{[DONE]}.

        @param message: Readable text.
        @param error_type: The error type.
        @param code: The machine-readable code, or L{None}.
        @return: The C{data: {"error": ...}} frame; later calls to L{finish}
            return C{b""}.
        """
        self._done = True
        self._started = True
        return b"data: " + dumps(openai_error_body(message, error_type, code)) + b"\n\n"

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        suffix = self._suffix
        if finish_reason is not None:
            suffix = suffix.replace(
                b'"finish_reason":null', b'"finish_reason":' + dumps(finish_reason), 1
            )
        return self._prefix + dumps(delta) + suffix


@frozen
class ToolCall:
    """
    A complete tool call, for a whole (non-streaming) response body.

    @ivar id: The call id.
    @ivar name: The tool name.
    @ivar arguments: The arguments as a JSON document (C{""} means C{{}}).
    """

    id: str
    name: str
    arguments: str = ""


def anthropic_message_body(
    *,
    model: str,
    text: str = "",
    tool_calls: Sequence[ToolCall] = (),
    stop: Stop | None = None,
    usage: Usage | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """
    A whole Anthropic Messages response body.

    @param model: The model that answered.
    @param text: The assistant text; no text block when empty.
    @param tool_calls: The tool calls, as C{tool_use} blocks after the text.
    @param stop: The stop reason; L{None} means C{tool_use} when there are
        tool calls, else C{end_turn}.
    @param usage: Token counts (missing ones are 0).
    @param message_id: The id; a generated C{msg_...} id if L{None}.
    @return: The body, ready for C{json.dumps}.
    @raise ValueError: A tool call's arguments are not a JSON object.
    """
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    for call in tool_calls:
        arguments = loads(call.arguments) if call.arguments.strip() else {}
        if not isinstance(arguments, dict):
            raise ValueError(f"tool call {call.id} arguments are not a JSON object")
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}
        )
    if stop is None:
        stop = Stop("tool_use" if tool_calls else "end_turn")
    usage = usage or Usage()
    return {
        "id": message_id or _message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop.reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens or 0,
            "output_tokens": usage.output_tokens or 0,
        },
    }


def openai_completion_body(
    *,
    model: str,
    text: str = "",
    tool_calls: Sequence[ToolCall] = (),
    stop: Stop | None = None,
    usage: Usage | None = None,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """
    A whole OpenAI Chat Completions response body.

    @param model: The model that answered.
    @param text: The assistant text.  With tool calls and no text the
        content is C{null}, as OpenAI sends it.
    @param tool_calls: The tool calls.
    @param stop: The stop reason; L{None} means C{tool_calls} when there are
        tool calls, else C{stop}.
    @param usage: Token counts (missing ones are 0).
    @param completion_id: The id; a generated C{chatcmpl-...} id if L{None}.
    @param created: The C{created} timestamp; the current time if L{None}.
    @return: The body, ready for C{json.dumps}.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not tool_calls else None,
    }
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in tool_calls
        ]
    if stop is None:
        stop = Stop("tool_use" if tool_calls else "end_turn")
    usage = usage or Usage()
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    return {
        "id": completion_id or _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": stop_to_openai(stop),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
