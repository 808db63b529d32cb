"""
A Responses request's C{input} items decoded into the canonical messages.

  - C{input}, a string or a list of items, becomes the messages:
    C{message} items (C{input_text}, C{input_image}, C{input_file},
    C{output_text} and C{refusal} parts), C{function_call} and
    C{function_call_output} items and C{reasoning} items.  Consecutive items
    of one side form one turn: reasoning, assistant text and calls the
    assistant's; user text and call outputs the user's.  C{system} and
    C{developer} messages join C{instructions} in the system prompt.
  - A reasoning item whose C{encrypted_content} packs Anthropic thinking
    (L{pylon_ai.formats.responses._thinking}) is that signed block again;
    any other keeps its summary, encrypted content and id for a Responses
    upstream.
  - Records of hosted tool calls (C{web_search_call}, ...) are left out:
    the model ran them, no upstream takes them back.
"""

from __future__ import annotations

from typing import Any, Literal

from pylon_ai.formats._check import JOIN, field, items, json_object
from pylon_ai.formats.canonical import (
    JSON,
    DocumentPart,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from pylon_ai.formats.errors import TranslationError
from pylon_ai.formats.responses._thinking import unpack_thinking

#: Items that record a call the provider ran itself: no upstream takes
#: them back, and the model has seen their outcome in the text after them.
_HOSTED_RECORDS = frozenset(
    "web_search_call file_search_call code_interpreter_call "
    "image_generation_call mcp_list_tools mcp_call tool_search_call "
    "tool_search_output".split()
)


class _Turns:
    """
    Items folded into alternating turns.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._role: str | None = None
        self._parts: list[Part] = []
        self._origin: str | None = None

    def add(self, role: str, parts: list[Part], origin: str) -> None:
        if role != self._role:
            self.flush()
            self._role, self._origin = role, origin
        self._parts.extend(parts)

    def flush(self) -> None:
        if self._role is not None and self._parts:
            role: Literal["user", "assistant"] = (
                "user" if self._role == "user" else "assistant"
            )
            self.messages.append(Message(role, tuple(self._parts), origin=self._origin))
        self._role, self._parts = None, []


def _decode_input(
    value: Any, stateful: bool
) -> tuple[list[TextPart], tuple[Message, ...]]:
    if isinstance(value, str):
        return [], (
            Message("user", (TextPart(value, origin="input"),), origin="input"),
        )
    system: list[TextPart] = []
    turns = _Turns()
    for path, item in items(value, "input", "a string or an array of items"):
        kind = item.get("type", "message")
        if kind == "message":
            role = field(item, "role", str, f"{path}.role", required=True)
            content = item.get("content")
            where = f"{path}.content"
            if role in ("system", "developer"):
                system.append(TextPart(_text_of(content, where), origin=where))
            elif role == "user":
                turns.add("user", _decode_user(content, where), path)
            elif role == "assistant":
                turns.add("assistant", _decode_assistant(content, where), path)
            else:
                raise TranslationError(
                    f"'{path}.role': role {role!r} cannot be translated.",
                    f"{path}.role",
                )
        elif kind == "function_call":
            turns.add("assistant", [_decode_call(item, path)], path)
        elif kind == "function_call_output":
            turns.add("user", [_decode_output(item, path)], path)
        elif kind == "reasoning":
            part = _decode_reasoning_item(item, path)
            if part is not None:
                turns.add("assistant", [part], path)
        elif kind in _HOSTED_RECORDS:
            continue
        elif kind == "item_reference":
            # A reference to an output item of an earlier response (the AI
            # SDK sends them unless told store: false).  The gateway keeps
            # nothing to resolve it with: the reference is left out, and the
            # items sent whole (calls, their outputs) carry the turn.
            continue
        else:
            raise TranslationError(
                f"{path!r}: item type {kind!r} cannot be translated.", f"{path}.type"
            )
    turns.flush()
    return system, tuple(turns.messages)


def _text_parts(content: Any, path: str) -> list[TextPart]:
    if isinstance(content, str):
        return [TextPart(content, origin=path)]
    parts = []
    for p, part in items(content, path, "a string or an array of content parts"):
        if part.get("type") not in ("input_text", "output_text", "text"):
            raise TranslationError(f"{p!r} must be a text part here.", p)
        parts.append(TextPart(field(part, "text", str, f"{p}.text", required=True)))
    return parts


def _text_of(content: Any, path: str) -> str:
    return JOIN.join(p.text for p in _text_parts(content, path))


def _parse_data_url(url: str, path: str) -> tuple[str, str]:
    header, comma, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type:
        raise TranslationError(
            f"{path!r}: only base64 data: URLs can be translated.", path
        )
    return media_type, data


def _decode_image(part: JSON, path: str) -> ImagePart:
    detail = field(part, "detail", str, f"{path}.detail")
    url = field(part, "image_url", str, f"{path}.image_url")
    if url is None:
        if part.get("file_id") is not None:
            raise TranslationError(
                f"{path!r}: an image given by file id cannot be translated.",
                f"{path}.file_id",
            )
        raise TranslationError(
            f"Missing required parameter '{path}.image_url'.", f"{path}.image_url"
        )
    if url.startswith("data:"):
        media_type, data = _parse_data_url(url, f"{path}.image_url")
        return ImagePart(media_type=media_type, data=data, detail=detail, origin=path)
    if url.startswith(("http://", "https://")):
        return ImagePart(url=url, detail=detail, origin=path)
    raise TranslationError(
        f"'{path}.image_url' must be a data:, http: or https: URL.",
        f"{path}.image_url",
    )


def _decode_file(part: JSON, path: str) -> DocumentPart:
    name = field(part, "filename", str, f"{path}.filename")
    file_id = field(part, "file_id", str, f"{path}.file_id")
    if file_id is not None:
        return DocumentPart("file", file_id=file_id, title=name, origin=path)
    url = field(part, "file_url", str, f"{path}.file_url")
    if url is not None:
        return DocumentPart("url", url=url, title=name, origin=path)
    data = field(part, "file_data", str, f"{path}.file_data", required=True)
    media_type = "application/pdf"
    if data.startswith("data:"):
        media_type, data = _parse_data_url(data, f"{path}.file_data")
    return DocumentPart(
        "base64", media_type=media_type, data=data, title=name, origin=path
    )


def _decode_user(content: Any, path: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content, origin=path)]
    parts: list[Part] = []
    for p, part in items(content, path, "a string or an array of content parts"):
        kind = part.get("type")
        if kind == "input_text":
            text = field(part, "text", str, f"{p}.text", required=True)
            if text:
                parts.append(TextPart(text, origin=p))
        elif kind == "input_image":
            parts.append(_decode_image(part, p))
        elif kind == "input_file":
            parts.append(_decode_file(part, p))
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
    return parts


def _decode_assistant(content: Any, path: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content, origin=path)] if content else []
    parts: list[Part] = []
    for p, part in items(content, path, "a string or an array of content parts"):
        kind = part.get("type")
        if kind in ("output_text", "input_text"):
            text = field(part, "text", str, f"{p}.text", required=True)
        elif kind == "refusal":
            text = field(part, "refusal", str, f"{p}.refusal", required=True)
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
        if text:
            parts.append(TextPart(text, origin=p))
    return parts


def _decode_call(item: JSON, path: str) -> ToolCallPart:
    arguments = field(item, "arguments", str, f"{path}.arguments") or "{}"
    parsed = json_object(arguments)
    if parsed is None:
        raise TranslationError(
            f"'{path}.arguments' must be a JSON object.", f"{path}.arguments"
        )
    return ToolCallPart(
        id=field(item, "call_id", str, f"{path}.call_id", required=True),
        name=field(item, "name", str, f"{path}.name", required=True),
        arguments=parsed,
        namespace=field(item, "namespace", str, f"{path}.namespace"),
        origin=path,
    )


def _decode_output(item: JSON, path: str) -> ToolResultPart:
    call_id = field(item, "call_id", str, f"{path}.call_id", required=True)
    output = item.get("output")
    if output is None or isinstance(output, str):
        return ToolResultPart(call_id, output or "", origin=path)
    parts: list[TextPart | ImagePart | DocumentPart] = []
    for p, part in items(output, f"{path}.output", "a string or an array"):
        kind = part.get("type")
        if kind == "input_text":
            parts.append(
                TextPart(field(part, "text", str, f"{p}.text", required=True), origin=p)
            )
        elif kind == "input_image":
            parts.append(_decode_image(part, p))
        elif kind == "input_file":
            parts.append(_decode_file(part, p))
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
    return ToolResultPart(call_id, tuple(parts), origin=path)


def _decode_reasoning_item(
    item: JSON, path: str
) -> ReasoningPart | RedactedReasoningPart | None:
    encrypted = field(item, "encrypted_content", str, f"{path}.encrypted_content")
    if encrypted is not None:
        packed = unpack_thinking(encrypted, path)
        if packed is not None:
            return packed
    summary = tuple(
        field(s, "text", str, f"{p}.text", required=True)
        for p, s in items(item.get("summary") or [], f"{path}.summary")
    )
    content = tuple(
        field(c, "text", str, f"{p}.text", required=True)
        for p, c in items(item.get("content") or [], f"{path}.content")
    )
    text = JOIN.join(content or summary)
    if not text and encrypted is None:
        return None
    return ReasoningPart(
        text,
        encrypted_content=encrypted,
        summary=summary,
        id=field(item, "id", str, f"{path}.id"),
        origin=path,
    )
