"""What the operator's real mail says: `!traffic [PROVIDER] [DAYS]`, and the words `repbot traffic` shares.

The follower (`bot.monitor.traffic`) runs while the bot runs when [traffic] is configured, and feeds the
monitor. The same words serve `!traffic` and `repbot traffic --log FILE...` (`summary_text`, `summary_json`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.commands.registry import Argument, Call, Services, command
from bot.i18n import N_, _, number
from bot.monitor.canary import HISTORY, stored_verdicts
from bot.monitor.traffic import SMARTHOST_NOTE, TrafficFollower, provider_join, seed_provider
from bot.render import Rendered, plain_and_html
from checks.traffic.providers import LOCAL, SMARTHOST, Families
from checks.traffic.tally import ProviderSummary, Tally

__all__ = ["SMARTHOST_NOTE", "summary_json", "summary_text", "traffic_command"]

MAX_DAYS = 35
TOP_REPLIES = 3
SINCE_START = N_(" since the log was first followed")


# -- words -----------------------------------------------------------------------------------------------------


def _provider_lines(summary: ProviderSummary, replies: int) -> list[str]:
    if summary.provider == SMARTHOST:
        counts = _counts(summary)
        return [_("smarthost: {counts} — these {note}").format(counts=counts, note=_(SMARTHOST_NOTE))]
    expired = _(", {count} expired").format(count=number(summary.expired)) if summary.expired else ""
    # The shipped names are in the catalog ("Microsoft 365 tenants" has words); a configured one stays as written.
    head = f"{_(summary.name)}: {_counts(summary)}{expired}"
    lines = [head]
    for reply in summary.replies[:replies]:
        meaning = f" — {reply.said()}" if reply.explanation else ""
        lines.append(f"    {reply.code} ×{reply.count}{meaning}")
    return lines


def _counts(summary: ProviderSummary) -> str:
    return _("{sent} sent, {deferred} deferred, {bounced} bounced").format(
        sent=number(summary.sent), deferred=number(summary.deferred), bounced=number(summary.bounced)
    )


def summary_text(
    summaries: Sequence[ProviderSummary],
    lines: int,
    skipped: dict[str, int],
    title: str,
    replies: int = TOP_REPLIES,
    lines_note: str = "",
) -> str:
    """The per-provider table: counts, the top replies explained, and what was skipped."""
    out = [title]
    shown = [s for s in summaries if s.provider != LOCAL]
    if not shown:
        out.append(_("no outbound delivery attempts in the log"))
    for summary in shown:
        out.extend(_provider_lines(summary, replies))
    local = next((s for s in summaries if s.provider == LOCAL), None)
    if local is not None:
        local_text = _("local deliveries (mailboxes, filters): {sent} sent, {deferred} deferred")
        out.append(local_text.format(sent=number(local.sent), deferred=number(local.deferred)))
    why = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()) if count)
    read = _("{lines} lines read{note}, {skipped} skipped").format(
        lines=number(lines), note=lines_note, skipped=number(sum(skipped.values()))
    )
    out.append(read + (f" ({why})" if why else ""))
    return "\n".join(out)


def summary_json(tally: Tally) -> str:
    """The offline summary as JSON: providers (provider, sent, deferred, bounced, replies...), lines, skipped."""
    data = {
        "providers": [summary.to_json() for summary in tally.summaries(include_local=True)],
        "lines": tally.lines,
        "skipped": sum(tally.skipped.values()),
        "skipped_by_reason": dict(tally.skipped),
        "domains": {domain: dict(counts) for domain, counts in sorted(tally.domains.items())},
    }
    return json.dumps(data, indent=2, sort_keys=False)


def _pre(text: str) -> Rendered:
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


# -- the command ------------------------------------------------------------------------------------------


def _match(families: Families, wanted: str, known: Sequence[str]) -> str | None:
    lowered = wanted.lower()
    for key in known:
        if key == lowered:
            return key
    return next((key for key in known if lowered in key or lowered in families.name(key).lower()), None)


def _args(call: Call) -> tuple[str | None, int]:
    words = [w for w in (call.args.get("provider"), call.args.get("days")) if w]
    days = next((int(w) for w in words if w.isdecimal()), 1)
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(_("give 1 to {limit} days").format(limit=MAX_DAYS))
    provider = next((w for w in words if not w.isdecimal()), None)
    return provider, days


@command(
    "traffic",
    help=N_("what the MTA log says of outbound mail: per provider sent, deferred, bounced, the replies explained"),
    args=[Argument("provider", str, required=False), Argument("days", str, required=False)],
)
async def traffic_command(call: Call) -> Rendered:
    follower = call.services.traffic
    if follower is None:
        return plain_and_html(_("the MTA log is not followed: add a [traffic] section (see docs/traffic.md)"))
    try:
        wanted, days = _args(call)
    except ValueError as error:
        return plain_and_html(str(error))
    now = call.services.ctx.clock()
    since = (now.date() - timedelta(days=days - 1)).isoformat()
    async with follower.lock:
        summaries = follower.tally.summaries(include_local=True, since=since)
        lines, skipped = follower.tally.lines, dict(follower.tally.skipped)
    span = _("today") if days == 1 else _("the last {days} days").format(days=days)
    title = _("outbound mail in {source}, {span} (UTC):").format(source=follower.config.source, span=span)
    if follower.error:
        title += "\n? " + _("the log cannot be read right now: {error}").format(error=follower.error.said())
    if wanted is not None:
        key = _match(follower.families, wanted, [s.provider for s in summaries])
        if key is None:
            known = ", ".join(s.provider for s in summaries if s.provider != LOCAL) or _("none yet")
            when = span if days == 1 else _("in {span}").format(span=span)
            text = _("no mail to a provider named {name!r} {when}; seen: {known}")
            return plain_and_html(text.format(name=wanted[:40], when=when, known=known))
        summaries = [s for s in summaries if s.provider == key]
        text = summary_text(summaries, lines, skipped, title, replies=10, lines_note=_(SINCE_START))
        return _pre(text + _join_text(call.services, follower, key, now))
    return _pre(summary_text(summaries, lines, skipped, title, lines_note=_(SINCE_START)))


def _join_text(services: Services, follower: TrafficFollower, key: str, now: datetime) -> str:
    stored = services.monitor.store.get_meta(HISTORY, {}) if services.monitor is not None else {}
    verdicts = [v for v in stored_verdicts(stored) if seed_provider(follower.families, v.canary.seed) == key]
    ips = services.config.monitor.ips
    out = []
    for day in (now.date() - timedelta(days=1), now.date()):
        join = provider_join(follower, services.dmarc_counts, ips, key, day, verdicts)
        if join is not None:
            out.append(f"{day.isoformat()}: {join.summary}")
    return "\n" + "\n".join(out) if out else ""
