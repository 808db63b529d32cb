"""
The request limits with a fake clock: who shares a bucket, and that the state
kept per client stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pylon_ai.gateway._apierrors import ApiError
from pylon_ai.gateway._config import Config, ModelConfig, ServerConfig
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._limits import WINDOW, Limits


def admitted(result: Callable[[], None] | ApiError) -> Callable[[], None]:
    """
    The release function of an admitted request; fails the test if it was
    refused.
    """
    assert not isinstance(result, ApiError), result
    return result


class IdentityTests(SynchronousTestCase):
    """
    Limits apply to authenticated identities.
    """

    def test_no_key_mode_is_one_identity(self) -> None:
        """
        Without configured keys, whatever a client presents is not an
        identity: every request counts against one shared bucket.
        """
        limits = Limits(ServerConfig(requests_per_minute_per_key=2), Clock())
        admitted(limits.admit("a"))
        admitted(limits.admit("b"))
        refused = limits.admit("c")
        assert isinstance(refused, ApiError)
        self.assertEqual(refused.status, 429)
        self.assertEqual(limits.tracked, 1)

    def test_no_key_mode_concurrency_shared(self) -> None:
        """
        The per-key concurrency limit is one for the whole process then.
        """
        limits = Limits(ServerConfig(max_concurrent_per_key=1), Clock())
        release = admitted(limits.admit(""))
        refused = limits.admit("x")
        assert isinstance(refused, ApiError)
        self.assertEqual(refused.status, 429)
        release()
        admitted(limits.admit("x"))

    def test_keys_apart(self) -> None:
        """
        With keys configured, each key has its own window.
        """
        settings = ServerConfig(api_keys=("k1", "k2"), requests_per_minute_per_key=1)
        limits = Limits(settings, Clock())
        admitted(limits.admit("k1"))
        admitted(limits.admit("k2"))
        self.assertIsInstance(limits.admit("k1"), ApiError)
        self.assertEqual(limits.tracked, 2)


class BoundedStateTests(SynchronousTestCase):
    """
    Idle buckets expire: the state holds only the identities active within
    the last window.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.keys = tuple(f"sk-{i}" for i in range(2000))
        settings = ServerConfig(
            api_keys=self.keys,
            requests_per_minute_per_key=5,
            max_concurrent_per_key=2,
        )
        self.limits = Limits(settings, self.clock)

    def test_many_keys_then_idle(self) -> None:
        """
        Many distinct keys, each with a request that ended: once a window
        passed without them, nothing is left, and no timer either.
        """
        for key in self.keys:
            admitted(self.limits.admit(key))()
        self.assertEqual(self.limits.tracked, len(self.keys))
        self.clock.advance(WINDOW + 1)
        self.assertEqual(self.limits.tracked, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_dropped_active_kept(self) -> None:
        """
        A key used again stays; one left idle for a window goes.
        """
        admitted(self.limits.admit("sk-1"))()
        self.clock.advance(30)
        admitted(self.limits.admit("sk-2"))()
        self.clock.advance(WINDOW - 30 + 1)
        self.assertEqual(self.limits.tracked, 1)
        self.clock.advance(30)
        self.assertEqual(self.limits.tracked, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_in_flight_kept(self) -> None:
        """
        A request still in flight keeps its identity's concurrency count
        past the window; its release drops it.
        """
        release = admitted(self.limits.admit("sk-1"))
        admitted(self.limits.admit("sk-1"))()
        self.clock.advance(WINDOW * 3)
        self.assertEqual(self.limits.tracked, 1)
        admitted(self.limits.admit("sk-1"))  # one more fits beside it (max 2)
        self.assertIsInstance(self.limits.admit("sk-1"), ApiError)
        release()

    def test_window_still_limits(self) -> None:
        """
        Expiry does not forget requests within the window: the sixth
        request in a minute is refused until the first one is a minute old.
        """
        for _ in range(5):
            admitted(self.limits.admit("sk-1"))()
            self.clock.advance(10)
        refused = self.limits.admit("sk-1")
        assert isinstance(refused, ApiError)
        self.assertEqual(refused.retry_after, "10")
        self.clock.advance(10)
        admitted(self.limits.admit("sk-1"))

    def test_stop(self) -> None:
        """
        L{Limits.stop} cancels the expiry timer.
        """
        admitted(self.limits.admit("sk-1"))()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.limits.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gateway_close_stops(self) -> None:
        """
        Closing the gateway leaves no timer of the limits behind.
        """
        config = Config(
            ServerConfig(requests_per_minute_per_key=5),
            (ModelConfig(name="mock", provider="mock"),),
        )
        gateway = Gateway(config, self.clock)
        admitted(gateway.limits.admit(""))()
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        gateway.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
