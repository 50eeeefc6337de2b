"""Each benchmark still runs, at a tiny size (figures are printed, never asserted: see bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKES = [
    ["bench/dnsbl_sweep.py", "--smoke"],
    ["bench/domain_check.py", "--smoke", "--delay", "0.05"],
    ["bench/monitor.py", "--smoke"],
    ["bench/store.py", "--smoke"],
    ["bench/monitor.py", "--soak", "0.2", "--soak-ips", "32", "--soak-domains", "2", "--soak-interval", "5s"],
    ["bench/matrix_bot.py", "--minutes", "0.05", "--pings", "3"],
    ["bench/reports.py", "--smoke"],
    ["bench/traffic.py", "--smoke"],
]


@pytest.mark.parametrize("command", SMOKES, ids=[command[0] for command in SMOKES])
def test_bench_runs(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.strip(), "a benchmark prints its figures"
