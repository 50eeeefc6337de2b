"""The DNS outcome phrases in the operator's language: each check's summary of a failed look-up, against the real
local DNS server, says the outcome in Spanish ("SERVFAIL desde ...") while its evidence keeps the English."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import bot.context  # noqa: F401  # installs the bot's translation into the check library
from bot.i18n import use_language
from checks import dkim, mtasts, tlsrpt
from checks.context import CheckContext
from checks.dmarc import policy as dmarc
from checks.dns.resolver import Resolver, run_deadline
from checks.dnsbl.lookup import Health, check_ip, zone_health
from checks.model import Finding, parse_target
from checks.spf import lint as spf
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.https import HttpsServer
from tests.helpers import english_words
from tests.test_dnsbl import publish_test_points

DOMAIN = "example.test"
Check = Callable[..., Awaitable[list[Finding]]]


@pytest.fixture
async def ctx(dns_server: DnsServer, https_server: HttpsServer) -> AsyncIterator[CheckContext]:
    context = CheckContext(
        Resolver([dns_server.address], timeout=0.5, cache=False),
        timeout=1.0,
        https_port=https_server.port,
        ssl_context=https_server.client_context(),
        dkim_selectors={DOMAIN: ("s1",)},
    )
    yield context
    await context.aclose()


async def spanish(check: Check, ctx: CheckContext, domain: str = DOMAIN) -> dict[str, Finding]:
    with use_language("es"):
        return {f.code: f for f in await check(parse_target(domain), ctx)}


def said_in_spanish(finding: Finding, *, outcome: str = "SERVFAIL desde 127.0.0.1:") -> None:
    assert outcome in finding.summary, finding.summary
    assert " from 127.0.0.1" not in finding.summary and "no such name" not in finding.summary
    # the evidence keeps the English outcome, as JSON and logs have it
    assert all("desde" not in str(value) for value in finding.evidence.values()), finding.evidence


@pytest.mark.parametrize(
    ("check", "name", "code"),
    [
        (mtasts.check, f"_mta-sts.{DOMAIN}", "dns-failed"),
        (tlsrpt.check, f"_smtp._tls.{DOMAIN}", "dns-failed"),
        (dkim.check, f"s1._domainkey.{DOMAIN}", "dns-failed"),
        (dmarc.check, f"_dmarc.{DOMAIN}", "dns-failed"),
        (spf.check, DOMAIN, "dns-failed"),
    ],
    ids=["mta-sts", "tls-rpt", "dkim", "dmarc", "spf"],
)
async def test_a_failed_record_look_up_is_said_in_spanish(
    dns_server: DnsServer, ctx: CheckContext, check: Check, name: str, code: str
) -> None:
    dns_server.set_behaviour(name, "servfail")
    found = await spanish(check, ctx)
    said_in_spanish(found[code])
    assert found[code].summary.startswith(("no he podido", "no se pudo")), found[code].summary
    evidence = found[code].evidence
    assert not evidence or "SERVFAIL from 127.0.0.1:" in str(evidence)  # SPF's dns-failed carries none


async def test_a_missing_dkim_key_and_an_spf_include_that_fails(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "TXT", "v=spf1 include:_spf.broken.test -all")
    dns_server.set_behaviour("_spf.broken.test", "servfail")
    said_in_spanish((await spanish(spf.check, ctx))["include-dns-failed"])
    dns_server.add(DOMAIN, "A", "192.0.2.1")  # the domain exists: the selector's name is NXDOMAIN
    missing = (await spanish(dkim.check, ctx))["missing"]
    assert "no existe el nombre (NXDOMAIN)" in missing.summary and "no such name" not in missing.summary


async def test_mta_sts_policy_host_and_mx_look_ups(dns_server: DnsServer, https_server: HttpsServer,
                                                   ctx: CheckContext) -> None:  # fmt: skip
    dns_server.add(f"_mta-sts.{DOMAIN}", "TXT", "v=STSv1; id=20240101")
    dns_server.set_behaviour(f"mta-sts.{DOMAIN}", "servfail")
    said_in_spanish((await spanish(mtasts.check, ctx))["unreachable"])
    dns_server.set_behaviour(f"mta-sts.{DOMAIN}", None)
    dns_server.add(f"mta-sts.{DOMAIN}", "A", "127.0.0.1")
    https_server.route("/.well-known/mta-sts.txt", body=b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\n"
                       b"max_age: 604800\r\n")  # fmt: skip
    dns_server.set_behaviour(DOMAIN, "servfail", "MX")
    said_in_spanish((await spanish(mtasts.check, ctx))["mx-dns-failed"])


async def test_zone_health_says_an_unreachable_zone_in_spanish(dns_server: DnsServer, ctx: CheckContext) -> None:
    publish_test_points(dns_server)
    dns_server.set_behaviour("*.psbl.surriel.com", "servfail")
    health = {h.zone: h for h in await zone_health(ctx)}  # probed in English, cached, then read in Spanish
    psbl, needs_key = health["psbl.surriel.com"], health["zrd.spamhaus.org"]
    with use_language("es"):
        assert {h.zone: h for h in await zone_health(ctx)} == health  # the cached probe, not a second one
        assert psbl.health == Health.UNREACHABLE and psbl.said().startswith("SERVFAIL desde 127.0.0.1:"), psbl.said()
        assert needs_key.said() == "solo se sirve a través de Spamhaus DQS: configura dnsbl.dqs_key para usarla"
        assert psbl.detail.startswith("SERVFAIL from 127.0.0.1:")  # the English, for the evidence and JSON
        assert psbl.to_json()["detail"] == psbl.detail


async def test_the_resolvers_own_detail_is_said_in_spanish(dns_server: DnsServer) -> None:
    """The resolver's "the run's deadline passed" reaches a person in a summary (a slow sweep): ours, so translated."""
    dns_server.delay = 0.2
    resolver = Resolver([dns_server.address], timeout=2.0, cache=False, concurrency=1)
    with run_deadline(0.05):
        started = [resolver.submit(f"{i}.late.example.test") for i in range(4)]
    answers = [await s if isinstance(s, asyncio.Future) else s for s in started]
    unsent = answers[-1]
    assert unsent.describe() == "not sent: the run's deadline passed"
    with use_language("es"):
        assert unsent.said() == "no enviada: venció el plazo de la pasada"
    resolver.close()


