"""
The worker's side of C{--workers}: its log goes to the supervisor as JSON
lines on its standard output, and it watches its standard input, a pipe from
the supervisor, to stop when the supervisor is gone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from twisted.internet import fdesc
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import ILogObserver, LogEvent, Logger, eventAsJSON
from twisted.python.failure import Failure


@implementer(ILogObserver)
class _JSONLines:
    """
    Writes each log event as one line of JSON, for the supervisor to relay.
    """

    def __init__(self, out: Any) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        try:
            self._out.write(eventAsJSON(event) + "\n")
            self._out.flush()
        except (OSError, ValueError):
            # The supervisor is gone (and this worker is stopping): its
            # last lines have nowhere to go.
            pass


def json_log_observer() -> ILogObserver:
    """
    The log observer of a worker (C{twistd --logger}): JSON lines on its
    standard output, which the supervisor reads.
    """
    return _JSONLines(sys.stdout)


@implementer(IReadDescriptor)
class ParentWatch:
    """
    Reads a pipe from the supervisor, which writes nothing: its end means
    the supervisor is gone.
    """

    log = Logger()

    def __init__(self, reactor: Any, fd: int, gone: Callable[[], object]) -> None:
        self._reactor = reactor
        self._fd = fd
        self._gone: Callable[[], object] | None = gone
        fdesc.setNonBlocking(fd)
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "ParentWatch"

    def doRead(self) -> None:
        try:
            if os.read(self._fd, 4096):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._reactor.removeReader(self)
        self._parent_gone()

    def connectionLost(self, reason: Failure) -> None:
        # The reactor's word for a pipe whose writer is gone (a hang-up
        # without data to read): it has already dropped this reader.
        self._parent_gone()

    def _parent_gone(self) -> None:
        gone, self._gone = self._gone, None
        if gone is not None:
            self.log.warn("The supervisor is gone: stopping")
            gone()
