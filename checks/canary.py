"""Canaries: send a small tokened message to a seed mailbox, then find out where it went.

Pure helpers (`make_token`, `build_message`, `read_receiver_verdict`, `read_bounce`) work on strings and bytes;
`send` (SMTP submission or direct to the seed's MX, via aiosmtplib) and `look` / `poll` (IMAP, via
`checks.mailbox`) do the I/O. A `Canary` is a plain value that can be stored (`to_json` / `from_json`), so a
canary the bot crashed during can be looked for again after a restart.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import aiosmtplib

from .context import CheckContext
from .mailbox import Mailbox, MailboxError, MailboxSettings
from .maillog import LogSource, queue_id_from_reply

__all__ = [
    "Bounce",
    "Canary",
    "CanarySettings",
    "Placement",
    "ReceiverVerdict",
    "SubmissionSettings",
    "build_message",
    "look",
    "make_token",
    "poll",
    "read_bounce",
    "read_receiver_verdict",
    "send",
]

log = logging.getLogger(__name__)

HEADER = "X-Repbot-Canary"
MAX_FETCH = 512 * 1024
FOUND_ACTIONS = ("delete", "move", "keep")
KEEP_KEYWORD = "$RepbotCanary"
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
class SubmissionSettings:
    """The operator's submission server: host, port, security (starttls | tls | plain) and login."""

    host: str
    port: int = 587
    security: str = "starttls"
    user: str | None = None
    password: Callable[[], str] | None = field(default=None, repr=False)
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.security not in ("starttls", "tls", "plain"):
            raise ValueError(f"submission security must be starttls, tls or plain, not {self.security!r}")


@dataclass(frozen=True)
class CanarySettings:
    """One seed: where to send, how to read the seed and sender mailboxes, how long to wait, and what to keep."""

    name: str
    seed: str
    sender: str
    seed_mailbox: MailboxSettings
    sender_mailbox: MailboxSettings | None = None
    send_via: str = "submission"  # or "direct" (to the seed's MX, when the bot runs on the mail host)
    submission: SubmissionSettings | None = None
    direct_host: str | None = None  # direct: skip the MX look-up (tests, or a fixed inbound host)
    deadline: timedelta = timedelta(minutes=30)
    poll_interval: float = 30.0
    junk_names: tuple[str, ...] = ()
    found_action: str = "move"  # delete | move | keep
    move_to: str | None = None  # default: the \\Trash folder
    log: LogSource | None = None

    def __post_init__(self) -> None:
        if self.send_via not in ("submission", "direct"):
            raise ValueError(f"send_via must be submission or direct, not {self.send_via!r}")
        if self.send_via == "submission" and self.submission is None:
            raise ValueError("send_via = submission needs the submission server settings")
        if self.found_action not in FOUND_ACTIONS:
            raise ValueError(f"found_action must be one of {', '.join(FOUND_ACTIONS)}")


@dataclass(frozen=True)
class Canary:
    """A canary that was (or could not be) sent; stored while pending."""

    name: str
    token: str
    message_id: str
    seed: str
    sender: str
    sent_at: datetime
    deadline_at: datetime
    send_via: str = "submission"
    submitted: bool = False
    reply: str | None = None  # the SMTP reply to our DATA (or the refusal), quoted
    queue_id: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sent_at"], data["deadline_at"] = self.sent_at.isoformat(), self.deadline_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Canary:
        values = dict(data)
        values["sent_at"] = datetime.fromisoformat(values["sent_at"])
        values["deadline_at"] = datetime.fromisoformat(values["deadline_at"])
        return cls(**values)


