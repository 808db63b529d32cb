"""
Server-sent event framing shared by the stream encoders.
"""

from __future__ import annotations


def sse_frame(data: bytes | str, event: str | None = None) -> bytes:
    """
    One server-sent event.

    @param data: The event data.  Line ends inside it (CR, LF or CRLF) split
        it over several C{data:} lines, as the event-stream format requires.
    @param event: The event name, or L{None} for an unnamed (C{message})
        event.
    @return: C{event: NAME\\ndata: DATA\\n\\n} (without the C{event} line when
        C{event} is L{None}).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        body = b"data: " + data + b"\n"
    if event is None:
        return body + b"\n"
    return b"event: " + event.encode("utf-8") + b"\n" + body + b"\n"
