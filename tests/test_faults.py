"""
Fault injection: upstreams that break in every way we know of, on both
routes, streaming and not, over both upstream wire formats.

For each fault the client gets exactly what the service contract promises
(a status and an error body in its API's shape before streaming; the chunks
so far, one error event and no clean end after streaming began), nothing is
left behind (requests, limit slots, gauges, backend counters, upstream
connections, timers), and a healthy request started at the same moment on
another model and upstream gets the very same answer as in a quiet gateway.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import treq
import trustme
from attrs import frozen
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.defer import TimeoutError as NotInTime
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._service import sse_events
except ImportError:  # run from inside tests/
    from _service import sse_events  # type: ignore[no-redef]

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "hi"}]
#: Every way a client asks: (route, its API, streaming).
MODES = [
    (CHAT, "openai", True),
    (CHAT, "openai", False),
    (MESSAGES, "anthropic", True),
    (MESSAGES, "anthropic", False),
]
#: The faulty models, by the wire format their upstream speaks.  The OpenAI
#: one is passed through on the chat route and translated on the messages
#: route; the Anthropic one the other way round.
BAD = {"openai": "bad-openai", "anthropic": "bad-anthropic"}
#: What the healthy upstream answers, slowly enough to overlap the fault.
#: (It names its model: the custom models ask for their own names, which
#: differ, and the fake would echo them.)
HEALTHY = FakeReply(
    chunks=["Hel", "lo", " there"], usage=(5, 3), chunk_delay=0.01, model="up"
)
HEALTHY_TEXT = "Hello there"
MAX_LINE = 2048
#: Seconds the settling of a scenario may take.
SETTLE_S = 5.0

#: Per status: OpenAI's (type, code), Anthropic's type.
ERROR_KINDS = {
    502: (("upstream_error", "upstream_error"), "api_error"),
    504: (("timeout_error", "upstream_timeout"), "timeout_error"),
}


# -- raw upstream bodies, for the faults the fake cannot script -------------


def _oa(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "raw-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _an(name: str, data: dict[str, Any]) -> bytes:
    return (
        b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"
    )


OA_HEAD = _oa("ok")
OA_TAIL = _oa(finish="stop") + b"data: [DONE]\n\n"
AN_START = _an(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_raw",
            "type": "message",
            "role": "assistant",
            "model": "raw-model",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    },
)
AN_HEAD = (
    AN_START
    + _an(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        },
    )
    + _an(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "ok"},
        },
    )
)
AN_TAIL = (
    _an("content_block_stop", {"type": "content_block_stop", "index": 0})
    + _an(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        },
    )
    + _an("message_stop", {"type": "message_stop"})
)
#: A text delta whose text is C{a}, two bytes that are not UTF-8, C{b}.
BAD_UTF8 = {
    "openai": _oa("@@").replace(b"@@", b"a\xff\xfeb"),
    "anthropic": _an(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "@@"},
        },
    ).replace(b"@@", b"a\xff\xfeb"),
}
HEAD = {"openai": OA_HEAD, "anthropic": AN_HEAD}
TAIL = {"openai": OA_TAIL, "anthropic": AN_TAIL}


# -- what the client got ------------------------------------------------------


def _normal(value: Any) -> Any:
    """
    C{value} without what differs between two identical replies: ids and
    creation times.
    """
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if k not in ("id", "created")}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _json_or_raw(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


@frozen
class Answer:
    """
    One response as the client saw it.
    """

    api: str
    stream: bool
    status: int
    content_type: str
    body: bytes

    def events(self) -> list[tuple[str | None, Any]]:
        """
        The stream's events, data parsed as JSON where it is JSON.
        """
        return [(name, _json_or_raw(data)) for name, data in sse_events(self.body)]

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        """
        The text the reply carried (for a stream: the text deltas so far).
        """
        if not self.stream:
            body = self.json()
            if self.api == "openai":
                return str(body["choices"][0]["message"]["content"] or "")
            return "".join(b["text"] for b in body["content"] if b["type"] == "text")
        out = []
        for name, data in self.events():
            if not isinstance(data, dict):
                continue
            if self.api == "openai":
                for choice in data.get("choices") or ():
                    out.append(choice["delta"].get("content") or "")
            elif name == "content_block_delta":
                if data["delta"]["type"] == "text_delta":
                    out.append(data["delta"]["text"])
        return "".join(out)

    def normal(self) -> Any:
        """
        All of it but ids and times, to compare two replies.
        """
        content: Any = (
            [list(event) for event in self.events()] if self.stream else self.json()
        )
        return (self.status, self.content_type, _normal(content))


def _ours(call: Any) -> bool:
    func = getattr(call, "func", None)
    module = getattr(func, "__module__", None) or ""
    # The pool's timers for its idle connections are the pool's, as in
    # Twisted's own pool.
    owner = getattr(func, "__qualname__", "")
    return module.startswith("pylon_ai") and not owner.startswith("LeanPool.")


@frozen
class _Upstream:
    """
    An upstream whose connections are watched: a fake, or a bare TLS server.
    """

    name: str
    port: int
    count: Callable[[], int]


class _FaultCase(TestCase):
    """
    A healthy fake and a faulty one behind one gateway, and the checks every
    scenario ends with.
    """

    timeout = 20

    async def fake(self, **kwargs: Any) -> FakeProvider:
        fake = FakeProvider(reactor, **kwargs)
        await fake.start()
        self.addCleanup(fake.stop)
        return fake

    async def start(
        self,
        *,
        tls: bool = False,
        bad_url: str | None = None,
        watch: _Upstream | None = None,
        **options: Any,
    ) -> None:
        """
        Start the fakes and the gateway.

        @param bad_url: Where the faulty models point instead of the faulty
            fake.
        @param watch: The upstream at C{bad_url}, to watch its connections.
        @param options: For the faulty models; C{retries} is 0 unless given.
        """
        self.good = await self.fake(default_reply=HEALTHY)
        self.bad = await self.fake(tls=tls)
        base = bad_url or self.bad.base_url
        bad = {"retries": 0, **options}
        models = [
            {
                "name": "good",
                "provider": "custom",
                "base_url": self.good.base_url,
                "api_key": "",
                "retries": 0,
            },
            {
                "name": BAD["openai"],
                "provider": "custom",
                "base_url": base,
                "api_key": "",
                **bad,
            },
            {
                "name": BAD["anthropic"],
                "provider": "anthropic",
                "model": "claude-up",
                "api_key": "sk-up",
                "base_url": base,
                **bad,
            },
        ]
        config = parse_config(
            {"server": {"max_line_bytes": MAX_LINE}, "models": models}, {}
        )
        self.gw = Gateway(config, reactor)
        self.addCleanup(self.gw.close)
        site = make_site(self.gw)
        self.addCleanup(site.close_connections, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.http = HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        )
        self.upstreams = [self._watch("good", self.good)]
        self.upstreams.append(watch or self._watch("bad", self.bad))
        self.baselines: dict[tuple[str, bool], Any] = {}

    def _watch(self, name: str, fake: FakeProvider) -> _Upstream:
        port = int(fake.base_url.rsplit(":", 1)[1])
        return _Upstream(name, port, lambda: fake.open_connections)

    async def post(self, route: str, api: str, model: str, stream: bool) -> Answer:
        body: dict[str, Any] = {"model": model, "messages": HI, "stream": stream}
        if api == "anthropic":
            body["max_tokens"] = 64
        d: Deferred[Any] = self.http.post(
            self.url + route,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        response = await d.addTimeout(15, reactor)
        content = await treq.content(response)
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        return Answer(api, stream, response.code, ctype.decode(), content)

    async def baseline(self, route: str, api: str, stream: bool) -> Any:
        """
        What the healthy model answers on a quiet gateway.
        """
        key = (route, stream)
        if key not in self.baselines:
            answer = await self.post(route, api, "good", stream)
            self.succeeded(answer, HEALTHY_TEXT)
            self.baselines[key] = answer.normal()
            await self.nothing_left()
        return self.baselines[key]

    async def scenario(
        self,
        upstream: str,
        replies: list[FakeReply],
        check: Callable[[Answer], object],
        *,
        attempts: int | None = 1,
        cancelled: bool = False,
        closed: bool = False,
        within: float | None = None,
        streamed_only: bool = False,
    ) -> None:
        """
        For every mode: queue C{replies} on the faulty fake, ask the faulty
        model of C{upstream} format and the healthy one at once, then
        C{check} the faulty answer, compare the healthy one with its
        baseline, and check that nothing is left.

        @param attempts: How many requests the faulty fake must receive.
        @param cancelled: The gateway must have closed the upstream request
            before its end.
        @param closed: No connection to the faulty upstream may stay open,
            even idle in the pool.
        @param within: The faulty request must be answered within this many
            seconds.
        @param streamed_only: The fault is in an event stream: leave out
            the modes whose upstream is not asked for one (a same-format
            non-streaming request gets the upstream's whole body).
        """
        for route, api, stream in MODES:
            if streamed_only and not stream and api == upstream:
                continue
            where = f"{upstream} upstream, {route}, stream={stream}"
            expected = await self.baseline(route, api, stream)
            before = len(self.bad.requests)
            self.bad.enqueue(*replies)
            began = reactor.seconds()
            faulty = Deferred.fromCoroutine(
                self.post(route, api, BAD[upstream], stream)
            ).addCallback(lambda answer: (answer, reactor.seconds()))
            healthy = Deferred.fromCoroutine(self.post(route, api, "good", stream))
            (answer, ended), other = await gatherResults([faulty, healthy])
            try:
                check(answer)
                self.assertEqual(other.normal(), expected, "the healthy request")
                if attempts is not None:
                    self.assertEqual(
                        len(self.bad.requests) - before, attempts, "upstream attempts"
                    )
                self.assertEqual(len(self.bad._queue), 0, "unused replies")
                if within is not None:
                    self.assertLess(ended - began, within, "time to answer")
                if cancelled:
                    try:
                        await self.bad.requests[before].disconnected.addTimeout(
                            SETTLE_S, reactor
                        )
                    except NotInTime:
                        self.fail("the upstream request was not closed")
                await self.nothing_left(closed)
            except self.failureException as e:
                raise self.failureException(f"[{where}] {e}") from None

    # -- the checks ---------------------------------------------------------

    async def nothing_left(self, closed: bool = False) -> None:
        """
        Nothing of the requests that ended is left: requests in flight, limit
        slots, the streams gauge, backend counters at once; upstream
        connections (but idle ones in the pool, unless C{closed}) and our
        timers within a bounded wait.
        """
        gw = self.gw
        self.assertEqual(gw.active, set(), "requests in flight")
        self.assertEqual(gw.limits.in_flight, 0, "limit slots")
        self.assertEqual(
            gw.metrics.registry.get_sample_value("pylon_streams_in_flight"),
            0,
            "streams gauge",
        )
        for name, group in gw.backends.items():
            for backend in group:
                self.assertEqual(backend.in_flight, 0, f"in flight on {name}")
        deadline = reactor.seconds() + SETTLE_S
        while True:
            left = self._leftovers(closed)
            if not left:
                return
            if reactor.seconds() > deadline:
                self.fail("left behind: " + "; ".join(left))
            await deferLater(reactor, 0.01, lambda: None)

    def _pooled(self, port: int) -> int:
        idle = 0
        for client in self.gw._clients.values():
            pool = client._agent._pool
            for key, connections in pool._connections.items():
                if key[2] == port:
                    idle += len(connections)
            for key, connections in pool.lean._idle.items():
                if key[-1] == port:
                    idle += len(connections)
        return idle

    def _leftovers(self, closed: bool) -> list[str]:
        left = []
        for upstream in self.upstreams:
            open_ = upstream.count()
            idle = (
                0 if closed and upstream.name == "bad" else self._pooled(upstream.port)
            )
            if open_ > idle:
                left.append(
                    f"{open_} connections open to the {upstream.name} upstream, "
                    f"{idle} of them idle in the pool"
                )
        timers = [c for c in reactor.getDelayedCalls() if _ours(c)]
        if timers:
            left.append(f"timers {timers}")
        return left

    def error_shape(self, api: str, body: Any, status: int) -> None:
        """
        C{body} is an error of the kind C{status} stands for, in the shape of
        C{api}, and its message does not show the upstream's address.
        """
        (openai_type, openai_code), anthropic_type = ERROR_KINDS[status]
        if api == "openai":
            self.assertEqual(list(body), ["error"], body)
            error = body["error"]
            self.assertLessEqual({"message", "type", "code"}, set(error), body)
            self.assertEqual(
                (error["type"], error["code"]), (openai_type, openai_code), body
            )
        else:
            self.assertEqual(
                (body.get("type"), set(body)), ("error", {"type", "error"}), body
            )
            error = body["error"]
            self.assertEqual(set(error), {"type", "message"}, body)
            self.assertEqual(error["type"], anthropic_type, body)
        message = error["message"]
        self.assertIsInstance(message, str)
        self.assertTrue(message, body)
        for secret in ("127.0.0.1", "localhost", str(self.upstreams[-1].port)):
            self.assertNotIn(secret, message)

    def failed(self, answer: Answer, status: int) -> None:
        """
        The request failed before anything was streamed: C{status} and a JSON
        error body.
        """
        self.assertEqual(answer.status, status, answer.body)
        self.assertEqual(answer.content_type, "application/json")
        self.error_shape(answer.api, answer.json(), status)

    def broke(self, answer: Answer, text: str, status: int) -> None:
        """
        The reply failed after C{text} (streaming: after it was streamed).

        A stream got C{text}, then one error event of the kind of C{status},
        and no clean end; a whole body, the C{status} error.
        """
        if not answer.stream:
            self.failed(answer, status)
            return
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.content_type.startswith("text/event-stream"))
        events = answer.events()
        self.assertEqual(answer.text(), text)
        name, last = events[-1]
        if answer.api == "openai":
            self.assertIsNone(name)
            self.assertNotIn("[DONE]", [data for _, data in events])
            errors = [d for _, d in events if isinstance(d, dict) and "error" in d]
        else:
            self.assertEqual(name, "error", events)
            names = [n for n, _ in events]
            self.assertNotIn("message_stop", names)
            errors = [d for n, d in events if n == "error"]
        self.assertEqual(errors, [last], events)
        self.error_shape(answer.api, last, status)

    def succeeded(self, answer: Answer, text: str) -> None:
        """
        A whole reply with C{text}: a cleanly ended stream, or a body.
        """
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.text(), text)
        if not answer.stream:
            self.assertEqual(answer.content_type, "application/json")
            return
        events = answer.events()
        if answer.api == "openai":
            self.assertEqual(events[-1], (None, "[DONE]"))
            self.assertFalse(
                [d for _, d in events if isinstance(d, dict) and "error" in d]
            )
        else:
            self.assertEqual(events[-1][0], "message_stop")
            self.assertNotIn("error", [n for n, _ in events])


class MidStreamTests(_FaultCase):
    """
    The upstream fails after its reply began.
    """

    async def test_reset_mid_stream(self) -> None:
        """
        The upstream connection is cut after two chunks: the client gets
        them, then a 502 error event (a whole body: a 502).
        """
        await self.start()
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(chunks=["a", "b", "c", "d"], drop_after=2)],
                lambda answer: self.broke(answer, "ab", 502),
            )

    async def test_reset_right_after_headers(self) -> None:
        """
        The connection is cut right after the opening event, before any
        text: still an error, never an empty success.  A passed-through
        stream already began (the opening event); a translated one did not.
        """
        await self.start()
        for upstream in BAD:

            def check(answer: Answer, upstream: str = upstream) -> None:
                if answer.stream and answer.api == upstream:
                    # Passed through: the opening event went out as it came.
                    self.broke(answer, "", 502)
                else:
                    # Translated, the opening is held back until content:
                    # nothing was streamed yet.
                    self.failed(answer, 502)

            await self.scenario(
                upstream, [FakeReply(chunks=["a"], drop_after=0)], check
            )

    async def test_stall_between_chunks(self) -> None:
        """
        Nothing more after two chunks for longer than C{timeout_s}: the
        chunks, then a 504 error event; the upstream request is closed.
        """
        await self.start(timeout_s=0.15)
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(chunks=["a", "b", "c"], stall_after=2)],
                lambda answer: self.broke(answer, "ab", 504),
                cancelled=True,
                closed=True,
                within=3,
            )


class BeforeStreamTests(_FaultCase):
    """
    The upstream fails before anything reached the client.
    """

    async def test_stall_before_first_byte(self) -> None:
        """
        No first byte within C{first_byte_timeout_s}: a 504 in the caller's
        shape, and the upstream request is closed.  (A same-format
        non-streaming request has no first byte before its whole reply:
        C{request_timeout_s} bounds it.)
        """
        await self.start(first_byte_timeout_s=0.1, timeout_s=30, request_timeout_s=1)
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(chunks=["late"], first_byte_delay=10)],
                lambda answer: self.failed(answer, 504),
                cancelled=True,
                closed=True,
                within=3,
            )

    async def test_429_then_success(self) -> None:
        """
        A 429 with C{retry-after} is retried (default retries): the client
        gets only the success.
        """
        await self.start(retries=2, retry_backoff_s=0.01)
        ok = FakeReply(chunks=["Hel", "lo", " there"], usage=(5, 3))
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(status=429, retry_after=0.05), ok],
                lambda answer: self.succeeded(answer, HEALTHY_TEXT),
                attempts=2,
            )

    async def test_500_then_success(self) -> None:
        """
        A 500 is retried (default retries): the client gets only the
        success, the same as from a healthy upstream.
        """
        await self.start(retries=2, retry_backoff_s=0.01)
        ok = FakeReply(chunks=["Hel", "lo", " there"], usage=(5, 3))
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(status=500), ok],
                lambda answer: self.succeeded(answer, HEALTHY_TEXT),
                attempts=2,
            )

    async def test_success_after_retry_is_clean(self) -> None:
        """
        Through the same-format upstream, the success after a 500 is the
        very reply a healthy upstream gives (nothing of the failed attempt
        shows).
        """
        await self.start(retries=2, retry_backoff_s=0.01)
        for route, api, stream in MODES:
            expected = await self.baseline(route, api, stream)
            self.bad.enqueue(FakeReply(status=500), HEALTHY)
            answer = await self.post(route, api, BAD["openai"], stream)
            self.assertEqual(answer.normal(), expected, (route, stream))
            await self.nothing_left()


class MalformedTests(_FaultCase):
    """
    The upstream's stream is not what its format says.
    """

    async def test_invalid_json_first(self) -> None:
        """
        The first event is not JSON: nothing was streamed, so a 502 in the
        caller's shape.
        """
        await self.start()
        raw = {
            "openai": b"data: {not json\n\n" + OA_TAIL,
            "anthropic": b"event: message_start\ndata: {not json\n\n" + AN_TAIL,
        }
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(raw_body=raw[upstream])],
                lambda answer: self.failed(answer, 502),
            )

    async def test_invalid_json_mid_stream(self) -> None:
        """
        An event that is not JSON after text was streamed (one that carries
        a finish reason or a stop, so that even pass-through reads it): the
        text, then a 502 error event.
        """
        await self.start()
        raw = {
            "openai": OA_HEAD + b'data: {"choices":[{"finish_reason":"stop" }\n\n'
            b"data: [DONE]\n\n",
            "anthropic": AN_HEAD
            + b'event: message_delta\ndata: {"type":"message_delta", oops\n\n'
            + _an("message_stop", {"type": "message_stop"}),
        }
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(raw_body=raw[upstream])],
                lambda answer: self.broke(answer, "ok", 502),
            )

    async def test_invalid_json_text_chunk(self) -> None:
        """
        A plain text chunk that is not JSON, after text was streamed, then a
        clean end: the text, then a 502 error event, on every route.

        Translated, the decoder reads every chunk and fails on it.  Passed
        through, the chunk must not reach the client as if it were valid
        followed by a clean end: the same upstream fault must give the same
        answer whichever route the client took.
        """
        await self.start()
        raw = {
            "openai": OA_HEAD
            + b'data: {"choices":[{"delta":{"content":"x"}} oops\n\n'
            + OA_TAIL,
            "anthropic": AN_HEAD
            + b"event: content_block_delta\ndata: {oops\n\n"
            + AN_TAIL,
        }
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(raw_body=raw[upstream])],
                lambda answer: self.broke(answer, "ok", 502),
            )

    async def test_invalid_utf8(self) -> None:
        """
        Bytes that are not UTF-8 inside an event are decoded with
        replacement: the client gets valid UTF-8 with U+FFFD in their place,
        and a clean reply.
        """
        await self.start()
        for upstream in BAD:
            raw = HEAD[upstream] + BAD_UTF8[upstream] + TAIL[upstream]

            def check(answer: Answer) -> None:
                answer.body.decode("utf-8")  # strict: valid UTF-8
                self.succeeded(answer, "oka\ufffd\ufffdb")

            await self.scenario(
                upstream, [FakeReply(raw_body=raw)], check, streamed_only=True
            )

    async def test_endless_line_first(self) -> None:
        """
        A line longer than C{max_line_bytes} before any event: a 502, and the
        upstream connection is closed rather than read to its end.
        """
        await self.start()
        line = b"data: " + b"x" * (1 << 20)
        for upstream in BAD:
            await self.scenario(
                upstream,
                [FakeReply(raw_body=line)],
                lambda answer: self.failed(answer, 502),
                closed=True,
                streamed_only=True,
            )

    async def test_endless_line_mid_stream(self) -> None:
        """
        A line longer than C{max_line_bytes} after text was streamed: the
        text, then a 502 error event; the upstream connection is closed.
        """
        await self.start()
        for upstream in BAD:
            line = HEAD[upstream] + b"data: " + b"x" * (1 << 20)
            await self.scenario(
                upstream,
                [FakeReply(raw_body=line)],
                lambda answer: self.broke(answer, "ok", 502),
                closed=True,
                streamed_only=True,
            )


class TLSTests(_FaultCase):
    """
    TLS failures with the upstream: a 502, at once, even with retries on.
    """

    async def test_untrusted_ca(self) -> None:
        """
        An upstream whose certificate comes from a CA the gateway does not
        trust: a 502 within a bounded time, although retries are allowed.
        """
        await self.start(tls=True, retries=2)
        for upstream in BAD:
            await self.scenario(
                upstream,
                [],
                lambda answer: self.failed(answer, 502),
                attempts=0,
                closed=True,
                within=5,
            )

    async def test_wrong_host_name(self) -> None:
        """
        A trusted CA (C{ca_file}) but a certificate for another host name: a
        502 within a bounded time, although retries are allowed.
        """
        ca = trustme.CA()
        cert = ca.issue_cert("other.example")
        options = PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()
        ).options()
        factory = WrappingFactory(Site(Resource()))
        port: IListeningPort = await SSL4ServerEndpoint(
            reactor, 0, options, interface="127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)

        def close_all() -> None:
            for wrapper in list(factory.protocols):
                wrapper.transport.abortConnection()

        self.addCleanup(close_all)
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        ca_file = os.path.join(directory.name, "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        number = port.getHost().port  # type: ignore[attr-defined]
        await self.start(
            bad_url=f"https://localhost:{number}",
            watch=_Upstream("bad", number, lambda: len(factory.protocols)),
            ca_file=ca_file,
            retries=2,
        )
        for upstream in BAD:
            await self.scenario(
                upstream,
                [],
                lambda answer: self.failed(answer, 502),
                attempts=0,
                closed=True,
                within=5,
            )