@dataclass(frozen=True)
class ReceiverVerdict:
    """What the receiver said about the delivered copy: auth results, spam level, and the quoted header lines."""

    results: Mapping[str, str] = field(default_factory=dict)  # spf/dkim/dmarc/compauth -> pass/fail/...
    compauth_reason: str | None = None
    scl: int | None = None
    sfv: str | None = None
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bounce:
    """A DSN about the canary found in the sender's mailbox."""

    action: str  # failed | delayed | unknown
    status: str | None
    diagnostic: str | None  # the remote's reply from Diagnostic-Code, when given
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where the canary was found: `folder` is inbox | junk | None; `error` when a mailbox could not be read."""

    folder: str | None = None
    folder_name: str | None = None
    received_at: datetime | None = None
    verdict: ReceiverVerdict | None = None
    bounce: Bounce | None = None
    error: str | None = None


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


def _received_at(raw: bytes) -> datetime | None:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for value in message.get_all("Received") or []:
        stamp = str(value).rpartition(";")[2].strip()
        try:
            when = parsedate_to_datetime(stamp)
        except (TypeError, ValueError, IndexError):
            continue
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def read_bounce(raw: bytes, token: str) -> Bounce | None:
    """The DSN about `token` in a message from the sender's mailbox, or None when it is not one; pure."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get(HEADER) or token.encode() not in raw:
        return None
    report = message.get_content_type() == "multipart/report"
    sender = str(message.get("From", "")).lower()
    if not report and "mailer-daemon" not in sender and "postmaster" not in sender:
        return None
    action, status, diagnostic = "unknown", None, None
    lines: list[str] = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else [email.message_from_string(str(payload))]
        for block in blocks:
            if not isinstance(block, Message):
                continue
            action = str(block.get("Action", action)).strip().lower()
            status = str(block.get("Status", status) or "").strip() or status
            code = block.get("Diagnostic-Code")
            if code:
                diagnostic = " ".join(str(code).split()).partition(";")[2].strip() or diagnostic
            lines += _header_lines(block, ("Action", "Status", "Diagnostic-Code", "Remote-MTA"))
    if diagnostic is None:
        found = re.search(rb"\b([45]\d\d[ -][45]\.\d{1,3}\.\d{1,3}[^\r\n]*)", raw)
        diagnostic = found.group(1).decode("utf-8", "replace") if found else None
    return Bounce(action, status, diagnostic, tuple(lines))


async def _direct_host(settings: CanarySettings, ctx: CheckContext | None) -> tuple[str, int]:
    port = ctx.smtp_port if ctx is not None else 25
    if settings.direct_host:
        return settings.direct_host, port
    if ctx is None:
        raise aiosmtplib.SMTPConnectError("direct sending needs a resolver to find the seed's MX")
    from .mx import mx_hosts

    mxset = await mx_hosts(settings.seed.rpartition("@")[2], ctx)
    if not mxset.addresses:
        raise aiosmtplib.SMTPConnectError(f"no MX address for {mxset.domain} ({mxset.kind})")
    return mxset.addresses[0][1], port


def _client(settings: CanarySettings, host: str, port: int, ctx: CheckContext | None) -> aiosmtplib.SMTP:
    sub = settings.submission
    if settings.send_via == "direct" or sub is None:
        context = ctx.tls_context() if ctx is not None else ssl.create_default_context()
        return aiosmtplib.SMTP(hostname=host, port=port, timeout=30, start_tls=None, tls_context=context)
    context = sub.ssl_context or (ctx.tls_context() if ctx is not None else ssl.create_default_context())
    return aiosmtplib.SMTP(
        hostname=host,
        port=port,
        timeout=sub.timeout,
        use_tls=sub.security == "tls",
        start_tls=sub.security == "starttls",
        tls_context=context,
    )


async def _transmit(settings: CanarySettings, message: EmailMessage, ctx: CheckContext | None) -> str:
    """Send; return the DATA reply as '250 2.0.0 ...'. aiosmtplib errors propagate."""
    sub = settings.submission
    host, port = (
        (sub.host, sub.port) if settings.send_via == "submission" and sub else await _direct_host(settings, ctx)
    )
    client = _client(settings, host, port, ctx)
    await client.connect()
    try:
        if settings.send_via == "submission" and sub is not None and sub.user and sub.password is not None:
            password = await asyncio.to_thread(sub.password)
            await client.login(sub.user, password)
        await client.mail(settings.sender)
        await client.rcpt(settings.seed)
        response = await client.data(message.as_bytes())
        return f"{response.code} {response.message}".strip()
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()


