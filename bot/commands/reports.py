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
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import TypeVar

from bot.commands.registry import Argument, Call, command, days_arg
from bot.config.loader import Config
from bot.config.reports import store_path
from bot.i18n import N_, _, ngettext, number
from bot.monitor.reports import classify_rows
from bot.render import Rendered, plain_and_html
from checks.reports import DmarcReport, Extracted, TlsReport, read_paths
from checks.reports import findings as judge
from checks.reports.smtp_tls import fix
from checks.reports.sources import SourceVerdict
from checks.reports.store import DmarcRow, ReportStore, TlsRow

__all__ = ["MAX_DAYS", "dmarc_command", "reports_cli", "tlsrpt_command"]

log = logging.getLogger("repbot.reports")
T = TypeVar("T")
MAX_DAYS = 90
DEFAULT_DAYS = 7
KNOWN_FOR_DAYS = 60  # a reporter keeps its alignment row this long after its last report
# `repbot reports`' words for a problem's severity (JSON keeps the value; a report's kind is a format's name).
SEVERITY_WORDS = {"error": N_("error"), "warning": N_("warning")}


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
    head = _("DMARC reports, last {days} days: {reports} reports, {total} messages")
    lines = [head.format(days=days, reports=number(reports), total=number(total))]
    for ours, heading in ((False, _("unknown sources (not yours)")), (True, _("your sources"))):
        mine = sorted(((k, v) for k, v in tally.items() if k[0] is ours), key=lambda kv: (-kv[1][0], kv[0]))
        if not mine:
            continue
        lines.append(heading)
        for (_ours, ip, provider), (messages, passed, held) in mine[:40]:
            mark = "✓" if passed == messages else ("✗" if not ours else "!")
            why = verdicts[ip].why if ip in verdicts else ""
            held_text = _(", {count} rejected/quarantined").format(count=held) if held else ""
            counts = _("{messages:>7} msgs {passed:>7} pass {failed:>6} fail").format(
                messages=messages, passed=passed, failed=messages - passed
            )
            lines.append(f"  {mark} {ip:<15} {provider:<12} {counts}{held_text}  ({why})")
        if len(mine) > 40:
            lines.append("  … " + _("{count} more").format(count=len(mine) - 40))
    return lines


@command(
    "dmarc",
    help=N_("what the DMARC reports counted, per reporter and source IP, unknown sources first (default 7 days)"),
    args=[Argument("days", days_arg(MAX_DAYS), required=False)],
    costly=True,
)
async def dmarc_command(call: Call) -> Rendered:
    config, ctx = call.services.config, call.services.ctx
    days = call.args.get("days") or DEFAULT_DAYS
    rows = await _read(config, ReportStore.dmarc_rows, ctx.clock().date() - timedelta(days=days - 1))
    if not rows:
        hint = "" if config.reports is not None else _(" (no [reports] mailbox is configured: see docs/reports.md)")
        return plain_and_html(_("no DMARC aggregate reports in the last {days} days").format(days=days) + hint)
    return _pre(_dmarc_table(rows, await classify_rows(rows, config, ctx), days))


def _tls_lines(rows: Sequence[TlsRow], days: int) -> list[str]:
    ok, bad = judge.tls_totals(rows)
    lines = [_("TLS reports, last {days} days").format(days=days)]
    for domain in sorted(set(ok) | set(bad)):
        failed = sum(bad[domain].values())
        mark = "✓" if not failed else "!"
        counted = _("{ok} sessions ok, {failed} failed").format(ok=number(ok[domain]), failed=number(failed))
        lines.append(f"{mark} {domain}: {counted}")
        for (mx, kind), n in sorted(bad[domain].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {judge.mx_said(mx)}: {kind} × {number(n)}")
            lines.append("      " + _("fix: {fix}").format(fix=fix(kind, domain)))
    return lines


@command(
    "tlsrpt",
    help=N_("what the SMTP TLS reports counted: sessions per domain, failures by MX and type, with the fix"),
    args=[Argument("days", days_arg(MAX_DAYS), required=False)],
)
async def tlsrpt_command(call: Call) -> Rendered:
    config = call.services.config
    days = call.args.get("days") or DEFAULT_DAYS
    rows = await _read(config, ReportStore.tls_rows, call.services.ctx.clock().date() - timedelta(days=days - 1))
    if not rows:
        return plain_and_html(_("no SMTP TLS reports in the last {days} days").format(days=days))
    return _pre(_tls_lines(rows, days))


# -- `repbot reports PATH... [--json]` --------------------------------------------------------------------


def _text_line(report: DmarcReport | TlsReport) -> str:
    """One report a line: kind, reporter, domain, day, what it counted, its id (the data stays as reported)."""
    data = report.to_json()
    if data["kind"] == "dmarc":
        passed = sum(r["count"] for r in data["records"] if "pass" in (r["dkim"], r["spf"]))
        messages = ngettext("{count} message", "{count} messages", data["messages"]).format(
            count=number(data["messages"])
        )
        records = ngettext("{count} record", "{count} records", len(data["records"])).format(
            count=number(len(data["records"]))
        )
        size = _("{messages} ({records}, {passed} passed DMARC)").format(
            messages=messages, records=records, passed=number(passed)
        )
    else:
        size = ", ".join(
            _("{ok} ok / {failed} failed").format(ok=number(p["successful"]), failed=number(p["failed"]))
            for p in data["policies"]
        )
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
            kind = _(SEVERITY_WORDS.get(problem["severity"], problem["severity"]))
            out.write(_("problem ({severity}) {file}: {error}").format(severity=kind, file=problem["file"],
                      error=problem["error"]) + "\n")  # fmt: skip
        if store is not None:
            saved = ngettext("{count} new report stored in {path}", "{count} new reports stored in {path}", stored)
            out.write(saved.format(count=number(stored), path=store.path) + "\n")
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
