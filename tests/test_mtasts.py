"""MTA-STS: parsing, MX pattern coverage, and the check against a real local DNS server and HTTPS server."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from checks.context import CheckContext
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from checks.mtasts import MAX_AGE_LIMIT, MESSAGES, check, mx_matches, parse_sts_policy, parse_sts_record, uncovered_mx
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.https import HttpsServer, free_port

PATH = "/.well-known/mta-sts.txt"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.mail.example.test\r\nmax_age: 604800\r\n"


@pytest.fixture
async def ctx(dns_server: DnsServer, https_server: HttpsServer) -> AsyncIterator[CheckContext]:
    dns_server.add("_mta-sts.example.test", "TXT", "v=STSv1; id=20240101")
    dns_server.add("mta-sts.example.test", "A", "127.0.0.1")
    dns_server.add("example.test", "MX", "10 mx1.example.test.")
    dns_server.add("example.test", "MX", "20 b.mail.example.test.")
    https_server.route(PATH, body=POLICY.encode())
    context = CheckContext(
        Resolver([dns_server.address], timeout=0.6, cache=False),
        timeout=1.0,
        https_port=https_server.port,
        ssl_context=https_server.client_context(),
    )
    yield context
    await context.aclose()


async def run(ctx: CheckContext) -> dict[str, Finding]:
    findings = await check(parse_target("example.test"), ctx)
    assert all(f.check == "mta-sts" and f.summary and f.code in MESSAGES for f in findings)
    assert all(f.advice for f in findings if f.status is not Status.OK)
    return {f.code: f for f in findings}


# -- parsing ---------------------------------------------------------------------------------------------------------


def test_parse_record() -> None:
    assert parse_sts_record("v=STSv1; id=abc123;").id == "abc123"
    for text, problem in [
        ("v=STSv1;", "id= is missing"),
        ("v=STSv1; id=has-dash", "letters and digits"),
        ("v=STSv1; id=" + "a" * 33, "letters and digits"),
        ("id=1; v=STSv1", "start with"),
        ("v=STSv1; id=1; id=2", "twice"),
        ("\x00garbage", "tag=value"),
    ]:
        assert any(problem in e for e in parse_sts_record(text).errors), text


def test_parse_policy() -> None:
    policy = parse_sts_policy(POLICY)
    assert policy.errors == () and policy.mode == "enforce" and policy.max_age == 604800
    assert policy.mx == ("mx1.example.test", "*.mail.example.test")
    assert parse_sts_policy(POLICY.replace("\r\n", "\n")).errors == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (POLICY.replace("604800", str(MAX_AGE_LIMIT + 1)), "max_age"),
        (POLICY.replace("604800", "soon"), "max_age"),
        (POLICY.replace("enforce", "strict"), "mode must be"),
        (POLICY.replace("version: STSv1\r\n", ""), "version"),
        ("version: STSv1\nmode: enforce\nmax_age: 86400\n", "no mx"),
        (POLICY + "mx: bad pattern!\n", "not a host name"),
        (POLICY + "mode: none\n", "twice"),
        ("<html>nope</html>", "key: value"),
    ],
)
def test_parse_policy_errors(text: str, problem: str) -> None:
    assert any(problem in e for e in parse_sts_policy(text).errors), parse_sts_policy(text).errors


def test_mx_patterns() -> None:
    assert mx_matches("*.mail.example.test", "a.mail.example.test")
    assert not mx_matches("*.mail.example.test", "a.b.mail.example.test")
    assert not mx_matches("*.mail.example.test", "mail.example.test")
    assert mx_matches("MX1.example.test.", "mx1.example.test")
    assert uncovered_mx(["mx1.example.test"], ["mx1.example.test", "mx2.example.test"]) == ["mx2.example.test"]


# -- the check over DNS and HTTPS ------------------------------------------------------------------------------------


async def test_good(https_server: HttpsServer, ctx: CheckContext) -> None:
    found = await run(ctx)
    assert set(found) == {"record", "policy", "mx-covered"}
    assert all(f.status is Status.OK for f in found.values())
    policy = found["policy"]
    assert policy.evidence["policy_sha256"] == hashlib.sha256(POLICY.encode()).hexdigest()
    assert policy.evidence["id"] == "20240101" and policy.evidence["url"].endswith(f":{https_server.port}{PATH}")
    assert https_server.requests == [("mta-sts.example.test", PATH)]


async def test_missing_record(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.remove("_mta-sts.example.test")
    found = await run(ctx)
    assert set(found) == {"missing"} and found["missing"].status is Status.WARN


async def test_multiple_records(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_mta-sts.example.test", "TXT", "v=STSv1; id=2")
    found = await run(ctx)
    assert set(found) == {"multiple"} and found["multiple"].status is Status.FAIL


async def test_record_without_id(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.remove("_mta-sts.example.test")
    dns_server.add("_mta-sts.example.test", "TXT", "v=STSv1;")
    found = await run(ctx)
    assert found["syntax"].status is Status.FAIL and "id=" in found["syntax"].advice


@pytest.mark.parametrize("behaviour", ["servfail", "timeout"])
async def test_record_dns_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext, behaviour: str) -> None:
    dns_server.set_behaviour("_mta-sts.example.test", behaviour)
    found = await run(ctx)
    assert set(found) == {"dns-failed"} and found["dns-failed"].status is Status.UNKNOWN


async def test_redirect_is_not_followed(https_server: HttpsServer, ctx: CheckContext) -> None:
    https_server.route(PATH, status=301, headers={"Location": "https://elsewhere.test/policy"})
    https_server.route("/policy", body=POLICY.encode())
    found = await run(ctx)
    assert found["redirect"].status is Status.FAIL and found["redirect"].evidence["location"].endswith("/policy")
    assert https_server.requests == [("mta-sts.example.test", PATH)]


async def test_http_status(https_server: HttpsServer, ctx: CheckContext) -> None:
    https_server.route(PATH, status=404, body=b"gone")
    found = await run(ctx)
    assert found["http-status"].status is Status.FAIL and found["http-status"].evidence["status"] == 404


async def test_ten_megabytes_are_not_read(https_server: HttpsServer, ctx: CheckContext) -> None:
    https_server.route(PATH, size=10 * 1024 * 1024)
    found = await run(ctx)
    assert found["too-large"].status is Status.FAIL


async def test_hanging_server_is_unknown(https_server: HttpsServer, ctx: CheckContext) -> None:
    https_server.route(PATH, hang=True)
    started = time.monotonic()
    found = await run(ctx)
    assert found["fetch-timeout"].status is Status.UNKNOWN
    assert time.monotonic() - started < ctx.timeout + 1.0


async def test_wrong_content_type(https_server: HttpsServer, ctx: CheckContext) -> None:
    https_server.route(PATH, body=POLICY.encode(), content_type="text/html; charset=utf-8")
    found = await run(ctx)
    assert found["content-type"].status is Status.WARN and found["policy"].status is Status.OK


async def test_untrusted_certificate_fails(ctx: CheckContext) -> None:
    ctx = replace(ctx, ssl_context=None)  # the system trust store does not know the test CA
    found = await run(ctx)
    assert found["tls"].status is Status.FAIL


async def test_certificate_for_another_name_fails(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("_mta-sts.nocert.test", "TXT", "v=STSv1; id=1")
    dns_server.add("mta-sts.nocert.test", "A", "127.0.0.1")
    findings = await check(parse_target("nocert.test"), ctx)
    assert {f.code: f.status for f in findings}["tls"] is Status.FAIL


async def test_connection_refused_is_unknown(ctx: CheckContext) -> None:
    ctx = replace(ctx, https_port=free_port())
    found = await run(ctx)
    assert found["unreachable"].status is Status.UNKNOWN


async def test_policy_host_missing(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.remove("mta-sts.example.test")
    found = await run(ctx)
    assert found["no-policy-host"].status is Status.FAIL


async def test_policy_host_dns_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.set_behaviour("mta-sts.example.test", "servfail")
    found = await run(ctx)
    assert found["unreachable"].status is Status.UNKNOWN


async def test_garbage_policy(https_server: HttpsServer, ctx: CheckContext) -> None:
    https_server.route(PATH, body=b"\x00\xff\xfe garbage\n<html>\n" * 50)
    found = await run(ctx)
    assert found["policy-syntax"].status is Status.FAIL


async def test_max_age_too_long_and_short(https_server: HttpsServer, ctx: CheckContext) -> None:
    https_server.route(PATH, body=POLICY.replace("604800", "31557601").encode())
    found = await run(ctx)
    assert "max_age" in found["policy-syntax"].summary
    https_server.route(PATH, body=POLICY.replace("604800", "3600").encode())
    found = await run(ctx)
    assert found["short-max-age"].status is Status.WARN and found["policy"].status is Status.OK


@pytest.mark.parametrize(("mode", "code"), [("testing", "mode-testing"), ("none", "mode-none")])
async def test_modes(https_server: HttpsServer, ctx: CheckContext, mode: str, code: str) -> None:
    https_server.route(PATH, body=POLICY.replace("enforce", mode).encode())
    found = await run(ctx)
    assert found[code].status is Status.WARN


async def test_mx_not_covered(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.add("example.test", "MX", "30 backup.other.test.")
    dns_server.add("example.test", "MX", "40 a.b.mail.example.test.")
    found = await run(ctx)
    uncovered = found["mx-uncovered"]
    assert (
        uncovered.status is Status.FAIL
        and uncovered.evidence["uncovered"] == "a.b.mail.example.test, backup.other.test"
    )


async def test_mx_lookup_failure_is_unknown(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.set_behaviour("example.test", "servfail", "MX")
    found = await run(ctx)
    assert found["mx-dns-failed"].status is Status.UNKNOWN and found["policy"].status is Status.OK


async def test_no_mx(dns_server: DnsServer, ctx: CheckContext) -> None:
    dns_server.remove("example.test", "MX")
    dns_server.add("example.test", "MX", "0 .")
    found = await run(ctx)
    assert found["no-mx"].status is Status.WARN


async def test_policy_change_is_visible_in_evidence(https_server: HttpsServer, ctx: CheckContext) -> None:
    before = (await run(ctx))["policy"].evidence
    https_server.route(PATH, body=POLICY.replace("604800", "1209600").encode())
    after = (await run(ctx))["policy"].evidence
    assert before["id"] == after["id"] and before["policy_sha256"] != after["policy_sha256"]
