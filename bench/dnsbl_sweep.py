"""Sweep N IPv4 addresses across the whole IP blocklist catalog: `repbot check --json` against pydnsbl, as processes.

Both sides ask the same zones of the same local DNS server (tests/fixtures/dnsserver.py, in its own process),
which waits a fixed delay before every answer (default 20 ms: the round-trip time), with 200 queries in flight.

By default each side is a whole process, start-up and output included, as an operator runs it, under
`/usr/bin/time -v` (CPU = user + system, peak RSS): `python -m bot check IP... --nameserver H:P --json` and a
small pydnsbl script (this file, `--pydnsbl-child`). Queries are counted by the server (SIGUSR1 prints its
count), so CPU per query is the process's CPU over the queries it really sent. Every zone is healthy and the
server answers everything, so every `unknown` finding (repbot) or failed provider (pydnsbl) is bogus.

pydnsbl takes no nameserver argument and c-ares' `servers` setter cannot carry a port, so its aiodns resolver is
replaced by one made with `nameservers=["127.0.0.1"]` and pycares' `udp_port`/`tcp_port` channel options.

    python bench/dnsbl_sweep.py                              # a /24 (256 IPs), 20 ms, 3 rounds
    python bench/dnsbl_sweep.py --size 1024 --delay 0.1      # the /22 at 100 ms
    python bench/dnsbl_sweep.py --size 4096 --only repbot    # the /20, against the network floor
    python bench/dnsbl_sweep.py --in-process                 # the library alone (checks.dnsbl.lookup)
    python bench/dnsbl_sweep.py --smoke                      # 8 IPs, one round: CI checks that it still runs
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import ipaddress
import json
import os
import re
import signal
import statistics
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

FIRST_IP = ipaddress.IPv4Address("198.51.100.0")  # a /20 from here stays inside 198.51.96.0/19
WARMUP_IP = ipaddress.IPv4Address("203.0.113.0")
WARMUP_SIZE = 32
CONCURRENCY = 200
TIMEOUT = 5.0
TIME = "/usr/bin/time"
LISTED_CODES = ("listed", "allow-listed", "reputation-good", "reputation-poor")


@dataclass(frozen=True)
class Result:
    name: str
    wall: float
    cpu: float
    queries: int
    listed: int
    unknown: int
    rss_mib: float = 0.0

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu / self.queries * 1e6 if self.queries else 0.0


def ip_zones() -> list[str]:
    """Every usable zone that lists IPv4 addresses (block, allow and reputation lists alike)."""
    from checks.dnsbl.lookup import load_catalog

    return [zone.name for zone in load_catalog().for_family("ipv4")]


def zone_data(ips: Sequence[str]) -> dict[str, object]:
    """Test points for every zone (so all are healthy) and a listing for every 16th IP in every zone."""
    from checks.dnsbl.lookup import load_catalog

    records: list[list[object]] = []
    for zone in load_catalog().for_family("ipv4"):
        code = str(ipaddress.IPv4Address(zone.levels[-1].first)) if zone.levels else next(iter(zone.codes), "127.0.0.2")
        records.append([f"2.0.0.127.{zone.name}", "A", code])
        for ip in ips[::16]:
            records.append([f"{_reverse(ip)}.{zone.name}", "A", code])
    return {"records": records}


def _reverse(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


class DnsServerProcess:
    """The local DNS server in its own process (its Python must not share the client's GIL or CPU count)."""

    def __init__(self, zone_file: Path, delay: float, host: str = "127.0.0.1") -> None:
        command = [sys.executable, "-m", "tests.fixtures.dnsserver", "--host", host, "--port", "0", "--delay",
                   str(delay)]  # fmt: skip
        command += ["--zone", str(zone_file)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the DNS server did not start: {line!r}")
        self.address = line.removeprefix("READY ")

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def count(self) -> int:
        """The queries the server has received so far."""
        self.process.send_signal(signal.SIGUSR1)
        line = self.readline()
        if not line.startswith("COUNT "):
            raise RuntimeError(f"the DNS server did not count: {line!r}")
        return int(line.removeprefix("COUNT "))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def dns_server(ips: Sequence[str], delay: float, host: str = "127.0.0.1") -> Iterator[DnsServerProcess]:
    with tempfile.TemporaryDirectory() as tmp:
        zone_file = Path(tmp) / "zones.json"
        zone_file.write_text(json.dumps(zone_data([*ips, *warmup_ips()])), encoding="utf-8")
        server = DnsServerProcess(zone_file, delay, host)
        try:
            yield server
        finally:
            server.close()


def warmup_ips() -> list[str]:
    return [str(WARMUP_IP + i) for i in range(WARMUP_SIZE)]


# -- whole processes ---------------------------------------------------------------------------------------


def timed_process(name: str, command: list[str], server: DnsServerProcess, tmp: Path) -> tuple[Result, str]:
    """Run `command` under /usr/bin/time -v; its Result (listed/unknown left 0) and its stdout.

    Without /usr/bin/time (Debian's `time` package) the figures come from wait4's resource usage; its peak RSS
    then counts this process's memory, which the child holds between fork and exec (~30 MiB).
    """
    timing, output = tmp / "time.txt", tmp / "stdout.txt"
    before = server.count()
    use_time = Path(TIME).exists()
    with output.open("w") as stdout:
        started = time.perf_counter()
        wrapped = [TIME, "-v", "-o", str(timing), *command] if use_time else command
        process = subprocess.Popen(wrapped, cwd=ROOT, stdout=stdout)
        _, _, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = 0  # reaped by wait4; the exit code (the worst status) is not a figure here
    queries = server.count() - before
    if use_time:
        report = timing.read_text()
        cpu = _time_field(report, "User time (seconds)") + _time_field(report, "System time (seconds)")
        rss = _time_field(report, "Maximum resident set size (kbytes)") / 1024
    else:
        cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    return Result(name, wall, cpu, queries, 0, 0, rss), output.read_text()


def _time_field(report: str, label: str) -> float:
    found = re.search(rf"{re.escape(label)}: ([0-9.]+)", report)
    if found is None:
        raise RuntimeError(f"/usr/bin/time -v gave no {label!r}")
    return float(found.group(1))


def run_repbot(server: DnsServerProcess, ips: Sequence[str], tmp: Path, only_dnsbl: bool = False) -> Result:
    command = [sys.executable, "-m", "bot", "check", *ips, "--nameserver", server.address, "--json"]
    if only_dnsbl:
        command += ["--only", "dnsbl"]  # blocklists alone, as pydnsbl: no PTR check
    name = "repbot check --only dnsbl" if only_dnsbl else "repbot check --json"
    result, stdout = timed_process(name, command, server, tmp)
    findings = [f for target in json.loads(stdout)["targets"] for f in target["findings"] if f["check"] == "dnsbl"]
    listed = sum(1 for f in findings if f["code"] in LISTED_CODES)
    unknown = sum(1 for f in findings if f["status"] == "unknown")
    return Result(result.name, result.wall, result.cpu, result.queries, listed, unknown, result.rss_mib)


def run_pydnsbl(server: DnsServerProcess, ips: Sequence[str], zones: Sequence[str], tmp: Path) -> Result:
    job = tmp / "pydnsbl.json"
    job.write_text(json.dumps({"server": server.address, "ips": list(ips), "zones": list(zones)}))
    command = [sys.executable, __file__, "--pydnsbl-child", str(job)]
    result, stdout = timed_process("pydnsbl (aiodns/c-ares)", command, server, tmp)
    counts = json.loads(stdout)
    return Result(result.name, result.wall, result.cpu, result.queries, counts["listed"], counts["failed"],
                  result.rss_mib)  # fmt: skip


def pydnsbl_child(job_file: str) -> int:
    """The pydnsbl side as its own process: sweep, then print {"listed", "failed"}."""
    job = json.loads(Path(job_file).read_text())
    host, _, port = job["server"].rpartition(":")
    results = asyncio.run(_pydnsbl_sweep(host, int(port), job["ips"], job["zones"]))
    print(json.dumps({"listed": sum(len(r.detected_by) for r in results),
                      "failed": sum(len(r.failed_providers) for r in results)}))  # fmt: skip
    return 0


async def _pydnsbl_sweep(host: str, port: int, ips: Sequence[str], zones: Sequence[str]) -> list[object]:
    import aiodns
    from pydnsbl import DNSBLIpChecker
    from pydnsbl.providers import Provider

    loop = asyncio.get_running_loop()
    checker = DNSBLIpChecker(providers=[Provider(zone) for zone in zones], concurrency=CONCURRENCY, loop=loop)
    checker._resolver = aiodns.DNSResolver(
        nameservers=[host], loop=loop, udp_port=port, tcp_port=port, timeout=TIMEOUT, tries=2
    )
    return list(await asyncio.gather(*(checker.check_async(ip) for ip in ips)))


# -- in process (the library alone) ------------------------------------------------------------------------


async def in_process_repbot(address: str, ips: Sequence[str]) -> Result:
    from checks.context import CheckContext
    from checks.dns.resolver import Resolver
    from checks.dnsbl.lookup import check_ip
    from checks.model import Target, TargetKind

    resolver = Resolver([address], timeout=TIMEOUT, concurrency=CONCURRENCY, cache=False)
    ctx = CheckContext(resolver, timeout=TIMEOUT)
    wall, cpu = time.perf_counter(), time.process_time()
    reports = await asyncio.gather(*(check_ip(Target(TargetKind.IPV4, ip), ctx) for ip in ips))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    findings = [f for findings in reports for f in findings]
    listed = sum(1 for f in findings if f.code in LISTED_CODES)
    unknown = sum(1 for f in findings if f.status.value == "unknown")
    resolver.close()
    return Result("repbot checks.dnsbl.lookup", wall, cpu, resolver.sent, listed, unknown)


async def in_process_pydnsbl(address: str, ips: Sequence[str], zones: Sequence[str]) -> Result:
    host, _, port = address.rpartition(":")
    wall, cpu = time.perf_counter(), time.process_time()
    results = await _pydnsbl_sweep(host, int(port), ips, zones)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    listed = sum(len(r.detected_by) for r in results)  # type: ignore[attr-defined]
    failed = sum(len(r.failed_providers) for r in results)  # type: ignore[attr-defined]
    return Result("pydnsbl (aiodns/c-ares)", wall, cpu, len(ips) * len(zones), listed, failed)


# -- the run -----------------------------------------------------------------------------------------------


def one_round(args: argparse.Namespace, server: DnsServerProcess, ips: Sequence[str], zones: Sequence[str],
              first: str) -> list[Result]:  # fmt: skip
    sides = ["repbot", "pydnsbl"] if first == "repbot" else ["pydnsbl", "repbot"]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            if args.only not in (None, side):
                continue
            if args.in_process:
                coroutine = (in_process_repbot(server.address, ips) if side == "repbot"
                             else in_process_pydnsbl(server.address, ips, zones))  # fmt: skip
                results[side] = asyncio.run(coroutine)
            elif side == "repbot":
                results[side] = run_repbot(server, ips, Path(tmp), args.only_dnsbl)
            else:
                results[side] = run_pydnsbl(server, ips, zones, Path(tmp))
    return [results[side] for side in ("repbot", "pydnsbl") if side in results]


def show(result: Result, floor: float) -> None:
    rss = f"{result.rss_mib:8.1f}" if result.rss_mib else f"{'-':>8}"
    print(f"  {result.name:26} {result.wall:7.2f} {result.wall / floor:6.2f} {result.queries:8d} "
          f"{result.cpu:7.2f} {result.cpu_us_per_query:8.1f} {rss} {result.unknown:8d} {result.listed:7d}")  # fmt: skip


def summary(name: str, values: Sequence[float], unit: str = "") -> str:
    return f"{name} min {min(values):.2f}{unit} median {statistics.median(values):.2f}{unit}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="number of IPs to sweep (default 256, a /24)")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds the server waits per answer (0.02)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the server's address: another of this machine's own addresses (not loopback) makes "
                             "repbot rotate its source ports as for a remote resolver")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating which side goes first (3)")
    parser.add_argument("--smoke", action="store_true", help="a tiny sweep (8 IPs, one round) to check it runs")
    parser.add_argument("--only", choices=["repbot", "pydnsbl"], help="run one side only")
    parser.add_argument("--in-process", action="store_true", help="time the libraries in this process instead")
    parser.add_argument("--only-dnsbl", action="store_true",
                        help="repbot check --only dnsbl: blocklists alone, like pydnsbl (no PTR check)")  # fmt: skip
    parser.add_argument("--pydnsbl-child", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pydnsbl_child:
        return pydnsbl_child(args.pydnsbl_child)
    size, rounds = (8, 1) if args.smoke else (args.size, args.rounds)
    ips = [str(FIRST_IP + i) for i in range(size)]
    zones = ip_zones()
    mode = "in process" if args.in_process else "whole processes"
    print(f"sweep ({mode}): {size} IPs x {len(zones)} IPv4 zones, {args.delay * 1000:.0f} ms per answer, "
          f"{CONCURRENCY} in flight, timeout {TIMEOUT:g} s, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    compile_project()
    rows: list[list[Result]] = []
    with dns_server(ips, args.delay, args.host) as server:
        # Untimed: a fresh server answers its first queries slower; other addresses, so nothing is cached.
        one_round(argparse.Namespace(**{**vars(args), "in_process": True}), server, warmup_ips(), zones, "repbot")
        for index in range(rounds):
            results = one_round(args, server, ips, zones, "repbot" if index % 2 == 0 else "pydnsbl")
            floor = results[0].queries / CONCURRENCY * args.delay or 1.0
            print(f"round {index + 1}: network floor {floor:.2f} s (repbot's queries / in flight x delay)")
            print(f"  {'client':26} {'wall s':>7} {'/floor':>6} {'queries':>8} {'CPU s':>7} {'µs/q':>8} "
                  f"{'RSS MiB':>8} {'unknown':>8} {'listed':>7}")  # fmt: skip
            for result in results:
                show(result, floor)
            rows.append(results)
    report(rows, args.delay)
    return 0


def compile_project() -> None:
    """Write repbot's bytecode first, as `pip install` does: pydnsbl's comes compiled from its wheel.

    Without it (a source checkout under PYTHONDONTWRITEBYTECODE=1, as on this machine) every `repbot check`
    compiles its ~30 modules from source: about 0.1 s of CPU, a tenth of a /24's, that no installed copy pays.
    """
    for package in ("bot", "checks"):
        compileall.compile_dir(ROOT / package, quiet=1)


def report(rows: Sequence[Sequence[Result]], delay: float) -> None:
    ours = [row[0] for row in rows if row[0].name.startswith("repbot")]
    theirs = [row[-1] for row in rows if row[-1].name.startswith("pydnsbl")]
    if ours:
        floors = [r.wall / (r.queries / CONCURRENCY * delay or 1.0) for r in ours]
        cpu = summary("CPU/query", [r.cpu_us_per_query for r in ours], " µs")
        print(f"repbot: {summary('wall', [r.wall for r in ours], ' s')}; {cpu}; {summary('wall/floor', floors)}; "
              f"unknown max {max(r.unknown for r in ours)}")  # fmt: skip
    if ours and theirs:
        walls = [a.wall / b.wall for a, b in zip(ours, theirs, strict=True)]
        cpus = [a.cpu_us_per_query / b.cpu_us_per_query for a, b in zip(ours, theirs, strict=True)]
        line = f"ratio repbot/pydnsbl: {summary('wall', walls)}; {summary('CPU/query', cpus)}"
        if all(r.rss_mib for r in (*ours, *theirs)):
            line += f"; {summary('peak RSS', [a.rss_mib / b.rss_mib for a, b in zip(ours, theirs, strict=True)])}"
        print(line + f"; pydnsbl failed max {max(r.unknown for r in theirs)}")


if __name__ == "__main__":
    sys.exit(main())
