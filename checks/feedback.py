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

import email
import email.errors
import email.header
import email.policy
import email.utils
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Protocol

from .mailbox import Mailbox, MailboxSettings
from .model import Finding, Status

__all__ = [
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

DEFAULT_VERP = r"^[^@+]+[+](?P<token>[^@]+)@"
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_ENCODED_ADDRESS = re.compile(r"[\w.-]+=[\w-]+(?:\.[\w-]+)+")
REPORTERS = {
    "hotmail.com": "Microsoft JMRP",
    "outlook.com": "Microsoft JMRP",
    "microsoft.com": "Microsoft JMRP",
    "yahoo.com": "Yahoo CFL",
    "yahooinc.com": "Yahoo CFL",
    "aol.com": "Yahoo CFL (AOL)",
    "comcast.net": "Comcast FBL",
    "mail.ru": "Mail.ru FBL",
}


class NotAReport(ValueError):
    """Raised when a message is not a usable complaint report; the message says why, without addresses."""


@dataclass(frozen=True)
class Complaint:
    """One complaint, scrubbed: who reported it, about which of our messages, and how it was matched."""

    report_id: str
    reporter: str
    feedback_type: str
    form: str  # "rfc5965", "header-only" (2026 JMRP and others) or "jmrp-legacy"
    arrived: datetime
    sending_domain: str
    source_ip: str
    message_id: str
    subject: str
    token: str
    attributed_by: str  # "message-id", "verp", "subject" or "none"

    @property
    def day(self) -> date:
        return self.arrived.astimezone(UTC).date()

    def to_json(self) -> dict[str, str]:
        data = asdict(self)
        data["arrived"] = self.arrived.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Complaint:
        values = dict(data)
        return cls(**{**values, "arrived": datetime.fromisoformat(values["arrived"])})  # type: ignore[arg-type]


# -- parsing (pure) -------------------------------------------------------------------------------------


def _walk_parts(message: Message) -> list[Message]:
    return [part for part in message.walk() if part is not message]


def _headers_of(part: Message) -> Message:
    """The headers inside a message/* or text/rfc822-headers part, as a Message."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    text = part.get_payload(decode=True) or b""
    return HeaderParser(policy=email.policy.compat32).parsestr(bytes(text).decode("utf-8", "replace"))


def _scrubber(addresses: Iterable[str]) -> re.Pattern[str] | None:
    words = {a.strip().strip("<>").lower() for a in addresses if a and "@" in a}
    words |= {w.split("@")[0] for w in list(words) if len(w.split("@")[0]) >= 4}
    if not words:
        return None
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)


def _clean(text: str, scrub: re.Pattern[str] | None, limit: int = 160, addresses: bool = True) -> str:
    """One line, the complainant's address (and local part) replaced; other addresses too unless told not to."""
    text = " ".join(str(text).split())
    if scrub is not None:
        text = scrub.sub("[redacted]", text)
    if addresses:
        text = _ADDRESS.sub("[address]", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _domain(address: str) -> str:
    _, parsed = email.utils.parseaddr(address)
    return parsed.rpartition("@")[2].lower().strip(">") if "@" in parsed else ""


def _arrival(*values: str | None) -> datetime | None:
    for value in values:
        if not value:
            continue
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _find_parts(message: Message) -> tuple[Message | None, Message | None]:
    """The feedback-report fields and the original's headers (either may be missing)."""
    report = original = None
    for part in _walk_parts(message):
        kind = part.get_content_type()
        if kind == "message/feedback-report" and report is None:
            report = _headers_of(part)
        elif kind in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _headers_of(part)
    return report, original


def parse_report(raw: bytes, verp: str = DEFAULT_VERP, now: datetime | None = None) -> Complaint:
    """The Complaint in a raw report; raises NotAReport (non-ARF, truncated, unreadable)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    defects = [d for part in message.walk() for d in part.defects]
    if any(type(d).__name__ in ("CloseBoundaryNotFoundDefect", "StartBoundaryNotFoundDefect") for d in defects):
        raise NotAReport("truncated MIME (a multipart without its closing boundary)")
    report, original = _find_parts(message)
    if report is None and (original is None or original.get("X-HmXmrOriginalRecipient") is None):
        raise NotAReport(f"not an ARF report ({message.get_content_type()})")
    fields = report if report is not None else Message()
    original = original if original is not None else Message()
    if report is not None and not fields.get("Feedback-Type"):
        raise NotAReport("a feedback-report part without Feedback-Type")
    complainants = [
        *fields.get_all("Original-Rcpt-To", []),
        *original.get_all("X-HmXmrOriginalRecipient", []),
        *(
            email.utils.parseaddr(v)[1]
            for h in ("To", "Cc", "Delivered-To", "X-Original-To")
            for v in original.get_all(h, [])
        ),
    ]
    scrub = _scrubber(complainants)
    return _complaint(raw, message, fields, original, report is not None, scrub, verp, now or datetime.now(UTC))


def _form(message: Message, has_report: bool) -> str:
    if not has_report:
        return "jmrp-legacy"
    kinds = {part.get_content_type() for part in _walk_parts(message)}
    return "rfc5965" if "message/rfc822" in kinds else "header-only"


def _complaint(
    raw: bytes,
    message: Message,
    fields: Message,
    original: Message,
    has_report: bool,
    scrub: re.Pattern[str] | None,
    verp: str,
    now: datetime,
) -> Complaint:
    reporter_domain = _domain(str(message.get("From", "")))
    reporter = REPORTERS.get(reporter_domain) or REPORTERS.get(".".join(reporter_domain.split(".")[-2:]))
    reporter = reporter or _clean(str(fields.get("User-Agent", "")) or reporter_domain or "unknown", scrub, 60)
    sender = (
        str(fields.get("Reported-Domain", "") or "")
        or _domain(str(original.get("From", "")))
        or _domain(str(fields.get("Original-Mail-From", "")))
        or _domain(str(original.get("X-sid-pra", "")))
        or _domain(str(original.get("Return-Path", "")))
    )
    message_id = _clean(str(original.get("Message-ID", "") or ""), scrub, 200, addresses=False).strip()
    subject = _clean(_decode(str(original.get("Subject", "") or "")), scrub)
    token = _verp_token(str(original.get("Return-Path", "") or fields.get("Original-Mail-From", "") or ""), verp)
    if token and ((scrub is not None and scrub.search(token)) or _ENCODED_ADDRESS.search(token)):
        token = ""  # a classic VERP token encodes the recipient: never keep it
    by = "message-id" if message_id else "verp" if token else "subject" if subject else "none"
    arrived = _arrival(fields.get("Arrival-Date"), message.get("Date"), original.get("Date")) or now
    return Complaint(
        report_id=hashlib.sha256(raw).hexdigest()[:24],
        reporter=reporter,
        feedback_type=_clean(str(fields.get("Feedback-Type", "") or "abuse"), scrub, 30).lower(),
        form=_form(message, has_report),
        arrived=arrived,
        sending_domain=_clean(sender.lower().rstrip("."), scrub, 100),
        source_ip=_clean(
            str(fields.get("Source-IP", "") or original.get("X-Originating-IP", "") or ""), scrub, 45
        ).strip("[]"),
        message_id=message_id,
        subject=subject,
        token=token,
        attributed_by=by,
    )


def _decode(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return value


def _verp_token(address: str, pattern: str) -> str:
    _, bare = email.utils.parseaddr(address)
    match = re.search(pattern, bare or address.strip("<> "))
    return match.group("token") if match else ""


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
    match = {"message-id": f"Message-ID {complaint.message_id}", "verp": f"VERP token {complaint.token}"}
    how = match.get(complaint.attributed_by, "subject only")
    subject = complaint.subject or "(no subject)"
    return (
        f"{complaint.reporter}: {complaint.feedback_type} complaint on {complaint.day} about “{subject}” "
        f"from {complaint.sending_domain or 'an unknown domain'} ({how})"
    )


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
    return f"{complaint.reporter} about “{complaint.subject or '(no subject)'}”"


def _domain_finding(domain: str, mine: Sequence[Complaint], fresh_ids: set[str], days: int, now: datetime) -> Finding:
    n = len(mine)
    evidence: dict[str, object] = {"count": n, "days": days}
    window = f"{n} in the last {days} days"
    if not mine:
        summary = f"0 complaints about mail from {domain} in the last {days} days"
        return Finding("complaints", domain, Status.OK, summary, evidence, code="no-complaints", observed_at=now)
    fresh = [c for c in mine if c.report_id in fresh_ids]
    newest = mine[-1]
    evidence.update(new=len(fresh), newest=newest.report_id[:12])
    if len(fresh) == 1:
        summary = f"new complaint: {complaint_line(fresh[0])}; {window}"
    elif fresh:
        shown = "; ".join(_brief(c) for c in fresh[:3]) + (f"; {len(fresh) - 3} more" if len(fresh) > 3 else "")
        summary = f"{len(fresh)} new complaints about mail from {domain} ({window}): {shown}"
    else:
        plural = "s" if n != 1 else ""
        summary = f"{n} complaint{plural} about mail from {domain} in the last {days} days; newest: {_brief(newest)}"
    advice = "Find the list these recipients came from and remove them; check how they subscribed."
    return Finding("complaints", domain, Status.WARN, summary, evidence, advice, "complaints", now)
