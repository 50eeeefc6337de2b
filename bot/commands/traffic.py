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
from bot.i18n import N_
from bot.monitor.canary import HISTORY, stored_verdicts
from bot.monitor.traffic import SMARTHOST_NOTE, TrafficFollower, provider_join, seed_provider
from bot.render import Rendered, plain_and_html
from checks.traffic.providers import LOCAL, SMARTHOST, Families
from checks.traffic.tally import ProviderSummary, Tally

__all__ = ["SMARTHOST_NOTE", "summary_json", "summary_text", "traffic_command"]

MAX_DAYS = 35
TOP_REPLIES = 3
SINCE_START = " since the log was first followed"


# -- words -----------------------------------------------------------------------------------------------------


def _provider_lines(summary: ProviderSummary, replies: int) -> list[str]:
    if summary.provider == SMARTHOST:
        return [f"smarthost: {summary.sent} sent, {summary.deferred} deferred, {summary.bounced} bounced — these "
                f"{SMARTHOST_NOTE}"]  # fmt: skip
    expired = f", {summary.expired} expired" if summary.expired else ""
    head = f"{summary.name}: {summary.sent} sent, {summary.deferred} deferred, {summary.bounced} bounced{expired}"
    lines = [head]
    for reply in summary.replies[:replies]:
        meaning = f" — {reply.explanation}" if reply.explanation else ""
        lines.append(f"    {reply.code} ×{reply.count}{meaning}")
    return lines


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
        out.append("no outbound delivery attempts in the log")
    for summary in shown:
        out.extend(_provider_lines(summary, replies))
    local = next((s for s in summaries if s.provider == LOCAL), None)
    if local is not None:
        out.append(f"local deliveries (mailboxes, filters): {local.sent} sent, {local.deferred} deferred")
    why = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()) if count)
    out.append(f"{lines} lines read{lines_note}, {sum(skipped.values())} skipped" + (f" ({why})" if why else ""))
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
        raise ValueError(f"give 1 to {MAX_DAYS} days")
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
        return plain_and_html("the MTA log is not followed: add a [traffic] section (see docs/traffic.md)")
    try:
        wanted, days = _args(call)
    except ValueError as error:
        return plain_and_html(str(error))
    now = call.services.ctx.clock()
    since = (now.date() - timedelta(days=days - 1)).isoformat()
    async with follower.lock:
        summaries = follower.tally.summaries(include_local=True, since=since)
        lines, skipped = follower.tally.lines, dict(follower.tally.skipped)
    span = "today" if days == 1 else f"the last {days} days"
    title = f"outbound mail in {follower.config.source}, {span} (UTC):"
    if follower.error:
        title += f"\n? the log cannot be read right now: {follower.error}"
    if wanted is not None:
        key = _match(follower.families, wanted, [s.provider for s in summaries])
        if key is None:
            known = ", ".join(s.provider for s in summaries if s.provider != LOCAL) or "none yet"
            when = span if days == 1 else f"in {span}"
            return plain_and_html(f"no mail to a provider named {wanted[:40]!r} {when}; seen: {known}")
        summaries = [s for s in summaries if s.provider == key]
        text = summary_text(summaries, lines, skipped, title, replies=10, lines_note=SINCE_START)
        return _pre(text + _join_text(call.services, follower, key, now))
    return _pre(summary_text(summaries, lines, skipped, title, lines_note=SINCE_START))


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
