"""
The small Redis client (L{pylon_ai.gateway._resp}): the RESP2 encoder and
parser as pure functions, one connection's protocol on a L{StringTransport}
(any split of the replies, garbage, replies nobody asked for, timeouts,
losses), the client's connection life on a fake endpoint and a L{Clock}
(set-up, back-off, disconnection), and then against a real C{redis-server}
(scripts by SHA1 with the C{NOSCRIPT} fallback, C{AUTH}, C{SELECT}, a
restart).  Last, the shared state's C{FINISH} batching: the requests that
end in one reactor turn cost one round trip.

The real servers come from L{tests.test_redis.RedisServer}: skipped with a
message when C{redis-server} is missing, except in CI.
"""

from __future__ import annotations

import hashlib
import itertools
import signal
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface import provider

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from pylon_ai.gateway import _resp
from pylon_ai.gateway._config import redis_address
from pylon_ai.gateway._redis import FINISH, RedisState, _hashed
from pylon_ai.gateway._resp import (
    RedisClient,
    RedisError,
    RedisProtocol,
    RedisUnavailable,
    _Incomplete,
    encode,
    parse,
)
from pylon_ai.gateway._state import KeyLimits

try:
    from tests.test_redis import (
        WAIT,
        RedisServer,
        RedisTestCase,
        Warnings,
        free_port,
        shared,
        until,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from test_redis import (  # type: ignore[no-redef]
        WAIT,
        RedisServer,
        RedisTestCase,
        Warnings,
        free_port,
        shared,
        until,
    )

RIGHT_PASSWORD = "right-horse-battery-41"
WRONG_PASSWORD = "wrong-staple-9f3c"


class EncodeTests(SynchronousTestCase):
    """
    L{encode}: one command as a RESP array of bulk strings.
    """

    def test_kinds(self) -> None:
        """
        Bytes go as they are, text as UTF-8 (the length counts bytes),
        numbers as their decimal text.
        """
        self.assertEqual(
            encode([b"EVALSHA", "h\u00e9", 12, -3, 0.5, b""]),
            b"*6\r\n$7\r\nEVALSHA\r\n$3\r\nh\xc3\xa9\r\n$2\r\n12\r\n"
            b"$2\r\n-3\r\n$3\r\n0.5\r\n$0\r\n\r\n",
        )

    def test_binary_safe(self) -> None:
        """
        A CRLF inside an argument is data: the length frames it.
        """
        self.assertEqual(encode([b"a\r\nb"]), b"*1\r\n$4\r\na\r\nb\r\n")

    def test_refused(self) -> None:
        """
        A bool or None is a mistake, not C{"True"} or C{"None"}.
        """
        for value in (True, False, None, [1], object()):
            with self.assertRaises(TypeError):
                encode([b"SET", b"k", value])


def error_text(value: object) -> object:
    """
    C{value} with every L{RedisError} as C{("error", message)}, so that
    replies compare by value.
    """
    if isinstance(value, RedisError):
        return ("error", str(value))
    if isinstance(value, list):
        return [error_text(item) for item in value]
    return value


class ParseTests(SynchronousTestCase):
    """
    L{parse}: one reply at a position, and where the next one starts.
    """

    def whole(self, data: bytes) -> Any:
        reply, end = parse(data, 0)
        self.assertEqual(end, len(data))
        return reply

    def test_integers(self) -> None:
        self.assertEqual(self.whole(b":0\r\n"), 0)
        self.assertEqual(self.whole(b":-42\r\n"), -42)
        self.assertEqual(self.whole(b":9223372036854775807\r\n"), 2**63 - 1)

    def test_bulk_strings(self) -> None:
        """
        Bulk strings are bytes, framed by their length (so a CRLF inside is
        data); C{$0} is empty and C{$-1} is null.
        """
        self.assertEqual(self.whole(b"$5\r\nhello\r\n"), b"hello")
        self.assertEqual(self.whole(b"$4\r\na\r\nb\r\n"), b"a\r\nb")
        self.assertEqual(self.whole(b"$0\r\n\r\n"), b"")
        self.assertIsNone(self.whole(b"$-1\r\n"))

    def test_simple_strings(self) -> None:
        self.assertEqual(self.whole(b"+OK\r\n"), b"OK")
        self.assertEqual(self.whole(b"+\r\n"), b"")

    def test_error(self) -> None:
        """
        An error reply is returned (not raised) as a L{RedisError}.
        """
        reply = self.whole(b"-NOSCRIPT No matching script.\r\n")
        self.assertIsInstance(reply, RedisError)
        self.assertEqual(str(reply), "NOSCRIPT No matching script.")

    def test_arrays(self) -> None:
        """
        Arrays nest, hold any reply (errors included), and may be empty or
        null.
        """
        reply = self.whole(
            b"*4\r\n*2\r\n:1\r\n$1\r\na\r\n*-1\r\n*0\r\n*2\r\n$-1\r\n-ERR x\r\n"
        )
        self.assertEqual(
            error_text(reply), [[1, b"a"], None, [], [None, ("error", "ERR x")]]
        )
        self.assertIsNone(self.whole(b"*-1\r\n"))

    def test_position(self) -> None:
        """
        Parsing starts at C{pos} and returns where the next reply starts.
        """
        data = b":1\r\n$2\r\nab\r\n+OK\r\n"
        replies = []
        pos = 0
        while pos < len(data):
            reply, pos = parse(data, pos)
            replies.append(reply)
        self.assertEqual(replies, [1, b"ab", b"OK"])

    def test_incomplete(self) -> None:
        """
        Every strict prefix of a reply is incomplete, not a shorter reply.
        """
        data = b"*3\r\n$3\r\nabc\r\n*1\r\n:7\r\n$-1\r\n"
        for end in range(len(data)):
            with self.assertRaises(_Incomplete, msg=repr(data[:end])):
                parse(data[:end], 0)
        self.assertEqual(parse(data, 0), ([b"abc", [7], None], len(data)))

    def test_not_resp(self) -> None:
        for data in (b"?what\r\n", b":twelve\r\n", b"$x\r\n", b"*y\r\n", b"\r\n"):
            with self.assertRaises(ValueError, msg=repr(data)):
                parse(data, 0)

    def test_too_large(self) -> None:
        """
        A bulk string announced larger than L{_resp.MAX_REPLY}, or a line
        that goes on past it, is refused before it arrives.
        """
        self.patch(_resp, "MAX_REPLY", 10)
        with self.assertRaises(ValueError):
            parse(b"$11\r\n", 0)
        with self.assertRaises(ValueError):
            parse(b"+" + b"a" * 20, 0)
        self.assertEqual(parse(b"$10\r\n0123456789\r\n", 0)[0], b"0123456789")


# A reply as (its wire bytes, what the command's Deferred should give).
_text = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=12,
)
_leaves = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(lambda n: (b":%d\r\n" % n, n)),
    st.binary(max_size=30).map(lambda b: (b"$%d\r\n%s\r\n" % (len(b), b), b)),
    st.just((b"$-1\r\n", None)),
    st.just((b"*-1\r\n", None)),
    _text.map(lambda s: (b"+" + s.encode() + b"\r\n", s.encode())),
    _text.map(lambda s: (b"-ERR " + s.encode() + b"\r\n", ("error", "ERR " + s))),
)
_replies = st.recursive(
    _leaves,
    lambda items: st.lists(items, max_size=4).map(
        lambda xs: (
            b"*%d\r\n" % len(xs) + b"".join(wire for wire, _ in xs),
            [value for _, value in xs],
        )
    ),
    max_leaves=12,
)


