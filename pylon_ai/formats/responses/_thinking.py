"""
Anthropic's signed thinking carried through a Responses reasoning item.

A Responses client keeps a reasoning item's C{encrypted_content} and sends it
back with the next request, untouched; that is how OpenAI's own reasoning
survives a stateless conversation.  Anthropic needs its thinking blocks back
with their signatures for multi-turn tool use with thinking, so the gateway
packs a signed C{thinking} block (or a C{redacted_thinking} block) into
C{encrypted_content}: L{THINKING_PREFIX} and the base64 of a small JSON
object.  Nothing in it is secret: the thinking text also reaches the client
as the item's summary, and the signature is meaningful only to Anthropic.
"""

from __future__ import annotations

import base64
import binascii
import json

from pylon_ai.formats.canonical import ReasoningPart, RedactedReasoningPart

__all__ = ["THINKING_PREFIX", "pack_thinking", "unpack_thinking"]

#: How packed Anthropic thinking starts; OpenAI's own encrypted content
#: never does.
THINKING_PREFIX = "pylon-thinking-v1:"


def pack_thinking(part: ReasoningPart | RedactedReasoningPart) -> str | None:
    """
    The C{encrypted_content} that carries a signed or redacted block.

    @return: The packed block, or L{None} for reasoning that has no
        signature (there is nothing for an upstream to verify).
    """
    if isinstance(part, RedactedReasoningPart):
        value: dict[str, str] = {"redacted": part.data}
    elif part.signature:
        value = {"thinking": part.text, "signature": part.signature}
    else:
        return None
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return THINKING_PREFIX + base64.b64encode(raw.encode("utf-8")).decode("ascii")


def unpack_thinking(
    content: str, origin: str | None = None
) -> ReasoningPart | RedactedReasoningPart | None:
    """
    The block that L{pack_thinking} packed into C{content}.

    @param origin: Where the content stands in the client's request.
    @return: The block, or L{None} when C{content} is not packed thinking
        (OpenAI's own encrypted content, or something damaged).
    """
    if not content.startswith(THINKING_PREFIX):
        return None
    try:
        raw = base64.b64decode(content[len(THINKING_PREFIX) :], validate=True)
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    redacted = value.get("redacted")
    if isinstance(redacted, str):
        return RedactedReasoningPart(redacted, origin=origin)
    thinking = value.get("thinking")
    signature = value.get("signature")
    if isinstance(thinking, str) and isinstance(signature, str) and signature:
        return ReasoningPart(thinking, signature=signature, origin=origin)
    return None
