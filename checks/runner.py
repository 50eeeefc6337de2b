"""The one runner: which checks a target gets, run at the same time, their failures turned into `unknown` findings.

`attempt` is where an error becomes a value, for target checks and for the provider and canary jobs alike.

The wall time of a domain approaches the longest chain of dependent look-ups, not their sum: every check starts
at once, and the resolver answers a question several checks ask (the MX set, say) with one query. The check
modules are imported when a target of their kind is first checked, so `repbot check IP` loads no SMTP code.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from checks.context import CheckContext
from checks.dns.probe import ResolverHealth, probe_resolver, resolver_name
from checks.dns.resolver import run_deadline
from checks.errors import LookupFailed
from checks.i18n import _
from checks.model import Finding, Report, Status, Target

__all__ = [
    "CheckFn",
    "attempt",
    "check_plan",
    "check_target",
    "check_targets",
    "domain_checks",
    "ip_checks",
    "resolver_health",
    "run_checks",
    "target_checks",
    "unknown_finding",
]

log = logging.getLogger(__name__)

CheckFn = Callable[[Target, CheckContext], Awaitable[list[Finding]]]
T = TypeVar("T")

# A whole check may chain several dependent look-ups, each up to ctx.timeout.
CHECK_TIMEOUT_FACTOR = 6
# One probe of the resolver serves every target of a run (and the families that run at the same time).
RESOLVER_PROBE_TTL = timedelta(minutes=1)
#: The code of a finding that was not checked because the resolver failed its probe.
RESOLVER_LIES = "resolver-lies"
_PROBE_CACHE = "runner.resolver-health"
_PROBE_INFLIGHT = "runner.resolver-health.inflight"
# The queries the targets under way may ask at once, per query slot: two waves. An IP target counts one a
# blocklist zone and one a check besides; a domain counts one (its checks are chains of few queries that wait
# on SMTP and HTTPS more than on DNS). With the 200 slots that is ~22 IPs at a time: the wire stays full, and
# the next targets start as these end instead of queueing all of theirs up front. Started 400 at a time, a
# /24's 4,600 queries were built in one 70 ms burst while the wire sat idle after the first 200
# (bench/dnsbl_sweep.py); started all at once, a /20's last queries never left the queue in time.
QUEUED_PER_SLOT = 2
# Targets under way per query slot, at most, whatever their queries: domains ask few at once and wait on SMTP
# and HTTPS, so the query budget alone would start every domain of a run together.
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
    from checks.dnsbl import lookup as dnsbl

    async def reverse(target: Target, ctx: CheckContext) -> list[Finding]:
        from checks import mx  # not imported by `repbot check --only dnsbl`

        return [await mx.check_reverse(target.value, ctx)]

    return (("dnsbl", dnsbl.check_ip), ("ptr", reverse))


def target_checks(target: Target, only: Collection[str] = ()) -> tuple[tuple[str, CheckFn], ...]:
    """The checks of `target`'s kind; with `only`, those of them it names."""
    checks = ip_checks() if target.is_ip else domain_checks()
    return tuple(item for item in checks if item[0] in only) if only else checks


async def check_target(target: Target, ctx: CheckContext, only: Collection[str] = ()) -> Report:
    """The Report of every check of `target`'s kind (or of those `only` names)."""
    return await run_checks(target, ctx, target_checks(target, only))


async def check_targets(
    targets: Sequence[Target],
    ctx: CheckContext,
    on_done: Callable[[Report], None] | None = None,
    only: Collection[str] = (),
) -> list[Report]:
    """Reports for several targets, checked concurrently, in the order given (`only`: as `target_checks`)."""
    return await check_plan([(target, target_checks(target, only)) for target in targets], ctx, on_done)


