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

from checks.i18n import N_, _, ngettext, number
from checks.model import Finding, Status
from checks.reports.smtp_tls import fix
from checks.reports.sources import SourceVerdict
from checks.reports.store import DmarcRow, ProblemRow, TlsRow

__all__ = [
    "NO_MX",
    "Thresholds",
    "alignment_findings",
    "mx_said",
    "problem_findings",
    "quiet_findings",
    "source_findings",
    "tls_findings",
    "tls_totals",
]

SOURCES, ALIGNMENT, QUIET, TLS, INPUT = "dmarc-sources", "dmarc-reports", "dmarc-reporter", "tlsrpt-reports", "reports"
DAILY_MIN_DAYS = 3  # report days in the fortnight before the last one that make a reporter "daily"
NO_MX = N_("(no MX named)")  # a failure a report gives no receiving MX for; a key in the evidence, said translated


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


def _counted(said: str, count: int) -> str:
    return said.format(count=number(count))


# Counts said inside a longer sentence, each with its own plural (the English keeps its words: "1 days" too).
def _days(days: int) -> str:
    return _counted(ngettext("{count} days", "{count} days", days), days)


def _messages(count: int) -> str:
    return _counted(ngettext("{count} messages", "{count} messages", count), count)


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
        """What became of the messages: "42 rejected, 3 quarantined, none passed DMARC"."""
        parts = []
        if self.rejected:
            parts.append(_counted(ngettext("{count} rejected", "{count} rejected", self.rejected), self.rejected))
        if self.quarantined:
            said = ngettext("{count} quarantined", "{count} quarantined", self.quarantined)
            parts.append(_counted(said, self.quarantined))
        if self.passed:
            parts.append(_counted(ngettext("{count} passed DMARC", "{count} passed DMARC", self.passed), self.passed))
        else:
            parts.append(_("none passed DMARC"))
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
            said = ngettext(
                "no unknown senders as {domain} in the reports of the last {days} days",
                "no unknown senders as {domain} in the reports of the last {days} days",
                days,
            )
            summary = said.format(domain=domain, days=number(days))
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
    undecided = [ip for ip, _tally in ranked if ip in verdicts and not verdicts[ip].decided]
    known = [(ip, t) for ip, t in ranked if ip not in undecided]
    evidence: dict[str, object] = {"domain": domain, "sources": len(known), "undecided": len(undecided)}
    if not known:
        said = ngettext(
            "cannot tell whether {count} sources sending as {domain} are yours: {why}",
            "cannot tell whether {count} sources sending as {domain} are yours: {why}",
            len(undecided),
        )
        summary = said.format(count=number(len(undecided)), domain=domain, why=verdicts[undecided[0]].why)
        return Finding(SOURCES, "unknown senders", Status.UNKNOWN, summary, evidence, "", "undecided", now)
    total = sum(t.messages for _ip, t in known)
    unsure = ""
    if undecided:
        said = ngettext(
            "; {count} more could not be checked ({why})",
            "; {count} more could not be checked ({why})",
            len(undecided),
        )
        unsure = said.format(count=number(len(undecided)), why=verdicts[undecided[0]].why)
    said = ngettext(
        "{count} unknown sources sent {messages} as {domain} in {days}: {shown}",
        "{count} unknown sources sent {messages} as {domain} in {days}: {shown}",
        len(known),
    )
    shown = _listed(domain, known, reporters)
    summary = said.format(
        count=number(len(known)), messages=_messages(total), domain=domain, days=_days(days), shown=shown
    )
    evidence.update(
        messages=total,
        passed=sum(t.passed for _ip, t in known),
        newest=_digest(ip for ip, _tally in known),
        top=[{"ip": ip, "messages": t.messages, "passed": t.passed, "rejected": t.rejected} for ip, t in known[:10]],
    )
    advice = _(
        "If a source is a service you use, authorise it (an SPF include, or DKIM signing as your domain); "
        "otherwise it is spoofing you: once your own mail passes, move your DMARC policy to p=quarantine "
        "or p=reject."
    )
    return Finding(SOURCES, "unknown senders", Status.WARN, summary + unsure, evidence, advice, "unknown-senders", now)


