"""`config check` refuses what would fail at run time (issue 13, item 9): every value, zone tables too."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config.loader import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[dns]\ntimeout = nan", "dns.timeout: expected a finite number"),
        ("[dns]\ntimeout = inf", "dns.timeout: expected a finite number"),
        ("[dns]\ntimeout = -1", "dns.timeout: must not be negative"),
        ("[dns]\ntimeout = 0", "dns.timeout: must be more than 0"),
        ("[dns]\ntimeout = 100000", "dns.timeout: must be more than 0 and at most 300"),
        ("[dns]\nconcurrency = 0", "dns.concurrency: must be at least 1"),
        ("[matrix]\nrate_limit_per_hour = -5", "rate_limit_per_hour: must not be negative"),
        ("[alerts]\nconfirm = -1", "alerts.confirm: must not be negative"),
        ("[alerts]\nconfirm = 0", "alerts.confirm: must be at least 1"),
        (
            '[snds]\nmethod = "key"\nkey = "k3y-long-enough"\ndays = 100000',
            "snds.days: must be at least 1 and at most 90",
        ),
        ('[dnsbl.zones."x.example"]\nqueries = "nonsense"', "dnsbl.zones.x.example"),
        ('[dnsbl.zones."y.example"]\nfamilies = ["ipv4"]', "dnsbl.zones.y.example"),
        ('[dnsbl]\ndisabled = ["no-such-zone.example"]', "dnsbl.disabled: no such zone"),
    ],
)
def test_values_that_fail_at_run_time_fail_the_config(toml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads(toml))
    assert any(line.startswith(problem) or problem in line for line in raised.value.problems), raised.value.problems


def test_config_check_names_the_bad_zone_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text('[dns]\ntimeout = nan\n\n[dnsbl.zones."x.example"]\nqueries = "nonsense"\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "config", "check", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "dns.timeout" in done.stdout and "dnsbl.zones.x.example" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_valid_extra_zone_still_passes() -> None:
    zone = """
[dnsbl.zones."extra.example"]
title = "Extra list"
queries = "ip"
role = "block"
families = ["ipv4"]
codes = { "127.0.0.2" = "listed" }
delist = "none"
test_points = true
"""
    try:
        parse_config(tomllib.loads(zone))
    except ConfigError as error:
        pytest.fail(f"a well-formed zone table was refused: {error.problems}")
