"""
The intake's one-pass path: a request that arrives whole in one read is
taken without Twisted's line-by-line parser, and a route sees exactly what
Twisted's parser would have given it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._intake import GatewayChannel, split_request
from pylon_ai.gateway._server import _channel, make_site

try:
    from tests._service import Hold, WriteRecorder
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import Hold, WriteRecorder  # type: ignore[no-redef]

POST = (
    b"POST /hold HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Authorization: Bearer k\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 7\r\n"
    b"\r\n"
    b'{"a":1}'
)


class SplitRequestTests(SynchronousTestCase):
    """
    L{split_request} takes one whole plain request and nothing else.
    """

    def test_whole(self) -> None:
        self.assertEqual(
            split_request(POST),
            (
                b"POST",
                b"/hold",
                [
                    (b"Host", b"127.0.0.1"),
                    (b"Authorization", b"Bearer k"),
                    (b"Content-Type", b"application/json"),
                    (b"Content-Length", b"7"),
                ],
                b'{"a":1}',
            ),
        )

    def test_no_body(self) -> None:
        self.assertEqual(
            split_request(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"),
            (b"GET", b"/healthz", [(b"Host", b"a")], b""),
        )

    def test_value_whitespace_stripped(self) -> None:
        whole = split_request(b"GET / HTTP/1.1\r\nX-A: \t v w \t\r\n\r\n")
        assert whole is not None
        self.assertEqual(whole[2], [(b"X-A", b"v w")])

    def test_left_to_twisted(self) -> None:
        """
        Everything but one whole plain request gives L{None}.
        """
        cases = {
            "head not all in": POST[:30],
            "body not all in": POST[:-1],
            "a second request after": POST + b"GET / HTTP/1.1\r\n\r\n",
            "bytes after the body": POST + b"x",
            "HTTP/1.0": POST.replace(b"HTTP/1.1", b"HTTP/1.0"),
            "no version": b"GET /\r\n\r\n",
            "two spaces": b"GET  / HTTP/1.1\r\n\r\n",
            "bad method": b"G(T / HTTP/1.1\r\n\r\n",
            "space in target": b"GET /a b HTTP/1.1\r\n\r\n",
            "control in target": b"GET /a\x01 HTTP/1.1\r\n\r\n",
            "folded header": b"GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n",
            "no colon": b"GET / HTTP/1.1\r\nX-A 1\r\n\r\n",
            "space in name": b"GET / HTTP/1.1\r\nX A: 1\r\n\r\n",
            "space before colon": b"GET / HTTP/1.1\r\nX-A : 1\r\n\r\n",
            "NUL in value": b"GET / HTTP/1.1\r\nX-A: 1\x002\r\n\r\n",
            "lone LF in value": b"GET / HTTP/1.1\r\nX-A: 1\n2\r\n\r\n",
            "chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n0\r\n\r\n",
            "expect": b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n"
            b"Content-Length: 0\r\n\r\n",
            "two lengths": b"POST / HTTP/1.1\r\nContent-Length: 1\r\n"
            b"content-length: 1\r\n\r\nx",
            "length not digits": b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "body with no length": b"POST / HTTP/1.1\r\n\r\nx",
        }
        for why, data in cases.items():
            self.assertIsNone(split_request(data), why)

    def test_head_too_long(self) -> None:
        data = b"GET / HTTP/1.1\r\nX-A: " + b"a" * 100 + b"\r\n\r\n"
        self.assertIsNotNone(split_request(data, max_head=200))
        self.assertIsNone(split_request(data, max_head=100))


class _Connection:
    """
    A gateway site's connection on a string transport, with a count of the
    lines Twisted's parser was given.
    """

    def __init__(
        self, max_body_bytes: int = 1 << 20, transport: StringTransport | None = None
    ) -> None:
        config = parse_config(
            {"server": {"api_keys": ["k"], "max_body_bytes": max_body_bytes}}, {}
        )
        site = make_site(Gateway(config, task.Clock()))
        self.hold = Hold()
        site.resource._routes[b"/hold"] = self.hold
        self.transport = transport or StringTransport()
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9))
        self.protocol.makeConnection(self.transport)
        self.channel = _channel(self.protocol)
        self.lines = 0
        line_received = self.channel.lineReceived

        def counting(line: bytes) -> None:
            self.lines += 1
            line_received(line)

        self.channel.lineReceived = counting

    def send(self, data: bytes, whole: bool) -> None:
        if whole:
            self.protocol.dataReceived(data)
        else:
            for i in range(len(data)):
                self.protocol.dataReceived(data[i : i + 1])


def _seen(request: Request) -> dict[str, Any]:
    # What a route can know of a request.
    assert request.content is not None
    return {
        "method": request.method,
        "uri": request.uri,
        "path": request.path,
        "args": request.args,
        "clientproto": request.clientproto,
        "headers": sorted(request.requestHeaders.getAllRawHeaders()),
        "body": request.content.read(),
        "host": request.getHost(),
        "persistent": request.channel.persistent,
    }


_DATE = re.compile(rb"Date: [^\r]*\r\n")

_tokens = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "-_.!#$%&'*+^`|~",
    min_size=1,
    max_size=12,
)
_values = st.binary(max_size=30).map(
    lambda b: bytes(c for c in b if c not in b"\x00\r\n").strip(b" \t")
)
_names_to_skip = {"content-length", "transfer-encoding", "expect", "connection"}


class OnePassTests(SynchronousTestCase):
    """
    A request in one read is taken in one pass; a route sees what Twisted's
    own parser, fed the same bytes one at a time, gives it.
    """

    def test_taken_in_one_pass(self) -> None:
        connection = _Connection()
        connection.send(POST, whole=True)
        self.assertEqual(connection.lines, 0)
        self.assertEqual(len(connection.hold.requests), 1)
        self.assertEqual(connection.hold.requests[0].content.read(), b'{"a":1}')  # type: ignore[union-attr]

    def test_byte_by_byte_goes_line_by_line(self) -> None:
        connection = _Connection()
        connection.send(POST, whole=False)
        self.assertEqual(connection.lines, 6)
        self.assertEqual(len(connection.hold.requests), 1)

    @settings(max_examples=60, deadline=None)
    @given(
        headers=st.lists(st.tuples(_tokens, _values), max_size=6),
        body=st.binary(max_size=40),
        query=st.sampled_from([b"", b"?a=1&b=%20x", b"?"]),
        close=st.booleans(),
    )
    def test_same_as_twisted(
        self,
        headers: list[tuple[str, bytes]],
        body: bytes,
        query: bytes,
        close: bool,
    ) -> None:
        head = b"POST /hold" + query + b" HTTP/1.1\r\nAuthorization: Bearer k\r\n"
        for name, value in headers:
            if name.lower() not in _names_to_skip:
                head += name.encode() + b": " + value + b"\r\n"
        if close:
            head += b"Connection: close\r\n"
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        fast, slow = _Connection(), _Connection()
        fast.send(data, whole=True)
        slow.send(data, whole=False)
        self.assertEqual(fast.lines, 0)
        self.assertGreater(slow.lines, 0)
        [one], [two] = fast.hold.requests, slow.hold.requests
        self.assertEqual(_seen(one), _seen(two))
        for request in (one, two):
            request.setHeader(b"content-type", b"text/plain")
            request.write(b"reply")
            request.finish()
        self.assertEqual(
            _DATE.sub(b"", fast.transport.value()),
            _DATE.sub(b"", slow.transport.value()),
        )
        self.assertEqual(fast.transport.disconnecting, close)
        self.assertEqual(slow.transport.disconnecting, close)

    def test_kept_alive(self) -> None:
        """
        Each request on a kept-alive connection takes the one-pass path.
        """
        connection = _Connection()
        for n in range(1, 4):
            connection.send(POST, whole=True)
            self.assertEqual(len(connection.hold.requests), n)
            connection.hold.requests[-1].finish()
        self.assertEqual(connection.lines, 0)
        self.assertEqual(connection.transport.value().count(b"200 OK"), 3)

    def test_pipelined(self) -> None:
        """
        Two requests in one read go to Twisted's parser, which serves the
        second once the first is answered.
        """
        connection = _Connection()
        connection.send(POST + POST, whole=True)
        self.assertEqual(len(connection.hold.requests), 1)
        connection.hold.requests[0].finish()
        self.assertEqual(len(connection.hold.requests), 2)
        self.assertGreater(connection.lines, 0)

    def test_while_a_request_is_served(self) -> None:
        """
        A whole request that comes while the previous one is still being
        answered waits for it, as Twisted's parser makes it.
        """
        connection = _Connection()
        connection.send(POST, whole=True)
        connection.send(POST, whole=True)
        self.assertEqual(len(connection.hold.requests), 1)
        connection.hold.requests[0].finish()
        self.assertEqual(len(connection.hold.requests), 2)

    def test_body_over_the_limit(self) -> None:
        """
        The body limit holds on the one-pass path: a 413, then the close.
        """
        connection = _Connection(max_body_bytes=5)
        connection.send(POST, whole=True)
        self.assertEqual(connection.hold.requests, [])
        self.assertTrue(connection.transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(connection.transport.disconnecting)

    def test_body_over_the_limit_in_the_route_shape(self) -> None:
        """
        The 413 has the error shape of the API the path names, as on
        Twisted's path.
        """
        for whole in (True, False):
            connection = _Connection(max_body_bytes=5)
            connection.send(POST.replace(b"/hold", b"/v1/messages"), whole=whole)
            body = connection.transport.value().split(b"\r\n\r\n", 1)[1]
            self.assertEqual(json.loads(body)["type"], "error", whole)
            self.assertEqual(json.loads(body)["error"]["type"], "request_too_large")

    def test_line_by_line_when_turned_off(self) -> None:
        """
        With C{one_pass} off (a Twisted whose parser state the one-pass
        path does not know), requests go line by line and are served.
        """
        connection = _Connection()
        connection.channel.one_pass = False
        connection.send(POST, whole=True)
        self.assertEqual(connection.lines, 6)
        self.assertEqual(len(connection.hold.requests), 1)

    def test_possible_with_this_twisted(self) -> None:
        self.assertTrue(GatewayChannel.one_pass)


class HeldHeadTests(SynchronousTestCase):
    """
    A reply's head goes out with its first body bytes, in one write; a
    reply with no body bytes still gets its head, at its end or before the
    connection closes.
    """

    def setUp(self) -> None:
        self.transport = WriteRecorder()
        self.connection = _Connection(transport=self.transport)

    def request(self, data: bytes = POST) -> Request:
        self.connection.send(data, whole=True)
        return self.connection.hold.requests[-1]

    def test_head_and_body_in_one_write(self) -> None:
        request = self.request()
        request.setHeader(b"content-length", b"5")
        request.write(b"hello")
        self.assertEqual(len(self.transport.writes), 1)
        self.assertTrue(self.transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(self.transport.writes[0].endswith(b"\r\n\r\nhello"))
        request.finish()
        self.assertEqual(len(self.transport.writes), 1)

    def test_chunked_first_event(self) -> None:
        request = self.request()
        request.write(b"data: 1\n\n")
        [write] = self.transport.writes
        self.assertIn(b"Transfer-Encoding: chunked\r\n", write)
        self.assertTrue(write.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n"))

    def test_no_body(self) -> None:
        request = self.request()
        request.setResponseCode(204)
        request.finish()
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 204 "))
        self.assertTrue(self.transport.value().endswith(b"\r\n\r\n"))

    def test_head_method(self) -> None:
        request = self.request(POST.replace(b"POST", b"HEAD", 1))
        request.setHeader(b"content-length", b"5")
        request.write(b"hello")
        request.finish()
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertNotIn(b"hello", self.transport.value())

    def test_close_after_the_head(self) -> None:
        request = self.request()
        request.write(b"")
        request.loseConnection()
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(self.transport.disconnecting)