def connected_protocol() -> tuple[RedisProtocol, StringTransport]:
    protocol = RedisProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def outcome(d: Deferred[Any], into: list[object]) -> None:
    """
    Put C{("ok", reply)} or C{("failed", error)} into C{into} once C{d}
    fires.
    """
    d.addCallbacks(
        lambda reply: into.append(("ok", error_text(reply))),
        lambda f: into.append(("failed", error_text(f.value))),
    )


class ProtocolTests(SynchronousTestCase):
    """
    L{RedisProtocol}: replies go to the commands in order, whatever the
    reads; anything that breaks the order ends the connection.
    """

    @settings(max_examples=300, deadline=None)
    @given(replies=st.lists(_replies, min_size=1, max_size=6), data=st.data())
    def test_any_split(
        self, replies: list[tuple[bytes, object]], data: st.DataObject
    ) -> None:
        """
        The replies to several commands, cut anywhere into reads: each
        command gets its own reply, in order, as soon as all of it is there
        (an error reply fails its command with L{RedisError}).
        """
        protocol, transport = connected_protocol()
        got: list[object] = []
        for i in range(len(replies)):
            outcome(protocol.command(encode([b"ECHO", i])), got)
        self.assertEqual(
            transport.value(),
            b"".join(encode([b"ECHO", i]) for i in range(len(replies))),
        )
        stream = b"".join(wire for wire, _ in replies)
        ends = []
        for wire, _ in replies:
            ends.append((ends[-1] if ends else 0) + len(wire))
        cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1))))
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            protocol.dataReceived(stream[start:end])
            self.assertEqual(len(got), sum(1 for e in ends if e <= end))
        expected = [
            ("failed", value) if isinstance(value, tuple) else ("ok", value)
            for _, value in replies
        ]
        self.assertEqual(got, expected)
        self.assertFalse(transport.disconnecting)

    def test_garbage_aborts(self) -> None:
        """
        Bytes that are not RESP end the connection: nothing after them can
        be matched to a command.
        """
        for garbage in (b"?\r\n", b":1x\r\n", b"HTTP/1.1 400 Bad Request\r\n"):
            protocol, transport = connected_protocol()
            d = protocol.command(encode([b"PING"]))
            protocol.dataReceived(garbage)
            self.assertTrue(transport.disconnected, garbage)
            self.assertNoResult(d)
            protocol.connectionLost(Failure(ConnectionLost()))
            self.failureResultOf(d, RedisUnavailable)

    def test_unasked_reply_aborts(self) -> None:
        """
        A reply nobody asked for ends the connection, and so does a second
        reply to one command.
        """
        protocol, transport = connected_protocol()
        protocol.dataReceived(b"+OK\r\n")
        self.assertTrue(transport.disconnected)

        protocol, transport = connected_protocol()
        d = protocol.command(encode([b"PING"]))
        protocol.dataReceived(b"+PONG\r\n")
        self.assertEqual(self.successResultOf(d), b"PONG")
        self.assertFalse(transport.disconnected)
        protocol.dataReceived(b"+PONG\r\n")
        self.assertTrue(transport.disconnected)

    def test_cancelled_reply_skipped(self) -> None:
        """
        A command cancelled while it waits (a timeout) has its reply read
        and dropped: the next command gets its own reply, not that one.
        """
        protocol, transport = connected_protocol()
        first = protocol.command(encode([b"GET", b"a"]))
        second = protocol.command(encode([b"GET", b"b"]))
        first.cancel()
        self.failureResultOf(first, CancelledError)
        protocol.dataReceived(b"$1\r\na\r\n")
        self.assertNoResult(second)
        protocol.dataReceived(b"$1\r\nb\r\n")
        self.assertEqual(self.successResultOf(second), b"b")
        self.assertFalse(transport.disconnected)

    def test_connection_lost(self) -> None:
        """
        Every command still waiting fails with L{RedisUnavailable} when the
        connection is lost, and C{lost} fires.
        """
        protocol, _ = connected_protocol()
        answered = protocol.command(encode([b"PING"]))
        waiting = [protocol.command(encode([b"PING"])) for _ in range(3)]
        protocol.dataReceived(b"+PONG\r\n")
        self.assertEqual(self.successResultOf(answered), b"PONG")
        self.assertNoResult(protocol.lost)
        protocol.connectionLost(Failure(ConnectionDone()))
        for d in waiting:
            self.failureResultOf(d, RedisUnavailable)
        self.assertIsNone(self.successResultOf(protocol.lost))

    def test_command_after_lost(self) -> None:
        """
        A command sent on a connection that was lost (say, from an errback
        of a command the loss failed) fails at once: nothing will ever
        answer it.
        """
        protocol, _ = connected_protocol()
        late: list[Deferred[Any]] = []
        d = protocol.command(encode([b"PING"]))
        d.addErrback(lambda f: late.append(protocol.command(encode([b"PING"]))))
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(late[0], RedisUnavailable)
        self.failureResultOf(protocol.command(encode([b"PING"])), RedisUnavailable)

    def test_not_connected(self) -> None:
        self.failureResultOf(RedisProtocol().command(b"x"), RedisUnavailable)

    def test_too_many_waiting(self) -> None:
        """
        Past L{_resp.MAX_WAITING} commands without a reply, Redis has
        stopped answering: the connection is aborted and the command fails.
        """
        self.patch(_resp, "MAX_WAITING", 3)
        protocol, transport = connected_protocol()
        waiting = [protocol.command(encode([b"PING"])) for _ in range(3)]
        for d in waiting:
            self.assertNoResult(d)
        self.assertFalse(transport.disconnected)
        self.failureResultOf(protocol.command(encode([b"PING"])), RedisUnavailable)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), encode([b"PING"]) * 3)
        protocol.connectionLost(Failure(ConnectionLost()))
        for d in waiting:
            self.failureResultOf(d, RedisUnavailable)


