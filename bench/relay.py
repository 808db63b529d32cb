"""
A byte relay for the benchmark's floor: copies bytes between each client's
socket and its own connection to the upstream, parses nothing.

Twisted's C{portforward} with C{TCP_NODELAY} set on both sockets (as every
gateway here sets it; without it Nagle's algorithm holds a lone first chunk
back and the relay looks slower than it is).

    python bench/relay.py PORT UPSTREAM_PORT
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.protocols import portforward


class _Client(portforward.ProxyClient):
    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        super().connectionMade()


class _ClientFactory(portforward.ProxyClientFactory):
    protocol = _Client


class _Server(portforward.ProxyServer):
    clientProtocolFactory = _ClientFactory

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        super().connectionMade()


def main() -> None:
    port, upstream = int(sys.argv[1]), int(sys.argv[2])
    factory = portforward.ProxyFactory("127.0.0.1", upstream)
    factory.protocol = _Server
    reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
