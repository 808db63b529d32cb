"""
The listening socket of C{--workers}: the supervisor opens it once with a
Twisted endpoint and passes its descriptor to every worker (as L{WORKER_FD}),
which adopts it; see L{pylon_ai.gateway._workers} for why one shared socket.
"""

from __future__ import annotations

import socket
from typing import Any

from attrs import define

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

#: The listening socket's file descriptor in a worker.
WORKER_FD = 3


@define
class SharedSocket:
    """
    A listening socket opened by the supervisor for its workers.

    @ivar socket: The socket; its descriptor is what workers adopt.
    @ivar port: The Twisted port that opened it, kept only so that its
        cleanup (a UNIX socket's path, its lock) runs at the end.
    """

    socket: socket.socket
    port: IListeningPort

    def close(self) -> None:
        """
        Stop listening here: a plain close, not a shutdown, which would stop
        the socket in every worker too.  Once the workers close theirs,
        connections are refused.
        """
        self.socket.close()

    def cleanup(self) -> None:
        """
        Remove what the endpoint left (a UNIX socket's path).
        """
        self.port.stopListening()


def listen_shared(endpoint: Any) -> SharedSocket:
    """
    Open a listening socket with a Twisted server endpoint, but accept
    nothing on it here: the workers will.

    @param endpoint: An C{IStreamServerEndpoint} whose ports are plain
        sockets (TCP, UNIX, C{systemd:}); TLS endpoints are not.
    @raise Exception: What the endpoint raised, e.g. C{CannotListenError}.
    """
    result: list[Any] = []
    factory = Factory()
    factory.noisy = False  # it never builds a protocol: nothing to say
    d = endpoint.listen(factory)
    d.addBoth(result.append)
    if not result:
        d.cancel()
        raise ValueError("the endpoint did not listen at once")
    if isinstance(result[0], Failure):
        result[0].raiseException()
    port = result[0]
    # The endpoint's parser (ports, interfaces, backlog, UNIX modes) is
    # Twisted's; the socket is ours.  The port stops reading before it
    # lets go of the descriptor, so the reactor never sees it closed.
    port.stopReading()
    fd = port.socket.detach()
    return SharedSocket(socket.socket(fileno=fd), port)


def adopted_family(fd: int) -> socket.AddressFamily:
    """
    The address family of the socket at C{fd}, left open.
    """
    probe = socket.socket(fileno=fd)
    try:
        return probe.family
    finally:
        probe.detach()
