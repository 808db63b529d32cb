"""
The chat page at C{/}, in a real headless Chromium driven over the W3C
WebDriver protocol (plain HTTP to C{chromedriver}, no client library).

The service runs in a subprocess (C{python -m twisted pylon-ai}) because the
WebDriver calls block.  Debian's C{chromium} and C{chromium-driver} are
needed; the tests skip, saying so, where they are missing.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import pylon_ai

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = "/tmp/pylon_page.png"
#: The W3C key for an element reference.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
ENTER = "\ue007"
#: The client key of the keyed service.
KEY = "sk-page-key"
#: Seconds to wait for a process to be ready or for the page to get somewhere.
DEADLINE = 30.0

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,720",
    # Start on a blank page, not the packaged home page (no network here).
    "about:blank",
]

#: Records every state and text the last assistant reply goes through.
RECORD_REPLIES = """
window.__replies = [];
new MutationObserver(() => {
  const el = [...document.querySelectorAll('#messages .assistant')].pop();
  if (!el) return;
  const seen = [el.dataset.state, el.querySelector('.text').textContent];
  const last = window.__replies[window.__replies.length - 1];
  if (!last || last[0] !== seen[0] || last[1] !== seen[1]) window.__replies.push(seen);
}).observe(document.getElementById('messages'), {
  subtree: true, childList: true, characterData: true, attributes: true,
});
"""

#: Records every C{fetch()} the page makes: its URL, its C{Authorization}
#: header, and the type of the DOM event being dispatched when it was called.
RECORD_FETCHES = """
window.__fetches = [];
const original = window.fetch;
window.fetch = function (url, options) {
  const headers = new Headers((options && options.headers) || {});
  window.__fetches.push({
    url: String(url), authorization: headers.get('authorization'),
    during: window.event ? window.event.type : null,
  });
  return original.apply(this, arguments);
};
"""

#: Calls back once the expression (the first argument) is truthy.
WAIT_FOR = """
const check = new Function('return (' + arguments[0] + ');');
const done = arguments[arguments.length - 1];
(function poll() {
  let value = null;
  try { value = check(); } catch (e) {}
  if (value) done(value); else setTimeout(poll, 10);
})();
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _until(
    ready: Callable[[], bool], what: str, failed: Callable[[], str | None]
) -> None:
    """
    Wait, up to L{DEADLINE}, for C{ready()}; C{failed()} says why it never
    will (a process that exited).
    """
    deadline = time.monotonic() + DEADLINE
    while not ready():
        reason = failed()
        if reason is not None:
            raise AssertionError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not ready after {DEADLINE} s")
        time.sleep(0.05)


