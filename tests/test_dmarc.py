"""DMARC: parsing, the RFC 9989 tree walk, and the check against a real local DNS server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from checks.context import CheckContext
from checks.dmarc._parse import _parsed_psl, load_psl, organizational_domain_psl
from checks.dmarc.policy import DMARC_TAGS, MESSAGES, check, interpret_walk, parse_dmarc, walk_names
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from tests.fixtures.dnsserver import DnsServer

GOOD = "v=DMARC1; p=reject; rua=mailto:dmarc@example.test"
SPF = "v=spf1 mx -all"
KEY = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


@pytest.fixture
async def ctx(dns_server: DnsServer) -> AsyncIterator[CheckContext]:
    context = CheckContext(Resolver([dns_server.address], timeout=0.6, cache=False), timeout=1.0)
    yield context
    await context.aclose()


async def run(ctx: CheckContext, domain: str = "example.test") -> dict[str, Finding]:
    findings = await check(parse_target(domain), ctx)
    assert all(f.check == "dmarc" and f.summary and f.code in MESSAGES for f in findings)
    assert all(f.advice for f in findings if f.status is not Status.OK)
    return {f.code: f for f in findings}


# -- parsing ---------------------------------------------------------------------------------------------------------


def test_parse_defaults_and_values() -> None:
    record = parse_dmarc("v=DMARC1; p=Quarantine; sp=none; rua=mailto:a@example.test!10m, mailto:b@other.test")
    assert record.errors == ()
    assert record.policy == "quarantine" and record.subdomain_policy == "none"
    assert record.get("adkim") == "r" and record.get("pct") == "100"
    assert [u.domain for u in record.report_uris("rua")] == ["example.test", "other.test"]
    assert record.with_tags(p="reject").startswith("v=DMARC1; p=reject; sp=none")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("v=DMARC1", "p= is missing"),
        ("v=DMARC1; p=block", "p=block"),
        ("v=DMARC1; p=none; p=reject", "twice"),
        ("p=none; v=DMARC1", "start with v=DMARC1"),
        ("v=DMARC1; p=none; rua=https://example.test/r", "not a mailto"),
        ("v=DMARC1; p=none; pct=150", "pct"),
        ("v=DMARC1; p=none; adkim=x", "adkim=x"),
        ("v=DMARC1; p=none; fo=2", "fo"),
        ("v=DMARC1; p=none; garbage; \x00\xff", "not a tag=value"),
    ],
)
def test_parse_errors(text: str, problem: str) -> None:
    record = parse_dmarc(text)
    assert any(problem in error for error in record.errors), record.errors


def test_parse_unknown_tags_and_garbage_never_raise() -> None:
    assert parse_dmarc("v=DMARC1; p=none; foo=bar").unknown_tags == ("foo",)
    for garbage in ["", ";;;", "=", "v=", "x" * 5000, "v=DMARC1;" + "a=b;" * 1000]:
        parse_dmarc(garbage)


def test_tag_table_has_defaults_for_modes() -> None:
    assert DMARC_TAGS["adkim"].default == "r" and DMARC_TAGS["p"].default is None
    assert all(spec.meaning for spec in DMARC_TAGS.values())


def test_walk_names() -> None:
    assert walk_names("mail.example.test") == ["mail.example.test", "example.test", "test"]
    long = "a.b.c.d.e.f.g.h.i.example.test"
    names = walk_names(long)
    assert len(names) == 8 and names[0] == long and names[1] == "e.f.g.h.i.example.test" and names[-1] == "test"


def test_interpret_walk_psd_and_fewest_labels() -> None:
    domain = "a.b.example.test"
    found = {"a.b.example.test": [], "b.example.test": ["v=DMARC1; p=none"], "example.test": [GOOD], "test": []}
    walk = interpret_walk(domain, found)
    assert walk.policy_domain == "b.example.test" and walk.org_domain == "example.test"
    found["b.example.test"] = ["v=DMARC1; p=none; psd=n"]
    assert interpret_walk(domain, found).org_domain == "b.example.test"
    found["test"] = ["v=DMARC1; p=reject; psd=y"]
    found["b.example.test"] = []
    found["example.test"] = []
    walk = interpret_walk(domain, found)
    assert walk.org_domain == "example.test" and walk.policy_domain == "test"


def test_interpret_walk_multiple_and_failure() -> None:
    found: dict[str, list[str] | None] = {"x.example.test": [GOOD, "v=DMARC1; p=none"], "example.test": [GOOD]}
    walk = interpret_walk("x.example.test", found | {"test": []})
    assert walk.policy_domain == "example.test" and list(walk.multiple) == ["x.example.test"]
    walk = interpret_walk("x.example.test", {"x.example.test": [], "example.test": None, "test": []})
    assert walk.failed == "example.test" and walk.record is None


# -- the check over DNS ----------------------------------------------------------------------------------------------


async def test_good_setup(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", GOOD)
    dns_server.add("example.test", "TXT", SPF)
    dns_server.add("s1._domainkey.example.test", "TXT", KEY)
    ctx = replace(ctx, dkim_selectors={"example.test": ("s1",)})
    found = await run(ctx)
    assert set(found) == {"record", "alignment"}
    assert all(f.status is Status.OK for f in found.values())
    assert found["record"].evidence["record"] == GOOD
    assert "DKIM can align" in found["alignment"].summary and "SPF can align" in found["alignment"].summary


async def test_record_split_over_strings(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject; " "rua=mailto:dmarc@example.test"')
    dns_server.add("example.test", "TXT", SPF)
    found = await run(ctx)
    assert found["record"].status is Status.OK and found["record"].evidence["policy"] == "reject"


async def test_missing(ctx: CheckContext) -> None:
    found = await run(ctx, "mail.example.test")
    assert found["missing"].status is Status.FAIL
    assert "_dmarc.example.test" in found["missing"].advice and "v=DMARC1; p=none" in found["missing"].advice


async def test_p_none_and_no_rua(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=none")
    found = await run(ctx)
    assert found["p-none"].status is Status.WARN and "p=quarantine" in found["p-none"].advice
    assert found["no-rua"].status is Status.WARN and "rua=mailto:dmarc-reports@example.test" in found["no-rua"].advice


async def test_inherited_policy_uses_sp(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=none; rua=mailto:d@example.test")
    found = await run(ctx, "news.example.test")
    assert found["inherited"].evidence["policy"] == "none"
    assert "sp=quarantine" in found["p-none"].advice


async def test_sp_weaker(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test")
    found = await run(ctx)
    assert found["sp-weaker"].status is Status.WARN and "sp=reject" in found["sp-weaker"].advice


async def test_pct_and_testing(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; pct=20; t=y; rua=mailto:d@example.test")
    found = await run(ctx)
    assert found["pct"].status is Status.WARN and found["testing"].status is Status.WARN


async def test_apex_record(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("example.test", "TXT", GOOD)
    dns_server.add("_dmarc.example.test", "TXT", GOOD)
    found = await run(ctx)
    assert found["apex-record"].status is Status.WARN and "_dmarc.example.test" in found["apex-record"].advice


async def test_multiple_records(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", GOOD)
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.example.test", "TXT", "some-verification=123")
    found = await run(ctx)
    assert found["multiple"].status is Status.FAIL and found["multiple"].evidence["count"] == 2
    assert found["missing"].status is Status.FAIL


async def test_syntax_and_unknown_tags(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=rejectt; foo=bar; \x01garbage")
    found = await run(ctx)
    assert found["syntax"].status is Status.FAIL and "p=rejectt" in found["syntax"].summary
    assert found["unknown-tag"].status is Status.WARN


async def test_external_report_authorisation(dns_server: DnsServer, ctx: CheckContext) -> None:
    record = "v=DMARC1; p=reject; rua=mailto:r@reports.other.test,mailto:d@example.test; ruf=mailto:f@third.test"
    dns_server.add("_dmarc.example.test", "TXT", record)
    dns_server.add("example.test._report._dmarc.reports.other.test", "TXT", "v=DMARC1")
    found = await run(ctx)
    bad = found["report-unauthorised"]
    assert bad.status is Status.WARN and bad.evidence["dest"] == "third.test"
    assert "example.test._report._dmarc.third.test" in bad.advice


async def test_external_report_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; rua=mailto:r@other.test")
    dns_server.set_behaviour("example.test._report._dmarc.other.test", "servfail")
    found = await run(ctx)
    assert found["report-auth-unknown"].status is Status.UNKNOWN


@pytest.mark.parametrize("behaviour", ["servfail", "timeout"])
async def test_dns_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext, behaviour: str) -> None:
    dns_server.add("_dmarc.example.test", "TXT", GOOD)
    dns_server.set_behaviour("_dmarc.example.test", behaviour)
    found = await run(ctx)
    assert found["dns-failed"].status is Status.UNKNOWN
    assert not any(f.status is Status.FAIL for f in found.values())


async def test_failure_after_the_record_does_not_hide_it(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", GOOD)
    dns_server.add("example.test", "TXT", SPF)
    dns_server.set_behaviour("_dmarc.test", "servfail")
    found = await run(ctx)
    assert found["record"].status is Status.OK


async def test_tree_walk_differs_from_rfc7489(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.mail.example.test", "TXT", "v=DMARC1; p=reject; rua=mailto:d@example.test")
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=none; rua=mailto:d@example.test")
    found = await run(ctx, "x.mail.example.test")
    assert found["inherited"].evidence["name"] == "_dmarc.mail.example.test"
    assert found["walk-differs"].status is Status.WARN and "_dmarc.example.test" in found["walk-differs"].summary


async def test_alignment_judgements(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; aspf=s; rua=mailto:d@example.test")
    found = await run(ctx)
    assert found["alignment"].status is Status.FAIL  # no SPF at the domain, no selector
    dns_server.add("example.test", "TXT", SPF)
    ctx = replace(ctx, dkim_selectors={"example.test": ("gone",)})
    found = await run(ctx)
    alignment = found["alignment"]
    assert alignment.status is Status.WARN and "exactly" in alignment.summary and "no key" in alignment.summary
    ctx = replace(ctx, dkim_selectors={})
    found = await run(ctx)
    assert found["alignment"].status is Status.OK and "not judged" in found["alignment"].summary


async def test_alignment_unknown_when_the_spf_lookup_fails(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_dmarc.example.test", "TXT", GOOD)
    dns_server.set_behaviour("example.test", "servfail", "TXT")
    found = await run(ctx)
    assert found["alignment"].status is Status.UNKNOWN and "SPF not judged" in found["alignment"].summary
    dns_server.add("s1._domainkey.example.test", "TXT", KEY)
    ctx = replace(ctx, dkim_selectors={"example.test": ("s1",)})
    found = await run(ctx)
    assert found["alignment"].status is Status.OK


async def test_the_public_suffix_list_is_parsed_once_however_many_ask_at_once() -> None:
    _parsed_psl.cache_clear()
    await asyncio.gather(*(load_psl() for _ in range(20)))  # each in its own thread: one parses, the others wait
    assert _parsed_psl.cache_info().misses == 1
    assert organizational_domain_psl("mail.example.co.uk") == "example.co.uk"
