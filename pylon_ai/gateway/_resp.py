"""
A small Redis client for the gateway's shared state: Lua scripts by their
SHA1 over one pipelined connection, which comes back on its own.

It speaks RESP2, the protocol every Redis (and Valkey, KeyDB, Dragonfly)
speaks, and only what the state needs: C{EVALSHA} (with C{EVAL} when the
server does not know the script yet), C{AUTH} and C{SELECT} on connecting.
A general client (txredisapi) spends about 100 us of CPU per command on
its generality; a request admitted through Redis pays for one or two
commands, so this one is built for that path: a command is encoded in one
go and written at once, and replies are parsed from the bytes as they come.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from pylon_ai._send import send_now

#: Commands awaiting a reply past which the connection is dropped (a Redis
#: that stopped answering must not make the queue grow without bound).
MAX_WAITING = 10_000
#: The longest reply line or bulk string accepted.
MAX_REPLY = 64 * 1024 * 1024


class RedisError(Exception):
    """
    Redis answered a command with an error.
    """


class RedisUnavailable(Exception):
    """
    Redis is not connected, or did not answer in time.
    """


class _Incomplete(Exception):
    pass


def encode(args: Sequence[object]) -> bytes:
    """
    The RESP bytes of one command.

    @param args: The command and its arguments: L{bytes}, L{str} (UTF-8) or
        numbers.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            raw = arg
        elif isinstance(arg, str):
            raw = arg.encode("utf-8")
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            raw = str(arg).encode("ascii")
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def parse(buffer: bytes, pos: int) -> tuple[Any, int]:
    """
    One reply from C{buffer} at C{pos}.

    @return: The reply (L{int}, L{bytes}, L{None}, a L{list} of replies, or
        a L{RedisError} for an error reply) and where the next one starts.
    @raise _Incomplete: The reply is not all there yet.
    @raise ValueError: The bytes are not RESP.
    """
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        if len(buffer) - pos > MAX_REPLY:
            raise ValueError("a reply line is too long")
        raise _Incomplete()
    kind = buffer[pos : pos + 1]
    line = buffer[pos + 1 : end]
    after = end + 2
    if kind == b":":
        return int(line), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if size > MAX_REPLY:
            raise ValueError("a bulk reply is too large")
        if len(buffer) < after + size + 2:
            raise _Incomplete()
        return buffer[after : after + size], after + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse(buffer, after)
            items.append(item)
        return items, after
    if kind == b"+":
        return line, after
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), after
    raise ValueError(f"not a RESP reply: {buffer[pos : pos + 20]!r}")


class RedisProtocol(Protocol):
    """
    One connection: commands go out in order, their replies come back in
    the same order.
    """

    def __init__(self) -> None:
        self._waiting: deque[Deferred[Any]] = deque()
        self._buffer = b""
        self._closed = False
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)

    def command(self, data: bytes) -> Deferred[Any]:
        """
        Send one encoded command (L{encode}).

        @return: A L{Deferred} of its reply; a L{RedisError} reply fails it.
            Cancelling it (a timeout) only forgets the reply.
        """
        d: Deferred[Any] = Deferred()
        if self.transport is None or self._closed:
            # Nothing would ever answer (a command from the errback of one
            # that the connection's loss failed would wait for good).
            return fail(RedisUnavailable("not connected"))
        if len(self._waiting) >= MAX_WAITING:
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return fail(RedisUnavailable("Redis stopped answering"))
        self._waiting.append(d)
        # Written at the reactor's next turn, with every other command of
        # this turn: one system call for many requests under load.
        self.transport.write(data)
        return d

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        waiting = self._waiting
        while pos < len(buffer):
            try:
                reply, pos_next = parse(buffer, pos)
            except _Incomplete:
                break
            except ValueError:
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            pos = pos_next
            if not waiting:
                # A reply nobody asked for: the stream cannot be trusted.
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            d = waiting.popleft()
            if d.called:
                continue  # timed out and cancelled
            if isinstance(reply, RedisError):
                d.errback(reply)
            else:
                d.callback(reply)
        self._buffer = buffer[pos:] if pos < len(buffer) else b""

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._closed = True
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            if not d.called:
                d.errback(RedisUnavailable("the connection to Redis was lost"))
        self.lost.callback(None)


