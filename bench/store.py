"""The monitor's store: a run's save step at 500 to 73,728 states, one write's time and size, and a year of history.

python bench/store.py             # 500, 1k, 2k, 4k, 73,728 states; the year of history; TinyDB baseline to 2k
python bench/store.py --smoke     # 200 and 400 states, 400 history entries, baseline at 200

A run is what the blocklists job hands the store: one finding per (IP, zone), through `Monitor.process` (compare
with the stored state, the new state, history and alert), in one batch. "loop s" is the time the event loop
spends in it (the comparison and the hand-over to the writer thread); "write s" is the writer thread's time to
serialise and fsync the files (measured as the wait for `Store.flush()`); both are for the second run, when
every state exists. The baseline is the store before this change (one TinyDB document, a table scan per
get and upsert), loaded from git (commit f29556f) and fed the same findings in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config.loader import parse_config
from bot.monitor.core import Monitor
from bot.monitor.state import HistoryEntry
from bot.monitor.store import Store
from bot.render import Rendered
from bot.transports.base import Incoming
from checks import CheckContext, Finding, Report, Resolver, Status, parse_target

ROOT = Path(__file__).resolve().parent.parent


def state_mib(path: Path) -> float:
    """The state's files: the main file and the shards it names (`monitor.states/`), MiB."""
    shards = path.with_name(f"{path.stem}.states")
    files = [path, *(shards.iterdir() if shards.is_dir() else ())]
    return sum(file.stat().st_size for file in files) / 2**20


BASELINE_COMMIT = "f29556f"
ZONES = 18
START = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Silent:
    """A transport with no alert rooms: the bench measures the store, not delivery."""

    alert_rooms: Sequence[str] = ()

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        return "$x"


