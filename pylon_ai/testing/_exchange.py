"""
One request answered by the fake provider: the timing of a L{FakeReply}
(the first byte's delay, each chunk's), its stream in the format asked for,
and the connection cut or stalled where the reply says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.server import Request

from pylon_ai._errors import ANTHROPIC_ERROR_STATUS
from pylon_ai._json import dumps
from pylon_ai.formats import responses
from pylon_ai.formats._frames import sse_frame
from pylon_ai.formats.chat import OpenAIStreamEncoder
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningSignature,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from pylon_ai.formats.messages import AnthropicStreamEncoder
from pylon_ai.testing._bodies import (
    Format,
    Kind,
    reply_error_body,
    reply_stop,
    reply_usage,
    unary_body,
    whole_body,
)
from pylon_ai.testing._reply import FakeReply, RecordedRequest


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
            request.write(reply_error_body(reply, self.format))
            self._finish()
        elif self.kind != "completion":
            self._unary_body()
        elif streaming:
            self._start_stream()
        else:
            self._whole_body()

    def _whole_body(self) -> None:
        created = int(self.clock.seconds())
        body = whole_body(
            self.reply, self.format, self.model, created, self.recorded.json
        )
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

    def _unary_body(self) -> None:
        # A token count or embeddings: one JSON body, cut or withheld as
        # drop_after and stall_after say.
        body = unary_body(self.reply, self.kind, self.model, self.recorded.json)
        self._send_whole(dumps(body))

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
            usage = reply_usage(reply)
            if usage is not None:
                encoder.encode(usage)
            self.request.write(encoder.encode(reply_stop(reply)) + encoder.finish())
        self._finish()
