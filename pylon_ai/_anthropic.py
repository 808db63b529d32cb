"""
Where the Messages stream decoder and request builders used to live: they
are in L{pylon_ai.formats.messages} now.  Kept for modules not yet moved
(import from L{pylon_ai.formats.messages} in new code).
"""

from pylon_ai.formats.messages import (
    ANTHROPIC_VERSION,
    MESSAGES_PATH,
    AnthropicStreamDecoder,
    error_event,
    request_body,
    request_headers,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "MESSAGES_PATH",
    "AnthropicStreamDecoder",
    "error_event",
    "request_body",
    "request_headers",
]
