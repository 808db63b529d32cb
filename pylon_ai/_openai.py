"""
The OpenAI Chat Completions wire format (OpenAI and compatible servers):
request bodies and stream decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pylon_ai._errors import ProviderStreamError, excerpt
from pylon_ai._events import (
    MessageStart,
    ModelEvent,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    stop_from_openai,
)
from pylon_ai._json import loads
from pylon_ai._messages import AiMessage

CHAT_PATH = "/v1/chat/completions"


def request_headers(api_key: str) -> dict[str, str]:
    """
    The headers of a Chat Completions request; no C{Authorization} when the
    key is empty (local servers such as Ollama need none).
    """
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def request_body(
    messages: Sequence[AiMessage],
    model: str | None,
    max_tokens: int,
    *,
    max_tokens_field: str = "max_tokens",
    stream: bool = True,
    include_usage: bool = False,
) -> dict[str, Any]:
    """
    A Chat Completions request body for a plain-text conversation.

    @param model: The model, or L{None} to send none.
    @param max_tokens_field: C{"max_completion_tokens"} for OpenAI itself,
        C{"max_tokens"} for compatible servers.
    """
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
    body[max_tokens_field] = max_tokens
    body["stream"] = stream
    if stream and include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def _status_from_code(code: object) -> int | None:
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    if isinstance(code, str) and code.isdigit() and 100 <= int(code) <= 599:
        return int(code)
    return None


def error_event(obj: dict[str, Any], raw: str) -> StreamError:
    """
    The L{StreamError} for an OpenAI-style error object (C{{"error": ...}}),
    as OpenAI, vLLM and others send it inside a 200 stream.
    """
    err = obj.get("error")
    if isinstance(err, str):
        return StreamError(None, None, err, excerpt(raw))
    if not isinstance(err, dict):
        err = {}
    message = err.get("message")
    error_type = err.get("type")
    return StreamError(
        _status_from_code(err.get("code")) or _status_from_code(obj.get("code")),
        error_type if isinstance(error_type, str) else None,
        message if isinstance(message, str) else "provider reported an error",
        excerpt(raw),
    )


class OpenAIStreamDecoder:
    """
    Turns the data lines of a Chat Completions stream into L{ModelEvent}s.

    The L{Stop} is emitted at C{[DONE]} (or at the end of a stream that gave
    a C{finish_reason} but no C{[DONE]}), so that a usage chunk that follows
    the finish chunk is known before it.

    A I{light} decoder serves pass-through, where the events themselves are
    forwarded as they are and only the bookkeeping is needed: once the first
    content arrived, a chunk that carries no error, no usage and no finish
    reason is only checked to be JSON, and yields nothing.
    """

    def __init__(self, light: bool = False) -> None:
        """
        @param light: Skip parsing plain content chunks once content began.
        """
        self._started = False
        self._finish_reason: str | None = None
        self._light = light
        self._content_seen = False
        self.finished = False

    def feed(self, event_type: str, data: str) -> Iterable[ModelEvent]:
        """
        Decode one SSE event.

        @raise ProviderStreamError: If the data is neither C{[DONE]} nor a
            JSON object of the expected shape.
        """
        if data == "[DONE]":
            if self.finished:
                return ()
            self.finished = True
            return (stop_from_openai(self._finish_reason or "stop"),)
        try:
            obj = loads(data)
        except ValueError:
            raise ProviderStreamError(
                "malformed OpenAI stream: data is not JSON", body=excerpt(data)
            ) from None
        if self._content_seen and _plain(data):
            # Valid JSON (a garbled chunk must not pass through), but nothing
            # the books need: not walked.
            return ()
        if not isinstance(obj, dict):
            raise ProviderStreamError(
                "malformed OpenAI stream: data is not an object", body=excerpt(data)
            )
        try:
            return self._decode(obj, data)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError):
            raise ProviderStreamError(
                "malformed OpenAI stream: unexpected chunk", body=excerpt(data)
            ) from None

    def _decode(self, obj: dict[str, Any], raw: str) -> Iterable[ModelEvent]:
        if obj.get("error") is not None:
            return (error_event(obj, raw),)
        events: list[ModelEvent] = []
        if not self._started:
            self._started = True
            events.append(MessageStart(obj.get("id"), obj.get("model")))
        for choice in obj.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is not supported; keep the first choice
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                events.append(TextDelta(content))
                self._content_seen = self._light
            for call in delta.get("tool_calls") or ():
                self._content_seen = self._light
                fn = call.get("function") or {}
                events.append(
                    ToolCallDelta(
                        call["index"],
                        call.get("id"),
                        fn.get("name"),
                        fn.get("arguments") or "",
                    )
                )
            reason = choice.get("finish_reason")
            if reason:
                self._finish_reason = reason
        usage = obj.get("usage")
        if isinstance(usage, dict):
            events.append(
                Usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            )
        return events

    def finish(self) -> Iterable[ModelEvent]:
        """
        The stream ended.

        @return: The L{Stop} if a C{finish_reason} came without C{[DONE]}.
        @raise ProviderStreamError: If it ended with neither.
        """
        if self.finished:
            return ()
        if self._finish_reason is not None:
            self.finished = True
            return (stop_from_openai(self._finish_reason),)
        raise ProviderStreamError(
            "stream ended before it finished (no finish_reason and no [DONE])"
        )


def _null_or_absent(data: str, key: str) -> bool:
    if key not in data:
        return True
    return key + ":null" in data or key + ": null" in data


def _plain(data: str) -> bool:
    """
    Whether a chunk surely carries nothing but content: no error, no usage,
    no finish reason.  (A quote inside a JSON string is escaped, so these
    keys cannot hide in text.)
    """
    return (
        '"error"' not in data
        and _null_or_absent(data, '"usage"')
        and _null_or_absent(data, '"finish_reason"')
    )
