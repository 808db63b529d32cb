"""
One completion request on an HTTP route, from the client's body to the
upstream and back, streaming or not, in the caller's API format.

The response helpers live in L{pylon_ai.gateway._respond} (re-exported here
for the routes that import them from this module) and the writing of a
streamed reply in L{pylon_ai.gateway._stream_out}.
"""

from __future__ import annotations

import time
from typing import Any

from attrs import evolve

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from pylon_ai._call_errors import BodyTooLarge
from pylon_ai._errors import ProviderError
from pylon_ai._json import dumps
from pylon_ai._send import send_now
from pylon_ai.formats import chat, messages, responses
from pylon_ai.formats._frames import sse_frame
from pylon_ai.formats.chat import OpenAIStreamEncoder
from pylon_ai.formats.collect import ReplyCollector
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    Stop,
    TextDelta,
    ToolCallDelta,
    Usage,
    merge_usage,
)
from pylon_ai.formats.messages import AnthropicStreamEncoder
from pylon_ai.formats.responses import ResponsesStreamEncoder
from pylon_ai.formats.responses._reply import failure_code, new_id, response_object
from pylon_ai.gateway._accounting import record_request
from pylon_ai.gateway._apierrors import ApiError, api_error
from pylon_ai.gateway._attempts import Attempts
from pylon_ai.gateway._backends import Backend, Forwarded
from pylon_ai.gateway._gateway import Api, Gateway, UnknownModel
from pylon_ai.gateway._respond import respond_error, respond_json, respond_raw_json
from pylon_ai.gateway._state import Release, usage_tokens
from pylon_ai.gateway._stream_out import _StreamOut

__all__ = ["Exchange", "respond_error", "respond_json", "respond_raw_json"]

_Encoder = AnthropicStreamEncoder | OpenAIStreamEncoder | ResponsesStreamEncoder


def _too_large(limit: int) -> ApiError:
    return ApiError(
        502,
        "the upstream reply is larger than the gateway's "
        f"max_reply_bytes ({limit} bytes); "
        "ask for a streamed reply (stream: true) instead",
    )


