"""
The canonical whole reply (see L{pylon_ai.formats.canonical}, which exports
it): L{Reply} with its L{ReplyUsage}, and L{ToolCall}, a complete tool call
as a whole reply is built from pieces.
"""

from __future__ import annotations

import json

from attrs import frozen

from pylon_ai.formats._canonical_parts import Part, ToolCallPart
from pylon_ai.formats.events import Stop, Usage


@frozen
class ReplyUsage:
    """
    Token counts of a whole reply.

    @ivar input_tokens: Prompt tokens neither read from nor written to a
        cache (Anthropic's C{input_tokens}).
    @ivar cache_read_tokens: Prompt tokens read from a cache.
    @ivar cache_creation_tokens: Prompt tokens written to a cache.
    @ivar reasoning_tokens: Output tokens spent reasoning, when reported.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        """
        Every prompt token, cached or not (OpenAI's C{prompt_tokens}).
        """
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens


def reply_usage(usage: Usage) -> ReplyUsage:
    """
    The L{ReplyUsage} of a stream's L{Usage} (counts not reported are 0).
    """
    return ReplyUsage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=usage.cache_read_tokens or 0,
        cache_creation_tokens=usage.cache_creation_tokens or 0,
    )


@frozen
class Reply:
    """
    A whole (non-streaming) reply.

    @ivar id: The provider's id, if it gave one.
    @ivar model: The model that answered, if the reply names it.
    @ivar parts: Text, tool calls and reasoning, in order.
    @ivar stop: Why it ended.
    @ivar stop_sequence: The stop sequence that ended it, if one did.
    """

    id: str | None
    model: str | None
    parts: tuple[Part, ...]
    stop: Stop
    usage: ReplyUsage = ReplyUsage()
    stop_sequence: str | None = None


@frozen
class ToolCall:
    """
    A complete tool call with its arguments as JSON text, as a whole reply
    is built from pieces (L{pylon_ai.testing}'s fake provider).

    @ivar id: The call id.
    @ivar name: The tool name.
    @ivar arguments: The arguments as a JSON document (C{""} means C{{}}).
    """

    id: str
    name: str
    arguments: str = ""

    def part(self) -> ToolCallPart:
        """
        The call as a L{ToolCallPart}.

        @raise ValueError: Its arguments are not a JSON object.
        """
        arguments = json.loads(self.arguments) if self.arguments.strip() else {}
        if not isinstance(arguments, dict):
            raise ValueError(f"tool call {self.id} arguments are not a JSON object")
        return ToolCallPart(self.id, self.name, arguments)
