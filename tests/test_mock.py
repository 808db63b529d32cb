"""
Tests for the built-in mock model's reply (L{pylon_ai.gateway._mock}).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pylon_ai.formats.events import ModelEvent, Stop, TextDelta
from pylon_ai.gateway._mock import MockCall

BODY = {"model": "mock", "messages": [{"role": "user", "content": "hi there"}]}


class MockCallTests(SynchronousTestCase):
    """
    The mock streams its words on the clock, and stops cleanly when
    cancelled, even from inside the delivery of an event.
    """

    def test_reply(self) -> None:
        clock = Clock()
        got: list[ModelEvent] = []
        call = MockCall(clock, BODY, got.append, delay=0.01)
        call.start()
        while clock.getDelayedCalls():
            clock.advance(0.01)
        self.successResultOf(call.deferred)
        text = "".join(e.text for e in got if isinstance(e, TextDelta))
        self.assertIn("You said: hi there", text)
        self.assertIsInstance(got[-1], Stop)

    def test_cancel_while_delivering(self) -> None:
        """
        A consumer that cancels the reply while a text event is delivered
        (a client that left, a socket over its bound) ends it at once: no
        error from firing twice, no timer left.
        """
        clock = Clock()

        def on_event(event: ModelEvent) -> None:
            if isinstance(event, TextDelta):
                call.deferred.cancel()

        call = MockCall(clock, BODY, on_event, delay=0.01)
        call.start()
        clock.advance(0)
        self.failureResultOf(call.deferred, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_while_finishing(self) -> None:
        clock = Clock()

        def on_event(event: ModelEvent) -> None:
            if isinstance(event, Stop):
                call.deferred.cancel()

        call = MockCall(clock, BODY, on_event, delay=0.01)
        call.start()
        while clock.getDelayedCalls():
            clock.advance(0.01)
        self.failureResultOf(call.deferred, CancelledError)
