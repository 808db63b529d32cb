"""
Where the Chat Completions stream decoder and request builders used to
live: they are in L{pylon_ai.formats.chat} now.  Kept for modules not yet
moved (import from L{pylon_ai.formats.chat} in new code).
"""

from pylon_ai.formats.chat import (
    CHAT_PATH,
    OpenAIStreamDecoder,
    error_event,
    request_body,
    request_headers,
)

__all__ = [
    "CHAT_PATH",
    "OpenAIStreamDecoder",
    "error_event",
    "request_body",
    "request_headers",
]
