"""
Responses tools for upstreams that lack them: namespace tools flattened into
plain function tools, hosted tools dropped (or refused).

A Responses client may group functions under a C{namespace} tool and gets
its calls back as C{function_call} items that name both.  Chat Completions
and Messages upstreams know only flat function names, so
L{adapt_request} renames every namespaced tool (and the calls of it in the
history) to a flat name, and the L{ToolNames} it returns maps the upstream's
flat names back for the reply encoders.

The flat name is C{NAMESPACE__NAME} when that is a valid function name
(letters, digits, C{_} and C{-}, at most 64 characters) and unused;
otherwise a sanitised, shortened form with a hash of the pair.  The mapping,
not the spelling, is what reverses it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping

from attrs import evolve, field, frozen

from pylon_ai.formats.canonical import (
    CanonicalRequest,
    HostedTool,
    Message,
    Part,
    Tool,
    ToolCallPart,
    ToolChoice,
)
from pylon_ai.formats.errors import TranslationError

__all__ = ["Adapted", "ToolNames", "adapt_request", "flat_name"]

_FORMAT = "responses"
_VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def flat_name(namespace: str, name: str, taken: frozenset[str] = frozenset()) -> str:
    """
    The function name an upstream sees for C{name} in C{namespace}.

    @param taken: Names of plain (namespace-less) tools it must not equal.
    """
    plain = f"{namespace}__{name}"
    if _VALID.fullmatch(plain) and plain not in taken:
        return plain
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:10]
    return _INVALID_CHAR.sub("_", plain)[:53] + "_" + digest


@frozen
class ToolNames:
    """
    The client's names of the tools an upstream knows by flat names.

    @ivar namespaced: Flat name -> (namespace, name) for every namespaced
        tool; any other name is the client's own.
    """

    namespaced: Mapping[str, tuple[str, str]] = field(factory=dict)

    def client_name(self, name: str) -> tuple[str | None, str]:
        """
        The namespace (or L{None}) and name the client knows a tool by.

        @param name: The name the upstream used.
        """
        found = self.namespaced.get(name)
        if found is None:
            return None, name
        return found


@frozen
class Adapted:
    """
    A decoded Responses request made fit for a Chat Completions or Messages
    upstream.

    @ivar request: The request to encode.
    @ivar names: The map from flat tool names back to the client's, for
        L{encode_response<pylon_ai.formats.responses.encode_response>} and
        L{ResponsesStreamEncoder<pylon_ai.formats.responses.ResponsesStreamEncoder>}.
    @ivar dropped: The types of the hosted tools left out, in order, for a
        log line (Codex sends C{web_search} with every request).
    """

    request: CanonicalRequest
    names: ToolNames
    dropped: tuple[str, ...]


def adapt_request(req: CanonicalRequest, *, strict_tools: bool = False) -> Adapted:
    """
    Flatten namespace tools and leave out the Responses hosted tools, for an
    upstream that speaks another format.

    A tool choice that named a dropped tool, or required a call when only
    hosted tools were offered, is dropped with them.

    @param strict_tools: Refuse hosted tools instead of dropping them.
    @raise TranslationError: With C{strict_tools}, naming the hosted tools.
    """
    hosted = [t for t in req.tools if isinstance(t, HostedTool) and t.format == _FORMAT]
    if hosted and strict_tools:
        kinds = ", ".join(repr(t.kind) for t in hosted)
        raise TranslationError(
            f"Hosted tools ({kinds}) are not available on this model.",
            hosted[0].origin or "tools",
        )
    taken = frozenset(
        t.name for t in req.tools if isinstance(t, Tool) and t.namespace is None
    )
    names: dict[str, tuple[str, str]] = {}

    def rename(namespace: str | None, name: str) -> str:
        if namespace is None:
            return name
        flat = flat_name(namespace, name, taken)
        names[flat] = (namespace, name)
        return flat

    tools: list[Tool | HostedTool] = []
    for tool in req.tools:
        if isinstance(tool, Tool):
            tools.append(evolve(tool, name=rename(tool.namespace, tool.name)))
        elif tool.format != _FORMAT:
            tools.append(tool)
    messages = tuple(_rename_calls(msg, rename) for msg in req.messages)
    choice = req.tool_choice
    if choice is not None and not tools:
        choice = None
    elif choice is not None and choice.mode == "tool":
        offered = {t.name for t in tools if isinstance(t, Tool)}
        if choice.name not in offered:
            flat = _namespaced_choice(choice, tools, names)
            if flat is not None:
                choice = ToolChoice("tool", flat)
    adapted = evolve(req, tools=tuple(tools), messages=messages, tool_choice=choice)
    return Adapted(adapted, ToolNames(dict(names)), tuple(t.kind for t in hosted))


def _namespaced_choice(
    choice: ToolChoice,
    tools: list[Tool | HostedTool],
    names: dict[str, tuple[str, str]],
) -> str | None:
    """
    The flat name of the one namespaced tool a C{function} tool choice
    names, if exactly one matches.
    """
    matches = [
        t.name
        for t in tools
        if isinstance(t, Tool) and names.get(t.name, (None, None))[1] == choice.name
    ]
    return matches[0] if len(matches) == 1 else None


def _rename_calls(msg: Message, rename: Callable[[str | None, str], str]) -> Message:
    if not any(isinstance(p, ToolCallPart) and p.namespace for p in msg.parts):
        return msg
    parts: list[Part] = []
    for part in msg.parts:
        if isinstance(part, ToolCallPart) and part.namespace is not None:
            part = evolve(part, name=rename(part.namespace, part.name))
        parts.append(part)
    return evolve(msg, parts=tuple(parts))