class FakeEndpoint:
    """
    An endpoint whose connections are L{StringTransport}s, or refused.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.refuse = False
        #: When each connection was asked for.
        self.attempts: list[float] = []
        self.protocols: list[RedisProtocol] = []

    def connect(self, factory: Factory) -> Deferred[RedisProtocol]:
        self.attempts.append(self.clock.seconds())
        if self.refuse:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        assert isinstance(protocol, RedisProtocol)
        protocol.makeConnection(StringTransport())
        self.protocols.append(protocol)
        return succeed(protocol)

    def transport(self, i: int = -1) -> StringTransport:
        transport = self.protocols[i].transport
        assert isinstance(transport, StringTransport)
        return transport


@provider(ILogObserver)
class Events:
    """
    Every log event while a test runs.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def refused(self) -> list[LogEvent]:
        return [
            e
            for e in self.events
            if "refused the connection's set-up" in e.get("log_format", "")
        ]

    def text(self) -> str:
        """
        All the events as a log would show them, and their fields.
        """
        return "\n".join(f"{formatEvent(e)} {e!r}" for e in self.events)


def events(case: SynchronousTestCase) -> Events:
    observer = Events()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def next_call(clock: Clock) -> None:
    """
    Run the clock to its next delayed call.
    """
    call = min(clock.getDelayedCalls(), key=lambda c: c.getTime())
    clock.advance(call.getTime() - clock.seconds())


