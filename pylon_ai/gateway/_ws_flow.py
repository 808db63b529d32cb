"""
Flow control for a C{/v1/ws} socket: a client that does not read pauses the
upstreams of its socket once C{ws_pause_bytes} wait for it, and the socket is
closed once more than C{ws_max_queued_bytes} do.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from twisted.internet.interfaces import IPushProducer

from pylon_ai.gateway._metrics import Metrics


@implementer(IPushProducer)
class _SendFlow:
    """
    How much of a socket's output waits for its client, told by the
    transport: registered as the transport's producer, it hears when the
    transport's buffer is full (C{pauseProducing}) and when it emptied
    again (C{resumeProducing}).

    While the transport is full, everything sent counts as waiting; past
    C{pause_bytes} the socket's upstreams are paused until the transport
    empties, and past C{max_bytes} the socket is given up.
    """

    def __init__(
        self,
        pause_bytes: int,
        max_bytes: int,
        pause: Callable[[], object],
        resume: Callable[[], object],
        overflow: Callable[[], object],
        metrics: Metrics,
    ) -> None:
        self._pause_bytes = pause_bytes
        self._max_bytes = max_bytes
        self._pause = pause
        self._resume = resume
        self._overflow = overflow
        self._metrics = metrics
        self._full = False
        #: Bytes sent since the transport was last known not to be full.
        self.waiting = 0
        self.paused = False
        self.over = False

    def sending(self, size: int) -> None:
        """
        C{size} bytes are about to be written.
        """
        if not self._full:
            # The transport holds less than its own buffer size: little
            # enough to count as nothing.
            self.waiting = 0
        self.waiting += size

    def sent(self) -> None:
        """
        The bytes announced by L{sending} were written (and may have filled
        the transport).
        """
        if not self._full or self.over:
            return
        if self.waiting > self._max_bytes:
            self.over = True
            self._overflow()
        elif self.waiting >= self._pause_bytes and not self.paused:
            self.paused = True
            self._metrics.ws_upstream_pauses.inc()
            self._pause()

    def pauseProducing(self) -> None:
        self._full = True

    def resumeProducing(self) -> None:
        self._full = False
        self.waiting = 0
        if self.paused:
            self.paused = False
            self._resume()

    def stopProducing(self) -> None:
        self._full = False
