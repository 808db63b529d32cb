"""
C{twistd pylon-ai}: its options, the refusal to serve without keys on a
public interface, the help text, configuration errors, and a log without
a line per connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import _HTTP11ClientFactory

import pylon_ai
from pylon_ai._http import make_pool
from pylon_ai.gateway._config import ConfigError, default_config, parse_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.tap import GatewayService, Options, endpoint_is_local

try:
    from tests._service import raw_connect, start_service
except ImportError:  # tests/ is not a package: pytest put tests/ on sys.path
    from _service import raw_connect, start_service  # type: ignore[no-redef]


def _events(case: SynchronousTestCase) -> list[LogEvent]:
    events: list[LogEvent] = []
    observer: ILogObserver = events.append  # type: ignore[assignment]
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def _python(script: str) -> list[str]:
    """
    Run C{script} in a fresh interpreter (what a service does to its
    process must not reach the test run's); the words it printed.
    """
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()


class _ConfigFiles(SynchronousTestCase):
    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def options(self, *args: str, config: str | None = None) -> Options:
        argv = list(args)
        if config is not None:
            argv += ["--config", self.write(config)]
        options = Options()
        options.parseOptions(argv)
        return options


class EndpointTests(SynchronousTestCase):
    """
    L{endpoint_is_local} reads an endpoint string as Twisted does.
    """

    def test_local(self) -> None:
        for description in (
            "tcp:8080:interface=127.0.0.1",
            "tcp:8080:interface=127.0.0.2:backlog=1024",
            "tcp:8080:127.0.0.1",
            "tcp:interface=localhost:port=8080",
            "tcp6:8080:interface=\\:\\:1",
            "tcp6:port=8080:backlog=5:interface=\\:\\:1",
            "ssl:8443:privateKey=k.pem:certKey=c.pem:interface=127.0.0.1",
            "unix:/run/pylon.sock",
            "unix:address=/run/pylon.sock:mode=600",
        ):
            self.assertTrue(endpoint_is_local(description), description)

    def test_not_local(self) -> None:
        for description in (
            "tcp:8080",
            "tcp:8080:backlog=1024",
            "tcp:8080:interface=0.0.0.0",
            "tcp:8080:interface=",
            "tcp:8080:interface=192.168.1.5",
            "tcp6:8080",
            "tcp6:8080:interface=\\:\\:",
            "ssl:8443:privateKey=k.pem",
            "ssl:8443:k.pem:c.pem",
            "systemd:domain=INET:index=0",
            "tcp:8080:interface=127.0.0.1.nip.io",
        ):
            self.assertFalse(endpoint_is_local(description), description)


class UnauthenticatedTests(_ConfigFiles):
    """
    Without client keys the service refuses to listen beyond loopback,
    unless C{allow_unauthenticated} says so (then it warns).
    """

    def test_refused(self) -> None:
        for port in (
            "tcp:18403",
            "tcp:18403:interface=0.0.0.0",
            "tcp6:18403",
            "ssl:8443:privateKey=k.pem",
        ):
            e = self.assertRaises(SystemExit, self.options, "--port", port)
            message = str(e.code)
            self.assertIn("allow_unauthenticated", message)
            self.assertIn("api_keys", message)
            self.assertNotIn("\n", message)

    def test_loopback_accepted(self) -> None:
        for port in ("18403", "tcp:18403:interface=127.0.0.1", "unix:/tmp/p.sock"):
            self.options("--port", port)

    def test_keys_accepted(self) -> None:
        options = self.options(
            "--port", "tcp:18403", config='[server]\napi_keys = ["k"]\n'
        )
        self.assertEqual(options["endpoint"], "tcp:18403")

    def test_allowed_with_warning(self) -> None:
        events = _events(self)
        options = self.options(
            "--port", "tcp:18403", config="[server]\nallow_unauthenticated = true\n"
        )
        self.assertEqual(options["endpoint"], "tcp:18403")
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("allowed_hosts", warnings[0]["log_format"])

    def test_no_warning_on_loopback(self) -> None:
        events = _events(self)
        self.options(
            "--port", "18403", config="[server]\nallow_unauthenticated = true\n"
        )
        self.assertEqual([e for e in events if e["log_level"].name == "warn"], [])


class HelpTests(SynchronousTestCase):
    """
    C{--help} lists every option on one line and says where the
    configuration is described.
    """

    def test_one_line_per_option(self) -> None:
        usage = str(Options())
        block = usage.split("Options:\n", 1)[1].split("\n\n", 1)[0]
        lines = block.splitlines()
        self.assertEqual(len(lines), len(Options.optParameters) + 2, usage)
        for line in lines:
            self.assertTrue(line.lstrip().startswith("-"), line)
            self.assertLessEqual(len(line), 79, line)

    def test_points_to_reference(self) -> None:
        usage = " ".join(str(Options()).split())
        self.assertIn("README.rst", usage)
        self.assertIn('"The gateway service"', usage)
        readme = Path(pylon_ai.__file__).resolve().parent.parent / "README.rst"
        if readme.exists():  # beside the source tree, not an installed copy
            self.assertIn("\nThe gateway service\n---", readme.read_text())


class ConfigErrorTests(_ConfigFiles):
    """
    A bad configuration stops the start with the error alone: one line, no
    usage text, exit status 1.
    """

    def test_one_line(self) -> None:
        e = self.assertRaises(
            SystemExit,
            self.options,
            config="[server]\nmax_body_bytes = -1\n",
        )
        message = str(e.code)
        self.assertIn("server.max_body_bytes", message)
        self.assertNotIn("\n", message)
        self.assertNotIn("Usage", message)

    def test_model_named(self) -> None:
        e = self.assertRaises(
            SystemExit,
            self.options,
            config='[[models]]\nname = "claude"\nprovider = "mock"\nmodle = "x"\n',
        )
        self.assertIn("models[0] (claude).modle", str(e.code))

    def test_model_named_in_type_errors(self) -> None:
        e = self.assertRaises(
            ConfigError,
            parse_config,
            {"models": [{"name": "claude", "provider": "mock", "retries": "2"}]},
            {},
        )
        self.assertIn("models[0] (claude).retries", str(e))
        e = self.assertRaises(
            ConfigError,
            parse_config,
            {"models": [{"name": 7, "provider": "mock"}]},
            {},
        )
        self.assertIn("models[0].name", str(e))

    def test_twistd(self) -> None:
        """
        Through C{twistd} itself: the message on stderr, nothing else.
        """
        work = tempfile.mkdtemp(prefix="pylon-tap-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", work], check=False))
        config = Path(work) / "bad.toml"
        config.write_text("[server]\nmax_body_bytes = -1\n")
        env = dict(os.environ)
        package_parent = str(Path(pylon_ai.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH")) if p
        )
        done = subprocess.run(
            [sys.executable, "-m", "twisted", "pylon-ai", "--config", str(config)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 1, done)
        self.assertEqual(done.stdout, "")
        lines = done.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, done.stderr)
        self.assertIn("server.max_body_bytes", lines[0])


class QuietConnectionsTests(TestCase):
    """
    A new upstream connection does not log "Starting factory" and
    "Stopping factory".
    """

    timeout = 20

    def test_pool_factory(self) -> None:
        pool = make_pool(reactor)
        factory = pool._factory(lambda *a: None, "meta")
        self.assertFalse(factory.noisy)

    async def test_service_logs(self) -> None:
        events = _events(self)
        service = await start_service(self)
        body = json.dumps(
            {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        client = await raw_connect(self, service.port_number)
        client.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer sk-local\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await client.closed.addTimeout(5, reactor)
        self.assertIn(b" 200 ", client.data.split(b"\r\n", 1)[0])
        await service.gateway.close()
        noisy = [
            e for e in events if isinstance(e.get("factory"), _HTTP11ClientFactory)
        ]
        self.assertEqual(noisy, [])


class ServiceTests(SynchronousTestCase):
    """
    The service built for C{twistd}.
    """

    def test_websockets_count_as_connections(self) -> None:
        """
        Open WebSockets left the site's books, but count towards
        C{max_connections}.
        """
        gateway = Gateway(default_config(), Clock())
        service = GatewayService(gateway, object())
        self.assertEqual(service.site.upgraded(), 0)
        service.websockets.open_sockets.add(object())  # type: ignore[arg-type]
        self.assertEqual(service.site.upgraded(), 1)
        self.assertEqual(service.site.max_connections, 4096)
        self.assertEqual(service.site.header_timeout, 10.0)

    def test_websocket_side_built_on_first_use(self) -> None:
        """
        A gateway that never sees a WebSocket does not import autobahn (about
        7 MiB of its idle memory); the first request to C{/v1/ws} builds it.
        """
        script = (
            "import socket, sys\n"
            "from twisted.internet import reactor, threads\n"
            "from pylon_ai.gateway._config import default_config\n"
            "from pylon_ai.gateway._gateway import Gateway\n"
            "from pylon_ai.tap import GatewayService\n"
            "service = GatewayService(Gateway(default_config(), reactor), object())\n"
            "before = any(m.startswith('autobahn') for m in sys.modules)\n"
            "port = reactor.listenTCP(0, service.site, interface='127.0.0.1')\n"
            "def handshake():\n"
            "    s = socket.create_connection(('127.0.0.1', port.getHost().port))\n"
            "    s.sendall(b'GET /v1/ws HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n'\n"
            "        b'Upgrade: websocket\\r\\nConnection: Upgrade\\r\\n'\n"
            "        b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n'\n"
            "        b'Sec-WebSocket-Version: 13\\r\\n\\r\\n')\n"
            "    s.settimeout(10)\n"
            "    return s.recv(100).split(b' ')[1].decode()\n"
            "def done(status):\n"
            "    after = any(m.startswith('autobahn') for m in sys.modules)\n"
            "    print(before, status, after)\n"
            "    reactor.stop()\n"
            "threads.deferToThread(handshake).addCallback(done)\n"
            "reactor.run()\n"
        )
        self.assertEqual(_python(script), ["False", "101", "True"])


class CollectorTests(TestCase):
    """
    The service freezes what start-up made and spaces the collector's
    passes out (see L{pylon_ai.gateway._collector}); importing the library
    changes nothing.
    """

    timeout = 60

    def _collector_after(self, make: str) -> list[str]:
        script = (
            "import gc\n"
            "from twisted.internet import reactor\n"
            "from pylon_ai.tap import Options, _WorkerMaker, makeService\n"
            "before = gc.get_threshold(), gc.get_freeze_count()\n"
            "options = Options()\n"
            "options.parseOptions(['--port', 'tcp:0:interface=127.0.0.1'])\n"
            f"{make}\n"
            "def report():\n"
            "    print(*before[0], before[1])\n"
            "    print(*gc.get_threshold(), gc.get_freeze_count() > 1000)\n"
            "    reactor.stop()\n"
            "reactor.callWhenRunning(report)\n"
            "reactor.run()\n"
        )
        return _python(script)

    def test_service(self) -> None:
        out = self._collector_after("makeService(options)")
        self.assertEqual(out[:4], ["700", "10", "10", "0"])
        self.assertEqual(out[4:], ["20000", "20", "20", "True"])

    def test_library_import_alone(self) -> None:
        out = self._collector_after("")
        self.assertEqual(out, ["700", "10", "10", "0", "700", "10", "10", "False"])
