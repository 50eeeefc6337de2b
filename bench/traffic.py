"""`repbot traffic` against Debian's pflogsumm on one synthetic Postfix log, and the live follower at 1,000 lines/s.

1. Writes a synthetic log (tests/fixtures/maillog.py: noise, TLS, multi-recipient queue ids, deferrals, expiries,
   S3150/4.7.28/TSS04 replies, IPv6 relays, garbage and a non-UTF-8 line) of --lines lines.
2. Runs `python -m bot.cli traffic --log FILE --json` and `pflogsumm FILE` on it, one after the other, each as its
   own process; wall time and the child's CPU time (user + system) for each, and the ratio.
3. Checks that the sent and deferred counts per recipient domain, and the bounce total, are pflogsumm's.
4. Live: a writer process appends --rate lines a second for --seconds; the traffic follower (bot.monitor.traffic,
   polling every second, with its state writes) follows the file in this process. Prints the CPU share of one
   core the follower used, and whether it kept up (every line read by the end).

    python bench/traffic.py                      # 1,000,000 lines; 20 s live at 1,000 lines/s
    python bench/traffic.py --lines 200000 --seconds 10
    python bench/traffic.py --smoke              # 5,000 lines, 2 s live: CI checks that the bench still runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config.traffic import TrafficConfig, traffic_families  # noqa: E402
from bot.monitor.traffic import TrafficFollower  # noqa: E402
from tests.fixtures.maillog import parse_pflogsumm, synthetic_lines, synthetic_log  # noqa: E402

WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.fixtures.maillog import synthetic_lines
rate, seconds, path = {rate}, {seconds}, {path!r}
lines = list(synthetic_lines(rate * seconds, seed=7))
start = time.monotonic()
with open(path, "a", buffering=1) as out:
    for second in range(seconds):
        for line in lines[second * rate:(second + 1) * rate]:
            out.write(line + "\\n")
        time.sleep(max(0.0, start + second + 1 - time.monotonic()))
"""


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str]) -> tuple[str, float, float]:
    cpu, wall = _child_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, errors="replace", check=True)
    return done.stdout, time.perf_counter() - wall, _child_cpu() - cpu


def offline(log: Path) -> bool:
    """Both summaries of the same file; True when the counts agree."""
    ours, our_wall, our_cpu = _timed([sys.executable, "-m", "bot.cli", "traffic", "--log", str(log), "--json"])
    program = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
    theirs_text, their_wall, their_cpu = _timed([program, "-h", "-1", "-u", "0", "--problems-first", str(log)])
    data, theirs = json.loads(ours), parse_pflogsumm(theirs_text)
    mine = {d: (c.get("sent", 0), c.get("deferred", 0)) for d, c in data["domains"].items()}
    mine = {d: counts for d, counts in mine.items() if any(counts)}
    bounced = sum(c.get("bounced", 0) for c in data["domains"].values())
    agree = mine == theirs.domains and bounced == theirs.bounced
    print(f"log: {data['lines']:,} lines, {log.stat().st_size / 1e6:.0f} MB, {len(mine)} recipient domains")
    print(f"repbot traffic: wall {our_wall:.2f} s, CPU {our_cpu:.2f} s")
    print(f"pflogsumm:      wall {their_wall:.2f} s, CPU {their_cpu:.2f} s")
    print(f"ratio repbot/pflogsumm: wall {our_wall / their_wall:.2f}, CPU {our_cpu / their_cpu:.2f}")
    sent = sum(s for s, _ in mine.values())
    deferrals = sum(d for _, d in mine.values())
    print(f"counts: sent {sent:,} / {theirs.delivered:,}, deferrals {deferrals:,} / {theirs.deferrals:,},"
          f" bounced {bounced:,} / {theirs.bounced:,} (repbot / pflogsumm)")  # fmt: skip
    print(f"per-domain sent and deferred counts agree with pflogsumm: {'yes' if agree else 'NO'}")
    if not agree:
        for domain in sorted(set(mine) | set(theirs.domains)):
            if mine.get(domain) != theirs.domains.get(domain):
                print(f"  {domain}: repbot {mine.get(domain)} pflogsumm {theirs.domains.get(domain)}")
    return agree


async def live(directory: Path, rate: int, seconds: int) -> bool:
    """Follow a file another process appends `rate` lines a second to; True when the follower kept up."""
    log = directory / "live.log"
    log.touch()
    config = TrafficConfig(path=str(log), start="beginning")
    follower = TrafficFollower(config, traffic_families(config), str(directory / "state"))
    script = WRITER.format(root=str(ROOT), rate=rate, seconds=seconds, path=str(log))
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    cpu, wall, polls = time.process_time(), time.monotonic(), 0
    while writer.returncode is None:
        await follower.poll()
        polls += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer.wait(), 1.0)
    await follower.poll()
    used, took = time.process_time() - cpu, time.monotonic() - wall
    written = sum(1 for _ in synthetic_lines(rate * seconds, seed=7))
    kept_up = follower.tally.lines == written
    print(f"live: {written:,} lines in {took:.1f} s ({written / took:,.0f} lines/s), {polls} polls of 1 s")
    print(f"live follower CPU: {used:.2f} s = {100 * used / took:.1f} % of one core; read {follower.tally.lines:,} "
          f"of {written:,} lines: {'kept up' if kept_up else 'FELL BEHIND'}")  # fmt: skip
    return kept_up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000, help="live lines a second")
    parser.add_argument("--seconds", type=int, default=20, help="live duration")
    parser.add_argument("--smoke", action="store_true", help="5,000 lines and 2 s live")
    args = parser.parse_args()
    if args.smoke:
        args.lines, args.seconds = 5000, 2
    with tempfile.TemporaryDirectory(prefix="repbot-traffic-") as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        log = synthetic_log(directory / "mail.log", args.lines)
        print(f"wrote the synthetic log in {time.perf_counter() - started:.1f} s (python {sys.version.split()[0]},"
              f" {os.cpu_count()} CPUs)")  # fmt: skip
        agree = offline(log)
        kept_up = asyncio.run(live(directory, args.rate, args.seconds))
    return 0 if agree and kept_up else 1


if __name__ == "__main__":
    sys.exit(main())
