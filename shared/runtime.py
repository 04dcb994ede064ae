"""Process-wide settings for a long-running service, made once its code is loaded.

The garbage collector. With CPython's defaults (a young collection every 700 net allocations), the
orchestrator spent 20-24 % of its CPU collecting during W1 and paused up to 127 ms in full
collections, each of which walked every module, class and schema loaded at start: none of it ever
becomes garbage. That is frozen out of every collection, and the young generation is collected far
less often, since what survives reference counting to be collected there is cyclic garbage only, a
few MB at most. Measured the same way (gc.callbacks over a W1 run), the orchestrator then spends
2 % of its CPU collecting; with a young collection every 10,000 it was still 10 %.
"""

from __future__ import annotations

import gc

# A young collection every 50,000 net allocations; a middle one every 20 of those, and a full one
# every 10 middle ones as by default (the full collections are what bound memory over weeks).
THRESHOLDS = (50_000, 20, 10)


def settle_collector() -> None:
    """Freeze what is alive now (the loaded code) and collect the rest less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
