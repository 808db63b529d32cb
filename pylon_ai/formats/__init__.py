"""
Wire formats around one canonical model.

  - L{pylon_ai.formats.canonical}: the canonical request and whole reply
    (messages of typed parts, tools, output format, reasoning, ...), the
    effort/budget table and the forced-tool structured output technique.
  - L{pylon_ai.formats.chat}: OpenAI Chat Completions.
  - L{pylon_ai.formats.messages}: Anthropic Messages.

Each format module decodes its request body into a
L{CanonicalRequest<pylon_ai.formats.canonical.CanonicalRequest>} and encodes
one into its body (C{decode_request}, C{encode_request}), and does the same
for whole replies (C{decode_response}, C{encode_response}).  Translating is
the decoder of the client's format followed by the encoder of the
upstream's: there is no pairwise translator.  A same-format request is not
decoded at all: it passes through as it came.

Streams go through the event model (L{pylon_ai.formats.events}) the same way.
"""
