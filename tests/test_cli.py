"""`repbot` as an operator runs it: a subprocess against the real local DNS server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.dnsserver import DnsServer
from tests.test_dnsbl import publish_test_points

ROOT = Path(__file__).resolve().parent.parent
LISTED_IP = "203.0.113.5"


def repbot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def world(dns_server: DnsServer) -> DnsServer:
    """Healthy zones; 203.0.113.5 listed in ZEN (SBL) and refused by Barracuda; a small domain set-up."""
    publish_test_points(dns_server)
    dns_server.add("5.113.0.203.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("5.113.0.203.zen.spamhaus.org", "TXT", '"https://check.spamhaus.org/sbl/query/SBL1"')
    dns_server.add("5.113.0.203.b.barracudacentral.org", "A", "127.0.0.2")
    dns_server.set_behaviour("5.113.0.203.bl.spamcop.net", "servfail")
    dns_server.add("example.org", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    dns_server.add("example.org", "MX", "10 mx.example.org.")
    dns_server.add("mx.example.org", "A", "127.0.0.1")
    return dns_server


def test_check_ip_json_shows_listing_and_unknowns(world: DnsServer) -> None:
    done = repbot("check", LISTED_IP, "--nameserver", world.address, "--timeout", "1", "--json")
    assert done.returncode == 2, done.stderr  # a listing is critical for Nagios
    target = json.loads(done.stdout)["targets"][0]
    assert (target["target"], target["kind"], target["status"]) == (LISTED_IP, "ip", "fail")
    findings = {(f["check"], f["subject"]): f for f in target["findings"]}
    zen = findings[("dnsbl", "zen.spamhaus.org")]
    assert zen["status"] == "fail"
    assert zen["evidence"]["answers"] == ["127.0.0.2"]
    assert zen["evidence"]["txt"] == ["https://check.spamhaus.org/sbl/query/SBL1"]
    assert "spamhaus" in zen["advice"]
    assert findings[("dnsbl", "bl.spamcop.net")]["status"] == "unknown"  # SERVFAIL is never "clean"
    assert findings[("dnsbl", "psbl.surriel.com")]["status"] == "ok"
    assert ("ptr", LISTED_IP) in findings
    assert next(iter(findings))[0] == "dnsbl"  # blocklists first


def test_check_text_fits_80_columns(world: DnsServer) -> None:
    done = repbot("check", LISTED_IP, "example.org", "--nameserver", world.address, "--timeout", "1")
    assert done.returncode == 2
    assert "✗ dnsbl    zen.spamhaus.org" in done.stdout
    assert "example.org (domain)" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    assert done.stderr == ""  # no progress noise when stderr is not a terminal


def test_clean_ip_exits_by_its_worst_finding(world: DnsServer) -> None:
    world.add("1.0.0.127.in-addr.arpa", "PTR", "mx.example.org.")
    done = repbot("check", "127.0.0.1", "--nameserver", world.address, "--timeout", "1", "--json")
    target = json.loads(done.stdout)["targets"][0]
    assert done.returncode == {"ok": 0, "warn": 1, "fail": 2, "unknown": 3}[target["status"]]
    assert not any(f["status"] == "fail" for f in target["findings"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "999.1.1.1"], "not a valid IPv4 address"),
        (["check", "--", "-x"], "single label"),
        (["check", "a..b"], "empty label"),
        (["check", "a" * 300], "too long"),
        (["check", "example.org", "--nameserver", "dns.example"], "must be an IP address"),
        (["check", "example.org", "--timeout", "-1"], "more than 0"),
        (["check"], "required"),
        (["spf", "example.org", "--ip", "example.org"], "--ip"),
        (["lists", "-c", "/nonexistent/repbot.toml"], "cannot read the file"),
        (["check", "192.0.2.1", "--only", "nope"], "--only nope: no such check"),
        (["check", "192.0.2.1", "--only", "spf"], "--only spf runs no check of 192.0.2.1 (an IP address)"),
        (["check", "example.org", "--only", "ptr"], "--only ptr runs no check of example.org (a domain)"),
    ],
)
def test_bad_input_is_one_line_and_exit_3(args: list[str], message: str) -> None:
    done = repbot(*args)
    assert done.returncode == 3
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_only_runs_the_named_checks_and_asks_nothing_else(world: DnsServer) -> None:
    world.reset_counters()
    done = repbot("check", LISTED_IP, "example.org", "--only", "dnsbl", "--only", "spf", "--nameserver",
                  world.address, "--timeout", "1", "--json")  # fmt: skip
    assert done.returncode == 2, done.stderr
    ip, domain = json.loads(done.stdout)["targets"]
    assert {f["check"] for f in ip["findings"]} == {"dnsbl"}
    assert {f["check"] for f in domain["findings"]} == {"dnsbl", "spf"}
    asked = {(name, rdtype) for name, rdtype, _transport in world.queries}
    assert ("5.113.0.203.in-addr.arpa", "PTR") not in asked  # the PTR check did not run
    assert not any(rdtype == "MX" for _name, rdtype in asked)  # nor the domain's MX checks


def test_lists_reports_every_zone_health(world: DnsServer) -> None:
    world.set_behaviour("2.0.0.127.psbl.surriel.com", "timeout")
    world.add("*.dnsbl.dronebl.org", "A", "127.0.0.3")  # lists everything: broken
    done = repbot("lists", "--nameserver", world.address, "--timeout", "1", "--json")
    assert done.returncode == 0, done.stderr
    health = {row["zone"]: row["health"] for row in json.loads(done.stdout)}
    assert health["zen.spamhaus.org"] == "healthy"
    assert health["psbl.surriel.com"] == "unreachable"
    assert health["dnsbl.dronebl.org"] == "broken"
    assert health["zrd.spamhaus.org"] == "needs-dqs-key"
    text = repbot("lists", "--nameserver", world.address, "--timeout", "1").stdout
    assert "zen.spamhaus.org" in text and "healthy" in text


def test_spf_command_json_and_text(world: DnsServer) -> None:
    done = repbot("spf", "example.org", "--ip", "192.0.2.1", "--nameserver", world.address, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"result", "explanation", "lookups", "void_lookups", "trace"}
    assert data["result"] == "pass"
    done = repbot("spf", "example.org", "--ip", "192.0.2.99", "--nameserver", world.address)
    assert done.returncode == 2
    assert "fail" in done.stdout and "DNS lookups: 0 of 10" in done.stdout


def test_config_supplies_nameservers_and_disabled_zones(world: DnsServer, tmp_path: Path) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text(
        f'[dns]\nnameservers = ["{world.address}"]\ntimeout = 1\n[dnsbl]\ndisabled = ["zen.spamhaus.org"]\n'
    )
    done = repbot("check", LISTED_IP, "-c", str(config), "--json")
    subjects = {f["subject"] for f in json.loads(done.stdout)["targets"][0]["findings"]}
    assert "zen.spamhaus.org" not in subjects and "psbl.surriel.com" in subjects


def test_version() -> None:
    done = repbot("--version")
    assert done.returncode == 0 and done.stdout.startswith("repbot ")


def test_progress_shows_on_a_terminal_stderr_only(world: DnsServer) -> None:
    import os
    import pty

    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bot", "check", LISTED_IP, "--nameserver", world.address, "--timeout", "1"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    assert done.returncode == 2
    assert "checking… 0/1" in shown.decode() and "checking… 1/1" in shown.decode()
    assert "checking" not in done.stdout  # the table on stdout stays clean for pipes


def test_check_json_streams_one_target_a_line_and_names_zone_urls_once(world: DnsServer) -> None:
    ips = [LISTED_IP, "192.0.2.1", "192.0.2.2"]
    done = repbot("check", *ips, "--nameserver", world.address, "--timeout", "1", "--json")
    lines = done.stdout.splitlines()
    assert lines[0] == '{"targets":[' and len(lines) == 1 + len(ips) + 1  # compact: one target a line
    data = json.loads(done.stdout)
    assert [t["target"] for t in data["targets"]] == ips  # the order given, whatever finished first
    zen = data["zones"]["zen.spamhaus.org"]
    assert zen["delist"].startswith("https://")
    findings = [f for t in data["targets"] for f in t["findings"] if f["subject"] == "zen.spamhaus.org"]
    listed, clean = findings[0], findings[1:]
    assert listed["status"] == "fail" and listed["evidence"]["delist"] == zen["delist"]  # kept where it is needed
    assert clean and all("delist" not in f["evidence"] for f in clean)  # not repeated per clean finding


def test_check_json_pretty_is_the_same_document_indented(world: DnsServer) -> None:
    args = ("check", LISTED_IP, "--nameserver", world.address, "--timeout", "1", "--json")
    compact, pretty = repbot(*args), repbot(*args, "--pretty")
    assert pretty.returncode == compact.returncode == 2
    assert '\n          "check": "dnsbl",' in pretty.stdout

    def stable(text: str) -> object:
        data = json.loads(text)
        for target in data["targets"]:
            for finding in target["findings"]:
                finding.pop("observed_at")
                finding["evidence"].pop("trace", None)
        return data

    assert stable(pretty.stdout) == stable(compact.stdout)
