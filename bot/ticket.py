"""Gathering the facts of a delisting request (`checks.ticket.TicketFacts`) from what repbot can see now.

Each source is asked at once: DNS (PTR, blocklists, the domain's SPF/DKIM/DMARC/MTA-STS/TLS), SNDS when
configured, the canary history and the complaint journal in the state directory. A source that is absent or
fails gives a `Missing` with the reason; nothing is filled in by guess. The wording is `checks.ticket`'s.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config.loader import Config
from bot.i18n import SOURCE_LANGUAGE, _, active_language, use_language
from bot.monitor.canary import HISTORY
from bot.monitor.providers import JOURNAL_FILE, snds_reports
from bot.monitor.store import Store
from checks import CheckContext, Finding, Status, parse_target
from checks.canary.ndr import provider_family
from checks.providers import feedback
from checks.runner import domain_checks, ip_checks, run_checks
from checks.ticket import FAMILY, AuthPassRates, DailyVolume, Fact, Missing, TicketFacts

__all__ = ["AUTH_CHECKS", "desk_note", "gather"]

AUTH_CHECKS = ("spf", "dkim", "dmarc", "mta-sts", "mx-tls")
REFUSED = ("bounced", "deferred", "not-sent")
KEEP = 5  # the latest canaries per kind: a desk reads the recent ones


def _fact(finding: Finding, source: str = "") -> Fact:
    said = finding.summary if finding.status is not Status.UNKNOWN else f"could not be checked: {finding.summary}"
    return Fact(said, finding.observed_at, source)


async def _ip_facts(ip: str, ctx: CheckContext) -> tuple[tuple[Fact, ...], tuple[Fact, ...]]:
    """The PTR, and the blocklists (each listing, then how many others were clean)."""
    report = await run_checks(parse_target(ip), ctx, ip_checks())
    ptr = tuple(_fact(f, "DNS") for f in report.findings if f.check == "ptr")
    lists = [f for f in report.findings if f.check == "dnsbl"]
    facts = tuple(_fact(f, "DNS") for f in lists if f.status in (Status.WARN, Status.FAIL))
    clean = [f for f in lists if f.status is Status.OK]
    if clean:
        when = max(f.observed_at for f in clean)
        facts += (Fact(f"not listed on the {len(clean)} other blocklists checked", when, "DNS"),)
    unknown = [f for f in lists if f.status is Status.UNKNOWN]
    if unknown:  # a zone that did not answer says nothing either way: named, never counted as clean
        when = max(f.observed_at for f in unknown)
        names = ", ".join(f.subject for f in unknown)
        facts += (Fact(f"{len(unknown)} blocklists could not be checked: {names}", when, "DNS"),)
    return ptr, facts


async def _auth_facts(domains: Sequence[str], ctx: CheckContext) -> tuple[Fact, ...] | Missing:
    if not domains:
        return Missing("no domain configured in [monitor] domains")
    checks = [(name, fn) for name, fn in domain_checks() if name in AUTH_CHECKS]
    reports = await asyncio.gather(*(run_checks(parse_target(d), ctx, checks) for d in domains))
    return tuple(
        Fact(f"{report.target.value} {f.check}: {_fact(f).text}", f.observed_at, "DNS")
        for report in reports
        for f in report.findings
    )


async def _helo_facts(names: Sequence[str], ip: str, ctx: CheckContext) -> tuple[Fact, ...]:
    """The configured HELO names, each with whether it resolves to the IP (desks check that it does)."""
    kind = "AAAA" if ":" in ip else "A"
    answers = await asyncio.gather(*(ctx.resolver.query(name, kind) for name in names))
    facts = []
    for name, answer in zip(names, answers, strict=True):
        found = sorted({ipaddress.ip_address(r).compressed for r in answer.records}) if answer.ok else []
        if answer.failed:
            said = f"could not be resolved ({answer.describe()})"
        elif ip in found:
            said = f"resolves to {ip}"
        else:
            said = f"does not resolve to {ip} ({', '.join(found) or 'no address'})"
        facts.append(Fact(f"{name} (configured in [monitor] helo_names) {said}", ctx.clock(), "DNS"))
    return tuple(facts)


def _canary_facts(store: Store | None, family: str) -> tuple[tuple[Fact, ...] | Missing, tuple[Fact, ...] | Missing]:
    """The refusals (the exact lines) and the accepted-then-missing canaries, to this provider's seeds."""
    if store is None:
        return Missing("no state directory with canary results"), Missing("no state directory with canary results")
    history: Mapping[str, list[dict[str, Any]]] = store.get_meta(HISTORY, {}) or {}
    mine = [e for name, entries in history.items() if provider_family(name) == family for e in entries]
    if not mine:
        reason = f"no canary to a {family} mailbox has a result yet"
        return Missing(reason), Missing(reason)
    refused: list[Fact] = []
    for entry in [e for e in mine if e.get("kind") in REFUSED][-KEEP:]:
        at = datetime.fromisoformat(entry["at"])
        where = f"canary to {entry['canary']['seed']}"
        refused += [Fact(line, at, where) for line in entry.get("lines") or [entry["summary"]]]
    dropped: list[Fact] = []
    for entry in [e for e in mine if e.get("kind") == "missing-accepted"][-KEEP:]:
        canary = entry["canary"]
        text = (
            f"message {canary['message_id']} (token {canary['token']}) sent {canary['sent_at']} to "
            f"{canary['seed']}: {entry['summary']}"
        )
        dropped.append(Fact(text, datetime.fromisoformat(entry["at"]), "canary"))
        dropped += [Fact(f"log: {line}", datetime.fromisoformat(entry["at"]), "canary") for line in entry["lines"]]
    return tuple(refused), tuple(dropped)


