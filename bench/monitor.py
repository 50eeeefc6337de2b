"""Monitor figures: the change-to-room latency against local Synapse, and the store's cost at 10,000 changes.

python bench/monitor.py                # latency (5 changes) + store (10,000 history entries)
python bench/monitor.py --smoke        # 2 changes, 500 entries
python bench/monitor.py --no-synapse   # the store only
python bench/monitor.py --soak 15      # the soak: 4,096 IPs and 200 domains every 2 min, commands arriving
python bench/monitor.py --soak 0.5 --soak-ips 64 --soak-domains 4 --soak-interval 10s   # its smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
            size = sum(path.stat().st_size for path in directory.rglob("store.*") if path.is_file()) / 1024
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


class Room:
    """The bot's room in the soak: replies are timed by the command that asked for them."""

    alert_rooms: Sequence[str] = ("!soak",)

    def __init__(self) -> None:
        self.replies: dict[str, float] = {}
        self.alerts = 0

    async def send(self, room: str, message: Any, *, txn_id: str | None = None, reply_to: Any = None) -> str:
        if reply_to is not None:
            self.replies[reply_to.event_id] = time.perf_counter()
        else:
            self.alerts += 1
        return "$x"

    async def send_image(self, room: str, png: bytes, **kwargs: Any) -> str:
        return "$x"

    async def react(self, incoming: Any, key: str) -> None:
        return None

    async def typing(self, room: str, on: bool) -> None:
        return None


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


ROOT = Path(__file__).resolve().parent.parent


class Stalls:
    """A watchdog thread: while the event loop is late by more than `threshold`, it samples every thread's stack.

    The lag probe only says that a turn was long; the samples say whose code ran meanwhile. A thread that holds
    the GIL (json.dumps in the store's writer) blocks the loop as surely as a callback does, so all threads
    are sampled, not only the main one."""

    def __init__(self, threshold: float = 0.1, every: float = 0.01) -> None:
        self.threshold, self.every = threshold, every
        self.beat = time.perf_counter()
        self.samples: Counter[str] = Counter()
        self.busy: Counter[str] = Counter()  # what is under way now (a write, a comparison, !status)
        self.late: dict[str, list[float]] = {}  # what was under way -> the lags above the threshold
        self.collections: dict[int, list[float]] = {0: [], 1: [], 2: []}  # generation -> pauses, s
        self.begun = time.perf_counter()
        self.events: list[tuple[float, str]] = []  # (s since start, what): late wake-ups, full collections
        self._collecting = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-stalls", daemon=True)

    def start(self) -> None:
        gc.callbacks.append(self._collection)
        self._thread.start()

    def stop(self) -> None:
        gc.callbacks.remove(self._collection)
        self._stopped.set()
        self._thread.join()

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        """The garbage collector holds the GIL from start to stop: no thread runs, the watchdog included."""
        if phase == "start":
            self._collecting = time.perf_counter()
        else:
            pause = time.perf_counter() - self._collecting
            self.collections[info["generation"]].append(pause)
            if info["generation"] == 2:
                what = f"full collection {pause * 1000:.0f} ms, {info['collected']:,} freed"
                self.events.append((self._collecting - self.begun, what))

    def _run(self) -> None:
        while not self._stopped.wait(self.every):
            if time.perf_counter() - self.beat > self.threshold:
                self._sample()

    def _sample(self) -> None:
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == threading.get_ident():
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if f.filename.startswith(str(ROOT))]
            if not ours or _idle(ours[-1]):
                continue
            shown = ours[-6:] if stack[-1] is ours[-1] else [*ours[-5:], stack[-1]]
            where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(shown))
            self.samples[f"[{names.get(ident, ident)}] {where}"] += 1

    @contextlib.contextmanager
    def during(self, what: str) -> Iterator[None]:
        self.busy[what] += 1
        try:
            yield
        finally:
            self.busy[what] -= 1

    def lag(self, seconds: float) -> None:
        self.beat = time.perf_counter()
        if seconds > self.threshold:
            under_way = " + ".join(sorted(name for name, count in self.busy.items() if count > 0)) or "(nothing)"
            self.late.setdefault(under_way, []).append(seconds)
            self.events.append((self.beat - self.begun, f"late {seconds * 1000:.0f} ms during {under_way}"))

    def report(self) -> None:
        for under_way, lags in sorted(self.late.items(), key=lambda item: -max(item[1])):
            worst = max(lags) * 1000
            print(f"  lags > {self.threshold * 1000:.0f} ms during {under_way}: {len(lags)}, max {worst:.0f} ms")
        for generation, pauses in self.collections.items():
            if pauses:
                print(
                    f"  gc generation {generation}: {len(pauses)} collections, max {max(pauses) * 1000:.0f} ms, "
                    f"total {sum(pauses):.2f} s"
                )
        # The monitor's stop unfroze what it froze (bot.monitor.collector): what a full collection finds now was
        # garbage the runs' collections did not find.
        print(f"  after the stop, a full collection found {gc.collect():,} unreachable objects")
        census = Counter(type(thing).__name__ for thing in gc.get_objects())
        shown = ", ".join(f"{name} {count:,}" for name, count in census.most_common(8))
        print(f"  objects the collector tracks at the end: {sum(census.values()):,} ({shown})")
        print("  in order (s since the start): " + "; ".join(f"{at:.1f} {what}" for at, what in self.events))
        total = sum(self.samples.values())
        print(f"  stalls > {self.threshold * 1000:.0f} ms: {total} samples of {self.every * 1000:.0f} ms; the top:")
        for where, count in self.samples.most_common(12):
            print(f"    {count:5d}  {where}")


