"""`repbot run --console`: stdin lines in, plain replies out, exit 0 at EOF; against the local DNS server."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

from bot.transports.console import ConsoleTransport
from tests.fixtures.dnsserver import DnsServer


def run_console(config: Path, lines: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "run", "--console", "-c", str(config)],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(tmp_path: Path, dns: DnsServer, timeout: float = 1.0, head: str = "") -> Path:
    """A console config against the local DNS server; `head` goes first (a [bot] table, say)."""
    config = tmp_path / "repbot.toml"
    config.write_text(
        f"""{head}
[dns]
nameservers = ["{dns.address}"]
timeout = {timeout}

[monitor]
ips = ["192.0.2.1"]

[state]
dir = "{tmp_path / "state"}"
""",
        encoding="utf-8",
    )
    return config


def test_console_answers_each_line_and_exits_at_eof(tmp_path: Path, dns_server: DnsServer) -> None:
    # A listing with its RFC 5782 test point, so the zone counts as working.
    dns_server.add("2.0.0.127.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("1.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    done = run_console(
        write_config(tmp_path, dns_server),
        ["!ping", "!help", "!check 192.0.2.1", "!check bad..example", "not a command", "!nope"],
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("pong\n")
    assert "!check <target> [--selector S] — check an IP or a domain now" in out
    assert "192.0.2.1 (ip): ✗ fail" in out
    assert "zen.spamhaus.org" in out
    assert "target: 'bad..example' has an empty label" in out
    assert "unknown command !nope: try !help" in out
    assert "Traceback" not in done.stderr


def test_a_ping_is_answered_while_a_slow_check_typed_before_it_works(tmp_path: Path) -> None:
    # Every answer of this server takes 1.5 s, so the check takes at least that; the ping needs no DNS.
    with DnsServer(delay=1.5) as slow:
        slow.add("2.0.0.127.zen.spamhaus.org", "A", "127.0.0.2")
        started = time.monotonic()
        done = run_console(write_config(tmp_path, slow, timeout=5.0), ["!check 192.0.2.1", "!ping", "!ping"])
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["pong", "pong"], done.stdout
    assert any(line.startswith("192.0.2.1 (ip):") for line in lines[2:]), done.stdout
    assert took >= 1.5  # the check did wait for the slow server; the pings did not wait for it


def test_console_needs_no_matrix_section_and_empty_input_is_fine(tmp_path: Path, dns_server: DnsServer) -> None:
    done = run_console(write_config(tmp_path, dns_server), [])
    assert (done.returncode, done.stdout) == (0, "")


def test_the_shipped_example_config_runs_in_the_console() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    done = run_console(example, ["!ping", "!help ping"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["pong", "!ping"]


async def test_console_files_go_to_the_media_dir(tmp_path: Path) -> None:
    out = io.StringIO()
    console = ConsoleTransport(stdin=io.StringIO(""), stdout=out, media_dir=tmp_path)
    first = await console.send_file(
        "console", b"text", filename="repbot-ticket-google-192.0.2.1.txt", mimetype="text/plain", body="a", txn_id="t"
    )
    again = await console.send_file("console", b"other", filename="x.txt", mimetype="text/plain", body="a", txn_id="t")
    [path] = tmp_path.iterdir()
    assert first == again and path.name == "repbot-ticket-google-192.0.2.1-1.txt" and path.read_bytes() == b"text"
    assert f"a: {path}" in out.getvalue()


def test_a_file_is_named_after_its_caption_without_the_accents() -> None:
    from bot.transports.console import _file_stem

    assert _file_stem("línea de tiempo de repbot: reputación, últimos 30 días", "image") == (
        "linea-de-tiempo-de-repbot-reputacion-ultimos-30-dias"
    )
    assert _file_stem("repbot timeline: 192.0.2.1, last 14 days", "image") == "repbot-timeline-192.0.2.1-last-14-days"
    assert _file_stem("日本", "image") == "image"
