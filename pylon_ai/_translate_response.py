"""
Whole (non-streaming) responses: OpenAI Chat Completions <-> Anthropic
Messages.

The input is an upstream's reply, so a shape it should not have is an
L{UpstreamFormatError} (a 502 for the gateway), never a C{KeyError}.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pylon_ai.formats.errors import UpstreamFormatError
from pylon_ai.formats.events import (
    stop_from_anthropic,
    stop_from_openai,
    stop_to_openai,
)

JSON = dict[str, Any]


def _need(obj: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """
    C{obj[key]}, which must be present and of C{kind}.

    @raise UpstreamFormatError: Otherwise.
    """
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _fail(f"bad or missing {what}.")
    return value


def _count(usage: JSON, key: str) -> int:
    """
    A token count of a usage object; absent or null counts 0.

    @raise UpstreamFormatError: When it is not a non-negative integer.
    """
    value = usage.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(f"bad usage.{key}.")
    return value


def _fail(message: str) -> UpstreamFormatError:
    return UpstreamFormatError(f"Malformed upstream response: {message}")


def openai_response_to_anthropic(resp: JSON, *, model: str | None = None) -> JSON:
    """
    Translate an OpenAI C{chat.completion} object to an Anthropic message.

    The first choice's text becomes a C{text} block (its refusal, when it has
    no text), its tool calls C{tool_use} blocks; C{finish_reason} maps per
    L{pylon_ai._events} and usage maps C{prompt_tokens} to C{input_tokens}
    (less cached tokens, which become C{cache_read_input_tokens}) and
    C{completion_tokens} to C{output_tokens}.

    @param resp: The decoded upstream response.
    @param model: The model to report when the upstream names none; the
        upstream's own C{model} wins.
    @return: A new Anthropic Messages response body.
    @raise UpstreamFormatError: When C{resp} is malformed, including tool
        call arguments that are not a JSON object.
    """
    if not isinstance(resp, dict):
        raise _fail("not an object.")
    choices = _need(resp, "choices", list, "choices")
    if not choices:
        raise _fail("no choices.")
    message = _need(choices[0], "message", dict, "choices[0].message")
    blocks: list[JSON] = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    elif content is not None and not isinstance(content, str):
        raise _fail("choices[0].message.content is not text.")
    refusal = message.get("refusal")
    text = content or (refusal if isinstance(refusal, str) else "")
    if text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _fail("choices[0].message.tool_calls is not a list.")
    for i, call in enumerate(calls):
        what = f"choices[0].message.tool_calls[{i}]"
        fn = _need(call, "function", dict, f"{what}.function")
        arguments = fn.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _fail(f"{what}.function.arguments is not a JSON object.")
        blocks.append(
            {
                "type": "tool_use",
                "id": _need(call, "id", str, f"{what}.id"),
                "name": _need(fn, "name", str, f"{what}.function.name"),
                "input": parsed,
            }
        )
    finish = choices[0].get("finish_reason")
    if isinstance(finish, str):
        stop_reason = stop_from_openai(finish).reason
    else:
        stop_reason = "tool_use" if calls else "end_turn"
    usage_in = resp.get("usage") or {}
    if not isinstance(usage_in, dict):
        raise _fail("usage is not an object.")
    details = usage_in.get("prompt_tokens_details") or {}
    cached = _count(details, "cached_tokens") if isinstance(details, dict) else 0
    usage: JSON = {
        "input_tokens": max(_count(usage_in, "prompt_tokens") - cached, 0),
        "output_tokens": _count(usage_in, "completion_tokens"),
    }
    if cached:
        usage["cache_read_input_tokens"] = cached
    upstream_model = resp.get("model")
    resp_id = resp.get("id")
    return {
        "id": resp_id if isinstance(resp_id, str) and resp_id else "msg_unknown",
        "type": "message",
        "role": "assistant",
        "model": upstream_model if isinstance(upstream_model, str) else (model or ""),
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_response_to_openai(resp: JSON, *, created: int | None = None) -> JSON:
    """
    Translate an Anthropic message to an OpenAI C{chat.completion} object.

    Text blocks join into the message content (Anthropic splits one text
    into several blocks around citations), C{tool_use} blocks become
    C{tool_calls} with compact JSON arguments, thinking blocks are left out,
    C{stop_reason} maps per L{pylon_ai._events}, and C{prompt_tokens} counts
    C{input_tokens} plus the cache reads and writes.

    @param resp: The decoded upstream response.
    @param created: The C{created} timestamp; now when L{None}.
    @return: A new OpenAI Chat Completions response body.
    @raise UpstreamFormatError: When C{resp} is malformed.
    """
    if not isinstance(resp, dict):
        raise _fail("not an object.")
    texts: list[str] = []
    calls: list[JSON] = []
    for i, block in enumerate(_need(resp, "content", list, "content")):
        kind = _need(block, "type", str, f"content[{i}].type")
        if kind == "text":
            texts.append(_need(block, "text", str, f"content[{i}].text"))
        elif kind == "tool_use":
            tool_input = _need(block, "input", dict, f"content[{i}].input")
            arguments = json.dumps(
                tool_input, separators=(",", ":"), ensure_ascii=False
            )
            calls.append(
                {
                    "id": _need(block, "id", str, f"content[{i}].id"),
                    "type": "function",
                    "function": {
                        "name": _need(block, "name", str, f"content[{i}].name"),
                        "arguments": arguments,
                    },
                }
            )
    stop_reason = resp.get("stop_reason")
    if stop_reason is not None and not isinstance(stop_reason, str):
        raise _fail("stop_reason is not a string.")
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    usage_in = _need(resp, "usage", dict, "usage")
    cache_read = _count(usage_in, "cache_read_input_tokens")
    prompt = (
        _count(usage_in, "input_tokens")
        + _count(usage_in, "cache_creation_input_tokens")
        + cache_read
    )
    completion = _count(usage_in, "output_tokens")
    usage: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_read:
        usage["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return {
        "id": _need(resp, "id", str, "id"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": _need(resp, "model", str, "model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": stop_to_openai(stop_from_anthropic(stop_reason)),
            }
        ],
        "usage": usage,
    }
