"""
Loading the streaming fixtures: raw SSE transcripts in both providers'
formats, with the results expected from them.

They live in C{tests/fixtures}, or wherever C{PYLON_FIXTURES} points.  A
missing directory is an error, never a skip: tests that silently pass without
their data are worse than failing ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES_ENV", "fixture_names", "fixtures_dir", "load_fixture"]

#: The environment variable that overrides where the fixtures are.
FIXTURES_ENV = "PYLON_FIXTURES"


def fixtures_dir() -> Path:
    """
    Find the fixtures directory.

    @return: C{$PYLON_FIXTURES} if set, else C{tests/fixtures}.
    @raise FileNotFoundError: If that directory does not exist.
    """
    override = os.environ.get(FIXTURES_ENV)
    if override:
        path = Path(override)
    else:
        path = Path(__file__).resolve().parent / "fixtures"
    if not path.is_dir():
        raise FileNotFoundError(
            f"streaming fixtures not found at {path}: restore tests/fixtures "
            f"or set {FIXTURES_ENV}"
        )
    return path


def fixture_names() -> list[str]:
    """
    List the fixtures that have both a C{.sse} and a C{.json} file.

    @return: The sorted fixture names (without suffix).
    @raise FileNotFoundError: If the directory is missing, holds no
        fixtures, or a C{.sse} file has no C{.json} beside it.
    """
    directory = fixtures_dir()
    names = sorted(p.stem for p in directory.glob("*.sse"))
    if not names:
        raise FileNotFoundError(f"no *.sse fixtures in {directory}")
    for name in names:
        if not (directory / f"{name}.json").is_file():
            raise FileNotFoundError(f"fixture {name}.sse has no {name}.json")
    return names


def load_fixture(name: str) -> tuple[bytes, dict[str, Any]]:
    """
    Load one fixture.

    @param name: The fixture name, without suffix.
    @return: The raw C{.sse} bytes and the parsed C{.json} document.
    @raise FileNotFoundError: If the fixture is missing.
    """
    directory = fixtures_dir()
    raw = (directory / f"{name}.sse").read_bytes()
    expected = json.loads((directory / f"{name}.json").read_text("utf-8"))
    return raw, expected
