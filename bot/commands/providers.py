"""`!snds [IP]` and `!complaints [days]`, and the monitor families `snds`, `complaints` and `postmaster`.

Each family runs only when its section is configured. Complaints reach the room through the per-domain
finding (see `checks.providers.feedback.findings_for_complaints`): one state per sending domain, news when it changes.
"""

from __future__ import annotations

import asyncio
import html
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from bot.commands.core import Argument, Call, command, ip_arg
from bot.config.loader import Config, SecretError
from bot.config.providers import feedback_settings, postmaster_settings, snds_settings
from bot.monitor.core import FAMILY_BUILDERS, FamilyRun
from bot.render import Rendered, matrix_report, plain_and_html
from checks import CheckContext, Finding, Report, Status, parse_target
from checks.mailbox import MailboxError
from checks.model import Target, TargetKind
from checks.providers import feedback, postmaster, snds

__all__ = ["JOURNAL_FILE", "complaints_reports", "postmaster_reports", "snds_reports"]

log = logging.getLogger("repbot.providers")
FamilyBuilder = Callable[[Config], FamilyRun | None]

JOURNAL_FILE = "complaints.jsonl"
MAX_DAYS = 90
# One collection at a time per event loop: the monitor's run and !complaints must not both mark a report.
_COLLECTING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _collect(
    settings: feedback.FeedbackSettings, journal: feedback.JsonlJournal, now: datetime
) -> list[feedback.Complaint]:
    lock = _COLLECTING.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        return (await feedback.collect(settings, journal, now)).new


def _days(text: str) -> int:
    if not text.isdecimal():
        raise ValueError(f"{text[:20]!r} is not a number of days")
    value = int(text)
    if not 1 <= value <= MAX_DAYS:
        raise ValueError(f"give 1 to {MAX_DAYS} days")
    return value


async def snds_reports(config: Config, ctx: CheckContext, ip: str | None = None) -> list[Report]:
    """One Report per IP (findings grouped by the IP they name); empty without [snds]."""
    settings = snds_settings(config, ctx)
    if settings is None:
        return []
    findings = await snds.check(settings, ctx, ip)
    return _group(findings, settings.ips if ip is None else (ip,))


def _group(findings: Sequence[Finding], ips: Sequence[str]) -> list[Report]:
    reports = []
    for address in ips:
        mine = tuple(f for f in findings if f.subject.split()[0] == address or f.subject.startswith("SNDS"))
        reports.append(Report(parse_target(address), mine))
    return reports


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
    new: list[feedback.Complaint] = []
    failure: Finding | None = None
    try:
        new = await _collect(settings, journal, now)
    except (MailboxError, SecretError) as error:
        log.warning("feedback mailbox %s: %s", settings.mailbox.host, error)
        summary = f"cannot read the feedback mailbox: {error}"
        failure = Finding(
            "complaints", "feedback mailbox", Status.UNKNOWN, summary, {}, code="mailbox", observed_at=now
        )
    recent = journal.complaints(now - timedelta(days=settings.window_days))
    findings = feedback.findings_for_complaints(new, recent, config.monitor.domains, settings.window_days, now)
    reports = [Report(Target(TargetKind.DOMAIN, f.subject), (f,)) for f in findings]
    if failure is not None:
        reports.append(Report(Target(TargetKind.DOMAIN, settings.mailbox.host), (failure,)))
    return reports


async def postmaster_reports(config: Config, ctx: CheckContext) -> list[Report]:
    """Google Postmaster Tools findings, one Report per domain; empty without [postmaster]."""
    settings = postmaster_settings(config)
    if settings is None:
        return []
    now = ctx.clock()
    try:
        findings = await postmaster.check(settings, ctx)
    except SecretError as error:
        log.warning("postmaster: %s", error)
        summary = f"no Postmaster Tools token: {error}"
        findings = [
            Finding("postmaster", f"{d} postmaster", Status.UNKNOWN, summary, code="postmaster-token", observed_at=now)
            for d in settings.domains
        ]
    by_domain: dict[str, list[Finding]] = {}
    for finding in findings:
        by_domain.setdefault(finding.subject.split()[0], []).append(finding)
    return [Report(Target(TargetKind.DOMAIN, domain), tuple(items)) for domain, items in by_domain.items()]


@command(
    "snds",
    help="Microsoft SNDS: colour, complaints, trap hits and block status",
    args=[Argument("ip", ip_arg, required=False)],
    costly=True,
)
async def snds_command(call: Call) -> Rendered:
    reports = await snds_reports(call.services.config, call.services.ctx, call.args.get("ip"))
    if not reports:
        return plain_and_html("SNDS is not configured: add an [snds] section (see docs/providers.md)")
    return matrix_report(reports)


@command(
    "complaints",
    help="complaints from the feedback loops, per day and per domain",
    args=[Argument("days", _days, required=False)],
)
async def complaints_command(call: Call) -> Rendered:
    config, ctx = call.services.config, call.services.ctx
    settings = feedback_settings(config, ctx) if config.extra.get("feedback") is not None else None
    if settings is None:
        return plain_and_html("no feedback mailbox is configured: add a [feedback] section (see docs/providers.md)")
    days = call.args.get("days") or 7
    journal = feedback.JsonlJournal(Path(config.state_dir) / JOURNAL_FILE)
    # Collect first, so that reports waiting in the mailbox count before the first scheduled run.
    unread = ""
    try:
        await _collect(settings, journal, ctx.clock())
    except (MailboxError, SecretError) as error:
        log.warning("feedback mailbox %s: %s", settings.mailbox.host, error)
        unread = f"the feedback mailbox cannot be read now: {error}"
    recent = journal.complaints(ctx.clock() - timedelta(days=days))
    if not recent and unread and not journal.path.exists():
        return plain_and_html(f"nothing has been collected yet: {unread}")
    if not recent:
        return plain_and_html(f"no complaints in the last {days} days" + (f" ({unread})" if unread else ""))
    lines = [f"{len(recent)} complaints in the last {days} days" + (f" ({unread})" if unread else "")]
    lines += [f"  {day}: {n}" for day, n in sorted(feedback.count_by(recent, "day").items())]
    lines += [f"  {domain}: {n}" for domain, n in feedback.count_by(recent, "domain").most_common()]
    lines += [feedback.complaint_line(c) for c in recent[-10:]]
    text = "\n".join(lines)
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


def _family(section: str, reports: Callable[[Config, CheckContext], Awaitable[list[Report]]]) -> FamilyBuilder:
    """A FAMILY_BUILDERS entry: the run for this config, or None when `[section]` is absent."""

    def build(config: Config) -> FamilyRun | None:
        if config.extra.get(section) is None:
            return None

        async def run(ctx: CheckContext) -> list[Report]:
            return await reports(config, ctx)

        return run

    return build


async def _snds_job(config: Config, ctx: CheckContext) -> list[Report]:
    return await snds_reports(config, ctx)


FAMILY_BUILDERS.update(
    snds=_family("snds", _snds_job),
    complaints=_family("feedback", complaints_reports),
    postmaster=_family("postmaster", postmaster_reports),
)
