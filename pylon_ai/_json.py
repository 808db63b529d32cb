"""
JSON in and out, through orjson when it is installed.

orjson is several times faster on the per-chunk hot path; the standard
library is the fallback so that it stays optional.
"""

from __future__ import annotations

import importlib
import json
from types import ModuleType
from typing import Any


def _import_orjson() -> ModuleType | None:
    try:
        return importlib.import_module("orjson")
    except ImportError:  # pragma: no cover - exercised where orjson is absent
        return None


_orjson = _import_orjson()


def _refuse_constant(name: str) -> Any:
    # The standard library takes NaN and Infinity, which are not JSON: an
    # upstream would get them as such.
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes | str) -> Any:
    """
    Parse a JSON document.

    @raise ValueError: If C{data} is not valid JSON (or not valid UTF-8),
        holds C{NaN} or C{Infinity}, or nests too deeply.
    """
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except ValueError:
            # orjson refuses what the standard library takes, such as an
            # escaped lone surrogate; only a document both refuse is invalid.
            pass
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


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