async def check_plan(
    plan: Sequence[tuple[Target, Sequence[tuple[str, CheckFn]]]],
    ctx: CheckContext,
    on_done: Callable[[Report], None] | None = None,
    *,
    at_most: int | None = None,
) -> list[Report]:
    """The Report of each (target, its checks) of `plan`, in its order, started as the query budget allows.

    Targets start in order, each once its queries fit in `resolver.concurrency * QUEUED_PER_SLOT`, so every
    query slot stays busy while the queue stays short: each target's time limit counts from its own start.
    At most `at_most` targets are under way (`resolver.concurrency * TARGETS_PER_SLOT` if not given).
    """
    budget = _Budget(ctx.resolver.concurrency * QUEUED_PER_SLOT)
    under_way = asyncio.Semaphore(at_most or ctx.resolver.concurrency * TARGETS_PER_SLOT)

    async def one(target: Target, checks: Sequence[tuple[str, CheckFn]]) -> Report:
        units = _queries_at_once(target, checks, ctx)
        async with under_way:
            await budget.take(units)
            try:
                report = await run_checks(target, ctx, checks)
            finally:
                budget.give(units)
        if on_done is not None:
            on_done(report)
        return report

    return list(await asyncio.gather(*(one(target, checks) for target, checks in plan)))


def _queries_at_once(target: Target, checks: Sequence[tuple[str, CheckFn]], ctx: CheckContext) -> int:
    if not target.is_ip:
        return 1
    from checks.dnsbl.lookup import zones_for

    return sum(len(zones_for(target, ctx)) if name == "dnsbl" else 1 for name, _check in checks)


