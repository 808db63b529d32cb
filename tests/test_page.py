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
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import pylon_ai

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = "/tmp/pylon_page.png"
#: The W3C key for an element reference.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
ENTER = "\ue007"
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


class _PageTestsMixin:
    """
    Starts the service, chromedriver and a browser on the page.

    @ivar config: The service's TOML configuration, if any.
    """

    config: str | None = None
    addCleanup: Callable[..., None]

    def setUp(self) -> None:
        chromedriver = CHROMEDRIVER if os.access(CHROMEDRIVER, os.X_OK) else None
        chromedriver = chromedriver or shutil.which("chromedriver")
        if not os.access(CHROMIUM, os.X_OK) or chromedriver is None:
            raise SkipTest(
                f"needs Chromium at {CHROMIUM} and chromedriver "
                "(apt-get install chromium chromium-driver)"
            )
        work = tempfile.mkdtemp(prefix="pylon-page-")
        self.addCleanup(shutil.rmtree, work, True)

        self.port = _free_port()
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
            f"tcp:{self.port}:interface=127.0.0.1",
        ]
        if self.config is not None:
            config = Path(work) / "pylon.toml"
            config.write_text(self.config)
            command += ["--config", str(config)]
        self.server_log = Path(work) / "server.log"
        with open(self.server_log, "wb") as log:
            server = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.server = server
        self.addCleanup(_stop, server)
        _until(
            _answers(self.port, "/healthz"),
            "the service",
            lambda: None if server.poll() is None else self._server_output(),
        )

        driver_port = _free_port()
        with open(Path(work) / "chromedriver.log", "wb") as log:
            driver = subprocess.Popen(
                [chromedriver, f"--port={driver_port}"],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.addCleanup(_stop, driver)
        _until(
            _answers(driver_port, "/status"),
            "chromedriver",
            lambda: None if driver.poll() is None else "exited",
        )
        self.browser = WebDriver(driver_port, str(Path(work) / "profile"))
        self.addCleanup(self.browser.close)
        self.browser.get(f"http://127.0.0.1:{self.port}/")
        self.browser.wait("document.readyState === 'complete'")
        self.browser.run(RECORD_REPLIES)

    def _server_output(self) -> str:
        return "exited: " + self.server_log.read_text(errors="replace")[-2000:]


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
    With client keys configured, the page asks for one and uses it.
    """

    config = '[server]\napi_keys = ["sk-page-key"]\n'

    def test_key(self) -> None:
        """
        Without a key the model list fails visibly; once a key is entered the
        models load and a reply streams over a socket opened with the key.
        """
        self.browser.wait("!document.getElementById('error').hidden")
        self.assertIn(
            "API key",
            self.browser.run("return document.getElementById('error').textContent"),
        )
        self.browser.type("#api-key", "sk-page-key")
        self.browser.click("#prompt")  # leaving the field commits the key
        self.browser.wait("document.querySelectorAll('#model option').length > 0")
        self.assertTrue(
            self.browser.run("return document.getElementById('error').hidden")
        )
        self.assertEqual(
            "sk-page-key",
            self.browser.run("return sessionStorage.getItem('pylon_ai.api_key')"),
        )
        self.browser.type("#prompt", "with a key" + ENTER)
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state === 'done'"
        )
        _, text = self.browser.run("return window.__replies")[-1]
        self.assertIn("You said: with a key", text)

    def test_wrong_key(self) -> None:
        """
        A wrong key shows an error when the socket is refused.
        """
        self.browser.run(
            "const select = document.getElementById('model');"
            "select.append(new Option('mock', 'mock'));"
        )
        self.browser.type("#api-key", "sk-wrong")
        self.browser.click("#prompt")
        self.browser.type("#prompt", "hello" + ENTER)
        self.browser.wait(
            "document.querySelector('#messages .assistant')?.dataset.state === 'error'"
        )
        self.assertIn(
            "WebSocket",
            self.browser.run("return document.getElementById('error').textContent"),
        )
