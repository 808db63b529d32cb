"""
Whole answers to a client request: a JSON body (built, or the upstream's
bytes as they came) or an error in the shape of the caller's API, each
written only if the client is still there.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from pylon_ai._json import dumps
from pylon_ai.gateway._apierrors import ApiError


def respond_json(
    request: Request,
    status: int,
    body: Any,
    headers: dict[bytes, bytes] | None = None,
) -> None:
    """
    Answer C{request} with a JSON body, unless the client already left.
    """
    if request.finished or request._disconnected:
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    request.write(dumps(body))
    request.finish()


def respond_raw_json(request: Request, body: bytes) -> None:
    """
    Answer C{request} with a 200 and a JSON body that is already bytes,
    unless the client already left.
    """
    if request.finished or request._disconnected:
        return
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def respond_error(
    request: Request, api: str, error: ApiError, extra: dict[bytes, bytes] | None = None
) -> None:
    """
    Answer with C{error} in the shape of C{api}.
    """
    headers = dict(extra or {})
    if error.retry_after is not None:
        headers[b"retry-after"] = error.retry_after.encode("ascii")
    respond_json(request, error.status, error.body(api), headers)