async def _snds_facts(config: Config, ctx: CheckContext, ip: str) -> tuple[tuple[Fact, ...] | Missing, Fact | None]:
    """The SNDS colour, complaint rate, traps and block status of the IP; and its HELO as SNDS saw it."""
    if config.snds is None:
        return Missing("no [snds] section configured"), None
    findings = [f for r in await snds_reports(config, ctx, ip) for f in r.findings]
    facts = []
    helo = None
    for f in findings:
        if f.subject in ("SNDS key", "SNDS attestation"):
            continue
        day = f.evidence.get("day")
        when: date | datetime = date.fromisoformat(day) if day else f.observed_at
        facts.append(Fact(_fact(f).text, when, "SNDS"))
        if f.evidence.get("helo") and helo is None:
            helo = Fact(f"{f.evidence['helo']} (the sample HELO SNDS recorded)", when, "SNDS")
    return tuple(facts), helo


def _complaint_facts(config: Config, ip: str, family: str, now: datetime) -> tuple[Fact, ...] | Missing:
    if config.feedback is None:
        return Missing("no [feedback] section configured")
    days = config.feedback.window_days
    journal = feedback.JsonlJournal(Path(config.state_dir) / JOURNAL_FILE)
    recent = [
        c
        for c in journal.complaints(now - timedelta(days=days))
        if provider_family(c.reporter) == family and c.source_ip in ("", ip)
    ]
    counts = Counter((c.arrived.date(), c.sending_domain or "unknown domain") for c in recent)
    if not counts:
        return (Fact(f"no complaints from {family} in the last {days} days", now, "feedback loop"),)
    return tuple(
        Fact(f"{n} complaint{'s' if n != 1 else ''} about mail from {domain}", day, "feedback loop")
        for (day, domain), n in sorted(counts.items())
    )


async def gather(config: Config, ctx: CheckContext, provider: str, ip: str, store: Store | None) -> TicketFacts:
    """Every fact repbot can state now about `ip` for a request to `provider` (a checks.ticket provider).

    In English whatever the operator speaks (the checks' summaries and DNS outcomes too): the request is pasted
    to a provider's desk, and the desks read English. `desk_note()` tells the operator so.
    """
    with use_language(SOURCE_LANGUAGE):
        return await _gather(config, ctx, provider, ip, store)


def desk_note() -> str:
    """Why the request is in English, for an operator who reads another language ("" in English)."""
    if active_language() == SOURCE_LANGUAGE:
        return ""
    return _("The request stays in English: it is for the provider's desk, which reads English.")


