"""The traffic follower: reads the MTA log as it grows, counts per provider, and gives the monitor its findings.

Each poll reads what was appended since the stored position (`checks.traffic.follow`), counts it
(`checks.traffic.tally`), then writes the new position and the counts in one atomic write of `traffic.json`
in the state directory, and only then hands its findings to the monitor. A crash before the write re-reads the
same lines from the old position into the old counts; after it, nothing is read twice.

One finding per provider with mail in the sliding window (check `traffic`, subject the provider key):
- fail while a block-class reply (ndr.toml `block = true`) was seen within the window: the first one alerts
  at once (the check is confirmed on sight), with the explanation, the delisting route, the count so far and
  one quoted log line (local parts removed);
- warn while the deferral or bounce rate over the window is at or above its threshold (with `min_attempts`),
  until it falls below 80 % of it;
- ok otherwise, and once more when a provider that was not ok has no mail left in the window (resolved).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.config.loader import Config
from bot.config.traffic import TrafficConfig, traffic_families
from bot.i18n import N_, SOURCE_LANGUAGE, _, ngettext, number, use_language
from bot.transports.session import write_private
from checks import Finding, Report, Status
from checks.canary.ndr import entry_said
from checks.canary.verdict import CanaryVerdict, DmarcCounts, DropJoin, drop_join
from checks.model import Target, TargetKind
from checks.traffic.follow import Chunk, LogGone, Position, read_journal, read_new
from checks.traffic.lines import line_time
from checks.traffic.providers import LOCAL, OTHER, SMARTHOST, Families
from checks.traffic.tally import Outcome, Tally

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

# Said wherever a smarthost's count is shown: repbot sees only the smarthost's answer.
SMARTHOST_NOTE = N_("went through your smarthost: the providers' own answers are not in this log")

__all__ = ["STATE_FILE", "TrafficFollower", "WindowCounts", "provider_findings"]

log = logging.getLogger("repbot.traffic")

STATE_FILE = "traffic.json"
RESOLVE_SHARE = 0.8
MAX_CODES = 5
QUOTE_LIMIT = 400


@dataclass(frozen=True)
class WindowCounts:
    """One provider's attempts inside the sliding window."""

    sent: int = 0
    deferred: int = 0
    bounced: int = 0
    expired: int = 0

    @property
    def attempts(self) -> int:
        return self.sent + self.deferred + self.bounced + self.expired

    def rate(self, kind: str) -> float:
        failed = self.deferred if kind == "deferrals" else self.bounced + self.expired
        return failed / self.attempts if self.attempts else 0.0


