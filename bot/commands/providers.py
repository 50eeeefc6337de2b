"""`!snds [IP]` and `!complaints [days]`; their jobs are in `bot.monitor.providers`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.commands.registry import Argument, Call, command, days_arg, ip_arg
from bot.config.providers import feedback_settings
from bot.i18n import N_, _
from bot.monitor.providers import JOURNAL_FILE, collect_complaints, snds_reports
from bot.render import Rendered, complaints_text, matrix_report, plain_and_html, pre
from checks import Finding
from checks.providers import feedback
from checks.runner import attempt

__all__ = ["complaints_command", "snds_command"]

MAX_DAYS = 90


@command(
    "snds",
    help=N_("Microsoft SNDS: colour, complaints, trap hits and block status"),
    args=[Argument("ip", ip_arg, required=False)],
    costly=True,
)
async def snds_command(call: Call) -> Rendered:
    reports = await snds_reports(call.services.config, call.services.ctx, call.args.get("ip"))
    if not reports:
        return plain_and_html(_("SNDS is not configured: add an [snds] section (see docs/providers.md)"))
    return matrix_report(reports)


@command(
    "complaints",
    help=N_("complaints from the feedback loops, per day and per domain"),
    args=[Argument("days", days_arg(MAX_DAYS), required=False)],
)
async def complaints_command(call: Call) -> Rendered:
    config, ctx = call.services.config, call.services.ctx
    settings = feedback_settings(config, ctx)
    if settings is None:
        return plain_and_html(_("no feedback mailbox is configured: add a [feedback] section (see docs/providers.md)"))
    days = call.args.get("days") or 7
    journal = feedback.JsonlJournal(Path(config.state_dir) / JOURNAL_FILE)
    # Collect first, so that reports waiting in the mailbox count before the first scheduled run.
    collected = await attempt("complaints", "feedback mailbox", collect_complaints(settings, journal, ctx.clock()), ctx)
    unread = (
        _("the feedback mailbox cannot be read now: {reason}").format(reason=collected.summary)
        if isinstance(collected, Finding)
        else ""
    )
    recent = journal.complaints(ctx.clock() - timedelta(days=days))
    if not recent and unread and not journal.path.exists():
        return plain_and_html(_("nothing has been collected yet: {reason}").format(reason=unread))
    return pre(complaints_text(recent, days, unread))
