"""
The fake provider's reply model: what a test tells it to answer
(L{FakeReply}, L{FakeToolCall}) and what it records of each request
(L{RecordedRequest}).

The public names are re-exported by L{pylon_ai.testing}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attrs import define, field, frozen

from twisted.internet.defer import Deferred

from pylon_ai.formats.events import StopReason


def _tuple(value: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _headers(
    value: Mapping[str, str] | Sequence[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        return tuple(value.items())
    return tuple(value)


def _vectors(value: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(vector) for vector in value)


@frozen
class FakeToolCall:
    """
    A tool call the fake streams.

    @ivar id: The call id (C{toolu_...} or C{call_...} by convention).
    @ivar name: The tool name.
    @ivar arguments_fragments: The pieces of the JSON arguments, one stream
        event each; joined they must form a JSON object (for the Anthropic
        format's whole bodies).
    """

    id: str
    name: str
    arguments_fragments: tuple[str, ...] = field(default=(), converter=_tuple)


@frozen
class FakeReply:
    """
    What the fake answers to one request.

    A streamed reply is sent as: the headers and the opening event (after
    C{first_byte_delay}), then one event per thinking chunk, for the
    signature, per text chunk and per tool-call fragment ("chunks", each
    after C{chunk_delay}), then the stop, the usage and the end of the
    stream.

    @ivar thinking: The pieces of the model's reasoning, streamed before the
        text: in Anthropic's format a C{thinking} content block
        (C{thinking_delta} events, then a C{signature_delta} with
        L{signature}); in the Chat Completions format
        C{delta.reasoning_content} chunks, as vLLM and DeepSeek send them.
        Whole bodies carry them joined: a C{thinking} block before the text,
        or C{message.reasoning_content}.
    @ivar signature: The signature of the thinking block (Anthropic's format
        only; the Chat Completions format has no place for it); L{None} sends
        none.  In a stream it is one more chunk, after the thinking.
    @ivar chunks: The text pieces.
    @ivar tool_calls: The tool calls, streamed after the text.
    @ivar usage: C{(input_tokens, output_tokens)}, or L{None} to report none
        (the formats then say 0).
    @ivar stop_reason: In Anthropic's vocabulary (mapped for the OpenAI
        format); L{None} means C{tool_use} with tool calls, else C{end_turn}.
    @ivar model: The model named in the reply; L{None} echoes the request's
        C{model} (or C{"fake-model"} when it has none).
    @ivar status: The HTTP status.  Anything but 200 answers with an error
        body in the format's shape.
    @ivar error_type: The error type of an error body or a C{stream_error};
        L{None} picks one for the status (C{rate_limit_error} for 429,
        C{overloaded_error} for 529...).
    @ivar message: The text of an error body or a C{stream_error}.
    @ivar retry_after: The C{retry-after} header value, or L{None}.
    @ivar headers: Extra response headers.
    @ivar first_byte_delay: Seconds before the response headers are sent.
    @ivar chunk_delay: Seconds before each chunk.
    @ivar drop_after: Abort the connection after this many chunks: no clean
        end of the stream or body.  A whole (non-streaming) body is cut in
        the middle whatever the number.
    @ivar stall_after: Send nothing more after this many chunks, keeping the
        connection open.  A whole body is never sent.
    @ivar stream_error: After the chunks, send a provider error event
        instead of the stop: Anthropic's C{event: error}, or an OpenAI-style
        C{data: {"error": ...}} followed by C{data: [DONE]} as vLLM does.
    @ivar raw_body: Send exactly these bytes as the body (with C{status} and
        C{headers}) instead of anything generated, for malformed streams.
        With C{drop_after} set, the connection is then aborted rather than
        the body ended.
    @ivar input_tokens: The count a token counting request
        (C{.../messages/count_tokens}) gets as C{input_tokens}; L{None}
        answers the input count of L{usage}, or 10 without one.
    @ivar embeddings: The vectors an embeddings request (C{.../embeddings})
        gets, one C{data} entry each; empty answers one vector per input,
        C{[len(text), index, 0.5]}.  Sent as floats, or as base64 of
        little-endian 32-bit floats when the request asks for
        C{encoding_format: "base64"}.
    """

    chunks: tuple[str, ...] = field(default=(), converter=_tuple)
    thinking: tuple[str, ...] = field(default=(), converter=_tuple, kw_only=True)
    signature: str | None = field(default=None, kw_only=True)
    tool_calls: tuple[FakeToolCall, ...] = field(default=(), converter=_tuple)
    usage: tuple[int, int] | None = None
    stop_reason: StopReason | None = None
    model: str | None = None
    status: int = 200
    error_type: str | None = None
    message: str = "The fake provider was told to fail."
    retry_after: float | str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), converter=_headers)
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    stream_error: bool = False
    raw_body: bytes | None = None
    input_tokens: int | None = field(default=None, kw_only=True)
    embeddings: tuple[tuple[float, ...], ...] = field(
        default=(), converter=_vectors, kw_only=True
    )


@define(eq=False)
class RecordedRequest:
    """
    A request the fake received.

    @ivar method: The HTTP method, e.g. C{"POST"}.
    @ivar path: The request path (with any query string).
    @ivar headers: The request headers, names in lower case (a repeated
        header keeps its last value).
    @ivar body: The raw request body.
    @ivar json: The body parsed as JSON, or L{None} if it is not JSON.
    @ivar disconnected: Fires with L{None} when the client closed the
        connection before the response was complete (never when the fake
        dropped or ended it itself).
    @ivar finished: Fires with L{None} once the whole response was written.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    disconnected: Deferred[None] = field(factory=Deferred, init=False)
    finished: Deferred[None] = field(factory=Deferred, init=False)

    @property
    def stream(self) -> bool:
        """
        Whether the request asked for a stream (C{"stream": true}).
        """
        return isinstance(self.json, dict) and self.json.get("stream") is True
