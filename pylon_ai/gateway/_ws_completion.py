"""
One completion in flight on a C{/v1/ws} socket: what it has said so far and
what it holds (its upstream call, its admission).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from pylon_ai.formats.events import Usage
from pylon_ai.gateway._attempts import Attempts
from pylon_ai.gateway._state import Release

#: C{done} carries the whole text only when it is shorter than this (in
#: UTF-8 bytes); the chunks carried it anyway.
MAX_DONE_TEXT = 1 << 20


@define(eq=False)
class _Completion:
    """
    One completion in flight on a socket.

    @ivar text: The text so far, while it is shorter than L{MAX_DONE_TEXT};
        then L{None} (C{done} will not carry it).
    @ivar paused: The upstream producer this socket paused, if any.
    """

    id: str
    model: str
    received: float
    call: Attempts | None = None
    ttft: float | None = None
    text: list[str] | None = field(factory=list)
    text_bytes: int = 0
    usage: Usage | None = None
    on_shutdown: Callable[[], object] | None = None
    release: Release | None = None
    paused: Any = None

    def shutdown(self) -> None:
        """
        The service is stopping and the grace period is over.
        """
        if self.on_shutdown is not None:
            self.on_shutdown()

    def add_text(self, text: str) -> None:
        """
        Keep C{text} for C{done}, unless the whole is too long to repeat.
        """
        if self.text is None:
            return
        self.text_bytes += len(text) if text.isascii() else len(text.encode())
        if self.text_bytes < MAX_DONE_TEXT:
            self.text.append(text)
        else:
            self.text = None
