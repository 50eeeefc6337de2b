"""DKIM: key record parsing and the per-selector check against a real local DNS server."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from checks.context import CheckContext
from checks.dkim import MESSAGES, check, parse_dkim_key
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from tests.fixtures.dnsserver import DnsServer

ED25519 = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def rsa_key(bits: int, fmt: serialization.PublicFormat = serialization.PublicFormat.SubjectPublicKeyInfo) -> str:
    """A base64 RSA public key with a modulus of `bits` bits (not a usable key: only its size matters)."""
    modulus = (1 << (bits - 1)) | 0xABCDEF1
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    return base64.b64encode(key.public_bytes(serialization.Encoding.DER, fmt)).decode()


def split_txt(record: str, size: int = 255) -> str:
    """Zone-text form of a long TXT record split into 255-byte strings, as signers publish them."""
    return " ".join(f'"{record[i : i + size]}"' for i in range(0, len(record), size))


@pytest.fixture
async def ctx(dns_server: DnsServer) -> AsyncIterator[CheckContext]:
    resolver = Resolver([dns_server.address], timeout=0.6, cache=False)
    context = CheckContext(resolver, timeout=1.0, dkim_selectors={"example.test": ("s1",)})
    yield context
    await context.aclose()


async def run(ctx: CheckContext) -> dict[str, Finding]:
    findings = await check(parse_target("example.test"), ctx)
    assert all(f.check == "dkim" and f.summary and f.code in MESSAGES for f in findings)
    assert all(f.advice for f in findings if f.status is not Status.OK)
    return {f.code: f for f in findings}


# -- parsing ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "fmt"),
    [
        (2048, serialization.PublicFormat.SubjectPublicKeyInfo),
        (1024, serialization.PublicFormat.SubjectPublicKeyInfo),
        (4096, serialization.PublicFormat.PKCS1),
    ],
)
def test_rsa_key_size(bits: int, fmt: serialization.PublicFormat) -> None:
    key = parse_dkim_key(f"v=DKIM1; k=rsa; p={rsa_key(bits, fmt)}")
    assert key.errors == () and key.bits == bits and key.key_type == "rsa"


def test_ed25519_and_fingerprint() -> None:
    key = parse_dkim_key(f"v=DKIM1; k=ed25519; p={ED25519}")
    assert key.errors == () and key.bits == 256
    assert key.fingerprint == hashlib.sha256(base64.b64decode(ED25519)).hexdigest()


def test_flags_revoked_and_testing() -> None:
    assert parse_dkim_key("v=DKIM1; p=").revoked
    key = parse_dkim_key(f"v=DKIM1; t=y:s; p={ED25519}; k=ed25519")
    assert key.testing and "t=s;" in key.without_testing() and "t=y" not in key.without_testing()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("v=DKIM1; k=rsa", "p= (the public key) is missing"),
        ("v=DKIM1; k=dsa; p=AAAA", "k=dsa"),
        ("v=DKIM1; p=not*base64!", "base64"),
        ("v=DKIM1; p=AAAAAAAA", "not an RSA public key"),
        ("k=rsa; v=DKIM1; p=AAAA", "first tag"),
        ("v=DKIM1; k=ed25519; p=AAAA", "32 bytes"),
        ("v=DKIM1; p=AAAA; p=BBBB", "twice"),
        ("garbage without tags", "not a tag=value"),
    ],
)
def test_parse_errors(text: str, problem: str) -> None:
    key = parse_dkim_key(text)
    assert any(problem in error for error in key.errors), key.errors


def test_parse_ec_key_is_not_rsa() -> None:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key = parse_dkim_key(f"v=DKIM1; p={base64.b64encode(der).decode()}")
    assert any("k=rsa but" in error for error in key.errors)


# -- the check over DNS ----------------------------------------------------------------------------------------------


async def test_not_configured(ctx: CheckContext) -> None:
    ctx = replace(ctx, dkim_selectors={})
    found = await run(ctx)
    assert found["not-configured"].status is Status.WARN and "--selector" in found["not-configured"].advice


async def test_good_key_split_over_strings(dns_server: DnsServer, ctx: CheckContext) -> None:
    record = f"v=DKIM1; k=rsa; p={rsa_key(2048)}"
    dns_server.add("s1._domainkey.example.test", "TXT", split_txt(record))
    found = await run(ctx)
    key = found["key"]
    assert key.status is Status.OK and key.subject == "s1" and key.evidence["bits"] == 2048
    assert key.evidence["record"] == record and key.evidence["fingerprint"].startswith("sha256:")


async def test_cname_to_provider(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("s1._domainkey.example.test", "CNAME", "s1.dkim.provider.test.")
    dns_server.add("s1.dkim.provider.test", "TXT", f"v=DKIM1; k=ed25519; p={ED25519}")
    found = await run(ctx)
    assert found["key"].status is Status.OK and "CNAME to s1.dkim.provider.test" in found["key"].summary
    assert found["key"].evidence["cname"] == ["s1.dkim.provider.test."]


@pytest.mark.parametrize(("bits", "code", "status"), [(1024, "short-key", Status.WARN), (768, "weak-key", Status.FAIL)])
async def test_rsa_sizes(dns_server: DnsServer, ctx: CheckContext, bits: int, code: str, status: Status) -> None:
    dns_server.add("s1._domainkey.example.test", "TXT", split_txt(f"v=DKIM1; p={rsa_key(bits)}"))
    found = await run(ctx)
    assert found[code].status is status and found[code].evidence["bits"] == bits


async def test_testing_flag(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("s1._domainkey.example.test", "TXT", f"v=DKIM1; k=ed25519; t=y; p={ED25519}")
    found = await run(ctx)
    assert found["key"].status is Status.OK and found["testing"].status is Status.WARN
    assert found["testing"].advice.endswith(f'TXT "v=DKIM1; k=ed25519; p={ED25519}"')


async def test_revoked(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("s1._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p=")
    found = await run(ctx)
    assert set(found) == {"revoked"} and found["revoked"].status is Status.FAIL


async def test_missing_and_several_selectors(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("s2._domainkey.example.test", "TXT", f"v=DKIM1; k=ed25519; p={ED25519}")
    ctx = replace(ctx, dkim_selectors={"example.test": ("s1", "s2")})
    findings = await check(parse_target("example.test"), ctx)
    assert [(f.subject, f.code, f.status) for f in findings] == [
        ("s1", "missing", Status.FAIL),
        ("s2", "key", Status.OK),
    ]


async def test_multiple_records(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("s1._domainkey.example.test", "TXT", f"v=DKIM1; k=ed25519; p={ED25519}")
    dns_server.add("s1._domainkey.example.test", "TXT", f"v=DKIM1; p={rsa_key(2048)}")
    found = await run(ctx)
    assert found["multiple"].status is Status.FAIL


async def test_garbage_record(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("s1._domainkey.example.test", "TXT", "v=DKIM1; p=%%%; k=rsa; \x00junk")
    found = await run(ctx)
    assert found["syntax"].status is Status.FAIL


@pytest.mark.parametrize("behaviour", ["servfail", "timeout"])
async def test_dns_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext, behaviour: str) -> None:
    dns_server.set_behaviour("s1._domainkey.example.test", behaviour)
    found = await run(ctx)
    assert set(found) == {"dns-failed"} and found["dns-failed"].status is Status.UNKNOWN
