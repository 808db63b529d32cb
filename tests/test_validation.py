"""
Request validation: the checks every completion request passes before it goes
anywhere (L{check_request}), on both HTTP routes and the WebSocket, and the
upstream model a C{custom} model without one sends.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import treq
from treq.client import HTTPClient

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from pylon_ai.formats.errors import TranslationError
from pylon_ai.gateway._config import parse_config
from pylon_ai.gateway._gateway import Api, check_request
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._service import Service, models, start_service
    from tests.test_websocket import WebSocketTestsMixin, _completion
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import Service, models, start_service  # type: ignore[no-redef]
    from test_websocket import (  # type: ignore[no-redef]
        WebSocketTestsMixin,
        _completion,
    )

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "hi"}]
INF = float("inf")
NAN = float("nan")


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt", "messages": HI, **extra}


def message(**extra: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 50, "messages": HI, **extra}


#: Bad fields either API refuses, each with the param the error names.
_BOTH: list[tuple[dict[str, Any], str]] = [
    ({"model": ""}, "model"),
    ({"model": 5}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [3]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [*HI, {"role": 1, "content": "x"}]}, "messages[1].role"),
    ({"stream": "yes"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 10.0}, "max_tokens"),
    ({"temperature": {}}, "temperature"),
    ({"temperature": "0.5"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"temperature": NAN}, "temperature"),
    ({"temperature": INF}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -INF}, "top_p"),
    ({"top_p": [1]}, "top_p"),
]
_OPENAI: list[tuple[dict[str, Any], str]] = [
    ({"max_completion_tokens": "10"}, "max_completion_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"n": 0}, "n"),
    ({"n": "2"}, "n"),
    ({"n": False}, "n"),
    ({"stop": 5}, "stop"),
    ({"stop": ["a", 1]}, "stop[1]"),
    ({"stream_options": "yes"}, "stream_options"),
]
_ANTHROPIC: list[tuple[dict[str, Any], str]] = [
    ({"temperature": 1.5}, "temperature"),
    ({"stop_sequences": "x"}, "stop_sequences"),
    ({"stop_sequences": ["x", None]}, "stop_sequences[1]"),
]


class CheckRequestTests(SynchronousTestCase):
    """
    L{check_request} refuses what the gateway relies on or what both formats
    share when it is malformed, naming the field, and lets the rest through.
    """

    def refused(self, api: Api, body: Any) -> TranslationError:
        e = self.assertRaises(TranslationError, check_request, api, body)
        assert isinstance(e, TranslationError)
        return e

    def test_bad_fields(self) -> None:
        """
        Every bad field is refused with its name as C{param}, and the
        message names it too (Anthropic's shape has no C{param}).
        """
        cases: list[tuple[Api, dict[str, Any], dict[str, Any], str]] = [
            *[("openai", chat(), f, p) for f, p in _BOTH + _OPENAI],
            *[("anthropic", message(), f, p) for f, p in _BOTH + _ANTHROPIC],
        ]
        for api, base, fields, param in cases:
            e = self.refused(api, {**base, **fields})
            self.assertEqual((api, fields, e.param), (api, fields, param))
            self.assertIn(param, e.message)

    def test_not_an_object(self) -> None:
        for api in ("openai", "anthropic"):
            self.assertIsNone(self.refused(api, [1, 2]).param)  # type: ignore[arg-type]

    def test_max_tokens_required_by_messages(self) -> None:
        """
        C{/v1/messages} requires C{max_tokens}, as Anthropic does, with
        Anthropic's message.
        """
        for value in (None, "missing"):
            body = message()
            if value == "missing":
                del body["max_tokens"]
            else:
                body["max_tokens"] = value
            e = self.refused("anthropic", body)
            self.assertEqual(e.param, "max_tokens")
            self.assertEqual(e.message, "max_tokens: Field required")

    def test_good_requests_untouched(self) -> None:
        """
        Valid values pass, bounds included; other fields are not looked at,
        and nothing is changed.
        """
        openai = [
            chat(),
            chat(max_tokens=1, max_completion_tokens=10**6, n=2, stream=True),
            chat(temperature=0, top_p=1),
            chat(temperature=2.0, top_p=0.0),
            chat(max_tokens=None, temperature=None, stop=None, n=None),
            chat(stop="x"),
            chat(stop=[]),
            chat(stop=["a", "b"], stream_options={"include_usage": True}),
            chat(logit_bias={"1": "anything"}, seed="not ours to check", foo=[{}]),
        ]
        anthropic = [
            message(),
            message(temperature=1, top_p=0.5, stop_sequences=["\n\n"]),
            message(stream=False, metadata=7, thinking="whatever"),
        ]
        for api, bodies in (("openai", openai), ("anthropic", anthropic)):
            for body in bodies:
                before = copy.deepcopy(body)
                check_request(api, body)  # type: ignore[arg-type]
                self.assertEqual(body, before)


class _HTTPCase(TestCase):
    timeout = 20
    service: Service

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.service = await start_service(self, {})
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def post(self, path: str, body: bytes | dict[str, Any]) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        d = self.http.post(
            self.service.url + path,
            data=data,
            headers={"content-type": "application/json"},
        )
        response = await d.addTimeout(10, reactor)
        return response.code, json.loads(await treq.content(response))


class HTTPValidationTests(_HTTPCase):
    """
    Both routes answer a bad request with a 400 in their own shape, before
    anything goes upstream.
    """

    async def assert_openai_400(self, body: bytes | dict[str, Any], param: str) -> None:
        status, answer = await self.post(CHAT, body)
        self.assertEqual(status, 400, answer)
        error = answer["error"]
        self.assertEqual(set(error), {"message", "type", "param", "code"})
        self.assertEqual(
            (error["type"], error["param"]), ("invalid_request_error", param)
        )
        self.assertIn(param, error["message"])

    async def assert_anthropic_400(self, body: bytes | dict[str, Any]) -> str:
        status, answer = await self.post(MESSAGES, body)
        self.assertEqual(status, 400, answer)
        self.assertEqual(answer["type"], "error")
        self.assertEqual(answer["error"]["type"], "invalid_request_error")
        message: str = answer["error"]["message"]
        return message

    async def test_nan_refused(self) -> None:
        """
        C{NaN} is not JSON: a 400, never forwarded as the literal.
        """
        hi = json.dumps(HI)
        body = f'{{"model": "gpt", "messages": {hi}, "temperature": NaN}}'
        status, answer = await self.post(CHAT, body.encode())
        self.assertEqual(status, 400)
        self.assertEqual(answer["error"]["type"], "invalid_request_error")
        body = body.replace('"gpt",', '"claude", "max_tokens": 5,')
        await self.assert_anthropic_400(body.encode())
        self.assertEqual(self.service.fake.requests, [])

    async def test_infinity_refused(self) -> None:
        """
        A number too large for a float (C{1e999}) is infinite: refused.
        """
        hi = json.dumps(HI)
        body = f'{{"model": "gpt", "messages": {hi}, "temperature": 1e999}}'
        await self.assert_openai_400(body.encode(), "temperature")
        self.assertEqual(self.service.fake.requests, [])

    async def test_same_format_fields_checked(self) -> None:
        """
        A request the gateway passes through unchanged is still checked.
        """
        await self.assert_openai_400(chat(max_tokens="10"), "max_tokens")
        await self.assert_openai_400(chat(max_tokens=-1), "max_tokens")
        await self.assert_openai_400(chat(temperature={}), "temperature")
        await self.assert_openai_400(chat(n=0), "n")
        await self.assert_openai_400(chat(stop=[1]), "stop[0]")
        self.assertIn("top_p", await self.assert_anthropic_400(message(top_p="1")))
        self.assertIn(
            "temperature", await self.assert_anthropic_400(message(temperature=3))
        )
        self.assertEqual(self.service.fake.requests, [])

    async def test_empty_messages(self) -> None:
        """
        C{messages: []} is refused on the OpenAI route too, as on the WebSocket.
        """
        await self.assert_openai_400(chat(messages=[]), "messages")
        self.assertEqual(self.service.fake.requests, [])

    async def test_messages_requires_max_tokens(self) -> None:
        """
        C{/v1/messages} without C{max_tokens}: Anthropic's 400, naming it.
        """
        body = message()
        del body["max_tokens"]
        self.assertEqual(
            await self.assert_anthropic_400(body), "max_tokens: Field required"
        )
        self.assertEqual(self.service.fake.requests, [])

    async def test_rest_untouched(self) -> None:
        """
        Fields the gateway does not rely on reach a same-format upstream as
        they were.
        """
        self.service.fake.enqueue(FakeReply(["ok"]))
        extra = {"n": 1, "stop": ["x"], "logit_bias": {"50256": -100}, "x_y": [None]}
        status, _ = await self.post(CHAT, chat(**extra))
        self.assertEqual(status, 200)
        sent = self.service.fake.requests[0].json
        self.assertEqual({k: sent[k] for k in extra}, extra)


class WebSocketValidationTests(WebSocketTestsMixin, TestCase):
    """
    WebSocket completions pass the same checks, and reach a C{custom}
    upstream with a model name.
    """

    timeout = 20

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.fake = FakeProvider(reactor)
        d = self.fake.start()
        self.addCleanup(self.fake.stop)

        def started(_: object) -> None:
            self.config = parse_config({"models": models(self.fake.base_url)}, {})
            WebSocketTestsMixin.setUp(self)

        return d.addCallback(started)

    async def test_same_checks(self) -> None:
        """
        The WebSocket refuses what the HTTP routes refuse, naming the field.
        """
        client = await self.connect()
        bad = [
            ({"temperature": 2.5}, "temperature"),
            ({"temperature": INF}, "temperature"),
            ({"max_tokens": "10"}, "max_tokens"),
            ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ]
        for i, (fields, _) in enumerate(bad):
            request = {**_completion(f"b{i}", "x"), **fields}
            # An infinity as JSON can write it: a number too large for a float.
            text = json.dumps(request).replace("Infinity", "1e999")
            client.sendMessage(text.encode(), isBinary=False)
        client.send_json(_completion("ok", "fine"))
        await client.wait_type("done", "ok")
        for i, (_, param) in enumerate(bad):
            [error] = client.of(f"b{i}")
            self.assertEqual(error["type"], "error")
            self.assertEqual(error["error"]["type"], "invalid_request_error")
            self.assertIn(param, error["error"]["message"])

    async def test_custom_without_model(self) -> None:
        """
        A C{custom} model without an upstream C{model} gets the name the
        client asked for.
        """
        self.fake.enqueue(FakeReply(["a"]))
        client = await self.connect()
        client.send_json(_completion("r1", "hi", model="local"))
        await client.wait_type("done", "r1")
        self.assertEqual(self.fake.requests[0].json["model"], "local")