def reports(states: int, listed: int = 0) -> list[Report]:
    """`states` findings as IPs x ZONES blocklist answers; the first `listed` IPs are listed on the first zone."""
    out = []
    ips = max(1, -(-states // ZONES))
    for number in range(ips):
        ip = f"10.{number // 65536}.{number // 256 % 256}.{number % 256}"
        zones = ZONES if (number + 1) * ZONES <= states else states - number * ZONES
        findings = []
        for zone in range(zones):
            hit = zone == 0 and number < listed
            status = Status.FAIL if hit else Status.OK
            summary = f"listed in zone{zone}: 127.0.0.2" if hit else f"not listed in zone{zone}"
            evidence = {"answers": ["127.0.0.2"], "reason": "https://example.org/why"} if hit else {}
            advice = "Details and removal: https://example.org/lookup (ask for delisting once fixed)"
            findings.append(Finding("dnsbl", f"zone{zone}.example", status, summary, evidence, advice))
        out.append(Report(parse_target(ip), tuple(findings)))
    return out


def monitor(path: Path, clock: Any) -> Monitor:
    config = parse_config({"alerts": {"confirm": 1}, "state": {"dir": str(path.parent)}, "digest": {"enabled": False}})
    ctx = CheckContext(Resolver(["127.0.0.1:9"]))
    store = Store(path, clock=clock)
    store.start_writer()
    return Monitor(config, store, Silent(), ctx, families={}, clock=clock)  # type: ignore[arg-type]


async def timed_run(mon: Monitor, found: list[Report]) -> tuple[float, float, float]:
    """What `Monitor.run_family` does after the checks: the stepped comparison and the run's one commit.

    (loop wall s, write wall s, CPU s of both, all threads): on a shared machine the CPU time is the steadier."""
    started, cpu = time.perf_counter(), time.process_time()
    with mon.store.batch():
        await mon.process_run(found)
    handed = time.perf_counter()
    await mon.store.flush()
    return handed - started, time.perf_counter() - handed, time.process_time() - cpu


async def bench_sizes(sizes: Sequence[int], directory: Path) -> None:
    print(f"save step per run (second run: every state exists), {ZONES} zones per IP, new store")
    print(
        f"{'states':>7} {'loop s':>8} {'write s':>8} {'total s':>8} {'CPU s':>7} {'CPU µs/state':>13} {'file MiB':>9}"
    )
    for size in sizes:
        clock = Clock()
        path = directory / f"sizes-{size}" / "monitor.json"
        mon = monitor(path, clock)
        found = reports(size)
        await timed_run(mon, found)
        clock.now += timedelta(minutes=30)
        loop_s, write_s, cpu = await timed_run(mon, found)
        total = loop_s + write_s
        mib = state_mib(path)
        row = (
            f"{size:>7} {loop_s:>8.3f} {write_s:>8.3f} {total:>8.3f} {cpu:>7.3f} {cpu / size * 1e6:>13.1f} {mib:>9.1f}"
        )
        print(row)
        mon.store.close()


def _baseline_modules(directory: Path) -> tuple[ModuleType, ModuleType] | None:
    """The store and alerts modules of BASELINE_COMMIT, or None without git."""
    loaded = []
    for name, path in (("baseline_alerts", "bot/monitor/alerts.py"), ("baseline_store", "bot/monitor/store.py")):
        try:
            source = subprocess.run(
                ["git", "show", f"{BASELINE_COMMIT}:{path}"], cwd=ROOT, capture_output=True, check=True, text=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        file = directory / f"{name}.py"
        file.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        loaded.append(module)
    return loaded[0], loaded[1]


def bench_baseline(sizes: Sequence[int], directory: Path) -> None:
    modules = _baseline_modules(directory)
    if modules is None:
        print("baseline: git or commit f29556f not available, skipped")
        return
    alerts, store_module = modules
    rules = alerts.AlertRules(confirm=1)
    print(f"baseline: the TinyDB store of {BASELINE_COMMIT}, same findings (its save ran on the event loop)")
    print(f"{'states':>7} {'total s':>8} {'CPU s':>7} {'CPU µs/state':>13}")
    for size in sizes:
        store = store_module.Store(directory / f"baseline-{size}.json")
        found = reports(size)
        took = 0.0
        for run in range(2):
            now = START + timedelta(minutes=30 * run)
            started, cpu = time.perf_counter(), time.process_time()
            with store.batch():
                for report in found:
                    for finding in report.findings:
                        key = f"{report.target.value}|{finding.check}|{finding.subject}"
                        state, _ = alerts.observe(store.get_state(key), report.target.value, finding, now, rules)
                        store.put_state(state)
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"{size:>7} {took:>8.3f} {cpu:>7.3f} {cpu / size * 1e6:>13.1f}")
        store.close()


async def bench_year(states: int, directory: Path) -> None:
    """A year of history (one change per state), then a run with one change: its save step."""
    clock = Clock()
    path = directory / "year" / "monitor.json"
    mon = monitor(path, clock)
    found = reports(states)
    await timed_run(mon, found)
    with mon.store.batch():
        for index, report in enumerate(found):
            for finding in report.findings:
                at = (START + timedelta(seconds=index * 365 * 86400 / len(found))).isoformat()
                entry = HistoryEntry(at, "problem", report.target.value, finding.check, finding.subject, "fail",
                                     f"listed in {finding.subject}: 127.0.0.2", old_status="ok")  # fmt: skip
                mon.store.add_history(entry)
    await mon.store.flush()
    mon.store.close()
    history_mib = (path.parent / "monitor.history.jsonl").stat().st_size / 2**20
    opened, cpu = time.perf_counter(), time.process_time()
    mon = monitor(path, clock)  # a restart reads the year back
    load_s, load_cpu = time.perf_counter() - opened, time.process_time() - cpu
    clock.now = START + timedelta(days=365)
    loop_s, write_s, run_cpu = await timed_run(mon, reports(states, listed=1))
    entries = len(mon.store.history())
    print(f"a year of history: {entries} entries ({history_mib:.1f} MiB), {states} states")
    print(f"  load at start: {load_s:.2f} s (CPU {load_cpu:.2f} s)")
    total = loop_s + write_s
    print(f"  a run with one change: loop {loop_s:.3f} s + write {write_s:.3f} s = {total:.3f} s (CPU {run_cpu:.3f} s)")
    mon.store.close()


def main() -> None:
    logging.getLogger("repbot").setLevel(logging.ERROR)  # the silent transport's "no alert rooms" warnings
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--no-baseline", action="store_true", help="skip the TinyDB baseline")
    args = parser.parse_args()
    sizes = (200, 400) if args.smoke else (500, 1_000, 2_000, 4_000, 4_096 * ZONES)
    baseline = (200,) if args.smoke else (500, 1_000, 2_000)
    year = 400 if args.smoke else 4_096 * ZONES
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        asyncio.run(bench_sizes(sizes, directory))
        if not args.no_baseline:
            bench_baseline(baseline, directory)
        asyncio.run(bench_year(year, directory))


if __name__ == "__main__":
    main()
