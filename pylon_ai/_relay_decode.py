"""
What the relay decodes of the events it must look at: one event block's SSE
fields (L{_fields}) and the format's light decoder (L{RelayDecoder}) that
tells which bytes may matter and turns an event into model events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol as TypingProtocol

from pylon_ai.formats.events import ModelEvent

__all__ = ["RelayDecoder"]


class RelayDecoder(TypingProtocol):
    """
    A light stream decoder that can tell which bytes it needs to see.
    """

    def feed(self, event_type: str, data: str) -> Iterable[ModelEvent]: ...

    def interesting(self, data: bytes) -> bool: ...

    def plain(self, obj: object) -> bool: ...


def _fields(block: bytes) -> tuple[str, bytes | None]:
    # One event's lines (no CR: such streams go to SSEProtocol): its name
    # and its data lines joined, or None when it has no data.
    name = b""
    datas: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # ":" starts a comment
            continue
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            datas.append(value)
        elif field == b"event":
            name = value
    data = b"\n".join(datas) if datas else None
    return name.decode("utf-8", "replace") or "message", data
