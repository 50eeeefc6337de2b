"""The one runner turns errors into `unknown` findings that keep the error's code and evidence."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

from bot.config.credentials import credential
from bot.config.reader import Secret
from checks import CheckContext, Finding, Resolver, Status, parse_target
from checks.dnsbl.lookup import zones_for
from checks.errors import CredentialError, MailboxError, ServiceError
from checks.runner import QUEUED_PER_SLOT, _Budget, attempt, check_targets, run_checks
from tests.fixtures.dnsserver import DnsServer
from tests.test_dnsbl import publish_test_points

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DOMAIN = "broken.example"


def _ctx(dns: DnsServer) -> CheckContext:
    # The root's SOA, so the runner's resolver probe finds this server honest.
    dns.add(".", "SOA", "a.root-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 86400")
    return CheckContext(resolver=Resolver([dns.address], timeout=0.3, cache=False), timeout=0.3, clock=lambda: NOW)


async def test_a_dns_failure_keeps_who_said_what(dns_server: DnsServer) -> None:
    dns_server.set_behaviour(DOMAIN, "servfail")
    ctx = _ctx(dns_server)

    async def txt(target: object, ctx: CheckContext) -> list[Finding]:
        (await ctx.resolver.query(DOMAIN + ".", "TXT")).raise_for_failure()
        return []

    try:
        report = await run_checks(parse_target(DOMAIN), ctx, [("txt", txt)])
    finally:
        await ctx.aclose()
    [finding] = report.findings
    assert (finding.check, finding.subject, finding.status, finding.code) == (
        "txt",
        DOMAIN,
        Status.UNKNOWN,
        "lookup-failed",
    )
    assert finding.evidence["error"] == "DnsFailed"
    assert finding.evidence["rdtype"] == "TXT" and finding.evidence["name"].rstrip(".") == DOMAIN
    assert "SERVFAIL" in str(finding.evidence["outcome"]) and finding.evidence["server"]
    assert finding.observed_at == NOW


async def test_a_service_error_keeps_its_code_and_fields(dns_server: DnsServer) -> None:
    ctx = _ctx(dns_server)

    async def login() -> list[Finding]:
        raise MailboxError("auth", "imap.example.org: LOGIN refused: [AUTHENTICATIONFAILED]")

    outcome = await attempt("complaints", "feedback mailbox", login(), ctx)
    await ctx.aclose()
    assert isinstance(outcome, Finding)
    assert (outcome.status, outcome.code) == (Status.UNKNOWN, "auth")
    assert outcome.summary == "could not check: imap.example.org: LOGIN refused: [AUTHENTICATIONFAILED]"
    assert outcome.evidence == {"error": "MailboxError"}


async def test_values_pass_through_and_bugs_are_internal_errors(dns_server: DnsServer) -> None:
    ctx = _ctx(dns_server)

    async def fine() -> int:
        return 42

    async def buggy() -> int:
        raise KeyError("oops")

    assert await attempt("x", "y", fine(), ctx) == 42
    failed = await attempt("x", "y", buggy(), ctx)
    await ctx.aclose()
    assert isinstance(failed, Finding) and (failed.status, failed.code) == (Status.UNKNOWN, "internal-error")
    assert "oops" not in failed.summary  # the traceback goes to the log, not the room


async def test_a_timeout_says_how_long(dns_server: DnsServer) -> None:
    import asyncio

    ctx = _ctx(dns_server)
    outcome = await attempt("x", "y", asyncio.Event().wait(), ctx, timeout=0.05)
    await ctx.aclose()
    assert isinstance(outcome, Finding) and (outcome.code, outcome.evidence) == ("timeout", {"timeout": 0.05})


async def test_a_secret_that_cannot_be_read_is_a_credential_error_naming_the_key(tmp_path: Path) -> None:
    read = credential(Secret("feedback.password", file=str(tmp_path / "missing")))
    try:
        read()
    except CredentialError as error:
        assert isinstance(error, ServiceError) and error.code == "credential"
        assert error.evidence() == {"error": "CredentialError", "key": "feedback.password"}
        assert "feedback.password_file" in str(error)
    else:
        raise AssertionError("a missing secret file must raise")


async def test_the_budget_hands_out_units_in_order_and_takes_back_the_cancelled() -> None:
    budget = _Budget(10)
    await budget.take(6)
    second = asyncio.ensure_future(budget.take(6))  # does not fit: waits
    third = asyncio.ensure_future(budget.take(1))  # would fit, but never overtakes the second
    await asyncio.sleep(0)
    assert not second.done() and not third.done() and budget.free == 4
    budget.give(6)
    await asyncio.sleep(0)
    assert second.done() and third.done() and budget.free == 3
    budget.give(6)
    budget.give(1)
    await budget.take(50)  # more than the whole budget: it gets all of it, and runs alone
    assert budget.free == 0
    waiting = asyncio.ensure_future(budget.take(2))
    await asyncio.sleep(0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert not budget.waiting
    budget.give(50)
    assert budget.free == 10
    await budget.take(10)
    dropped = asyncio.ensure_future(budget.take(5))
    await asyncio.sleep(0)
    dropped.cancel()
    budget.give(10)  # the wake-up drops the cancelled turn before its task runs again
    with contextlib.suppress(asyncio.CancelledError):
        await dropped
    assert budget.free == 10 and not budget.waiting


async def test_a_sweep_keeps_the_queue_short_and_the_order(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.delay = 0.01
    concurrency = 20
    ctx = CheckContext(resolver=Resolver([dns_server.address], timeout=2.0, concurrency=concurrency), timeout=2.0)
    targets = [parse_target(f"192.0.2.{n}") for n in range(1, 41)]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            active, waiting = ctx.resolver.in_flight()
            peak = max(peak, active + waiting)
            await asyncio.sleep(0.002)

    watcher = asyncio.ensure_future(watch())
    try:
        reports = await check_targets(targets, ctx, only=("dnsbl",))
    finally:
        watcher.cancel()
        await ctx.aclose()
    assert [report.target for report in reports] == targets
    assert all(f.status is Status.OK for report in reports for f in report.findings)
    zones = len(zones_for(targets[0], ctx))
    # Two waves of the slots, whole targets of one query a zone; the zones' test points come on top once.
    assert peak <= concurrency * QUEUED_PER_SLOT + 2 * zones, peak
    assert peak >= concurrency  # and the wire was kept full
