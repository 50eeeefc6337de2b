"""`!dmarc [DAYS]`, `!tlsrpt [DAYS]`, the `reports` monitor family and `repbot reports PATH...`.

The glue only: reading, storing and judging reports is `checks.reports`. The family runs when [reports] is
configured: it reads the mailbox, stores what came, and judges the stored window, one Report per domain.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import TypeVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from bot.commands.core import Argument, Call, command
from bot.config.loader import Config, SecretError
from bot.config.reports import reports_config, reports_settings, store_path
from bot.monitor.core import DIGEST_LINES, FAMILY_BUILDERS, FamilyRun
from bot.render import Rendered, plain_and_html
from checks import CheckContext, Finding, Report, Status
from checks.mailbox import MailboxError
from checks.model import Target, TargetKind
from checks.reports import FIXES, DmarcReport, Extracted, TlsReport, read_paths
from checks.reports import findings as judge
from checks.reports.collect import collect
from checks.reports.sources import SourceVerdict, classify_sources
from checks.reports.store import DmarcRow, ReportStore, TlsRow

__all__ = ["MAX_DAYS", "analyse", "reports_cli", "reports_reports"]

log = logging.getLogger("repbot.reports")
T = TypeVar("T")
MAX_DAYS = 90
DEFAULT_DAYS = 7
KNOWN_FOR_DAYS = 60  # a reporter keeps its alignment row this long after its last report


def _days(text: str) -> int:
    if not text.isdecimal() or not 1 <= int(text) <= MAX_DAYS:
        raise ValueError(f"give a number of days, 1 to {MAX_DAYS}")
    return int(text)


def _domains(config: Config) -> tuple[str, ...]:
    found = reports_config(config)
    return (found.domains if found is not None else ()) or config.monitor.domains


def _thresholds(config: Config) -> judge.Thresholds:
    found = reports_config(config)
    return found.thresholds if found is not None else judge.Thresholds()


async def _verdicts(rows: Sequence[DmarcRow], config: Config, ctx: CheckContext) -> dict[str, SourceVerdict]:
    sources: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        sources[row.source_ip].add(row.header_from or row.policy_domain)
    mapped = {ip: sorted(names) for ip, names in sources.items()}
    return await classify_sources(mapped, ctx, config.monitor.ips, config.monitor.helo_names)


async def analyse(store: ReportStore, config: Config, ctx: CheckContext, now: datetime) -> list[Finding]:
    """Every finding the stored window supports: senders, alignment, quiet reporters, TLS, unreadable reports."""
    limits = _thresholds(config)
    since = now.date() - timedelta(days=limits.window_days - 1)
    rows = await asyncio.to_thread(store.dmarc_rows, since)
    verdicts = await _verdicts(rows, config, ctx)
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
    try:
        result = await collect(settings, store)
        log.info("reports: %d new, %d repeated, %d problems", len(result.new), result.repeated, len(result.problems))
    except (MailboxError, SecretError) as error:
        log.warning("reports mailbox %s: %s", settings.mailbox.host, error)
        summary = f"cannot read the reports mailbox: {error}"
        extra.append(
            Finding("reports", "reports mailbox", Status.UNKNOWN, summary, {}, code="mailbox", observed_at=now)
        )
    try:
        findings = await analyse(store, config, ctx, now)
    finally:
        store.close()
    return _group([*findings, *extra], settings.mailbox.host)


def _build(config: Config) -> FamilyRun | None:
    if reports_config(config) is None:
        return None

    async def run(ctx: CheckContext) -> list[Report]:
        return await reports_reports(config, ctx)

    return run


FAMILY_BUILDERS.update(reports=_build)


def _stored(config: Config) -> ReportStore | None:
    """The report store when [reports] is configured and it exists (a scrape or a digest never creates it)."""
    path = store_path(config)
    return ReportStore(path) if reports_config(config) is not None and path.exists() else None


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
        return f"DMARC reports for {day}: none arrived yet"
    messages, passed = sum(r.count for r in rows), sum(r.count for r in rows if r.passed)
    reports = len({(r.reporter_key, r.report_id) for r in rows})
    reporters = ", ".join(sorted({r.provider for r in rows})[:6])
    share = f"{100 * passed / messages:.1f} %" if messages else "none"
    line = f"DMARC reports for {day}: {reports} ({reporters}) counted {messages} messages, {share} passing DMARC"
    if tls:
        failed, ok = sum(r.failed for r in tls), sum(r.successful for r in tls)
        line += f"; TLS reports: {failed} of {failed + ok} sessions failed"
    return line


DIGEST_LINES.append(digest_line)

MAX_SOURCES = 50  # source IPs per reporter in the metrics; the rest are summed as "other" (spoofers rotate IPs)


def report_metrics(config: Config, now: datetime) -> Iterator[Metric]:
    """Prometheus families from the store over the window: DMARC messages by reporter, source IP and result;
    TLS sessions by policy domain and result (`successful` or the RFC 8460 result type)."""
    store = _stored(config)
    if store is None:
        return
    since = now.date() - timedelta(days=_thresholds(config).window_days - 1)
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
    for provider, ip, _, count in totals:
        by_source[provider][ip] += count
    top = {p: set(sorted(ips, key=lambda ip: -ips[ip])[:MAX_SOURCES]) for p, ips in by_source.items()}
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for provider, ip, passed, count in totals:
        counts[(provider, ip if ip in top[provider] else "other", "pass" if passed else "fail")] += count
    return counts


# -- the chat commands ------------------------------------------------------------------------------------


async def _read(config: Config, read: Callable[[ReportStore, date], list[T]], since: date) -> list[T]:
    """Rows from the store in a thread; none when there is no store yet (a command never creates one)."""
    path = store_path(config)
    if not path.exists():
        return []
    store = ReportStore(path)
    try:
        return await asyncio.to_thread(read, store, since)
    finally:
        store.close()


def _pre(lines: Sequence[str]) -> Rendered:
    text = "\n".join(lines)
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


def _dmarc_table(rows: Sequence[DmarcRow], verdicts: dict[str, SourceVerdict], days: int) -> list[str]:
    tally: dict[tuple[bool, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        ours = row.source_ip in verdicts and verdicts[row.source_ip].ours
        cell = tally[(ours, row.source_ip, row.provider)]
        cell[0] += row.count
        cell[1] += row.count if row.passed else 0
        cell[2] += row.count if row.disposition in ("reject", "quarantine") else 0
    reports = len({(r.reporter_key, r.report_id) for r in rows})
    total = sum(r.count for r in rows)
    lines = [f"DMARC reports, last {days} days: {reports} reports, {total} messages"]
    for ours, heading in ((False, "unknown sources (not yours)"), (True, "your sources")):
        mine = sorted(((k, v) for k, v in tally.items() if k[0] is ours), key=lambda kv: (-kv[1][0], kv[0]))
        if not mine:
            continue
        lines.append(heading)
        for (_, ip, provider), (messages, passed, held) in mine[:40]:
            mark = "✓" if passed == messages else ("✗" if not ours else "!")
            why = verdicts[ip].why if ip in verdicts else ""
            held_text = f", {held} rejected/quarantined" if held else ""
            lines.append(
                f"  {mark} {ip:<15} {provider:<12} {messages:>7} msgs {passed:>7} pass {messages - passed:>6} fail"
                f"{held_text}  ({why})"
            )
        if len(mine) > 40:
            lines.append(f"  … {len(mine) - 40} more")
    return lines


@command(
    "dmarc",
    help="what the DMARC reports counted, per reporter and source IP, unknown sources first (default 7 days)",
    args=[Argument("days", _days, required=False)],
    costly=True,
)
async def dmarc_command(call: Call) -> Rendered:
    config, ctx = call.services.config, call.services.ctx
    days = call.args.get("days") or DEFAULT_DAYS
    rows = await _read(config, ReportStore.dmarc_rows, ctx.clock().date() - timedelta(days=days - 1))
    if not rows:
        hint = "" if reports_config(config) else " (no [reports] mailbox is configured: see docs/reports.md)"
        return plain_and_html(f"no DMARC aggregate reports in the last {days} days{hint}")
    return _pre(_dmarc_table(rows, await _verdicts(rows, config, ctx), days))


def _tls_lines(rows: Sequence[TlsRow], days: int) -> list[str]:
    ok, bad = judge.tls_totals(rows)
    lines = [f"TLS reports, last {days} days"]
    for domain in sorted(set(ok) | set(bad)):
        failed = sum(bad[domain].values())
        mark = "✓" if not failed else "!"
        lines.append(f"{mark} {domain}: {ok[domain]} sessions ok, {failed} failed")
        for (mx, kind), n in sorted(bad[domain].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {mx}: {kind} × {n}")
            lines.append(f"      fix: {FIXES.get(kind, 'see the report').replace('DOMAIN', domain)}")
    return lines


@command(
    "tlsrpt",
    help="what the SMTP TLS reports counted: sessions per domain, failures by MX and type, with the fix",
    args=[Argument("days", _days, required=False)],
)
async def tlsrpt_command(call: Call) -> Rendered:
    config = call.services.config
    days = call.args.get("days") or DEFAULT_DAYS
    rows = await _read(config, ReportStore.tls_rows, call.services.ctx.clock().date() - timedelta(days=days - 1))
    if not rows:
        return plain_and_html(f"no SMTP TLS reports in the last {days} days")
    return _pre(_tls_lines(rows, days))


# -- `repbot reports PATH... [--json]` --------------------------------------------------------------------


def _text_line(report: DmarcReport | TlsReport) -> str:
    data = report.to_json()
    if data["kind"] == "dmarc":
        passed = sum(r["count"] for r in data["records"] if "pass" in (r["dkim"], r["spf"]))
        size = f"{data['messages']} messages ({len(data['records'])} records, {passed} passed DMARC)"
    else:
        size = ", ".join(f"{p['successful']} ok / {p['failed']} failed" for p in data["policies"])
    head = f"{data['kind']:<7} {data['provider']:<14} {data['policy_domain']:<22} {data['day']}"
    return f"{head}  {size}  [{data['report_id']}]"


def reports_cli(args: argparse.Namespace, config: Config) -> int:
    """Read files and folders; print each report and each problem; exit 0 clean, 1 caveats only, 2 errors."""
    store = ReportStore(store_path(config)) if args.record else None
    problems: list[dict[str, str]] = []
    stored = 0
    out = sys.stdout
    if args.json:
        out.write('{"reports": [')
    first = True
    try:
        for extracted in read_paths(args.paths):
            stored += _emit(extracted, args.json, first, store)
            first = first and not extracted.reports
            problems += [p.to_json() for p in extracted.problems]
    finally:
        if store is not None:
            store.close()
    if args.json:
        out.write('], "problems": ' + json.dumps(problems, ensure_ascii=False) + "}\n")
    else:
        for problem in problems:
            out.write(f"problem ({problem['severity']}) {problem['file']}: {problem['error']}\n")
        if store is not None:
            out.write(f"{stored} new reports stored in {store.path}\n")
    if any(p["severity"] == "error" for p in problems):
        return 2
    return 1 if problems else 0


def _emit(extracted: Extracted, as_json: bool, first: bool, store: ReportStore | None) -> int:
    for report in extracted.reports:
        if as_json:
            sys.stdout.write(("" if first else ",") + "\n" + json.dumps(report.to_json(), ensure_ascii=False))
            first = False
        else:
            sys.stdout.write(_text_line(report) + "\n")
    return store.add_many(extracted.reports) if store is not None and extracted.reports else 0
