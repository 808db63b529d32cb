"""
Registers C{twistd pylon-ai}.
"""

from twisted.application.service import ServiceMaker

pylon_ai = ServiceMaker(
    "pylon-ai",
    "pylon_ai.tap",
    "An LLM gateway: OpenAI and Anthropic compatible APIs over Twisted.",
    "pylon-ai",
)
