"""
JSON in and out, through orjson when it is installed.

orjson is several times faster on the per-chunk hot path; the standard
library is the fallback so that it stays optional.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

_orjson: ModuleType | None
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    _orjson = None


def loads(data: bytes | str) -> Any:
    """
    Parse a JSON document.

    @raise ValueError: If C{data} is not valid JSON (or not valid UTF-8).
    """
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except ValueError:
            # orjson refuses what the standard library takes, such as an
            # escaped lone surrogate; only a document both refuse is invalid.
            pass
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """
    Serialise C{value} as compact UTF-8 JSON.
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(value)
        except TypeError:
            pass  # e.g. a lone surrogate: the stdlib escapes it
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8"
        )
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")
