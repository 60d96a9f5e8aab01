"""Interpreter settings for a process that serves: the GIL's switch interval and the collector."""

from __future__ import annotations

import gc
import sys

# How long CPython lets a thread that wants the GIL wait before the holder must hand it over
# (default 5 ms). The event loop and the SQLite writer thread both want it under load, and each
# forced hand-over costs both of them; at 20 ms Track with one event per call took about a tenth
# less CPU per call (docs/performance.md).
GIL_SWITCH_INTERVAL_S = 0.02

# The cyclic collector's thresholds (default 700, 10, 10). Every call allocates protobuf
# messages, rows and futures that reference counting frees at once, yet at 700 net allocations
# a young collection ran about 120 times a second under load, and each older one walked the
# whole heap: 5-8% of the server's CPU, a fifth of a consumer-group round's. At 10,000 it
# was about 1% (docs/performance.md). Cycles still go, only in fewer, larger collections.
GC_THRESHOLDS = (10_000, 10, 10)


def tune() -> None:
    """Set this process's switch interval and collector thresholds (never from a library)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    gc.set_threshold(*GC_THRESHOLDS)


def settle_heap() -> None:
    """Move everything alive after start-up out of the collector's sight (gc.freeze).

    Modules, the schema and the compiled statements live as long as the process: walking them
    again at every full collection costs time and finds nothing.
    """
    gc.collect()
    gc.freeze()
