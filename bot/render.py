"""Reports into words: terminal text, Matrix HTML with a plain body. One place for marks and wording.

JSON is written by bot/cli.py, which streams it target by target.
"""

from __future__ import annotations

import html
import itertools
import json
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bot.durations import format_duration
from bot.i18n import N_, _, ngettext, number
from bot.transports.base import Rendered, plain_and_html
from checks import Finding, Report, Status

if TYPE_CHECKING:
    from bot.monitor.state import AlertState, DeadLetter, HistoryEntry
    from checks.canary.probe import Canary
    from checks.canary.verdict import CanaryVerdict
    from checks.providers.feedback import Complaint
    from checks.spf.evaluator import SpfResult

__all__ = [
    "MARKS",
    "Rendered",
    "canary_history_text",
    "canary_launch_line",
    "complaints_text",
    "event_kind",
    "history_text",
    "html_report",
    "matrix_report",
    "plain_and_html",
    "pre",
    "render_verdict",
    "status_name",
    "status_text",
    "status_word",
    "text_report",
]

MARKS = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.UNKNOWN: "?"}
HTML_COLOURS = {Status.OK: "#2e7d32", Status.WARN: "#b26a00", Status.FAIL: "#c62828", Status.UNKNOWN: "#616161"}
CHECK_WIDTH = 8
# Reports longer than this many findings are folded in Matrix, keeping the problems visible.
FOLD_AFTER = 6


# The status as a person reads it; --json and the metrics keep `status.value`.
STATUS_NAMES = {Status.OK: N_("ok"), Status.WARN: N_("warn"), Status.FAIL: N_("fail"), Status.UNKNOWN: N_("unknown")}


def status_name(status: Status) -> str:
    return _(STATUS_NAMES[status])


def _count(status: Status, count: int) -> str:
    """ "17 ok", "2 fail" (English keeps the bare word; other languages agree it with the count)."""
    forms = {
        Status.OK: ngettext("{count} ok", "{count} ok", count),
        Status.WARN: ngettext("{count} warn", "{count} warn", count),
        Status.FAIL: ngettext("{count} fail", "{count} fail", count),
        Status.UNKNOWN: ngettext("{count} unknown", "{count} unknown", count),
    }
    return forms[status].format(count=number(count))


def status_word(status: Status) -> str:
    return f"{MARKS[status]} {status_name(status)}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary_line(report: Report) -> str:
    counts: dict[Status, int] = {}
    for finding in report.findings:
        counts[finding.status] = counts.get(finding.status, 0) + 1
    worst_first = sorted(Status, key=lambda status: status.severity, reverse=True)
    parts = [_count(s, counts[s]) for s in worst_first if counts.get(s)]
    kind = _("ip") if report.target.is_ip else _("domain")
    found = ", ".join(parts) or _("no findings")
    return f"{report.target.value} ({kind}): {status_word(report.status)} — {found}"


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
    head = "".join(f"<th>{html.escape(word)}</th>" for word in ("", _("check"), _("subject"), _("result")))
    return f"<table><tr>{head}</tr>{rows}</table>"


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
        passed = ngettext("{count} passed", "{count} passed", len(fine)).format(count=number(len(fine)))
        parts.append(f"<details><summary>{passed}</summary>{_html_table(fine)}</details>")
    return "".join(parts)


def matrix_report(reports: Sequence[Report]) -> Rendered:
    return Rendered(
        plain="\n\n".join(text_report(report) for report in reports),
        html="<br/>".join(html_report(report) for report in reports),
    )


def pre(text: str) -> Rendered:
    """A preformatted block (tables, traces): the text as it is, in <pre> for Matrix."""
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


def spf_text(domain: str, ip: str, result: SpfResult) -> str:
    """`repbot spf` output: the result, the explanation, the counts and the evaluation trace."""
    lines = [_("SPF for {ip} at {domain}: {result}").format(ip=ip, domain=domain, result=result.result)]
    if result.explanation:  # the domain's own words, quoted as it wrote them
        lines.append(_("explanation: {text}").format(text=result.explanation))
    lines.append(
        _("DNS lookups: {lookups} of 10, void lookups: {void} of 2").format(
            lookups=result.lookups, void=result.void_lookups
        )
    )
    lines.extend(f"  {step}" for step in result.trace)
    return "\n".join(lines)


class _ZoneHealthLike(Protocol):
    def to_json(self) -> dict[str, Any]: ...

    def said(self) -> str: ...


def lists_text(health: Sequence[_ZoneHealthLike]) -> str:
    """`repbot lists` output: one line per zone with its kind and live health (JSON keeps the English values)."""
    rows = [zone.to_json() | {"detail": zone.said()} for zone in health]
    kinds = {str(row["kind"]): _(_ZONE_KINDS.get(str(row["kind"]), str(row["kind"]))) for row in rows}
    width = max([11, *(len(kind) for kind in kinds.values())])
    zone, kind, state = _("zone"), _("kind"), _("health")  # outside the f-string: pybabel reads no f-strings
    lines = [f"{zone:<34} {kind:<{width}} {state}"]
    for row in rows:
        detail = f" ({row['detail']})" if row.get("detail") else ""
        said = _(_ZONE_HEALTH.get(str(row["health"]), str(row["health"])))
        lines.append(f"{_fit(str(row['zone']), 34):<34} {kinds[str(row['kind'])]:<{width}} {said}{detail}")
    return "\n".join(lines)