class Exchange(_StreamOut):
    """
    Serves one completion request: picks the backend, translates where the
    formats differ, passes same-format streams through, and answers with a
    body, a stream, or an error in the caller's format.
    """

    log = Logger()

    def __init__(
        self,
        gateway: Gateway,
        request: Request,
        api: Api,
        route: str,
        release: Release | None = None,
    ) -> None:
        """
        @param release: Called once when the request is over, with the
            tokens it used (the limits' counts).
        """
        self._release = release
        self._gateway = gateway
        self._request = request
        self._api = api
        self._route = route
        self._received = time.perf_counter()
        self._opened = self._received
        self._model = "unknown"
        self._backend: Backend | None = None
        self._call: Attempts | None = None
        self._stream = False
        self._want_usage = False
        self._began = False
        self._gone = False
        self._status = 0
        self._ttft: float | None = None
        self._overhead = 0.0
        self._usage: Usage | None = None
        self._upstream_model: str | None = None
        self._message_id: str | None = None
        self._encoder: _Encoder | None = None
        self._passthrough = False
        self._saw_done = False
        #: The client's body (a Responses reply repeats some of it).
        self._body: dict[str, Any] = {}
        #: Events passed through as they came (a Responses stream numbers
        #: them; a failure's events continue the count).
        self._passed = 0
        #: A translated non-streaming reply, collected from its events.
        self._reply = ReplyCollector()
        # What a non-streaming reply collected so far, in bytes, against
        # the bound on it.
        self._collected = 0
        self._max_reply = gateway.config.server.max_reply_bytes
        self._stop: Stop | None = None
        self._producer: Any = None
        self._out: list[bytes] = []
        self._shutting_down = False
        #: A same-format non-streaming reply: the upstream's bytes.
        self._raw: bytes | None = None

    def run(self, body: dict[str, Any]) -> None:
        """
        Start serving a checked request body.
        """
        self._body = body
        self._stream = bool(body.get("stream"))
        options = body.get("stream_options")
        self._want_usage = (
            isinstance(options, dict) and options.get("include_usage") is True
        )
        if body["model"] in self._gateway.backends:
            self._model = body["model"]
        self._request.notifyFinish().addErrback(self._client_gone)
        try:
            call = self._gateway.open(
                self._api,
                body,
                self._event,
                self._relay if self._stream else None,
                self._upstream_chosen,
                self._flush if self._stream else None,
                on_body=None if self._stream else self._whole_arrived,
                forwarded=self._forwarded(),
            )
        except UnknownModel:
            self._error(
                ApiError(404, f"model {body['model']!r} is not configured", "model")
            )
            return
        except TranslationError as e:
            self._error(ApiError(400, e.message, e.param))
            return
        self._opened = time.perf_counter()
        self._call = call
        if self._stream:
            self._gateway.metrics.streams_in_flight.inc()
        self._gateway.track(self)
        call.deferred.addCallbacks(self._done, self._failed)

    def _forwarded(self) -> Forwarded | None:
        # Only Anthropic's format has a beta header (and Claude Code's
        # query string); the attempts give it to Anthropic upstreams only.
        if self._api != "anthropic":
            return None
        request = self._request
        return Forwarded.from_request(request.requestHeaders, request.uri or b"")

    def _upstream_chosen(self, backend: Backend) -> None:
        # The attempt whose reply the client gets (after any retries).
        self._backend = backend
        self._passthrough = self._stream and backend.speaks(self._api)

    def shutdown(self) -> None:
        """
        The service is stopping and the grace period is over: end this
        request with an error (an error event if streaming began).
        """
        self._shutting_down = True
        if self._call is not None and not self._call.deferred.called:
            self._call.deferred.cancel()

    # -- the upstream's side ------------------------------------------------

    def _event(self, event: ModelEvent) -> None:
        kind = type(event)
        if kind is TextDelta or kind is ToolCallDelta or kind is ReasoningDelta:
            if self._ttft is None:
                self._ttft = time.perf_counter() - self._received
            if not self._stream:
                self._collect(event)  # type: ignore[arg-type]
        elif kind is Usage:
            self._usage = merge_usage(self._usage, event)  # type: ignore[arg-type]
        elif kind is MessageStart:
            self._upstream_model = event.model  # type: ignore[union-attr]
            self._message_id = event.id  # type: ignore[union-attr]
        elif kind is Stop:
            self._stop = event  # type: ignore[assignment]
        elif not self._stream:
            self._reply.add(event)  # reasoning signatures, redacted reasoning
        if self._stream and not self._passthrough:
            encoder = self._encoder or self._make_encoder()
            out = encoder.encode(event)
            if out:
                self._write(out)

    def _whole_arrived(self, raw: bytes) -> None:
        # The upstream spoke the client's format: its body goes out as it
        # came (its MessageStart and Usage came through _event).
        self._ttft = time.perf_counter() - self._received
        self._raw = raw

    def _collect(self, event: TextDelta | ToolCallDelta | ReasoningDelta) -> None:
        self._reply.add(event)
        if type(event) is ToolCallDelta:
            text = event.arguments
        else:
            text = event.text  # type: ignore[union-attr]
        # isascii() is O(1): only other text pays for an encode.
        self._collected += len(text) if text.isascii() else len(text.encode())
        if self._collected > self._max_reply:
            # Raised into the upstream call: it stops reading and closes
            # the connection, and the request fails with this error.
            self._reply = ReplyCollector()
            raise ApiError(
                502,
                "the upstream reply is larger than the gateway's "
                f"max_reply_bytes ({self._max_reply} bytes); "
                "ask for a streamed reply (stream: true) instead",
            )

    def _make_encoder(self) -> _Encoder:
        model = self._upstream_model or self._default_model()
        encoder: _Encoder
        if self._api == "anthropic":
            encoder = AnthropicStreamEncoder(model)
        elif self._api == "responses":
            encoder = ResponsesStreamEncoder(
                model, echo=responses.response_echo(self._body), names=self._names()
            )
        else:
            encoder = OpenAIStreamEncoder(model, include_usage=self._want_usage)
        self._encoder = encoder
        return encoder

    def _names(self) -> responses.ToolNames:
        # How the upstream knows the client's namespaced tools.
        if self._call is None:
            return responses.ToolNames()
        return self._call.translation.names

    def _default_model(self) -> str:
        if self._backend is not None and self._backend.model:
            return self._backend.model
        return self._model

    def _done(self, _: None) -> None:
        if self._gone:
            return
        # Taken now: a finished request no longer knows its channel.
        transport = self._transport()
        if self._stream:
            if self._passthrough:
                if self._api == "openai" and not self._saw_done:
                    self._write(b"data: [DONE]\n\n")
            else:
                encoder = self._encoder or self._make_encoder()
                self._write(encoder.finish())
            self._flush()
            if not self._began:
                self._begin()
            self._unregister()
            self._request.finish()
        elif self._raw is not None:
            self._status = 200
            self._set_overhead()
            respond_raw_json(self._request, self._raw)
        else:
            try:
                body = self._whole_body()
            except ValueError:
                self._error(ApiError(502, "the upstream sent invalid tool arguments"))
                return
            self._status = 200
            self._set_overhead()
            respond_json(self._request, 200, body)
        # The reply leaves before the books are kept.
        send_now(transport)
        self._log()

    def _whole_body(self) -> dict[str, Any]:
        # Translated: the reply the upstream streamed, in the client's
        # format's whole body (reasoning, signatures and cache counts kept).
        for event in (self._start_event(), self._usage, self._stop):
            if event is not None:
                self._reply.add(event)
        reply = self._reply.reply()
        model = self._upstream_model or self._default_model()
        if self._api == "anthropic":
            if reply.id is None:
                reply = evolve(reply, id=messages.message_id())
            return messages.encode_response(reply, model=model)
        if self._api == "responses":
            return responses.encode_response(
                reply,
                echo=responses.response_echo(self._body),
                names=self._names(),
                model=model,
            )
        return chat.encode_response(reply, model=model)

    def _start_event(self) -> MessageStart:
        return MessageStart(self._message_id, self._upstream_model)

    def _failed(self, failure: Failure) -> None:
        if self._gone:
            self._status = 499
            self._log()
            return
        if self._shutting_down:
            self._error(ApiError(503, "the gateway is shutting down"))
            return
        if failure.check(BodyTooLarge):
            self._error(_too_large(failure.value.limit))  # type: ignore[union-attr]
            return
        if not failure.check(ProviderError, CancelledError, TranslationError, ApiError):
            self.log.failure(
                "Unexpected failure serving {route} for model {model}",
                failure,
                route=self._route,
                model=self._model,
            )
        self._error(api_error(failure.value or Exception()))

    def _error(self, error: ApiError) -> None:
        self._status = error.status
        self._flush()  # what the client was owed before the failure
        if self._began:
            self._unregister()
            if not self._gone:
                self._request.write(self._error_events(error))
                self._request.finish()
        else:
            self._set_overhead()
            respond_error(self._request, self._api, error)
        self._log()

    def _error_events(self, error: ApiError) -> bytes:
        # The end of a stream that began, in the client's format.
        if self._api != "responses":
            return error.event(self._api)
        error_type, code = error.openai_type
        if not self._passthrough:
            encoder = self._encoder or self._make_encoder()
            assert isinstance(encoder, ResponsesStreamEncoder)
            return encoder.error(error.message, error_type, code, status=error.status)
        # The upstream's own events went out as they came: these follow
        # them, numbered on, about the response the upstream announced.
        seq = self._passed
        failed = response_object(
            response_id=self._message_id or new_id("resp"),
            created_at=int(time.time()),
            model=self._upstream_model or self._default_model(),
            status="failed",
            output=[],
            usage=None,
            echo=responses.response_echo(self._body),
            error={
                "code": failure_code(error_type, error.status),
                "message": error.message,
            },
        )
        return sse_frame(
            dumps(
                {
                    "type": "error",
                    "code": code or error_type,
                    "message": error.message,
                    "param": None,
                    "sequence_number": seq,
                }
            ),
            "error",
        ) + sse_frame(
            dumps(
                {
                    "type": "response.failed",
                    "response": failed,
                    "sequence_number": seq + 1,
                }
            ),
            "response.failed",
        )

    def _client_gone(self, reason: Failure) -> None:
        self._gone = True
        self._producer = None
        if self._call is not None and not self._call.deferred.called:
            self._call.deferred.cancel()

    def _provider(self) -> str:
        backend = self._backend or (self._call.backend if self._call else None)
        return backend.provider if backend is not None else "-"

    def _log(self) -> None:
        self._gateway.untrack(self)
        if self._release is not None:
            self._release(usage_tokens(self._usage))
        if self._stream and self._call is not None:
            self._gateway.metrics.streams_in_flight.dec()
            self._stream = False
        record_request(
            self._gateway.metrics,
            route=self._route,
            model=self._model,
            provider=self._provider(),
            status=self._status,
            latency=time.perf_counter() - self._received,
            ttft=self._ttft,
            usage=self._usage,
            overhead=self._overhead,
        )
        # The attempts hold this exchange's methods: let them go, so that
        # the request's objects are freed now rather than by the cyclic
        # collector (see pylon_ai.gateway._collector).
        self._call = None
