"""
Where the stream encoders and whole-body builders used to live: they are in
L{pylon_ai.formats.chat} and L{pylon_ai.formats.messages} now.  Kept for
modules not yet moved (import from L{pylon_ai.formats} in new code).
"""

from pylon_ai._json import dumps
from pylon_ai.formats._frames import sse_frame
from pylon_ai.formats.canonical import ToolCall
from pylon_ai.formats.chat import (
    OpenAIStreamEncoder,
    openai_completion_body,
    openai_error_body,
)
from pylon_ai.formats.messages import (
    AnthropicStreamEncoder,
    anthropic_error_body,
    anthropic_message_body,
)

__all__ = [
    "AnthropicStreamEncoder",
    "OpenAIStreamEncoder",
    "ToolCall",
    "anthropic_error_body",
    "anthropic_message_body",
    "dumps",
    "openai_completion_body",
    "openai_error_body",
    "sse_frame",
]
