"""
Everything about the Anthropic Messages format: request bodies and whole
replies to and from the canonical model (L{pylon_ai.formats.canonical}),
streams to and from the event model (L{pylon_ai.formats.events}), and the
library's plain requests.

Requests
========

  - C{system} (a string, or text blocks with their C{cache_control}) is the
    canonical system prompt; C{cache_control} on blocks and tools is kept
    as a hint that only this format sends on.
  - C{thinking} (C{enabled} with C{budget_tokens}, C{adaptive},
    C{disabled}, C{between_tools}) and C{output_config.effort} are the
    canonical L{Reasoning}; C{output_config.format} (and the older beta
    C{output_format}) the output format; C{metadata.user_id} the user.
  - C{context_management}, C{service_tier}, top-level C{cache_control},
    C{inference_geo} and C{speed} are advisory: other formats drop them.
    C{container} and C{mcp_servers} change the reply: other formats refuse
    them.  Server tools (C{web_search_...}, ...) are L{HostedTool}s.

Encoding for an upstream:

  - An effort level without a thinking mode (from another format) becomes
    C{thinking: {type: enabled, budget_tokens}} per
    L{pylon_ai.formats.canonical.budget_for_effort}, the budget kept below
    C{max_tokens} as Anthropic requires: when the client set no limit the
    limit is the default plus the budget; when its limit leaves less than
    1024 tokens of budget, thinking stays off.  Such translated thinking
    also stays off when a tool choice forces a call (Anthropic refuses
    both), and when the request continues a tool call whose assistant turn
    does not begin with signed thinking (Anthropic requires it back); it
    drops C{temperature}, C{top_k} and a C{top_p} below 0.95, which
    Anthropic refuses with thinking.
  - Reasoning in assistant turns is sent only signed (C{thinking} with its
    signature, C{redacted_thinking}): unsigned reasoning (from another
    provider) is left out.
  - C{json_schema} output is C{output_config.format}; C{json_object} (which
    Anthropic lacks) and any output format on an upstream without native
    structured output use the forced-tool technique.
  - Adjacent messages of one role are merged, as Anthropic wants turns to
    alternate.

Streams
=======

  L{AnthropicStreamDecoder} reads an upstream's events (thinking blocks
  are reasoning deltas closed by their signature);
  L{AnthropicStreamEncoder} writes events for a client (reasoning as
  C{thinking} blocks with their C{signature_delta}, before the text and
  tool blocks that follow them).

Modules: C{_decode_request}, C{_encode_request}, C{_reply},
C{_decode_stream}, C{_encode_stream}, C{_client}.
"""

from pylon_ai.formats.messages._client import (
    ANTHROPIC_VERSION,
    MESSAGES_PATH,
    request_body,
    request_headers,
)
from pylon_ai.formats.messages._decode_request import API, FORMAT, decode_request
from pylon_ai.formats.messages._decode_stream import (
    AnthropicStreamDecoder,
    error_event,
)
from pylon_ai.formats.messages._encode_request import (
    encode_request,
    uses_forced_tool,
)
from pylon_ai.formats.messages._encode_stream import (
    AnthropicStreamEncoder,
    anthropic_error_body,
    message_id,
    usage_fields,
)
from pylon_ai.formats.messages._reply import (
    anthropic_message_body,
    decode_response,
    encode_response,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "API",
    "FORMAT",
    "MESSAGES_PATH",
    "AnthropicStreamDecoder",
    "AnthropicStreamEncoder",
    "anthropic_error_body",
    "anthropic_message_body",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_event",
    "message_id",
    "request_body",
    "request_headers",
    "usage_fields",
    "uses_forced_tool",
]
