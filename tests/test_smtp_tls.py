"""STARTTLS on every MX address and DANE, against a real DNS server and real SMTP servers on loopback."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from checks.context import CheckContext
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from checks.smtp import starttls as smtp
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.smtp import SmtpLab

DOMAIN = "example.test"
MX1 = "mx1.example.test"
MX2 = "mx2.example.test"


@pytest.fixture
async def ctx(dns_server: DnsServer, smtp_lab: SmtpLab) -> AsyncIterator[CheckContext]:
    context = CheckContext(
        Resolver([dns_server.address], timeout=2.0),
        timeout=2.0,
        smtp_port=smtp_lab.port,
        ssl_context=smtp_lab.client_context(),
        helo_names=("probe.example.test",),
    )
    yield context
    await context.aclose()


def _one_mx(dns_server: DnsServer, address: str = "127.0.0.1", name: str = MX1) -> None:
    dns_server.add(DOMAIN, "MX", f"10 {name}.")
    dns_server.add(name, "A", address)


async def _run(ctx: CheckContext) -> list[Finding]:
    return await smtp.check(parse_target(DOMAIN), ctx)


def _tls(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.check == "mx-tls"]


def _dane(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.check == "dane"]


def _leaf_der(cert: trustme.LeafCert) -> bytes:
    pem = cert.cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


async def test_valid_certificate_is_ok(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    cert = smtp_lab.leaf(MX1)
    smtp_lab.serve("127.0.0.1", cert)
    [finding] = await _run(ctx)
    assert finding.check == "mx-tls"
    assert finding.subject == f"{MX1} [127.0.0.1]"
    assert finding.status is Status.OK, finding
    assert finding.code == "tls-ok"
    assert finding.evidence["version"].startswith("TLSv1")
    assert finding.evidence["cipher"]
    assert finding.evidence["chain_verified"] is True
    certificate = finding.evidence["certificate"]
    assert certificate["sha256"] == hashlib.sha256(_leaf_der(cert)).hexdigest()
    assert certificate["not_after"][:4].isdigit()
    assert 360 <= certificate["days_left"] <= 365
    assert "220" in finding.evidence["banner"]
    assert "STARTTLS" in finding.evidence["ehlo"]


async def test_every_address_of_every_mx_is_probed(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", f"10 {MX1}.")
    dns_server.add(DOMAIN, "MX", f"20 {MX2}.")
    dns_server.add(MX1, "A", "127.0.0.1")
    dns_server.add(MX1, "A", "127.0.0.2")
    dns_server.add(MX2, "A", "127.0.0.3")
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1))
    smtp_lab.serve("127.0.0.2", smtp_lab.leaf(MX1, days=10))
    smtp_lab.serve("127.0.0.3")  # no STARTTLS at all
    by_subject = {f.subject: f for f in _tls(await _run(ctx))}
    assert set(by_subject) == {f"{MX1} [127.0.0.1]", f"{MX1} [127.0.0.2]", f"{MX2} [127.0.0.3]"}
    assert by_subject[f"{MX1} [127.0.0.1]"].status is Status.OK
    assert by_subject[f"{MX1} [127.0.0.2]"].code == "cert-expiring"
    assert by_subject[f"{MX2} [127.0.0.3]"].code == "no-starttls"


async def test_certificate_expiring_soon_warns(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1, days=10))
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.WARN, "cert-expiring")
    assert finding.evidence["certificate"]["days_left"] in (9, 10)
    assert "expires in" in finding.summary


async def test_expired_certificate_fails_and_keeps_its_details(
    dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext
) -> None:
    _one_mx(dns_server)
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1, expired=True))
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.FAIL, "cert-expired")
    assert finding.evidence["chain_verified"] is False
    assert "expired" in finding.evidence["verify_error"]
    assert finding.evidence["certificate"]["days_left"] < 0
    assert len(finding.evidence["certificate"]["sha256"]) == 64
    assert finding.advice


async def test_wrong_hostname_warns(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf("other.example.net"))
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.WARN, "cert-name-mismatch")
    assert finding.evidence["certificate"]["names"] == ["other.example.net"]
    assert finding.evidence["certificate"]["name_matches"] is False
    assert MX1 in finding.summary


async def test_untrusted_chain_warns(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1, ca=trustme.CA()))
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.WARN, "cert-untrusted")
    assert "issuer" in finding.evidence["verify_error"]


async def test_no_starttls_fails(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    smtp_lab.serve("127.0.0.1")
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.FAIL, "no-starttls")
    assert "STARTTLS" not in finding.evidence["ehlo"]


async def test_server_resetting_mid_handshake_is_a_finding(
    dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext
) -> None:
    _one_mx(dns_server)
    smtp_lab.serve_reset("127.0.0.1")
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.FAIL, "tls-handshake-failed")
    assert finding.evidence["stage"] == "handshake"


async def test_closed_port_is_unknown_never_no_tls(dns_server: DnsServer, ctx: CheckContext) -> None:
    _one_mx(dns_server)  # nothing listens on smtp_lab.port
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "unreachable")
    assert "could not connect from here" in finding.summary
    assert "STARTTLS" not in finding.summary


async def test_silent_server_is_unknown(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    smtp_lab.serve_silent("127.0.0.1")
    ctx = replace(ctx, timeout=0.5)
    [finding] = await _run(ctx)
    assert finding.status is Status.UNKNOWN
    assert finding.evidence["stage"] == "banner"


async def test_non_smtp_server_is_unknown(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    smtp_lab.serve_garbage("127.0.0.1")
    [finding] = await _run(ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "banner-failed")
    assert "not an SMTP reply" in finding.summary


async def test_odd_mx_names_never_crash(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "10 _odd_.example.test.")
    dns_server.add("_odd_.example.test", "A", "127.0.0.1")
    dns_server.add(DOMAIN, "MX", "20 192.0.2.1.")
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1))
    ctx = replace(ctx, helo_names=("prüfung.example.test",))
    [finding] = await _run(ctx)  # the IP-literal MX is reported by the "mx" check, not probed
    assert finding.subject == "_odd_.example.test [127.0.0.1]"
    assert finding.code == "cert-name-mismatch"


async def test_mx_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.set_behaviour(DOMAIN, "servfail")
    [finding] = await _run(ctx)
    assert (finding.check, finding.status) == ("mx-tls", Status.UNKNOWN)


async def test_null_mx_and_ip_target_give_nothing_to_probe(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", "0 .")
    assert await _run(ctx) == []
    assert await smtp.check(parse_target("192.0.2.1"), ctx) == []


# -- DANE -----------------------------------------------------------------------------------------------------


async def _dane_case(
    dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext, tlsa: list[str], authenticated: bool
) -> tuple[Finding, Finding]:
    _one_mx(dns_server)
    for record in tlsa:
        dns_server.add(f"_25._tcp.{MX1}", "TLSA", record)
    if authenticated:
        dns_server.set_authenticated(DOMAIN)
    findings = await _run(ctx)
    [tls], [dane] = _tls(findings), _dane(findings)
    return tls, dane


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
async def test_dane_ee_matches_with_ad(
    dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext, selector: int, mtype: int
) -> None:
    cert = smtp_lab.leaf(MX1)
    smtp_lab.serve("127.0.0.1", cert)
    der = _leaf_der(cert)
    data = der if selector == 0 else _spki(der)
    digest = {0: data, 1: hashlib.sha256(data).digest(), 2: hashlib.sha512(data).digest()}[mtype]
    _, dane = await _dane_case(dns_server, smtp_lab, ctx, [f"3 {selector} {mtype} {digest.hex()}"], True)
    assert (dane.status, dane.code) == (Status.OK, "dane-match"), dane
    assert dane.evidence["authenticated"] is True
    assert "DNSSEC-authenticated" in dane.summary


def _spki(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def test_dane_ee_mismatch_with_ad_fails(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1))
    _, dane = await _dane_case(dns_server, smtp_lab, ctx, ["3 1 1 " + "ab" * 32], True)
    assert (dane.status, dane.code) == (Status.FAIL, "dane-mismatch")
    assert dane.evidence["records"][0]["matches"] is False


async def test_dane_match_without_ad_is_not_usable(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    cert = smtp_lab.leaf(MX1)
    smtp_lab.serve("127.0.0.1", cert)
    tls, dane = await _dane_case(dns_server, smtp_lab, ctx, [f"3 1 1 {_spki_sha256(_leaf_der(cert))}"], False)
    assert (dane.status, dane.code) == (Status.WARN, "tlsa-not-authenticated")
    assert dane.evidence["records"][0]["matches"] is True
    assert "not DNSSEC-authenticated" in dane.summary
    assert tls.evidence["tlsa"] == "answer"


async def test_dane_mismatch_without_ad(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1))
    _, dane = await _dane_case(dns_server, smtp_lab, ctx, ["3 1 1 " + "cd" * 32], False)
    assert (dane.status, dane.code) == (Status.WARN, "tlsa-not-authenticated")
    assert "0 of 1" in dane.summary


async def test_dane_ta_matches_the_intermediate(
    dns_server: DnsServer, smtp_lab: SmtpLab, tls_ca: trustme.CA, ctx: CheckContext
) -> None:
    intermediate = tls_ca.create_child_ca()
    cert = smtp_lab.leaf(MX1, ca=intermediate)
    smtp_lab.serve("127.0.0.1", cert)
    ta_der = x509.load_pem_x509_certificate(cert.cert_chain_pems[1].bytes()).public_bytes(serialization.Encoding.DER)
    tls, dane = await _dane_case(dns_server, smtp_lab, ctx, [f"2 0 1 {hashlib.sha256(ta_der).hexdigest()}"], True)
    assert tls.status is Status.OK
    assert (dane.status, dane.code) == (Status.OK, "dane-match"), dane


async def test_dane_ta_on_the_leaf_itself_does_not_match(
    dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext
) -> None:
    cert = smtp_lab.leaf(MX1)
    smtp_lab.serve("127.0.0.1", cert)
    record = f"2 0 1 {hashlib.sha256(_leaf_der(cert)).hexdigest()}"
    _, dane = await _dane_case(dns_server, smtp_lab, ctx, [record], True)
    assert dane.code == "dane-mismatch"


async def test_pkix_usages_are_unusable_for_smtp(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    cert = smtp_lab.leaf(MX1)
    smtp_lab.serve("127.0.0.1", cert)
    record = f"1 1 1 {_spki_sha256(_leaf_der(cert))}"
    _, dane = await _dane_case(dns_server, smtp_lab, ctx, [record], True)
    assert (dane.status, dane.code) == (Status.WARN, "tlsa-unusable")


async def test_dane_with_self_signed_certificate_still_matches(
    dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext
) -> None:
    cert = smtp_lab.leaf(MX1, ca=trustme.CA())  # untrusted by the PKIX store; DANE-EE does not care
    smtp_lab.serve("127.0.0.1", cert)
    tls, dane = await _dane_case(dns_server, smtp_lab, ctx, [f"3 1 1 {_spki_sha256(_leaf_der(cert))}"], True)
    assert tls.code == "cert-untrusted"
    assert dane.code == "dane-match"


async def test_tlsa_without_tls_fails_for_dane(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    smtp_lab.serve("127.0.0.1")
    _, dane = await _dane_case(dns_server, smtp_lab, ctx, ["3 1 1 " + "ab" * 32], True)
    assert (dane.status, dane.code) == (Status.FAIL, "dane-no-tls")


async def test_tlsa_lookup_failure_is_unknown(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    _one_mx(dns_server)
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1))
    dns_server.set_behaviour(f"_25._tcp.{MX1}", "servfail")
    findings = await _run(ctx)
    [dane] = _dane(findings)
    assert (dane.status, dane.code) == (Status.UNKNOWN, "tlsa-lookup-failed")
    assert _tls(findings)[0].status is Status.OK


async def test_silent_servers_on_every_address(dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext) -> None:
    dns_server.add(DOMAIN, "MX", f"10 {MX1}.")
    for index in range(1, 5):
        dns_server.add(MX1, "A", f"127.0.0.{index}")
        smtp_lab.serve_silent(f"127.0.0.{index}")
    ctx = replace(ctx, timeout=0.5)
    findings = await _run(ctx)
    assert sorted(f.subject for f in findings) == [f"{MX1} [127.0.0.{index}]" for index in range(1, 5)]
    assert all(f.status is Status.UNKNOWN for f in findings)


async def test_a_tarpitting_mx_gets_its_own_finding_and_hides_no_other(
    dns_server: DnsServer, smtp_lab: SmtpLab, ctx: CheckContext
) -> None:
    from checks.runner import CHECK_TIMEOUT_FACTOR, run_checks

    dns_server.add(DOMAIN, "MX", f"10 {MX1}.")
    dns_server.add(DOMAIN, "MX", f"20 {MX2}.")
    dns_server.add(MX1, "A", "127.0.0.1")
    dns_server.add(MX2, "A", "127.0.0.2")
    smtp_lab.serve("127.0.0.1", smtp_lab.leaf(MX1))
    smtp_lab.serve_tarpit("127.0.0.2")  # a line every 0.2 s, inside the 0.5 s per-line timeout
    ctx = replace(ctx, timeout=0.5)
    report = await run_checks(parse_target(DOMAIN), ctx, [("mx-tls", smtp.check)])
    by_subject = {f.subject: f for f in report.findings}
    assert set(by_subject) == {f"{MX1} [127.0.0.1]", f"{MX2} [127.0.0.2]"}
    assert by_subject[f"{MX1} [127.0.0.1]"].status is Status.OK
    slow = by_subject[f"{MX2} [127.0.0.2]"]
    assert (slow.status, slow.code) == (Status.UNKNOWN, "deadline-failed")
    assert "tarpit" in slow.summary
    assert report.duration < ctx.timeout * CHECK_TIMEOUT_FACTOR
