"""Monitor figures: the change-to-room latency against local Synapse, and the store's cost at 10,000 changes.

python bench/monitor.py                # latency (5 changes) + store (10,000 history entries)
python bench/monitor.py --smoke        # 2 changes, 500 entries
python bench/monitor.py --no-synapse   # the store only
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.monitor.state import AlertState, HistoryEntry, OutboxItem
from bot.monitor.store import Store


def bench_store(entries: int, directory: Path) -> None:
    """One atomic write per history entry (as one change per run would do), timed at a few sizes."""
    store = Store(directory / "store.json")
    with store.batch():
        for number in range(50):  # a typical state table: 50 findings
            key = f"192.0.2.1|dnsbl|zone{number}"
            store.put_state(AlertState(key, "192.0.2.1", "dnsbl", f"zone{number}", "ok", summary="not listed " * 4))
    marks = sorted({1_000, 5_000, entries} & set(range(1, entries + 1)))
    samples: list[float] = []
    print(f"store: {entries} history entries, one commit (an appended, fsynced history line) each")
    print(f"{'entries':>8} {'write ms (median of last 100)':>30} {'run batch ms':>13} {'files KiB':>9}")
    for number in range(1, entries + 1):
        started = time.perf_counter()
        with store.batch():
            store.add_history(
                HistoryEntry(
                    at=datetime.now(UTC).isoformat(),
                    kind="problem" if number % 2 else "resolved",
                    target="192.0.2.1",
                    check="dnsbl",
                    subject=f"zone{number % 50}",
                    status="fail",
                    summary="listed in Spamhaus ZEN: 127.0.0.2 SBL: Spamhaus Block List (https://check...)",
                    lasted=3600.0,
                )
            )
        samples.append(time.perf_counter() - started)
        if number in marks:
            started = time.perf_counter()
            with store.batch():  # what one scheduled run writes: every state, one change, one outbox item
                for state in store.states():
                    store.put_state(dataclasses.replace(state, last_seen=datetime.now(UTC).isoformat()))
                store.enqueue(OutboxItem(f"x{number}", "now", ("!r",)))
            run_ms = (time.perf_counter() - started) * 1000
            size = sum(path.stat().st_size for path in directory.glob("store.*")) / 1024
            median = statistics.median(samples[-100:]) * 1000
            print(f"{number:>8} {median:>30.2f} {run_ms:>13.2f} {size:>9.0f}")
    store.close()


def bench_latency(changes: int, directory: Path) -> None:
    """The bot as a subprocess checking every second; the time from each DNS flip to its alert in the room."""
    from tests.fixtures.dnsserver import DnsServer
    from tests.fixtures.synapse import CONFIG_CACHE, SERVER_NAME, SynapseServer, generated_config
    from tests.test_monitor_crash import Flipper, Harness

    (directory / "synapse").mkdir()
    synapse = SynapseServer(directory / "synapse", generated_config(CONFIG_CACHE, SERVER_NAME))
    synapse.write_config()
    synapse.start()
    try:
        with DnsServer() as dns:
            (directory / "bot").mkdir()
            harness = Harness(directory / "bot", synapse, dns)
            harness.start()
            flipper = Flipper(dns, period=1.0)
            time.sleep(2.5)  # the first run has set the baseline
            latencies: list[float] = []
            for _ in range(changes):
                before = len(harness.alerts_in_room())
                flipper.flip()
                flipped = time.perf_counter()
                while len(harness.alerts_in_room()) == before:
                    if time.perf_counter() - flipped > 30:
                        raise SystemExit("no alert within 30 s")
                    time.sleep(0.02)
                latencies.append(time.perf_counter() - flipped)
                time.sleep(1.0)
            harness.stop()
    finally:
        synapse.stop()
    shown = ", ".join(f"{value:.2f}" for value in latencies)
    print(f"latency DNS change -> alert in the room (blocklists every 1 s, confirm = 1): {shown} s")
    print(
        f"  median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s (includes up to 1 s schedule wait)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--no-synapse", action="store_true", help="skip the latency figure")
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        if not args.no_synapse:
            bench_latency(2 if args.smoke else 5, directory)
        bench_store(500 if args.smoke else args.entries, directory)


if __name__ == "__main__":
    main()
