"""
The Chat Completions format: an upstream's stream (OpenAI and compatible
servers) decoded into model events.

Reasoning arrives as C{delta.reasoning_content} (DeepSeek, vLLM) or
C{delta.reasoning} (OpenRouter, newer vLLM); signed Anthropic thinking
relayed by a Chat Completions proxy (LiteLLM, this gateway) arrives as
C{delta.thinking_blocks}, whose signatures and redacted blocks are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pylon_ai._errors import ProviderStreamError, excerpt
from pylon_ai._json import loads
from pylon_ai.formats.events import (
    MessageStart,
    ModelEvent,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    stop_from_openai,
)


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

    def interesting(self, data: bytes) -> bool:
        """
        Whether some complete events, as bytes, may carry what the books
        need: anything before content began, then an error, a usage, a
        finish reason or the end.  A false answer is sure; a true one may
        be wrong (the events are then decoded one by one).

        @param data: Complete events as the upstream sent them.
        """
        if not self._content_seen:
            return True
        if b"[DONE]" in data or b'"error"' in data:
            return True
        # Every OpenAI chunk carries "finish_reason":null, and with
        # include_usage "usage":null as well: those say nothing.  (Other
        # spacing only costs a decode.)
        n = data.count(b'"finish_reason"')
        if n and n != data.count(b'"finish_reason":null'):
            return True
        n = data.count(b'"usage"')
        return n != 0 and n != data.count(b'"usage":null')

    def plain(self, obj: object) -> bool:
        """
        Whether one parsed chunk surely carries nothing the books need
        (L{interesting} for one event already parsed): content began, and
        it holds no error, no usage and no finish reason.
        """
        if not self._content_seen or type(obj) is not dict:
            return False
        if obj.get("usage") is not None or obj.get("error") is not None:
            return False
        choices = obj.get("choices")
        if type(choices) is not list:
            return choices is None
        return all(type(c) is dict and c.get("finish_reason") is None for c in choices)

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
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                events.append(ReasoningDelta(reasoning))
                self._content_seen = self._light
            blocks = delta.get("thinking_blocks")
            if blocks:
                events.extend(_thinking_blocks(blocks))
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
            events.append(usage_event(usage))
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


def usage_event(usage: dict[str, Any]) -> Usage:
    """
    The L{Usage} of a Chat Completions C{usage} object: the cached prompt
    tokens (C{prompt_tokens_details.cached_tokens}) are cache reads, apart
    from the other prompt tokens.
    """
    prompt = usage.get("prompt_tokens")
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if not isinstance(cached, int) or isinstance(cached, bool) or cached <= 0:
        return Usage(prompt, usage.get("completion_tokens"))
    if isinstance(prompt, int):
        prompt = max(prompt - cached, 0)
    return Usage(prompt, usage.get("completion_tokens"), cached)


def _thinking_blocks(blocks: Any) -> list[ModelEvent]:
    # The text of a signed block came as reasoning deltas already (LiteLLM
    # sends both); what only these carry is the signature and the redacted
    # blocks.
    events: list[ModelEvent] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "thinking":
            signature = block.get("signature")
            if signature and isinstance(signature, str):
                events.append(ReasoningSignature(signature))
        elif kind == "redacted_thinking":
            data = block.get("data")
            if isinstance(data, str):
                events.append(RedactedReasoning(data))
    return events


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