def _quote(line: str, limit: int = QUOTE_LIMIT) -> str:
    """A log line short enough for an alert (the reply's start, where the codes are, is kept)."""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _minute(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def _percent(value: float) -> str:
    return f"{number(round(value * 100))} %"


def _block_finding(key: str, name: str, block: Mapping[str, Any]) -> Finding:
    first = datetime.fromisoformat(block["first"])
    count = int(block["count"])
    codes = list(block["codes"])
    summary = ngettext(
        "{name} refused mail with a block-class reply ({codes}): {count} message affected since {first} UTC",
        "{name} refused mail with a block-class reply ({codes}): {count} messages affected since {first} UTC",
        count,
    ).format(name=name, codes=", ".join(codes), count=number(count), first=f"{first:%Y-%m-%d %H:%M}")
    # The explanation in the room's language: the ndr.toml row's, else the English stored before rows were kept.
    explained = entry_said(str(block.get("entry", "")), block["explanation"])
    advice = _("{explanation} Log: {line}").format(explanation=explained, line=block["line"])
    evidence = {"codes": codes, "count": count, "first": block["first"], "line": block["line"]}
    return Finding("traffic", key, Status.FAIL, summary, evidence, advice, "traffic-block")


_RATE_WORDS = {
    "deferrals": N_("{rate} of {attempts} attempts to {name} deferred in the last {window} (threshold {threshold})"),
    "bounces": N_(
        "{rate} of {attempts} attempts to {name} bounced or expired in the last {window} (threshold {threshold})"
    ),
}


def _rate_finding(key: str, name: str, kind: str, counts: WindowCounts, window: str, threshold: float) -> Finding:
    summary = _(_RATE_WORDS[kind]).format(
        rate=_percent(counts.rate(kind)),
        attempts=number(counts.attempts),
        name=name,
        window=window,
        threshold=_percent(threshold),
    )
    evidence = {"codes": [kind], "attempts": counts.attempts, "rate": round(counts.rate(kind), 3)}
    advice = _("See !traffic {provider} for the replies and what they mean.").format(provider=key)
    return Finding("traffic", key, Status.WARN, summary, evidence, advice, f"traffic-{kind}")


def _ok_summary(name: str, counts: WindowCounts, window: str) -> str:
    if not counts.attempts:
        return _("no mail to {name} in the last {window}").format(name=name, window=window)
    return _("{name}: {sent} sent, {deferred} deferred, {bounced} bounced in the last {window}").format(
        name=name,
        sent=number(counts.sent),
        deferred=number(counts.deferred),
        bounced=number(counts.bounced + counts.expired),
        window=window,
    )


def provider_findings(
    config: TrafficConfig,
    families: Families,
    window: Mapping[str, WindowCounts],
    blocks: Mapping[str, Mapping[str, Any]],
    alerting: Mapping[str, str],
    window_text: str,
) -> tuple[list[Finding], dict[str, str]]:
    """The findings of one poll and the providers now not ok (key -> why); pure."""
    findings: list[Finding] = []
    now_alerting: dict[str, str] = {}
    thresholds = {"deferrals": config.deferral_rate, "bounces": config.bounce_rate}
    for key in sorted({*window, *blocks, *alerting}):
        name, counts = _(families.name(key)), window.get(key, WindowCounts())  # the shipped names are in the catalog
        if key in blocks:
            findings.append(_block_finding(key, name, blocks[key]))
            now_alerting[key] = "block"
            continue
        # "other" mixes every small domain (greylisting and all): its rates say nothing about one provider.
        rated = key != OTHER
        kind = next(
            (k for k, limit in thresholds.items() if rated and _over(counts, k, limit, alerting.get(key), config)), None
        )
        if kind is not None:
            findings.append(_rate_finding(key, name, kind, counts, window_text, thresholds[kind]))
            now_alerting[key] = kind
            continue
        summary = _ok_summary(name, counts, window_text)
        findings.append(Finding("traffic", key, Status.OK, summary, {"attempts": counts.attempts}, code="traffic-ok"))
    return findings, now_alerting


def _over(counts: WindowCounts, kind: str, limit: float, was: str | None, config: TrafficConfig) -> bool:
    if counts.attempts < config.min_attempts:
        return was == kind and counts.attempts > 0 and counts.rate(kind) >= limit * RESOLVE_SHARE
    # Hysteresis: once alerting, it resolves only below 80 % of the threshold.
    return counts.rate(kind) >= (limit * RESOLVE_SHARE if was == kind else limit)


class ReportSink(Protocol):
    """Where findings go: the monitor (its `process` stores state and queues alerts)."""

    def process(self, reports: Sequence[Report]) -> Any: ...

    def language(self) -> str: ...


class TrafficFollower:
    """Follows the configured log, keeps the tally, the window and the block episodes, persisted together."""

    def __init__(
        self,
        config: TrafficConfig,
        families: Families,
        state_dir: str,
        monitor: ReportSink | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.families = families
        self.path = Path(state_dir) / STATE_FILE
        self.monitor = monitor
        self.clock = clock or (lambda: datetime.now(UTC))
        self.lock = asyncio.Lock()
        self.tally = Tally(families, self.clock().date(), keep_domains=False)
        self.position: Position | None = None
        self.window: dict[str, list[list[int]]] = {}  # provider -> [[minute, sent, deferred, bounced, expired]]
        self.blocks: dict[str, dict[str, Any]] = {}
        self.alerting: dict[str, str] = {}
        self.error: LogGone | None = None
        self._load()

    def __repr__(self) -> str:
        return f"<TrafficFollower {self.config.source} {self.position}>"

    # -- persistence -------------------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("source") != self.config.source:
                log.warning("the traffic log changed to %s: following it from the start position", self.config.source)
                return
            self._restore(data)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            # A damaged state must not keep the bot from starting: set it aside and count afresh.
            moved = self.path.with_name(self.path.name + ".unreadable")
            log.error("the traffic state %s is unreadable (%s); moved to %s, counting afresh", self.path, error, moved)
            self.path.replace(moved)
            self.tally = Tally(self.families, self.clock().date(), keep_domains=False)
            self.position, self.window, self.blocks, self.alerting = None, {}, {}, {}

    def _restore(self, data: Mapping[str, Any]) -> None:
        self.position = Position.from_json(data.get("position"))
        self.tally.load_json(data.get("tally", {}))
        self.window = {str(k): [list(map(int, row)) for row in v] for k, v in dict(data.get("window", {})).items()}
        self.blocks = {str(k): dict(v) for k, v in dict(data.get("blocks", {})).items()}
        self.alerting = {str(k): str(v) for k, v in dict(data.get("alerting", {})).items()}

    def _save(self) -> None:
        data = {
            "source": self.config.source,
            "position": self.position.to_json() if self.position else None,
            "tally": self.tally.to_json(),
            "window": self.window,
            "blocks": self.blocks,
            "alerting": self.alerting,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps(data, separators=(",", ":")))

    # -- one poll ----------------------------------------------------------------------------------------------

    async def _read(self) -> Chunk:
        if self.config.command:
            cursor = self.position.cursor if self.position else ""
            command = list(self.config.command)
            skip_first = not cursor and self.config.start == "end"
            if not cursor:
                # The newest entry only to learn its cursor (journalctl prints a cursor only after an entry).
                command += ["-n", "1"] if skip_first else ["--since", "today"]
            lines, cursor = await read_journal(command, cursor)
            return Chunk([] if skip_first else lines, Position(cursor=cursor))
        assert self.config.path is not None
        path, from_end = Path(self.config.path), self.config.start == "end"
        return await asyncio.to_thread(read_new, path, self.position, from_end=from_end)

    def _count(self, chunk: Chunk, now: datetime) -> list[Outcome]:
        self.tally.today = now.date()
        if chunk.partial:
            self.tally.skip_partial(chunk.partial)
        outcomes = self.tally.feed_all(chunk.lines)
        self.tally.prune_days(now.date() - timedelta(days=self.config.keep_days))
        return outcomes

    async def poll(self) -> list[Report]:
        """Read and count what is new, persist it, and return the findings (also given to the monitor)."""
        async with self.lock:
            now = self.clock()
            try:
                chunk = await self._read()
            except LogGone as error:
                self.error = error
                log.warning("traffic: %s", error)
                with use_language(self._language()):
                    return self._deliver([self._unknown(error.said(), now)])
            self.error = None
            if chunk.rotation:
                level = logging.WARNING if chunk.rotation == "lost" else logging.INFO
                log.log(level, "traffic: %s rotated (%s)", self.config.source, chunk.rotation)
            outcomes = await asyncio.to_thread(self._count, chunk, now)
            for outcome in outcomes:
                self._observe(outcome, now)
            self._expire(now)
            self.position = chunk.position
            with use_language(self._language()):  # the findings are worded as the alert rooms read them
                findings, self.alerting = provider_findings(
                    self.config, self.families, self.window_counts(now), self.blocks, self.alerting, self._window_text()
                )
            await asyncio.to_thread(self._save)
            reports = [Report(Target(TargetKind.DOMAIN, f.subject), (f,)) for f in findings]
        if chunk.more:
            log.info("traffic: more than one read's worth of log waiting; the next poll goes on")
        return self._deliver(reports)

    def _deliver(self, reports: list[Report]) -> list[Report]:
        if self.monitor is not None and reports:
            self.monitor.process(reports)
        return reports

    def _language(self) -> str:
        return self.monitor.language() if self.monitor is not None else SOURCE_LANGUAGE

    def _unknown(self, reason: str, now: datetime) -> Report:
        summary = _("cannot read the MTA log: {reason}").format(reason=reason)
        finding = Finding("traffic", "mta-log", Status.UNKNOWN, summary, {}, code="traffic-log", observed_at=now)
        return Report(Target(TargetKind.DOMAIN, "mta-log"), (finding,))

    def _observe(self, outcome: Outcome, now: datetime) -> None:
        if outcome.route == LOCAL:
            return
        moment = line_time(outcome.stamp, now) or now
        if moment > now + timedelta(minutes=5):
            moment = now  # a syslog stamp from a clock ahead of ours
        if moment < now - self.config.window:
            return  # history read at the first start: counted, but not news
        rows = self.window.setdefault(outcome.provider, [])
        minute = _minute(moment)
        if not rows or rows[-1][0] != minute:
            rows.append([minute, 0, 0, 0, 0])
        rows[-1][1 + ("sent", "deferred", "bounced", "expired").index(outcome.status)] += 1
        if outcome.block and outcome.explanation is not None:
            self._block(outcome, moment)

    def _block(self, outcome: Outcome, moment: datetime) -> None:
        assert outcome.explanation is not None
        block = self.blocks.get(outcome.provider)
        if block is None:
            block = self.blocks[outcome.provider] = {
                "first": moment.isoformat(), "count": 0, "codes": [], "line": _quote(outcome.line),
                "explanation": outcome.explanation.line(), "entry": outcome.explanation.entry_id,
            }  # fmt: skip
        block["count"] += 1
        block["last"] = moment.isoformat()
        if outcome.code not in block["codes"] and len(block["codes"]) < MAX_CODES:
            block["codes"].append(outcome.code)

    def _expire(self, now: datetime) -> None:
        oldest = _minute(now - self.config.window)
        for key in list(self.window):
            self.window[key] = [row for row in self.window[key] if row[0] > oldest]
            if not self.window[key]:
                del self.window[key]
        for key in list(self.blocks):
            if datetime.fromisoformat(self.blocks[key]["last"]) < now - self.config.window:
                del self.blocks[key]

    # -- what others read --------------------------------------------------------------------------------------

    def window_counts(self, now: datetime) -> dict[str, WindowCounts]:
        oldest = _minute(now - self.config.window)
        counts = {}
        for key, rows in self.window.items():
            kept = [row for row in rows if row[0] > oldest]
            if kept:
                counts[key] = WindowCounts(*(sum(row[i] for row in kept) for i in range(1, 5)))
        return counts

    def _window_text(self) -> str:
        from bot.durations import format_duration

        return format_duration(self.config.window)

    def accepted(self, provider: str, day: date) -> int | None:
        """The 250s the log shows for a provider on a day; None when the log was not followed that day."""
        counts = self.tally.days.get((day.isoformat(), provider))
        if counts is not None:
            return int(counts["accepted"])
        # A day between the first one counted and today was followed: no line for this provider is 0, not unknown.
        first = min((key[0] for key in self.tally.days), default=None)
        followed = first is not None and first <= day.isoformat() <= self.clock().date().isoformat()
        return 0 if followed else None

    async def run(self) -> None:
        """Poll forever at the configured interval; a failing poll is logged and the next one comes."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the traffic poll failed; the next one is on schedule")
            await asyncio.sleep(self.config.poll_interval.total_seconds())


# -- the silent-drop join, the digest, the metrics ---------------------------------------------------------------


def provider_join(
    follower: TrafficFollower,
    dmarc: DmarcCounts | None,
    ips: Sequence[str],
    provider: str,
    day: date,
    verdicts: Sequence[CanaryVerdict],
) -> DropJoin:
    """The three-way join for one provider and day: what the log says it accepted, what its DMARC report
    counted (None: no reports are read), and the canaries."""
    accepted = follower.accepted(provider, day)
    return drop_join(provider, _(follower.families.name(provider)), day, accepted, dmarc, ips, verdicts)


def seed_provider(families: Families, seed_address: str) -> str:
    """The provider key a canary seed's mailbox belongs to, from its domain."""
    return families.provider_of("", seed_address.rpartition("@")[2]).provider


def stored_tally(config: Config) -> Tally | None:
    """The follower's persisted tally, read from the state directory (None without [traffic] or a state)."""
    if config.traffic is None:
        return None
    path = Path(config.state_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tally = Tally(traffic_families(config.traffic), date.today())
    tally.load_json(data.get("tally", {}))
    return tally


def digest_lines(config: Config, now: datetime) -> list[str]:
    """The digest's lines: yesterday's outbound mail per provider (empty without [traffic] or without mail)."""
    tally = stored_tally(config)
    if tally is None:
        return []
    day = (now.date() - timedelta(days=1)).isoformat()
    rows = [s for s in tally.summaries(since=day, until=day) if s.attempts]
    if not rows:
        return [_("outbound mail on {day}: none in the log").format(day=day)]
    lines = [_("outbound mail on {day}:").format(day=day)]
    for summary in rows[:8]:
        if summary.provider == SMARTHOST:
            sent = _("smarthost: {sent} sent ({note})").format(sent=number(summary.sent), note=_(SMARTHOST_NOTE))
            lines.append(f"  {sent}")
            continue
        top = summary.replies[0] if summary.replies else None
        said = _("{name}: {sent} sent, {deferred} deferred, {bounced} bounced").format(
            name=_(summary.name),
            sent=number(summary.sent),
            deferred=number(summary.deferred),
            bounced=number(summary.bounced + summary.expired),
        )
        if top is not None:
            said += _(" (top reply {code} ×{count})").format(code=top.code, count=number(top.count))
        lines.append(f"  {said}")
    return lines


def traffic_metrics(follower: TrafficFollower) -> Iterator[Metric]:
    """repbot_traffic_* counters from the follower's tally (they survive restarts: the tally is persisted)."""
    from prometheus_client.metrics_core import CounterMetricFamily

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
