"""The [reports] job: read the DMARC aggregate and TLS-RPT mailbox, judge the stored window; its digest line
and its Prometheus metrics. The commands that show the same store are in `bot.commands.reports`."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from bot.config.loader import Config
from bot.config.reports import reports_settings, store_path
from bot.i18n import _, ngettext, number
from checks import CheckContext, Finding, Report
from checks.model import Target, TargetKind
from checks.reports import findings as judge
from checks.reports.collect import collect
from checks.reports.sources import SourceVerdict, classify_sources
from checks.reports.store import DmarcRow, ReportStore
from checks.runner import attempt

__all__ = [
    "StoredDmarcCounts",
    "analyse",
    "classify_rows",
    "digest_line",
    "report_metrics",
    "reports_reports",
    "window_thresholds",
]

log = logging.getLogger("repbot.reports")
KNOWN_FOR_DAYS = 60  # a reporter keeps its alignment row this long after its last report


def _domains(config: Config) -> tuple[str, ...]:
    found = config.reports
    return (found.domains if found is not None else ()) or config.monitor.domains


def window_thresholds(config: Config) -> judge.Thresholds:
    found = config.reports
    return found.thresholds if found is not None else judge.Thresholds()


async def classify_rows(rows: Sequence[DmarcRow], config: Config, ctx: CheckContext) -> dict[str, SourceVerdict]:
    sources: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        sources[row.source_ip].add(row.header_from or row.policy_domain)
    mapped = {ip: sorted(names) for ip, names in sources.items()}
    return await classify_sources(mapped, ctx, config.monitor.ips, config.monitor.helo_names)


async def analyse(store: ReportStore, config: Config, ctx: CheckContext, now: datetime) -> list[Finding]:
    """Every finding the stored window supports: senders, alignment, quiet reporters, TLS, unreadable reports."""
    limits = window_thresholds(config)
    since = now.date() - timedelta(days=limits.window_days - 1)
    rows = await asyncio.to_thread(store.dmarc_rows, since)
    verdicts = await classify_rows(rows, config, ctx)
    tls = await asyncio.to_thread(store.tls_rows, since)
    domains = _domains(config)
    problems = await asyncio.to_thread(store.problems, now - timedelta(days=limits.window_days))
    days = await asyncio.to_thread(store.reporter_days)
    known = [pair for pair, seen in days.items() if now.date() - max(seen) <= timedelta(days=KNOWN_FOR_DAYS)]
    return [
        *judge.source_findings(rows, verdicts, domains, limits.window_days, now),
        *judge.alignment_findings(rows, verdicts, limits, now, known),
        *judge.quiet_findings(days, limits, now),
        *judge.tls_findings(tls, domains, limits, now),
        *judge.problem_findings(problems, limits.window_days, now),
    ]


def _group(findings: Sequence[Finding], fallback: str) -> list[Report]:
    by_target: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_target[str(finding.evidence.get("domain") or fallback)].append(finding)
    return [Report(Target(TargetKind.DOMAIN, name), tuple(items)) for name, items in sorted(by_target.items())]


async def reports_reports(config: Config, ctx: CheckContext) -> list[Report]:
    """The family's run: collect from the mailbox, then judge the stored window; empty without [reports]."""
    settings = reports_settings(config, ctx)
    if settings is None:
        return []
    now = ctx.clock()
    store = ReportStore(store_path(config))
    extra: list[Finding] = []
    result = await attempt("reports", "reports mailbox", collect(settings, store), ctx)
    if isinstance(result, Finding):
        log.warning("reports mailbox %s: %s", settings.mailbox.host, result.summary)
        extra.append(result)
    else:
        log.info("reports: %d new, %d repeated, %d problems", len(result.new), result.repeated, len(result.problems))
    try:
        findings = await analyse(store, config, ctx, now)
    finally:
        store.close()
    return _group([*findings, *extra], settings.mailbox.host)


def _stored(config: Config) -> ReportStore | None:
    """The report store when [reports] is configured and it exists (a scrape or a digest never creates it)."""
    path = store_path(config)
    return ReportStore(path) if config.reports is not None and path.exists() else None


