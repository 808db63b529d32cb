"""
What the cyclic garbage collector has to do for a request, and the
service's collection when idle (L{pylon_ai.gateway._collector}).
"""

from __future__ import annotations

import gc
from typing import Any

import treq

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pylon_ai.gateway._collector import IDLE_CHECK_S, _IdleCollection
from pylon_ai.testing import FakeReply

try:
    from tests._service import CLIENT_KEY, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import CLIENT_KEY, start_service  # type: ignore[no-redef]

#: The objects of one request through the gateway.
_OURS = {
    "Exchange",
    "Attempts",
    "Translation",
    "ReplyCollector",
    "GatewayRequest",
    "StreamCall",
    "BodyCall",
    "Relay",
    "_UpstreamBody",
    "_WholeBody",
    "LeanResponse",
}


class NoCyclesTests(TestCase):
    """
    A request that ended leaves no reference cycle among the gateway's
    objects: they are freed when it ends, not by the cyclic collector.
    """

    timeout = 20

    async def _post(self, url: str, body: dict[str, Any]) -> bytes:
        response = await treq.post(
            url,
            json=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            persistent=False,
        )
        return bytes(await treq.content(response))

    async def test_requests(self) -> None:
        service = await start_service(self)
        chat = service.url + "/v1/chat/completions"
        messages = service.url + "/v1/messages"
        hi = [{"role": "user", "content": "hi"}]
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for stream in (False, True):
                # Same format (passed through), and translated.
                service.fake.enqueue(FakeReply(chunks=["one", " two"]))
                await self._post(
                    chat, {"model": "gpt", "messages": hi, "stream": stream}
                )
                service.fake.enqueue(FakeReply(chunks=["one", " two"]))
                await self._post(
                    messages,
                    {"model": "gpt", "max_tokens": 9, "messages": hi, "stream": stream},
                )
            gc.collect()
            left = sorted({type(o).__name__ for o in gc.garbage} & _OURS)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        self.assertEqual(left, [])


class _Gateway:
    def __init__(self) -> None:
        self.active: set[object] = set()


class IdleCollectionTests(SynchronousTestCase):
    """
    A full collection runs once nothing is in flight, if there was work
    (a young collection) since the last one.
    """

    def setUp(self) -> None:
        self.full: list[int] = []
        self.young = 0
        self.patch(gc, "collect", lambda generation=2: self.full.append(generation))
        self.patch(gc, "get_stats", lambda: [{"collections": self.young}, {}, {}])
        self.gateway = _Gateway()
        self.check = _IdleCollection(self.gateway)

    def test_idle_after_work(self) -> None:
        self.check()
        self.assertEqual(self.full, [], "no work since the start")
        self.young += 1
        self.gateway.active.add(object())
        self.check()
        self.assertEqual(self.full, [], "busy")
        self.gateway.active.clear()
        self.check()
        self.assertEqual(self.full, [2])
        self.check()
        self.assertEqual(self.full, [2], "once per idle spell")

    def test_runs_on_the_clock(self) -> None:
        from pylon_ai.gateway import _collector

        clock = task.Clock()
        self.patch(gc, "freeze", lambda: None)
        self.patch(gc, "set_threshold", lambda *a: None)
        loop = _collector.tune_collector(self.gateway, clock)
        self.addCleanup(loop.stop)
        self.assertEqual(self.full, [2], "the collection before the freeze")
        self.young += 1
        clock.advance(IDLE_CHECK_S)
        self.assertEqual(self.full, [2, 2])
