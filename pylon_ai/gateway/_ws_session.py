"""
The session of one C{/v1/ws} socket: its authentication and the completions
multiplexed on it.  It knows nothing of autobahn
(L{pylon_ai.gateway._websocket} does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pylon_ai._errors import ProviderError
from pylon_ai._json import dumps
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.events import ModelEvent, TextDelta, Usage, merge_usage
from pylon_ai.gateway._accounting import record_request
from pylon_ai.gateway._apierrors import ApiError, api_error
from pylon_ai.gateway._client_checks import key_ok
from pylon_ai.gateway._gateway import Gateway, UnknownModel
from pylon_ai.gateway._limits import Admission, when_admitted
from pylon_ai.gateway._state import usage_tokens
from pylon_ai.gateway._ws_completion import _Completion
from pylon_ai.gateway._ws_messages import (
    _COMPLETION_FIELDS,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    MAX_ID_LENGTH,
    ROUTE,
    _BadMessage,
    _parse,
    _request_body,
    _RequestError,
    _Unsent,
)

#: Seconds a socket may stay open without authenticating when keys are set.
AUTH_TIMEOUT = 30.0
#: Completions one socket may have in flight at once.
MAX_IN_FLIGHT = 64


class _Session:
    """
    The completions of one socket, and its authentication.

    It knows nothing of autobahn: it gets the client's messages and answers
    through C{send} and C{close}.  C{send} may raise (a message the socket
    refuses): the request it belonged to then ends with an C{error}, and if
    even that cannot be sent the socket is closed.
    """

    log = Logger()

    def __init__(
        self,
        gateway: Gateway,
        send: Callable[[bytes], object],
        close: Callable[[int, str], object],
        authenticated: bool,
        on_authenticated: Callable[[], object] | None = None,
    ) -> None:
        """
        @param on_authenticated: Called when an C{auth} message succeeded.
        """
        self._gateway = gateway
        self._send_bytes = send
        self._close_socket = close
        self._authenticated = authenticated
        self._on_authenticated = on_authenticated
        #: The client key the socket authenticated with (C{""} if none).
        self.key = ""
        self._in_flight: dict[str, _Completion] = {}
        self._auth_timer: IDelayedCall | None = None
        self._gone = False
        self._paused = False
        if not authenticated:
            self._auth_timer = gateway.clock.callLater(
                AUTH_TIMEOUT, self._auth_timed_out
            )

    def closed(self, cancel_later: bool = False) -> None:
        """
        The socket closed: cancel everything in flight on it.

        @param cancel_later: Cancel the upstream calls in the next reactor
            turn rather than now (from inside one of their deliveries); the
            requests end now all the same.
        """
        if self._gone:
            return
        self._gone = True
        self._stop_auth_timer()
        in_flight, self._in_flight = self._in_flight, {}
        for completion in in_flight.values():
            if cancel_later:
                self._gateway.clock.callLater(0, self._abort, completion)
            else:
                self._abort(completion)
            self._record(completion, 499)

    # -- flow control -------------------------------------------------------

    def pause_upstreams(self) -> None:
        """
        The client is not reading: pause the upstream of every request on
        the socket (and of those that start streaming while paused).
        """
        self._paused = True
        for completion in self._in_flight.values():
            self._pause(completion)

    def resume_upstreams(self) -> None:
        """
        The client caught up: let the upstreams flow again.
        """
        self._paused = False
        for completion in self._in_flight.values():
            producer, completion.paused = completion.paused, None
            if producer is not None:
                producer.resumeProducing()

    def _pause(self, completion: _Completion) -> None:
        # The producer changes when the stream starts flowing or another
        # attempt takes over; a finished attempt's is left alone.
        call = completion.call
        producer = call.producer if call is not None else None
        if producer is not None and producer is not completion.paused:
            producer.pauseProducing()
            completion.paused = producer

    def _flushed(self, completion: _Completion) -> None:
        if self._paused and self._current(completion):
            self._pause(completion)

    # -- client messages ----------------------------------------------------

    def message_received(self, payload: bytes) -> None:
        """
        Serve one client message.
        """
        try:
            message = _parse(payload)
        except _BadMessage as e:
            self._gateway.metrics.ws_bad_messages.labels(e.reason).inc()
            if self._authenticated:
                self._error(e.request_id, e.error_type, e.message)
            else:
                self._close(CLOSE_POLICY, "authenticate first: send an auth message")
            return
        raw_id = message.get("id")
        request_id = raw_id if isinstance(raw_id, str) else None
        kind = message["type"]
        if not self._authenticated:
            if kind == "auth":
                self._auth(message)
            else:
                self._close(CLOSE_POLICY, "authenticate first: send an auth message")
            return
        try:
            if kind == "completion":
                self._start(message)
            elif kind == "cancel":
                self._cancel(message)
            else:
                self._auth(message)
        except _RequestError as e:
            self._error(request_id, e.error_type, e.message)

    def _auth(self, message: dict[str, Any]) -> None:
        key = message.get("api_key")
        if not isinstance(key, str) or not key_ok(
            self._gateway.config.server.api_keys, key
        ):
            self._close(CLOSE_POLICY, "invalid API key")
            return
        was_authenticated, self._authenticated = self._authenticated, True
        self.key = key
        self._stop_auth_timer()
        if not was_authenticated and self._on_authenticated is not None:
            self._on_authenticated()
        self._send({"type": "auth_ok"})

    def _start(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise _RequestError("id is required and must be a non-empty string")
        if len(request_id) > MAX_ID_LENGTH:
            raise _RequestError(f"id must be at most {MAX_ID_LENGTH} characters")
        if request_id in self._in_flight:
            raise _RequestError(
                f"a request with id {request_id!r} is already in flight"
            )
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            raise _RequestError(
                f"at most {MAX_IN_FLIGHT} requests may be in flight on one socket",
                "rate_limit_error",
            )
        unknown = sorted(set(message) - _COMPLETION_FIELDS)
        if unknown:
            raise _RequestError(f"unknown fields: {', '.join(unknown)}")
        body = _request_body(message)
        model = body["model"]
        if model not in self._gateway.backends:
            # Before the limits: a mistyped name spends no quota.
            self._error(
                request_id, "not_found_error", f"model {model!r} is not configured"
            )
            self._gateway.metrics.requests.labels(ROUTE, "unknown", "404").inc()
            return
        completion = _Completion(
            request_id,
            model if model in self._gateway.backends else "unknown",
            time.perf_counter(),
        )
        when_admitted(
            self._gateway.limits.admit(self.key),
            lambda release: self._admitted(completion, body, release),
            lambda: self._gone,
        )

    def _admitted(
        self, completion: _Completion, body: dict[str, Any], release: Admission
    ) -> None:
        request_id, model = completion.id, body["model"]
        if isinstance(release, ApiError):
            self._error(request_id, release.anthropic_type, release.message)
            self._gateway.metrics.requests.labels(
                ROUTE, completion.model, str(release.status)
            ).inc()
            return
        if request_id in self._in_flight:
            # The same id came again while this one waited for the shared
            # state.
            release()
            self._error(
                request_id,
                "invalid_request_error",
                f"a request with id {request_id!r} is already in flight",
            )
            return
        completion.release = release
        self._in_flight[request_id] = completion
        try:
            call = self._gateway.open(
                "openai",
                body,
                lambda event: self._event(completion, event),
                on_flush=lambda: self._flushed(completion),
            )
        except UnknownModel:
            self._fail(completion, ApiError(404, f"model {model!r} is not configured"))
            return
        except TranslationError as e:
            self._fail(completion, ApiError(400, e.message, e.param))
            return
        except Exception:
            self.log.failure("Could not start a request on {route}", route=ROUTE)
            self._fail(completion, ApiError(500, "the request could not be started"))
            return
        completion.call = call
        completion.on_shutdown = lambda: self._shutdown(completion)
        self._gateway.track(completion)
        self._gateway.metrics.streams_in_flight.inc()
        call.deferred.addCallbacks(
            lambda _: self._done(completion),
            lambda failure: self._failed(completion, failure),
        )

    def _cancel(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not isinstance(request_id, str):
            raise _RequestError("cancel needs the id of a request in flight")
        completion = self._in_flight.pop(request_id, None)
        if completion is None:
            raise _RequestError(f"no request with id {request_id!r} is in flight")
        self._abort(completion)
        self._record(completion, 499)
        self._send({"type": "cancelled", "id": request_id})

    # -- the upstream's side ------------------------------------------------

    def _current(self, completion: _Completion) -> bool:
        return self._in_flight.get(completion.id) is completion

    def _event(self, completion: _Completion, event: ModelEvent) -> None:
        if not self._current(completion):
            return
        kind = type(event)
        if kind is TextDelta:
            text = event.text  # type: ignore[union-attr]
            if completion.ttft is None:
                completion.ttft = time.perf_counter() - completion.received
            completion.add_text(text)
            if not self._send({"type": "chunk", "id": completion.id, "text": text}):
                # The client would miss a piece: the rest is worthless.
                self._fail(completion, ApiError(500, "a reply chunk could not be sent"))
                raise _Unsent("a reply chunk could not be sent")  # aborts upstream
        elif kind is Usage:
            completion.usage = merge_usage(completion.usage, event)  # type: ignore[arg-type]

    def _done(self, completion: _Completion) -> None:
        if not self._current(completion):
            return
        del self._in_flight[completion.id]
        usage = completion.usage or Usage()
        reply: dict[str, Any] = {"type": "done", "id": completion.id}
        if completion.text is not None:
            reply["text"] = "".join(completion.text)
        reply["usage"] = {
            "input_tokens": usage.input_tokens or 0,
            "output_tokens": usage.output_tokens or 0,
        }
        status = 200
        if not self._send(reply):
            status = 500
            self._error(completion.id, "api_error", "the reply could not be sent")
        self._record(completion, status)

    def _failed(self, completion: _Completion, failure: Failure) -> None:
        if not self._current(completion):
            return
        if not failure.check(ProviderError, TranslationError):
            self.log.failure(
                "Unexpected failure serving {route} for model {model}",
                failure,
                route=ROUTE,
                model=completion.model,
            )
        self._fail(completion, api_error(failure.value or Exception()))

    def _fail(self, completion: _Completion, error: ApiError) -> None:
        self._in_flight.pop(completion.id, None)
        try:
            self._error(completion.id, error.anthropic_type, error.message)
        finally:
            self._record(completion, error.status)

    # -- helpers ------------------------------------------------------------

    def _abort(self, completion: _Completion) -> None:
        call = completion.call
        if call is not None and not call.deferred.called:
            call.deferred.cancel()

    def _send(self, message: dict[str, Any]) -> bool:
        """
        Send C{message}; C{False} if the socket refused it.
        """
        if self._gone:
            return True  # nobody to tell; closed() ended everything
        try:
            self._send_bytes(dumps(message))
        except Exception:
            self.log.failure(
                "Could not send a {kind} message on {route}",
                kind=message.get("type"),
                route=ROUTE,
            )
            return False
        return True

    def _error(self, request_id: str | None, error_type: str, message: str) -> None:
        reply: dict[str, Any] = {"type": "error"}
        if request_id is not None:
            reply["id"] = request_id
        reply["error"] = {"type": error_type, "message": message}
        if not self._send(reply):
            # Not even an error gets through: the client must learn by the
            # close that its requests are over.
            self._close(CLOSE_INTERNAL, "internal error")

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        self._close(CLOSE_POLICY, "authentication timed out")

    def _close(self, code: int, reason: str) -> None:
        self._stop_auth_timer()
        if not self._gone:
            self._close_socket(code, reason)

    def _stop_auth_timer(self) -> None:
        timer, self._auth_timer = self._auth_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _record(self, completion: _Completion, status: int) -> None:
        completion.paused = None
        self._gateway.untrack(completion)
        if completion.release is not None:
            release, completion.release = completion.release, None
            release(usage_tokens(completion.usage))
        if completion.call is not None:
            self._gateway.metrics.streams_in_flight.dec()
        backend = completion.call.backend if completion.call is not None else None
        record_request(
            self._gateway.metrics,
            route=ROUTE,
            model=completion.model,
            provider=backend.provider if backend is not None else "-",
            status=status,
            latency=time.perf_counter() - completion.received,
            ttft=completion.ttft,
            usage=completion.usage,
        )

    def _shutdown(self, completion: _Completion) -> None:
        if self._current(completion):
            self._fail(completion, ApiError(503, "the gateway is shutting down"))
        self._abort(completion)