def digest_line(config: Config, now: datetime) -> str | None:
    """Yesterday's totals for the daily digest: reports, reporters, messages, the share passing DMARC, TLS."""
    store = _stored(config)
    if store is None:
        return None
    day = now.date() - timedelta(days=1)
    try:
        rows, tls = store.dmarc_rows(day, day), [r for r in store.tls_rows(day) if r.day == day]
    finally:
        store.close()
    if not rows and not tls:
        return _("DMARC reports for {day}: none arrived yet").format(day=day)
    messages, passed = sum(r.count for r in rows), sum(r.count for r in rows if r.passed)
    reports = len({(r.reporter_key, r.report_id) for r in rows})
    reporters = ", ".join(sorted({r.provider for r in rows})[:6])
    counted = ngettext("{count} messages", "{count} messages", messages).format(count=number(messages))
    passing = (
        _("{share} % passing DMARC").format(share=number(100 * passed / messages, 1))
        if messages
        else _("none passing DMARC")
    )
    line = _("DMARC reports for {day}: {reports} ({reporters}) counted {messages}, {passing}").format(
        day=day, reports=number(reports), reporters=reporters, messages=counted, passing=passing
    )
    if tls:
        failed, ok = sum(r.failed for r in tls), sum(r.successful for r in tls)
        said = ngettext(
            "; TLS reports: {failed} of {total} sessions failed",
            "; TLS reports: {failed} of {total} sessions failed",
            failed + ok,
        )
        line += said.format(failed=number(failed), total=number(failed + ok))
    return line


MAX_SOURCES = 50  # source IPs per reporter in the metrics; the rest are summed as "other" (spoofers rotate IPs)


def report_metrics(config: Config, now: datetime) -> Iterator[Metric]:
    """Prometheus families from the store over the window: DMARC messages by reporter, source IP and result;
    TLS sessions by policy domain and result (`successful` or the RFC 8460 result type)."""
    store = _stored(config)
    if store is None:
        return
    since = now.date() - timedelta(days=window_thresholds(config).window_days - 1)
    try:
        totals, tls = store.message_totals(since), store.tls_rows(since)
    finally:
        store.close()
    labels = ["reporter", "source_ip", "result"]
    dmarc = GaugeMetricFamily("repbot_dmarc_messages", "messages in the DMARC reports of the window", labels=labels)
    for key, count in sorted(_dmarc_counts(totals).items()):
        dmarc.add_metric(list(key), count)
    yield dmarc
    sessions = GaugeMetricFamily(
        "repbot_tlsrpt_sessions", "sessions in the TLS reports of the window", labels=["domain", "result"]
    )
    by_result: dict[tuple[str, str], int] = defaultdict(int)
    for row in tls:
        by_result[(row.policy_domain, row.result_type or "successful")] += row.failed or row.successful
    for (domain, result), count in sorted(by_result.items()):
        sessions.add_metric([domain, result], count)
    yield sessions


def _dmarc_counts(totals: Sequence[tuple[str, str, bool, int]]) -> dict[tuple[str, str, str], int]:
    """Per (reporter, source, result); beyond a reporter's MAX_SOURCES biggest sources, "other"."""
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for provider, ip, _passed, count in totals:
        by_source[provider][ip] += count
    top = {p: set(sorted(ips, key=lambda ip: -ips[ip])[:MAX_SOURCES]) for p, ips in by_source.items()}
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for provider, ip, passed, count in totals:
        counts[(provider, ip if ip in top[provider] else "other", "pass" if passed else "fail")] += count
    return counts


@dataclass(frozen=True)
class StoredDmarcCounts:
    """The report store as the silent-drop join reads it (checks.canary.verdict.DmarcCounts): the messages a
    traffic provider family's own DMARC report counted from one source IP on one day."""

    config: Config

    def dmarc_count(self, provider: str, day: date, source_ip: str) -> int | None:
        """None when no report of that provider covers the day; a report without a row for the IP is 0."""
        path = store_path(self.config)
        if not path.exists():
            return None
        names = self._reporters(provider)
        store = ReportStore(path)
        try:
            if not any(store.counts(name, day).reports for name in names):
                return None
            return sum(store.counts(name, day, source_ip).messages for name in names)
        finally:
            store.close()

    def _reporters(self, provider: str) -> tuple[str, ...]:
        """The names a family's reports are stored under: its reporters' org names, else its key."""
        from bot.config.traffic import traffic_families

        families = traffic_families(self.config.traffic)
        found = next((family.reporters for family in families.families if family.key == provider), ())
        return tuple(name.lower() for name in found) or (provider,)
