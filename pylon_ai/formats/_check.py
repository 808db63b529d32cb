"""
Shape checks shared by the wire-format modules.

A request is client input: a wrong shape is a L{TranslationError} naming the
field (a 400).  A reply is an upstream's output: a wrong shape is an
L{UpstreamFormatError} (a 502).  Neither ever escapes as a C{KeyError} or a
C{TypeError}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pylon_ai.formats.canonical import JSON, Extra
from pylon_ai.formats.errors import TranslationError, UpstreamFormatError

#: Marks a refusable field that has no harmless default value.
NO_DEFAULT = object()

#: How several system prompts (or text parts folded into one string) join.
JOIN = "\n\n"

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def field(
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


def items(value: Any, path: str, what: str = "an array") -> list[tuple[str, JSON]]:
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


def string_item(value: Any, path: str) -> str:
    """
    C{value}, which must be a string.

    @raise TranslationError: Otherwise.
    """
    if not isinstance(value, str):
        raise TranslationError(f"{path!r} must be a string.", path)
    return value


def positive(obj: JSON, key: str) -> int | None:
    """
    A token limit: an integer of at least 1, or L{None}.

    @raise TranslationError: Otherwise.
    """
    value: int | None = field(obj, key, int, key)
    if value is not None and value < 1:
        raise TranslationError(f"{key!r} must be at least 1.", key)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_object(text: str) -> JSON | None:
    """
    Tool call arguments parsed: the JSON object, or L{None} when C{text} is
    not one.  Integers stay exact (a faster parser may turn big ones into
    floats); C{NaN} and C{Infinity} are not JSON.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def extras(
    body: JSON,
    fmt: str,
    handled: frozenset[str],
    advisory: frozenset[str],
    refused: Mapping[str, Any],
) -> tuple[Extra, ...]:
    """
    The top-level fields of C{body} that the canonical model has no slot
    for, kept as L{Extra}s so that an encoder of the same format can send
    them on and an encoder of another format can drop (advisory) or refuse
    them.

    @param handled: Fields the decoder reads itself.
    @param advisory: Fields that do not change the reply.
    @param refused: Fields that do change it, each with the value (besides
        null) that is its default and is dropped, or L{NO_DEFAULT}.
    @raise TranslationError: For an unknown field.
    """
    found = []
    for key, value in body.items():
        if key in handled or value is None:
            continue
        if key in advisory:
            found.append(Extra(fmt, key, value, advisory=True))
        elif key in refused:
            default = refused[key]
            if not (
                isinstance(value, bool) == isinstance(default, bool)
                and value == default
            ):
                found.append(Extra(fmt, key, value, advisory=False))
        else:
            raise TranslationError(f"Unknown parameter {key!r}.", key)
    return tuple(found)


def emit_extras(out: JSON, found: tuple[Extra, ...], fmt: str, api: str) -> None:
    """
    Put the extras of format C{fmt} back into C{out}; drop the advisory
    extras of other formats.

    @param api: The target API's name, for the error message.
    @raise TranslationError: For an extra of another format that changes
        the reply.
    """
    for extra in found:
        if extra.format == fmt:
            out[extra.key] = extra.value
        elif not extra.advisory:
            raise TranslationError(
                f"Parameter {extra.key!r} with this value cannot be translated "
                f"to the {api}.",
                extra.key,
            )


def refuse(what: str, origin: str | None, api: str) -> TranslationError:
    """
    The error for something a target format cannot express.

    @param what: What it is, e.g. C{"content block type 'document'"}.
    @param origin: Where it stands in the client's request.
    """
    where = f"{origin!r}: " if origin else ""
    return TranslationError(f"{where}{what} cannot be translated to the {api}.", origin)


# -- replies ------------------------------------------------------------------


def fail(message: str) -> UpstreamFormatError:
    """
    The error for a malformed upstream reply.
    """
    return UpstreamFormatError(f"Malformed upstream response: {message}")


def need(obj: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """
    C{obj[key]}, which must be present and of C{kind} (never a C{bool}).

    @raise UpstreamFormatError: Otherwise.
    """
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise fail(f"bad or missing {what}.")
    return value


def count(usage: JSON, key: str) -> int:
    """
    A token count of a usage object; absent or null counts 0.

    @raise UpstreamFormatError: When it is not a non-negative integer.
    """
    value = usage.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fail(f"bad usage.{key}.")
    return value
