"""TLS-RPT: record parsing and the check against a real local DNS server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from checks.context import CheckContext
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from checks.tlsrpt import MESSAGES, check, parse_tlsrpt
from tests.fixtures.dnsserver import DnsServer

NAME = "_smtp._tls.example.test"


@pytest.fixture
async def ctx(dns_server: DnsServer) -> AsyncIterator[CheckContext]:
    context = CheckContext(Resolver([dns_server.address], timeout=0.6, cache=False), timeout=1.0)
    yield context
    await context.aclose()


async def run(ctx: CheckContext) -> Finding:
    findings = await check(parse_target("example.test"), ctx)
    assert len(findings) == 1
    finding = findings[0]
    assert finding.check == "tls-rpt" and finding.code in MESSAGES and finding.summary
    assert finding.advice or finding.status is Status.OK
    return finding


def test_parse_good() -> None:
    record = parse_tlsrpt("v=TLSRPTv1; rua=mailto:tls@example.test, https://reports.example.test/v1/tlsrpt")
    assert record.errors == () and record.rua == ("mailto:tls@example.test", "https://reports.example.test/v1/tlsrpt")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("v=TLSRPTv1", "rua= "),
        ("v=TLSRPTv1; rua=", "rua= "),
        ("v=TLSRPTv1; rua=http://example.test/r", "neither mailto"),
        ("v=TLSRPTv1; rua=mailto:nobody", "neither mailto"),
        ("rua=mailto:a@example.test; v=TLSRPTv1", "start with"),
        ("v=TLSRPTv1; rua=mailto:a@example.test; rua=mailto:b@example.test", "twice"),
        ("v=TLSRPTv1; \x00\xff garbage", "not a tag=value"),
    ],
)
def test_parse_errors(text: str, problem: str) -> None:
    assert any(problem in error for error in parse_tlsrpt(text).errors)


async def test_good(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(NAME, "TXT", '"v=TLSRPTv1; " "rua=mailto:tls@example.test"')
    finding = await run(ctx)
    assert finding.status is Status.OK and finding.code == "record"
    assert finding.evidence["record"] == "v=TLSRPTv1; rua=mailto:tls@example.test"


async def test_missing(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(NAME, "TXT", "something else")
    finding = await run(ctx)
    assert finding.code == "missing" and finding.status is Status.WARN
    assert 'TXT "v=TLSRPTv1; rua=mailto:tls-reports@example.test"' in finding.advice


async def test_multiple(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(NAME, "TXT", "v=TLSRPTv1; rua=mailto:a@example.test")
    dns_server.add(NAME, "TXT", "v=TLSRPTv1; rua=mailto:b@example.test")
    finding = await run(ctx)
    assert finding.code == "multiple" and finding.status is Status.FAIL


async def test_invalid_rua(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(NAME, "TXT", "v=TLSRPTv1; rua=ftp://example.test/x")
    finding = await run(ctx)
    assert finding.code == "syntax" and finding.status is Status.FAIL and "ftp://" in finding.summary


@pytest.mark.parametrize("behaviour", ["servfail", "timeout"])
async def test_dns_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext, behaviour: str) -> None:
    dns_server.set_behaviour(NAME, behaviour)
    finding = await run(ctx)
    assert finding.code == "dns-failed" and finding.status is Status.UNKNOWN
