"""Sweep N IPv4 addresses across the whole IP blocklist catalog, with repbot's checks.dnsbl.lookup and with pydnsbl.

Both sides ask the same zones of the same local DNS server (tests/fixtures/dnsserver.py), which adds a fixed delay
to every answer (default 20 ms), so the wall time shows how well each client keeps queries in flight.

The server runs in a separate process (`python -m tests.fixtures.dnsserver --zone FILE.json`), not in a thread of
this one: in-process, the server's Python code would compete with the client for the GIL and its CPU time would be
counted as the client's. Process CPU time (time.process_time, all threads: c-ares runs its own event thread) is
measured around each sweep only, so the figures are the client's own CPU.

pydnsbl takes no nameserver argument and c-ares' `servers` setter cannot carry a port, so its aiodns resolver is
replaced by one made with `nameservers=["127.0.0.1"]` and pycares' `udp_port`/`tcp_port` channel options.

    python bench/dnsbl_sweep.py                 # a /24 (256 IPs), 20 ms per answer
    python bench/dnsbl_sweep.py --size 1024 --delay 0.05
    python bench/dnsbl_sweep.py --smoke         # 8 IPs: CI checks that the bench still runs
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from checks.context import CheckContext  # noqa: E402
from checks.dns.resolver import Resolver  # noqa: E402
from checks.dnsbl.lookup import Zone, check_ip, load_catalog  # noqa: E402
from checks.model import Target, TargetKind  # noqa: E402

FIRST_IP = ipaddress.IPv4Address("198.51.100.0")
WARMUP_IP = ipaddress.IPv4Address("203.0.113.0")
WARMUP_SIZE = 32
CONCURRENCY = 200


@dataclass(frozen=True)
class Result:
    name: str
    wall: float
    cpu: float
    queries: int
    listed: int

    @property
    def qps(self) -> float:
        return self.queries / self.wall if self.wall else 0.0

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu / self.queries * 1e6 if self.queries else 0.0


def ip_zones() -> list[Zone]:
    """Every usable zone that lists IPv4 addresses (block, allow and reputation lists alike)."""
    return list(load_catalog().for_family("ipv4"))


def zone_data(zones: Sequence[Zone], ips: Sequence[str]) -> dict[str, object]:
    """Test points for every zone (so all are healthy) and a listing for every 16th IP in every zone."""
    records: list[list[object]] = []
    for zone in zones:
        records.append([f"2.0.0.127.{zone.name}", "A", _listed_code(zone)])
        for ip in ips[::16]:
            records.append([f"{_reverse(ip)}.{zone.name}", "A", _listed_code(zone)])
    return {"records": records}


def _listed_code(zone: Zone) -> str:
    if zone.levels:
        return str(ipaddress.IPv4Address(zone.levels[-1].first))
    return next(iter(zone.codes), "127.0.0.2")


def _reverse(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


@contextmanager
def dns_server_process(zone_file: Path, delay: float) -> Iterator[tuple[str, int]]:
    """A DNS server in its own process; yields its (host, port)."""
    command = [sys.executable, "-m", "tests.fixtures.dnsserver", "--port", "0", "--delay", str(delay)]
    command += ["--zone", str(zone_file)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"the DNS server did not start: {line!r}")
        host, _, port = line.removeprefix("READY ").rpartition(":")
        yield host, int(port)
    finally:
        process.terminate()
        process.wait(10)


async def sweep_repbot(host: str, port: int, ips: Sequence[str]) -> Result:
    resolver = Resolver([f"{host}:{port}"], timeout=5.0, concurrency=CONCURRENCY, cache=False)
    ctx = CheckContext(resolver, timeout=5.0)
    targets = [Target(TargetKind.IPV4, ip) for ip in ips]
    wall, cpu = time.perf_counter(), time.process_time()
    reports = await asyncio.gather(*(check_ip(target, ctx) for target in targets))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    listed = sum(1 for findings in reports for f in findings if f.code in ("listed", "allow-listed", "reputation-good"))
    unknown = sum(1 for findings in reports for f in findings if f.status.value == "unknown")
    if unknown:
        print(f"warning: repbot saw {unknown} unknown answers", file=sys.stderr)
    resolver.close()
    return Result("repbot checks.dnsbl.lookup", wall, cpu, resolver.sent, listed)


async def sweep_pydnsbl(host: str, port: int, ips: Sequence[str], zones: Sequence[Zone]) -> Result:
    import aiodns
    from pydnsbl import DNSBLIpChecker
    from pydnsbl.providers import Provider

    loop = asyncio.get_running_loop()
    checker = DNSBLIpChecker(providers=[Provider(zone.name) for zone in zones], concurrency=CONCURRENCY, loop=loop)
    checker._resolver = aiodns.DNSResolver(
        nameservers=[host], loop=loop, udp_port=port, tcp_port=port, timeout=5.0, tries=2
    )
    wall, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(checker.check_async(ip) for ip in ips))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    failed = sum(len(result.failed_providers) for result in results)
    if failed:
        print(f"warning: pydnsbl saw {failed} failed look-ups", file=sys.stderr)
    listed = sum(len(result.detected_by) for result in results)
    return Result("pydnsbl (aiodns/c-ares)", wall, cpu, len(ips) * len(zones), listed)


def report(results: Sequence[Result], delay: float, size: int, zones: int) -> None:
    print(f"sweep: {size} IPs x {zones} IPv4 zones, server delay {delay * 1000:.0f} ms per answer, "
          f"{CONCURRENCY} in flight, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'client':26} {'wall s':>8} {'queries':>8} {'q/s':>8} {'CPU µs/q':>9} {'listed':>7}")
    for r in results:
        print(f"{r.name:26} {r.wall:8.3f} {r.queries:8d} {r.qps:8.0f} {r.cpu_us_per_query:9.1f} {r.listed:7d}")
    ours, theirs = results
    print(f"ratio repbot/pydnsbl: wall {ours.wall / theirs.wall:.2f}, "
          f"CPU per query {ours.cpu_us_per_query / theirs.cpu_us_per_query:.2f}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="number of IPs to sweep (default 256, a /24)")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds the server waits per answer (0.02)")
    parser.add_argument("--smoke", action="store_true", help="a tiny sweep (8 IPs) to check the bench runs")
    parser.add_argument("--only", choices=["repbot", "pydnsbl"], help="run one side only (for profiling)")
    args = parser.parse_args(argv)
    size = 8 if args.smoke else args.size
    ips = [str(FIRST_IP + i) for i in range(size)]
    zones = ip_zones()
    with tempfile.TemporaryDirectory() as tmp:
        zone_file = Path(tmp) / "zones.json"
        zone_file.write_text(json.dumps(zone_data(zones, ips)), encoding="utf-8")
        with dns_server_process(zone_file, args.delay) as (host, port):
            # Untimed: a fresh server answers its first queries slower, which would penalise whichever side ran
            # first; each side also warms its own code paths. Other addresses, so nothing measured is cached.
            warmup = [str(WARMUP_IP + i) for i in range(WARMUP_SIZE)]
            if args.only != "pydnsbl":
                asyncio.run(sweep_repbot(host, port, warmup))
            if args.only != "repbot":
                asyncio.run(sweep_pydnsbl(host, port, warmup, zones))
            results = []
            if args.only != "pydnsbl":
                results.append(asyncio.run(sweep_repbot(host, port, ips)))
            if args.only != "repbot":
                results.append(asyncio.run(sweep_pydnsbl(host, port, ips, zones)))
    if len(results) == 2:
        report(results, args.delay, size, len(zones))
    else:
        for r in results:
            print(f"{r.name}: wall {r.wall:.3f} s, {r.queries} queries, {r.cpu_us_per_query:.1f} µs CPU/query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
