"""
The Messages format: whole (non-streaming) replies to and from the canonical
reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pylon_ai.formats._check import (
    count,
    fail,
    need,
)
from pylon_ai.formats.canonical import (
    JSON,
    Part,
    ReasoningPart,
    RedactedReasoningPart,
    Reply,
    ReplyUsage,
    TextPart,
    ToolCall,
    ToolCallPart,
    reply_usage,
)
from pylon_ai.formats.events import Stop, Usage, stop_from_anthropic
from pylon_ai.formats.messages._encode_request import encode_part
from pylon_ai.formats.messages._encode_stream import message_id as new_message_id

# -- replies ------------------------------------------------------------------------


def decode_response(body: Any) -> Reply:
    """
    Decode an upstream's Messages reply.

    Block types the canonical model has no part for (server tool blocks)
    are left out.

    @param body: The decoded JSON of the reply.
    @return: The canonical reply.
    @raise UpstreamFormatError: When it is malformed.
    """
    if not isinstance(body, dict):
        raise fail("not an object.")
    parts: list[Part] = []
    for i, block in enumerate(need(body, "content", list, "content")):
        what = f"content[{i}]"
        kind = need(block, "type", str, f"{what}.type")
        if kind == "text":
            parts.append(TextPart(need(block, "text", str, f"{what}.text")))
        elif kind == "tool_use":
            parts.append(
                ToolCallPart(
                    need(block, "id", str, f"{what}.id"),
                    need(block, "name", str, f"{what}.name"),
                    need(block, "input", dict, f"{what}.input"),
                )
            )
        elif kind == "thinking":
            parts.append(
                ReasoningPart(
                    need(block, "thinking", str, f"{what}.thinking"),
                    signature=need(block, "signature", str, f"{what}.signature"),
                )
            )
        elif kind == "redacted_thinking":
            parts.append(
                RedactedReasoningPart(need(block, "data", str, f"{what}.data"))
            )
    stop_reason = body.get("stop_reason")
    if stop_reason is not None and not isinstance(stop_reason, str):
        raise fail("stop_reason is not a string.")
    stop_sequence = body.get("stop_sequence")
    usage = need(body, "usage", dict, "usage")
    return Reply(
        id=need(body, "id", str, "id"),
        model=need(body, "model", str, "model"),
        parts=tuple(parts),
        stop=stop_from_anthropic(stop_reason),
        usage=ReplyUsage(
            input_tokens=count(usage, "input_tokens"),
            output_tokens=count(usage, "output_tokens"),
            cache_read_tokens=count(usage, "cache_read_input_tokens"),
            cache_creation_tokens=count(usage, "cache_creation_input_tokens"),
        ),
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
    )


def encode_response(reply: Reply, *, model: str | None = None) -> JSON:
    """
    Encode a canonical reply as a Messages reply.

    Unsigned reasoning (from another provider) becomes a C{thinking} block
    with an empty signature, which the SDKs accept and
    L{encode_request} leaves out when it comes back.

    @param model: The model to report when the reply names none.
    @return: A new response body.
    """
    blocks: list[JSON] = []
    for part in reply.parts:
        if isinstance(part, ReasoningPart):
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": part.text,
                    "signature": part.signature or "",
                }
            )
        elif isinstance(part, TextPart | ToolCallPart | RedactedReasoningPart):
            block = encode_part(part, True)
            assert block is not None
            blocks.append(block)
    usage: JSON = {
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
    }
    if reply.usage.cache_read_tokens:
        usage["cache_read_input_tokens"] = reply.usage.cache_read_tokens
    if reply.usage.cache_creation_tokens:
        usage["cache_creation_input_tokens"] = reply.usage.cache_creation_tokens
    return {
        "id": reply.id or "msg_unknown",
        "type": "message",
        "role": "assistant",
        "model": reply.model or model or "",
        "content": blocks,
        "stop_reason": reply.stop.reason,
        "stop_sequence": reply.stop_sequence,
        "usage": usage,
    }


def anthropic_message_body(
    *,
    model: str,
    text: str = "",
    tool_calls: Sequence[ToolCall] = (),
    stop: Stop | None = None,
    usage: Usage | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """
    A whole Messages reply built from plain pieces.

    @param model: The model that answered.
    @param text: The assistant text; no text block when empty.
    @param tool_calls: The tool calls, as C{tool_use} blocks after the text.
    @param stop: The stop reason; L{None} means C{tool_use} when there are
        tool calls, else C{end_turn}.
    @param usage: Token counts (missing ones are 0).
    @param message_id: The id; a generated C{msg_...} id if L{None}.
    @return: The body, ready for C{json.dumps}.
    @raise ValueError: A tool call's arguments are not a JSON object.
    """
    parts: list[Part] = [TextPart(text)] if text else []
    parts.extend(call.part() for call in tool_calls)
    if stop is None:
        stop = Stop("tool_use" if tool_calls else "end_turn")
    reply = Reply(
        id=message_id or new_message_id(),
        model=model,
        parts=tuple(parts),
        stop=stop,
        usage=reply_usage(usage or Usage()),
    )
    return encode_response(reply)
