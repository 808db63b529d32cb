"""
JSON in and out, through orjson when it is installed.

orjson is several times faster on the per-chunk hot path; the standard
library is the fallback so that it stays optional.
"""

from __future__ import annotations

import json
from typing import Any

from types import ModuleType

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
        return _orjson.loads(data)
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """
    Serialise C{value} as compact UTF-8 JSON.
    """
    if _orjson is not None:
        return _orjson.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
