"""`repbot` as a careless operator or a shell pipeline runs it (issue 13): pipes, exit codes, init."""

from __future__ import annotations

import subprocess
import sys

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
