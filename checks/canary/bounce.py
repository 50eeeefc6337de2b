"""Bounces as MTAs really send them: RFC 3464 reports, and the text notices of qmail, exim, Exchange, Gmail...

`parse_bounce` is pure. It reads the outer report only: a report nested in the returned original (a bounce of
a bounce) says nothing about our message. Without a `message/delivery-status` part, the notice's own words
and codes decide, the returned original left out.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

from checks.canary._message import HEADER
from checks.canary.ndr import parse_reply

__all__ = ["Bounce", "parse_bounce", "read_bounce"]


_ORIGINAL_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers"})
_DAEMON = re.compile(r"mailer[-_ ]?daemon|postmaster|post_master|mail delivery|\bmdaemon\b", re.IGNORECASE)
# Where a text notice starts quoting the returned message: from there on, nothing is about the delivery.
_ORIGINAL_STARTS = re.compile(
    r"^(?:-+ ?)?(?:below this line is a copy of the message"
    r"|this is a copy of the message|original message follows|the original message follows"
    r"|-+ ?original message ?-+|-+ ?the header of the original message"
    r"|received: |return-path: |message-id: |x-original-to: )",
    re.IGNORECASE | re.MULTILINE,
)
_DELAYED = re.compile(
    r"has been delayed|is delayed|\(delay\)|delivery delayed|will be retried|will (?:keep|continue to) try"
    r"|still (?:being )?(?:trying|retried)|not yet been delivered|warning: message|status notification: warning"
    r"|delayed mail",
    re.IGNORECASE,
)
_FAILED = re.compile(
    r"permanent|giving up|given up|fail|undeliver|not (?:be )?delivered|could not deliver|unable to deliver"
    r"|returned mail|returning message|rejected|refused|error|non remis|non recapitabile|unzustellbar"
    r"|not listed|unknown|does not exist|aborted",
    re.IGNORECASE,
)
_STRONG_FAILURE = re.compile(r"permanent|giving up|given up|not going to try again|failed permanently", re.IGNORECASE)
_ENHANCED = re.compile(r"(?<![\d.])([45]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
# Status codes that only say what our MTA concluded; the remote's own code in the diagnostic says why.
_OWN_VERDICTS = frozenset({"4.4.7", "5.4.7"})
_REPLY_PAIR = re.compile(r"(?<![\d.])([45]\d\d)[ -]['\"]?([45]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_DSN_LINES = ("Action", "Status", "Diagnostic-Code", "Remote-MTA")


@dataclass(frozen=True)
class Bounce:
    """What a bounce or delay notice says about the message it returns."""

    action: str  # failed | delayed | unknown
    status: str | None  # the enhanced status code, 5.1.1
    diagnostic: str | None  # the remote's reply (Diagnostic-Code, or the notice's line with the code)
    lines: tuple[str, ...] = ()
    reply_code: str | None = None  # the remote's basic reply code, 550


def read_bounce(raw: bytes, token: str) -> Bounce | None:
    """The bounce about `token` in a message from the sender's mailbox, or None when it is not one; pure."""
    if token.encode() not in raw:
        return None
    return parse_bounce(raw)


