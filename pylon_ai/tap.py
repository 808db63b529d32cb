"""
The C{twistd pylon-ai} plugin's options and service.

    twistd -n pylon-ai --port 8080 --config pylon.toml
"""

from __future__ import annotations

import signal
from typing import Any

from autobahn.twisted.resource import WebSocketResource

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from pylon_ai._config import Config, ConfigError, default_config, load_config
from pylon_ai._gateway import Gateway
from pylon_ai._server import make_site
from pylon_ai._websocket import GatewayWebSocketFactory


class Options(usage.Options):
    """
    Command-line options of C{twistd pylon-ai}.
    """

    synopsis = "[--port PORT|ENDPOINT] [--config FILE]"
    longdesc = (
        "An LLM gateway: OpenAI and Anthropic compatible APIs in front of "
        "Anthropic, OpenAI and OpenAI-compatible servers.  With no --config it "
        "serves the built-in mock model."
    )
    optParameters = [
        [
            "port",
            "p",
            "8080",
            "A port number or a Twisted endpoint string, e.g. "
            "tcp:8080:interface=0.0.0.0 or "
            "ssl:8443:privateKey=key.pem:certKey=cert.pem",
        ],
        ["config", "c", None, "A TOML configuration file."],
    ]

    def postOptions(self) -> None:
        """
        Load the configuration and work out the listening endpoint.
        """
        try:
            self.config: Config = (
                load_config(self["config"]) if self["config"] else default_config()
            )
        except ConfigError as e:
            raise usage.UsageError(f"bad configuration: {e}") from None
        port = self["port"].strip()
        if port.isdigit():
            # No client keys: listen on loopback only, unless the operator
            # names an interface in an endpoint string.
            # Twisted's default listen queue (50) drops connection attempts
            # when many clients arrive at once; each costs a 1 s resend.
            if self.config.server.api_keys:
                port = f"tcp:{port}:backlog=1024"
            else:
                port = f"tcp:{port}:interface=127.0.0.1:backlog=1024"
        self["endpoint"] = port


class GatewayService(MultiService):
    """
    The gateway: its listening port and the upstream connection pools.

    On stop (SIGTERM) it stops listening, lets open streams finish up to the
    grace period, then ends the rest with an error event.
    """

    log = Logger()

    def __init__(self, gateway: Gateway, endpoint: Any) -> None:
        super().__init__()
        self.gateway = gateway
        self.websockets = GatewayWebSocketFactory(gateway)
        site = make_site(gateway, WebSocketResource(self.websockets))
        self.site = site
        StreamServerEndpointService(endpoint, site).setServiceParent(self)

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
        d.addBoth(lambda _: self.websockets.close_all())
        d.addBoth(lambda _: self.site.close_connections(self.gateway.clock))
        d.addBoth(lambda _: self.gateway.close())
        return d


def _stop_on_sigterm(reactor: Any) -> None:
    # twistd's own handler stops the reactor too, but then re-raises the
    # signal so the process dies "killed by SIGTERM"; a stop the operator
    # asked for, that drained cleanly, is a success: exit 0.
    def handler(signum: int, frame: object) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, handler)


def makeService(options: Options) -> IService:
    """
    Build the service C{twistd} runs.
    """
    from twisted.internet import reactor

    reactor.callWhenRunning(_stop_on_sigterm, reactor)

    endpoint = serverFromString(reactor, options["endpoint"])
    gateway = Gateway(options.config, reactor)
    service = GatewayService(gateway, endpoint)
    Logger().info(
        "pylon-ai serving models {models} on {endpoint}",
        models=", ".join(gateway.model_names()),
        endpoint=options["endpoint"],
    )
    return service