def _idle(frame: traceback.FrameSummary) -> bool:
    """A thread parked in its wait (the store's writer between commits, this bench's own sleeps)."""
    return frame.name in ("_run", "probe", "commands", "memory") and "wait" in (frame.line or "")


class Allocations:
    """tracemalloc snapshots at each run's end, each diffed with the one before: what grew, by line."""

    def __init__(self) -> None:
        tracemalloc.start(8)
        self.last = tracemalloc.take_snapshot()

    def after(self, name: str) -> None:
        snapshot = tracemalloc.take_snapshot()
        diff = snapshot.compare_to(self.last, "traceback")
        self.last = snapshot
        current, peak = tracemalloc.get_traced_memory()
        print(f"  after {name}: traced {current / 2**20:.0f} MiB (peak {peak / 2**20:.0f} MiB); grew most:")
        for stat in diff[:6]:
            frames = [f for f in stat.traceback if f.filename.startswith(str(ROOT))] or list(stat.traceback)
            where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-4:]))
            print(f"    {stat.size_diff / 2**20:+8.1f} MiB {stat.count_diff:+8d} blocks  {where}")


def soak_zone(path: Path, ips: Sequence[str], domains: Sequence[str]) -> None:
    """Healthy blocklists (their test points listed, the IPs not), and each domain with SPF, DMARC and an MX."""
    from checks.dnsbl.catalog import load_catalog

    records: list[list[object]] = []
    for zone in load_catalog().zones:
        records.append([f"2.0.0.127.{zone.name}", "A", "127.0.0.2"])
    network = ips[0].rsplit(".", 2)[0]
    for domain in domains:
        records.append([domain, "TXT", f"v=spf1 ip4:{network}.0.0/20 -all"])
        records.append([f"_dmarc.{domain}", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@" + domain])
        records.append([domain, "MX", f"10 mx.{domain}."])
        records.append([f"mx.{domain}", "A", "127.0.0.1"])
    path.write_text(json.dumps({"records": records}), encoding="utf-8")


async def soak(
    minutes: float, ips_count: int, domains_count: int, interval: str, directory: Path, *, trace: str = ""
) -> None:
    """The bot's monitor and command handling in one process, against a DNS server in its own process.

    trace "stalls": sample who holds the loop when it is late; "memory": tracemalloc diffs between runs."""
    from bench.dnsbl_sweep import DnsServerProcess
    from bench.store import state_mib
    from bot import pacing
    from bot.app import Bot, Permissions, RateLimiter
    from bot.commands.catalog import REGISTRY
    from bot.commands.registry import Services
    from bot.config.loader import parse_config
    from bot.context import build_context
    from bot.monitor.core import Monitor
    from bot.transports.base import Incoming

    ips = [f"10.20.{n // 256}.{n % 256}" for n in range(ips_count)]
    domains = [f"d{n}.soak.test" for n in range(domains_count)]
    soak_zone(directory / "zone.json", ips, domains)
    server = DnsServerProcess(directory / "zone.json", 0.02)
    try:
        # Each domain is sent by two of the IPs ([domains.X] sending_ips), as a hosting operator would set it:
        # without it, each domain's SPF verdict evaluates every monitored IP (200 x 4,096 evaluations a run).
        sending = {
            domain: {"sending_ips": [ips[n % len(ips)], ips[(n + 1) % len(ips)]]} for n, domain in enumerate(domains)
        }
        config = parse_config({
            "dns": {"nameservers": [server.address]},
            "monitor": {"ips": ips, "domains": domains},
            "domains": sending,
            "schedule": {"blocklists": interval, "domains": interval, "tls": interval, "first_run": "1s"},
            "digest": {"enabled": False},
            "state": {"dir": str(directory / "state")},
        })  # fmt: skip
        room = Room()
        ctx = build_context(config)
        store = Store(directory / "state" / "monitor.json")
        monitor = Monitor(config, store, room, ctx)  # type: ignore[arg-type]
        services = Services(config, ctx, room, REGISTRY, datetime.now(UTC), monitor=monitor)  # type: ignore[arg-type]
        bot = Bot(services, Permissions(admins=("@op:soak",)), RateLimiter(None))
        runs: list[tuple[str, float, float, int]] = []  # (family, run s, comparison s, changes)
        writes: list[tuple[float, int]] = []  # (s, shards written)
        original_write = store.files.write

        stalls = Stalls() if trace == "stalls" else None
        during = stalls.during if stalls is not None else lambda what: contextlib.nullcontext()

        def timed_write(commit: Any) -> None:
            started = time.perf_counter()
            with during("write"):
                original_write(commit)
            writes.append((time.perf_counter() - started, len(commit.shards)))

        store.files.write = timed_write  # type: ignore[method-assign]
        original_process = monitor.process_run
        saves: list[float] = []

        async def timed_process(reports: Any) -> Any:
            started = time.perf_counter()
            with during("comparison"):
                events = await original_process(reports)
            saves.append(time.perf_counter() - started)
            return events

        monitor.process_run = timed_process  # type: ignore[method-assign]
        original_run = monitor.run_family

        allocations = Allocations() if trace == "memory" else None

        async def timed_run(name: str) -> Any:
            started = time.perf_counter()
            with during(name):
                events = await original_run(name)
            runs.append((name, time.perf_counter() - started, saves[-1] if saves else 0.0, len(events)))
            if allocations is not None:
                allocations.after(name)
            return events

        monitor.run_family = timed_run  # type: ignore[method-assign]
        lags: list[float] = []
        pings: list[float] = []
        rss: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.02)
                lags.append(time.perf_counter() - before - 0.02)
                if stalls is not None:
                    stalls.lag(lags[-1])

        async def handle(incoming: Incoming) -> None:
            with during(incoming.body):
                await bot.handle(incoming)

        async def commands() -> None:
            number = 0
            while not stop.is_set():
                number += 1
                line = "!status" if number % 10 == 0 else "!ping"
                incoming = Incoming("!soak", "@op:soak", line, f"$cmd{number}")
                sent = time.perf_counter()
                task = asyncio.create_task(handle(incoming))
                await asyncio.sleep(2.0)
                if line == "!ping":
                    answered = room.replies.get(incoming.event_id)
                    pings.append((answered - sent) if answered is not None else float("inf"))
                if task.done():
                    await task

        async def memory() -> None:
            begun = time.perf_counter()
            while not stop.is_set():
                rss.append((time.perf_counter() - begun, _rss_mib()))
                await asyncio.sleep(10)

        await monitor.start()
        if stalls is not None:
            stalls.start()
        tasks = [asyncio.create_task(job()) for job in (probe, commands, memory)]
        await asyncio.sleep(minutes * 60)
        if stalls is not None:
            stalls.stop()  # before the probe stops beating
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await monitor.stop()
        store.close()
        await ctx.aclose()
    finally:
        server.close()
    main = directory / "state" / "monitor.json"
    size, main_kib = state_mib(main), main.stat().st_size / 1024
    shards = len(list(main.with_name("monitor.states").iterdir()))
    print(f"soak: {ips_count} IPs, {domains_count} domains, every {interval}, {minutes:g} min, DNS 20 ms per answer")
    for name, took, save, changes in runs:
        turns = f"in {pacing.STEP * 1000:g} ms turns"
        print(f"  run {name:<10} {took:7.2f} s, {changes:5d} changes (comparison, {turns}: {save:.3f} s)")
    print(f"  event-loop lag: max {max(lags) * 1000:.0f} ms, p99 {sorted(lags)[int(len(lags) * 0.99)] * 1000:.0f} ms")
    answered = [p for p in pings if p != float("inf")]
    print(f"  !ping: {len(pings)} sent, {len(answered)} answered within 2 s, max {max(answered) * 1000:.0f} ms")
    after_first = [value for at, value in rss if runs and at > runs[0][1] + 5] or [value for _, value in rss]
    peak = max(value for _, value in rss)
    print(f"  RSS: after the first run {after_first[0]:.0f} MiB, at the end {rss[-1][1]:.0f} MiB, max {peak:.0f} MiB")
    median = statistics.median(took for took, _shards in writes)
    print(
        f"  state files {size:.1f} MiB (main file {main_kib:.0f} KiB, {shards} shards); "
        f"writes: {len(writes)}, max {max(writes)[0]:.2f} s, median {median:.2f} s"
    )
    print("  writes, s (shards written): " + " ".join(f"{took:.2f} ({shards})" for took, shards in writes))
    if stalls is not None:
        stalls.report()
    print("  RSS every minute, MiB: " + " ".join(f"{value:.0f}" for at, value in rss[::6]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--no-synapse", action="store_true", help="skip the latency figure")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="run the soak (4,096 IPs, 200 domains) instead")
    parser.add_argument("--soak-ips", type=int, default=4_096)
    parser.add_argument("--soak-domains", type=int, default=200)
    parser.add_argument("--soak-interval", default="2m")
    parser.add_argument("--soak-trace", choices=("stalls", "memory"), default="", help="attribute lag or growth")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        if args.soak is not None:
            logging.getLogger("repbot").setLevel(logging.ERROR)
            run = soak(
                args.soak, args.soak_ips, args.soak_domains, args.soak_interval, directory, trace=args.soak_trace
            )
            asyncio.run(run)
            return
        if not args.no_synapse:
            bench_latency(2 if args.smoke else 5, directory)
        bench_store(500 if args.smoke else args.entries, directory)


if __name__ == "__main__":
    main()
