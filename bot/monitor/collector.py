"""When the garbage collector walks the heap, while a monitor of tens of thousands of states runs.

CPython's full collection walks every object it tracks and holds the GIL all along: with a /20 on every blocklist
(73k states, their evidence, a run's 73k findings) each took 0.4-0.6 s, 15 to 23 of them in two minutes of soak,
and they were the event loop's worst stalls. So, from `take_over` to `give_back`:

- automatic full collections are off; the young ones, which find most reference cycles, still run;
- after each run, one full collection of what is not frozen (what the runs left since: the new states, the
  cycles they made), then everything alive is frozen (`gc.freeze`). Later collections never walk it again, and
  it is still freed by reference counting when a later run replaces it.

The price: a cycle formed among frozen objects after they were frozen is never collected. The soak
(`bench/monitor.py --soak-trace stalls`) counts what a final full collection finds.
"""

from __future__ import annotations

import gc

__all__ = ["after_run", "give_back", "take_over"]

NEVER = 1_000_000_000  # young collections before a full one: never, in practice
_saved: tuple[int, int, int] | None = None


def take_over() -> None:
    """Switch automatic full collections off, and freeze what start-up made (imports, config, the loaded store)."""
    global _saved
    if _saved is None:
        _saved = gc.get_threshold()
        gc.set_threshold(_saved[0], _saved[1], NEVER)
        after_run()


def after_run() -> None:
    """Collect what the runs left since the last call, and freeze what is alive (nothing before `take_over`)."""
    if _saved is not None:
        gc.collect()
        gc.freeze()


def give_back() -> None:
    """The collector as it was: everything frozen back in its sight, full collections on again."""
    global _saved
    if _saved is not None:
        gc.unfreeze()
        gc.set_threshold(*_saved)
        _saved = None
