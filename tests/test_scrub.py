"""
Nothing an upstream says shows a key, and nothing a client sees names an
upstream's address: L{pylon_ai._errors.Scrubber}, the library's
L{ProviderError}s, and the gateway's HTTP and WebSocket errors and logs.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pylon_ai import (
    AiMessage,
    AiProxyPlugin,
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
)
from pylon_ai._errors import REDACTED, Scrubber
from pylon_ai.gateway._apierrors import api_error
from pylon_ai.gateway._config import parse_config
from pylon_ai.testing import FakeProvider, FakeReply

try:
    from tests._service import (
        ANTHROPIC_UPSTREAM_KEY,
        CLIENT_KEY,
        OPENAI_UPSTREAM_KEY,
        models,
    )
    from tests.test_service_http import CHAT, MESSAGES, _HTTPCase
    from tests.test_websocket import WebSocketTestsMixin
except ImportError:  # run from inside tests/
    from _service import (  # type: ignore[no-redef]
        ANTHROPIC_UPSTREAM_KEY,
        CLIENT_KEY,
        OPENAI_UPSTREAM_KEY,
        models,
    )
    from test_service_http import CHAT, MESSAGES, _HTTPCase  # type: ignore[no-redef]
    from test_websocket import WebSocketTestsMixin  # type: ignore[no-redef]

KEY = "sk-plugin-secret-0123456789"
HELLO = [AiMessage.user("Hello")]
KEYS = (ANTHROPIC_UPSTREAM_KEY, OPENAI_UPSTREAM_KEY, CLIENT_KEY)


def echo(key: str) -> str:
    """
    What an upstream that echoes the request's headers says.
    """
    return f"bad request; headers were authorization: Bearer {key}, x-api-key: {key}"


class ScrubberTests(SynchronousTestCase):
    """
    L{Scrubber} removes configured secrets, anything that looks like a
    credential, and the upstream addresses it was given.
    """

    def test_secrets(self) -> None:
        scrub = Scrubber(["sk-one-secret", "other/secret+key"]).text
        self.assertEqual(scrub("a sk-one-secret b"), f"a {REDACTED} b")
        # Wherever it stands, and as JSON escapes it.
        self.assertNotIn("sk-one-secret", scrub("xsk-one-secretx"))
        self.assertNotIn("secret+key", scrub('{"k": "other\\/secret+key"}'))

    def test_short_and_empty_secrets(self) -> None:
        """
        An empty key scrubs nothing (it would match everywhere).
        """
        self.assertEqual(Scrubber([""]).text("hello"), "hello")

    def test_credential_shapes(self) -> None:
        """
        Unconfigured credentials are scrubbed by their shape: header values
        in HTTP, JSON or Python notation, bearer tokens, OpenAI-style keys.
        """
        scrub = Scrubber().text
        token = "abcdEFGH12345678zz"
        for said in [
            f"Authorization: Bearer {token}",
            f"authorization: {token}",
            f'{{"authorization": "Bearer {token}"}}',
            f"{{'Authorization': 'Bearer {token}'}}",
            f'{{\\"x-api-key\\": \\"{token}\\"}}',
            f"x-api-key: {token}",
            f"X-Api-Key={token}",
            f'"api_key": "{token}"',
            f"token was Bearer {token}.",
            f"proxy-authorization: Basic {token}",
            f"key sk-proj-{token}",
        ]:
            out = scrub(said)
            self.assertNotIn(token, out, said)
            self.assertIn(REDACTED, out, said)
        for harmless in ["Bearer token required", "x-api-key header missing"]:
            self.assertEqual(scrub(harmless), harmless)

    def test_cut_secret(self) -> None:
        """
        A text cut in the middle of a key (a body excerpt) does not keep the
        start of the key.
        """
        scrub = Scrubber(["sk-abcdefghijklmnop"]).text
        self.assertNotIn("sk-abcdefgh", scrub("the key is sk-abcdefgh"))

    def test_addresses(self) -> None:
        """
        The given upstreams' addresses go, with or without scheme, port and
        path.
        """
        scrub = Scrubber(
            addresses=["http://10.1.2.3:8000/v1/chat/completions", "https://api.x.com"]
        ).text
        for said in [
            "POST http://10.1.2.3:8000/v1/chat/completions failed",
            "at 10.1.2.3:8000",
            "host 10.1.2.3 said no",
            "see https://api.x.com/v1/messages",
            "api.x.com:443 refused",
        ]:
            out = scrub(said)
            self.assertNotIn("10.1.2.3", out, said)
            self.assertNotIn("api.x.com", out, said)
            self.assertNotIn("8000", out, said)
        self.assertEqual(scrub("see https://docs.y.com/x"), "see https://docs.y.com/x")

    def test_error(self) -> None:
        """
        L{Scrubber.error} scrubs a L{ProviderError}'s message, body and text
        in place.
        """
        error = ProviderError(
            "said sk-one-secret", status=400, body='{"k": "sk-one-secret"}'
        )
        self.assertIs(Scrubber(["sk-one-secret"]).error(error), error)
        for text in (error.message, error.body, str(error), repr(error)):
            self.assertNotIn("sk-one-secret", text)


class ProviderErrorTextTests(SynchronousTestCase):
    """
    C{str()} of a L{ProviderError} reads well, without L{None}s.
    """

    def test_http(self) -> None:
        error = ProviderError(
            "https://api.x.com returned HTTP 429: Slow down.",
            status=429,
            error_type="rate_limit_error",
        )
        self.assertEqual(
            str(error),
            "HTTP 429 rate_limit_error: https://api.x.com returned HTTP 429: "
            "Slow down.",
        )

    def test_no_response(self) -> None:
        error = ProviderConnectionError("cannot connect to https://api.x.com:443")
        self.assertEqual(
            str(error), "no response: cannot connect to https://api.x.com:443"
        )
        self.assertNotIn("None", str(error))

    def test_stream(self) -> None:
        error = ProviderStreamError("the stream broke off", error_type="api_error")
        self.assertEqual(str(error), "api_error: the stream broke off")
        self.assertEqual(str(ProviderStreamError("x")), "x")


class ApiErrorTests(SynchronousTestCase):
    """
    L{api_error} never shows a client our label for the upstream.
    """

    def test_plain_text_400(self) -> None:
        error = api_error(
            ProviderError(
                "http://10.1.2.3:8000 returned HTTP 400: nope",
                status=400,
                body="nope",
            )
        )
        self.assertEqual(error.status, 400)
        self.assertNotIn("10.1.2.3", error.message)
        self.assertIn("nope", error.message)

    def test_empty_400(self) -> None:
        error = api_error(
            ProviderError("http://10.1.2.3:8000 returned HTTP 400", status=400)
        )
        self.assertEqual(error.status, 400)
        self.assertNotIn("10.1.2.3", error.message)


class PluginScrubTests(TestCase):
    """
    The library scrubs its own key from every L{ProviderError} it raises: a
    library user may log them.
    """

    timeout = 15

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        from twisted.internet import reactor

        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)
        self.client = self.fake.http_client()

    def plugins(self) -> list[AiProxyPlugin]:
        base = self.fake.base_url
        return [
            AiProxyPlugin.anthropic(KEY, "c", base_url=base, http_client=self.client),
            AiProxyPlugin.openai(KEY, "g", base_url=base, http_client=self.client),
            AiProxyPlugin.custom(base, KEY, http_client=self.client),
        ]

    def check(self, error: ProviderError) -> None:
        texts = [error.message, error.body or "", str(error), repr(error)]
        for text in texts:
            self.assertNotIn(KEY, text)
        self.assertIn(REDACTED, error.message + (error.body or ""))

    async def test_error_body_echoes_key(self) -> None:
        for plugin in self.plugins():
            self.fake.enqueue(FakeReply(status=400, message=echo(KEY)))
            error = await self.assertFailure(plugin.completion(HELLO), ProviderError)
            self.assertEqual(error.status, 400)
            self.check(error)

    async def test_plain_text_body_echoes_key(self) -> None:
        for plugin in self.plugins():
            self.fake.enqueue(
                FakeReply(
                    status=400,
                    raw_body=echo(KEY).encode(),
                    headers={"content-type": "text/plain"},
                )
            )
            error = await self.assertFailure(plugin.completion(HELLO), ProviderError)
            self.check(error)

    async def test_stream_error_echoes_key(self) -> None:
        for plugin in self.plugins():
            self.fake.enqueue(
                FakeReply(
                    chunks=["a"],
                    stream_error=True,
                    error_type="invalid_request_error",
                    message=echo(KEY),
                )
            )
            error = await self.assertFailure(plugin.completion(HELLO), ProviderError)
            self.check(error)


class _LogCapture:
    """
    Every log event emitted while a test runs, as text.
    """

    def start(self, case: TestCase) -> None:
        self.emitted: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += failure.getTraceback()
            self.emitted.append(text + repr(sorted(map(str, event.values()))))

        globalLogPublisher.addObserver(observe)
        case.addCleanup(globalLogPublisher.removeObserver, observe)


class GatewayScrubTests(_HTTPCase):
    """
    Whatever an upstream says on the HTTP routes, in both formats and with
    both upstream formats, no client and no log sees a configured key or the
    upstream's address.
    """

    def setUp(self) -> Deferred[None]:
        self.logs = _LogCapture()
        self.logs.start(self)
        return super().setUp()

    def routes(self, stream: bool) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for route in (CHAT, MESSAGES):
            for model in ("gpt", "claude"):
                body: dict[str, Any] = {
                    "model": model,
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": stream,
                }
                if route == MESSAGES:
                    body["max_tokens"] = 10
                out.append((route, body))
        return out

    def check(self, what: str, content: bytes) -> str:
        text = content.decode("utf-8", "replace")
        for key in KEYS:
            self.assertNotIn(key, text, what)
        port = self.fake.base_url.rsplit(":", 1)[1]
        self.assertNotIn(f"127.0.0.1:{port}", text, what)
        self.assertNotIn(f":{port}", text, what)
        return text

    def check_logs(self) -> None:
        self.assertGreater(len(self.logs.emitted), 0)
        for text in self.logs.emitted:
            for key in KEYS:
                self.assertNotIn(key, text, "the log")

    async def test_error_body_echoes_key(self) -> None:
        """
        An upstream 400 whose message repeats our request headers keeps its
        status, and the key is gone from what the client gets.
        """
        for route, body in self.routes(stream=False) + self.routes(stream=True):
            key = (
                ANTHROPIC_UPSTREAM_KEY
                if body["model"] == "claude"
                else (OPENAI_UPSTREAM_KEY)
            )
            self.fake.enqueue(FakeReply(status=400, message=echo(key)))
            status, _, content = await self.post(route, body)
            what = f"{route} {body['model']} stream={body['stream']}"
            self.assertEqual(status, 400, what)
            text = self.check(what, content)
            self.assertIn("bad request", text, what)
            self.assertIn(REDACTED, text, what)
        self.check_logs()

    async def test_other_keys(self) -> None:
        """
        Every configured secret is scrubbed, not only the deployment's own.
        """
        said = f"keys {CLIENT_KEY} {ANTHROPIC_UPSTREAM_KEY} {OPENAI_UPSTREAM_KEY}"
        self.fake.enqueue(FakeReply(status=400, message=said))
        status, _, content = await self.post(
            CHAT, {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
        )
        self.assertEqual(status, 400)
        self.check("other keys", content)

    async def test_plain_text_400(self) -> None:
        """
        A text/plain 400 that names the upstream's own URL: the client gets
        the upstream's words, without our label for the upstream or its
        address.
        """
        for route, body in self.routes(stream=False):
            said = f"Bad request for {self.fake.base_url}/v1/x from Bearer {KEY}"
            self.fake.enqueue(
                FakeReply(
                    status=400,
                    raw_body=said.encode(),
                    headers={"content-type": "text/plain"},
                )
            )
            status, _, content = await self.post(route, body)
            self.assertEqual(status, 400, route)
            text = self.check(route, content)
            self.assertNotIn("127.0.0.1", text, route)
            self.assertNotIn(KEY, text, route)
            self.assertIn("Bad request for", text, route)
        self.check_logs()

    async def test_stream_error_event_echoes_key(self) -> None:
        """
        An error event inside a 200 stream that repeats the key: neither the
        error event of a stream nor a whole error body shows it.  (A
        same-format non-streaming request is not streamed upstream.)
        """
        translated = [
            (route, body)
            for route, body in self.routes(stream=False)
            if (route == CHAT) != (body["model"] == "gpt")
        ]
        for route, body in self.routes(stream=True) + translated:
            key = (
                ANTHROPIC_UPSTREAM_KEY
                if body["model"] == "claude"
                else (OPENAI_UPSTREAM_KEY)
            )
            self.fake.enqueue(
                FakeReply(
                    chunks=["a"],
                    stream_error=True,
                    error_type="invalid_request_error",
                    message=echo(key),
                )
            )
            status, _, content = await self.post(route, body)
            what = f"{route} {body['model']} stream={body['stream']}"
            text = self.check(what, content)
            self.assertIn("error", text, what)
            if body["stream"]:
                self.assertEqual(status, 200, what)
                self.assertIn(REDACTED, text, what)
        self.check_logs()


class WebSocketScrubTests(WebSocketTestsMixin, TestCase):
    """
    The same over the WebSocket.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        return Deferred.fromCoroutine(self._start_fake())

    async def _start_fake(self) -> None:
        from twisted.internet import reactor

        self.fake = FakeProvider(reactor)
        await self.fake.start()
        self.addCleanup(self.fake.stop)
        self.config = parse_config({"models": models(self.fake.base_url)}, {})
        super().setUp()

    async def test_errors(self) -> None:
        client = await self.connect(origin=self.origin())
        self.fake.enqueue(
            FakeReply(status=400, message=echo(OPENAI_UPSTREAM_KEY)),
            FakeReply(
                status=400,
                raw_body=f"no {self.fake.base_url}/v1".encode(),
                headers={"content-type": "text/plain"},
            ),
            FakeReply(
                chunks=["a"],
                stream_error=True,
                error_type="invalid_request_error",
                message=echo(ANTHROPIC_UPSTREAM_KEY),
            ),
        )
        for i, model in enumerate(["gpt", "gpt", "claude"]):
            client.send_json(
                {
                    "type": "completion",
                    "id": f"r{i}",
                    "model": model,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            )
            error = await client.wait_type("error", f"r{i}")
            text = json.dumps(error)
            for key in KEYS:
                self.assertNotIn(key, text)
            self.assertNotIn(self.fake.base_url.rsplit(":", 1)[1], text)
            self.assertEqual(error["error"]["type"], "invalid_request_error")
