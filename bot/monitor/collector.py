"""When the garbage collector walks the heap, while a monitor of tens of thousands of states runs.

CPython's full collection walks every object it tracks and holds the GIL all along: with a /20 on every blocklist
(73k states, their evidence, a run's 73k findings) each took 0.4-0.6 s, 15 to 23 of them in two minutes of soak,
and they were the event loop's worst stalls. So, from `take_over` to `give_back`:

- automatic full collections are off; the young ones, which find most reference cycles, still run;
- after each run, one full collection of what is not frozen (what the runs left since: the new states, the
  cycles they made), then everything alive is frozen (`gc.freeze`). Later collections never walk it again, and
  it is still freed by reference counting when a later run replaces it.
- but not while another run is under way: its findings so far are alive and would be walked (a /20's
  blocklists run holds 70k findings, some 300k objects, until it ends: the domains run that ended first
  then paid 0.2-0.3 s for them). The last run to end collects for all, or the MAX_DEFERRED-th run that ended
  beside another, so that families that always overlap still get collected.

The price: a cycle formed among frozen objects after they were frozen is never collected. The soak
(`bench/monitor.py --soak-trace stalls`) counts what a final full collection finds.
"""

from __future__ import annotations

import gc

__all__ = ["after_run", "give_back", "run_begins", "take_over"]

NEVER = 1_000_000_000  # young collections before a full one: never, in practice
MAX_DEFERRED = 8  # runs that end while another is under way before one collects all the same
_saved: tuple[int, int, int] | None = None
_under_way = 0  # runs begun and not yet ended
_deferred = 0  # runs ended since the last collection


def take_over() -> None:
    """Switch automatic full collections off, and freeze what start-up made (imports, config, the loaded store)."""
    global _saved, _under_way
    if _saved is None:
        _under_way = 0
        _saved = gc.get_threshold()
        gc.set_threshold(_saved[0], _saved[1], NEVER)
        _collect()


def run_begins() -> None:
    """A run starts: until it ends (`after_run`), the collection after another run waits for it."""
    global _under_way
    _under_way += 1


def after_run() -> None:
    """A run ended (its findings let go): collect what the runs left, unless another run is still under way."""
    global _under_way, _deferred
    _under_way = max(_under_way - 1, 0)
    _deferred += 1
    if _saved is not None and (not _under_way or _deferred >= MAX_DEFERRED):
        _collect()


def _collect() -> None:
    """Collect what is not frozen, and freeze what is alive."""
    global _deferred
    _deferred = 0
    gc.collect()
    gc.freeze()


def give_back() -> None:
    """The collector as it was: everything frozen back in its sight, full collections on again."""
    global _saved
    if _saved is not None:
        gc.unfreeze()
        gc.set_threshold(*_saved)
        _saved = None
