"""
Where the translation errors used to be imported from: they are in
L{pylon_ai.formats.errors} now (requests and replies are translated through
the canonical model of L{pylon_ai.formats}).  Kept for modules not yet
moved.
"""

from pylon_ai.formats.errors import TranslationError, UpstreamFormatError

__all__ = ["TranslationError", "UpstreamFormatError"]
