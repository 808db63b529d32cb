"""
The messages of C{/v1/ws}: what a client may send, and the errors that answer
a message that cannot be served.

Every message is a JSON object with a C{type}.  The client sends C{auth},
C{completion} and C{cancel}; the service answers with C{auth_ok}, C{chunk},
C{done}, C{error} and C{cancelled}, each reply carrying the C{id} of the
completion it belongs to.  The protocol is described in DESIGN.md.
"""

from __future__ import annotations

from typing import Any

from pylon_ai._json import loads
from pylon_ai.formats.errors import TranslationError
from pylon_ai.gateway._gateway import check_request

ROUTE = "/v1/ws"
#: Close code for a missing or wrong key sent in a message (policy violation).
CLOSE_POLICY = 1008
#: Close code when the service cannot go on with a socket (internal error).
CLOSE_INTERNAL = 1011
#: The longest request id accepted.
MAX_ID_LENGTH = 256

_COMPLETION_FIELDS = frozenset(
    ("type", "id", "model", "messages", "max_tokens", "temperature")
)


class _RequestError(Exception):
    """
    A client message that cannot be served; answered with an C{error}.
    """

    def __init__(self, message: str, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class _Unsent(Exception):
    """
    A chunk could not be sent to the client; raised to the upstream, which
    then stops.
    """


class _BadMessage(_RequestError):
    """
    A message that is not a JSON object with a known C{type}; counted in
    the metrics by C{reason}.
    """

    def __init__(
        self, message: str, reason: str, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = request_id


def _parse(payload: bytes) -> dict[str, Any]:
    """
    A client message as a dict with a string C{type}.

    @raise _BadMessage: If it is not one.
    """
    try:
        message = loads(payload)
    except ValueError:
        # Also what is not UTF-8 (a binary frame), nests too deeply, or
        # holds NaN.
        raise _BadMessage("the message is not valid JSON", "json") from None
    if not isinstance(message, dict):
        raise _BadMessage("a message must be a JSON object", "shape")
    raw_id = message.get("id")
    request_id = raw_id if isinstance(raw_id, str) else None
    kind = message.get("type")
    if not isinstance(kind, str):
        raise _BadMessage("a message needs a string type", "shape", request_id)
    if kind not in ("auth", "completion", "cancel"):
        raise _BadMessage(
            f"unknown message type {kind!r} (known: auth, completion, cancel)",
            "shape",
            request_id,
        )
    return message


def _request_body(message: dict[str, Any]) -> dict[str, Any]:
    """
    The OpenAI chat request for a C{completion} message.

    @raise _RequestError: If a field is missing or has the wrong type.
    """
    body: dict[str, Any] = {
        "model": message.get("model"),
        "messages": message.get("messages"),
        "stream": True,
    }
    for key in ("max_tokens", "temperature"):
        if message.get(key) is not None:
            body[key] = message[key]
    # The HTTP routes' checks, in one place.
    try:
        check_request("openai", body)
    except TranslationError as e:
        raise _RequestError(e.message) from None
    return body
