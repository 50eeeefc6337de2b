"""A resolver that lies, on the real local DNS server: NXDOMAIN for every name, NXDOMAIN rewriting, TC over TCP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from checks.context import CheckContext
from checks.dns.probe import LIE_NXDOMAIN, LIE_REWRITES, probe_resolver
from checks.dns.resolver import Resolver
from checks.model import Status, parse_target
from checks.runner import check_target
from tests.fixtures.dnsserver import DnsServer
from tests.test_dnsbl import publish_test_points

ROOT = Path(__file__).resolve().parent.parent


def _ctx(server: DnsServer) -> CheckContext:
    return CheckContext(Resolver([server.address], timeout=1.0, cache=False), timeout=1.0)


def _world(server: DnsServer) -> DnsServer:
    publish_test_points(server)
    server.add("example.org", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    server.add("_dmarc.example.org", "TXT", '"v=DMARC1; p=reject"')
    server.add("example.org", "MX", "10 mx.example.org.")
    server.add("mx.example.org", "A", "127.0.0.1")
    return server


def _lie_nxdomain(server: DnsServer) -> None:
    for name in (".", "*."):
        server.set_behaviour(name, "nxdomain")


async def test_an_honest_resolver_passes_its_probe(dns_server: DnsServer) -> None:
    ctx = _ctx(_world(dns_server))
    health = await probe_resolver(ctx.resolver)
    assert health.honest and health.problem() == ""
    assert set(health.evidence) >= {". SOA"}
    await ctx.aclose()


@pytest.mark.parametrize("target", ["example.org", "192.0.2.25"])
async def test_nxdomain_for_everything_makes_every_finding_unknown(dns_server: DnsServer, target: str) -> None:
    server = _world(dns_server)
    _lie_nxdomain(server)
    ctx = _ctx(server)
    report = await check_target(parse_target(target), ctx)
    assert report.findings and {f.status for f in report.findings} == {Status.UNKNOWN}
    expected = f"cannot check: the resolver at {server.address} {LIE_NXDOMAIN}"
    for finding in report.findings:
        assert finding.summary == expected and finding.code == "resolver-lies"
        assert finding.evidence["resolver"] == server.address
        assert finding.evidence["probes"][". SOA"] == {"outcome": "nxdomain"}
    words = " ".join(f.summary for f in report.findings)
    for lie in ("does not exist", "no SPF", "no DMARC", "not listed", "no PTR"):
        assert lie not in words
    await ctx.aclose()


async def test_a_domains_checks_wait_for_the_probe_and_an_ips_start_beside_it(dns_server: DnsServer) -> None:
    # A domain's checks connect to what DNS names: with a lying resolver they must not even ask for it.
    server = _world(dns_server)
    _lie_nxdomain(server)
    server.reset_counters()
    await check_target(parse_target("example.org"), _ctx(server))
    asked = {name for name, _rdtype, _transport in server.queries}
    assert not any(name.endswith("example.org") for name in asked), asked
    # An IP's checks only ask DNS: they go out with the probe, and what they found is dropped when it lied.
    server.reset_counters()
    report = await check_target(parse_target("192.0.2.25"), _ctx(server))
    assert {f.code for f in report.findings} == {"resolver-lies"}
    assert any(name.startswith("25.2.0.192.") for name, _rdtype, _transport in server.queries)


async def test_a_lying_resolver_is_said_in_spanish(dns_server: DnsServer) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    server = _world(dns_server)
    _lie_nxdomain(server)
    ctx = _ctx(server)
    with use_language("es"):
        report = await check_target(parse_target("192.0.2.25"), ctx)
    finding = report.findings[0]
    assert (
        finding.summary
        == f"no puedo comprobar: el resolvedor en {server.address} responde NXDOMAIN para nombres que existen"
    )
    assert finding.advice.startswith("Haz que repbot use un resolvedor que responda con la verdad")
    assert finding.evidence["lies"] == [LIE_NXDOMAIN]  # the evidence keeps the English
    await ctx.aclose()


async def test_nxdomain_rewriting_makes_every_finding_unknown(dns_server: DnsServer) -> None:
    server = _world(dns_server)
    server.add("*.", "A", "192.0.2.80")  # the advertising page, for every name under a TLD nobody serves here
    ctx = _ctx(server)
    report = await check_target(parse_target("example.org"), ctx)
    assert {f.status for f in report.findings} == {Status.UNKNOWN}
    assert all(LIE_REWRITES in f.summary for f in report.findings)
    probes = report.findings[0].evidence["probes"]
    assert any(p.get("records") == ["192.0.2.80"] for name, p in probes.items() if ".invalid" in name)
    await ctx.aclose()


async def test_the_probe_is_shared_by_the_targets_of_a_run(dns_server: DnsServer) -> None:
    server = _world(dns_server)
    ctx = _ctx(server)
    server.reset_counters()
    for target in ("example.org", "192.0.2.25"):
        await check_target(parse_target(target), ctx)
    assert server.count(".", "SOA") == 1
    await ctx.aclose()


async def test_tc_even_over_tcp_is_unknown_never_no_spf_record(dns_server: DnsServer) -> None:
    server = _world(dns_server)
    server.set_behaviour("example.org", "truncate-tcp", "TXT")
    ctx = _ctx(server)
    answer = await ctx.resolver.query("example.org", "TXT")
    assert answer.failed and "truncated even over TCP" in answer.describe()
    report = await check_target(parse_target("example.org"), ctx)
    [spf] = [f for f in report.findings if f.check == "spf"]
    assert spf.status is Status.UNKNOWN, spf.summary
    assert "no SPF" not in spf.summary
    await ctx.aclose()


@pytest.mark.parametrize("checked", ["example.org", "192.0.2.25"])
def test_repbot_check_exits_3_and_says_why(dns_server: DnsServer, checked: str) -> None:
    server = _world(dns_server)
    _lie_nxdomain(server)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "check", checked, "--nameserver", server.address, "--timeout", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    # An IP's checks, started beside the probe, are abandoned: quietly, never "exception was never retrieved".
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr, done.stderr
    [target] = json.loads(done.stdout)["targets"]
    assert target["status"] == "unknown"
    assert {f["code"] for f in target["findings"]} == {"resolver-lies"}
    assert LIE_NXDOMAIN in target["findings"][0]["summary"]


def test_repbot_spf_draws_no_none_from_a_lying_resolver(dns_server: DnsServer) -> None:
    server = _world(dns_server)
    _lie_nxdomain(server)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "spf", "example.org", "--ip", "192.0.2.1", "--nameserver", server.address,
         "--timeout", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"error": f"cannot check: the resolver at {server.address} {LIE_NXDOMAIN}",
                      "resolver": server.address}  # fmt: skip
