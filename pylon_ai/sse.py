"""
A server-sent events client parser for Twisted.

Twisted has no SSE client of its own.  L{SSEProtocol} is an C{IProtocol}:
hand it to C{IResponse.deliverBody} (C{treq.request(..., unbuffered=True)})
and it calls C{on_event} with each L{Event} as the bytes arrive::

    proto = SSEProtocol(on_event)
    response.deliverBody(proto)
    yield proto.done
"""

from pylon_ai._sse import (
    DEFAULT_MAX_LINE_LENGTH,
    Event,
    LineTooLong,
    SSEFactory,
    SSEProtocol,
)

__all__ = [
    "DEFAULT_MAX_LINE_LENGTH",
    "Event",
    "LineTooLong",
    "SSEFactory",
    "SSEProtocol",
]
