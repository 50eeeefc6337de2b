"""Canaries: send a small tokened message to a seed mailbox, then find out where it went.

Pure helpers (`make_token`, `build_message`, `read_receiver_verdict`, `read_bounce`, `parse_bounce`) work on
strings and bytes; `send` (SMTP submission or direct to the seed's MX, via aiosmtplib) and `look` / `poll` (IMAP, via
`checks.mailbox`) do the I/O. A `Canary` is a plain value that can be stored (`to_json` / `from_json`), so a
canary the bot crashed during can be looked for again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from checks.canary._message import (
    HEADER,
    ReceiverVerdict,
    build_message,
    make_token,
    read_receiver_verdict,
    received_at,
)
from checks.canary.bounce import Bounce, parse_bounce, read_bounce
from checks.canary.maillog import LogSource, queue_id_from_reply
from checks.context import CheckContext
from checks.i18n import N_
from checks.mailbox import Mailbox, MailboxError, MailboxSettings

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
    "parse_bounce",
    "poll",
    "read_bounce",
    "read_receiver_verdict",
    "send",
]

log = logging.getLogger(__name__)

MAX_FETCH = 512 * 1024
FOUND_ACTIONS = ("delete", "move", "keep")
KEEP_KEYWORD = "$RepbotCanary"
# A canary's `error` stays English (it is stored and logged); whoever shows it says it with `_()`.
LOGIN_REFUSED = N_("the submission server refused our login")
MESSAGE_REFUSED = N_("the server refused the message")


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
class Placement:
    """Where the canary was found: `folder` is inbox | junk | None; `error` when a mailbox could not be read."""

    folder: str | None = None
    folder_name: str | None = None
    received_at: datetime | None = None
    verdict: ReceiverVerdict | None = None
    bounce: Bounce | None = None
    error: str | None = None


async def _direct_host(settings: CanarySettings, ctx: CheckContext | None) -> tuple[str, int]:
    port = ctx.smtp_port if ctx is not None else 25
    if settings.direct_host:
        return settings.direct_host, port
    if ctx is None:
        raise aiosmtplib.SMTPConnectError("direct sending needs a resolver to find the seed's MX")
    from checks.mx import mx_hosts

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
        return f"{code} {message}", LOGIN_REFUSED
    if isinstance(error, aiosmtplib.SMTPResponseException) and code and code > 0:
        return f"{code} {message}", MESSAGE_REFUSED
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
            return Placement(kind, folder, received_at(raw), verdict)
    return Placement()


async def _look_sender(settings: CanarySettings, canary: Canary) -> Bounce | None:
    if settings.sender_mailbox is None:
        return None
    found: Bounce | None = None
    async with Mailbox(settings.sender_mailbox) as box:
        await box.select("INBOX")
        for uid in await box.search("TEXT", canary.token):
            fetched = await box.fetch(uid, MAX_FETCH)
            bounce = read_bounce(fetched.raw or b"", canary.token)
            if bounce is not None and bounce.action == "failed":
                await _dispose(box, settings, uid)
                return bounce  # a failure outweighs an earlier delay notice about the same canary
            found = found or bounce
    return found


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
