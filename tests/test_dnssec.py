"""DNSSEC: authenticated answers (AD) and the DS at the parent, against a real local DNS server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from checks import dnssec
from checks.context import CheckContext
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from tests.fixtures.dnsserver import DnsServer

DOMAIN = "example.test"
DS = "2371 13 2 " + "ab" * 32
DNSKEY = "257 3 13 " + "mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ=="


@pytest.fixture
async def ctx(dns_server: DnsServer) -> AsyncIterator[CheckContext]:
    context = CheckContext(Resolver([dns_server.address], timeout=1.0), timeout=1.0)
    yield context
    await context.aclose()


async def _check(ctx: CheckContext) -> Finding:
    [finding] = await dnssec.check(parse_target(DOMAIN), ctx)
    assert (finding.check, finding.subject) == ("dnssec", DOMAIN)
    return finding


def _zone(server: DnsServer, *, ds: bool, dnskey: bool) -> None:
    server.add(DOMAIN, "SOA", "ns.example.test. host.example.test. 1 3600 600 86400 300")
    if ds:
        server.add(DOMAIN, "DS", DS)
    if dnskey:
        server.add(DOMAIN, "DNSKEY", DNSKEY)


async def test_signed_and_validated(dns_server: DnsServer, ctx: CheckContext) -> None:
    _zone(dns_server, ds=True, dnskey=True)
    dns_server.set_authenticated(DOMAIN)
    finding = await _check(ctx)
    assert (finding.status, finding.code) == (Status.OK, "validated")
    assert "DS" in finding.summary
    assert finding.evidence["soa"]["ad"] is True


async def test_ds_but_resolver_does_not_validate(dns_server: DnsServer, ctx: CheckContext) -> None:
    _zone(dns_server, ds=True, dnskey=True)
    finding = await _check(ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "resolver-not-validating")
    assert "does not validate" in finding.summary
    assert finding.evidence["ds"]["records"] == [DS]


async def test_unsigned_warns_that_dane_needs_it(dns_server: DnsServer, ctx: CheckContext) -> None:
    _zone(dns_server, ds=False, dnskey=False)
    finding = await _check(ctx)
    assert (finding.status, finding.code) == (Status.WARN, "unsigned")
    assert "DANE" in finding.advice


async def test_dnskey_without_ds(dns_server: DnsServer, ctx: CheckContext) -> None:
    _zone(dns_server, ds=False, dnskey=True)
    finding = await _check(ctx)
    assert (finding.status, finding.code) == (Status.WARN, "no-ds")


async def test_servfail_with_ds_may_be_bogus_but_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    _zone(dns_server, ds=True, dnskey=True)
    dns_server.set_behaviour(DOMAIN, "servfail", "SOA")
    dns_server.set_behaviour(DOMAIN, "servfail", "DNSKEY")
    finding = await _check(ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "servfail-signed")


@pytest.mark.parametrize("behaviour", ["servfail", "timeout"])
async def test_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext, behaviour: str) -> None:
    dns_server.set_behaviour(DOMAIN, behaviour)
    finding = await _check(ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "lookup-failed")


async def test_ip_target_gives_nothing(ctx: CheckContext) -> None:
    assert await dnssec.check(parse_target("192.0.2.1"), ctx) == []
