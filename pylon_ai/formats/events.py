"""
The typed event model shared by every wire format.

Provider streams (Anthropic Messages, OpenAI Chat Completions and compatible
servers) are decoded into these values, and the encoders turn them back into
any wire format: text, tool call fragments, reasoning (its text, the
signature that closes a block of it, redacted blocks), usage, the stop and
in-stream errors.  They are plain immutable values so that decoding,
translation and encoding stay pure functions that are tested without sockets.
"""

from __future__ import annotations

from typing import Literal

from attrs import frozen

#: Stop reasons, in Anthropic's vocabulary (the richer of the two).  The
#: OpenAI mapping is C{stop}<->C{end_turn}, C{length}<->C{max_tokens},
#: C{tool_calls}<->C{tool_use}, C{content_filter}<->C{refusal}.
StopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"
]


@frozen
class MessageStart:
    """
    The upstream accepted the request and began its reply.

    @ivar id: The provider's message or completion id, if it gave one.
    @ivar model: The upstream model that answers, if the stream names it.
    """

    id: str | None = None
    model: str | None = None


@frozen
class TextDelta:
    """
    A piece of assistant text.

    @ivar text: The text; never empty when produced by a decoder.
    """

    text: str


@frozen
class ToolCallDelta:
    """
    A fragment of a tool call.

    The first fragment of a call carries its C{id} and C{name}; later ones
    carry only more C{arguments} (a piece of a JSON document).  Fragments of
    several calls may interleave; C{index} tells them apart.

    @ivar index: The position of the call among this reply's tool calls,
        counted from 0.
    @ivar id: The call id, on the first fragment only.
    @ivar name: The tool name, on the first fragment only.
    @ivar arguments: A piece of the JSON arguments, possibly empty.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@frozen
class Usage:
    """
    Token counts as reported so far.

    Anthropic reports cumulative counts in several events; a later C{Usage}
    replaces the fields it carries (L{merge_usage}).  The prompt is counted
    as Anthropic counts it: C{input_tokens} are the tokens neither read from
    nor written to a cache, the cache reads and writes are apart (an OpenAI
    C{prompt_tokens} is their sum).

    @ivar input_tokens: Prompt tokens (without cache reads and writes), or
        L{None} if not (yet) reported.
    @ivar output_tokens: Completion tokens, or L{None} if not (yet) reported.
    @ivar cache_read_tokens: Prompt tokens read from a cache, if reported.
    @ivar cache_creation_tokens: Prompt tokens written to a cache, if
        reported.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int | None:
        """
        Every prompt token, cached or not (OpenAI's C{prompt_tokens}), or
        L{None} if no input count was reported.
        """
        if self.input_tokens is None:
            return None
        return (
            self.input_tokens
            + (self.cache_read_tokens or 0)
            + (self.cache_creation_tokens or 0)
        )


@frozen
class Stop:
    """
    The reply ended normally.

    @ivar reason: The normalised stop reason.
    @ivar raw: The provider's own value (C{"stop"}, C{"end_turn"}, ...).
    """

    reason: StopReason
    raw: str | None = None


@frozen
class StreamError:
    """
    The provider reported an error inside a stream that began with 200.

    @ivar status: The equivalent HTTP status when known, else L{None}.
    @ivar error_type: The provider's error type (C{"overloaded_error"}...).
    @ivar message: Readable text.
    @ivar body: The raw event data, at most 4 KiB.
    """

    status: int | None
    error_type: str | None
    message: str
    body: str | None = None


@frozen
class ReasoningDelta:
    """
    A piece of the model's visible reasoning (Anthropic C{thinking_delta},
    Chat Completions C{reasoning_content} or C{reasoning} deltas).

    @ivar text: The text; never empty when produced by a decoder.
    """

    text: str


@frozen
class ReasoningSignature:
    """
    The signature that closes one block of reasoning (Anthropic
    C{signature_delta}).  The reasoning deltas since the previous signature
    (or since the start) are the text it signs; a client must send both back
    unchanged for multi-turn tool use with thinking.

    @ivar signature: The opaque signature.
    """

    signature: str


@frozen
class RedactedReasoning:
    """
    A whole block of reasoning the provider encrypted (Anthropic
    C{redacted_thinking}); it is opaque and is sent back as it came.

    @ivar data: The opaque, encrypted content.
    """

    data: str


ModelEvent = (
    MessageStart
    | TextDelta
    | ToolCallDelta
    | Usage
    | Stop
    | StreamError
    | ReasoningDelta
    | ReasoningSignature
    | RedactedReasoning
)


def merge_usage(old: Usage | None, new: Usage) -> Usage:
    """
    Fold a newer usage report into an older one.

    @param old: What was known before, or L{None}.
    @param new: The newer report; the fields it carries win.
    @return: The combined usage.
    """
    if old is None:
        return new
    return Usage(
        old.input_tokens if new.input_tokens is None else new.input_tokens,
        old.output_tokens if new.output_tokens is None else new.output_tokens,
        old.cache_read_tokens
        if new.cache_read_tokens is None
        else new.cache_read_tokens,
        old.cache_creation_tokens
        if new.cache_creation_tokens is None
        else new.cache_creation_tokens,
    )


_OPENAI_TO_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_STOP_TO_OPENAI: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ANTHROPIC_STOPS: frozenset[str] = frozenset(
    ("end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn")
)


def stop_from_openai(finish_reason: str) -> Stop:
    """
    Map an OpenAI C{finish_reason} to a L{Stop}.

    @param finish_reason: The provider's value; unknown values count as
        C{end_turn}.
    """
    return Stop(_OPENAI_TO_STOP.get(finish_reason, "end_turn"), finish_reason)


def stop_from_anthropic(stop_reason: str | None) -> Stop:
    """
    Map an Anthropic C{stop_reason} to a L{Stop}.

    @param stop_reason: The provider's value; unknown values (or none) count
        as C{end_turn}.
    """
    if stop_reason in _ANTHROPIC_STOPS:
        return Stop(stop_reason, stop_reason)  # type: ignore[arg-type]
    return Stop("end_turn", stop_reason)


def stop_to_openai(stop: Stop) -> str:
    """
    The OpenAI C{finish_reason} for a L{Stop}.
    """
    return _STOP_TO_OPENAI[stop.reason]
