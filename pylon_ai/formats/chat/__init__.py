"""
Everything about the OpenAI Chat Completions format: request bodies and
whole replies to and from the canonical model
(L{pylon_ai.formats.canonical}), streams to and from the event model
(L{pylon_ai.formats.events}), and the library's plain requests.

Requests
========

  - C{system} and C{developer} messages, wherever they stand, are the
    canonical system prompt (one text part each, in order); C{tool}
    messages are user turns of one L{ToolResultPart}.
  - Assistant reasoning comes back as C{thinking_blocks} (Anthropic's signed
    C{thinking} / C{redacted_thinking} blocks, as LiteLLM carries them),
    else as C{reasoning_content} or C{reasoning} (unsigned text).
  - C{reasoning_effort} is an effort level; C{response_format}
    (C{json_schema}, C{json_object}) the output format; C{user} the user.
  - Advisory fields (C{seed}, C{store}, C{metadata}, ...) and fields that
    change the reply but have no canonical slot (C{n}, C{logprobs},
    C{audio}, ...) are L{Extra}s: sent on to a Chat Completions upstream,
    dropped (advisory) or refused by other formats.  A refusable field
    holding its default value is dropped here.

Encoding for an upstream sends C{reasoning_effort} per
L{Reasoning.requested_effort}, and leaves reasoning out of the assistant
history unless asked (DeepSeek's reasoner refuses C{reasoning_content} in
its input).  Without native structured output it uses the forced-tool
technique (see L{pylon_ai.formats.canonical}).

Replies
=======

  The first choice's text (or its refusal) and tool calls are the reply's
  parts, after its reasoning (C{thinking_blocks}, else C{reasoning_content}
  or C{reasoning}).  C{prompt_tokens} counts every prompt token: the cached
  ones are the cache reads.  Encoding a reply writes reasoning as
  C{reasoning_content} and, when it is signed, C{thinking_blocks}, so that a
  client can send it back for multi-turn tool use with thinking.

Streams
=======

  L{OpenAIStreamDecoder} reads an upstream's chunks (C{reasoning_content}
  or C{reasoning} deltas are reasoning; C{thinking_blocks} carry
  signatures); L{OpenAIStreamEncoder} writes chunks for a client
  (reasoning as C{reasoning_content}, each signed block whole in
  C{thinking_blocks}).

Modules: C{_decode_request}, C{_encode_request}, C{_reply},
C{_decode_stream}, C{_encode_stream}, C{_client}.
"""

from pylon_ai.formats.chat._client import CHAT_PATH, request_body, request_headers
from pylon_ai.formats.chat._decode_request import (
    API,
    FORMAT,
    TOOL_ERROR_PREFIX,
    decode_request,
)
from pylon_ai.formats.chat._decode_stream import (
    OpenAIStreamDecoder,
    error_event,
    usage_event,
)
from pylon_ai.formats.chat._encode_request import encode_request, uses_forced_tool
from pylon_ai.formats.chat._encode_stream import (
    OpenAIStreamEncoder,
    openai_error_body,
    usage_fields,
)
from pylon_ai.formats.chat._reply import (
    decode_response,
    encode_response,
    openai_completion_body,
)

__all__ = [
    "API",
    "CHAT_PATH",
    "FORMAT",
    "TOOL_ERROR_PREFIX",
    "OpenAIStreamDecoder",
    "OpenAIStreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_event",
    "openai_completion_body",
    "openai_error_body",
    "request_body",
    "request_headers",
    "usage_event",
    "usage_fields",
    "uses_forced_tool",
]
