"""
The conversation of the canonical request (see L{pylon_ai.formats.canonical},
which exports it): L{Message}s of typed content parts, each with C{origin},
its path in the client's request, which takes no part in equality.
"""

from __future__ import annotations

from typing import Any, Literal

from attrs import field, frozen

JSON = dict[str, Any]


def _origin() -> Any:
    return field(default=None, eq=False, kw_only=True)


@frozen
class TextPart:
    """
    Text.

    @ivar text: The text (may be empty where the client sent it so).
    @ivar cache_control: An Anthropic cache breakpoint after this part, kept
        for targets that have one.
    @ivar origin: Where the part stands in the client's request.
    """

    text: str
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ImagePart:
    """
    An image, by URL or inline.

    @ivar url: An C{http(s)} URL, or L{None} when inline.
    @ivar media_type: The inline image's type (C{"image/png"}).
    @ivar data: The inline image, base64.
    @ivar detail: OpenAI's resolution hint (C{"low"}, C{"high"}, C{"auto"}).
    """

    url: str | None = None
    media_type: str | None = None
    data: str | None = None
    detail: str | None = None
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class DocumentPart:
    """
    A document (a PDF or plain text).

    @ivar source: How it is given: C{"base64"} (C{data}, C{media_type}),
        C{"text"} (C{data} is the text), C{"url"} (C{url}) or C{"file"} (a
        provider file id in C{file_id}: valid only at that provider).
    @ivar title: Its title or file name.
    @ivar context: Anthropic's context text about it.
    @ivar citations: Anthropic's citation settings.
    """

    source: Literal["base64", "text", "url", "file"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    title: str | None = None
    context: str | None = None
    citations: JSON | None = None
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ToolCallPart:
    """
    A call of a tool by the assistant.

    @ivar id: The call id (C{tool_use} id, C{tool_call} id, C{call_id}).
    @ivar name: The tool name.
    @ivar arguments: The arguments, a JSON object.
    @ivar namespace: The Responses API namespace of the tool, if any.
    """

    id: str
    name: str
    arguments: JSON
    namespace: str | None = None
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ToolResultPart:
    """
    The result of a tool call, sent by the user side.

    @ivar call_id: The id of the call it answers.
    @ivar content: A string, or parts (text, images, documents): formats
        keep the distinction, so the canonical model keeps it too.
    @ivar is_error: The tool failed (Anthropic's C{is_error}).
    """

    call_id: str
    content: str | tuple[TextPart | ImagePart | DocumentPart, ...] = ""
    is_error: bool = False
    cache_control: JSON | None = None
    origin: str | None = _origin()


@frozen
class ReasoningPart:
    """
    Reasoning the assistant produced.

    @ivar text: The visible reasoning (Anthropic C{thinking}, Chat
        Completions C{reasoning_content}).
    @ivar signature: Anthropic's signature of C{text}: only with it can an
        Anthropic upstream take the block back.
    @ivar encrypted_content: A Responses reasoning item's opaque content.
    @ivar summary: A Responses reasoning item's summary texts.
    @ivar id: A Responses reasoning item's id.
    """

    text: str = ""
    signature: str | None = None
    encrypted_content: str | None = None
    summary: tuple[str, ...] = ()
    id: str | None = None
    origin: str | None = _origin()


@frozen
class RedactedReasoningPart:
    """
    Reasoning the provider encrypted (Anthropic C{redacted_thinking}).

    @ivar data: The opaque content, sent back as it came.
    """

    data: str
    origin: str | None = _origin()


Part = (
    TextPart
    | ImagePart
    | DocumentPart
    | ToolCallPart
    | ToolResultPart
    | ReasoningPart
    | RedactedReasoningPart
)


@frozen
class Message:
    """
    One turn of the conversation.

    @ivar role: C{"user"} (which also carries tool results) or
        C{"assistant"}.
    @ivar parts: Its content, in order.
    """

    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]
    origin: str | None = _origin()
