"""`!snds [IP]` and `!complaints [days]`, and the monitor families for `[schedule] snds` and `complaints`."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from checks import CheckContext, Finding, Report, feedback, parse_target, snds
from checks.model import Target, TargetKind

from .commands import Argument, Call, command, ip_arg
from .config import Config
from .monitor import FAMILY_BUILDERS, FamilyRun
from .provider_config import feedback_settings, snds_settings
from .render import Rendered, matrix_report, plain_and_html

__all__ = ["JOURNAL_FILE", "complaints_reports", "snds_reports"]

JOURNAL_FILE = "complaints.jsonl"
MAX_DAYS = 90


def _days(text: str) -> int:
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
    """Collect new reports from the feedback mailbox; one Report per sending domain."""
    settings = feedback_settings(config, ctx)
    if settings is None:
        return []
    journal = feedback.JsonlJournal(Path(config.state_dir) / JOURNAL_FILE)
    now = ctx.clock()
    result = await feedback.collect(settings, journal, now)
    recent = journal.complaints(now - timedelta(days=settings.window_days))
    findings = feedback.findings_for_complaints(result.new, recent, config.monitor.domains, settings.window_days, now)
    by_domain: dict[str, list[Finding]] = {}
    for finding in findings:
        domain = str(finding.evidence.get("sending_domain", finding.subject))
        by_domain.setdefault(domain, []).append(finding)
    return [Report(Target(TargetKind.DOMAIN, domain or "unknown"), tuple(items)) for domain, items in by_domain.items()]


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
    config = call.services.config
    if config.extra.get("feedback") is None:
        return plain_and_html("no feedback mailbox is configured: add a [feedback] section (see docs/providers.md)")
    days = call.args.get("days") or 7
    journal = feedback.JsonlJournal(Path(config.state_dir) / JOURNAL_FILE)
    recent = journal.complaints(call.services.ctx.clock() - timedelta(days=days))
    if not recent:
        return plain_and_html(f"no complaints in the last {days} days")
    lines = [f"{len(recent)} complaints in the last {days} days"]
    lines += [f"  {day}: {n}" for day, n in sorted(feedback.count_by(recent, "day").items())]
    lines += [f"  {domain}: {n}" for domain, n in feedback.count_by(recent, "domain").most_common()]
    lines += [feedback.complaint_line(c) for c in recent[-10:]]
    text = "\n".join(lines)
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


def _snds_family(config: Config) -> FamilyRun | None:
    if config.extra.get("snds") is None:
        return None

    async def run(ctx: CheckContext) -> list[Report]:
        return await snds_reports(config, ctx)

    return run


def _complaints_family(config: Config) -> FamilyRun | None:
    if config.extra.get("feedback") is None:
        return None

    async def run(ctx: CheckContext) -> list[Report]:
        return await complaints_reports(config, ctx)

    return run


FAMILY_BUILDERS.update(snds=_snds_family, complaints=_complaints_family)