# checks.dnsbl's kinds and Health values as `repbot lists` words them (ip4, ip6 and ip need no words).
_ZONE_KINDS = {"domain": N_("domain"), "allow": N_("allow"), "reputation": N_("reputation")}
_ZONE_HEALTH = {
    "healthy": N_("healthy"),
    "no-test-points": N_("no-test-points"),
    "broken": N_("broken"),
    "refused": N_("refused"),
    "unreachable": N_("unreachable"),
    "needs-dqs-key": N_("needs-dqs-key"),
}


def render_verdict(verdict: CanaryVerdict) -> Rendered:
    """The thread reply: mark, summary, the quoted evidence, what to do."""
    head = _("{mark} canary {name} ({token}): {summary}").format(
        mark=MARKS[verdict.status], name=verdict.canary.name, token=verdict.canary.token, summary=verdict.summary
    )
    lines = [head, *(f"> {line}" for line in verdict.lines[:8])]
    if verdict.advice:
        lines.append(verdict.advice)
    body = "".join(f"<blockquote><code>{html.escape(line)}</code></blockquote>" for line in verdict.lines[:8])
    advice = f"<p>{html.escape(verdict.advice)}</p>" if verdict.advice else ""
    return Rendered(plain="\n".join(lines), html=f"<p>{html.escape(head)}</p>{body}{advice}")


def canary_launch_line(name: str, sent: Canary | Finding) -> str:
    """`!canary`: one line per seed, sent (until when), not sent (why), or not even tried (why)."""
    if isinstance(sent, Finding):
        return _("{name}: not sent: {reason}").format(name=name, reason=sent.summary)
    if sent.submitted:
        return _("{name}: sent ({token}), checking until {time} UTC").format(
            name=name, token=sent.token, time=f"{sent.deadline_at:%H:%M}"
        )
    reason = _(sent.error) if sent.error else sent.reply  # the library's English reason, said here
    return _("{name}: not sent ({reason}); the verdict follows").format(name=name, reason=reason)


def canary_history_text(history: Mapping[str, Sequence[Mapping[str, Any]]], name: str | None) -> str:
    """`!canary history`: the latest verdicts per seed, newest last."""
    lines = []
    for seed, entries in sorted(history.items()):
        if name is not None and seed != name:
            continue
        for entry in entries[-10:]:
            at = str(entry.get("at", ""))[:16].replace("T", " ")
            lines.append(f"{at} {seed} {entry['canary']['token']}: {entry['kind']} — {entry['summary']}")
    return "\n".join(lines) if lines else _("no canary verdicts yet")


# -- the monitor's state and history ----------------------------------------------------------

HISTORY_LINES = 25
DEAD_LINES = 5  # dead letters !status shows; the log has every one
_STATES_A_PIECE = 1024  # states grouped by target per piece of status_pieces (~1 ms)
_PROBLEMS = (Status.WARN.value, Status.FAIL.value)


def _pending(state: AlertState, confirm: int) -> tuple[Status, str] | None:
    """A status seen but not yet confirmed, and 'pending confirmation (1 of 2 runs)'; None when nothing waits."""
    if not state.candidate:
        return None
    status = Status(json.loads(state.candidate)[0])
    if state.status == status.value:
        return None
    seen = state.candidate_count or 1
    return status, _("pending confirmation ({seen} of {runs} runs)").format(seen=seen, runs=confirm)


def status_text(
    states: Sequence[AlertState],
    mutes: Mapping[str, str],
    now: datetime,
    confirm: int = 2,
    dead: Sequence[DeadLetter] = (),
) -> str:
    """The stored state: a line per target with its worst status, a line per problem, pending or blind check;
    the mutes; the messages a room refused for good."""
    return "\n".join(itertools.chain.from_iterable(status_pieces(states, mutes, now, confirm, dead)))


def status_pieces(
    states: Sequence[AlertState],
    mutes: Mapping[str, str],
    now: datetime,
    confirm: int = 2,
    dead: Sequence[DeadLetter] = (),
) -> Iterator[list[str]]:
    """`status_text`'s lines, in pieces of a few (none while the states are sorted by target): what `!status`
    words between turns of the event loop (`bot.pacing`), 73k states taking 0.3-0.4 s."""
    by_target: dict[str, list[AlertState]] = {}
    for count, state in enumerate(states, 1):
        by_target.setdefault(state.target, []).append(state)
        if not count % _STATES_A_PIECE:
            yield []
    yield [] if states else [_("no results yet: the first scheduled run has not finished (try !run)")]
    for target, group in sorted(by_target.items()):
        yield _target_status_lines(target, group, now, confirm)
    lines = [
        _("muted: {what} until {time} UTC").format(what=what, time=until[:16].replace("T", " "))
        for what, until in sorted(mutes.items())
    ]
    if dead:
        lines.append(
            ngettext(
                "undelivered: {count} message(s) refused by their room (newest last):",
                "undelivered: {count} message(s) refused by their room (newest last):",
                len(dead),
            ).format(count=number(len(dead)))
        )
        for letter in dead[-DEAD_LINES:]:
            first = letter.item.plain.split("\n", 1)[0][:60] or letter.item.kind
            lines.append(f"    {letter.at[:16].replace('T', ' ')} {letter.room}: {letter.short_reason} — {first}")
    yield lines


