"""
The Responses event stream written from the event model.

L{ResponsesStreamEncoder} writes the events the SDKs and Codex parse:
C{response.created} and C{response.in_progress}; for each output item its
C{response.output_item.added}, its deltas and C{.done} events and
C{response.output_item.done}; then C{response.completed} (or
C{response.incomplete}) carrying the whole response with its usage.
Every event has a C{sequence_number}, counted from 0.  A failure after the
start is an C{error} event followed by C{response.failed}.
"""

from __future__ import annotations

import time

from attrs import define, field

from pylon_ai._json import dumps
from pylon_ai.formats.canonical import JSON, ReasoningPart, RedactedReasoningPart
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
from pylon_ai.formats.responses._objects import (
    call_item,
    failure_code,
    message_item,
    new_id,
    output_text,
    reasoning_item,
    response_echo,
    response_object,
    status_of,
    usage_object,
)
from pylon_ai.formats.responses._thinking import pack_thinking
from pylon_ai.formats.responses._tools import ToolNames

__all__ = ["ResponsesStreamEncoder"]


@define
class _Item:
    """
    An output item being streamed.
    """

    index: int
    id: str
    kind: str  # "message", "reasoning" or "function_call"
    text: list[str] = field(factory=list)
    call_id: str = ""
    name: str = ""
    signature: str | None = None


