"""
Scripts for the fake provider: the replies of L{pylon_ai.testing._reply.FakeReply}
written as JSON, for C{python -m pylon_ai.testing --script FILE} (and for
tests that keep their replies in a file).

The public names are re-exported by L{pylon_ai.testing}.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, get_args

from attrs import frozen

from pylon_ai._json import loads
from pylon_ai.formats.events import StopReason
from pylon_ai.testing._reply import FakeReply, FakeToolCall

if TYPE_CHECKING:
    from pylon_ai.testing._fake import FakeProvider

#: The reference of a reply's fields, shown by C{--help} and repeated in the
#: documentation of L{pylon_ai.testing} (a test keeps the two the same).
SCRIPT_HELP = """
  chunks            list of strings: the text, one stream event each
  tool_calls        list of {"id", "name", "arguments"}: arguments is a JSON
                    object or a string; or "arguments_fragments", a list of
                    strings streamed one event each
  usage             [input_tokens, output_tokens], or null for none
  stop_reason       end_turn, max_tokens, stop_sequence, tool_use, refusal
                    or pause_turn (default: tool_use with tool calls, else
                    end_turn); mapped for the OpenAI format
  model             the model the reply names (default: the request's)
  status            the HTTP status (default 200); any other answers with
                    an error body in the format of the API called
  error_type        e.g. rate_limit_error (default: picked from the status)
  message           the text of an error body or stream error
  retry_after       number or string: the retry-after header
  headers           {"name": "value"}: extra response headers
  first_byte_delay  seconds before the response headers
  chunk_delay       seconds before each chunk
  drop_after        cut the connection after this many chunks
  stall_after       send nothing more after this many chunks
  stream_error      true: end the stream with the provider's error event
  raw_body          a string sent as the body (UTF-8) instead of the reply
  thinking          list of strings: reasoning streamed before the text
  signature         the signature of that thinking block
  input_tokens      the count a token-counting request answers
  embeddings        list of vectors (lists of numbers) embeddings answer
"""

_STOP_REASONS: tuple[str, ...] = get_args(StopReason)


class ScriptError(ValueError):
    """
    A script that is not valid: the message names the file (when there is
    one) and the place of the mistake, e.g. C{replies[2].usage}.
    """


def _fail(where: str, problem: str) -> ScriptError:
    return ScriptError(f"{where}: {problem}")


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {json.dumps(value)}")
    return value


def _optional_string(where: str, value: Any) -> str | None:
    return None if value is None else _string(where, value)


def _strings(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, "expected a list of strings")
    return value


def _is_int(value: Any) -> bool:
    # JSON true and false are ints to Python: they are no numbers here.
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(where: str, value: Any) -> float:
    if (
        not (_is_int(value) or isinstance(value, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise _fail(where, "expected a number of seconds (0 or more)")
    return float(value)


def _count(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise _fail(where, "expected a whole number (0 or more) or null")
    return int(value)


def _status(where: str, value: Any) -> int:
    if not _is_int(value) or not 100 <= value <= 599:
        raise _fail(where, "expected an HTTP status (100 to 599)")
    return int(value)


def _usage(where: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_is_int(v) and v >= 0 for v in value)
    ):
        raise _fail(where, "expected [input_tokens, output_tokens] or null")
    return (value[0], value[1])


def _stop_reason(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if value not in _STOP_REASONS:
        raise _fail(where, f"expected one of {', '.join(_STOP_REASONS)} or null")
    return str(value)


def _retry_after(where: str, value: Any) -> float | str | None:
    if value is None or isinstance(value, str):
        return value
    if not (_is_int(value) or isinstance(value, float)):
        raise _fail(where, "expected a number or a string")
    return value


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "expected true or false")
    return value


def _headers(where: str, value: Any) -> list[tuple[str, str]]:
    pairs: list[Any]
    if isinstance(value, dict):
        pairs = [[k, v] for k, v in value.items()]
    elif isinstance(value, list):
        pairs = value
    else:
        pairs = [None]
    if not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
        for p in pairs
    ):
        raise _fail(
            where, 'expected {"name": "value"} or a list of ["name", "value"] pairs'
        )
    return [(name, header) for name, header in pairs]


def _raw_body(where: str, value: Any) -> bytes | None:
    if value is None:
        return None
    return _string(where, value).encode("utf-8")


def _object(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "expected a JSON object")
    return value


def _vectors(where: str, value: Any) -> list[list[float]]:
    if not isinstance(value, list) or not all(
        isinstance(v, list)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        for v in value
    ):
        raise _fail(where, "expected a list of lists of numbers")
    return value


def _tool_call(where: str, value: Any) -> FakeToolCall:
    if not isinstance(value, dict) or "id" not in value or "name" not in value:
        raise _fail(where, 'expected {"id": ..., "name": ..., "arguments": ...}')
    for key in value:
        if key not in ("id", "name", "arguments", "arguments_fragments"):
            raise _fail(where, f"unknown field {key!r}")
    if "arguments" in value and "arguments_fragments" in value:
        raise _fail(where, "give arguments or arguments_fragments, not both")
    fragments: list[str] = []
    if "arguments_fragments" in value:
        fragments = _strings(
            f"{where}.arguments_fragments", value["arguments_fragments"]
        )
    elif "arguments" in value:
        arguments = value["arguments"]
        if isinstance(arguments, dict):
            fragments = [json.dumps(arguments, separators=(",", ":"))]
        elif isinstance(arguments, str):
            fragments = [arguments]
        else:
            raise _fail(f"{where}.arguments", "expected a JSON object or a string")
    return FakeToolCall(
        _string(f"{where}.id", value["id"]),
        _string(f"{where}.name", value["name"]),
        fragments,
    )


def _tool_calls(where: str, value: Any) -> list[FakeToolCall]:
    if not isinstance(value, list):
        raise _fail(where, "expected a list of tool calls")
    return [_tool_call(f"{where}[{i}]", call) for i, call in enumerate(value)]


#: How each field of a reply is read: the checker gives the value for
#: L{FakeReply}'s field of the same name.
_FIELDS: Mapping[str, Callable[[str, Any], Any]] = {
    "chunks": _strings,
    "tool_calls": _tool_calls,
    "usage": _usage,
    "stop_reason": _stop_reason,
    "model": _optional_string,
    "status": _status,
    "error_type": _optional_string,
    "message": _string,
    "retry_after": _retry_after,
    "headers": _headers,
    "first_byte_delay": _seconds,
    "chunk_delay": _seconds,
    "drop_after": _count,
    "stall_after": _count,
    "stream_error": _flag,
    "raw_body": _raw_body,
    "thinking": _strings,
    "signature": _optional_string,
    "input_tokens": _count,
    "embeddings": _vectors,
}


def _reply(where: str, value: Any) -> FakeReply:
    fields = _object(where, value)
    options: dict[str, Any] = {}
    for key, field_value in fields.items():
        check = _FIELDS.get(key)
        if check is None:
            raise _fail(where, f"unknown field {key!r}")
        options[key] = check(f"{where}.{key}", field_value)
    return FakeReply(**options)


@frozen
class FakeScript:
    """
    The replies of a fake provider, as read from JSON.

    The JSON is an object C{{"replies": [...], "default": {...}}} (both
    keys optional) or a bare list of replies; each reply is an object with
    the fields of L{FakeReply} (see the documentation of
    L{pylon_ai.testing}).

    @ivar replies: Served in order, one per request.
    @ivar default: Served once the replies are used up; L{None} keeps the
        provider's own default.
    """

    replies: tuple[FakeReply, ...] = ()
    default: FakeReply | None = None

    @classmethod
    def from_json(cls, data: Any) -> FakeScript:
        """
        Read a script from parsed JSON.

        @param data: A JSON object or a list, as L{json.loads} returns it.
        @raise ScriptError: C{data} is not a valid script.
        """
        if isinstance(data, list):
            data = {"replies": data}
        if not isinstance(data, dict):
            raise ScriptError("a script is a JSON object or a list of replies")
        for key in data:
            if key not in ("replies", "default"):
                raise ScriptError(
                    f"unknown key {key!r} (a script has replies and default)"
                )
        replies = data.get("replies", [])
        if not isinstance(replies, list):
            raise _fail("replies", "expected a list of replies")
        default = data.get("default")
        return cls(
            tuple(_reply(f"replies[{i}]", r) for i, r in enumerate(replies)),
            None if default is None else _reply("default", default),
        )

    @classmethod
    def from_file(cls, path: str) -> FakeScript:
        """
        Read a script from a UTF-8 JSON file.

        @param path: The file.
        @raise ScriptError: The file cannot be read, is not JSON or is not a
            valid script; the message starts with C{path}.
        """
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as e:
            raise ScriptError(f"{path}: cannot read: {e.strerror or e}") from None
        try:
            data = loads(text)
        except ValueError as e:
            # The parser's message is one line; keep ours one line too.
            detail = " ".join(str(e).split())
            raise ScriptError(f"{path}: not JSON: {detail}") from None
        try:
            return cls.from_json(data)
        except ScriptError as e:
            raise ScriptError(f"{path}: {e}") from None

    def install(self, provider: FakeProvider) -> None:
        """
        Queue the replies on C{provider}, and make L{default} its default
        reply when there is one.

        @param provider: The fake provider.
        """
        provider.enqueue(*self.replies)
        if self.default is not None:
            provider.default_reply = self.default
