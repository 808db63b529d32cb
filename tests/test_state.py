"""
The per-key state in memory (L{MemoryState}): tokens per minute counted from
what requests report at their end, through L{Limits} and over HTTP; the
routes with an admission that waits (as with Redis); and the C{[server]} keys
of the shared state, checked at start.
"""

from __future__ import annotations

import json
from typing import Any

from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai.formats.events import Usage
from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._config import (
    ConfigError,
    RedisAddress,
    ServerConfig,
    default_config,
    parse_config,
)
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._limits import Limits
from pylon_ai.gateway._state import (
    WINDOW,
    Admission,
    KeyLimits,
    MemoryState,
    Release,
    usage_tokens,
)
from pylon_ai.gateway._websocket import _Session

try:
    from tests._service import CLIENT_KEY, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import CLIENT_KEY, start_service  # type: ignore[no-redef]


def admitted(result: Any) -> Release:
    assert not isinstance(result, ApiError), result
    assert callable(result), result
    return result  # type: ignore[no-any-return]


def refused(result: Admission | Any) -> ApiError:
    assert isinstance(result, ApiError), result
    return result


class TokensPerMinuteTests(SynchronousTestCase):
    """
    C{tokens_per_minute_per_key}: the tokens requests report when they end,
    within a sliding minute.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.state = MemoryState(KeyLimits(tokens_per_minute=100), self.clock)

    def test_tokens_counted_at_release(self) -> None:
        """
        Requests are admitted until the tokens released within the minute
        reach the limit; then a 429 whose C{retry-after} is when the oldest
        tokens leave the window.
        """
        admitted(self.state.admit("k"))(60)
        self.clock.advance(10)
        late = admitted(self.state.admit("k"))
        # Admitted before its tokens are known: in flight does not count.
        admitted(self.state.admit("k"))(0)
        late(40)
        error = refused(self.state.admit("k"))
        self.assertEqual(error.status, 429)
        self.assertIn("100 tokens per minute", error.message)
        self.assertEqual(error.retry_after, str(int(WINDOW - 10)))
        self.clock.advance(WINDOW - 10)
        admitted(self.state.admit("k"))()

    def test_keys_apart(self) -> None:
        """
        One key's tokens do not limit another's.
        """
        admitted(self.state.admit("a"))(500)
        refused(self.state.admit("a"))
        admitted(self.state.admit("b"))

    def test_release_once(self) -> None:
        """
        A second call of a release counts nothing.
        """
        release = admitted(self.state.admit("k"))
        release(60)
        release(60)
        admitted(self.state.admit("k"))

    def test_expires(self) -> None:
        """
        Token windows are dropped once idle, like the request windows.
        """
        admitted(self.state.admit("k"))(5)
        self.assertEqual(self.state.tracked, 1)
        self.clock.advance(WINDOW + 1)
        self.assertEqual(self.state.tracked, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_limits_pass_tokens(self) -> None:
        """
        L{Limits} hands the tokens of a release to the state, and stays
        synchronous in memory.
        """
        limits = Limits(
            ServerConfig(api_keys=("k",), tokens_per_minute_per_key=10), self.clock
        )
        admitted(limits.admit("k"))(10)
        self.assertEqual(limits.in_flight, 0)
        self.assertEqual(refused(limits.admit("k")).status, 429)

    def test_usage_tokens(self) -> None:
        """
        Input (cache reads and writes included) plus output.
        """
        self.assertEqual(usage_tokens(None), 0)
        self.assertEqual(usage_tokens(Usage(3, None)), 3)
        self.assertEqual(usage_tokens(Usage(3, 4, 5, 6)), 18)


class TokensOverHttpTests(TestCase):
    """
    Over HTTP the tokens a reply reports count against its key.
    """

    async def test_second_request_refused(self) -> None:
        service = await start_service(
            self, {"api_keys": [CLIENT_KEY], "tokens_per_minute_per_key": 2}
        )
        body = json.dumps(
            {"model": "mock", "messages": [{"role": "user", "content": "hi there"}]}
        ).encode()
        headers = {
            "Authorization": f"Bearer {CLIENT_KEY}",
            "Content-Type": "application/json",
        }
        url = service.url + "/v1/chat/completions"
        treq = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))
        first = await treq.post(url, body, headers=headers)
        reply = await first.json()
        self.assertEqual(first.code, 200)
        self.assertGreaterEqual(reply["usage"]["total_tokens"], 2)
        second = await treq.post(url, body, headers=headers)
        await second.content()
        self.assertEqual(second.code, 429)
        self.assertTrue(second.headers.getRawHeaders("retry-after"))


class StateConfigTests(SynchronousTestCase):
    """
    The shared state's C{[server]} keys are checked at start.
    """

    def parse(self, env: dict[str, str] | None = None, **server: Any) -> ServerConfig:
        return parse_config({"server": server}, env or {}).server

    def refused(self, text: str, **server: Any) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.parse(**server)
        self.assertIn(text, str(caught.exception))

    def test_defaults(self) -> None:
        server = self.parse()
        self.assertEqual(server.state, "memory")
        self.assertIsNone(server.redis)
        self.assertEqual(server.redis_timeout_ms, 50)
        self.assertEqual(server.redis_failure, "open")
        self.assertEqual(server.tokens_per_minute_per_key, 0)

    def test_redis_urls(self) -> None:
        self.assertEqual(
            self.parse(state="redis://cache.internal:6380/2").redis,
            RedisAddress("cache.internal", 6380, 2, False),
        )
        self.assertEqual(
            self.parse(state="rediss://cache").redis,
            RedisAddress("cache", 6379, 0, True),
        )

    def test_bad_state(self) -> None:
        self.refused("server.state must be", state="postgres://db")
        self.refused("server.state: the URL has no host", state="redis:///0")
        self.refused("server.state: bad port", state="redis://h:port/0")
        self.refused("server.state: bad port or database", state="redis://h/x")

    def test_password_only_from_env(self) -> None:
        """
        A password in the URL is refused (it would sit in the file); the
        variable named by C{redis_password_env} gives it, and it is kept out
        of the config's repr.
        """
        self.refused("redis_password_env", state="redis://:secret@h/0")
        self.refused(
            "environment variable PYLON_REDIS_PW is not set",
            state="redis://h/0",
            redis_password_env="PYLON_REDIS_PW",
        )
        server = self.parse(
            {"PYLON_REDIS_PW": "s3cret-pw"},
            state="redis://h/0",
            redis_password_env="PYLON_REDIS_PW",
        )
        self.assertEqual(server.redis_password, "s3cret-pw")
        self.assertNotIn("s3cret-pw", repr(server))

    def test_other_keys(self) -> None:
        self.refused(
            'server.redis_failure must be "open" or "closed"', redis_failure="x"
        )
        self.refused("server.redis_timeout_ms must be at least 1", redis_timeout_ms=0)
        self.refused("server.redis_timeout_ms must be int", redis_timeout_ms=0.5)
        self.refused(
            "server.tokens_per_minute_per_key must be 0 (no limit) or more",
            tokens_per_minute_per_key=-1,
        )
        self.assertEqual(self.parse(redis_failure="closed").redis_failure, "closed")


class _PendingLimits:
    """
    Admissions that wait, as with Redis: each C{admit} returns a
    L{Deferred} the test fires; releases record their tokens.
    """

    def __init__(self) -> None:
        self.pending: list[Deferred[Admission]] = []
        self.released: list[int] = []

    def admit(self, key: str | None) -> Deferred[Admission]:
        d: Deferred[Admission] = Deferred()
        self.pending.append(d)
        return d

    def release(self, tokens: int = 0) -> None:
        self.released.append(tokens)


class _Socket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, data: bytes) -> None:
        self.sent.append(json.loads(data))

    def close(self, code: int, reason: str) -> None:
        pass


class WebSocketAdmissionTests(SynchronousTestCase):
    """
    A WebSocket completion whose admission waits (shared state) starts when
    it is admitted, and its slot is released with its tokens, or at once if
    the socket closed meanwhile.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.gateway = Gateway(default_config(), self.clock)
        self.limits = _PendingLimits()
        self.gateway.limits.admit = self.limits.admit  # type: ignore[method-assign]
        self.socket = _Socket()
        self.session = _Session(self.gateway, self.socket.send, self.socket.close, True)

    def complete(self, request_id: str = "r1") -> None:
        message = {
            "type": "completion",
            "id": request_id,
            "model": "mock",
            "messages": [{"role": "user", "content": "hello there"}],
        }
        self.session.message_received(json.dumps(message).encode())

    def spin(self) -> None:
        for _ in range(100):
            self.clock.advance(0.1)

    def test_admitted_later(self) -> None:
        self.complete()
        self.spin()
        self.assertEqual(self.socket.sent, [])
        self.limits.pending[0].callback(self.limits.release)
        self.spin()
        self.assertEqual(self.socket.sent[-1]["type"], "done")
        done = self.socket.sent[-1]["usage"]
        self.assertEqual(
            self.limits.released, [done["input_tokens"] + done["output_tokens"]]
        )
        self.assertGreater(self.limits.released[0], 0)

    def test_refused_later(self) -> None:
        self.complete()
        self.limits.pending[0].callback(
            ApiError(429, "too many requests in flight for this key", retry_after="1")
        )
        self.assertEqual(
            self.socket.sent,
            [
                {
                    "type": "error",
                    "id": "r1",
                    "error": {
                        "type": "rate_limit_error",
                        "message": "too many requests in flight for this key",
                    },
                }
            ],
        )

    def test_closed_while_waiting(self) -> None:
        self.complete()
        self.session.closed()
        self.limits.pending[0].callback(self.limits.release)
        self.spin()
        self.assertEqual(self.limits.released, [0])
        self.assertEqual(self.socket.sent, [])
        self.assertEqual(self.gateway.active, set())

    def test_same_id_while_waiting(self) -> None:
        """
        The same id sent twice before the first was admitted: the second
        gets an error and its slot back.
        """
        self.complete()
        self.complete()
        self.limits.pending[0].callback(self.limits.release)
        self.limits.pending[1].callback(self.limits.release)
        self.assertEqual(self.limits.released, [0])
        self.assertEqual(self.socket.sent[-1]["type"], "error")
        self.assertIn("already in flight", self.socket.sent[-1]["error"]["message"])
        self.spin()
        self.assertEqual(self.socket.sent[-1]["type"], "done")


class HttpAdmissionTests(TestCase):
    """
    An HTTP request whose admission waits (shared state) is served once
    admitted, or answered with the refusal.
    """

    async def test_admitted_and_refused_later(self) -> None:
        service = await start_service(self, {"api_keys": [CLIENT_KEY]})
        limits = _PendingLimits()
        service.gateway.limits.admit = limits.admit  # type: ignore[method-assign]
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))
        body = json.dumps(
            {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        headers = {
            "Authorization": f"Bearer {CLIENT_KEY}",
            "Content-Type": "application/json",
        }
        url = service.url + "/v1/chat/completions"
        first = http.post(url, body, headers=headers)
        while not limits.pending:
            await deferLater(reactor, 0.01, lambda: None)
        limits.pending[0].callback(limits.release)
        response = await first
        reply = await response.json()
        self.assertEqual(response.code, 200)
        self.assertEqual(limits.released, [reply["usage"]["total_tokens"]])
        second = http.post(url, body, headers=headers)
        while len(limits.pending) < 2:
            await deferLater(reactor, 0.01, lambda: None)
        limits.pending[1].callback(ApiError(429, "slow down", retry_after="7"))
        response = await second
        await response.content()
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["7"])
