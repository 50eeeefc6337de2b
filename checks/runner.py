"""The one runner: which checks a target gets, run at the same time, their failures turned into `unknown` findings.

The wall time of a domain approaches the longest chain of dependent look-ups, not their sum: every check starts
at once, and the resolver answers a question several checks ask (the MX set, say) with one query. The check
modules are imported when a target of their kind is first checked, so `repbot check IP` loads no SMTP code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from checks.context import CheckContext
from checks.dns.resolver import run_deadline
from checks.errors import LookupFailed
from checks.model import Finding, Report, Status, Target

__all__ = ["CheckFn", "check_target", "check_targets", "domain_checks", "ip_checks", "run_checks"]

log = logging.getLogger(__name__)

CheckFn = Callable[[Target, CheckContext], Awaitable[list[Finding]]]

# A whole check may chain several dependent look-ups, each up to ctx.timeout.
CHECK_TIMEOUT_FACTOR = 6
# Targets under way per query slot. An IP check asks ~19 questions at once, then one or two that depend on the
# answers (TXT reasons, the PTR's forward look-up): with 2 targets a slot the slots stay busy in that second
# phase too, and the first phase's queue (~38 queries a slot) is still worked off in seconds.
TARGETS_PER_SLOT = 2


def domain_checks() -> tuple[tuple[str, CheckFn], ...]:
    """Every domain check, in the order findings are shown: reputation, then what authenticates mail, then transport."""
    from checks import dkim, dnssec, mtasts, mx, tlsrpt
    from checks.dmarc import policy as dmarc
    from checks.dnsbl import lookup as dnsbl
    from checks.smtp import starttls as smtp
    from checks.spf import lint as spf_lint

    return (
        ("dnsbl", dnsbl.check_domain),
        ("spf", spf_lint.check),
        ("dkim", dkim.check),
        ("dmarc", dmarc.check),
        ("mx", mx.check),
        ("mx-tls", smtp.check),
        ("mta-sts", mtasts.check),
        ("tls-rpt", tlsrpt.check),
        ("dnssec", dnssec.check),
    )


def ip_checks() -> tuple[tuple[str, CheckFn], ...]:
    """Every IP check: blocklists first, as they are what an operator asking about an IP wants to see."""
    from checks import mx
    from checks.dnsbl import lookup as dnsbl

    async def reverse(target: Target, ctx: CheckContext) -> list[Finding]:
        return [await mx.check_reverse(target.value, ctx)]

    return (("dnsbl", dnsbl.check_ip), ("ptr", reverse))


async def check_target(target: Target, ctx: CheckContext) -> Report:
    """The Report of every check of `target`'s kind."""
    return await run_checks(target, ctx, ip_checks() if target.is_ip else domain_checks())


async def check_targets(
    targets: Sequence[Target], ctx: CheckContext, on_done: Callable[[Report], None] | None = None
) -> list[Report]:
    """Reports for several targets, checked concurrently, in the order given.

    At most `resolver.concurrency * TARGETS_PER_SLOT` targets are under way at once: enough to keep every
    query slot busy, and each target's time limit then counts from its own start. Started all at once, a /20
    (4,096 targets, 70,000 queries) gave the last targets' queries no chance to leave the queue in time.
    """
    under_way = asyncio.Semaphore(ctx.resolver.concurrency * TARGETS_PER_SLOT)

    async def one(target: Target) -> Report:
        async with under_way:
            report = await check_target(target, ctx)
        if on_done is not None:
            on_done(report)
        return report

    return list(await asyncio.gather(*(one(target) for target in targets)))


async def run_checks(target: Target, ctx: CheckContext, checks: Sequence[tuple[str, CheckFn]]) -> Report:
    """The Report of every check for `target`, all run concurrently; findings keep the order of `checks`."""
    started = time.monotonic()
    results = await asyncio.gather(*(_run_one(name, check, target, ctx) for name, check in checks))
    findings = tuple(finding for result in results for finding in result)
    return Report(target, findings, duration=time.monotonic() - started)


async def _run_one(name: str, check: CheckFn, target: Target, ctx: CheckContext) -> list[Finding]:
    budget = ctx.timeout * CHECK_TIMEOUT_FACTOR
    try:
        async with asyncio.timeout(budget):
            # A query still queued behind the in-flight limit one timeout before the end is not sent, and says
            # so: the check reports "not sent", not a server's timeout; a try already on the wire may finish.
            with run_deadline(budget - ctx.timeout):
                return await check(target, ctx)
    except LookupFailed as error:
        return [_unknown(name, target, f"could not check: {error}", "lookup-failed", ctx)]
    except TimeoutError:
        summary = f"could not check: no result within {ctx.timeout * CHECK_TIMEOUT_FACTOR:.0f} s"
        return [_unknown(name, target, summary, "timeout", ctx)]
    except Exception:
        # A bug in one check must not hide the others' findings, nor pass as "ok".
        log.exception("check %s failed on %s", name, target)
        return [_unknown(name, target, "internal error in this check, see the logs", "internal-error", ctx)]


def _unknown(name: str, target: Target, summary: str, code: str, ctx: CheckContext) -> Finding:
    return Finding(name, target.value, Status.UNKNOWN, summary, code=code, observed_at=ctx.clock())
