"""Reports into words: terminal text, Matrix HTML with a plain body. One place for marks and wording.

JSON is written by bot/cli.py, which streams it target by target.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from checks import Finding, Report, Status

if TYPE_CHECKING:
    from checks.spf.evaluator import SpfResult

__all__ = [
    "MARKS",
    "Rendered",
    "html_report",
    "matrix_report",
    "status_word",
    "text_report",
]

MARKS = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.UNKNOWN: "?"}
HTML_COLOURS = {Status.OK: "#2e7d32", Status.WARN: "#b26a00", Status.FAIL: "#c62828", Status.UNKNOWN: "#616161"}
CHECK_WIDTH = 8
# Reports longer than this many findings are folded in Matrix, keeping the problems visible.
FOLD_AFTER = 6


@dataclass(frozen=True)
class Rendered:
    """A message in both forms a Matrix client shows: a plain body and an HTML body."""

    plain: str
    html: str


def status_word(status: Status) -> str:
    return f"{MARKS[status]} {status.value}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary_line(report: Report) -> str:
    counts: dict[Status, int] = {}
    for finding in report.findings:
        counts[finding.status] = counts.get(finding.status, 0) + 1
    parts = [f"{counts[s]} {s.value}" for s in (Status.FAIL, Status.WARN, Status.UNKNOWN, Status.OK) if counts.get(s)]
    kind = report.target.json_kind
    return f"{report.target.value} ({kind}): {status_word(report.status)} — {', '.join(parts) or 'no findings'}"


def text_report(report: Report, width: int = 80) -> str:
    """A compact table for an 80-column terminal: one entry a finding, advice under each problem."""
    lines = [_summary_line(report)]
    indent = " " * (CHECK_WIDTH + 5)
    for finding in report.findings:
        head = f"  {MARKS[finding.status]} {finding.check:<{CHECK_WIDTH}} {finding.subject}: {finding.summary}"
        lines.extend(textwrap.wrap(head, width, subsequent_indent=indent, break_on_hyphens=False) or [head])
        if finding.advice and finding.status is not Status.OK:
            lines.extend(
                textwrap.wrap("→ " + finding.advice, width, initial_indent=indent, subsequent_indent=indent + "  ")
            )
    return "\n".join(lines)


def _html_row(finding: Finding) -> str:
    colour = HTML_COLOURS[finding.status]
    advice = f"<br/><i>{html.escape(finding.advice)}</i>" if finding.advice and finding.status is not Status.OK else ""
    return (
        f'<tr><td><font color="{colour}">{MARKS[finding.status]}</font></td>'
        f"<td>{html.escape(finding.check)}</td><td>{html.escape(finding.subject)}</td>"
        f"<td>{html.escape(finding.summary)}{advice}</td></tr>"
    )


def _html_table(findings: Sequence[Finding]) -> str:
    rows = "".join(_html_row(finding) for finding in findings)
    return f"<table><tr><th></th><th>check</th><th>subject</th><th>result</th></tr>{rows}</table>"


def html_report(report: Report) -> str:
    """Matrix HTML: problems in a table, the rest folded in <details> when the report is long."""
    head = f"<b>{html.escape(_summary_line(report))}</b>"
    problems = [f for f in report.findings if f.status is not Status.OK]
    fine = [f for f in report.findings if f.status is Status.OK]
    if len(report.findings) <= FOLD_AFTER:
        return head + _html_table(report.findings)
    parts = [head]
    if problems:
        parts.append(_html_table(problems))
    if fine:
        parts.append(f"<details><summary>{len(fine)} passed</summary>{_html_table(fine)}</details>")
    return "".join(parts)


def matrix_report(reports: Sequence[Report]) -> Rendered:
    return Rendered(
        plain="\n\n".join(text_report(report) for report in reports),
        html="<br/>".join(html_report(report) for report in reports),
    )


def plain_and_html(text: str) -> Rendered:
    """A short message with no markup of its own, escaped for HTML."""
    return Rendered(plain=text, html=html.escape(text).replace("\n", "<br/>"))


def spf_text(domain: str, ip: str, result: SpfResult) -> str:
    """`repbot spf` output: the result, the explanation, the counts and the evaluation trace."""
    lines = [f"SPF for {ip} at {domain}: {result.result}"]
    if result.explanation:
        lines.append(f"explanation: {result.explanation}")
    lines.append(f"DNS lookups: {result.lookups} of 10, void lookups: {result.void_lookups} of 2")
    lines.extend(f"  {step}" for step in result.trace)
    return "\n".join(lines)


class _ZoneHealthLike(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def lists_text(health: Sequence[_ZoneHealthLike]) -> str:
    """`repbot lists` output: one line per zone with its kind and live health."""
    rows = [zone.to_json() for zone in health]
    lines = [f"{'zone':<34} {'kind':<11} health"]
    for row in rows:
        detail = f" ({row['detail']})" if row.get("detail") else ""
        lines.append(f"{_fit(str(row['zone']), 34):<34} {row['kind']!s:<11} {row['health']}{detail}")
    return "\n".join(lines)