class ClientConnectionTests(SynchronousTestCase):
    """
    L{RedisClient}'s connection on a fake endpoint: set-up, back-off and
    disconnection, on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint(self.clock)
        self.changes: list[bool] = []

    def client(self, **kwargs: Any) -> RedisClient:
        return RedisClient(
            self.clock, self.endpoint, on_change=self.changes.append, **kwargs
        )

    def test_set_up_first(self) -> None:
        """
        C{AUTH} and C{SELECT} go first, in one write; the client is
        C{connected} (and commands go out) only once both were answered.
        """
        client = self.client(password=RIGHT_PASSWORD, db=3)
        transport = self.endpoint.transport()
        self.assertEqual(
            transport.value(),
            encode([b"AUTH", RIGHT_PASSWORD]) + encode([b"SELECT", 3]),
        )
        self.assertFalse(client.connected)
        self.failureResultOf(client.eval("return 1", [], []), RedisUnavailable)
        self.endpoint.protocols[0].dataReceived(b"+OK\r\n")
        self.assertFalse(client.connected)
        self.endpoint.protocols[0].dataReceived(b"+OK\r\n")
        self.assertTrue(client.connected)
        self.assertEqual(self.changes, [True])

    def test_refused_set_up(self) -> None:
        """
        A refused C{AUTH}: never C{connected}, one warning per attempt that
        does not show the password, the connection closed and tried again.
        """
        log = events(self)
        client = self.client(password=WRONG_PASSWORD)
        protocol = self.endpoint.protocols[0]
        protocol.dataReceived(
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        )
        self.assertFalse(client.connected)
        self.assertTrue(self.endpoint.transport().disconnecting)
        self.assertEqual(len(log.refused()), 1)
        self.assertIn("WRONGPASS", log.text())
        self.assertNotIn(WRONG_PASSWORD, log.text())
        protocol.connectionLost(Failure(ConnectionDone()))
        next_call(self.clock)
        self.assertEqual(len(self.endpoint.protocols), 2)
        self.assertEqual(self.changes, [])
        # Refused again: still the one line (it is retried every second).
        self.endpoint.protocols[1].dataReceived(
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        )
        self.assertFalse(client.connected)
        self.assertEqual(len(log.refused()), 1)

    def test_refused_auth_then_select(self) -> None:
        """
        C{AUTH} refused but C{SELECT} accepted: the set-up failed all the
        same (not only the last answer counts).
        """
        log = events(self)
        client = self.client(password=WRONG_PASSWORD, db=99)
        self.endpoint.protocols[0].dataReceived(
            b"-ERR AUTH <password> called without any password configured\r\n+OK\r\n"
        )
        self.assertFalse(client.connected)
        self.assertEqual(len(log.refused()), 1)
        self.assertIn("without any password", log.text())

    def test_back_off(self) -> None:
        """
        Refused connections are tried again after 0.1 s, doubling up to
        1 s; once connected the delay starts at 0.1 s again.
        """
        self.endpoint.refuse = True
        client = self.client()
        while len(self.endpoint.attempts) < 7:
            next_call(self.clock)
        attempts = self.endpoint.attempts
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0], strict=True):
            self.assertAlmostEqual(gap, expected)
        self.endpoint.refuse = False
        next_call(self.clock)
        self.assertTrue(client.connected)
        lost_at = self.clock.seconds()
        self.endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
        self.assertFalse(client.connected)
        self.assertEqual(self.changes, [True, False])
        next_call(self.clock)
        self.assertAlmostEqual(self.endpoint.attempts[-1] - lost_at, 0.1)
        self.assertTrue(client.connected)

    def test_disconnect_while_retrying(self) -> None:
        """
        C{disconnect()} while a retry is pending cancels it: no delayed
        call is left, and no connection is made after.
        """
        self.endpoint.refuse = True
        client = self.client()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(client.disconnect())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.failureResultOf(client.eval("return 1", [], []), RedisUnavailable)

    def test_disconnect_during_set_up(self) -> None:
        """
        C{disconnect()} while C{AUTH} waits for its answer closes that
        connection too (else it stays open for good), and fires once it is
        closed; the answer coming after does not make it C{connected}.
        """
        client = self.client(password=RIGHT_PASSWORD)
        protocol = self.endpoint.protocols[0]
        done = client.disconnect()
        self.assertTrue(self.endpoint.transport().disconnecting)
        protocol.dataReceived(b"+OK\r\n")
        self.assertFalse(client.connected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.changes, [])

    def test_command_from_errback_of_lost(self) -> None:
        """
        A command sent from the errback of one that the connection's loss
        failed fails at once rather than waiting forever on the dead
        connection.
        """
        client = self.client()
        self.assertTrue(client.connected)
        late: list[Deferred[Any]] = []
        first = client.eval("return 1", [], [])
        first.addErrback(lambda f: late.append(client.eval("return 2", [], [])))
        self.endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(late[0], RedisUnavailable)


class RespTestCase(RedisTestCase):
    """
    Clients of a real C{redis-server}, closed after the test.
    """

    def client(self, server: RedisServer, **kwargs: Any) -> RedisClient:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=5)
        client = RedisClient(reactor, endpoint, **kwargs)
        self.addCleanup(client.disconnect)
        return client

    async def connected(self, server: RedisServer, **kwargs: Any) -> RedisClient:
        client = self.client(server, **kwargs)
        await until(lambda: client.connected, "the connection to Redis")
        return client

    async def raw(self, server: RedisServer) -> RedisProtocol:
        """
        A plain connection to ask Redis what the client did.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=5)
        protocol = await connectProtocol(endpoint, RedisProtocol())

        def close() -> Deferred[None]:
            assert protocol.transport is not None
            protocol.transport.loseConnection()
            return protocol.lost

        self.addCleanup(close)
        return protocol

    async def calls(self, raw: RedisProtocol) -> dict[str, int]:
        """
        How many times each command ran, by C{INFO commandstats}.
        """
        info = await raw.command(encode([b"INFO", b"commandstats"]))
        calls = {}
        for line in info.decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, fields = line[len("cmdstat_") :].partition(":")
                calls[name] = int(
                    dict(f.split("=") for f in fields.split(","))["calls"]
                )
        return calls

    def retries(self, client: RedisClient) -> list[Any]:
        return [
            call
            for call in reactor.getDelayedCalls()
            if getattr(call.func, "__self__", None) is client
        ]


