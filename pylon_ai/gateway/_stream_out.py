"""
How a streamed reply goes out to the client (the part of
L{Exchange <pylon_ai.gateway._exchange.Exchange>} that writes): the
response head (the event-stream headers, the gateway's overhead, the
upstream body registered as the producer), the encoded events collected and
written once per upstream read, and a same-format stream relayed as it came.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from pylon_ai._send import send_now
from pylon_ai.gateway._attempts import Attempts
from pylon_ai.gateway._gateway import Api

_SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


class _StreamOut:
    """
    The writing half of an exchange, mixed into
    L{Exchange <pylon_ai.gateway._exchange.Exchange>}, which sets every
    attribute declared here.
    """

    _request: Request
    _api: Api
    _call: Attempts | None
    _received: float
    _opened: float
    _overhead: float
    _status: int
    _began: bool
    _gone: bool
    _saw_done: bool
    _passed: int
    _producer: Any
    _out: list[bytes]

    def _relay(self, data: bytes, count: int) -> None:
        # Pass-through: the upstream's complete events as they came, one
        # write per upstream read (the usage chunk the gateway asked for
        # itself is cut out already).
        if self._gone:
            return
        if self._api == "responses":
            self._passed += count
        elif self._api == "openai" and data.endswith(b"[DONE]\n\n"):
            self._saw_done = True
        if self._began:
            self._request.write(data)
        else:
            self._begin()
            self._request.write(data)
            # The first bytes go out before the rest of the read is done.
            send_now(self._transport())

    def _begin(self) -> None:
        self._began = True
        self._status = 200
        request = self._request
        request.setResponseCode(200)
        for name, value in _SSE_HEADERS:
            request.setHeader(name, value)
        self._set_overhead()
        producer = self._call.producer if self._call is not None else None
        if producer is not None and not request._disconnected:
            request.registerProducer(producer, True)
            self._producer = producer

    def _set_overhead(self) -> None:
        self._overhead = self._opened - self._received
        self._request.setHeader(
            b"x-pylon-overhead-ms", f"{self._overhead * 1000:.3f}".encode("ascii")
        )

    def _write(self, data: bytes) -> None:
        # Collected, and written once per upstream read (_flush): one HTTP
        # chunk for a burst of events rather than one each.
        if not self._gone:
            self._out.append(data)

    def _flush(self) -> bool:
        # True when something was written (the upstream call stops flushing
        # after every event once the first bytes went out).
        out = self._out
        if not out or self._gone:
            return False
        first = not self._began
        if first:
            self._begin()
        self._request.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        if first:
            # The first bytes go out before the rest of the read is done.
            send_now(self._transport())
        return True

    def _transport(self) -> Any:
        return getattr(getattr(self._request, "channel", None), "transport", None)

    def _unregister(self) -> None:
        if self._producer is not None:
            self._producer = None
            try:
                self._request.unregisterProducer()
            except (AttributeError, RuntimeError):
                pass  # the client is gone: nothing is registered any more
