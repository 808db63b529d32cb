"""
Whole Responses objects to and from the canonical reply.  The pieces the
stream encoder shares (output items, usage, the C{response} object itself)
are in L{pylon_ai.formats.responses._objects}.

A reply's parts become output items in order: reasoning items (a summary
text each; signed or redacted Anthropic thinking packed into
C{encrypted_content}, see L{pylon_ai.formats.responses._thinking}), one
C{message} item per run of text (one C{output_text} part), and one
C{function_call} item per call (with the client's namespace and name, by
L{ToolNames}).  The stop maps to the status: C{max_tokens} is
C{incomplete} (C{max_output_tokens}), C{refusal} is C{incomplete}
(C{content_filter}), anything else C{completed}.

Usage counts the whole prompt in C{input_tokens}, the cache reads in
C{input_tokens_details.cached_tokens} (and the writes in
C{cache_write_tokens}), reasoning in C{output_tokens_details}.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from pylon_ai.formats._check import JOIN, count, fail, json_object, need
from pylon_ai.formats.canonical import (
    JSON,
    Part,
    ReasoningPart,
    RedactedReasoningPart,
    Reply,
    ReplyUsage,
    TextPart,
    ToolCallPart,
)
from pylon_ai.formats.events import Stop
from pylon_ai.formats.responses._objects import (
    call_item,
    failure_code,
    message_item,
    new_id,
    reasoning_item,
    response_echo,
    response_object,
    status_of,
    usage_object,
)
from pylon_ai.formats.responses._thinking import pack_thinking, unpack_thinking
from pylon_ai.formats.responses._tools import ToolNames

# failure_code, new_id, response_object, response_echo and usage_object are
# re-exported for the modules that import them from here.
__all__ = [
    "decode_response",
    "encode_response",
    "failure_code",
    "new_id",
    "response_echo",
    "response_object",
    "usage_object",
]

_NO_NAMES = ToolNames()


def _reasoning_summary(part: ReasoningPart) -> list[str]:
    if part.summary:
        return list(part.summary)
    return [part.text] if part.text else []


def output_items(parts: Iterable[Part], names: ToolNames = _NO_NAMES) -> list[JSON]:
    """
    The output items of a reply's parts.
    """
    out: list[JSON] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            out.append(message_item(new_id("msg"), "".join(texts)))
            texts.clear()

    for part in parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
            continue
        flush()
        if isinstance(part, ReasoningPart):
            encrypted = pack_thinking(part) or part.encrypted_content
            out.append(
                reasoning_item(
                    part.id or new_id("rs"), _reasoning_summary(part), encrypted
                )
            )
        elif isinstance(part, RedactedReasoningPart):
            out.append(reasoning_item(new_id("rs"), (), pack_thinking(part)))
        elif isinstance(part, ToolCallPart):
            arguments = json.dumps(
                part.arguments, separators=(",", ":"), ensure_ascii=False
            )
            item = call_item(new_id("fc"), part.id, part.name, arguments, names)
            if part.namespace is not None and "namespace" not in item:
                item["namespace"] = part.namespace
            out.append(item)
    flush()
    return out


def encode_response(
    reply: Reply,
    *,
    echo: JSON | None = None,
    names: ToolNames = _NO_NAMES,
    created_at: int | None = None,
    model: str | None = None,
) -> JSON:
    """
    Encode a canonical reply as a C{response} object.

    @param echo: The request fields to repeat (L{response_echo} of the
        client's body); the API's defaults when L{None}.
    @param names: The client's names of flattened namespace tools.
    @param created_at: The C{created_at} timestamp; now when L{None}.
    @param model: The model to report when the reply names none.
    @return: A new response body.
    """
    status, reason = status_of(reply.stop)
    usage = reply.usage
    return response_object(
        response_id=reply.id
        if reply.id and reply.id.startswith("resp_")
        else new_id("resp"),
        created_at=int(time.time()) if created_at is None else created_at,
        model=reply.model or model or "",
        status=status,
        output=output_items(reply.parts, names),
        usage=usage_object(
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_creation_tokens,
            usage.reasoning_tokens or 0,
        ),
        echo=echo if echo is not None else response_echo({}),
        incomplete_reason=reason,
    )


# -- decoding an upstream's response ------------------------------------------------


def decode_response(body: Any) -> Reply:
    """
    Decode an upstream's C{response} object.

    Output items the canonical model has no part for (hosted tool calls)
    are left out.

    @param body: The decoded JSON of the reply.
    @return: The canonical reply.
    @raise UpstreamFormatError: When it is malformed or reports a failure.
    """
    if not isinstance(body, dict):
        raise fail("not an object.")
    status = body.get("status")
    if status == "failed":
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        raise fail(f"the response failed: {message or 'no reason given'}")
    parts: list[Part] = []
    for i, item in enumerate(need(body, "output", list, "output")):
        parts.extend(_decode_item(item, f"output[{i}]"))
    stop = Stop("end_turn", status if isinstance(status, str) else None)
    if status == "incomplete":
        details = body.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if reason == "content_filter":
            stop = Stop("refusal", reason)
        else:
            stop = Stop("max_tokens", reason if isinstance(reason, str) else None)
    elif any(isinstance(p, ToolCallPart) for p in parts):
        stop = Stop("tool_use", status if isinstance(status, str) else None)
    model = body.get("model")
    reply_id = body.get("id")
    return Reply(
        id=reply_id if isinstance(reply_id, str) and reply_id else None,
        model=model if isinstance(model, str) else None,
        parts=tuple(parts),
        stop=stop,
        usage=decode_usage(body.get("usage")),
    )


def decode_usage(usage: Any) -> ReplyUsage:
    """
    The canonical usage of a Responses C{usage} object (or of none).

    @raise UpstreamFormatError: When it is malformed.
    """
    if usage is None:
        return ReplyUsage()
    if not isinstance(usage, dict):
        raise fail("usage is not an object.")
    details = usage.get("input_tokens_details") or {}
    out_details = usage.get("output_tokens_details") or {}
    if not isinstance(details, dict) or not isinstance(out_details, dict):
        raise fail("usage details are not objects.")
    cached = count(details, "cached_tokens")
    written = count(details, "cache_write_tokens")
    reasoning = None
    if "reasoning_tokens" in out_details:
        reasoning = count(out_details, "reasoning_tokens")
    return ReplyUsage(
        input_tokens=max(count(usage, "input_tokens") - cached - written, 0),
        output_tokens=count(usage, "output_tokens"),
        cache_read_tokens=cached,
        cache_creation_tokens=written,
        reasoning_tokens=reasoning,
    )


def _texts(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fail(f"{what} is not a list.")
    return tuple(need(s, "text", str, f"{what}[{i}].text") for i, s in enumerate(value))


def decode_reasoning(item: JSON, what: str) -> ReasoningPart | RedactedReasoningPart:
    """
    The part of a C{reasoning} output item (packed thinking unpacked).

    @raise UpstreamFormatError: When it is malformed.
    """
    encrypted = item.get("encrypted_content")
    if encrypted is not None and not isinstance(encrypted, str):
        raise fail(f"{what}.encrypted_content is not a string.")
    if encrypted is not None:
        packed = unpack_thinking(encrypted)
        if packed is not None:
            return packed
    summary = _texts(item.get("summary"), f"{what}.summary")
    content = _texts(item.get("content"), f"{what}.content")
    item_id = item.get("id")
    return ReasoningPart(
        JOIN.join(content or summary),
        encrypted_content=encrypted,
        summary=summary,
        id=item_id if isinstance(item_id, str) else None,
    )


def _decode_item(item: Any, what: str) -> list[Part]:
    kind = need(item, "type", str, f"{what}.type")
    if kind == "message":
        parts: list[Part] = []
        for j, content in enumerate(need(item, "content", list, f"{what}.content")):
            where = f"{what}.content[{j}]"
            ctype = need(content, "type", str, f"{where}.type")
            if ctype == "output_text":
                parts.append(TextPart(need(content, "text", str, f"{where}.text")))
            elif ctype == "refusal":
                parts.append(
                    TextPart(need(content, "refusal", str, f"{where}.refusal"))
                )
        return parts
    if kind == "reasoning":
        return [decode_reasoning(item, what)]
    if kind == "function_call":
        arguments = item.get("arguments") or "{}"
        parsed = json_object(arguments) if isinstance(arguments, str) else None
        if parsed is None:
            raise fail(f"{what}.arguments is not a JSON object.")
        namespace = item.get("namespace")
        return [
            ToolCallPart(
                need(item, "call_id", str, f"{what}.call_id"),
                need(item, "name", str, f"{what}.name"),
                parsed,
                namespace=namespace if isinstance(namespace, str) else None,
            )
        ]
    return []
