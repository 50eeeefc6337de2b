"""`repbot` as a careless operator or a shell pipeline runs it (issue 13): pipes, exit codes, init."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.dnsserver import DnsServer
from tests.test_cli import ROOT, world  # noqa: F401  (the fixture)

BROKEN_PIPE = 141


@pytest.mark.parametrize(
    "args",
    [
        ["check", "192.0.2.1", "example.org"],
        ["lists"],
        ["spf", "example.org", "--ip", "192.0.2.1"],
    ],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(args: list[str], world: DnsServer) -> None:  # noqa: F811
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", *args, "--nameserver", world.address, "--timeout", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # `| head -0`: the reader is gone before the first line
    stderr = process.stderr.read().decode()
    assert process.wait(60) == BROKEN_PIPE, stderr
    assert stderr == ""


def _unit_prevent_restart() -> set[int]:
    """The exit statuses packaging/repbot.service does not restart on."""
    for line in (ROOT / "packaging" / "repbot.service").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "RestartPreventExitStatus":
            return {int(word) for word in value.split() if word.isdigit()}
    raise AssertionError("the unit has no RestartPreventExitStatus")


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "run", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("[dns\ntimeout = 1", 0o600, "TOML"),
        (None, 0o600, "cannot read"),
        ("[dns]\ntimout = 1\n", 0o600, "unknown key"),
        (
            '[matrix]\nhomeserver = "https://m.example"\nuser_id = "@b:m.example"\npassword = "hunter2"\n',
            0o644,
            "holds matrix.password inline",
        ),
    ],
    ids=["bad-toml", "missing-file", "unknown-key", "inline-secret-world-readable"],
)
def test_run_with_a_broken_config_exits_with_the_status_the_unit_does_not_restart_on(
    tmp_path: Path, text: str | None, mode: int, message: str
) -> None:
    from bot.cli import EXIT_CONFIG
    from bot.runtime import EXIT_FATAL

    config = tmp_path / "repbot.toml"
    if text is not None:
        config.write_text(text, encoding="utf-8")
        config.chmod(mode)
    done = _run(config)
    assert done.returncode in _unit_prevent_restart(), done.stderr
    assert {EXIT_CONFIG, EXIT_FATAL} <= _unit_prevent_restart()
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_head_reading_one_line_of_a_long_output_ends_it_quietly(world: DnsServer) -> None:  # noqa: F811
    targets = [f"192.0.2.{n}" for n in range(1, 40)]  # far more than a pipe buffer of output
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "check", *targets, "--nameserver", world.address, "--timeout", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # `| head -1`
    stderr = process.stderr.read().decode()
    assert first.startswith(b"192.0.2.1 (ip)")
    assert process.wait(60) in (0, 1, 2, BROKEN_PIPE), stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
