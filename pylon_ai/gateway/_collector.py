"""
The garbage collector's settings for the long-running C{twistd pylon-ai}
process.

Python's cyclic collector runs a full pass over every tracked object (all
of the imported code's objects included) each time the set of long-lived
objects grows by a quarter.  A burst of new streams grows it quickly: on
1,000 streams opened at once (the bench's scenario c) the defaults ran
three full passes of 28-62 ms each and 32 middle ones while the streams
were being opened, and every request waiting behind them waited that much
longer for its first byte.  Freezing alone (below) still left three full
passes of ~30 ms; a middle pass over what such a burst promoted took up to
80 ms with the youngest generation at 20,000 and the others at 10 and 5.

So, once the process is ready to serve:

  - the objects of start-up (modules, classes, the configuration) are
    moved out of the collector's sight with C{gc.freeze()}: they live as
    long as the process, and a full pass no longer walks them;
  - the youngest generation is collected every 20,000 net allocations
    rather than 700, and each older one after 20 collections of the one
    below rather than 10: a request's short-lived cycles still go in the
    young passes, and the opening of 1,000 streams causes no older pass;
  - what that leaves for the older passes is collected once the gateway is
    idle: a full pass when no request has been in flight for a second since
    the last young pass.

A request that ends leaves no reference cycle (its objects are freed by
reference counting; C{tests/test_collector.py}), so the older passes have
little to find; failures still do (a L{Failure} and its traceback).  The
price is memory under sustained failures: in C{bench/soak.py} (one request
in ten failing) the RSS after the load is ~1.2x its warm level, against
~1.05x with the defaults.

Only the service does this; a program that imports the library keeps its
own collector settings.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.task import LoopingCall

#: gc.set_threshold's arguments for the service.
THRESHOLDS = (20_000, 20, 20)
#: Seconds between the idle checks.
IDLE_CHECK_S = 1.0


def tune_collector(gateway: Any, clock: Any) -> LoopingCall:
    """
    Freeze what start-up made, space the collections out, and collect
    fully when the gateway is idle; see the module's docstring.  Call once
    the process is ready to serve.

    @param gateway: Has C{active}, the requests in flight.
    @param clock: Runs the idle check.
    @return: The running idle check.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    idle = LoopingCall(_IdleCollection(gateway))
    idle.clock = clock
    idle.start(IDLE_CHECK_S, now=False)
    return idle


class _IdleCollection:
    """
    A full collection once nothing is in flight, if the young generation
    was collected (there was work) since the last one.
    """

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway
        self._young = _young_passes()

    def __call__(self) -> None:
        young = _young_passes()
        if young == self._young or self._gateway.active:
            return
        gc.collect()
        self._young = _young_passes()


def _young_passes() -> int:
    return int(gc.get_stats()[0]["collections"])