async def _gather(config: Config, ctx: CheckContext, provider: str, ip: str, store: Store | None) -> TicketFacts:
    family = FAMILY[provider]
    domains = tuple(config.monitor.domains)
    (ptr, lists), auth, (snds, sampled), helo = await asyncio.gather(
        _ip_facts(ip, ctx),
        _auth_facts(domains, ctx),
        _snds_facts(config, ctx, ip) if family == "microsoft" else _no_snds(),
        _helo_facts(config.monitor.helo_names, ip, ctx),
    )
    helo += (sampled,) if sampled else ()
    refused, dropped = _canary_facts(store, family)
    now = ctx.clock()
    return TicketFacts(
        provider=provider,
        ip=ip,
        domains=domains,
        generated_at=now,
        ptr=ptr or Missing("the PTR look-up gave nothing"),
        helo=helo or Missing("not known: set [monitor] helo_names, or SNDS shows a sample HELO once it has data"),
        rejections=refused,
        silent_drops=dropped,
        snds=snds,
        complaints=_complaint_facts(config, ip, family, now),
        auth_rates=await asyncio.to_thread(_auth_rates, config, ip, family, now),
        volume=await asyncio.to_thread(_volume, config, family, now),
        blocklists=lists,
        auth_setup=auth,
    )


async def _no_snds() -> tuple[Missing, None]:
    return Missing("SNDS is Microsoft's"), None


REPORT_DAYS = 14  # how far back the pass rates and the daily volume go
# The traffic families that make up each ticket family (Microsoft's consumer and 365 mail are one provider here).
TRAFFIC_FAMILIES = {"microsoft": ("microsoft-consumer", "microsoft365"), "google": ("google",), "yahoo": ("yahoo",)}


def _auth_rates(config: Config, ip: str, family: str, now: datetime) -> tuple[AuthPassRates, ...] | Missing:
    """The provider's own count of `ip`'s mail and how it authenticated, per reporter, from the report store."""
    if config.reports is None:
        return Missing("no [reports] mailbox is configured (see docs/reports.md)")
    from bot.config.reports import store_path
    from checks.reports.store import ReportStore

    path = store_path(config)
    if not path.exists():
        return Missing("no DMARC aggregate report has been read yet")
    store = ReportStore(path)
    try:
        rows = [r for r in store.dmarc_rows(now.date() - timedelta(days=REPORT_DAYS)) if r.source_ip == ip]
    finally:
        store.close()
    by_reporter: dict[str, list[Any]] = {}
    for row in rows:
        if row.provider == family:
            by_reporter.setdefault(row.reporter_key, []).append(row)
    rates = []
    for reporter, mine in sorted(by_reporter.items()):
        total = sum(r.count for r in mine)
        if total:
            rates.append(AuthPassRates(
                reporter, min(r.day for r in mine), max(r.day for r in mine), total,
                dmarc=sum(r.count for r in mine if r.passed) / total,
                spf=sum(r.count for r in mine if r.spf == "pass") / total,
                dkim=sum(r.count for r in mine if r.dkim == "pass") / total,
            ))  # fmt: skip
    return tuple(rates)


def _volume(config: Config, family: str, now: datetime) -> tuple[DailyVolume, ...] | Missing:
    """Each day's delivery attempts to the provider, from the MTA log the bot follows."""
    if config.traffic is None:
        return Missing("the MTA log is not followed: add a [traffic] section (see docs/traffic.md)")
    from bot.monitor.traffic import stored_tally

    tally = stored_tally(config)
    if tally is None:
        return Missing("the MTA log has not been read yet")
    keys = TRAFFIC_FAMILIES.get(family, (family,))
    days = []
    for offset in range(REPORT_DAYS, -1, -1):
        day = (now.date() - timedelta(days=offset)).isoformat()
        rows = [s for s in tally.summaries(since=day, until=day) if s.provider in keys]
        if any(s.attempts for s in rows):
            days.append(DailyVolume(
                date.fromisoformat(day), family, sum(s.sent for s in rows), sum(s.deferred for s in rows),
                sum(s.bounced + s.expired for s in rows),
            ))  # fmt: skip
    return tuple(days)