SCRIPT = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"


class ClientTests(RespTestCase):
    """
    L{RedisClient} against a real C{redis-server}.
    """

    async def test_eval_learns_sha(self) -> None:
        """
        The first call of a script sends its text (C{EVAL}), the next ones
        its SHA1 (C{EVALSHA}), which Redis then knows.
        """
        server = await self.redis()
        client = await self.connected(server)
        raw = await self.raw(server)
        self.assertEqual(await client.eval(SCRIPT, ["k"], [b"v", 41]), [b"k", b"v", 42])
        self.assertEqual(await client.eval(SCRIPT, ["k"], ["w", 1]), [b"k", b"w", 2])
        calls = await self.calls(raw)
        self.assertEqual((calls.get("eval"), calls.get("evalsha")), (1, 1))
        sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        self.assertEqual(await raw.command(encode([b"SCRIPT", b"EXISTS", sha])), [1])

    async def test_noscript_fallback(self) -> None:
        """
        After C{SCRIPT FLUSH} the next call still succeeds: the C{NOSCRIPT}
        error makes the client send the text again, once; then the SHA1
        serves again.
        """
        server = await self.redis()
        client = await self.connected(server)
        raw = await self.raw(server)
        for n in range(2):
            self.assertEqual((await client.eval(SCRIPT, ["k"], [b"v", n]))[2], n + 1)
        self.assertEqual(await raw.command(encode([b"SCRIPT", b"FLUSH"])), b"OK")
        self.assertEqual((await client.eval(SCRIPT, ["k"], [b"v", 7]))[2], 8)
        self.assertEqual((await client.eval(SCRIPT, ["k"], [b"v", 8]))[2], 9)
        calls = await self.calls(raw)
        self.assertEqual(calls.get("eval"), 2)
        self.assertEqual(calls.get("evalsha"), 3)

    async def test_script_error(self) -> None:
        """
        A script's error under C{EVALSHA} fails the call with L{RedisError}
        and is not sent again as if it were C{NOSCRIPT}; the connection
        serves on.
        """
        server = await self.redis()
        client = await self.connected(server)
        raw = await self.raw(server)
        script = "if ARGV[1] == 'ok' then return 1 end return redis.error_reply('BOOM')"
        self.assertEqual(await client.eval(script, [], ["ok"]), 1)
        with self.assertRaises(RedisError) as caught:
            await client.eval(script, [], ["no"])
        self.assertIn("BOOM", str(caught.exception))
        calls = await self.calls(raw)
        self.assertEqual((calls.get("eval"), calls.get("evalsha")), (1, 1))
        self.assertEqual(await client.eval(script, [], ["ok"]), 1)

    async def test_pipelined(self) -> None:
        """
        Many calls at once on the one connection: each gets its own reply.
        """
        server = await self.redis()
        client = await self.connected(server)
        calls = [client.eval("return ARGV[1]", [], [f"{n:0400d}"]) for n in range(300)]
        replies = [await d for d in calls]
        self.assertEqual(replies, [f"{n:0400d}".encode() for n in range(300)])

    async def test_auth(self) -> None:
        """
        With C{requirepass}: the right password connects (and C{SELECT}
        follows it); a wrong one never does, with a warning; neither
        password is in any log event.
        """
        server = await self.redis()
        admin = await self.raw(server)
        await admin.command(encode([b"CONFIG", b"SET", b"requirepass", RIGHT_PASSWORD]))
        log = events(self)
        right = await self.connected(server, password=RIGHT_PASSWORD, db=2)
        await right.eval("return redis.call('SET', KEYS[1], 'x')", ["a"], [])
        await admin.command(encode([b"SELECT", 2]))
        self.assertEqual(await admin.command(encode([b"GET", b"a"])), b"x")

        wrong = self.client(server, password=WRONG_PASSWORD)
        await until(lambda: bool(log.refused()), "the warning")
        self.assertFalse(wrong.connected)
        self.failureResultOf(wrong.eval("return 1", [], []), RedisUnavailable)
        self.assertEqual(log.refused()[0]["log_level"].name, "warn")
        self.assertNotIn(RIGHT_PASSWORD, log.text())
        self.assertNotIn(WRONG_PASSWORD, log.text())
        unauthenticated = self.client(server)
        await until(lambda: unauthenticated.connected, "a connection without AUTH")
        with self.assertRaises(RedisError):
            await unauthenticated.eval("return 1", [], [])

    async def test_select(self) -> None:
        """
        A client of database 3 writes there; a client of database 0 does
        not see it.
        """
        server = await self.redis()
        three = await self.connected(server, db=3)
        zero = await self.connected(server)
        get = "return redis.call('GET', KEYS[1])"
        await three.eval("return redis.call('SET', KEYS[1], ARGV[1])", ["k"], ["3"])
        self.assertIsNone(await zero.eval(get, ["k"], []))
        self.assertEqual(await three.eval(get, ["k"], []), b"3")

    async def test_restart(self) -> None:
        """
        A killed Redis: C{connected} goes false and calls fail at once; the
        same client connects again once Redis is back on its port, and
        sends scripts' text again (a new Redis knows none).
        """
        server = await self.redis()
        changes: list[bool] = []
        client = await self.connected(server, on_change=changes.append)
        for _ in range(2):
            self.assertEqual(await client.eval("return 1", [], []), 1)
        await server.kill()
        await until(lambda: not client.connected, "the disconnection")
        self.failureResultOf(client.eval("return 1", [], []), RedisUnavailable)
        await server.start()
        await until(lambda: client.connected, "the reconnection")
        self.assertEqual(await client.eval("return 1", [], []), 1)
        self.assertEqual(changes, [True, False, True])
        calls = await self.calls(await self.raw(server))
        self.assertEqual((calls.get("eval"), calls.get("evalsha")), (1, None))

    async def test_disconnect(self) -> None:
        """
        C{disconnect()} fails the calls still waiting with
        L{RedisUnavailable}, and those made after at once.
        """
        server = await self.redis()
        client = await self.connected(server)
        server.send(signal.SIGSTOP)  # the call gets no answer
        waiting = client.eval("return 1", [], [])
        await client.disconnect()
        self.failureResultOf(waiting, RedisUnavailable)
        self.assertFalse(client.connected)
        self.failureResultOf(client.eval("return 1", [], []), RedisUnavailable)
        self.assertEqual(self.retries(client), [])

    async def test_disconnect_stops_reconnecting(self) -> None:
        """
        C{disconnect()} while Redis is away leaves no retry behind.
        """
        server = await self.redis()
        client = await self.connected(server)
        await server.kill()
        await until(lambda: bool(self.retries(client)), "a retry to be pending")
        await client.disconnect()
        self.assertEqual(self.retries(client), [])
        self.assertFalse(client.connected)

    def test_nothing_listening(self) -> None:
        """
        Before any connection, a call fails at once.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", free_port(), timeout=5)
        client = RedisClient(reactor, endpoint)
        self.addCleanup(client.disconnect)
        self.failureResultOf(client.eval("return 1", [], []), RedisUnavailable)


class FinishBatchTests(RespTestCase):
    """
    L{RedisState}: the requests that end in one reactor turn share one
    C{FINISH} call, which frees their leases and counts their tokens.
    """

    def count_finishes(self, state: RedisState) -> list[Deferred[Any]]:
        """
        Watch C{state}'s C{FINISH} calls: the list of their replies.
        """
        finishes: list[Deferred[Any]] = []
        call = state.call

        def counted(
            script: str, keys: Sequence[str], args: Sequence[object]
        ) -> Deferred[Any]:
            d = call(script, keys, args)
            if script == FINISH:
                finishes.append(d)
            return d

        state.call = counted  # type: ignore[method-assign]
        return finishes

    async def test_one_round_trip(self) -> None:
        """
        Five requests of three keys released in one turn: one C{FINISH}
        call; their leases are gone from Redis and their tokens counted.
        Two released in a later turn: a second call.
        """
        server = await self.redis()
        limits = await self.limits(
            server,
            max_concurrent_per_key=10,
            tokens_per_minute_per_key=100_000,
            redis_timeout_ms=5000,
        )
        state = shared(limits)
        finishes = self.count_finishes(state)
        raw = await self.raw(server)
        keys = ["a", "a", "b", "c", "a"]
        releases = [await self.admit(limits, key) for key in keys]

        async def leases(key: str) -> int:
            return int(
                await raw.command(encode([b"ZCARD", state.key("conc:" + _hashed(key))]))
            )

        async def tokens(key: str) -> int:
            counts = await raw.command(
                encode([b"HVALS", state.key("tpm:" + _hashed(key))])
            )
            return sum(int(n) for n in counts)

        self.assertEqual([await leases(k) for k in "abc"], [3, 1, 1])
        for i, release in enumerate(releases):
            release(10 * (i + 1))
        await until(lambda: bool(finishes), "the FINISH call")
        self.assertEqual(await finishes[0], len(keys))
        self.assertEqual(len(finishes), 1)
        self.assertEqual([await leases(k) for k in "abc"], [0, 0, 0])
        self.assertEqual([await tokens(k) for k in "abc"], [10 + 20 + 50, 30, 40])

        later = [await self.admit(limits, key) for key in "ab"]
        self.assertEqual([await leases(k) for k in "ab"], [1, 1])
        for release in later:
            release(1)
        await until(lambda: len(finishes) == 2, "the second FINISH call")
        self.assertEqual(await finishes[1], 2)
        self.assertEqual([await leases(k) for k in "ab"], [0, 0])
        self.assertEqual([await tokens(k) for k in "ab"], [81, 31])

    async def test_stop_sends_pending(self) -> None:
        """
        Releases still waiting for the turn's end when the state stops are
        sent before the connection closes, and their answer awaited: the
        stop warns of no unavailable Redis.
        """
        server = await self.redis()
        warnings = Warnings()
        globalLogPublisher.addObserver(warnings)
        self.addCleanup(globalLogPublisher.removeObserver, warnings)
        limits = await self.limits(
            server, max_concurrent_per_key=10, redis_timeout_ms=5000
        )
        state = shared(limits)
        raw = await self.raw(server)
        release = await self.admit(limits, "a")
        key = state.key("conc:" + _hashed("a"))
        self.assertEqual(await raw.command(encode([b"ZCARD", key])), 1)
        release()
        await limits.stop()

        async def leases() -> int:
            return int(await raw.command(encode([b"ZCARD", key])))

        # Another connection may be served first: ask until it is gone.
        deadline = reactor.seconds() + WAIT
        while await leases() and reactor.seconds() < deadline:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(await leases(), 0)
        self.assertEqual([formatEvent(e) for e in warnings.events], [])

    async def test_release_while_redis_down(self) -> None:
        """
        Releases while Redis is down do not raise; the failed C{FINISH} is
        warned about at most once a minute.
        """
        server = await self.redis()
        clock = Clock()
        state = RedisState(
            KeyLimits(max_concurrent=5, tokens_per_minute=1000),
            clock,
            redis_address(server.url),
            "",
            5000,
            "open",
        )
        self.addCleanup(state.stop)
        await until(lambda: state.connected, "the connection to Redis")
        releases: list[Callable[..., None]] = []
        for _ in range(4):
            release = await state.admit("k")
            assert callable(release)
            releases.append(release)
        warnings = Warnings()
        globalLogPublisher.addObserver(warnings)
        self.addCleanup(globalLogPublisher.removeObserver, warnings)
        await server.kill()
        await until(lambda: not state.connected, "the disconnection")
        releases[0](5)
        releases[1](0)
        self.assertEqual(len(warnings.events), 0)
        clock.advance(0)
        self.assertEqual(len(warnings.events), 1)
        releases[2](7)
        clock.advance(30)
        self.assertEqual(len(warnings.events), 1)
        clock.advance(31)
        releases[3](7)
        clock.advance(0)
        self.assertEqual(len(warnings.events), 2)
