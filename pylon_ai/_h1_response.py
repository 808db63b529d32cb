"""
The reply of the lean HTTP/1.1 client (see L{pylon_ai._h1}): its head parsed,
the response object a request gives, and the transport its body's reader sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import implementer

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.web.http_headers import Headers

if TYPE_CHECKING:
    from pylon_ai._h1_connection import H1Connection


class ProtocolError(Exception):
    """
    The server's reply is not HTTP/1.1 this client can read.
    """


class LeanResponse:
    """
    A reply, as C{IResponse} has it: C{code}, C{phrase}, C{version},
    C{length}, C{headers} and L{deliverBody}.
    """

    def __init__(
        self,
        connection: H1Connection,
        version: tuple[bytes, int, int],
        code: int,
        phrase: bytes,
        raw: list[tuple[bytes, bytes]],
        length: int | None,
    ) -> None:
        self._connection = connection
        self.version = version
        self.code = code
        self.phrase = phrase
        self.length = length
        self._raw = raw
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """
        The reply's headers (built on first use).
        """
        if self._headers is None:
            headers = Headers()
            for name, value in self._raw:
                headers.addRawHeader(name, value)
            self._headers = headers
        return self._headers

    def raw_header(self, name: bytes) -> bytes | None:
        """
        The first value of a header, without building L{headers}.

        @param name: The name, in lower case.
        """
        for key, value in self._raw:
            if key == name:
                return value
        return None

    def deliverBody(self, protocol: Protocol) -> None:
        """
        Give the body to C{protocol}: its C{dataReceived} gets the body one
        read at a time and its C{connectionLost} the end (L{ResponseDone},
        L{PotentialDataLoss} for a body that ends with the connection, or
        L{ResponseFailed}).  Its transport pauses, resumes or stops the
        body.
        """
        self._connection.deliver(protocol)


@implementer(IPushProducer)
class _BodyTransport:
    # What a body protocol sees as its transport, until its body ended:
    # then the connection may carry the next request, which a late pause or
    # stop from this reader must not touch (Twisted's stopProxying).

    def __init__(self, connection: H1Connection) -> None:
        self._connection: H1Connection | None = connection

    def detach(self) -> None:
        self._connection = None

    def pauseProducing(self) -> None:
        connection = self._connection
        if connection is not None and connection.transport is not None:
            connection.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        connection = self._connection
        if connection is not None and connection.transport is not None:
            connection.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        if self._connection is not None:
            self._connection.abandon()

    def loseConnection(self) -> None:
        self.stopProducing()


def _parse_head(
    head: bytes,
) -> tuple[tuple[bytes, int, int], int, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    minor = status[0][7:]
    if minor not in (b"0", b"1"):
        raise ProtocolError(f"unknown HTTP version {status[0][:20]!r}")
    code_text = status[1]
    if len(code_text) != 3 or not code_text.isdigit():
        raise ProtocolError(f"bad status code {code_text[:20]!r}")
    raw: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        raw.append((name.lower(), value.strip(b" \t")))
    phrase = status[2] if len(status) > 2 else b""
    return (b"HTTP", 1, int(minor)), int(code_text), phrase, raw
