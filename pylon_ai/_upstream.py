"""
One HTTP request to a provider, with timeouts, clean cancellation and
provider errors mapped to L{ProviderError <pylon_ai._errors.ProviderError>}:
a streamed reply (L{StreamCall}, which the library's plugin and the gateway
use) or one whole JSON body (L{BodyCall}, the gateway's same-format
non-streaming requests).

The code lives in modules with one job each, re-exported here for the code
and tests that import it from this module: L{pylon_ai._call} (what every
call shares: sending, timeouts, cancellation, error replies),
L{pylon_ai._stream_call}, L{pylon_ai._body_call} and L{pylon_ai._call_errors}
(mapping failures to errors, the request's credentials to scrub).
"""

from pylon_ai._body_call import BodyCall
from pylon_ai._call import BytesProducer
from pylon_ai._call_errors import (
    BodyTooLarge,
    connection_error,
    error_from_body,
    request_secrets,
    retry_after_seconds,
)
from pylon_ai._stream_call import StreamCall, StreamDecoder

__all__ = [
    "BodyCall",
    "BodyTooLarge",
    "BytesProducer",
    "StreamCall",
    "StreamDecoder",
    "connection_error",
    "error_from_body",
    "request_secrets",
    "retry_after_seconds",
]
