"""
The Chat Completions format: whole (non-streaming) replies to and from the canonical
reply.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from pylon_ai.formats._check import (
    count,
    fail,
    json_object,
    need,
)
from pylon_ai.formats.canonical import (
    JSON,
    Part,
    Reply,
    ReplyUsage,
    TextPart,
    ToolCall,
    ToolCallPart,
    reply_usage,
)
from pylon_ai.formats.chat._decode_request import decode_reasoning
from pylon_ai.formats.chat._encode_request import encode_assistant
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.events import Stop, Usage, stop_from_openai, stop_to_openai

# -- replies ------------------------------------------------------------------------


def decode_response(body: Any) -> Reply:
    """
    Decode an upstream's C{chat.completion} object.

    @param body: The decoded JSON of the reply.
    @return: The canonical reply (from its first choice).
    @raise UpstreamFormatError: When it is malformed, including tool call
        arguments that are not a JSON object.
    """
    if not isinstance(body, dict):
        raise fail("not an object.")
    choices = need(body, "choices", list, "choices")
    if not choices:
        raise fail("no choices.")
    message = need(choices[0], "message", dict, "choices[0].message")
    try:
        parts = decode_reasoning(message, "choices[0].message")
    except TranslationError as e:
        raise fail(f"{e.param}.") from None
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    elif content is not None and not isinstance(content, str):
        raise fail("choices[0].message.content is not text.")
    refusal = message.get("refusal")
    text = content or (refusal if isinstance(refusal, str) else "")
    if text:
        parts.append(TextPart(text))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise fail("choices[0].message.tool_calls is not a list.")
    for i, call in enumerate(calls):
        what = f"choices[0].message.tool_calls[{i}]"
        fn = need(call, "function", dict, f"{what}.function")
        arguments = fn.get("arguments") or "{}"
        parsed = json_object(arguments) if isinstance(arguments, str) else None
        if parsed is None:
            raise fail(f"{what}.function.arguments is not a JSON object.")
        parts.append(
            ToolCallPart(
                need(call, "id", str, f"{what}.id"),
                need(fn, "name", str, f"{what}.function.name"),
                parsed,
            )
        )
    finish = choices[0].get("finish_reason")
    if isinstance(finish, str):
        stop = stop_from_openai(finish)
    else:
        stop = stop_from_openai("tool_calls" if calls else "stop")
    model = body.get("model")
    reply_id = body.get("id")
    return Reply(
        id=reply_id if isinstance(reply_id, str) and reply_id else None,
        model=model if isinstance(model, str) else None,
        parts=tuple(parts),
        stop=stop,
        usage=_decode_usage(body.get("usage") or {}),
    )


def _decode_usage(usage: Any) -> ReplyUsage:
    if not isinstance(usage, dict):
        raise fail("usage is not an object.")
    details = usage.get("prompt_tokens_details") or {}
    cached = count(details, "cached_tokens") if isinstance(details, dict) else 0
    out_details = usage.get("completion_tokens_details") or {}
    reasoning = None
    if isinstance(out_details, dict) and "reasoning_tokens" in out_details:
        reasoning = count(out_details, "reasoning_tokens")
    return ReplyUsage(
        input_tokens=max(count(usage, "prompt_tokens") - cached, 0),
        output_tokens=count(usage, "completion_tokens"),
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def encode_response(
    reply: Reply, *, created: int | None = None, model: str | None = None
) -> JSON:
    """
    Encode a canonical reply as a C{chat.completion} object.

    @param created: The C{created} timestamp; now when L{None}.
    @param model: The model to report when the reply names none.
    @return: A new response body.
    """
    message = encode_assistant(reply.parts, reasoning_history=True)
    message = {
        "role": "assistant",
        "content": message["content"],
        "refusal": None,
        **{k: v for k, v in message.items() if k not in ("role", "content")},
    }
    usage = reply.usage
    prompt = usage.prompt_tokens
    body: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
    }
    if usage.cache_read_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    if usage.reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return {
        "id": reply.id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": reply.model or model or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": stop_to_openai(reply.stop),
            }
        ],
        "usage": body,
    }


def openai_completion_body(
    *,
    model: str,
    text: str = "",
    tool_calls: Sequence[ToolCall] = (),
    stop: Stop | None = None,
    usage: Usage | None = None,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """
    A whole C{chat.completion} object built from plain pieces.

    @param model: The model that answered.
    @param text: The assistant text.  With tool calls and no text the
        content is C{null}, as OpenAI sends it.
    @param tool_calls: The tool calls.
    @param stop: The stop reason; L{None} means C{tool_calls} when there are
        tool calls, else C{stop}.
    @param usage: Token counts (missing ones are 0).
    @param completion_id: The id; a generated C{chatcmpl-...} id if L{None}.
    @param created: The C{created} timestamp; the current time if L{None}.
    @return: The body, ready for C{json.dumps}.
    @raise ValueError: A tool call's arguments are not a JSON object.
    """
    parts: list[Part] = [TextPart(text)] if text else []
    parts.extend(call.part() for call in tool_calls)
    if stop is None:
        stop = Stop("tool_use" if tool_calls else "end_turn")
    reply = Reply(
        id=completion_id,
        model=model,
        parts=tuple(parts),
        stop=stop,
        usage=reply_usage(usage or Usage()),
    )
    return encode_response(reply, created=created)
