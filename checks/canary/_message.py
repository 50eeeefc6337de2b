"""The canary message, pure: the token, the message itself, and what a delivered copy says about it.

checks.canary.probe re-exports these names and does the SMTP sending and the IMAP looking.
"""

from __future__ import annotations

import email
import email.policy
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, parsedate_to_datetime

__all__ = [
    "HEADER",
    "ReceiverVerdict",
    "build_message",
    "make_token",
    "read_receiver_verdict",
    "received_at",
]

HEADER = "X-Repbot-Canary"
_VERDICT_HEADERS = (
    "Authentication-Results",
    "ARC-Authentication-Results",
    "X-Forefront-Antispam-Report",
    "X-MS-Exchange-Organization-SCL",
    "X-Microsoft-Antispam",
    "X-MS-Exchange-Organization-AuthAs",
    "X-Gm-Spam",
    "X-Gm-Phishy",
    "X-YMailISG",
    "X-Spam-Flag",
    "X-Spam-Status",
)
_AR_RESULT = re.compile(r"\b(spf|dkim|dmarc|compauth|arc)=(\w+)(?:\s+reason=(\d+))?", re.IGNORECASE)
_FOREFRONT = re.compile(r"\b(SCL|SFV|CAT|CIP|PTR|SFTY):([^;]*)", re.IGNORECASE)


@dataclass(frozen=True)
class ReceiverVerdict:
    """What the receiver said about the delivered copy: auth results, spam level, and the quoted header lines."""

    results: Mapping[str, str] = field(default_factory=dict)  # spf/dkim/dmarc/compauth -> pass/fail/...
    compauth_reason: str | None = None
    scl: int | None = None
    sfv: str | None = None
    lines: tuple[str, ...] = ()


def make_token() -> str:
    """A fresh token: 'rb' and 16 hex digits, safe in a Message-ID, a subject and an IMAP search."""
    return "rb" + secrets.token_hex(8)


def build_message(seed: str, sender: str, token: str, now: datetime) -> EmailMessage:
    """The canary: plain text, no links, the token in the Message-ID, the subject and X-Repbot-Canary."""
    domain = sender.rpartition("@")[2] or "localhost"
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = seed
    message["Subject"] = f"Delivery check {token}"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{token}@{domain}>"
    message[HEADER] = token
    message.set_content(
        f"Hello,\n\nthis is an automatic delivery check from the mail server of {domain}.\n"
        f"It only confirms that mail from {domain} reaches this mailbox. No reply is needed.\n\n"
        f"Reference: {token}\n"
    )
    return message


def _header_lines(message: Message, names: tuple[str, ...]) -> list[str]:
    return [f"{name}: {' '.join(str(v).split())}" for name in names for v in message.get_all(name) or []]


def read_receiver_verdict(raw: bytes) -> ReceiverVerdict:
    """The receiver's verdict headers from a delivered copy; pure."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    lines = _header_lines(message, _VERDICT_HEADERS)
    results: dict[str, str] = {}
    reason: str | None = None
    for value in message.get_all("Authentication-Results") or []:
        for method, result, why in _AR_RESULT.findall(str(value)):
            results.setdefault(method.lower(), result.lower())
            if method.lower() == "compauth" and why:
                reason = reason or why
    scl: int | None = None
    sfv: str | None = None
    for value in message.get_all("X-Forefront-Antispam-Report") or []:
        fields = {key.upper(): val.strip() for key, val in _FOREFRONT.findall(str(value))}
        sfv = fields.get("SFV", sfv)
        if fields.get("SCL", "").lstrip("-").isdigit():
            scl = int(fields["SCL"])
    org_scl = str(message.get("X-MS-Exchange-Organization-SCL", "")).strip()
    if scl is None and org_scl.lstrip("-").isdigit():
        scl = int(org_scl)
    return ReceiverVerdict(results, reason, scl, sfv, tuple(lines))


def received_at(raw: bytes) -> datetime | None:
    """When the first Received header says the copy arrived (UTC when it gives no zone); None without one."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for value in message.get_all("Received") or []:
        stamp = str(value).rpartition(";")[2].strip()
        try:
            when = parsedate_to_datetime(stamp)
        except (TypeError, ValueError, IndexError):
            continue
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None