def parse_bounce(raw: bytes) -> Bounce | None:
    """What a bounce says, or None when the message is not a bounce (or is the canary itself); pure."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get(HEADER):
        return None
    report = message.get_content_type() == "multipart/report"
    if not report and not _DAEMON.search(str(message.get("From", ""))):
        return None
    notice = _notice_text(message)
    found = _from_report(message, notice)
    if found is not None and found.action in ("failed", "delayed"):
        return _with_notice_codes(found, notice)
    return _from_notice(notice, found)


def _outer_parts(message: Message) -> list[Message]:
    """Every part outside the returned original, depth first."""
    parts = [message]
    if message.get_content_type() in _ORIGINAL_TYPES or not message.is_multipart():
        return parts
    for part in message.get_payload():
        if isinstance(part, Message):
            parts += [part] if part.get_content_type() in _ORIGINAL_TYPES else _outer_parts(part)
    return parts


def _text_blocks(text: str) -> list[Message]:
    return [email.message_from_string(chunk.strip() + "\n") for chunk in re.split(r"\n\s*\n", text) if chunk.strip()]


def _dsn_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = part.get_payload(decode=True)
    return _text_blocks(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(payload))


def _broken_multipart(message: Message) -> bool:
    """A multipart whose boundary is never found (real MTAs and careless anonymisers do this)."""
    return message.get_content_maintype() == "multipart" and not message.is_multipart()


def _from_report(message: Message, notice: str) -> Bounce | None:
    """The first recipient of the outer message/delivery-status part, or None without one."""
    if _broken_multipart(message):
        blocks = [b for b in _text_blocks(notice) if b.get("Action") and b.get("Final-Recipient")]
    else:
        part = next((p for p in _outer_parts(message) if p.get_content_type() == "message/delivery-status"), None)
        if part is None:
            return None
        blocks = _dsn_blocks(part)
    recipient = next((b for b in blocks if b.get("Action") or b.get("Final-Recipient")), None)
    if recipient is None:
        return Bounce("unknown", None, None)
    action = " ".join(str(recipient.get("Action", "unknown")).split()).lower()
    action = {"expired": "failed", "failure": "failed"}.get(action, action)
    status = _enhanced(str(recipient.get("Status", "")))
    code = recipient.get("Diagnostic-Code")
    diagnostic = None
    if code:
        words = " ".join(str(code).split())
        diagnostic = words.partition(";")[2].strip() if ";" in words else words
    lines = [f"{name}: {' '.join(str(v).split())}" for name in _DSN_LINES for v in recipient.get_all(name) or []]
    reply, remote = _remote_answer(diagnostic) if diagnostic else (None, None)
    status = _better(status, remote)
    return Bounce(action, status, diagnostic or None, tuple(lines), reply)


def _better(status: str | None, remote: str | None) -> str | None:
    """The remote's own code over a status that only says 'failed' (X.0.0) or 'expired' (our MTA's verdict)."""
    if remote is not None and (status is None or status.endswith(".0.0") or status in _OWN_VERDICTS):
        return remote
    return status


def _remote_answer(diagnostic: str) -> tuple[str | None, str | None]:
    """The remote's reply and enhanced codes ('550 5.7.1'); past our MTA's own 'expired' verdict when it quotes
    the remote's last answer ('554 4.4.7 Message expired ... <421 4.4.2 Connection timed out>')."""
    pairs = _REPLY_PAIR.findall(diagnostic)
    chosen = next((pair for pair in pairs if pair[1] not in _OWN_VERDICTS), pairs[0] if pairs else None)
    if chosen is not None:
        return chosen[0], chosen[1]
    return _failure_code(diagnostic), _enhanced(diagnostic)


def _enhanced(text: str) -> str | None:
    found = _ENHANCED.search(text)
    return found.group(1) if found else None


def _notice_text(message: Message) -> str:
    """The subject and the human-readable parts of the notice, cut where it starts quoting the original."""
    texts = [f"Subject: {' '.join(str(message.get('Subject', '')).split())}"]
    for part in _outer_parts(message):
        readable = part.get_content_maintype() == "text" or _broken_multipart(part)
        if not readable or part.get_content_type() in _ORIGINAL_TYPES:
            continue
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            continue
        text = body.decode(part.get_content_charset() or "utf-8", "replace") if _known(part) else body.decode("latin-1")
        if part.get_content_subtype() == "html":
            text = re.sub(r"<[^>]+>", " ", text)
        cut = _ORIGINAL_STARTS.search(text, 1)
        texts.append(text[: cut.start()] if cut else text)
    return "\n".join(texts)


def _known(part: Message) -> bool:
    try:
        "".encode(part.get_content_charset() or "utf-8")
    except LookupError:
        return False
    return True


def _with_notice_codes(found: Bounce, notice: str) -> Bounce:
    """A report whose recipient block gives no reply code: take the one the notice quotes, if any."""
    if found.reply_code is not None and found.status is not None and not found.status.endswith(".0.0"):
        return found
    codes = _notice_codes(notice)
    return Bounce(
        found.action,
        _better(found.status, codes[1]),
        found.diagnostic or codes[2],
        found.lines,
        found.reply_code or codes[0],
    )


def _notice_codes(notice: str) -> tuple[str | None, str | None, str | None]:
    """The reply code, the enhanced code and the line quoting them, from a notice's text."""
    for line in notice.splitlines():
        if line.startswith("Subject: "):
            continue
        status = _enhanced(line)
        reply = _failure_code(line)
        if reply or status:
            later = None if reply else _first_reply(notice)
            quoted = line[line.find(reply) :] if reply else line
            return reply or later, status or _enhanced(notice), " ".join(quoted.split())
    return None, None, None


def _first_reply(notice: str) -> str | None:
    return next((code for line in notice.splitlines() if (code := _failure_code(line))), None)


def _failure_code(text: str) -> str | None:
    """A 4xx or 5xx reply code in the text (a 2xx, or a program's exit status, is not the remote refusing)."""
    code = parse_reply(text).basic
    return code if code is not None and code.startswith(("4", "5")) else None


def _from_notice(notice: str, report: Bounce | None) -> Bounce:
    """A notice without a usable report: its words say failed or delayed, its lines give the codes."""
    reply, status, diagnostic = _notice_codes(notice)
    if _STRONG_FAILURE.search(notice):
        action = "failed"
    elif _DELAYED.search(notice):
        action = "delayed"
    elif _FAILED.search(notice) or (reply or "").startswith("5"):
        action = "failed"
    else:
        action = "unknown"
    lines = (report.lines if report else ()) + ((f"notice: {diagnostic}",) if diagnostic else ())
    return Bounce(action, status, diagnostic, lines, reply)
