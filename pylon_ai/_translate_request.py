"""
Request bodies: OpenAI Chat Completions -> Anthropic Messages, and the checks
both request directions share.

Pure functions on decoded JSON.  Everything they read is client input, so
every shape is checked and a mistake is a L{TranslationError} naming the
field (a 400 for the caller), never a C{KeyError} or C{TypeError}.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pylon_ai.formats.errors import TranslationError

JSON = dict[str, Any]

#: What message content may be, for error messages.
_CONTENT = "a string or an array of content parts"

#: How several system prompts (or text parts folded into one string) join.
_JOIN = "\n\n"


def _field(
    obj: JSON,
    key: str,
    kind: type | tuple[type, ...],
    path: str,
    *,
    required: bool = False,
) -> Any:
    """
    C{obj[key]} checked against C{kind}; L{None} when absent or null.

    @raise TranslationError: When required and missing, or of a wrong type
        (a C{bool} is never accepted as a number).
    """
    value = obj.get(key)
    if value is None:
        if required:
            raise TranslationError(f"Missing required parameter {path!r}.", path)
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise TranslationError(f"{path!r} must be {names}.", path)
    return value


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def _items(value: Any, path: str, what: str = "an array") -> list[tuple[str, JSON]]:
    """
    The objects of a JSON array, each with its path.

    @param what: What C{value} may be, for the error message.
    @raise TranslationError: When C{value} is not an array of objects.
    """
    if not isinstance(value, list):
        raise TranslationError(f"{path!r} must be {what}.", path)
    result = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise TranslationError(f"'{path}[{i}]' must be an object.", f"{path}[{i}]")
        result.append((f"{path}[{i}]", item))
    return result


def _check_fields(
    body: JSON,
    handled: frozenset[str],
    dropped: frozenset[str],
    refused: dict[str, Any],
    api: str,
) -> None:
    """
    Refuse the fields of C{body} that are neither handled nor dropped.

    @param refused: Known fields that cannot be translated, each with the
        value (besides null) that is its default and may be dropped, or
        C{_NO_DEFAULT}.
    @raise TranslationError: Naming the first field that cannot be honoured.
    """
    for key, value in body.items():
        if key in handled or key in dropped or value is None:
            continue
        if key in refused:
            default = refused[key]
            if (
                isinstance(value, bool) == isinstance(default, bool)
                and value == default
            ):
                continue
            raise TranslationError(
                f"Parameter {key!r} with this value cannot be translated to the {api}.",
                key,
            )
        raise TranslationError(f"Unknown parameter {key!r}.", key)


_NO_DEFAULT = object()


def _model(body: JSON, upstream_model: str | None) -> str:
    model = _field(body, "model", str, "model", required=upstream_model is None)
    return upstream_model if upstream_model is not None else model


def _number(body: JSON, key: str) -> float | int | None:
    value: float | int | None = _field(body, key, (int, float), key)
    if value is not None and not math.isfinite(value):
        # NaN and infinities are not JSON: an upstream would get invalid JSON.
        raise TranslationError(f"{key!r} must be a finite number.", key)
    return value


def _max_tokens(body: JSON, key: str) -> int | None:
    value: int | None = _field(body, key, int, key)
    if value is not None and value < 1:
        raise TranslationError(f"{key!r} must be at least 1.", key)
    return value


def _texts(content: Any, path: str) -> list[str]:
    """
    The texts of a list of text parts (OpenAI C{text} parts and Anthropic
    C{text} blocks share their shape).
    """
    texts = []
    for p, part in _items(content, path, _CONTENT):
        if part.get("type") != "text":
            raise TranslationError(f"{p!r} must be a text part here.", p)
        texts.append(_field(part, "text", str, f"{p}.text", required=True))
    return texts


def _text_of(content: Any, path: str) -> str:
    """
    The text of a string or of a list of text parts, joined by a blank line.
    """
    return content if isinstance(content, str) else _JOIN.join(_texts(content, path))


_OPENAI_HANDLED = frozenset(
    "model messages max_tokens max_completion_tokens temperature top_p stop stream "
    "tools tool_choice parallel_tool_calls".split()
)
#: Advisory fields: identifiers, storage and tiering hints.  C{stream_options}
#: is read by the caller, which asks the upstream for usage anyway.
_OPENAI_DROPPED = frozenset(
    "user seed service_tier store metadata stream_options prompt_cache_key "
    "prompt_cache_retention safety_identifier".split()
)
_OPENAI_REFUSED: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": 0,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": {},
    "response_format": {"type": "text"},
    "modalities": ["text"],
    "audio": _NO_DEFAULT,
    "functions": _NO_DEFAULT,
    "function_call": _NO_DEFAULT,
    "reasoning_effort": _NO_DEFAULT,
    "verbosity": _NO_DEFAULT,
    "prediction": _NO_DEFAULT,
    "web_search_options": _NO_DEFAULT,
}


def openai_request_to_anthropic(
    body: JSON, *, upstream_model: str | None, default_max_tokens: int = 4096
) -> JSON:
    """
    Translate an OpenAI Chat Completions request body to Anthropic Messages.

    Every C{system} and C{developer} message, wherever it stands, joins the
    top-level C{system} string (in order, separated by a blank line); the
    other messages keep their order, C{tool} messages become C{tool_result}
    blocks and adjacent messages of one role are merged, as Anthropic wants
    user and assistant turns to alternate.

    @param body: The decoded client request.
    @param upstream_model: The model to ask for, or L{None} for the body's.
    @param default_max_tokens: C{max_tokens} when the client set none
        (Anthropic requires it).
    @return: A new Anthropic request body.
    @raise TranslationError: For a field that cannot be translated, an
        unknown field or a malformed one; C{param} names it.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    _check_fields(
        body,
        _OPENAI_HANDLED,
        _OPENAI_DROPPED,
        _OPENAI_REFUSED,
        "Anthropic Messages API",
    )
    out: JSON = {"model": _model(body, upstream_model)}
    system, messages = _openai_messages(body.get("messages"))
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    limit = _max_tokens(body, "max_completion_tokens")
    out["max_tokens"] = limit or _max_tokens(body, "max_tokens") or default_max_tokens
    temperature = _number(body, "temperature")
    if temperature is not None:
        if not 0 <= temperature <= 1:
            raise TranslationError(
                "'temperature' must be between 0 and 1 for this model.", "temperature"
            )
        out["temperature"] = temperature
    if (top_p := _number(body, "top_p")) is not None:
        out["top_p"] = top_p
    stop = _field(body, "stop", (str, list), "stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif stop:
        out["stop_sequences"] = [
            _text_item(s, f"stop[{i}]") for i, s in enumerate(stop)
        ]
    if (stream := _field(body, "stream", bool, "stream")) is not None:
        out["stream"] = stream
    tools = _field(body, "tools", list, "tools")
    if tools:
        out["tools"] = [_openai_tool(tool, p) for p, tool in _items(tools, "tools")]
    parallel = _field(body, "parallel_tool_calls", bool, "parallel_tool_calls")
    choice = _openai_tool_choice(
        body.get("tool_choice"), bool(tools), parallel is False
    )
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _text_item(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(f"{path!r} must be a string.", path)
    return value


def _openai_tool(tool: JSON, path: str) -> JSON:
    if tool.get("type") != "function":
        raise TranslationError(
            f"{path!r}: only function tools can be translated.", path
        )
    fn = _field(tool, "function", dict, f"{path}.function", required=True)
    result: JSON = {
        "name": _field(fn, "name", str, f"{path}.function.name", required=True)
    }
    description = _field(fn, "description", str, f"{path}.function.description")
    if description is not None:
        result["description"] = description
    schema = _field(fn, "parameters", dict, f"{path}.function.parameters")
    result["input_schema"] = (
        schema if schema is not None else {"type": "object", "properties": {}}
    )
    return result


def _openai_tool_choice(value: Any, has_tools: bool, serial: bool) -> JSON | None:
    choice: JSON | None
    if value is None:
        choice = {"type": "auto"} if serial else None
    elif value in ("auto", "none", "required"):
        choice = {"type": {"required": "any"}.get(value, value)}
    elif (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("function"), dict)
        and isinstance(value["function"].get("name"), str)
    ):
        choice = {"type": "tool", "name": value["function"]["name"]}
    else:
        raise TranslationError(
            "'tool_choice' has a form that cannot be translated.", "tool_choice"
        )
    if choice is None or not has_tools:
        if choice is not None and choice["type"] in ("any", "tool"):
            raise TranslationError("'tool_choice' requires 'tools'.", "tool_choice")
        return None
    if serial and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def _openai_messages(messages: Any) -> tuple[str | None, list[JSON]]:
    systems: list[str] = []
    out: list[JSON] = []
    for path, msg in _items(messages, "messages"):
        role = _field(msg, "role", str, f"{path}.role", required=True)
        content = msg.get("content")
        blocks: list[JSON]
        if role in ("system", "developer"):
            systems.append(_text_of(content, f"{path}.content"))
            continue
        if role == "user":
            blocks = _openai_user_content(content, f"{path}.content")
        elif role == "assistant":
            blocks = _openai_assistant_blocks(msg, path)
        elif role == "tool":
            role = "user"
            blocks = [_openai_tool_result(msg, path)]
        else:
            raise TranslationError(
                f"'{path}.role': role {role!r} cannot be translated.", f"{path}.role"
            )
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for msg in out:
        blocks = msg["content"]
        if not blocks:
            msg["content"] = ""
        elif len(blocks) == 1 and blocks[0]["type"] == "text":
            msg["content"] = blocks[0]["text"]
    return (_JOIN.join(systems) if systems else None), out


def _openai_user_content(content: Any, path: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for p, part in _items(content, path, _CONTENT):
        kind = part.get("type")
        if kind == "text":
            text = _field(part, "text", str, f"{p}.text", required=True)
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = _field(
                part, "image_url", (dict, str), f"{p}.image_url", required=True
            )
            if isinstance(image, dict):
                image = _field(image, "url", str, f"{p}.image_url.url", required=True)
            blocks.append(_image_block(image, f"{p}.image_url.url"))
        else:
            raise TranslationError(
                f"{p!r}: content part type {kind!r} cannot be translated.", p
            )
    return blocks


def _image_block(url: str, path: str) -> JSON:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, *params = header.split(";")
        if not comma or "base64" not in params or not media_type:
            raise TranslationError(
                f"{path!r}: only base64 data: URLs can be translated.", path
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{path!r} must be a data:, http: or https: URL.", path)


def _openai_assistant_blocks(msg: JSON, path: str) -> list[JSON]:
    if msg.get("function_call") is not None or msg.get("audio") is not None:
        key = "function_call" if msg.get("function_call") is not None else "audio"
        raise TranslationError(f"'{path}.{key}' cannot be translated.", f"{path}.{key}")
    content = msg.get("content")
    blocks: list[JSON] = []
    if isinstance(content, str):
        texts = [content]
    elif content is None:
        texts = []
    else:
        texts = []
        for p, part in _items(content, f"{path}.content", _CONTENT):
            kind = part.get("type")
            if kind not in ("text", "refusal"):
                raise TranslationError(
                    f"{p!r}: content part type {kind!r} cannot be translated.", p
                )
            texts.append(_field(part, kind, str, f"{p}.{kind}", required=True))
    blocks.extend({"type": "text", "text": text} for text in texts if text)
    calls = _field(msg, "tool_calls", list, f"{path}.tool_calls")
    for p, call in _items(calls or [], f"{path}.tool_calls"):
        if call.get("type", "function") != "function":
            raise TranslationError(
                f"'{p}.type': only function tool calls can be translated.", f"{p}.type"
            )
        fn = _field(call, "function", dict, f"{p}.function", required=True)
        arguments = _field(fn, "arguments", str, f"{p}.function.arguments") or "{}"
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise TranslationError(
                f"'{p}.function.arguments' must be a JSON object.",
                f"{p}.function.arguments",
            )
        blocks.append(
            {
                "type": "tool_use",
                "id": _field(call, "id", str, f"{p}.id", required=True),
                "name": _field(fn, "name", str, f"{p}.function.name", required=True),
                "input": parsed,
            }
        )
    return blocks


def _openai_tool_result(msg: JSON, path: str) -> JSON:
    tool_id = _field(msg, "tool_call_id", str, f"{path}.tool_call_id", required=True)
    content = msg.get("content")
    if content is None or isinstance(content, str):
        result: str | list[JSON] = content or ""
    else:
        result = [
            {"type": "text", "text": t} for t in _texts(content, f"{path}.content")
        ]
    return {"type": "tool_result", "tool_use_id": tool_id, "content": result}
