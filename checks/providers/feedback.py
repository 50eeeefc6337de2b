"""Complaint feedback loops (Microsoft JMRP, Yahoo CFL, ...): ARF reports (RFC 5965) read from an IMAP mailbox.

`parse_report` is pure: bytes in, a `Complaint` out (or `NotAReport`). It reads strict RFC 5965 reports, legacy
Hotmail JMRP (`X-HmXmrOriginalRecipient`, `X-sid-pra` on the attached message) and the 2026 header-only, anonymised
form. A Complaint never holds the complainant's address: every string kept is scrubbed of it.

`collect` processes the mailbox in this order, per message: fetch, parse, record in the journal, then mark (flag
or move). The journal is keyed by a hash of the report's bytes, so recording twice is harmless. A crash between
"record" and "mark" leaves the message unmarked: it is read again next time, and the journal ignores the repeat
(nothing is counted twice). A crash before "record" leaves it unmarked too: it is read next time (nothing is
lost). Marking first would lose the complaint if the process died before recording it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from checks.i18n import _, ngettext
from checks.mailbox import Mailbox, MailboxSettings
from checks.model import Finding, Status
from checks.providers._feedback_parse import DEFAULT_VERP, REPORTERS, Complaint, NotAReport, parse_report

__all__ = [
    "DEFAULT_VERP",
    "REPORTERS",
    "CollectResult",
    "Complaint",
    "ComplaintSink",
    "FeedbackSettings",
    "JsonlJournal",
    "NotAReport",
    "collect",
    "complaint_line",
    "count_by",
    "findings_for_complaints",
    "parse_report",
]

log = logging.getLogger(__name__)


# -- the journal and the mailbox run --------------------------------------------------------------------


class ComplaintSink(Protocol):
    """Where complaints are recorded durably; `record` returns False for a report already recorded."""

    async def record(self, complaint: Complaint) -> bool: ...


class JsonlJournal:
    """A JSON-lines journal of scrubbed complaints, fsynced per line; the default ComplaintSink."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.seen: set[str] = {c.report_id for c in self.complaints()}

    def complaints(self, since: datetime | None = None) -> list[Complaint]:
        """Every recorded complaint (arrived at or after `since`); a torn last line is ignored."""
        found = []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                complaint = Complaint.from_json(json.loads(line))
            except (ValueError, TypeError, KeyError):
                continue
            if since is None or complaint.arrived >= since:
                found.append(complaint)
        return found

    async def record(self, complaint: Complaint) -> bool:
        if complaint.report_id in self.seen:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(complaint.to_json(), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.seen.add(complaint.report_id)
        return True


@dataclass(frozen=True)
class FeedbackSettings:
    mailbox: MailboxSettings
    folder: str = "INBOX"
    mark: str = "flag"  # "flag" (add `keyword`) or "move" (to `processed_folder`)
    keyword: str = "$RepbotSeen"
    processed_folder: str = "Processed"
    max_bytes: int = 2_000_000
    verp: str = DEFAULT_VERP
    window_days: int = 7


@dataclass
class CollectResult:
    new: list[Complaint] = field(default_factory=list)
    repeated: int = 0
    skipped: int = 0


async def collect(settings: FeedbackSettings, sink: ComplaintSink, now: datetime | None = None) -> CollectResult:
    """Read every unmarked report: record it, then mark it. Raises MailboxError when the mailbox is unusable."""
    result = CollectResult()
    async with Mailbox(settings.mailbox) as box:
        if settings.mark == "move":
            await box.create(settings.processed_folder)
        await box.select(settings.folder)
        for uid in await box.unprocessed(settings.keyword):
            fetched = await box.fetch(uid, settings.max_bytes)
            try:
                if fetched.raw is None:
                    raise NotAReport(f"too large ({fetched.size} bytes, the cap is {settings.max_bytes})")
                complaint = parse_report(fetched.raw, settings.verp, now)
            except NotAReport as why:
                log.warning("feedback: skipped UID %s in %s: %s", uid, settings.folder, why)
                await box.flag(uid, settings.keyword)  # garbage stays where it is, logged once
                result.skipped += 1
                continue
            if await sink.record(complaint):
                result.new.append(complaint)
            else:
                result.repeated += 1
            if settings.mark == "move":
                await box.move(uid, settings.processed_folder)
            else:
                await box.flag(uid, settings.keyword)
    return result


# -- counting and findings ------------------------------------------------------------------------------


def count_by(complaints: Iterable[Complaint], key: str) -> Counter[str]:
    """Complaints per 'day' or per 'domain' (or any Complaint attribute)."""
    if key == "day":
        return Counter(c.day.isoformat() for c in complaints)
    attribute = "sending_domain" if key == "domain" else key
    return Counter(str(getattr(c, attribute)) or "unknown" for c in complaints)


def complaint_line(complaint: Complaint) -> str:
    """One line for the room: reporter, original subject, domain, how it was matched. Never the complainant."""
    match = {
        "message-id": _("Message-ID {id}").format(id=complaint.message_id),
        "verp": _("VERP token {token}").format(token=complaint.token),
    }
    how = match.get(complaint.attributed_by) or _("subject only")
    subject = complaint.subject or _("(no subject)")
    reported = complaint.reported_domain
    also = f", Reported-Domain {reported}" if reported and reported != complaint.sending_domain else ""
    line = _("{reporter}: {type} complaint on {day} about “{subject}” from {domain} ({how}{also})")
    return line.format(
        reporter=complaint.reporter, type=complaint.feedback_type, day=complaint.day, subject=subject,
        domain=complaint.sending_domain or _("an unknown domain"), how=how, also=also,
    )  # fmt: skip


def findings_for_complaints(
    new: Sequence[Complaint], recent: Sequence[Complaint], domains: Sequence[str], days: int, now: datetime
) -> list[Finding]:
    """One finding per sending domain: warn while it has complaints in the last `days` days, else ok.

    A complaint is an event, but the monitor alerts on changes of state, so each domain's state carries it:
    the evidence's `newest` (the id of its newest recorded complaint) changes exactly when new complaints
    arrive, and the summary then names their reporters and original subjects. One state per domain, never
    one per complaint. `new` are this run's complaints; `recent` is the journal (in recording order).
    """
    since = now - timedelta(days=days)
    fresh_ids = {c.report_id for c in new}
    by_domain: dict[str, list[Complaint]] = {}
    for c in recent:
        if c.arrived >= since or c.report_id in fresh_ids:
            by_domain.setdefault(c.sending_domain or "unknown", []).append(c)
    for c in new:  # a caller may pass new complaints that are not in `recent`
        mine = by_domain.setdefault(c.sending_domain or "unknown", [])
        if all(c.report_id != m.report_id for m in mine):
            mine.append(c)
    return [
        _domain_finding(domain, by_domain.get(domain, []), fresh_ids, days, now)
        for domain in sorted(set(domains) | set(by_domain))
    ]


def _brief(complaint: Complaint) -> str:
    return _("{reporter} about “{subject}”").format(
        reporter=complaint.reporter, subject=complaint.subject or _("(no subject)")
    )


def _domain_finding(domain: str, mine: Sequence[Complaint], fresh_ids: set[str], days: int, now: datetime) -> Finding:
    n = len(mine)
    evidence: dict[str, object] = {"count": n, "days": days}
    window = _("{count} in the last {days} days").format(count=n, days=days)
    if not mine:
        summary = _("0 complaints about mail from {domain} in the last {days} days").format(domain=domain, days=days)
        return Finding("complaints", domain, Status.OK, summary, evidence, code="no-complaints", observed_at=now)
    fresh = [c for c in mine if c.report_id in fresh_ids]
    newest = mine[-1]
    evidence.update(new=len(fresh), newest=newest.report_id[:12])
    if len(fresh) == 1:
        summary = _("new complaint: {line}; {window}").format(line=complaint_line(fresh[0]), window=window)
    elif fresh:
        more = _("; {count} more").format(count=len(fresh) - 3) if len(fresh) > 3 else ""
        shown = "; ".join(_brief(c) for c in fresh[:3]) + more
        summary = _("{count} new complaints about mail from {domain} ({window}): {shown}").format(
            count=len(fresh), domain=domain, window=window, shown=shown
        )
    else:
        summary = ngettext(
            "{count} complaint about mail from {domain} in the last {days} days; newest: {newest}",
            "{count} complaints about mail from {domain} in the last {days} days; newest: {newest}",
            n,
        ).format(count=n, domain=domain, days=days, newest=_brief(newest))
    advice = _("Find the list these recipients came from and remove them; check how they subscribed.")
    return Finding("complaints", domain, Status.WARN, summary, evidence, advice, "complaints", now)
