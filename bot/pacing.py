"""Long pure-Python work done on the event loop, in turns, instead of in a thread.

A thread that computes holds the GIL in 5 ms turns (the switch interval), and the event loop gives the GIL up at
every socket call it makes: each time it takes it back it may wait for the thread's turn to end. A loop that sends
and reads a few hundred DNS datagrams while `!status` words 73k states in a thread was late by 0.4 s (the soak's
stall trace: `bench/monitor.py --soak-trace stalls`). The same work on the loop, a slice at a time, costs the
loop nothing but its own slices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

__all__ = ["STEP", "paced"]

# Seconds of work between two turns given to the rest of the event loop. Short, because the turns add up: a
# blocklists run's comparison, `!status` and the domains run, each at 20 ms a turn, made one pass of the loop
# 60-100 ms long. A turn costs ~30 µs.
STEP = 0.005
T = TypeVar("T")


async def paced(items: Iterable[T], step: float = STEP) -> AsyncIterator[T]:
    """Each item, in order, with a turn of the event loop for other tasks every `step` seconds (by time, not by
    count: one item may be a state, another a domain's finding with a large tree)."""
    turn = time.perf_counter() + step
    for item in items:
        yield item
        if time.perf_counter() > turn:
            await asyncio.sleep(0)
            turn = time.perf_counter() + step