def _refusal(error: Exception) -> tuple[str | None, str]:
    """The quoted reply and a short reason from an aiosmtplib error; never the password."""
    code = getattr(error, "code", None)
    message = " ".join(str(getattr(error, "message", "") or "").split())
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return f"{code} {message}", "the submission server refused our login"
    if isinstance(error, aiosmtplib.SMTPResponseException) and code and code > 0:
        return f"{code} {message}", "the server refused the message"
    return None, f"{type(error).__name__}: {message or error}"[:300]


async def send(
    settings: CanarySettings, ctx: CheckContext | None = None, clock: Callable[[], datetime] | None = None
) -> Canary:
    """Send one canary and return it with the SMTP reply; a refusal or network error is recorded, not raised."""
    now = (clock or (lambda: datetime.now(UTC)))()
    token = make_token()
    message = build_message(settings.seed, settings.sender, token, now)
    base = Canary(
        settings.name, token, str(message["Message-ID"]), settings.seed, settings.sender, now,
        now + settings.deadline, settings.send_via,
    )  # fmt: skip
    try:
        reply = await _transmit(settings, message, ctx)
    except (aiosmtplib.SMTPException, OSError, MailboxError, TimeoutError) as error:
        quoted, reason = _refusal(error)
        log.info("canary %s to %s not sent: %s", settings.name, settings.seed, reason)
        return _replace(base, reply=quoted, error=reason)
    queue_id = queue_id_from_reply(reply) if settings.send_via == "submission" else None
    return _replace(base, submitted=reply.startswith("2"), reply=reply, queue_id=queue_id)


def _replace(canary: Canary, **changes: Any) -> Canary:
    return Canary(**{**asdict(canary), **changes})


async def _dispose(box: Mailbox, settings: CanarySettings, uid: int) -> None:
    if settings.found_action == "keep":
        await box.flag(uid, KEEP_KEYWORD)
        return
    if settings.found_action == "delete":
        await box.delete(uid)
        return
    target = settings.move_to or await box.find_folder("\\Trash")
    if target is None:
        await box.create("Trash")
        target = "Trash"
    await box.move(uid, target)


async def _look_seed(settings: CanarySettings, canary: Canary) -> Placement:
    async with Mailbox(settings.seed_mailbox) as box:
        junk = await box.find_folder("\\Junk", settings.junk_names)
        for kind, folder in (("inbox", "INBOX"), ("junk", junk)):
            if folder is None:
                continue
            await box.select(folder)
            uids = await box.search("HEADER", HEADER, canary.token)
            if not uids:
                continue
            fetched = await box.fetch(uids[0], MAX_FETCH)
            raw = fetched.raw or b""
            verdict = read_receiver_verdict(raw)
            for uid in uids:
                await _dispose(box, settings, uid)
            return Placement(kind, folder, _received_at(raw), verdict)
    return Placement()


async def _look_sender(settings: CanarySettings, canary: Canary) -> Bounce | None:
    if settings.sender_mailbox is None:
        return None
    async with Mailbox(settings.sender_mailbox) as box:
        await box.select("INBOX")
        for uid in await box.search("TEXT", canary.token):
            fetched = await box.fetch(uid, MAX_FETCH)
            bounce = read_bounce(fetched.raw or b"", canary.token)
            if bounce is not None:
                if bounce.action == "failed":
                    await _dispose(box, settings, uid)
                return bounce
    return None


async def look(settings: CanarySettings, canary: Canary) -> Placement:
    """Look once in the seed's Inbox and Junk and in the sender's mailbox; a mailbox error is recorded."""
    try:
        placement = await _look_seed(settings, canary)
        bounce = None if placement.folder else await _look_sender(settings, canary)
    except MailboxError as error:
        return Placement(error=f"{error.code}: {error}")
    if bounce is not None:
        return Placement(bounce=bounce)
    return placement


async def poll(
    settings: CanarySettings,
    canary: Canary,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Placement:
    """Look until the canary is found, bounced (failed DSN), or past its deadline; return the last look."""
    now = clock or (lambda: datetime.now(UTC))
    while True:
        placement = await look(settings, canary)
        if placement.folder or (placement.bounce and placement.bounce.action == "failed"):
            return placement
        remaining = (canary.deadline_at - now()).total_seconds()
        if remaining <= 0:
            return placement
        await sleep(min(settings.poll_interval, remaining))
