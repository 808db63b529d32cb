"""
The Chat Completions format: model events encoded as a stream of
C{chat.completion.chunk} objects.

The encoder is pure (events in, bytes out).  The service uses it to
translate a stream from another format and the fake provider in
L{pylon_ai.testing} uses it to speak Chat Completions, so it follows the
published shapes exactly.  It runs once per event of every translated
stream: the parts of a chunk that do not change within a stream are
rendered once, and a text delta costs one C{json.dumps} of its text.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from attrs import define, field

from pylon_ai._json import dumps
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
    stop_to_openai,
)

__all__ = ["OpenAIStreamEncoder", "openai_error_body", "usage_fields"]


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


def completion_id() -> str:
    """
    A new C{chatcmpl-...} id.
    """
    return "chatcmpl-" + uuid.uuid4().hex


def usage_fields(usage: Usage) -> dict[str, Any]:
    """
    The Chat Completions C{usage} object of a L{Usage}: every prompt token
    in C{prompt_tokens}, the cache reads also in
    C{prompt_tokens_details.cached_tokens} when reported.
    """
    prompt = usage.prompt_tokens or 0
    completion = usage.output_tokens or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if usage.cache_read_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    return out


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

    Reasoning goes out as C{delta.reasoning_content} (the field DeepSeek,
    vLLM and LiteLLM use); the signature that closes a block of it comes as
    C{delta.thinking_blocks}, one signed C{thinking} block holding that
    block's whole text (a redacted block likewise), so that a client can
    send the blocks back on its next turn as LiteLLM's clients do.

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
    _reasoning: list[str] = field(factory=list, init=False)
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
        kind = type(event)
        if kind is TextDelta:
            return (
                self.start()
                + self._prefix
                + b'{"content":'
                + dumps(event.text)  # type: ignore[union-attr]
                + b"}"
                + self._suffix
            )
        if kind is ReasoningDelta:
            text = event.text  # type: ignore[union-attr]
            self._reasoning.append(text)
            return (
                self.start()
                + self._prefix
                + b'{"reasoning_content":'
                + dumps(text)
                + b"}"
                + self._suffix
            )
        if kind is ReasoningSignature:
            # The signed block whole, where LiteLLM puts it: a client sends
            # it back in the assistant message's thinking_blocks.
            thinking = "".join(self._reasoning)
            self._reasoning.clear()
            block = {
                "type": "thinking",
                "thinking": thinking,
                "signature": event.signature,  # type: ignore[union-attr]
            }
            return self.start() + self._chunk({"thinking_blocks": [block]})
        if kind is RedactedReasoning:
            block = {"type": "redacted_thinking", "data": event.data}  # type: ignore[union-attr]
            return self.start() + self._chunk({"thinking_blocks": [block]})
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
            self.completion_id = completion_id()
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
            chunk: dict[str, Any] = {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_fields(self._usage or Usage()),
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
