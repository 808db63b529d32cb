"""
A scripted fake LLM provider: a real HTTP(S) server on the loopback interface
that answers in the Anthropic Messages and OpenAI Chat Completions formats.

The public names are re-exported by L{pylon_ai.testing}.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

from attrs import define, field, frozen
from zope.interface import implementer

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolNegotiationFactory,
    IReactorTCP,
    IReactorTime,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from pylon_ai._errors import ANTHROPIC_ERROR_STATUS
from pylon_ai._json import dumps
from pylon_ai.formats import responses
from pylon_ai.formats._frames import sse_frame
from pylon_ai.formats.canonical import (
    Part,
    ReasoningPart,
    Reply,
    ReplyUsage,
    TextPart,
    ToolCall,
    ToolCallPart,
)
from pylon_ai.formats.chat import (
    OpenAIStreamEncoder,
    openai_completion_body,
    openai_error_body,
)
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningSignature,
    Stop,
    StopReason,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from pylon_ai.formats.messages import (
    AnthropicStreamEncoder,
    anthropic_error_body,
    anthropic_message_body,
)

if TYPE_CHECKING:
    import trustme
    from treq.client import HTTPClient

#: The error type sent for an HTTP status when the reply names none.
_STATUS_ERROR_TYPE: dict[int, str] = {
    status: error_type for error_type, status in ANTHROPIC_ERROR_STATUS.items()
}
_STATUS_ERROR_TYPE[503] = "overloaded_error"

Format = Literal["anthropic", "openai", "responses"]
Kind = Literal["completion", "count_tokens", "embeddings"]

#: What to install for C{tls=True}.
_TLS_HINT = (
    "FakeProvider(tls=True) needs trustme, from the test extra:"
    " pip install 'pylon_ai[test]'"
)


def require_trustme() -> None:
    """
    Check that C{trustme} (needed for C{tls=True}) can be imported.

    @raise ImportError: It cannot; the message says what to install.
    """
    try:
        import trustme  # noqa: F401
    except ImportError as e:
        raise ImportError(_TLS_HINT, name="trustme") from e


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    C{host} as an IP address, or L{None} for a name.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_ipv6(host: str) -> bool:
    address = _address(host)
    return address is not None and address.version == 6


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


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and isinstance(value[0], int):
        return [" ".join(map(str, value))]
    if isinstance(value, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    return []


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


@implementer(IProtocolNegotiationFactory)
class _TrackingFactory(WrappingFactory):
    """
    Keep track of open connections, and tell waiters when none is left.
    """

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self._site = site
        self._idle: list[Deferred[None]] = []

    def acceptableProtocols(self) -> list[bytes]:
        # Twisted's TLS answers every ALPN offer from the protocols of the
        # factory it wraps (this one); with none it fails the handshake of
        # clients that offer ALPN, as httpx (so the official SDKs) and curl
        # do.  Offer the site's.
        protocols: list[bytes] = self._site.acceptableProtocols()
        return protocols

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    def close_all(self) -> Deferred[None]:
        """
        Abort every open connection.

        @return: Fires when all are closed.
        """
        if not self.protocols:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        for wrapper in list(self.protocols):
            wrapper.transport.abortConnection()
        return waiter


@define(eq=False)
class _Exchange:
    """
    Answer one request with one L{FakeReply}.
    """

    request: Request
    recorded: RecordedRequest
    reply: FakeReply
    format: Format
    model: str
    clock: IReactorTime
    forget: Callable[[_Exchange], None]
    #: What was asked: a completion, a token count or embeddings.
    kind: Kind = "completion"
    _pieces: list[ModelEvent | ReasoningDelta | ReasoningSignature] = field(
        factory=list, init=False
    )
    _sent: int = field(default=0, init=False)
    _call: IDelayedCall | None = field(default=None, init=False)
    _over: bool = field(default=False, init=False)
    _aborted: bool = field(default=False, init=False)
    _encoder: (
        AnthropicStreamEncoder
        | OpenAIStreamEncoder
        | responses.ResponsesStreamEncoder
        | None
    ) = field(default=None, init=False)

    def begin(self) -> None:
        self.request.notifyFinish().addBoth(self._connection_done)
        self._later(self.reply.first_byte_delay, self._respond)

    def shut(self) -> None:
        """
        The fake is stopping: send nothing more, and do not take the
        connection's end for the client's doing.
        """
        self._aborted = True
        self.cancel()

    def cancel(self) -> None:
        """
        Send nothing more: cancel any pending delayed call.
        """
        self._over = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _connection_done(self, result: Failure | None) -> None:
        self.cancel()
        self.forget(self)
        if isinstance(result, Failure):
            if not self._aborted:
                self.recorded.disconnected.callback(None)
        else:
            self.recorded.finished.callback(None)

    def _later(self, delay: float, what: Callable[[], None]) -> None:
        if self._over:
            return
        if delay > 0:
            self._call = self.clock.callLater(delay, what)
        else:
            what()

    def _abort(self) -> None:
        # Close the TCP connection under any TLS layer, once what was written
        # is sent: not abortConnection(), which would throw that away, and
        # not a TLS close, which waits for the peer's close_notify.  The
        # client sees the body cut before its end, as when a peer dies.
        self._aborted = True
        self.cancel()
        transport = self.request.channel.transport
        while isinstance(transport, ProtocolWrapper):
            transport = transport.transport
        if transport is not None:
            transport.loseConnection()

    def _finish(self) -> None:
        self._over = True
        self.request.finish()

    def _respond(self) -> None:
        self._call = None
        reply, request = self.reply, self.request
        request.setResponseCode(reply.status)
        for name, value in reply.headers:
            request.responseHeaders.addRawHeader(name, value)
        if reply.retry_after is not None:
            request.setHeader("retry-after", str(reply.retry_after))
        request_id = f"req_fake_{id(self):x}"
        if self.format == "anthropic":
            request.setHeader("request-id", request_id)
        else:
            request.setHeader("x-request-id", request_id)
        streaming = (
            self.recorded.stream and reply.status == 200 and self.kind == "completion"
        )
        if not request.responseHeaders.hasHeader("content-type"):
            request.setHeader(
                "content-type",
                "text/event-stream; charset=utf-8" if streaming else "application/json",
            )
        if reply.raw_body is not None:
            request.write(reply.raw_body)
            if reply.drop_after is not None:
                self._abort()
            else:
                self._finish()
        elif reply.status != 200:
            request.write(self._error_body())
            self._finish()
        elif self.kind != "completion":
            self._unary_body()
        elif streaming:
            self._start_stream()
        else:
            self._whole_body()

    def _error_body(self) -> bytes:
        reply = self.reply
        error_type = reply.error_type or _STATUS_ERROR_TYPE.get(
            reply.status, "api_error"
        )
        if self.format == "anthropic":
            return dumps(anthropic_error_body(error_type, reply.message))
        return dumps(openai_error_body(reply.message, error_type, str(reply.status)))

    def _usage(self) -> Usage | None:
        if self.reply.usage is None:
            return None
        return Usage(*self.reply.usage)

    def _stop(self) -> Stop:
        reason = self.reply.stop_reason
        if reason is None:
            reason = "tool_use" if self.reply.tool_calls else "end_turn"
        return Stop(reason, reason)

    def _whole_body(self) -> None:
        reply = self.reply
        calls = [
            ToolCall(call.id, call.name, "".join(call.arguments_fragments))
            for call in reply.tool_calls
        ]
        text = "".join(reply.chunks)
        if self.format == "responses":
            body = self._response_body(text)
        elif self.format == "anthropic":
            body = anthropic_message_body(
                model=self.model,
                text=text,
                tool_calls=calls,
                stop=self._stop(),
                usage=self._usage(),
            )
        else:
            body = openai_completion_body(
                model=self.model,
                text=text,
                tool_calls=calls,
                stop=self._stop(),
                usage=self._usage(),
                created=int(self.clock.seconds()),
            )
        if reply.thinking and self.format != "responses":
            self._add_thinking(body)
        self._send_whole(dumps(body))

    def _send_whole(self, data: bytes) -> None:
        # A whole body, cut or stalled as the reply says.
        reply = self.reply
        if reply.drop_after is not None:
            self.request.write(data[: len(data) // 2])
            self._abort()
        elif reply.stall_after is not None:
            self.request.write(b"")
            self._over = True
        else:
            self.request.write(data)
            self._finish()

    def _response_body(self, text: str) -> dict[str, Any]:
        # A Responses object: reasoning (a signed block packed as the
        # gateway packs Anthropic's), the text, the calls.
        reply = self.reply
        parts: list[Part] = []
        if reply.thinking:
            thinking = "".join(reply.thinking)
            parts.append(ReasoningPart(thinking, signature=reply.signature))
        if text:
            parts.append(TextPart(text))
        for call in reply.tool_calls:
            arguments = json.loads("".join(call.arguments_fragments) or "{}")
            parts.append(ToolCallPart(call.id, call.name, arguments))
        usage = ReplyUsage(*reply.usage) if reply.usage is not None else ReplyUsage()
        canonical = Reply(None, self.model, tuple(parts), self._stop(), usage)
        return responses.encode_response(
            canonical,
            echo=responses.response_echo(self.recorded.json),
            created_at=int(self.clock.seconds()),
        )

    def _add_thinking(self, body: dict[str, Any]) -> None:
        # The whole-body places of reasoning: Anthropic's thinking block
        # before the text, the reasoning_content field vLLM and DeepSeek add
        # to the Chat Completions message.
        thinking = "".join(self.reply.thinking)
        if self.format == "anthropic":
            block = {
                "type": "thinking",
                "thinking": thinking,
                "signature": self.reply.signature or "",
            }
            body["content"].insert(0, block)
        else:
            body["choices"][0]["message"]["reasoning_content"] = thinking

    def _unary_body(self) -> None:
        # A token count or embeddings: one JSON body, cut or withheld as
        # drop_after and stall_after say.
        reply = self.reply
        body: dict[str, Any]
        if self.kind == "count_tokens":
            count = reply.input_tokens
            if count is None:
                count = reply.usage[0] if reply.usage is not None else 10
            body = {"input_tokens": count}
        else:
            body = self._embeddings()
        self._send_whole(dumps(body))

    def _embeddings(self) -> dict[str, Any]:
        reply, asked = self.reply, self.recorded.json
        texts = _embedding_inputs(asked.get("input"))
        vectors = list(reply.embeddings) or [
            (float(len(text)), float(index), 0.5) for index, text in enumerate(texts)
        ]
        base64_wanted = asked.get("encoding_format") == "base64"
        data = []
        for index, vector in enumerate(vectors):
            embedding: Any = list(vector)
            if base64_wanted:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = (
            reply.usage[0]
            if reply.usage is not None
            else sum(len(text.split()) for text in texts)
        )
        return {
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _start_stream(self) -> None:
        reply = self.reply
        encoder: (
            AnthropicStreamEncoder
            | OpenAIStreamEncoder
            | responses.ResponsesStreamEncoder
        )
        if self.format == "responses":
            encoder = responses.ResponsesStreamEncoder(
                self.model,
                echo=responses.response_echo(self.recorded.json),
                created_at=int(self.clock.seconds()),
            )
        elif self.format == "anthropic":
            encoder = AnthropicStreamEncoder(self.model)
        else:
            options = self.recorded.json.get("stream_options")
            include_usage = isinstance(options, dict) and bool(
                options.get("include_usage")
            )
            encoder = OpenAIStreamEncoder(
                self.model,
                created=int(self.clock.seconds()),
                include_usage=include_usage,
            )
        self._encoder = encoder
        encoder.encode(MessageStart(model=self.model))
        if reply.usage is not None:
            # Anthropic reports input tokens (and a placeholder output count)
            # in message_start, the final output count at the end.
            encoder.encode(Usage(reply.usage[0], 1))
        self._pieces = [ReasoningDelta(chunk) for chunk in reply.thinking]
        if reply.thinking and self.format != "openai":
            # Closes the thinking block, with or without a signature.
            self._pieces.append(ReasoningSignature(reply.signature or ""))
        self._pieces.extend(TextDelta(chunk) for chunk in reply.chunks)
        for index, call in enumerate(reply.tool_calls):
            fragments = call.arguments_fragments or ("",)
            self._pieces.append(ToolCallDelta(index, call.id, call.name, fragments[0]))
            self._pieces.extend(
                ToolCallDelta(index, arguments=fragment) for fragment in fragments[1:]
            )
        self.request.write(encoder.start())
        self._step()

    def _step(self) -> None:
        # A loop, not a recursion, when pieces follow without delay: a reply
        # may have thousands of them.
        self._call = None
        reply, encoder = self.reply, self._encoder
        assert encoder is not None
        while not self._over:
            if reply.drop_after is not None and self._sent >= reply.drop_after:
                self._abort()
            elif reply.stall_after is not None and self._sent >= reply.stall_after:
                self._over = True
            elif self._sent >= len(self._pieces):
                self._end_stream(encoder)
            elif reply.chunk_delay > 0:
                self._later(reply.chunk_delay, self._send_piece)
            else:
                self._write_piece()
                continue
            return

    def _write_piece(self) -> None:
        assert self._encoder is not None
        piece = self._pieces[self._sent]
        self._sent += 1
        if isinstance(piece, ReasoningDelta | ReasoningSignature) and not isinstance(
            self._encoder, responses.ResponsesStreamEncoder
        ):
            self.request.write(self._reasoning(self._encoder, piece))
        else:
            self.request.write(self._encoder.encode(piece))

    def _reasoning(
        self,
        encoder: AnthropicStreamEncoder | OpenAIStreamEncoder,
        piece: ReasoningDelta | ReasoningSignature,
    ) -> bytes:
        # Written here rather than by the encoders: the fake's thinking
        # stands for what real providers send, whatever the gateway's own
        # encoders make of reasoning.
        out = encoder.start()
        if isinstance(encoder, OpenAIStreamEncoder):
            assert isinstance(piece, ReasoningDelta)
            chunk: dict[str, Any] = {
                "id": encoder.completion_id,
                "object": "chat.completion.chunk",
                "created": encoder.created,
                "model": encoder.model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"reasoning_content": piece.text},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }
            if encoder.include_usage:
                chunk["usage"] = None
            return out + b"data: " + dumps(chunk) + b"\n\n"
        # The thinking block is the first content block: index 0, and the
        # encoder numbers the text and tool blocks after it.
        if self._sent == 1:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            start = {"type": "content_block_start", "index": 0, "content_block": block}
            out += sse_frame(dumps(start), "content_block_start")
        delta: dict[str, str]
        if isinstance(piece, ReasoningDelta):
            delta = {"type": "thinking_delta", "thinking": piece.text}
        elif piece.signature:
            delta = {"type": "signature_delta", "signature": piece.signature}
        else:
            delta = {}
        if delta:
            event = {"type": "content_block_delta", "index": 0, "delta": delta}
            out += sse_frame(dumps(event), "content_block_delta")
        if isinstance(piece, ReasoningSignature):
            stop = {"type": "content_block_stop", "index": 0}
            out += sse_frame(dumps(stop), "content_block_stop")
            encoder._next_block = 1
        return out

    def _send_piece(self) -> None:
        self._call = None
        self._write_piece()
        self._step()

    def _end_stream(
        self,
        encoder: AnthropicStreamEncoder
        | OpenAIStreamEncoder
        | responses.ResponsesStreamEncoder,
    ) -> None:
        reply = self.reply
        if reply.stream_error:
            error_type = reply.error_type or "overloaded_error"
            status = ANTHROPIC_ERROR_STATUS.get(error_type)
            data = encoder.encode(StreamError(status, error_type, reply.message))
            if isinstance(encoder, OpenAIStreamEncoder):
                data += b"data: [DONE]\n\n"
            self.request.write(data)
        else:
            usage = self._usage()
            if usage is not None:
                encoder.encode(usage)
            self.request.write(encoder.encode(self._stop()) + encoder.finish())
        self._finish()


class _FakeResource(Resource):
    isLeaf = True

    def __init__(self, provider: FakeProvider) -> None:
        super().__init__()
        self._provider = provider

    def render(self, request: Request) -> bytes | int:
        return self._provider._handle(request)


@define(eq=False)
class FakeProvider:
    """
    A scripted fake LLM provider, on C{127.0.0.1} by default, for tests.

    C{POST /v1/messages} (or any path ending in C{/messages}) is answered in
    Anthropic's Messages format; every other C{POST} path (so
    C{/v1/chat/completions} and custom endpoint paths) in OpenAI's Chat
    Completions format, except one ending in C{/responses}: the OpenAI
    Responses API (reasoning as a reasoning item whose C{encrypted_content}
    packs the signed thinking).  A request body with C{"stream": true} gets an event
    stream, any other a whole JSON body.  A path ending in
    C{/messages/count_tokens} gets Anthropic's token count
    (L{FakeReply.input_tokens}), one ending in C{/embeddings} OpenAI's
    embeddings (L{FakeReply.embeddings}); their errors take the same
    formats.  Other methods get a 405.

    Replies queued with L{enqueue} are served in order, one per request; when
    the queue is empty L{default_reply} is served.

    @ivar reactor: Listens and connects (a real reactor).
    @ivar tls: Serve HTTPS with a certificate from a throwaway C{trustme} CA
        (valid for C{localhost}, C{127.0.0.1}, C{::1} and L{host}).  Needs
        C{trustme}, from C{pip install 'pylon_ai[test]'}.
    @ivar port: The TCP port to listen on; 0 (the default) lets the system
        pick a free one, which L{listening_port} and L{base_url} report.
    @ivar host: The IP address to listen on: C{127.0.0.1} by default (an
        IPv6 address such as C{::1} works too).  Another interface than a
        loopback one lets other machines reach the fake.
    @ivar clock: Schedules the delays of replies; the reactor if L{None}.  A
        L{twisted.internet.task.Clock} lets a test move time by hand.
    @ivar default_reply: Served when the queue is empty.
    @ivar responder: Asked first for every request (after L{requests}
        records it): a L{FakeReply} it returns is served and the queue is
        left as it is; L{None} lets the queue answer.  For clients whose
        requests a test cannot foresee, such as an agent that offers tools
        under names of its own choosing.
    @ivar requests: Every request received, in order.
    """

    reactor: IReactorTCP
    tls: bool = field(default=False, kw_only=True)
    port: int = field(default=0, kw_only=True)
    host: str = field(default="127.0.0.1", kw_only=True)
    clock: IReactorTime | None = field(default=None, kw_only=True)
    default_reply: FakeReply = field(
        default=FakeReply(chunks=("Hello", " from", " the", " fake."), usage=(10, 4)),
        kw_only=True,
    )
    responder: Callable[[RecordedRequest], FakeReply | None] | None = field(
        default=None, kw_only=True
    )
    requests: list[RecordedRequest] = field(factory=list, init=False)
    _queue: deque[FakeReply] = field(factory=deque, init=False)
    _factory: _TrackingFactory | None = field(default=None, init=False)
    _listener: IListeningPort | None = field(default=None, init=False)
    _exchanges: set[_Exchange] = field(factory=set, init=False)
    _pools: list[Any] = field(factory=list, init=False)
    _ca: trustme.CA | None = field(default=None, init=False)
    _waiters: list[tuple[int, Deferred[RecordedRequest]]] = field(
        factory=list, init=False
    )

    def __attrs_post_init__(self) -> None:
        # Say what is missing when the fake is made, not at the first
        # request of a test.
        if self.tls:
            require_trustme()

    def start(self) -> Deferred[None]:
        """
        Start listening on L{host} and L{port}.

        @return: Fires when L{base_url} can be used, or fails with
            L{twisted.internet.error.CannotListenError} (e.g. the port is
            taken).
        """
        from twisted.internet.endpoints import (
            SSL4ServerEndpoint,
            TCP4ServerEndpoint,
            TCP6ServerEndpoint,
        )

        site = Site(_FakeResource(self))
        site.displayTracebacks = False
        self._factory = _TrackingFactory(site)
        endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint | SSL4ServerEndpoint
        if self.tls:
            import trustme

            self._ca = trustme.CA()
            names = ["localhost", "127.0.0.1", "::1"]
            address = _address(self.host)
            if self.host not in names and not (address and address.is_unspecified):
                names.append(self.host)
            cert = self._ca.issue_cert(*names)
            from twisted.internet.ssl import PrivateCertificate

            options = PrivateCertificate.loadPEM(
                cert.private_key_and_cert_chain_pem.bytes()
            ).options()
            # SSL4ServerEndpoint takes IPv6 interfaces too: it only passes
            # the address to listenSSL.
            endpoint = SSL4ServerEndpoint(
                self.reactor,
                self.port,
                options,
                interface=self.host,
            )
        elif _is_ipv6(self.host):
            endpoint = TCP6ServerEndpoint(self.reactor, self.port, interface=self.host)
        else:
            endpoint = TCP4ServerEndpoint(self.reactor, self.port, interface=self.host)

        def listening(port: IListeningPort) -> None:
            self._listener = port

        return endpoint.listen(self._factory).addCallback(listening)

    def stop(self) -> Deferred[None]:
        """
        Stop listening, close every open connection (and the pools of
        clients made by L{http_client}), cancel every pending delay.

        @return: Fires when all is closed.
        """
        for exchange in list(self._exchanges):
            exchange.shut()
        waits: list[Deferred[Any]] = [
            pool.closeCachedConnections() for pool in self._pools
        ]
        self._pools = []
        if self._listener is not None:
            waits.append(maybeDeferred(self._listener.stopListening))
            self._listener = None
        if self._factory is not None:
            waits.append(self._factory.close_all())
        return gatherResults(waits).addCallback(lambda _: None)

    @property
    def listening_port(self) -> int:
        """
        The TCP port the fake listens on (the one the system picked when
        L{port} is 0).

        @raise RuntimeError: The fake is not listening.
        """
        if self._listener is None:
            raise RuntimeError("the fake provider is not started")
        port: int = self._listener.getHost().port  # type: ignore[attr-defined]
        return port

    @property
    def base_url(self) -> str:
        """
        C{http://HOST:PORT}, or C{https://HOST:PORT} with TLS: with the
        default host, C{http://127.0.0.1:PORT} or C{https://localhost:PORT}.
        An unspecified host (C{0.0.0.0}, C{::}) is reached on loopback.

        @raise RuntimeError: The fake is not listening.
        """
        port = self.listening_port
        host = self.host
        if host in ("0.0.0.0", "127.0.0.1"):
            # The name the certificate gives for loopback, as clients write it.
            host = "localhost" if self.tls else "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif _is_ipv6(host):
            host = f"[{host}]"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def ca(self) -> trustme.CA:
        """
        The test CA that signed the server certificate (with C{tls=True}).

        @raise RuntimeError: The fake does not use TLS or is not started.
        """
        if self._ca is None:
            raise RuntimeError("no CA: the fake was not started with tls=True")
        return self._ca

    @property
    def open_connections(self) -> int:
        """
        How many client connections are open now.
        """
        return 0 if self._factory is None else len(self._factory.protocols)

    def wait_for_request(self, number: int = 1) -> Deferred[RecordedRequest]:
        """
        Wait until the fake has received C{number} requests in all.

        @param number: Counted from 1 since the fake started.
        @return: Fires with the C{number}th L{RecordedRequest} (at once if it
            has come already), after the fake began answering it.
        """
        if len(self.requests) >= number:
            return succeed(self.requests[number - 1])
        waiter: Deferred[RecordedRequest] = Deferred()
        self._waiters.append((number, waiter))
        return waiter

    def _notify(self) -> None:
        ready = [(n, w) for n, w in self._waiters if n <= len(self.requests)]
        self._waiters = [(n, w) for n, w in self._waiters if n > len(self.requests)]
        for number, waiter in ready:
            waiter.callback(self.requests[number - 1])

    def enqueue(self, *replies: FakeReply) -> None:
        """
        Queue replies, served in order, one per request.

        @param replies: The replies.
        """
        self._queue.extend(replies)

    def http_client(self) -> HTTPClient:
        """
        A C{treq} client with its own connection pool that trusts the fake's
        CA (with C{tls=True}: and only it).  L{stop} closes its pool.

        @return: The client.
        """
        from pylon_ai._http import make_http_client, make_pool

        pool = make_pool(self.reactor)
        self._pools.append(pool)
        trust = None
        if self._ca is not None:
            from twisted.internet.ssl import Certificate

            trust = Certificate.loadPEM(self._ca.cert_pem.bytes())
        return make_http_client(
            self.reactor,
            trust_root=trust,  # type: ignore[arg-type]
            pool=pool,
        )

    def _handle(self, request: Request) -> bytes | int:
        try:
            return self._answer(request)
        finally:
            self._notify()

    def _answer(self, request: Request) -> bytes | int:
        assert request.method is not None and request.uri is not None
        body = request.content.read() if request.content is not None else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        recorded = RecordedRequest(
            request.method.decode("ascii"),
            request.uri.decode("latin-1"),
            headers,
            body,
            parsed,
        )
        self.requests.append(recorded)
        path = request.path.decode("latin-1") if request.path else "/"
        kind: Kind = "completion"
        if path.endswith("/messages/count_tokens"):
            kind = "count_tokens"
        elif path.endswith("/embeddings"):
            kind = "embeddings"
        format: Format = (
            "anthropic"
            if path.endswith("/messages") or kind == "count_tokens"
            else "responses"
            if path.endswith("/responses")
            else "openai"
        )
        if recorded.method != "POST":
            return self._refuse(request, format, 405, "invalid_request_error")
        if not isinstance(parsed, dict):
            return self._refuse(request, format, 400, "invalid_request_error")
        reply = self.responder(recorded) if self.responder is not None else None
        if reply is None:
            reply = self._queue.popleft() if self._queue else self.default_reply
        model = reply.model or parsed.get("model") or "fake-model"
        exchange = _Exchange(
            request,
            recorded,
            reply,
            format,
            str(model),
            cast(IReactorTime, self.clock or self.reactor),
            self._exchanges.discard,
            kind,
        )
        self._exchanges.add(exchange)
        exchange.begin()
        return NOT_DONE_YET

    def _refuse(
        self, request: Request, format: Format, status: int, error_type: str
    ) -> bytes:
        message = (
            "the fake provider answers POST only"
            if status == 405
            else "the request body is not a JSON object"
        )
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        if format == "anthropic":
            return dumps(anthropic_error_body(error_type, message))
        return dumps(openai_error_body(message, error_type, str(status)))