def _http(
    port: int, method: str, path: str, body: Any = None, timeout: float = 60
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data else {}
        connection.request(method, path, data, headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def _answers(port: int, path: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            status, _ = _http(port, "GET", path, timeout=2)
        except (OSError, ValueError):
            return False
        return status == 200

    return ready


class WebDriver:
    """
    A Chromium session, over the W3C WebDriver protocol.
    """

    def __init__(self, port: int, profile: str) -> None:
        self._port = port
        options = {
            "binary": CHROMIUM,
            "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"],
        }
        value = self._call(
            "POST",
            "/session",
            {
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": options,
                        # The DevTools network events: what Chromium puts on
                        # the wire, whatever the page's script does.
                        "goog:loggingPrefs": {"performance": "ALL"},
                    }
                }
            },
            prefix="",
        )
        self.session = value["sessionId"]
        self._call("POST", "/timeouts", {"script": DEADLINE * 1000, "implicit": 0})

    def _call(
        self, method: str, path: str, body: Any = None, prefix: str | None = None
    ) -> Any:
        if prefix is None:
            prefix = f"/session/{self.session}"
        status, reply = _http(self._port, method, prefix + path, body)
        value = reply.get("value") if isinstance(reply, dict) else None
        if status != 200:
            raise AssertionError(f"WebDriver {method} {path}: {status} {value}")
        return value

    def close(self) -> None:
        self._call("DELETE", "")

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        value = self._call("POST", "/element", {"using": "css selector", "value": css})
        return str(value[ELEMENT])

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def run(self, script: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": args})

    def wait(self, expression: str) -> Any:
        """
        Wait in the page (up to L{DEADLINE}) until C{expression} is truthy.
        """
        return self._call(
            "POST", "/execute/async", {"script": WAIT_FOR, "args": [expression]}
        )

    def network_events(self) -> list[dict[str, Any]]:
        """
        The DevTools C{Network.*} events since the last call, in order, each
        C{{"method": ..., "params": ...}}.
        """
        entries = self._call("POST", "/se/log", {"type": "performance"})
        events = [json.loads(entry["message"])["message"] for entry in entries]
        return [e for e in events if e["method"].startswith("Network.")]

    def screenshot(self, path: str) -> None:
        Path(path).write_bytes(base64.b64decode(self._call("GET", "/screenshot")))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _chromedriver() -> str | None:
    chromedriver = CHROMEDRIVER if os.access(CHROMEDRIVER, os.X_OK) else None
    chromedriver = chromedriver or shutil.which("chromedriver")
    return chromedriver if os.access(CHROMIUM, os.X_OK) else None


class _PageTestsMixin:
    """
    Starts the service, chromedriver and a browser once per class (starting
    Chromium is most of the cost), and gives each test a fresh load of the
    page with empty storage.

    @ivar config: The service's TOML configuration, if any.
    """

    config: str | None = None
    addClassCleanup: ClassVar[Callable[..., None]]
    port: ClassVar[int]
    shared_browser: ClassVar[WebDriver | None] = None
    browser: WebDriver
    server_log: ClassVar[Path]

    @classmethod
    def setUpClass(cls) -> None:
        cls.shared_browser = None
        chromedriver = _chromedriver()
        if chromedriver is None:
            return
        work = tempfile.mkdtemp(prefix="pylon-page-")
        cls.addClassCleanup(shutil.rmtree, work, True)

        cls.port = _free_port()
        package_parent = str(Path(pylon_ai.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH")) if p
        )
        command = [
            sys.executable,
            "-m",
            "twisted",
            "--log-format",
            "text",
            "pylon-ai",
            "--port",
            f"tcp:{cls.port}:interface=127.0.0.1",
        ]
        if cls.config is not None:
            config = Path(work) / "pylon.toml"
            config.write_text(cls.config)
            command += ["--config", str(config)]
        cls.server_log = Path(work) / "server.log"
        with open(cls.server_log, "wb") as log:
            server = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        cls.addClassCleanup(_stop, server)
        _until(
            _answers(cls.port, "/healthz"),
            "the service",
            lambda: None if server.poll() is None else cls._server_output(),
        )

        driver_port = _free_port()
        with open(Path(work) / "chromedriver.log", "wb") as log:
            driver = subprocess.Popen(
                [chromedriver, f"--port={driver_port}"],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        cls.addClassCleanup(_stop, driver)
        _until(
            _answers(driver_port, "/status"),
            "chromedriver",
            lambda: None if driver.poll() is None else "exited",
        )
        browser = WebDriver(driver_port, str(Path(work) / "profile"))
        cls.addClassCleanup(browser.close)
        cls.shared_browser = browser

    def setUp(self) -> None:
        if self.shared_browser is None:
            raise SkipTest(
                f"needs Chromium at {CHROMIUM} and chromedriver "
                "(apt-get install chromium chromium-driver)"
            )
        self.browser = self.shared_browser
        # Empty the origin's storage from a page without the chat's script,
        # then load the chat afresh.
        origin = f"http://127.0.0.1:{self.port}"
        self.browser.get(f"{origin}/healthz")
        self.browser.run("localStorage.clear(); sessionStorage.clear();")
        self.browser.get(f"{origin}/")
        self.browser.wait("document.readyState === 'complete'")
        self.browser.network_events()
        self.browser.run(RECORD_REPLIES)

    @classmethod
    def _server_output(cls) -> str:
        return "exited: " + cls.server_log.read_text(errors="replace")[-2000:]


class ChatPageTests(_PageTestsMixin, SynchronousTestCase):
    """
    The page lists models, streams a reply, stops one, and shows errors.
    """

    def setUp(self) -> None:
        super().setUp()
        self.browser.wait("document.querySelectorAll('#model option').length > 0")

    def test_lists_models(self) -> None:
        """
        The model select lists the configured models.
        """
        models = self.browser.run(
            "return [...document.querySelectorAll('#model option')].map(o => o.value)"
        )
        self.assertEqual(["mock"], models)
        self.assertTrue(
            self.browser.run("return document.getElementById('error').hidden")
        )

    def test_key_optional(self) -> None:
        """
        With no client keys configured the key field stays optional, with no
        hint, and a reply streams over a socket that sends no C{auth}.
        """
        field = self.browser.run(
            "const k = document.getElementById('api-key');"
            "return [k.placeholder, k.required, k.getAttribute('aria-invalid'),"
            " document.getElementById('key-hint').hidden]"
        )
        self.assertEqual(["optional", False, "false", True], field)
        self.browser.type("#prompt", "no key" + ENTER)
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state === 'done'"
        )
        sent = [
            json.loads(e["params"]["response"]["payloadData"])["type"]
            for e in self.browser.network_events()
            if e["method"] == "Network.webSocketFrameSent"
        ]
        self.assertEqual(["completion"], sent)

    def test_streams_reply(self) -> None:
        """
        Enter sends; the reply streams in chunk by chunk and ends C{done}
        with the model's text.
        """
        prompt = "tell me about streaming pages in a browser please"
        self.browser.type("#prompt", prompt + ENTER)
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state === 'done'"
        )
        replies = self.browser.run("return window.__replies")
        streaming = [text for state, text in replies if state == "streaming" and text]
        self.assertGreater(len(set(streaming)), 1, replies)
        state, text = replies[-1]
        self.assertEqual("done", state)
        self.assertIn(f"You said: {prompt}", text)
        for partial in streaming:
            self.assertTrue(text.startswith(partial))
        self.assertEqual(
            prompt,
            self.browser.run(
                "return document.querySelector('#messages .user').textContent"
            ),
        )
        self.assertTrue(
            self.browser.run("return document.getElementById('error').hidden")
        )
        self.assertEqual(
            "", self.browser.run("return document.getElementById('prompt').value")
        )
        self.browser.screenshot(SCREENSHOT)

    def test_stop(self) -> None:
        """
        Stop cancels the reply in flight.
        """
        self.browser.type("#prompt", " ".join(["word"] * 40))
        self.browser.click("#send")
        self.browser.wait(
            "document.querySelector('#messages .assistant .text')?.textContent"
        )
        self.browser.click("#stop")
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state "
            "=== 'cancelled'"
        )
        states = [state for state, _ in self.browser.run("return window.__replies")]
        self.assertNotIn("done", states)
        self.assertFalse(
            self.browser.run("return document.getElementById('send').disabled")
        )
        self.assertTrue(
            self.browser.run("return document.getElementById('stop').disabled")
        )

    def test_error_shown(self) -> None:
        """
        An error reply is shown in C{#error} (an alert), and the reply is
        marked C{error}.
        """
        self.browser.run(
            "const select = document.getElementById('model');"
            "select.append(new Option('no-such-model', 'no-such-model'));"
            "select.value = 'no-such-model';"
        )
        self.browser.type("#prompt", "hello")
        self.browser.click("#send")
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state === 'error'"
        )
        error = self.browser.run(
            "const e = document.getElementById('error');"
            "return [e.hidden, e.getAttribute('role'), e.textContent]"
        )
        self.assertEqual(False, error[0])
        self.assertEqual("alert", error[1])
        self.assertIn("no-such-model", error[2])
        self.assertIn("not_found_error", error[2])


