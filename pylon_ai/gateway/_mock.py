"""
The built-in C{mock} provider: a deterministic model that needs no network.

It answers with a fixed sentence that echoes the last user message, streamed
word by word with a small delay, and reports usage (words counted as
tokens).  It also makes embeddings: deterministic unit vectors from a hash
of each input.  It is the default model when the service has no
configuration.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pylon_ai.formats.events import MessageStart, ModelEvent, Stop, TextDelta, Usage

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
            self._fail(e)
            return
        self._next()

    def _next(self) -> None:
        # Whoever receives the events may cancel the reply while one is
        # delivered: the deferred has fired then, and nothing more happens.
        self._timer = None
        if self.deferred.called:
            return
        try:
            if self._sent < len(self._words):
                self._on_event(TextDelta(self._words[self._sent]))
                if self._on_flush is not None:
                    self._on_flush()
                self._sent += 1
                if not self.deferred.called:
                    self._timer = self._clock.callLater(self._delay, self._next)
                return
            self._on_event(Usage(self._input, self._sent))
            self._on_event(self._stop)
        except BaseException as e:
            self._fail(e)
            return
        if not self.deferred.called:
            self.deferred.callback(None)

    def _fail(self, reason: BaseException) -> None:
        if not self.deferred.called:
            self.deferred.errback(reason)


#: The length of the mock's embeddings when the request names none.
EMBEDDING_DIMENSIONS = 16
#: The most dimensions the mock makes (OpenAI's largest model has 3072).
MAX_EMBEDDING_DIMENSIONS = 3072


class EmbeddingRequestError(ValueError):
    """
    An embeddings request the mock cannot serve.

    @ivar param: The offending field.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def _inputs(value: Any) -> list[str]:
    """
    The texts of an embeddings C{input}: a string, an array of strings, an
    array of token ids, or an array of such arrays (token ids stand for
    themselves: the mock has no vocabulary).
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(map(str, value))]
        if all(
            isinstance(v, list)
            and v
            and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
            for v in value
        ):
            return [" ".join(map(str, v)) for v in value]
    raise EmbeddingRequestError(
        "input",
        "must be a string, an array of strings, an array of token ids, "
        "or an array of arrays of token ids (none empty)",
    )


def mock_vector(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """
    The mock's embedding of C{text}: unit length, the same for the same
    text and length, different (almost surely) for different texts; each
    value is a 32-bit float, as the API sends them.
    """
    raw: list[float] = []
    counter = 0
    seed = text.encode("utf-8", "surrogatepass")
    while len(raw) < dimensions:
        digest = hashlib.sha256(counter.to_bytes(4, "big") + seed).digest()
        counter += 1
        for i in range(0, len(digest), 2):
            raw.append(int.from_bytes(digest[i : i + 2], "big") / 32767.5 - 1.0)
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    values = [v / norm for v in raw]
    # Through float32 and back, so the float and base64 forms agree.
    return list(
        struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *values))
    )


def mock_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """
    The mock's reply to an OpenAI embeddings request: one vector per input,
    as floats or, with C{encoding_format: "base64"}, as base64 of
    little-endian 32-bit floats; the usage counts words as tokens.

    @param body: The request body (C{input}, optional C{dimensions} and
        C{encoding_format}).
    @raise EmbeddingRequestError: For a field the mock cannot serve.
    """
    texts = _inputs(body.get("input"))
    dimensions = body.get("dimensions", EMBEDDING_DIMENSIONS)
    if (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS
    ):
        raise EmbeddingRequestError(
            "dimensions",
            f"must be an integer between 1 and {MAX_EMBEDDING_DIMENSIONS}",
        )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise EmbeddingRequestError("encoding_format", "must be 'float' or 'base64'")
    data = []
    for index, text in enumerate(texts):
        vector = mock_vector(text, dimensions)
        embedding: list[float] | str = vector
        if encoding == "base64":
            packed = struct.pack(f"<{dimensions}f", *vector)
            embedding = base64.b64encode(packed).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(max(len(text.split()), 1) for text in texts)
    return {
        "object": "list",
        "data": data,
        "model": MOCK_MODEL,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