class _Budget:
    """Units shared by the targets of a run, handed out first come, first served (a target never overtakes).

    A target asking for more than the whole budget gets it all, and runs alone.
    """

    def __init__(self, units: int) -> None:
        self.total = units
        self.free = units
        self.waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def take(self, units: int) -> None:
        units = min(units, self.total)
        if not self.waiting and units <= self.free:
            self.free -= units
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append((units, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.give(units)  # granted, then cancelled before it could start: the units go back
            elif (units, turn) in self.waiting:  # a wake-up may already have dropped the cancelled turn
                self.waiting.remove((units, turn))
                self._wake()
            raise

    def give(self, units: int) -> None:
        self.free += min(units, self.total)
        self._wake()

    def _wake(self) -> None:
        while self.waiting and self.waiting[0][0] <= self.free:
            units, turn = self.waiting.popleft()
            if not turn.done():
                self.free -= units
                turn.set_result(None)


async def run_checks(target: Target, ctx: CheckContext, checks: Sequence[tuple[str, CheckFn]]) -> Report:
    """The Report of every check for `target`, all run concurrently; findings keep the order of `checks`.

    Every check rests on DNS, so when the resolver lies no check runs: each is `unknown`, naming the lie.
    """
    started = time.monotonic()
    health = _known_health(ctx)
    if health is None and not target.is_ip:
        # A domain's checks connect to what DNS names (its MX hosts, its MTA-STS host): not before the resolver
        # is known to tell the truth, or they would talk to the addresses a lying resolver made up.
        health = await resolver_health(ctx)
    if health is not None and not health.honest:
        return _lied_report(target, checks, health, ctx, started)
    work = asyncio.gather(*(_run_one(name, check, target, ctx) for name, check in checks))
    if health is None:
        # An IP's checks only ask DNS, so they start beside the probe, not after it: its round trip (100 ms on a
        # far resolver) is not added to every sweep. What they find waits for its verdict, dropped if it lied.
        try:
            health = await resolver_health(ctx)
        except BaseException:
            _abandon(work)
            raise
        if not health.honest:
            _abandon(work)
            return _lied_report(target, checks, health, ctx, started)
    results = await work
    findings = tuple(finding for result in results for finding in result)
    return Report(target, findings, duration=time.monotonic() - started)


def _abandon(work: asyncio.Future[Any]) -> None:
    """Cancel checks whose results nobody will read, and take their outcome when it comes.

    A cancelled gather ends with CancelledError set as its exception; unread, asyncio logged it as "exception
    was never retrieved", with a traceback, on the stderr of `repbot check` whenever the resolver lied.
    """
    work.cancel()
    work.add_done_callback(_read_outcome)


def _read_outcome(work: asyncio.Future[Any]) -> None:
    if not work.cancelled():
        work.exception()


def _lied_report(
    target: Target, checks: Sequence[tuple[str, CheckFn]], health: ResolverHealth, ctx: CheckContext, started: float
) -> Report:
    lied = tuple(_lied(name, target, health, ctx) for name, _fn in checks)
    return Report(target, lied, duration=time.monotonic() - started)


async def _run_one(name: str, check: CheckFn, target: Target, ctx: CheckContext) -> list[Finding]:
    budget = ctx.timeout * CHECK_TIMEOUT_FACTOR
    # A query still queued behind the in-flight limit one timeout before the end is not sent, and says so:
    # the check reports "not sent", not a server's timeout; a try already on the wire may finish.
    outcome = await attempt(name, target.value, _by(budget - ctx.timeout, check(target, ctx)), ctx, timeout=budget)
    return [outcome] if isinstance(outcome, Finding) else outcome


async def _by(seconds: float, work: Awaitable[T]) -> T:
    with run_deadline(seconds):
        return await work


async def attempt(
    check: str, subject: str, work: Awaitable[T], ctx: CheckContext, *, timeout: float | None = None
) -> T | Finding:
    """What `work` returns, or the `unknown` Finding that says why it could not: the one place errors become values.

    A LookupFailed keeps its code and its fields as evidence; a timeout is `timeout`; any other exception is a
    bug, logged with its traceback, and `internal-error` (it must not hide the other checks' findings, nor pass
    as ok). Provider and canary jobs call this too, so their failures read like every other check's.
    """
    try:
        async with asyncio.timeout(timeout):
            return await work
    except LookupFailed as error:
        summary = _("could not check: {error}").format(error=error)
        return unknown_finding(check, subject, summary, error.code, ctx, error.evidence())
    except TimeoutError:
        summary = _("could not check: no result within {seconds} s").format(seconds=f"{timeout:.0f}")
        return unknown_finding(check, subject, summary, "timeout", ctx, {"timeout": timeout})
    except Exception:
        log.exception("check %s failed on %s", check, subject)
        summary = _("internal error in this check, see the logs")
        return unknown_finding(check, subject, summary, "internal-error", ctx)


def unknown_finding(
    check: str, subject: str, summary: str, code: str, ctx: CheckContext, evidence: Mapping[str, Any] | None = None
) -> Finding:
    """An `unknown` Finding observed now."""
    return Finding(check, subject, Status.UNKNOWN, summary, dict(evidence or {}), code=code, observed_at=ctx.clock())


async def resolver_health(ctx: CheckContext) -> ResolverHealth:
    """The resolver's probe, shared by the checks of the last minute and by those asking at the same time."""
    known = _known_health(ctx)
    if known is not None:
        return known
    key = resolver_name(ctx.resolver)
    per_loop = ctx.caches.setdefault(_PROBE_INFLIGHT, weakref.WeakKeyDictionary())
    inflight: dict[str, asyncio.Task[ResolverHealth]] = per_loop.setdefault(asyncio.get_running_loop(), {})
    task = inflight.get(key)
    if task is None:
        task = inflight[key] = asyncio.ensure_future(_probe_and_keep(ctx, key))
        task.add_done_callback(lambda _: inflight.pop(key, None))
    return await asyncio.shield(task)


def _known_health(ctx: CheckContext) -> ResolverHealth | None:
    """The probe's verdict of the last minute, if there is one."""
    cached = ctx.caches.get(_PROBE_CACHE)
    if cached is not None and cached[0] == resolver_name(ctx.resolver) and cached[1] > ctx.clock():
        health: ResolverHealth = cached[2]
        return health
    return None


async def _probe_and_keep(ctx: CheckContext, key: str) -> ResolverHealth:
    try:
        async with asyncio.timeout(max(ctx.timeout, 0.1) * 2):
            health = await probe_resolver(ctx.resolver)
    except TimeoutError:
        # A resolver that does not answer is not lying: each check will say it could not look up.
        health = ResolverHealth(key, (), {"probe": "no answer in time"})
    ctx.caches[_PROBE_CACHE] = (key, ctx.clock() + RESOLVER_PROBE_TTL, health)
    return health


def _lied(name: str, target: Target, health: ResolverHealth, ctx: CheckContext) -> Finding:
    evidence = {"resolver": health.resolver, "lies": list(health.lies), "probes": dict(health.evidence)}
    advice = _(
        "Point repbot at a resolver that answers truthfully (a local validating resolver such as unbound, "
        "or set [dns] nameservers); captive portals, filtering resolvers and some forwarders rewrite answers."
    )
    summary = _("cannot check: {problem}").format(problem=health.problem())
    return Finding(name, target.value, Status.UNKNOWN, summary, evidence, advice, RESOLVER_LIES, ctx.clock())
