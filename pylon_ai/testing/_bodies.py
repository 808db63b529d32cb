"""
The fake provider's whole JSON bodies, made from a L{FakeReply}: completions
in the Messages, Chat Completions and Responses formats, errors, token counts
and embeddings.  Pure: values in, dicts or bytes out.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Literal

from pylon_ai._errors import ANTHROPIC_ERROR_STATUS
from pylon_ai._json import dumps
from pylon_ai.formats import responses
from pylon_ai.formats.canonical import (
    Part,
    ReasoningPart,
    Reply,
    ReplyUsage,
    TextPart,
    ToolCall,
    ToolCallPart,
)
from pylon_ai.formats.chat import openai_completion_body, openai_error_body
from pylon_ai.formats.events import Stop, Usage
from pylon_ai.formats.messages import anthropic_error_body, anthropic_message_body
from pylon_ai.testing._reply import FakeReply

#: The error type sent for an HTTP status when the reply names none.
_STATUS_ERROR_TYPE: dict[int, str] = {
    status: error_type for error_type, status in ANTHROPIC_ERROR_STATUS.items()
}
_STATUS_ERROR_TYPE[503] = "overloaded_error"

Format = Literal["anthropic", "openai", "responses"]
Kind = Literal["completion", "count_tokens", "embeddings"]


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and isinstance(value[0], int):
        return [" ".join(map(str, value))]
    if isinstance(value, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    return []


def error_body(format: Format, status: int, error_type: str, message: str) -> bytes:
    """
    An error body in C{format}'s shape.
    """
    if format == "anthropic":
        return dumps(anthropic_error_body(error_type, message))
    return dumps(openai_error_body(message, error_type, str(status)))


def reply_error_body(reply: FakeReply, format: Format) -> bytes:
    """
    The error body of a reply whose status is not 200.
    """
    error_type = reply.error_type or _STATUS_ERROR_TYPE.get(reply.status, "api_error")
    return error_body(format, reply.status, error_type, reply.message)


def reply_usage(reply: FakeReply) -> Usage | None:
    """
    The usage a reply reports, if any.
    """
    if reply.usage is None:
        return None
    return Usage(*reply.usage)


def reply_stop(reply: FakeReply) -> Stop:
    """
    The stop a reply ends with.
    """
    reason = reply.stop_reason
    if reason is None:
        reason = "tool_use" if reply.tool_calls else "end_turn"
    return Stop(reason, reason)


def whole_body(
    reply: FakeReply, format: Format, model: str, created: int, asked: Any
) -> dict[str, Any]:
    """
    The whole (non-streamed) completion body of a reply.

    @param created: The time the body gives, in seconds.
    @param asked: The request's parsed JSON body.
    """
    calls = [
        ToolCall(call.id, call.name, "".join(call.arguments_fragments))
        for call in reply.tool_calls
    ]
    text = "".join(reply.chunks)
    if format == "responses":
        body = _response_body(reply, model, created, asked, text)
    elif format == "anthropic":
        body = anthropic_message_body(
            model=model,
            text=text,
            tool_calls=calls,
            stop=reply_stop(reply),
            usage=reply_usage(reply),
        )
    else:
        body = openai_completion_body(
            model=model,
            text=text,
            tool_calls=calls,
            stop=reply_stop(reply),
            usage=reply_usage(reply),
            created=created,
        )
    if reply.thinking and format != "responses":
        _add_thinking(reply, format, body)
    return body


def _response_body(
    reply: FakeReply, model: str, created: int, asked: Any, text: str
) -> dict[str, Any]:
    # A Responses object: reasoning (a signed block packed as the
    # gateway packs Anthropic's), the text, the calls.
    parts: list[Part] = []
    if reply.thinking:
        thinking = "".join(reply.thinking)
        parts.append(ReasoningPart(thinking, signature=reply.signature))
    if text:
        parts.append(TextPart(text))
    for call in reply.tool_calls:
        arguments = json.loads("".join(call.arguments_fragments) or "{}")
        parts.append(ToolCallPart(call.id, call.name, arguments))
    usage = ReplyUsage(*reply.usage) if reply.usage is not None else ReplyUsage()
    canonical = Reply(None, model, tuple(parts), reply_stop(reply), usage)
    return responses.encode_response(
        canonical,
        echo=responses.response_echo(asked),
        created_at=created,
    )


def _add_thinking(reply: FakeReply, format: Format, body: dict[str, Any]) -> None:
    # The whole-body places of reasoning: Anthropic's thinking block
    # before the text, the reasoning_content field vLLM and DeepSeek add
    # to the Chat Completions message.
    thinking = "".join(reply.thinking)
    if format == "anthropic":
        block = {
            "type": "thinking",
            "thinking": thinking,
            "signature": reply.signature or "",
        }
        body["content"].insert(0, block)
    else:
        body["choices"][0]["message"]["reasoning_content"] = thinking


def unary_body(reply: FakeReply, kind: Kind, model: str, asked: Any) -> dict[str, Any]:
    """
    The body of a token count or embeddings request.

    @param asked: The request's parsed JSON body.
    """
    if kind == "count_tokens":
        count = reply.input_tokens
        if count is None:
            count = reply.usage[0] if reply.usage is not None else 10
        return {"input_tokens": count}
    return _embeddings(reply, model, asked)


def _embeddings(reply: FakeReply, model: str, asked: Any) -> dict[str, Any]:
    texts = _embedding_inputs(asked.get("input"))
    vectors = list(reply.embeddings) or [
        (float(len(text)), float(index), 0.5) for index, text in enumerate(texts)
    ]
    base64_wanted = asked.get("encoding_format") == "base64"
    data = []
    for index, vector in enumerate(vectors):
        embedding: Any = list(vector)
        if base64_wanted:
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding = base64.b64encode(packed).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = (
        reply.usage[0]
        if reply.usage is not None
        else sum(len(text.split()) for text in texts)
    )
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
