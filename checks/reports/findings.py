"""What the stored reports mean, as Findings: unknown senders, your own mail failing, quiet reporters, TLS failures.

Pure functions: rows and verdicts in, findings out (the caller reads the store and classifies the sources).
Each finding is one state the monitor keeps, so its `code` and the evidence's `newest` change exactly when
there is news: a new set of unknown senders, a new kind of TLS failure, a new broken report.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from checks.model import Finding, Status
from checks.reports.smtp_tls import FIXES
from checks.reports.sources import SourceVerdict
from checks.reports.store import DmarcRow, ProblemRow, TlsRow

__all__ = [
    "Thresholds",
    "alignment_findings",
    "problem_findings",
    "quiet_findings",
    "source_findings",
    "tls_findings",
    "tls_totals",
]

SOURCES, ALIGNMENT, QUIET, TLS, INPUT = "dmarc-sources", "dmarc-reports", "dmarc-reporter", "tlsrpt-reports", "reports"
DAILY_MIN_DAYS = 3  # report days in the fortnight before the last one that make a reporter "daily"


@dataclass(frozen=True)
class Thresholds:
    """When report data becomes a warning; see [reports] in config.example.toml."""

    fail_percent: float = 2.0
    min_messages: int = 20
    quiet_days: int = 3
    window_days: int = 7
    tls_fail_percent: float = 1.0


def _digest(items: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:12]


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


@dataclass
class _Tally:
    messages: int = 0
    passed: int = 0
    dkim: int = 0
    spf: int = 0
    rejected: int = 0
    quarantined: int = 0

    def add(self, row: DmarcRow) -> None:
        self.messages += row.count
        self.passed += row.count if row.passed else 0
        self.dkim += row.count if row.dkim == "pass" else 0
        self.spf += row.count if row.spf == "pass" else 0
        self.rejected += row.count if row.disposition == "reject" else 0
        self.quarantined += row.count if row.disposition == "quarantine" else 0

    def fate(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.rejected, "rejected"), (self.quarantined, "quarantined")) if n]
        parts.append(f"{self.passed} passed DMARC" if self.passed else "none passed DMARC")
        return ", ".join(parts)


def source_findings(
    rows: Sequence[DmarcRow], verdicts: Mapping[str, SourceVerdict], domains: Sequence[str], days: int, now: datetime
) -> list[Finding]:
    """Per domain: the sources that sent as it and are not yours, with counts, reporters and fate."""
    by_domain: dict[str, dict[str, _Tally]] = defaultdict(dict)
    reporters: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        verdict = verdicts.get(row.source_ip)
        if verdict is not None and verdict.ours:
            continue
        by_domain[row.policy_domain].setdefault(row.source_ip, _Tally()).add(row)
        reporters[(row.policy_domain, row.source_ip)].add(row.provider)
    findings = []
    for domain in sorted(set(domains) | set(by_domain)):
        tallies = by_domain.get(domain, {})
        if not tallies:
            summary = f"no unknown senders as {domain} in the reports of the last {days} days"
            evidence = {"sources": 0, "domain": domain}
            findings.append(Finding(SOURCES, "unknown senders", Status.OK, summary, evidence, "", "none", now))
            continue
        findings.append(_sources_finding(domain, tallies, reporters, verdicts, days, now))
    return findings


def _sources_finding(
    domain: str,
    tallies: Mapping[str, _Tally],
    reporters: Mapping[tuple[str, str], set[str]],
    verdicts: Mapping[str, SourceVerdict],
    days: int,
    now: datetime,
) -> Finding:
    """Warn about the sources known not to be yours; those whose SPF could not be evaluated are not
    called spoofers: alone, they make the finding unknown."""
    ranked = sorted(tallies.items(), key=lambda item: -item[1].messages)
    undecided = [ip for ip, _ in ranked if ip in verdicts and not verdicts[ip].decided]
    known = [(ip, t) for ip, t in ranked if ip not in undecided]
    evidence: dict[str, object] = {"domain": domain, "sources": len(known), "undecided": len(undecided)}
    if not known:
        why = verdicts[undecided[0]].why
        summary = f"cannot tell whether {len(undecided)} sources sending as {domain} are yours: {why}"
        return Finding(SOURCES, "unknown senders", Status.UNKNOWN, summary, evidence, "", "undecided", now)
    total = sum(t.messages for _, t in known)
    shown = [f"{ip} ({t.messages} to {', '.join(sorted(reporters[(domain, ip)]))}: {t.fate()})" for ip, t in known[:5]]
    more = f"; {len(known) - 5} more" if len(known) > 5 else ""
    unsure = f"; {len(undecided)} more could not be checked ({verdicts[undecided[0]].why})" if undecided else ""
    summary = f"{len(known)} unknown sources sent {total} messages as {domain} in {days} days: {'; '.join(shown)}"
    evidence.update(
        messages=total,
        passed=sum(t.passed for _, t in known),
        newest=_digest(ip for ip, _ in known),
        top=[{"ip": ip, "messages": t.messages, "passed": t.passed, "rejected": t.rejected} for ip, t in known[:10]],
    )
    advice = (
        "If a source is a service you use, authorise it (an SPF include, or DKIM signing as your domain); "
        "otherwise it is spoofing you: once your own mail passes, move your DMARC policy to p=quarantine "
        "or p=reject."
    )
    return Finding(
        SOURCES, "unknown senders", Status.WARN, summary + more + unsure, evidence, advice, "unknown-senders", now
    )


def alignment_findings(
    rows: Sequence[DmarcRow],
    verdicts: Mapping[str, SourceVerdict],
    limits: Thresholds,
    now: datetime,
    reporters: Iterable[tuple[str, str]] = (),
) -> list[Finding]:
    """Per domain and reporter: the share of your own IPs' mail failing DMARC, aligned SPF or aligned DKIM.

    `reporters` are the (domain, reporter) pairs known from earlier reports: one whose window is now empty
    still gets its finding (ok, no data), so that an earlier failure is resolved rather than left standing.
    """
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    for pair in reporters:
        tallies[pair] = _Tally()
    for row in rows:
        verdict = verdicts.get(row.source_ip)
        if verdict is not None and verdict.ours:
            tallies[(row.policy_domain, row.provider)].add(row)
    findings = []
    for (domain, reporter), t in sorted(tallies.items()):
        if not t.messages:
            summary = f"{reporter} counted no mail from your IPs as {domain} in {limits.window_days} days"
            evidence = {"domain": domain, "messages": 0, "days": limits.window_days}
            findings.append(Finding(ALIGNMENT, reporter, Status.OK, summary, evidence, "", "no-data", now))
            continue
        fails = {"DMARC": t.messages - t.passed, "SPF": t.messages - t.spf, "DKIM": t.messages - t.dkim}
        shares = {name: _pct(n, t.messages) for name, n in fails.items()}
        evidence = {
            "domain": domain,
            "messages": t.messages,
            **{f"{k.lower()}_fail": v for k, v in fails.items()},
            "days": limits.window_days,
        }
        words = ", ".join(f"{name} {fails[name]} ({shares[name]:.1f} %)" for name in fails)
        head = f"{reporter} counted {t.messages} messages from your IPs as {domain} in {limits.window_days} days"
        if t.messages < limits.min_messages:
            summary = f"{head}: too few to judge (failing: {words})"
            findings.append(Finding(ALIGNMENT, reporter, Status.OK, summary, evidence, "", "few", now))
            continue
        over = [name for name in fails if shares[name] > limits.fail_percent]
        if not over:
            summary = f"{head}; failing: {words}"
            findings.append(Finding(ALIGNMENT, reporter, Status.OK, summary, evidence, "", "aligned", now))
            continue
        status = Status.FAIL if "DMARC" in over else Status.WARN
        code = "dmarc-fail" if "DMARC" in over else f"{over[0].lower()}-misaligned"
        summary = f"{head}; over {limits.fail_percent:g} % failing: {words}"
        advice = (
            "DKIM: sign every message with d= your domain (check the selector's key in DNS). "
            "SPF: the envelope sender's domain must be yours and list these IPs. A DMARC failure from your own IPs "
            "means neither aligned: the receiver applies your p= policy to that mail."
        )
        findings.append(Finding(ALIGNMENT, reporter, status, summary, evidence, advice, code, now))
    return findings


def quiet_findings(
    days_by_reporter: Mapping[tuple[str, str], Sequence[date]], limits: Thresholds, now: datetime
) -> list[Finding]:
    """A finding per (domain, reporter) that sent reports daily: warn once none came for `quiet_days`."""
    today = now.date()
    findings = []
    for (domain, reporter), days in sorted(days_by_reporter.items()):
        last = max(days)
        recent = [d for d in days if last - timedelta(days=14) <= d <= last]
        if len(set(recent)) < DAILY_MIN_DAYS or today - last > timedelta(days=60):
            continue  # not a daily reporter, or one from long ago (a backfill of old reports)
        silent = (today - last).days - 1
        evidence = {"last_day": last.isoformat(), "silent_days": max(0, silent), "domain": domain}
        if silent > limits.quiet_days:
            summary = f"{reporter} sent {domain}'s DMARC reports daily until {last} and none for {silent} days"
            advice = (
                "Check that the rua= mailbox still receives mail (full, rejecting, a filter), that the DMARC record "
                f"of {domain} still names it, and that its external-destination record is published."
            )
            findings.append(
                Finding(QUIET, f"{reporter} for {domain}", Status.WARN, summary, evidence, advice, "quiet", now)
            )
        else:
            summary = f"{reporter} reports daily; the last is for {last}"
            findings.append(Finding(QUIET, f"{reporter} for {domain}", Status.OK, summary, evidence, "", "daily", now))
    return findings


def tls_totals(rows: Iterable[TlsRow]) -> tuple[dict[str, int], dict[str, dict[tuple[str, str], int]]]:
    """Per policy domain: the successful sessions, and the failed ones by (receiving MX, result type)."""
    ok: dict[str, int] = defaultdict(int)
    failed: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        ok[row.policy_domain] += row.successful
        if row.failed:
            failed[row.policy_domain][(row.receiving_mx or "(no MX named)", row.result_type)] += row.failed
    return ok, failed


def tls_findings(rows: Sequence[TlsRow], domains: Sequence[str], limits: Thresholds, now: datetime) -> list[Finding]:
    """Per policy domain: sessions that failed, by receiving MX and result type, with the fix for each."""
    ok, failed = tls_totals(rows)
    findings = []
    for domain in sorted(set(ok) | set(failed) | set(domains)):
        failures = failed.get(domain, {})
        bad = sum(failures.values())
        total = ok[domain] + bad
        share = _pct(bad, total)
        evidence = {
            "domain": domain,
            "sessions": total,
            "failed": bad,
            "newest": _digest(f"{mx}|{kind}" for mx, kind in failures),
        }
        if not failures or share <= limits.tls_fail_percent:
            summary = f"TLS reports: {bad} of {total} sessions to {domain} failed in {limits.window_days} days"
            findings.append(Finding(TLS, "sessions", Status.OK, summary, evidence, "", "tls-ok", now))
            continue
        ranked = sorted(failures.items(), key=lambda item: -item[1])
        shown = "; ".join(f"{mx}: {kind} {n}" for (mx, kind), n in ranked[:5])
        window = f"in {limits.window_days} days"
        summary = f"TLS reports: {bad} of {total} sessions to {domain} failed ({share:.1f} %) {window}: {shown}"
        kinds = list(dict.fromkeys(kind for (_, kind), _ in ranked))
        advice = " ".join(
            f"{kind}: {FIXES.get(kind, 'see the report').replace('DOMAIN', domain)}." for kind in kinds[:4]
        )
        evidence["failures"] = [{"mx": mx, "result_type": kind, "count": n} for (mx, kind), n in ranked[:10]]
        status = Status.FAIL if share > 50 else Status.WARN
        findings.append(Finding(TLS, "sessions", status, summary, evidence, advice, "tls-failures", now))
    return findings


def problem_findings(problems: Sequence[ProblemRow], days: int, now: datetime) -> list[Finding]:
    """One finding on the reports input: warn while reports that could not be read arrived in the window."""
    errors = [p for p in problems if p.severity == "error"]
    caveats = len(problems) - len(errors)
    if not errors:
        summary = f"every report of the last {days} days was read" + (f" ({caveats} with a caveat)" if caveats else "")
        return [
            Finding(
                INPUT, "unreadable reports", Status.OK, summary, {"errors": 0, "warnings": caveats}, "", "read", now
            )
        ]
    newest = errors[-1]
    summary = f"{len(errors)} reports could not be read in {days} days; newest: {newest.source}: {newest.error}"
    evidence = {"errors": len(errors), "warnings": caveats, "newest": _digest([newest.source, newest.error])}
    advice = "Look at the message (it is flagged $RepbotReportProblem); `repbot reports FILE` shows what is wrong."
    return [Finding(INPUT, "unreadable reports", Status.WARN, summary, evidence, advice, "unreadable", now)]
