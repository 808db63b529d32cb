"""
The two ways a translation fails: the client asked for something the
upstream's format cannot carry, or the upstream answered with something its
own format does not allow.
"""

from __future__ import annotations

from pylon_ai._errors import ProviderError

__all__ = ["TranslationError", "UpstreamFormatError"]


class TranslationError(ValueError):
    """
    A client request cannot be translated to the upstream's format.

    The gateway answers it with a 400 in the called API's error shape.

    @ivar message: Readable text.
    @ivar param: The offending field as a path (C{"logit_bias"},
        C{"messages[2].content[0].image_url.url"}), or L{None}.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UpstreamFormatError(ProviderError, ValueError):
    """
    An upstream response does not have the shape its API promises.

    It is a L{ProviderError} (the gateway answers 502) and a C{ValueError}.
    C{status}, C{error_type} and C{body} are L{None}: the caller that knows
    the HTTP exchange reports those.
    """