class RedisClient:
    """
    A connection to one Redis, made again whenever it is lost (after 0.1 s,
    doubling up to 1 s), with scripts run by their SHA1.

    @ivar connected: Whether the connection is up and ready for commands.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: Any,
        *,
        password: str | None = None,
        db: int = 0,
        on_change: Callable[[bool], object] | None = None,
    ) -> None:
        self._clock = clock
        self._endpoint = endpoint
        self._hello: list[bytes] = []
        if password:
            self._hello.append(encode([b"AUTH", password]))
        if db:
            self._hello.append(encode([b"SELECT", db]))
        self._protocol: RedisProtocol | None = None
        # The connection, ready or still being set up (AUTH, SELECT).
        self._open: RedisProtocol | None = None
        self._connecting: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._delay = 0.1
        self._stopped = False
        self._on_change = on_change
        self._shas: dict[str, tuple[bytes, bytes]] = {}
        self._known: set[bytes] = set()
        self.connected = False
        self._refusal_logged = False
        self._connect()

    # -- the connection ---------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        if self._stopped:
            return
        factory = Factory.forProtocol(RedisProtocol)
        factory.noisy = False
        d = self._endpoint.connect(factory)
        self._connecting = d
        d.addCallbacks(self._made, self._failed)

    def _made(self, protocol: RedisProtocol) -> None:
        self._connecting = None
        if self._stopped:
            protocol.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._open = protocol
        protocol.lost.addCallback(lambda _: self._lost(protocol))
        if not self._hello:
            self._ready(protocol)
            return
        # AUTH and SELECT first; commands wait until they were answered.
        replies = [protocol.command(hello) for hello in self._hello]
        gatherResults(replies, consumeErrors=True).addCallbacks(
            lambda _: self._ready(protocol),
            lambda f: self._refused(protocol, f.value.subFailure),
        )

    def _refused(self, protocol: RedisProtocol, failure: Failure) -> None:
        # Once until a connection succeeds: a wrong password is retried
        # every second, and one line says it.
        if not self._refusal_logged:
            self._refusal_logged = True
            self.log.warn(
                "Redis refused the connection's set-up: {error}",
                error=failure.getErrorMessage(),
            )
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def _ready(self, protocol: RedisProtocol) -> None:
        if protocol.transport is None or self._stopped:
            return
        self._protocol = protocol
        self._delay = 0.1
        self._refusal_logged = False
        self._known.clear()  # a Redis that restarted forgot its scripts
        self.connected = True
        if self._on_change is not None:
            self._on_change(True)

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        self._again()

    def _lost(self, protocol: RedisProtocol) -> None:
        if self._open is protocol:
            self._open = None
        if self._protocol is protocol:
            self._protocol = None
            self.connected = False
            if self._on_change is not None:
                self._on_change(False)
        self._again()

    def _again(self) -> None:
        if self._stopped or self._retry is not None or self._connecting is not None:
            return
        delay, self._delay = self._delay, min(self._delay * 2, 1.0)
        self._retry = self._clock.callLater(delay, self._connect)

    def disconnect(self) -> Deferred[None]:
        """
        Close the connection for good.
        """
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        # Also a connection still being set up: else it stays open for good.
        protocol, self._open, self._protocol = self._open, None, None
        self.connected = False
        if protocol is None or protocol.transport is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        protocol.transport.loseConnection()
        return protocol.lost

    # -- commands ---------------------------------------------------------

    def flush(self) -> None:
        """
        Send the commands written so far now, not at the reactor's next
        turn (for a command a request waits on).
        """
        protocol = self._protocol
        if protocol is not None:
            send_now(protocol.transport)

    def eval(
        self, script: str, keys: Sequence[str], args: Sequence[object]
    ) -> Deferred[Any]:
        """
        Run a Lua script: by its SHA1 once this connection's Redis knows
        it, else with its text (which teaches Redis the script).

        @raise: Fails with L{RedisUnavailable} at once when not connected.
        """
        protocol = self._protocol
        if protocol is None:
            return fail(RedisUnavailable("not connected"))
        entry = self._shas.get(script)
        if entry is None:
            text = script.encode("utf-8")
            entry = self._shas[script] = (text, hashlib.sha1(text).hexdigest().encode())
        text, sha = entry
        tail = [len(keys), *keys, *args]
        if sha in self._known:
            d = protocol.command(encode([b"EVALSHA", sha, *tail]))
            return d.addErrback(self._unknown, protocol, text, sha, tail)
        d = protocol.command(encode([b"EVAL", text, *tail]))
        return d.addCallback(self._learned, sha)

    def _learned(self, reply: Any, sha: bytes) -> Any:
        self._known.add(sha)
        return reply

    def _unknown(
        self,
        failure: Failure,
        protocol: RedisProtocol,
        text: bytes,
        sha: bytes,
        tail: list[object],
    ) -> Any:
        # Redis lost its script cache (SCRIPT FLUSH, a fail-over): send the
        # text again, once.
        error = failure.value
        if not (isinstance(error, RedisError) and str(error).startswith("NOSCRIPT")):
            return failure
        self._known.discard(sha)
        if protocol is not self._protocol:
            return fail(RedisUnavailable("the connection to Redis was lost"))
        d = protocol.command(encode([b"EVAL", text, *tail]))
        return d.addCallback(self._learned, sha)
