"""ARF complaint reports as data, pure: `parse_report` turns a report's bytes into a scrubbed `Complaint`.

It reads strict RFC 5965 reports, legacy Hotmail JMRP and the 2026 header-only, anonymised form;
checks.providers.feedback re-exports these names and does the mailbox run, the journal and the findings.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from email.message import Message
from email.parser import HeaderParser

__all__ = ["DEFAULT_VERP", "REPORTERS", "Complaint", "NotAReport", "parse_report"]

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
    reported_domain: str = ""  # the report's Reported-Domain fields, second evidence beside the original's From

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


# The singular "text/rfc822-header" is what some feedback loops really send.
_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers")
_JMRP_SUBJECT = re.compile(r"complaint about message from \[?([0-9a-f.:]+[0-9a-f])\]?", re.IGNORECASE)
_IP = re.compile(r"[0-9a-f.:]*[0-9a-f]", re.IGNORECASE)


def _find_parts(message: Message) -> tuple[Message | None, Message | None]:
    """The feedback-report fields and the original's headers (either may be missing)."""
    report = original = None
    for part in _walk_parts(message):
        kind = part.get_content_type()
        if kind == "message/feedback-report" and report is None:
            report = _headers_of(part)
        elif kind in _ORIGINAL_TYPES and original is None:
            original = _headers_of(part)
    return report, original


def parse_report(raw: bytes, verp: str = DEFAULT_VERP, now: datetime | None = None) -> Complaint:
    """The Complaint in a raw report; raises NotAReport (non-ARF, truncated, unreadable)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    report, original = _find_parts(message)
    defects = {type(d).__name__ for part in message.walk() for d in part.defects}
    # A missing closing boundary alone is harmless: several real FBLs send every part and no final boundary.
    # A report cut before its original (or its report part) is truncated, and cannot be attributed.
    if defects & {"CloseBoundaryNotFoundDefect", "StartBoundaryNotFoundDefect"} and (
        report is None or original is None
    ):
        raise NotAReport("truncated MIME (a multipart without its closing boundary, and parts missing)")
    if report is None and (original is None or not _legacy_jmrp(message, original)):
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


def _legacy_jmrp(message: Message, original: Message) -> bool:
    """Hotmail's pre-ARF reports: the attached original, marked by its X-HmXmrOriginalRecipient or the subject."""
    return original.get("X-HmXmrOriginalRecipient") is not None or bool(
        _JMRP_SUBJECT.search(str(message.get("Subject", "")))
    )


def _source_ip(message: Message, fields: Message, original: Message) -> str:
    """Source-IP, else the JMRP subject's 'complaint about message from <ip>', else the original's X-Originating-IP."""
    for value in (fields.get("Source-IP"), original.get("X-Originating-IP")):
        found = _IP.search(str(value or "").strip().strip("[]"))
        if value and found:
            return found.group(0)
    subject = _JMRP_SUBJECT.search(" ".join(str(message.get("Subject", "")).split()))
    return subject.group(1) if subject else ""


def _from_domain(value: str) -> str:
    """The domain of the last address in a From value ('a@b.example' as a display name does not count)."""
    addresses = [address for _, address in email.utils.getaddresses([value]) if "@" in address]
    bracketed = re.findall(r"<([^<>@\s]+@[^<>\s]+)>", value)
    chosen = bracketed[-1] if bracketed else addresses[-1] if addresses else ""
    return chosen.rpartition("@")[2].lower().strip(">. ")


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
    reported = ", ".join(
        dict.fromkeys(" ".join(str(v).split()).lower().rstrip(".") for v in fields.get_all("Reported-Domain", []))
    )
    # The original's From is what the complainant saw; Reported-Domain is the reporter's guess (a Yahoo
    # complaint relayed by Amazon SES names amazonses.com), so it is second evidence, shown beside it.
    sender = (
        _from_domain(str(original.get("From", "") or ""))
        or reported.partition(",")[0]
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
        source_ip=_clean(_source_ip(message, fields, original), scrub, 45),
        message_id=message_id,
        subject=subject,
        token=token,
        attributed_by=by,
        reported_domain=_clean(reported, scrub, 200),
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
