"""What the operator's real mail says: `!traffic [PROVIDER] [DAYS]`, the follower's lifespan, digest and metrics.

The follower (`bot.monitor.traffic`) runs while the bot runs when [traffic] is configured, and feeds the
monitor. The same words serve `!traffic` and `repbot traffic --log FILE...` (`summary_text`, `summary_json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.commands.core import REGISTRY, Argument, Call, Services, command
from bot.config.loader import Config
from bot.config.traffic import traffic_config, traffic_families
from bot.monitor.core import DIGEST_LINES
from bot.monitor.traffic import STATE_FILE, TrafficFollower
from bot.render import Rendered, plain_and_html
from checks.canary.verdict import CanaryVerdict, DmarcCounts, DropJoin, drop_join
from checks.traffic.providers import LOCAL, SMARTHOST, Families
from checks.traffic.tally import ProviderSummary, Tally

__all__ = ["digest_lines", "provider_join", "summary_json", "summary_text", "traffic_lifespan", "traffic_metrics"]

MAX_DAYS = 35
TOP_REPLIES = 3
SINCE_START = " since the log was first followed"
SMARTHOST_NOTE = "went through your smarthost: the providers' own answers are not in this log"


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


# -- the silent-drop join --------------------------------------------------------------------------------------


def provider_join(
    services: Services, provider: str, name: str, day: date, verdicts: Sequence[CanaryVerdict]
) -> DropJoin | None:
    """The three-way join for one provider and day, or None when [traffic] is not configured.

    The DMARC counts come from `services.extra["dmarc_counts"]` (any `DmarcCounts`; the reports store of
    issue 14 is wired there), else the join says the report is missing.
    """
    follower = services.extra.get("traffic")
    if not isinstance(follower, TrafficFollower):
        return None
    counts = services.extra.get("dmarc_counts")
    dmarc: DmarcCounts | None = counts if hasattr(counts, "dmarc_count") else None
    accepted = follower.accepted(provider, day)
    return drop_join(provider, name, day, accepted, dmarc, services.config.monitor.ips, verdicts)


def seed_provider(families: Families, seed_address: str) -> str:
    """The provider key a canary seed's mailbox belongs to, from its domain."""
    return families.provider_of("", seed_address.rpartition("@")[2]).provider


# -- the lifespan, the command ---------------------------------------------------------------------------------


@REGISTRY.lifespan
@contextlib.asynccontextmanager
async def traffic_lifespan(services: Services) -> AsyncIterator[None]:
    """Follow the MTA log while the bot runs, when [traffic] is configured."""
    config = traffic_config(services.config)
    if config is None:
        yield
        return
    follower = TrafficFollower(
        config, traffic_families(config), services.config.state_dir, services.extra.get("monitor"), services.ctx.clock
    )
    services.extra["traffic"] = follower
    from bot.metrics import METRIC_SOURCES  # here, so that `repbot traffic` does not load prometheus_client

    if traffic_metrics not in METRIC_SOURCES:
        METRIC_SOURCES.append(traffic_metrics)
    task = asyncio.create_task(follower.run(), name="repbot-traffic")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
    help="what the MTA log says of outbound mail: per provider sent, deferred, bounced, the replies explained",
    args=[Argument("provider", str, required=False), Argument("days", str, required=False)],
)
async def traffic_command(call: Call) -> Rendered:
    follower = call.services.extra.get("traffic")
    if not isinstance(follower, TrafficFollower):
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
    from bot.commands.canary import stored_verdicts

    verdicts = [v for v in stored_verdicts(services) if seed_provider(follower.families, v.canary.seed) == key]
    out = []
    for day in (now.date() - timedelta(days=1), now.date()):
        join = provider_join(services, key, follower.families.name(key), day, verdicts)
        if join is not None:
            out.append(f"{day.isoformat()}: {join.summary}")
    return "\n" + "\n".join(out) if out else ""


# -- digest and metrics ----------------------------------------------------------------------------------------


def _state_tally(config: Config) -> Tally | None:
    traffic = traffic_config(config)
    if traffic is None:
        return None
    path = Path(config.state_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tally = Tally(traffic_families(traffic), date.today())
    tally.load_json(data.get("tally", {}))
    return tally


def digest_lines(config: Config, now: datetime) -> list[str]:
    """The digest's lines: yesterday's outbound mail per provider (empty without [traffic] or without mail)."""
    tally = _state_tally(config)
    if tally is None:
        return []
    day = (now.date() - timedelta(days=1)).isoformat()
    rows = [s for s in tally.summaries(since=day, until=day) if s.attempts]
    if not rows:
        return [f"outbound mail on {day}: none in the log"]
    lines = [f"outbound mail on {day}:"]
    for summary in rows[:8]:
        if summary.provider == SMARTHOST:
            lines.append(f"  smarthost: {summary.sent} sent ({SMARTHOST_NOTE})")
            continue
        top = f" (top reply {summary.replies[0].code} ×{summary.replies[0].count})" if summary.replies else ""
        lines.append(
            f"  {summary.name}: {summary.sent} sent, {summary.deferred} deferred, "
            f"{summary.bounced + summary.expired} bounced{top}"
        )
    return lines


def traffic_metrics(services: Services) -> Iterator[Any]:
    """repbot_traffic_* counters from the follower's tally (they survive restarts: the tally is persisted)."""
    from prometheus_client.metrics_core import CounterMetricFamily

    follower = services.extra.get("traffic")
    if not isinstance(follower, TrafficFollower):
        return
    attempts = CounterMetricFamily(
        "repbot_traffic_deliveries", "outbound delivery attempts in the MTA log", labels=["provider", "outcome"]
    )
    # A poll may be counting in its thread: copy (C-level, under the GIL) before iterating.
    providers = {key: dict(counts) for key, counts in list(follower.tally.providers.items())}
    for key, counts in sorted(providers.items()):
        for outcome in ("sent", "deferred", "bounced", "expired"):
            attempts.add_metric([key, outcome], counts.get(outcome, 0))
    yield attempts
    lines = CounterMetricFamily("repbot_traffic_lines", "MTA log lines read")
    lines.add_metric([], follower.tally.lines)
    yield lines
    skipped = CounterMetricFamily("repbot_traffic_skipped_lines", "log lines skipped, by reason", labels=["reason"])
    reasons = dict(follower.tally.skipped)
    for reason in ("garbage", "other-daemon", "partial", "non-utf8"):
        skipped.add_metric([reason], reasons.get(reason, 0))
    yield skipped


DIGEST_LINES.append(digest_lines)
