"""
A server-sent events client parser for Twisted.

Twisted has no SSE client of its own.  L{SSEProtocol} is an C{IProtocol}:
hand it to C{IResponse.deliverBody} (C{treq.request(..., unbuffered=True)})
and it calls C{on_event} with each L{Event} as the bytes arrive::

    proto = SSEProtocol(on_event)
    response.deliverBody(proto)
    yield proto.done

Two bounds keep a misbehaving server from filling memory: one line
(C{max_line_length}, default L{DEFAULT_MAX_LINE_LENGTH}, 1 MiB) and one
event, all its C{data} lines together (C{max_event_length}, default
L{DEFAULT_MAX_EVENT_LENGTH}, 16 MiB).  Past either, the transport is told
to stop and C{done} fails with L{LineTooLong} or L{EventTooLong}.
"""

from pylon_ai._sse import (
    DEFAULT_MAX_EVENT_LENGTH,
    DEFAULT_MAX_LINE_LENGTH,
    Event,
    EventTooLong,
    LineTooLong,
    SSEFactory,
    SSEProtocol,
)

__all__ = [
    "DEFAULT_MAX_EVENT_LENGTH",
    "DEFAULT_MAX_LINE_LENGTH",
    "Event",
    "EventTooLong",
    "LineTooLong",
    "SSEFactory",
    "SSEProtocol",
]