def _listed(domain: str, known: Sequence[tuple[str, _Tally]], reporters: Mapping[tuple[str, str], set[str]]) -> str:
    """The five biggest unknown sources, each with its reporters and fate, and how many more there are."""
    shown = [
        _("{ip} ({count} to {reporters}: {fate})").format(
            ip=ip, count=number(t.messages), reporters=", ".join(sorted(reporters[(domain, ip)])), fate=t.fate()
        )
        for ip, t in known[:5]
    ]
    more = "; " + _counted(_("{count} more"), len(known) - 5) if len(known) > 5 else ""
    return "; ".join(shown) + more


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
            said = _("{reporter} counted no mail from your IPs as {domain} in {days}")
            summary = said.format(reporter=reporter, domain=domain, days=_days(limits.window_days))
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
        words = ", ".join(
            _("{method} {count} ({share} %)").format(
                method=name, count=number(fails[name]), share=number(shares[name], 1)
            )
            for name in fails
        )
        head = _("{reporter} counted {messages} from your IPs as {domain} in {days}").format(
            reporter=reporter, messages=_messages(t.messages), domain=domain, days=_days(limits.window_days)
        )
        if t.messages < limits.min_messages:
            summary = _("{head}: too few to judge (failing: {words})").format(head=head, words=words)
            findings.append(Finding(ALIGNMENT, reporter, Status.OK, summary, evidence, "", "few", now))
            continue
        over = [name for name in fails if shares[name] > limits.fail_percent]
        if not over:
            summary = _("{head}; failing: {words}").format(head=head, words=words)
            findings.append(Finding(ALIGNMENT, reporter, Status.OK, summary, evidence, "", "aligned", now))
            continue
        status = Status.FAIL if "DMARC" in over else Status.WARN
        code = "dmarc-fail" if "DMARC" in over else f"{over[0].lower()}-misaligned"
        summary = _("{head}; over {limit} % failing: {words}").format(
            head=head, limit=number(limits.fail_percent), words=words
        )
        advice = _(
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
            said = ngettext(
                "{reporter} sent {domain}'s DMARC reports daily until {last} and none for {silent} days",
                "{reporter} sent {domain}'s DMARC reports daily until {last} and none for {silent} days",
                silent,
            )
            summary = said.format(reporter=reporter, domain=domain, last=last, silent=number(silent))
            advice = _(
                "Check that the rua= mailbox still receives mail (full, rejecting, a filter), that the DMARC record "
                "of {domain} still names it, and that its external-destination record is published."
            ).format(domain=domain)
            findings.append(
                Finding(QUIET, f"{reporter} for {domain}", Status.WARN, summary, evidence, advice, "quiet", now)
            )
        else:
            summary = _("{reporter} reports daily; the last is for {last}").format(reporter=reporter, last=last)
            findings.append(Finding(QUIET, f"{reporter} for {domain}", Status.OK, summary, evidence, "", "daily", now))
    return findings


def tls_totals(rows: Iterable[TlsRow]) -> tuple[dict[str, int], dict[str, dict[tuple[str, str], int]]]:
    """Per policy domain: the successful sessions, and the failed ones by (receiving MX, result type)."""
    ok: dict[str, int] = defaultdict(int)
    failed: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        ok[row.policy_domain] += row.successful
        if row.failed:
            failed[row.policy_domain][(row.receiving_mx or NO_MX, row.result_type)] += row.failed
    return ok, failed


def mx_said(mx: str) -> str:
    """A receiving MX as a person reads it: the host name, or "(no MX named)" in their language."""
    return _(NO_MX) if mx == NO_MX else mx


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
        counted = {"bad": number(bad), "total": number(total), "domain": domain, "days": _days(limits.window_days)}
        if not failures or share <= limits.tls_fail_percent:
            said = ngettext(
                "TLS reports: {bad} of {total} sessions to {domain} failed in {days}",
                "TLS reports: {bad} of {total} sessions to {domain} failed in {days}",
                total,
            )
            summary = said.format(**counted)
            findings.append(Finding(TLS, "sessions", Status.OK, summary, evidence, "", "tls-ok", now))
            continue
        ranked = sorted(failures.items(), key=lambda item: -item[1])
        shown = "; ".join(f"{mx_said(mx)}: {kind} {number(n)}" for (mx, kind), n in ranked[:5])
        said = ngettext(
            "TLS reports: {bad} of {total} sessions to {domain} failed ({share} %) in {days}: {shown}",
            "TLS reports: {bad} of {total} sessions to {domain} failed ({share} %) in {days}: {shown}",
            total,
        )
        summary = said.format(**counted, share=number(share, 1), shown=shown)
        kinds = list(dict.fromkeys(kind for (_mx, kind), _n in ranked))
        advice = " ".join(f"{kind}: {fix(kind, domain)}." for kind in kinds[:4])
        evidence["failures"] = [{"mx": mx, "result_type": kind, "count": n} for (mx, kind), n in ranked[:10]]
        status = Status.FAIL if share > 50 else Status.WARN
        findings.append(Finding(TLS, "sessions", status, summary, evidence, advice, "tls-failures", now))
    return findings


def problem_findings(problems: Sequence[ProblemRow], days: int, now: datetime) -> list[Finding]:
    """One finding on the reports input: warn while reports that could not be read arrived in the window."""
    errors = [p for p in problems if p.severity == "error"]
    caveats = len(problems) - len(errors)
    if not errors:
        said = ngettext(
            "every report of the last {days} days was read", "every report of the last {days} days was read", days
        )
        noted = ngettext(" ({count} with a caveat)", " ({count} with a caveat)", caveats) if caveats else ""
        summary = said.format(days=number(days)) + _counted(noted, caveats)
        return [
            Finding(
                INPUT, "unreadable reports", Status.OK, summary, {"errors": 0, "warnings": caveats}, "", "read", now
            )
        ]
    newest = errors[-1]
    said = ngettext(
        "{count} reports could not be read in {days}; newest: {source}: {error}",
        "{count} reports could not be read in {days}; newest: {source}: {error}",
        len(errors),
    )
    summary = said.format(count=number(len(errors)), days=_days(days), source=newest.source, error=newest.error)
    evidence = {"errors": len(errors), "warnings": caveats, "newest": _digest([newest.source, newest.error])}
    advice = _("Look at the message (it is flagged $RepbotReportProblem); `repbot reports FILE` shows what is wrong.")
    return [Finding(INPUT, "unreadable reports", Status.WARN, summary, evidence, advice, "unreadable", now)]