@define
class ResponsesStreamEncoder:
    """
    Encode events as a Responses event stream.

    Feed the events of one reply to L{encode}, in order, and send what it
    returns; call L{finish} at the end of a reply that did not fail.
    Reasoning and text each open an item that the next item of another kind
    closes (a L{ReasoningSignature} closes its reasoning item, which carries
    the signed block packed in C{encrypted_content}).  Tool calls open one
    C{function_call} item each and may interleave, as parallel calls from a
    Chat Completions upstream do; they close at the stop.

    @ivar model: The model named in the response when the stream's
        L{MessageStart} names none.
    @ivar echo: The request fields the response repeats (L{response_echo}
        of the client's body).
    @ivar names: The client's names of flattened namespace tools.
    @ivar response_id: The response id; a generated C{resp_...} if L{None}.
    @ivar created_at: The C{created_at} timestamp; now if L{None}.
    """

    model: str
    echo: JSON = field(factory=lambda: response_echo({}))
    names: ToolNames = field(factory=ToolNames)
    response_id: str | None = None
    created_at: int | None = None
    _seq: int = field(default=0, init=False)
    _started: bool = field(default=False, init=False)
    _done: bool = field(default=False, init=False)
    _usage: Usage | None = field(default=None, init=False)
    _stop: Stop | None = field(default=None, init=False)
    _output: dict[int, JSON] = field(factory=dict, init=False)
    _items: int = field(default=0, init=False)
    _open: _Item | None = field(default=None, init=False)
    _calls: dict[int, _Item] = field(factory=dict, init=False)
    _text_head: bytes = field(default=b"", init=False)

    def encode(self, event: ModelEvent) -> bytes:
        """
        The bytes for one event.

        @param event: The next event of the reply.
        @return: Zero or more complete SSE events.
        @raise ValueError: An event came after the stream ended.
        """
        if self._done:
            raise ValueError("the stream has ended")
        if isinstance(event, TextDelta):
            out = self.start()
            item = self._open
            if item is None or item.kind != "message":
                out += self._close_all()
                item = self._open_item("message")
                out += self._added(
                    message_item(item.id, "", "in_progress") | {"content": []}
                )
                out += self._emit(
                    "response.content_part.added",
                    {
                        "item_id": item.id,
                        "output_index": item.index,
                        "content_index": 0,
                        "part": output_text(""),
                    },
                )
                self._text_head = (
                    b'{"type":"response.output_text.delta","item_id":"%s",'
                    b'"output_index":%d,"content_index":0,"logprobs":[],"delta":'
                    % (item.id.encode(), item.index)
                )
            item.text.append(event.text)
            seq = self._seq
            self._seq += 1
            return (
                out
                + b"event: response.output_text.delta\ndata: "
                + self._text_head
                + dumps(event.text)
                + b',"sequence_number":%d}\n\n' % seq
            )
        if isinstance(event, ReasoningDelta):
            out = self.start()
            item = self._open
            if item is None or item.kind != "reasoning":
                out += self._close_all()
                item = self._open_reasoning()
                out += self._added(reasoning_item(item.id, (), None))
                out += self._emit(
                    "response.reasoning_summary_part.added",
                    {
                        "item_id": item.id,
                        "output_index": item.index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    },
                )
            item.text.append(event.text)
            return out + self._emit(
                "response.reasoning_summary_text.delta",
                {
                    "item_id": item.id,
                    "output_index": item.index,
                    "summary_index": 0,
                    "delta": event.text,
                },
            )
        if isinstance(event, ReasoningSignature):
            out = self.start()
            item = self._open
            if item is None or item.kind != "reasoning":
                # A signature of empty thinking: its item has no summary.
                out += self._close_all()
                item = self._open_reasoning()
                out += self._added(reasoning_item(item.id, (), None))
            item.signature = event.signature
            return out + self._close_all()
        if isinstance(event, RedactedReasoning):
            out = self.start() + self._close_all()
            item = self._open_item("reasoning")
            packed = pack_thinking(RedactedReasoningPart(event.data))
            out += self._added(reasoning_item(item.id, (), None))
            self._open = None
            return out + self._item_done(item, reasoning_item(item.id, (), packed))
        if isinstance(event, ToolCallDelta):
            return self._tool(event)
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, MessageStart):
            if not self._started:
                if (
                    self.response_id is None
                    and event.id
                    and event.id.startswith("resp_")
                ):
                    self.response_id = event.id
                if event.model:
                    self.model = event.model
            return b""
        if isinstance(event, Stop):
            self._stop = event
            return self.start() + self._close_all()
        if isinstance(event, StreamError):
            return self.error(
                event.message, event.error_type or "api_error", status=event.status
            )
        raise TypeError(f"not an event: {event!r}")

    def start(self) -> bytes:
        """
        Send C{response.created} and C{response.in_progress} now if they
        have not been sent.

        @return: The events, or C{b""}.
        """
        if self._started:
            return b""
        if self._done:
            raise ValueError("the stream has ended")
        self._started = True
        if self.response_id is None:
            self.response_id = new_id("resp")
        if self.created_at is None:
            self.created_at = int(time.time())
        response = self._response("in_progress", None)
        return self._emit("response.created", {"response": response}) + self._emit(
            "response.in_progress", {"response": response}
        )

    def finish(self) -> bytes:
        """
        End the reply: close the open items, then C{response.completed} (or
        C{response.incomplete} for a reply cut by its length limit or a
        content filter) with the whole response and its usage.

        @return: The closing events; C{b""} after an error.
        """
        if self._done:
            return b""
        out = self.start() + self._close_all()
        self._done = True
        status, reason = status_of(self._stop or Stop("end_turn"))
        usage = self._usage or Usage()
        response = self._response(
            status,
            usage_object(
                usage.input_tokens or 0,
                usage.output_tokens or 0,
                usage.cache_read_tokens or 0,
                usage.cache_creation_tokens or 0,
            ),
            incomplete_reason=reason,
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._emit(kind, {"response": response})

    def error(
        self,
        message: str,
        error_type: str,
        code: str | None = None,
        *,
        status: int | None = None,
    ) -> bytes:
        """
        End the reply with an C{error} event and C{response.failed} (Codex
        reads the latter, other clients the former).

        @param message: Readable text.
        @param error_type: The error type, e.g. C{"overloaded_error"}.
        @param code: The machine-readable code of the C{error} event; the
            error type if L{None}.
        @param status: The equivalent HTTP status, if known.
        @return: The events; later calls to L{finish} return C{b""}.
        """
        out = b""
        if not self._started:
            out = self.start()
        self._done = True
        out += self._emit(
            "error", {"code": code or error_type, "message": message, "param": None}
        )
        error = {"code": failure_code(error_type, status), "message": message}
        response = self._response("failed", None, error=error)
        return out + self._emit("response.failed", {"response": response})

    # -- items --------------------------------------------------------------

    def _emit(self, kind: str, body: JSON) -> bytes:
        seq = self._seq
        self._seq += 1
        data = dumps({"type": kind, **body, "sequence_number": seq})
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _response(
        self,
        status: str,
        usage: JSON | None,
        *,
        error: JSON | None = None,
        incomplete_reason: str | None = None,
    ) -> JSON:
        assert self.response_id is not None and self.created_at is not None
        return response_object(
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=[self._output[i] for i in sorted(self._output)],
            usage=usage,
            echo=self.echo,
            error=error,
            incomplete_reason=incomplete_reason,
        )

    def _open_item(self, kind: str) -> _Item:
        index = self._items
        self._items += 1
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind]
        item = _Item(index, new_id(prefix), kind)
        if kind != "function_call":
            self._open = item
        return item

    def _open_reasoning(self) -> _Item:
        return self._open_item("reasoning")

    def _added(self, item: JSON) -> bytes:
        index = self._items - 1
        return self._emit(
            "response.output_item.added", {"output_index": index, "item": item}
        )

    def _item_done(self, item: _Item, body: JSON) -> bytes:
        self._output[item.index] = body
        return self._emit(
            "response.output_item.done", {"output_index": item.index, "item": body}
        )

    def _close_all(self) -> bytes:
        """
        Close the open text or reasoning item and every open tool call.
        """
        out = b""
        item, self._open = self._open, None
        if item is not None and item.kind == "message":
            out += self._close_message(item)
        elif item is not None:
            out += self._close_reasoning(item)
        calls, self._calls = self._calls, {}
        for index in sorted(calls):
            out += self._close_call(calls[index])
        return out

    def _close_message(self, item: _Item) -> bytes:
        text = "".join(item.text)
        where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        out = self._emit(
            "response.output_text.done", {**where, "text": text, "logprobs": []}
        )
        out += self._emit(
            "response.content_part.done", {**where, "part": output_text(text)}
        )
        return out + self._item_done(item, message_item(item.id, text))

    def _close_reasoning(self, item: _Item) -> bytes:
        text = "".join(item.text)
        out = b""
        if item.text:
            where = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            out += self._emit(
                "response.reasoning_summary_text.done", {**where, "text": text}
            )
            out += self._emit(
                "response.reasoning_summary_part.done",
                {**where, "part": {"type": "summary_text", "text": text}},
            )
        packed = None
        if item.signature:
            packed = pack_thinking(ReasoningPart(text, signature=item.signature))
        summary = [text] if item.text else []
        return out + self._item_done(item, reasoning_item(item.id, summary, packed))

    def _close_call(self, item: _Item) -> bytes:
        arguments = "".join(item.text) or "{}"
        out = self._emit(
            "response.function_call_arguments.done",
            {"item_id": item.id, "output_index": item.index, "arguments": arguments},
        )
        body = call_item(item.id, item.call_id, item.name, arguments, self.names)
        return out + self._item_done(item, body)

    def _tool(self, event: ToolCallDelta) -> bytes:
        out = self.start()
        item = self._calls.get(event.index)
        if item is None:
            if self._open is not None:
                # Text or reasoning before a call is finished by it.
                opened, self._open = self._open, None
                out += (
                    self._close_message(opened)
                    if opened.kind == "message"
                    else self._close_reasoning(opened)
                )
            item = self._open_item("function_call")
            item.call_id = event.id or new_id("call")
            item.name = event.name or ""
            self._calls[event.index] = item
            body = call_item(
                item.id, item.call_id, item.name, "", self.names, "in_progress"
            )
            out += self._added(body)
        if not event.arguments:
            return out
        item.text.append(event.arguments)
        return out + self._emit(
            "response.function_call_arguments.delta",
            {"item_id": item.id, "output_index": item.index, "delta": event.arguments},
        )
