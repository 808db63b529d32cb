"""
The C{twistd pylon-ai} plugin's options and service.

    twistd -n pylon-ai --port 8080 --config pylon.toml [--workers N]

With C{--workers 1} (the default) the process is the gateway.  With more,
it is a supervisor (L{pylon_ai.gateway._workers}): it opens the port and
runs the workers, each a C{twistd pylon-ai} of its own started through
L{run_worker}.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, IServiceMaker, MultiService
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.resource import Resource

from pylon_ai.gateway._collector import tune_collector
from pylon_ai.gateway._config import Config, ConfigError, default_config, load_config
from pylon_ai.gateway._gateway import Gateway
from pylon_ai.gateway._server import make_site
from pylon_ai.gateway._shared_socket import WORKER_FD, adopted_family, listen_shared
from pylon_ai.gateway._worker_side import ParentWatch, json_log_observer
from pylon_ai.gateway._workers import Supervisor

#: Where the configuration keys are described.
CONFIG_REFERENCE = 'README.rst, section "The gateway service"'

#: Where an endpoint type takes its interface as a positional argument
#: (Twisted's parsers: tcp:PORT:INTERFACE, tcp6:PORT:BACKLOG:INTERFACE,
#: ssl:PORT:KEY:CERT:METHOD:INTERFACE).
_INTERFACE_AT = {"tcp": 2, "tcp6": 3, "ssl": 5}

log = Logger()


def _endpoint_arguments(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and keyword arguments of an endpoint string, split as
    Twisted splits them: C{:} between arguments, the first C{=} of one
    makes it a keyword, a backslash escapes the next character.
    """
    parts: list[list[str]] = [[""]]
    chars = iter(description)
    for char in chars:
        if char == "\\":
            parts[-1][-1] += next(chars, "")
        elif char == ":":
            parts.append([""])
        elif char == "=" and len(parts[-1]) == 1:
            parts[-1].append("")
        else:
            parts[-1][-1] += char
    args = [part[0] for part in parts if len(part) == 1]
    kwargs = {part[0]: part[1] for part in parts if len(part) == 2}
    return args, kwargs


def _is_loopback(interface: str) -> bool:
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def endpoint_is_local(description: str) -> bool:
    """
    Whether a server endpoint string listens only where other machines
    cannot connect: a loopback interface, or a UNIX socket.

    @param description: A Twisted server endpoint string.
    @return: C{False} for no interface (all of them), a non-loopback one,
        or an endpoint type whose interface cannot be told (e.g.
        C{systemd:}).
    """
    args, kwargs = _endpoint_arguments(description)
    kind = args[0] if args else ""
    if kind == "unix":
        return True
    at = _INTERFACE_AT.get(kind)
    if at is None:
        return False
    interface = kwargs.get("interface", args[at] if len(args) > at else "")
    return _is_loopback(interface)


class Options(usage.Options):
    """
    Command-line options of C{twistd pylon-ai}.
    """

    synopsis = "[--port PORT|ENDPOINT] [--config FILE] [--workers N|auto]"
    longdesc = (
        "An LLM gateway: OpenAI and Anthropic compatible APIs in front of "
        "Anthropic, OpenAI and OpenAI-compatible servers.  With no --config it "
        "serves the built-in mock model.  Without [server] api_keys it listens "
        "on loopback only and serves only loopback Host names.  The "
        f"configuration file's keys are described in {CONFIG_REFERENCE}."
    )
    # One line each in --help: the details are in the README.
    optParameters = [
        ["port", "p", "8080", "Port number or Twisted endpoint string"],
        ["config", "c", None, "TOML configuration file (see the README)"],
        ["workers", "w", "1", "Worker processes: N, or auto (one a core)"],
    ]

    def postOptions(self) -> None:
        """
        Load the configuration and work out the listening endpoint.

        @raise SystemExit: With a one-line message, for a bad configuration,
            a bad C{--workers}, or for serving without client keys beyond
            loopback (a usage error would print the whole usage text before
            it).
        """
        self["workers"] = _workers(self["workers"])
        try:
            self.config: Config = (
                load_config(self["config"]) if self["config"] else default_config()
            )
        except ConfigError as e:
            raise SystemExit(
                "pylon-ai: bad configuration: " + " ".join(str(e).split())
            ) from None
        server = self.config.server
        port = self["port"].strip()
        if port.isdigit():
            # No client keys: listen on loopback only, unless the operator
            # names an interface in an endpoint string.
            # Twisted's default listen queue (50) drops connection attempts
            # when many clients arrive at once; each costs a 1 s resend.
            if server.api_keys:
                port = f"tcp:{port}:backlog=1024"
            else:
                port = f"tcp:{port}:interface=127.0.0.1:backlog=1024"
        if not server.api_keys and not endpoint_is_local(port):
            if not server.allow_unauthenticated:
                raise SystemExit(
                    f"pylon-ai: refusing to serve without api_keys on {port}, "
                    "which other machines can reach: set [server] api_keys, "
                    "listen on loopback (tcp:PORT:interface=127.0.0.1), or set "
                    "[server] allow_unauthenticated = true"
                )
            log.warn(
                "Serving WITHOUT client keys on {endpoint} "
                "(allow_unauthenticated = true): whoever reaches it uses the "
                "configured models.  Only requests whose Host is localhost, "
                "127.0.0.1, [::1] or one of [server] allowed_hosts are served.",
                endpoint=port,
            )
        if self["workers"] > 1 and _endpoint_arguments(port)[0][:1] == ["ssl"]:
            # Workers adopt a plain socket; the TLS settings stay behind.
            raise SystemExit(
                f"pylon-ai: --workers cannot share the TLS endpoint {port}: "
                "terminate TLS in front of the gateway, or use --workers 1"
            )
        self["endpoint"] = port


