"""
Chat messages as the library takes them.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class AiMessage:
    """
    One message of a conversation.

    @ivar role: C{"system"}, C{"user"} or C{"assistant"}.
    @ivar content: The message text.
    """

    role: str
    content: str

    @classmethod
    def system(cls, text: str) -> AiMessage:
        """
        A system message (instructions).  Anthropic receives every system
        message in its top-level C{system} field.
        """
        return cls("system", text)

    @classmethod
    def user(cls, text: str) -> AiMessage:
        """
        A message from the user.
        """
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str) -> AiMessage:
        """
        An earlier reply of the assistant.
        """
        return cls("assistant", text)
