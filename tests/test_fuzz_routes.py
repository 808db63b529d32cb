"""
Hypothesis against the HTTP completion routes: whatever a client POSTs, the
service answers in the route's shape and never with an error of its own (no
500, no 5xx but an upstream's 502/504), and logs no error or traceback.

Hypothesis drives the examples, the reactor the requests: the examples are
drawn first (a synchronous C{@given} function collects them), then posted
over real sockets, many at once.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._service import sse_events
except ImportError:  # run from inside tests/
    from _service import sse_events  # type: ignore[no-redef]

ROUTES = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}
MODELS = ["mock", "fast"]
#: Examples per strategy.
EXAMPLES = 150
#: Requests in flight at once.
CONCURRENCY = 40


def draw(strategy: st.SearchStrategy[Any], count: int = EXAMPLES) -> list[Any]:
    """
    C{count} examples of C{strategy}, the same on every run.
    """
    found: list[Any] = []

    @given(strategy)
    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


# -- strategies ---------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
#: A cheaper stand-in for any JSON value, for the many fields of a body:
#: scalars and flat containers of them.
junk = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)


def _or_anything(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """
    Mostly C{strategy}, sometimes any JSON value.
    """
    return st.one_of(strategy, strategy, strategy, junk)


text_blocks = st.fixed_dictionaries(
    {"type": _or_anything(st.sampled_from(["text", "image", "image_url"]))},
    optional={
        "text": _or_anything(st.text(max_size=30)),
        "source": junk,
        "image_url": junk,
        "cache_control": junk,
    },
)
tool_blocks = st.fixed_dictionaries(
    {"type": _or_anything(st.sampled_from(["tool_use", "tool_result"]))},
    optional={
        "id": _or_anything(st.text(max_size=10)),
        "name": _or_anything(st.text(max_size=10)),
        "input": _or_anything(st.dictionaries(st.text(max_size=5), junk)),
        "tool_use_id": _or_anything(st.text(max_size=10)),
        "content": _or_anything(st.text(max_size=10) | st.lists(text_blocks)),
        "is_error": junk,
    },
)
contents = _or_anything(
    st.text(max_size=40) | st.lists(text_blocks | tool_blocks, max_size=3)
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": _or_anything(st.text(max_size=10)),
            "type": _or_anything(st.just("function")),
            "function": _or_anything(
                st.fixed_dictionaries(
                    {
                        "name": _or_anything(st.text(max_size=10)),
                        "arguments": _or_anything(
                            st.text(max_size=20)
                            | st.dictionaries(st.text(max_size=5), junk).map(json.dumps)
                        ),
                    }
                )
            ),
        }
    ),
    max_size=2,
)
messages = st.lists(
    _or_anything(
        st.fixed_dictionaries(
            {
                "role": _or_anything(
                    st.sampled_from(
                        ["user", "assistant", "system", "tool", "developer", "bot"]
                    )
                )
            },
            optional={
                "content": contents,
                "tool_calls": _or_anything(tool_calls),
                "tool_call_id": _or_anything(st.text(max_size=10)),
                "name": junk,
            },
        )
    ),
    max_size=4,
)
tools = st.lists(
    _or_anything(
        st.fixed_dictionaries(
            {},
            optional={
                "type": _or_anything(st.just("function")),
                "name": _or_anything(st.text(max_size=10)),
                "description": junk,
                "input_schema": junk,
                "parameters": junk,
                "function": _or_anything(
                    st.fixed_dictionaries(
                        {"name": _or_anything(st.text(max_size=10))},
                        optional={"parameters": junk, "description": scalars},
                    )
                ),
            },
        )
    ),
    max_size=2,
)
tool_choice = _or_anything(
    st.sampled_from(["auto", "none", "required", "any"])
    | st.fixed_dictionaries(
        {"type": _or_anything(st.sampled_from(["auto", "any", "tool", "function"]))},
        optional={"name": junk, "function": junk},
    )
)
#: Request bodies that look like completion requests, with any part wrong.
wild_bodies = st.fixed_dictionaries(
    {
        "model": st.one_of(
            st.sampled_from(MODELS),
            st.sampled_from(MODELS),
            st.sampled_from(MODELS),
            st.text(max_size=10),
            junk,
        )
    },
    optional={
        "messages": st.one_of(messages, messages, json_values),
        "stream": _or_anything(st.booleans()),
        "max_tokens": _or_anything(st.integers(min_value=-2, max_value=12)),
        "max_completion_tokens": _or_anything(st.integers(min_value=-2, max_value=12)),
        "tools": st.one_of(tools, tools, json_values),
        "tool_choice": tool_choice,
        "system": _or_anything(st.text(max_size=20) | st.lists(text_blocks)),
        "stream_options": _or_anything(
            st.fixed_dictionaries({}, optional={"include_usage": junk})
        ),
        "temperature": junk,
        "top_p": junk,
        "stop": junk,
        "stop_sequences": junk,
        "n": junk,
        "user": junk,
        "seed": junk,
        "metadata": json_values,
        "response_format": junk,
        "thinking": junk,
    },
)


#: Valid requests of either API, with some of the wild keys on top.
nearly_valid_bodies = st.builds(
    lambda core, extra: {**extra, **core},
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(MODELS),
            "messages": st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.sampled_from(["user", "assistant"]),
                        "content": st.text(max_size=30),
                    }
                ),
                min_size=1,
                max_size=3,
            ),
            "max_tokens": st.integers(min_value=1, max_value=12),
        },
        optional={"stream": st.booleans()},
    ),
    wild_bodies,
)
plausible_bodies = st.one_of(wild_bodies, nearly_valid_bodies)


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


#: Bodies that are not a JSON object (mostly not JSON at all).
not_json_objects = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=20).map(lambda b: b'{"model": "mock", ' + b),
).filter(lambda data: not _is_json_object(data))


class FuzzRoutesTests(TestCase):
    """
    The completion routes against generated bodies, with the C{mock} model
    and a custom model over a fake that answers at once.
    """

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        fake = FakeProvider(
            reactor, default_reply=FakeReply(chunks=["fast ", "reply"], usage=(3, 2))
        )
        await fake.start()
        self.addCleanup(fake.stop)
        models = [
            {"name": "mock", "provider": "mock"},
            {
                "name": "fast",
                "provider": "custom",
                "base_url": fake.base_url,
                "api_key": "",
                "retries": 0,
            },
        ]
        self.gw = Gateway(parse_config({"models": models}, {}), reactor)
        self.addCleanup(self.gw.close)
        site = make_site(self.gw)
        self.addCleanup(site.close_connections, reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.http = HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        )
        self.semaphore = DeferredSemaphore(CONCURRENCY)

    async def _post(self, route: str, data: bytes) -> tuple[int, bytes, bytes]:
        d: Deferred[Any] = self.http.post(
            self.url + route,
            data=data,
            headers={"content-type": "application/json"},
        )
        response = await d.addTimeout(30, reactor)
        body = await treq.content(response)
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        return response.code, ctype, body

    async def post_all(
        self, requests: list[tuple[str, bytes]]
    ) -> list[tuple[int, bytes, bytes]]:
        """
        POST every C{(route, body)}, C{CONCURRENCY} at a time.
        """
        return await gatherResults(
            [
                self.semaphore.run(
                    lambda r=route, b=data: Deferred.fromCoroutine(self._post(r, b))
                )
                for route, data in requests
            ]
        )

    def error_shape(self, route: str, status: int, ctype: bytes, body: bytes) -> None:
        self.assertEqual(ctype, b"application/json", (status, body))
        obj = json.loads(body)
        if ROUTES[route] == "openai":
            self.assertEqual(list(obj), ["error"], body)
            self.assertIsInstance(obj["error"]["message"], str, body)
            self.assertIsInstance(obj["error"]["type"], str, body)
        else:
            self.assertEqual(obj["type"], "error", body)
            self.assertIsInstance(obj["error"]["message"], str, body)
            self.assertIsInstance(obj["error"]["type"], str, body)

    def answered_well(
        self, route: str, sent: Any, answer: tuple[int, bytes, bytes]
    ) -> None:
        """
        A success in the route's format, or an error in its shape that is the
        client's (4xx) or an upstream's (502, 504): never the service's own.
        """
        status, ctype, body = answer
        where = f"{route} {sent!r} -> {status} {body[:300]!r}"
        self.assertTrue(status < 500 or status in (502, 504), where)
        if status >= 400:
            self.error_shape(route, status, ctype, body)
        elif ctype.startswith(b"text/event-stream"):
            self.assertEqual(status, 200, where)
            self.assertNotIn(b'"error"', body, where)
            events = sse_events(body)
            if ROUTES[route] == "openai":
                self.assertEqual(events[-1], (None, "[DONE]"), where)
            else:
                self.assertEqual(events[-1][0], "message_stop", where)
        else:
            self.assertEqual(status, 200, where)
            json.loads(body)

    def nothing_wrong_logged(self) -> None:
        """
        No event at error level or above, no failure, no traceback.
        """
        bad = []
        for event in self.logged:
            level = event.get("log_level")
            text = repr(event)
            if (
                (level is not None and level >= LogLevel.error)
                or "log_failure" in event
                or "Traceback" in text
                or event.get("isError")
            ):
                bad.append(text[:2000])
        self.assertEqual(bad, [])

    def nothing_left(self) -> None:
        self.assertEqual(self.gw.active, set())
        self.assertEqual(self.gw.limits.in_flight, 0)
        self.assertEqual(
            self.gw.metrics.registry.get_sample_value("pylon_streams_in_flight"), 0
        )
        for group in self.gw.backends.values():
            for backend in group:
                self.assertEqual(backend.in_flight, 0)

    async def test_json_values(self) -> None:
        """
        Any JSON value at all, on both routes.
        """
        values = draw(json_values)
        await self._check_json(values)

    async def test_plausible_bodies(self) -> None:
        """
        Objects with the keys of completion requests, of any type, mostly
        naming a configured model.
        """
        bodies = draw(plausible_bodies)
        self.assertGreater(len(bodies), EXAMPLES // 2)
        answers = await self._check_json(bodies)
        # The strategy must reach the models, not stop at the checks.
        self.assertGreater(sum(1 for status, _, _ in answers if status == 200), 10)

    async def _check_json(self, values: list[Any]) -> list[tuple[int, bytes, bytes]]:
        requests = []
        for value in values:
            data = json.dumps(value).encode("utf-8")
            for route in ROUTES:
                requests.append((route, data, value))
        answers = await self.post_all([(r, d) for r, d, _ in requests])
        for (route, _, value), answer in zip(requests, answers, strict=True):
            self.answered_well(route, value, answer)
            if not isinstance(value, dict):
                self.assertEqual(answer[0], 400, (route, value, answer))
            elif value.get("model") in MODELS:
                # Never "not configured" for a configured model.
                self.assertNotEqual(answer[0], 404, (route, value, answer))
        self.nothing_wrong_logged()
        self.nothing_left()
        return answers

    async def test_not_json(self) -> None:
        """
        A body that is not a JSON object gets a 400 in the route's shape.
        """
        bodies = draw(not_json_objects)
        requests = [(route, data) for data in bodies for route in ROUTES]
        answers = await self.post_all(requests)
        for (route, data), answer in zip(requests, answers, strict=True):
            status, ctype, body = answer
            self.assertEqual(status, 400, (route, data, body))
            self.error_shape(route, status, ctype, body)
        self.nothing_wrong_logged()
        self.nothing_left()