def _workers(value: str) -> int:
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise SystemExit(
            f"pylon-ai: --workers must be a positive number or auto, not {value!r}"
        )
    return count


class GatewayService(MultiService):
    """
    The gateway: its listening port and the upstream connection pools.

    On stop (SIGTERM) it stops listening, lets open streams finish up to the
    grace period, then ends the rest with an error event.
    """

    log = Logger()

    def __init__(
        self,
        gateway: Gateway,
        endpoint: Any,
        health: Mapping[str, object] | None = None,
    ) -> None:
        """
        @param health: Fields C{/healthz} adds to its reply (a worker's
            number and pid).
        """
        super().__init__()
        self.gateway = gateway
        self._websocket = _WebSocketRoute(gateway)
        site = make_site(gateway, self._websocket, health=health)
        # Open WebSockets left the site's books but hold connections too.
        site.upgraded = self._websocket.open_count
        self.site = site
        StreamServerEndpointService(endpoint, site).setServiceParent(self)

    @property
    def websockets(self) -> Any:
        """
        The C{GatewayWebSocketFactory} of C{/v1/ws}.
        """
        return self._websocket.factory

    def stopService(self) -> Any:
        # Stop listening first; then let streams in flight finish for the
        # grace period; then close the upstream pools.
        d = super().stopService()
        grace = self.gateway.config.server.shutdown_grace_s
        if self.gateway.active:
            self.log.info(
                "Stopping: waiting up to {grace} s for {n} requests in flight",
                grace=grace,
                n=len(self.gateway.active),
            )
        d.addBoth(lambda _: self.gateway.drain(grace))
        d.addBoth(lambda _: self._websocket.close_all())
        d.addBoth(lambda _: self.site.close_connections(self.gateway.clock))
        d.addBoth(lambda _: self.gateway.close())
        return d


class _WebSocketRoute(Resource):
    """
    C{/v1/ws}, built on its first request: autobahn and the C validator it
    loads hold about 7 MiB that a gateway serving only HTTP never needs.
    """

    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self._gateway = gateway
        self._factory: Any = None
        self._resource: Any = None

    @property
    def factory(self) -> Any:
        """
        The WebSocket factory (built now if it was not yet).
        """
        if self._factory is None:
            from autobahn.twisted.resource import WebSocketResource

            from pylon_ai.gateway._websocket import GatewayWebSocketFactory

            self._factory = GatewayWebSocketFactory(self._gateway)
            self._resource = WebSocketResource(self._factory)
        return self._factory

    def render(self, request: Any) -> Any:
        self.factory  # noqa: B018 (built on first use)
        return self._resource.render(request)

    def open_count(self) -> int:
        """
        The sockets open now.
        """
        return 0 if self._factory is None else len(self._factory.open_sockets)

    def close_all(self) -> None:
        """
        Close every open socket (the service is stopping).
        """
        if self._factory is not None:
            self._factory.close_all()


