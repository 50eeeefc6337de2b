"""The monitor families `snds`, `complaints` and `postmaster`, and the reports `!snds` shows.

Each family runs only when its section is configured. Complaints reach the room through the per-domain
finding (see `checks.providers.feedback.findings_for_complaints`): one state per sending domain, news when it changes.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from bot.config.loader import Config
from bot.config.providers import feedback_settings, postmaster_settings, snds_settings
from bot.monitor.core import FamilyRun
from checks import CheckContext, Finding, Report, parse_target
from checks.model import Target, TargetKind
from checks.providers import feedback, postmaster, snds
from checks.runner import attempt

__all__ = ["JOURNAL_FILE", "complaints_reports", "postmaster_reports", "provider_families", "snds_reports"]

log = logging.getLogger("repbot.providers")

JOURNAL_FILE = "complaints.jsonl"


async def snds_reports(config: Config, ctx: CheckContext, ip: str | None = None) -> list[Report]:
    """One Report per IP (findings grouped by the IP they name); empty without [snds]."""
    settings = snds_settings(config, ctx)
    if settings is None:
        return []
    outcome = await attempt("snds", "SNDS", snds.check(settings, ctx, ip), ctx)
    findings = [outcome] if isinstance(outcome, Finding) else outcome
    return _group(findings, settings.ips if ip is None else (ip,))


def _group(findings: Sequence[Finding], ips: Sequence[str]) -> list[Report]:
    reports = []
    for address in ips:
        mine = tuple(f for f in findings if f.subject.split()[0] == address or f.subject.startswith("SNDS"))
        reports.append(Report(parse_target(address), mine))
    return reports


# One collection at a time per event loop: the monitor's run and !complaints must not both mark a report.
_COLLECTING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def collect_complaints(
    settings: feedback.FeedbackSettings, journal: feedback.JsonlJournal, now: datetime
) -> feedback.CollectResult:
    """Read new complaint reports into the journal, one collection at a time."""
    lock = _COLLECTING.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        return await feedback.collect(settings, journal, now)


async def complaints_reports(config: Config, ctx: CheckContext) -> list[Report]:
    """Collect new reports from the feedback mailbox; one Report per sending domain, from the journal.

    When the mailbox cannot be read, the journal still gives the counts, and an `unknown` finding on the
    mailbox says why (the monitor speaks of it only after `unknown_after`).
    """
    settings = feedback_settings(config, ctx)
    if settings is None:
        return []
    journal = feedback.JsonlJournal(Path(config.state_dir) / JOURNAL_FILE)
    now = ctx.clock()
    collected = await attempt("complaints", "feedback mailbox", collect_complaints(settings, journal, now), ctx)
    failure = collected if isinstance(collected, Finding) else None
    if failure is not None:
        log.warning("feedback mailbox %s: %s", settings.mailbox.host, failure.summary)
    new = [] if isinstance(collected, Finding) else collected.new
    recent = journal.complaints(now - timedelta(days=settings.window_days))
    findings = feedback.findings_for_complaints(new, recent, config.monitor.domains, settings.window_days, now)
    reports = [Report(Target(TargetKind.DOMAIN, f.subject), (f,)) for f in findings]
    if failure is not None:
        reports.append(Report(Target(TargetKind.DOMAIN, settings.mailbox.host), (failure,)))
    return reports


async def postmaster_reports(config: Config, ctx: CheckContext) -> list[Report]:
    """Google Postmaster Tools findings, one Report per domain; empty without [postmaster]."""
    settings = postmaster_settings(config, ctx)
    if settings is None:
        return []
    outcome = await attempt("postmaster", "postmaster", postmaster.check(settings, ctx), ctx)
    if isinstance(outcome, Finding):  # one reason, said for each domain, as each has its own state
        findings = [replace(outcome, subject=f"{domain} postmaster") for domain in settings.domains]
    else:
        findings = outcome
    by_domain: dict[str, list[Finding]] = {}
    for finding in findings:
        by_domain.setdefault(finding.subject.split()[0], []).append(finding)
    return [Report(Target(TargetKind.DOMAIN, domain), tuple(items)) for domain, items in by_domain.items()]


def provider_families(config: Config) -> dict[str, FamilyRun]:
    """The provider jobs this config enables, by family name: a section that is absent enables none."""
    runs: dict[str, Callable[[Config, CheckContext], Awaitable[list[Report]]]] = {}
    if config.snds is not None:
        runs["snds"] = snds_reports
    if config.feedback is not None:
        runs["complaints"] = complaints_reports
    if config.postmaster is not None:
        runs["postmaster"] = postmaster_reports
    if config.reports is not None:
        from bot.monitor.reports import reports_reports

        runs["reports"] = reports_reports
    return {name: _bound(config, reports) for name, reports in runs.items()}


def _bound(config: Config, reports: Callable[[Config, CheckContext], Awaitable[list[Report]]]) -> FamilyRun:
    async def run(ctx: CheckContext) -> list[Report]:
        return await reports(config, ctx)

    return run


def digest_lines(config: Config, now: datetime) -> list[str]:
    """What the optional sections add to the daily digest: yesterday's DMARC and TLS report totals, and
    yesterday's outbound mail per provider."""
    lines: list[str | None] = []
    if config.reports is not None:
        from bot.monitor.reports import digest_line

        lines.append(digest_line(config, now))
    if config.traffic is not None:
        from bot.monitor.traffic import digest_lines as traffic_lines

        lines.extend(traffic_lines(config, now))
    return [line for line in lines if line]