def _target_status_lines(target: str, group: Sequence[AlertState], now: datetime, confirm: int) -> list[str]:
    known = [Status(s.status) for s in group if s.status]
    blind = [s for s in group if s.last_status == Status.UNKNOWN.value]
    pending = {s.key: found for s in group if (found := _pending(s, confirm)) is not None}
    worst = max(known, key=lambda status: status.severity, default=Status.UNKNOWN)
    seen = max(s.last_seen for s in group)
    ago = format_duration(now - datetime.fromisoformat(seen)) if seen else "?"
    said = status_name(worst)
    if not known and pending:
        # Nothing confirmed yet: say what was seen, and that it waits for its next run, not "unknown".
        worst = max((status for status, _words in pending.values()), key=lambda status: status.severity)
        said = f"{status_name(worst)}, {min(words for _s, words in pending.values())}"
    checks = ngettext("{count} checks", "{count} checks", len(group)).format(count=number(len(group)))
    last = _("last run {duration} ago").format(duration=ago)
    lines = [f"{MARKS[worst]} {target}: {said}, {checks}, {last}"]
    for state in sorted(group, key=lambda s: (s.check, s.subject)):
        if state.status in _PROBLEMS:
            since = format_duration(now - datetime.fromisoformat(state.since)) if state.since else "?"
            mark = MARKS[Status(state.status)]
            lasting = _("for {duration}").format(duration=since)
            lines.append(f"    {mark} {state.check} {state.subject} {lasting}: {state.summary}")
        waiting = pending.get(state.key)
        if waiting is not None and waiting[0] is not Status.OK:
            # A check that waits to be confirmed as ok is counted in the target's line, not said: after a /20's
            # first run that was 73k lines (5.9 MB) of "ok, pending confirmation".
            status, words = waiting
            summary = state.candidate_summary
            said = status_name(status)
            lines.append(f"    {MARKS[status]} {state.check} {state.subject}: {said}, {words}: {summary}")
    for state in blind:
        summary = state.unknown_summary or status_name(Status.UNKNOWN)
        lines.append(f"    ? {state.check} {state.subject}: {summary}")
    return lines


EVENT_KINDS = {
    "problem": N_("problem"),
    "resolved": N_("resolved"),
    "changed": N_("changed"),
    "evidence": N_("evidence"),
    "cannot-check": N_("cannot check"),
    "checking-again": N_("checking again"),
}


def event_kind(kind: str) -> str:
    """An event's kind as a person reads it (the stored and JSON kind stays as it is)."""
    return _(EVENT_KINDS[kind]) if kind in EVENT_KINDS else kind


def history_text(entries: Sequence[HistoryEntry], target: str, check: str | None) -> str:
    """The changes of one target (and check), newest last, at most HISTORY_LINES."""
    what = f"{target} {check}" if check else target
    if not entries:
        return _("no changes recorded for {what}").format(what=what)
    lines = [_("changes for {what} ({count}):").format(what=what, count=number(len(entries)))]
    for entry in entries[-HISTORY_LINES:]:
        lasted = " " + _("after {duration}").format(duration=format_duration(entry.lasted)) if entry.lasted else ""
        muted = " " + _("(muted)") if entry.muted else ""
        stamp = entry.at[:16].replace("T", " ")
        kind = event_kind(entry.kind)
        line = f"{stamp} {kind}{lasted} {entry.check} {entry.subject}: {entry.summary}{muted}"
        lines.append(line)
    return "\n".join(lines)


def complaints_text(recent: Sequence[Complaint], days: int, unread: str = "") -> str:
    """`!complaints`: the count, per day, per domain, and the latest ten; `unread` says why the mailbox was not read."""
    from checks.providers import feedback

    note = f" ({unread})" if unread else ""
    if not recent:
        return _("no complaints in the last {days} days").format(days=days) + note
    complaints = ngettext(
        "{count} complaints in the last {days} days", "{count} complaints in the last {days} days", len(recent)
    )
    lines = [complaints.format(count=number(len(recent)), days=days) + note]
    lines += [f"  {day}: {n}" for day, n in sorted(feedback.count_by(recent, "day").items())]
    lines += [f"  {domain}: {n}" for domain, n in feedback.count_by(recent, "domain").most_common()]
    lines += [feedback.complaint_line(c) for c in recent[-10:]]
    return "\n".join(lines)
