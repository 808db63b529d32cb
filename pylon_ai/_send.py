"""
Sending what a transport holds now, not at the reactor's next turn.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection


def send_now(transport: Any) -> None:
    """
    Hand the bytes a TCP transport holds to the kernel at once.

    A Twisted transport keeps each write and sends it when the reactor next
    polls, after whatever else the current turn does.  When the bytes
    written are a request to a provider, or the first event of a reply,
    and the rest of the turn is more work (the rest of a burst of events,
    the request's log line), the wait is latency the client sees.

    Works through wrappers such as TLS (the innermost TCP transport is
    sent on); does nothing for other transports or one that is closing.
    A failed send leaves the bytes where they were, so the reactor's own
    write finds the failure and closes the connection as usual.

    @param transport: A transport, or L{None}.
    """
    for _ in range(4):
        if isinstance(transport, Connection):
            break
        transport = getattr(transport, "transport", None)
        if transport is None:
            return
    else:
        return
    if (
        not transport.connected
        or transport.disconnecting
        or transport.disconnected
        or transport._writeDisconnecting
        or not (transport.dataBuffer or transport._tempDataBuffer)
    ):
        return
    transport.doWrite()


def write_through(transport: Any, data: bytes) -> bool:
    """
    Write C{data} on a TCP transport that holds nothing unsent: straight to
    the socket, with no trip through the reactor.

    Twisted's C{write} registers the socket for writability (a system call),
    waits for the reactor's next turn, sends, and unregisters it (another
    system call): three system calls and a turn of the loop for each event
    of a stream.  When nothing is waiting to be sent, the kernel can take
    the bytes at once; what it does not take is written the usual way.

    @return: Whether C{data} was taken care of; if not, write it as usual.
    """
    if (
        not isinstance(transport, Connection)
        or transport.TLS  # started with startTLS: its bytes go through TLS
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnecting
        or transport._writeDisconnected
        or transport.dataBuffer
        or transport._tempDataBuffer
    ):
        return False
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        return False  # the usual write finds the error and closes
    if sent < len(data):
        transport.write(data[sent:])
    return True