class KeyedChatPageTests(_PageTestsMixin, SynchronousTestCase):
    """
    With client keys configured, the page says a key is required, reloads the
    models as one is typed, keeps the real auth error, and sends the key in
    the socket's C{auth} message, never in its URL.
    """

    config = f'[server]\napi_keys = ["{KEY}"]\n'

    def setUp(self) -> None:
        super().setUp()
        # The first model list, asked for without a key, answered 401.
        self.browser.wait("!document.getElementById('error').hidden")
        self.browser.run(RECORD_FETCHES)

    def _error(self) -> str | None:
        """
        The banner's text, or C{None} while it is hidden.
        """
        result: str | None = self.browser.run(
            "const e = document.getElementById('error');"
            "return e.hidden ? null : e.textContent"
        )
        return result

    def _key_field(self) -> dict[str, Any]:
        field: dict[str, Any] = self.browser.run(
            "const k = document.getElementById('api-key');"
            "const h = document.getElementById('key-hint');"
            "return {placeholder: k.placeholder, required: k.required,"
            " invalid: k.getAttribute('aria-invalid'),"
            " hint: h.hidden ? null : h.textContent,"
            " described: k.getAttribute('aria-describedby')}"
        )
        return field

    def _models(self) -> list[str]:
        models: list[str] = self.browser.run(
            "return [...document.querySelectorAll('#model option')].map(o => o.value)"
        )
        return models

    def _fetches(self) -> list[dict[str, Any]]:
        fetches: list[dict[str, Any]] = self.browser.run("return window.__fetches")
        return fetches

    def _sockets(self) -> tuple[list[str], list[dict[str, str]], list[Any]]:
        """
        What Chromium put on the wire for WebSockets: the URLs opened, the
        handshake requests' headers, and the frames in order as
        C{(direction, message)}.
        """
        urls: list[str] = []
        handshakes: list[dict[str, str]] = []
        frames: list[Any] = []
        for event in self.browser.network_events():
            method, params = event["method"], event["params"]
            if method == "Network.webSocketCreated":
                urls.append(params["url"])
            elif method == "Network.webSocketWillSendHandshakeRequest":
                handshakes.append(params["request"]["headers"])
            elif method in (
                "Network.webSocketFrameSent",
                "Network.webSocketFrameReceived",
            ):
                direction = "sent" if method.endswith("Sent") else "received"
                payload = json.loads(params["response"]["payloadData"])
                frames.append((direction, payload))
        return urls, handshakes, frames

    def test_key_required_after_401(self) -> None:
        """
        Once C{GET /v1/models} answers 401 the key field says the key is
        required, with a hint it is described by, and the banner says so.
        """
        field = self._key_field()
        self.assertEqual("required", field["placeholder"])
        self.assertTrue(field["required"])
        self.assertEqual("true", field["invalid"])
        self.assertEqual("key-hint", field["described"])
        self.assertIn("key", field["hint"] or "")
        self.assertIn("API key", self._error() or "")
        self.assertEqual(
            "required", self.browser.run("return document.body.dataset.key")
        )
        self.assertEqual([], self._models())
        self.assertEqual(
            "api-key", self.browser.run("return document.activeElement.id")
        )

    def test_typing_key_reloads_models(self) -> None:
        """
        Typing the key reloads the models once the typing pauses, with the
        key in the C{Authorization} header, without leaving the field; the
        field still says the key is required, and the banner goes.
        """
        self.browser.type("#api-key", KEY)
        self.browser.wait("document.querySelectorAll('#model option').length > 0")
        self.assertEqual(["mock"], self._models())
        self.assertEqual(
            "api-key", self.browser.run("return document.activeElement.id")
        )
        self.assertIsNone(self._error())
        field = self._key_field()
        self.assertEqual("required", field["placeholder"])
        self.assertEqual("false", field["invalid"])
        self.assertIsNone(field["hint"])
        fetches = self._fetches()
        self.assertEqual({"/v1/models"}, {f["url"] for f in fetches})
        self.assertEqual(f"Bearer {KEY}", fetches[-1]["authorization"])
        # Debounced: not one request per character typed.
        self.assertLess(len(fetches), len(KEY), fetches)

    def test_enter_reloads_models_at_once(self) -> None:
        """
        Enter in the key field reloads the models at once, within its
        keydown, not after the typing pause.
        """
        self.browser.type("#api-key", KEY + ENTER)
        self.browser.wait("document.querySelectorAll('#model option').length > 0")
        on_enter = [f for f in self._fetches() if f["during"] == "keydown"]
        self.assertEqual(
            [{"url": "/v1/models", "authorization": f"Bearer {KEY}"}],
            [{"url": f["url"], "authorization": f["authorization"]} for f in on_enter],
        )

    def test_wrong_key_send_keeps_auth_error(self) -> None:
        """
        With a wrong key the list stays empty and the banner says the key
        was not accepted; Send keeps that error rather than saying there is
        no model.
        """
        self.browser.type("#api-key", "sk-wrong" + ENTER)
        self.browser.wait(
            "document.getElementById('error').textContent.includes('not accepted')"
        )
        before = self._error()
        self.assertIn("API key", before or "")
        self.assertEqual("true", self._key_field()["invalid"])
        self.assertIn("not accepted", (self._key_field()["hint"] or "").lower())
        self.assertEqual([], self._models())
        self.browser.type("#prompt", "hello" + ENTER)
        self.browser.wait("document.activeElement.id === 'prompt'")
        self.assertEqual(before, self._error())
        self.assertIsNone(
            self.browser.run("return document.querySelector('#messages .assistant')")
        )
        self.assertEqual(
            "hello", self.browser.run("return document.getElementById('prompt').value")
        )

    def test_wrong_key_refused_on_socket(self) -> None:
        """
        A wrong key sent in the socket's C{auth} message gets the socket
        closed with 1008: the reply fails with the auth error, and no
        completion was sent before C{auth_ok}.
        """
        self.browser.type("#api-key", "sk-wrong" + ENTER)
        self.browser.wait(
            "document.getElementById('error').textContent.includes('not accepted')"
        )
        self.browser.run(
            "document.getElementById('model').append(new Option('mock', 'mock'));"
        )
        self.browser.type("#prompt", "hello" + ENTER)
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state === 'error'"
        )
        error = self._error() or ""
        self.assertIn("not accepted", error)
        self.assertIn("invalid API key", error)
        self.assertEqual("true", self._key_field()["invalid"])
        urls, _, frames = self._sockets()
        self.assertEqual([f"ws://127.0.0.1:{self.port}/v1/ws"], urls)
        self.assertEqual(
            [("sent", {"type": "auth", "api_key": "sk-wrong"})],
            [f for f in frames if f[0] == "sent"],
        )

    def test_streams_with_key(self) -> None:
        """
        With the right key a reply streams; the socket's URL and handshake
        carry no key, the first frame is C{auth} with it, and the completion
        goes only after C{auth_ok}.
        """
        self.browser.type("#api-key", KEY + ENTER)
        self.browser.wait("document.querySelectorAll('#model option').length > 0")
        self.browser.type("#prompt", "with a key" + ENTER)
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state === 'done'"
        )
        replies = self.browser.run("return window.__replies")
        self.assertIn("You said: with a key", replies[-1][1])
        self.assertGreater(
            len({text for state, text in replies if state == "streaming" and text}),
            1,
            replies,
        )
        urls, handshakes, frames = self._sockets()
        self.assertEqual([f"ws://127.0.0.1:{self.port}/v1/ws"], urls)
        self.assertEqual(1, len(handshakes))
        for name, value in handshakes[0].items():
            self.assertNotIn(KEY, value, name)
        kinds = [(direction, message["type"]) for direction, message in frames]
        self.assertEqual(
            [("sent", "auth"), ("received", "auth_ok"), ("sent", "completion")],
            kinds[:3],
        )
        self.assertEqual({"type": "auth", "api_key": KEY}, frames[0][1])
        self.assertEqual(("received", "done"), kinds[-1])

    def test_key_storage(self) -> None:
        """
        The key is kept in C{sessionStorage}; only with Remember ticked is
        it in C{localStorage}, and unticking removes it.  A remembered key
        comes back in a new session and lists the models.
        """
        stored = (
            "return [sessionStorage.getItem('pylon_ai.api_key'),"
            " localStorage.getItem('pylon_ai.api_key')]"
        )
        self.browser.type("#api-key", KEY)
        self.assertEqual([KEY, None], self.browser.run(stored))
        self.browser.click("#remember-key")
        self.assertEqual([KEY, KEY], self.browser.run(stored))
        self.browser.click("#remember-key")
        self.assertEqual([KEY, None], self.browser.run(stored))
        self.browser.click("#remember-key")
        self.browser.run("sessionStorage.clear()")
        self.browser.get(f"http://127.0.0.1:{self.port}/")
        self.browser.wait("document.querySelectorAll('#model option').length > 0")
        self.assertEqual(
            [KEY, True],
            self.browser.run(
                "return [document.getElementById('api-key').value,"
                " document.getElementById('remember-key').checked]"
            ),
        )
        self.browser.click("#remember-key")
        self.assertEqual([KEY, None], self.browser.run(stored))