async def test_a_zone_that_outlasts_the_checks_timeout_is_said_in_spanish(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.set_behaviour("*.psbl.surriel.com", "timeout")
    ctx = CheckContext(Resolver([dns_server.address], timeout=2.0, cache=False), timeout=0.3)
    health = {h.zone: h for h in await zone_health(ctx)}
    await ctx.aclose()
    with use_language("es"):
        said = health["psbl.surriel.com"].said()
    assert said == "tiempo agotado: sin respuesta dentro del tiempo de espera de la comprobación", said


async def test_a_broken_zone_is_said_in_spanish_and_its_evidence_stays_english(dns_server: DnsServer) -> None:
    from tests.test_dnsbl import IP, small_ctx

    dns_server.add("*.dead.test", "A", "127.0.0.2")
    ctx = small_ctx(dns_server, "dead.test")
    await zone_health(ctx)  # probed in English first: the cached health is worded again for each reader
    with use_language("es"):
        [finding] = await check_ip(parse_target(IP), ctx)
    assert "lista 1.0.0.127, una dirección de prueba que nunca debe aparecer (lo lista todo)" in finding.summary
    assert finding.evidence["reason"].startswith("it lists 1.0.0.127, a test point that must never be listed")


async def test_dnssec_and_dmarc_alignment_findings_are_said_in_spanish(
    dns_server: DnsServer, ctx: CheckContext
) -> None:
    from checks import dnssec

    dns_server.add(DOMAIN, "SOA", "ns.example.test. hostmaster.example.test. 1 3600 600 86400 60")
    dns_server.add(DOMAIN, "TXT", '"v=spf1 -all"')
    dns_server.add(f"_dmarc.{DOMAIN}", "TXT", '"v=DMARC1; p=reject; rua=mailto:d@example.test"')
    dns_server.add(f"s1._domainkey.{DOMAIN}", "TXT", '"v=DKIM1; k=rsa; p=MIIBIjANBgkq"')
    unsigned = (await spanish(dnssec.check, ctx))["unsigned"]
    assert unsigned.summary.startswith("no firmado con DNSSEC"), unsigned.summary
    assert "registrador" in unsigned.advice and "DANE" in unsigned.advice
    alignment = (await spanish(dmarc.check, ctx))["alignment"]
    assert "SPF puede alinearse si el remitente del sobre" in alignment.summary, alignment.summary
    assert "DKIM puede alinearse con d=example.test" in alignment.summary
    spanish_text = (alignment.summary + unsigned.summary + unsigned.advice).replace("MAIL FROM", "")  # SMTP's term
    assert not english_words(spanish_text)
    # the evidence keeps the English, as JSON and logs have it
    assert alignment.evidence["spf"].startswith("SPF can align if the envelope sender (MAIL FROM) is at example.test")
