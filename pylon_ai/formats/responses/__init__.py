"""
The OpenAI Responses API (C{POST /v1/responses}): request bodies, whole
C{response} objects and event streams to and from the canonical model.

  - L{decode_request} / L{encode_request}: a client's body into a
    L{CanonicalRequest<pylon_ai.formats.canonical.CanonicalRequest>}, and
    one into a body for an upstream that speaks Responses.
  - L{adapt_request}: namespace tools flattened and hosted tools dropped
    (or refused) for a Chat Completions or Messages upstream; its
    L{ToolNames} map the upstream's tool names back for the encoders.
  - L{decode_response} / L{encode_response}: whole C{response} objects;
    L{response_echo} picks the request fields a response repeats.
  - L{ResponsesStreamEncoder} / L{ResponsesStreamDecoder}: event streams.

The gateway stores nothing: C{store} is ignored, and C{previous_response_id}
and C{conversation} are refused unless the request passes through to an
upstream that keeps state.  Anthropic's signed thinking travels to the client
and back in reasoning items' C{encrypted_content}
(L{pack_thinking}, L{unpack_thinking}).

Modules: C{_decode_request} (and C{_decode_input} for its C{input} items),
C{_encode_request}, C{_reply} (with the pieces of bodies it shares with
C{_encode_stream} in C{_objects}), C{_decode_stream}, C{_encode_stream},
C{_tools}, C{_thinking}.
"""

from pylon_ai.formats.responses._decode_request import API, FORMAT, decode_request
from pylon_ai.formats.responses._decode_stream import ResponsesStreamDecoder
from pylon_ai.formats.responses._encode_request import encode_request
from pylon_ai.formats.responses._encode_stream import ResponsesStreamEncoder
from pylon_ai.formats.responses._reply import (
    decode_response,
    encode_response,
    response_echo,
)
from pylon_ai.formats.responses._thinking import (
    THINKING_PREFIX,
    pack_thinking,
    unpack_thinking,
)
from pylon_ai.formats.responses._tools import Adapted, ToolNames, adapt_request

__all__ = [
    "API",
    "FORMAT",
    "THINKING_PREFIX",
    "Adapted",
    "ResponsesStreamDecoder",
    "ResponsesStreamEncoder",
    "ToolNames",
    "adapt_request",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "pack_thinking",
    "response_echo",
    "unpack_thinking",
]
