"""
The built-in C{mock} provider: a deterministic model that needs no network.

It answers with a fixed sentence that echoes the last user message, streamed
word by word with a small delay, and reports usage (words counted as
tokens).  It is the default model when the service has no configuration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pylon_ai._events import MessageStart, ModelEvent, Stop, TextDelta, Usage

MOCK_MODEL = "pylon-mock-1"
#: Seconds between two words.
WORD_DELAY = 0.02


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_text(body: dict[str, Any]) -> tuple[str, int]:
    """
    The last user message's text and the word count of the whole prompt, for
    a request body of either API.
    """
    last = ""
    words = len(_text_of(body.get("system")).split())
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        text = _text_of(message.get("content"))
        words += len(text.split())
        if message.get("role") == "user":
            last = text
    return last, words


def reply_words(prompt: str) -> list[str]:
    """
    The mock's reply to C{prompt}, as the pieces it streams.
    """
    said = " ".join(prompt.split()[:40]) or "nothing"
    text = f"Hello from the pylon_ai mock model. You said: {said}"
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class MockCall:
    """
    One streaming reply of the mock model.

    @ivar deferred: Fires with L{None} after the last event; cancelling it
        stops the reply.
    @ivar producer: Always L{None} (the mock writes nothing to a socket).
    """

    producer = None

    def __init__(
        self,
        clock: IReactorTime,
        body: dict[str, Any],
        on_event: Callable[[ModelEvent], object],
        delay: float = WORD_DELAY,
        on_flush: Callable[[], object] | None = None,
    ) -> None:
        self._clock = clock
        self._on_event = on_event
        self._on_flush = on_flush
        self._delay = delay
        prompt, input_words = prompt_text(body)
        self._words = reply_words(prompt)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        self._stop = Stop("end_turn", "end_turn")
        if isinstance(limit, int) and 0 < limit < len(self._words):
            self._words = self._words[:limit]
            self._stop = Stop("max_tokens", "max_tokens")
        self._input = input_words
        digest = hashlib.sha256(prompt.encode("utf-8", "replace")).hexdigest()[:24]
        self._id = "msg_mock_" + digest
        self._sent = 0
        self._timer: IDelayedCall | None = None
        self.deferred: Deferred[None] = Deferred(self._cancel)

    def start(self) -> Deferred[None]:
        """
        Begin the reply.
        """
        self._timer = self._clock.callLater(0, self._first)
        return self.deferred

    def _cancel(self, d: Deferred[None]) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _first(self) -> None:
        self._timer = None
        try:
            self._on_event(MessageStart(self._id, MOCK_MODEL))
            self._on_event(Usage(self._input, 0))
            if self._on_flush is not None:
                self._on_flush()
        except BaseException as e:
            self.deferred.errback(e)
            return
        self._next()

    def _next(self) -> None:
        self._timer = None
        try:
            if self._sent < len(self._words):
                self._on_event(TextDelta(self._words[self._sent]))
                if self._on_flush is not None:
                    self._on_flush()
                self._sent += 1
                self._timer = self._clock.callLater(self._delay, self._next)
                return
            self._on_event(Usage(self._input, self._sent))
            self._on_event(self._stop)
        except BaseException as e:
            self.deferred.errback(e)
            return
        self.deferred.callback(None)
