"""MX set, null and implicit MX, exchange addresses, PTR/FCrDNS and HELO names, against a real local DNS server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import dns.reversename
import pytest

from checks import mx
from checks.context import CheckContext
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from tests.fixtures.dnsserver import DnsServer

DOMAIN = "example.test"


@pytest.fixture
async def ctx(dns_server: DnsServer) -> AsyncIterator[CheckContext]:
    context = CheckContext(Resolver([dns_server.address], timeout=1.0), timeout=1.0)
    yield context
    await context.aclose()


def _ptr(server: DnsServer, ip: str, name: str) -> None:
    server.add(dns.reversename.from_address(ip).to_text(), "PTR", name + ".")


async def _check(ctx: CheckContext, target: str = DOMAIN) -> list[Finding]:
    return await mx.check(parse_target(target), ctx)


def _find(findings: list[Finding], check: str, subject: str) -> Finding:
    [found] = [f for f in findings if f.check == check and f.subject == subject]
    return found


# -- the MX set -----------------------------------------------------------------------------------------------


async def test_mx_set_sorted_by_preference(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "20 mx2.example.test.")
    dns_server.add(DOMAIN, "MX", "10 mx1.example.test.")
    dns_server.add("mx1.example.test", "A", "192.0.2.1")
    dns_server.add("mx1.example.test", "AAAA", "2001:db8::1")
    dns_server.add("mx2.example.test", "A", "192.0.2.2")
    mxset = await mx.mx_hosts(DOMAIN, ctx)
    assert mxset.kind == "mx"
    assert [(h.preference, h.name) for h in mxset.hosts] == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    assert mxset.hosts[0].addresses == ("192.0.2.1", "2001:db8::1")
    assert [address for _, address in mxset.addresses] == ["192.0.2.1", "2001:db8::1", "192.0.2.2"]
    findings = await _check(ctx)
    summary = _find(findings, "mx", DOMAIN)
    assert (summary.status, summary.code) == (Status.OK, "mx")
    assert summary.summary == "2 MX: 10 mx1.example.test, 20 mx2.example.test"
    host = _find(findings, "mx", "mx1.example.test")
    assert host.status is Status.OK and "2001:db8::1" in host.summary


async def test_null_mx_says_no_mail_is_received(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "0 .")
    assert (await mx.mx_hosts(DOMAIN, ctx)).kind == "null"
    findings = await _check(ctx)
    assert len(findings) == 1
    [finding] = findings
    assert (finding.status, finding.code) == (Status.OK, "null-mx")
    assert "receives no mail" in finding.summary and "send-only" in finding.summary


async def test_null_mx_mixed_with_others_fails(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "0 .")
    dns_server.add(DOMAIN, "MX", "10 mx1.example.test.")
    dns_server.add("mx1.example.test", "A", "192.0.2.1")
    finding = _find(await _check(ctx), "mx", DOMAIN)
    assert (finding.status, finding.code) == (Status.FAIL, "null-mx-mixed")


async def test_no_mx_falls_back_to_the_domain_address(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "A", "192.0.2.7")
    mxset = await mx.mx_hosts(DOMAIN, ctx)
    assert mxset.kind == "implicit"
    assert mxset.hosts[0].addresses == ("192.0.2.7",)
    finding = _find(await _check(ctx), "mx", DOMAIN)
    assert (finding.status, finding.code) == (Status.WARN, "implicit-mx")
    assert "MX 10" in finding.advice


async def test_no_mx_and_no_address(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "TXT", "v=spf1 -all")
    finding = _find(await _check(ctx), "mx", DOMAIN)
    assert (finding.status, finding.code) == (Status.WARN, "no-mx")
    assert "MX 0 ." in finding.advice


async def test_nxdomain(ctx: CheckContext) -> None:
    [finding] = await _check(ctx, "nowhere.example.test")
    assert (finding.status, finding.code) == (Status.FAIL, "nxdomain")


@pytest.mark.parametrize("behaviour", ["servfail", "timeout", "refused"])
async def test_mx_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext, behaviour: str) -> None:
    dns_server.set_behaviour(DOMAIN, behaviour)
    [finding] = await _check(ctx)
    assert (finding.check, finding.status, finding.code) == ("mx", Status.UNKNOWN, "lookup-failed")


async def test_mx_pointing_to_a_cname_warns(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "10 mail.example.test.")
    dns_server.add("mail.example.test", "CNAME", "real.example.test.")
    dns_server.add("real.example.test", "A", "192.0.2.9")
    finding = _find(await _check(ctx), "mx", "mail.example.test")
    assert (finding.status, finding.code) == (Status.WARN, "mx-cname")
    assert "real.example.test" in finding.summary


async def test_mx_pointing_to_an_ip_literal_fails(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "10 192.0.2.1.")
    finding = _find(await _check(ctx), "mx", "192.0.2.1")
    assert (finding.status, finding.code) == (Status.FAIL, "mx-ip-literal")


async def test_mx_without_address_fails(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "10 gone.example.test.")
    finding = _find(await _check(ctx), "mx", "gone.example.test")
    assert (finding.status, finding.code) == (Status.FAIL, "mx-no-address")


async def test_mx_address_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "10 slow.example.test.")
    dns_server.set_behaviour("slow.example.test", "servfail")
    finding = _find(await _check(ctx), "mx", "slow.example.test")
    assert finding.status is Status.UNKNOWN


# -- reverse DNS ----------------------------------------------------------------------------------------------


async def test_ptr_forward_confirmed(dns_server: DnsServer, ctx: CheckContext) -> None:
    _ptr(dns_server, "192.0.2.25", "mail.example.test")
    dns_server.add("mail.example.test", "A", "192.0.2.25")
    finding = await mx.check_reverse("192.0.2.25", ctx)
    assert (finding.check, finding.subject) == ("ptr", "192.0.2.25")
    assert (finding.status, finding.code) == (Status.OK, "fcrdns")
    assert "mail.example.test" in finding.summary


async def test_ptr_not_resolving_back_fails(dns_server: DnsServer, ctx: CheckContext) -> None:
    _ptr(dns_server, "192.0.2.25", "mail.example.test")
    dns_server.add("mail.example.test", "A", "192.0.2.99")
    finding = await mx.check_reverse("192.0.2.25", ctx)
    assert (finding.status, finding.code) == (Status.FAIL, "fcrdns-mismatch")
    assert "IN A 192.0.2.25" in finding.advice


async def test_ipv4_without_ptr_fails(ctx: CheckContext) -> None:
    finding = await mx.check_reverse("192.0.2.26", ctx)
    assert (finding.status, finding.code) == (Status.FAIL, "no-ptr")


async def test_ipv6_without_ptr_fails_with_the_microsoft_code(ctx: CheckContext) -> None:
    finding = await mx.check_reverse("2001:DB8::25", ctx)
    assert finding.subject == "2001:db8::25"
    assert (finding.status, finding.code) == (Status.FAIL, "no-ptr")
    assert "5.7.25" in finding.summary


async def test_ipv6_ptr_forward_confirmed(dns_server: DnsServer, ctx: CheckContext) -> None:
    _ptr(dns_server, "2001:db8::25", "mail.example.test")
    dns_server.add("mail.example.test", "AAAA", "2001:db8::25")
    finding = await mx.check_reverse("2001:db8::25", ctx)
    assert finding.status is Status.OK


async def test_generic_ptr_warns(dns_server: DnsServer, ctx: CheckContext) -> None:
    name = "192-0-2-30.dynamic.isp.test"
    _ptr(dns_server, "192.0.2.30", name)
    dns_server.add(name, "A", "192.0.2.30")
    finding = await mx.check_reverse("192.0.2.30", ctx)
    assert (finding.status, finding.code) == (Status.WARN, "generic-ptr")


async def test_multiple_ptr_warns(dns_server: DnsServer, ctx: CheckContext) -> None:
    _ptr(dns_server, "192.0.2.31", "a.example.test")
    _ptr(dns_server, "192.0.2.31", "b.example.test")
    dns_server.add("a.example.test", "A", "192.0.2.31")
    finding = await mx.check_reverse("192.0.2.31", ctx)
    assert (finding.status, finding.code) == (Status.WARN, "multiple-ptr")


async def test_ptr_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.set_behaviour("*.2.0.192.in-addr.arpa", "servfail")
    finding = await mx.check_reverse("192.0.2.32", ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "lookup-failed")


async def test_forward_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    _ptr(dns_server, "192.0.2.33", "flaky.example.test")
    dns_server.set_behaviour("flaky.example.test", "timeout")
    finding = await mx.check_reverse("192.0.2.33", ctx)
    assert finding.status is Status.UNKNOWN


@pytest.mark.parametrize("bad", ["", "not-an-ip", "999.1.1.1", "1.2.3", "x" * 300])
async def test_bad_ip_never_crashes(ctx: CheckContext, bad: str) -> None:
    finding = await mx.check_reverse(bad, ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "invalid-ip")


@pytest.mark.parametrize(
    ("name", "ip", "generic"),
    [
        ("mail.example.org", "192.0.2.1", False),
        ("mx1.example.org", "192.0.2.1", False),
        ("192-0-2-1.example.net", "192.0.2.1", True),
        ("1.2.0.192.in-addr.isp.net", "192.0.2.1", True),
        ("host192000002001.isp.net", "192.0.2.1", False),
        ("c-192-0-2-1.hsd1.cable.isp.net", "192.0.2.1", True),
        ("adsl-pool.isp.net", "192.0.2.1", True),
        ("dyn-10.isp.net", "192.0.2.1", True),
        ("ip-2001-db8--1-a1b2-c3d4.isp.net", "2001:db8::a1b2:c3d4", True),
        ("mail.example.org", "2001:db8::25", False),
    ],
)
def test_generic_ptr_names(name: str, ip: str, generic: bool) -> None:
    assert mx.is_generic_ptr(name, ip) is generic


# -- the domain: MX addresses, sending IPs and HELO names ------------------------------------------------------


async def test_domain_checks_ptr_of_mx_and_sending_ips_and_helo(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "10 mx1.example.test.")
    dns_server.add("mx1.example.test", "A", "192.0.2.1")
    _ptr(dns_server, "192.0.2.1", "mx1.example.test")
    dns_server.add("out.example.test", "A", "192.0.2.50")
    _ptr(dns_server, "192.0.2.50", "out.example.test")
    ctx = replace(ctx, sending_ips=("192.0.2.50", "192.0.2.1"))
    ctx = replace(ctx, helo_names=("out.example.test", "wrong.example.test", "missing.example.test"))
    dns_server.add("wrong.example.test", "A", "198.51.100.1")
    findings = await _check(ctx)
    ptr = [f for f in findings if f.check == "ptr" and not f.subject.startswith("helo ")]
    assert [f.subject for f in ptr] == ["192.0.2.1", "192.0.2.50"]  # each address once
    assert all(f.status is Status.OK for f in ptr)
    assert _find(findings, "ptr", "helo out.example.test").status is Status.OK
    assert _find(findings, "ptr", "helo wrong.example.test").code == "helo-mismatch"
    assert _find(findings, "ptr", "helo missing.example.test").code == "helo-no-address"


async def test_ip_target_gives_its_ptr_finding(dns_server: DnsServer, ctx: CheckContext) -> None:
    _ptr(dns_server, "192.0.2.25", "mail.example.test")
    dns_server.add("mail.example.test", "A", "192.0.2.25")
    [finding] = await _check(ctx, "192.0.2.25")
    assert (finding.check, finding.status) == ("ptr", Status.OK)
