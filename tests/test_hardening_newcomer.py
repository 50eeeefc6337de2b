"""A newcomer's first minutes (issue 13, item 16): the console's start line, init's honesty, mute typos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.cli import main
from tests.fixtures.dnsserver import DnsServer
from tests.test_console import run_console, write_config


def test_the_console_says_who_it_is_and_what_it_watches(tmp_path: Path, dns_server: DnsServer) -> None:
    done = run_console(write_config(tmp_path, dns_server), ["!ping"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "pong\n"  # stdout stays the room
    lines = done.stderr.strip().splitlines()
    assert lines == ["repbot in the console as @operator:console, watching 1 IP and 0 domains; type !help"]


def test_init_does_not_say_ok_when_the_password_file_is_missing(tmp_path: Path) -> None:
    output = tmp_path / "repbot.toml"
    missing = tmp_path / "no-such-password"
    args = ["init", "--non-interactive", "--output", str(output), "--homeserver", "https://matrix.example.org",
            "--user-id", "@repbot:example.org", "--password-file", str(missing), "--admin", "@alice:example.org",
            "--ip", "192.0.2.1", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "config check ok" not in done.stdout
    assert f"the password file {missing} does not exist" in done.stdout
    assert "repbot config example" in done.stdout  # where every key is documented
    missing.write_text("hunter22", encoding="utf-8")
    output.unlink()
    assert main(args) == 0


def test_mute_refuses_a_name_that_matches_nothing_and_suggests_near_ones(tmp_path: Path, dns_server: DnsServer) -> None:
    done = run_console(
        write_config(tmp_path, dns_server),
        ["!mute typo.example 7d", "!mute zen.spamhaus.orf 7d", "!mute 192.0.2.2 1d", "!mute zen.spamhaus.org 7d",
         "!mute dnsbl 1d", "!mute 192.0.2.1 1d"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    typo, near, ip, zone, check, target = done.stdout.splitlines()
    assert typo.startswith("typo.example matches no target, check or zone, so nothing was muted")
    assert "did you mean zen.spamhaus.org" in near
    assert "192.0.2.1" in ip and "nothing was muted" in ip
    assert zone.startswith("muted zen.spamhaus.org until")
    assert check.startswith("muted dnsbl until") and target.startswith("muted 192.0.2.1 until")
