"""
The garbage collector's settings for the long-running C{twistd pylon-ai}
process.

Python's cyclic collector runs a full pass over every tracked object (all
of the imported code's objects included) each time the set of long-lived
objects grows by a quarter.  A burst of new streams grows it quickly: on
1,000 streams opened at once (the bench's scenario c) the defaults ran
three full passes of 28-62 ms each and 32 middle ones while the streams
were being opened, and every request waiting behind them waited that much
longer for its first byte.

So, once the process is ready to serve:

  - the objects of start-up (modules, classes, the configuration) are
    moved out of the collector's sight with C{gc.freeze()}: they live as
    long as the process, and a full pass no longer walks them;
  - the youngest generation is collected every 20,000 net allocations
    rather than 700, and each older one after 20 collections of the one
    below rather than 10: a request's short-lived cycles still go in
    the young passes, and the opening of 1,000 streams causes no full pass.

Only the service does this; a program that imports the library keeps its
own collector settings.
"""

from __future__ import annotations

import gc

#: gc.set_threshold's arguments for the service.
THRESHOLDS = (20_000, 20, 20)


def tune_collector() -> None:
    """
    Freeze what start-up made and space the collections out; see the
    module's docstring.  Call once the process is ready to serve.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