def _stop_on_sigterm(reactor: Any) -> None:
    # twistd's own handler stops the reactor too, but then re-raises the
    # signal so the process dies "killed by SIGTERM"; a stop the operator
    # asked for, that drained cleanly, is a success: exit 0.
    def handler(signum: int, frame: object) -> None:
        reactor.callFromThread(_stop, reactor)

    signal.signal(signal.SIGTERM, handler)


def _stop(reactor: Any) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:  # already stopping: a second signal
        pass


def makeService(options: Options) -> IService:
    """
    Build the service C{twistd} runs: the gateway, or with C{--workers}
    above 1 the supervisor of that many.
    """
    from twisted.internet import reactor

    reactor.callWhenRunning(_stop_on_sigterm, reactor)
    if options["workers"] > 1:
        return _supervisor(options, reactor)
    endpoint = serverFromString(reactor, options["endpoint"])
    gateway = Gateway(options.config, reactor)
    reactor.callWhenRunning(tune_collector, gateway, reactor)
    service = GatewayService(gateway, endpoint)
    Logger().info(
        "pylon-ai serving models {models} on {endpoint}",
        models=", ".join(gateway.model_names()),
        endpoint=options["endpoint"],
    )
    return service


#: How a supervisor starts a worker: L{run_worker} in a new interpreter.
WORKER_ENTRY = "from pylon_ai.tap import run_worker; run_worker()"


def _supervisor(options: Options, reactor: Any) -> IService:
    endpoint = serverFromString(reactor, options["endpoint"])
    try:
        shared = listen_shared(endpoint)
    except Exception as e:
        raise SystemExit(
            f"pylon-ai: cannot listen on {options['endpoint']}: "
            + " ".join(str(e).split())
        ) from None
    # Workers read the very file the supervisor checked (cwd is shared too).
    config = (
        ["--config", os.path.abspath(options["config"])] if options["config"] else []
    )
    logger = f"{json_log_observer.__module__}.{json_log_observer.__name__}"

    def command(number: int) -> list[str]:
        return [
            sys.executable,
            "-c",
            WORKER_ENTRY,
            str(number),
            "--nodaemon",
            "--pidfile=",
            f"--logger={logger}",
            "pylon-ai",
            *config,
        ]

    supervisor = Supervisor(
        reactor,
        shared,
        workers=options["workers"],
        command=command,
        grace=options.config.server.shutdown_grace_s,
    )
    Logger().info(
        "pylon-ai serving models {models} on {endpoint} with {n} workers",
        models=", ".join(dict.fromkeys(m.name for m in options.config.models)),
        endpoint=options["endpoint"],
        n=options["workers"],
    )
    return supervisor


@implementer(IServiceMaker)
class _WorkerMaker:
    """
    C{twistd pylon-ai} as worker C{number} of a supervisor: the same options,
    a gateway on the socket the supervisor passed.
    """

    tapname = "pylon-ai"
    description = "A worker of twistd pylon-ai --workers."
    options = Options

    def __init__(self, number: int) -> None:
        self.number = number

    def makeService(self, options: Options) -> IService:
        from twisted.internet import reactor

        reactor.callWhenRunning(_stop_on_sigterm, reactor)
        endpoint = AdoptedStreamServerEndpoint(
            reactor, WORKER_FD, adopted_family(WORKER_FD)
        )
        gateway = Gateway(options.config, reactor)
        reactor.callWhenRunning(tune_collector, gateway, reactor)
        service = GatewayService(
            gateway,
            endpoint,
            health={"worker": self.number, "pid": os.getpid()},
        )
        # Standard input is a pipe from the supervisor: its end means the
        # supervisor is gone, and a worker without one drains and exits.
        reactor.callWhenRunning(ParentWatch, reactor, 0, lambda: _stop(reactor))
        return service


def run_worker() -> None:
    """
    The entry point of a worker process (private: the supervisor starts
    it): C{twistd} with this plugin alone, found without a plugin search.
    The first argument is the worker's number, the rest are twistd's.
    """
    from twisted.application import app
    from twisted.scripts import twistd

    maker = _WorkerMaker(int(sys.argv.pop(1)))

    def plugins(interface: Any, package: Any = None) -> list[Any]:
        return [maker]

    class WorkerServerOptions(twistd.ServerOptions):  # type: ignore[name-defined,misc]
        _getPlugins = staticmethod(plugins)

    app.run(twistd.runApp, WorkerServerOptions)
