"""The one parser of MTA log lines: Postfix and OpenSMTPD delivery attempts, message ids, expiries, removals.

Pure and line by line, so both the canary trace (`checks.canary.maillog`) and the traffic tally use it. It reads
syslog lines with the traditional stamp (`Nov 28 04:00:03`), RFC 3339 stamps (rsyslog) and journalctl's
`short-iso`. `parse_line` says what a line is: a `Delivery`, a `MessageId`, a `Expiry` (Postfix's qmgr gave up on
a message), a `Removed` (the queue file is gone), `MTA_OTHER` (an MTA line that is none of those: smtpd, TLS,
postscreen...) or why it is skipped (`OTHER_DAEMON`, `GARBAGE`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple

__all__ = [
    "GARBAGE",
    "MTA_OTHER",
    "OTHER_DAEMON",
    "Delivery",
    "Expiry",
    "MessageId",
    "Parsed",
    "Removed",
    "detect_format",
    "line_day",
    "line_time",
    "parse_line",
    "redact",
]

MTA_OTHER = "mta-other"
OTHER_DAEMON = "other-daemon"
GARBAGE = "garbage"

_MONTHS = {
    m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)
}
# "<stamp> <host> <program>[<pid>]: <message>"; the program may carry slashes (postfix/submission/smtpd).
_SYSLOG = re.compile(
    r"^(?P<stamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r" (?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[\d+\])?: (?P<msg>.*)$"
)
_POSTFIX_LINE = re.compile(
    _SYSLOG.pattern.split(" (?P<host>")[0] + r" \S+ postfix(?:-[\w.-]+)?(?:/[\w.-]+)*/(?P<daemon>[\w.-]+)(?:\[\d+\])?: "
    r"(?P<msg>.*)$"
)
_POSTFIX_DELIVERY = re.compile(
    r"^(?P<qid>[0-9A-Za-z]+): to=<(?P<to>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>[^,]+), "
    r"(?:conn_use=\d+, )?delay=[^,]+, (?:delays=[^,]+, )?(?:dsn=(?P<dsn>[^,]+), )?"
    r"status=(?P<status>sent|deferred|bounced|expired)(?P<rest>.*)$"
)
_POSTFIX_ID = re.compile(r"^(?P<qid>[0-9A-Za-z]+): message-id=<?(?P<mid>[^>\s]*)>?")
_POSTFIX_EXPIRED = re.compile(r"^(?P<qid>[0-9A-Za-z]+): from=<[^>]*>, status=expired")
_POSTFIX_REMOVED = re.compile(r"^(?P<qid>[0-9A-Za-z]+): removed$")
_SAID = re.compile(r"^host \S+ (?:said|refused to talk to me): (?P<reply>.*?)(?: \(in reply to [^)]*\))?$")
_REPLY = re.compile(r"^[245]\d\d[ -]")
_SMTPD_DELIVERY = re.compile(r"^[0-9a-f]+ (?P<agent>mta|mda|lka) delivery evpid=(?P<evpid>[0-9a-f]{16}) (?P<rest>.*)$")
_SMTPD_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
_SMTPD_STATUS = {"Ok": "sent", "TempFail": "deferred", "PermFail": "bounced", "Loop": "bounced"}
_RELAY_HOST = re.compile(r"^(?P<host>[^\[\s]*)(?:\[(?P<ip>[^\]]*)\])?(?::\d+)?$")
_SMTPD_RELAY = re.compile(r"^(?P<ip>\S+)(?: \((?P<host>[^)]*)\))?$")
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@(?P<domain>[A-Za-z0-9.-]+)")


class Delivery(NamedTuple):
    """One delivery attempt to one recipient, as the MTA logged it (a NamedTuple: a million are made per run).

    `recipient` is the full address: it stays in the process (use `domain`, or `redact` the line, for anything
    that leaves it). `relay_host`/`relay_ip` are empty when the MTA never connected (`relay=none`).
    """

    mta: str  # postfix | opensmtpd
    daemon: str  # smtp, lmtp, local, virtual, pipe, error, discard (Postfix); mta, mda (OpenSMTPD)
    queue_id: str
    recipient: str
    relay: str
    relay_host: str
    relay_ip: str
    status: str  # sent | deferred | bounced | expired
    dsn: str
    reply: str | None  # the remote's own reply, when it gave one
    detail: str  # what the MTA wrote in parentheses (Postfix) or stat= (OpenSMTPD)
    stamp: str
    line: str

    @property
    def domain(self) -> str:
        """The recipient's domain, lower case."""
        return self.recipient.rpartition("@")[2].lower()

    @property
    def forwarded(self) -> bool:
        """True for Postfix's 'forwarded as' (an alias expanded in the queue): not a delivery."""
        return self.status == "sent" and self.detail.startswith("forwarded as ")

    @property
    def remote_accepted(self) -> bool:
        """True when the remote answered 2xx to the message data."""
        return self.status == "sent" and self.reply is not None and self.reply.startswith("2")


@dataclass(frozen=True, slots=True)
class MessageId:
    """Postfix's cleanup line tying a queue id to a Message-ID."""

    queue_id: str
    message_id: str
    line: str


@dataclass(frozen=True, slots=True)
class Expiry:
    """Postfix's qmgr gave up on a message: its recipients still deferred now count as expired."""

    queue_id: str
    stamp: str
    line: str


@dataclass(frozen=True, slots=True)
class Removed:
    """The queue file is gone: nothing more will be logged for this queue id."""

    queue_id: str


Parsed = Delivery | MessageId | Expiry | Removed | str


def _postfix(daemon: str, msg: str, stamp: str, line: str) -> Parsed:
    if " status=" in msg:
        match = _POSTFIX_DELIVERY.match(msg)
        if match is not None:
            return _postfix_delivery(match, daemon, stamp, line)
        expired = _POSTFIX_EXPIRED.match(msg)
        if expired is not None:
            return Expiry(expired["qid"], stamp, line)
        return MTA_OTHER
    if "message-id=" in msg:
        found = _POSTFIX_ID.match(msg)
        if found is not None:
            return MessageId(found["qid"], found["mid"], line)
    elif msg.endswith(": removed"):
        removed = _POSTFIX_REMOVED.match(msg)
        if removed is not None:
            return Removed(removed["qid"])
    return MTA_OTHER


def _postfix_delivery(match: re.Match[str], daemon: str, stamp: str, line: str) -> Delivery:
    rest = match["rest"]
    opened = rest.find("(")
    detail = rest[opened + 1 : rest.rfind(")")] if opened >= 0 else rest.lstrip(", ")
    if detail.startswith("host "):
        said = _SAID.match(detail)
        reply = said["reply"] if said else None
    else:
        reply = detail if _REPLY.match(detail) else None
    relay = match["relay"]
    host, ip = _relay_parts(relay)
    return Delivery(
        "postfix", daemon, match["qid"], match["to"], relay, host, ip, match["status"], match["dsn"] or "",
        reply, detail, stamp, line,
    )  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _relay_parts(relay: str) -> tuple[str, str]:
    """('mx.example.net', '192.0.2.25') from 'mx.example.net[192.0.2.25]:25'; relays repeat, so cached."""
    where = _RELAY_HOST.match(relay) if relay != "none" else None
    return (where["host"].lower(), where["ip"] or "") if where is not None else ("", "")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _opensmtpd(msg: str, stamp: str, line: str) -> Parsed:
    match = _SMTPD_DELIVERY.match(msg)
    if match is None:
        return MTA_OTHER
    fields = {key: _unquote(value) for key, value in _SMTPD_FIELD.findall(match["rest"])}
    stat = fields.get("stat", "")
    status = _SMTPD_STATUS.get(fields.get("result", ""), "deferred")
    if status == "bounced" and "expired" in stat.lower():
        status = "expired"
    relay = fields.get("relay", "")
    host, ip = "", ""
    where = _SMTPD_RELAY.match(relay)
    if where is not None and match["agent"] == "mta":
        host, ip = (where["host"] or "").lower(), where["ip"]
    reply = stat if _REPLY.match(stat) else None
    dsn = ""
    if reply is not None:
        code = reply[4:].split(" ", 1)[0].rstrip(":")
        dsn = code if code[:1].isdigit() else ""
    recipient = fields.get("to", "").strip("<>")
    daemon = match["agent"]
    return Delivery(
        "opensmtpd", daemon, match["evpid"], recipient, relay, host, ip, status, dsn, reply, stat, stamp, line
    )


def parse_line(line: str) -> Parsed:
    """What one log line is (see the module docstring); pure, never raises."""
    if " postfix" in line:
        # The busy path: most lines of a mail log are Postfix's; only keyword lines need the full match.
        if " status=" not in line and "message-id=" not in line and not line.endswith(": removed"):
            return MTA_OTHER
        match = _POSTFIX_LINE.match(line)
        if match is None:
            return GARBAGE if _SYSLOG.match(line) is None else MTA_OTHER
        return _postfix(match["daemon"], match["msg"], match["stamp"], line)
    match = _SYSLOG.match(line)
    if match is None:
        return GARBAGE
    if match["prog"] == "smtpd":
        return _opensmtpd(match["msg"], match["stamp"], line)
    return OTHER_DAEMON


def detect_format(lines: Iterable[str]) -> str | None:
    """'postfix' or 'opensmtpd' from the first lines that show one of them, or None."""
    for line in lines:
        if "postfix" in line and " postfix" in line:
            return "postfix"
        if " smtpd[" in line or "mta delivery evpid=" in line or "smtp message msgid=" in line:
            return "opensmtpd"
    return None


def line_time(stamp: str, now: datetime) -> datetime | None:
    """The moment of a stamp, in UTC. A stamp without a zone is this machine's local time, as syslog writes it;
    a year-less one is in `now`'s year (or the year before, for December's lines read in January).

    RFC 3339 stamps (rsyslog's `RSYSLOG_FileFormat`, `journalctl -o short-iso`) carry their offset and need no
    guessing; a log written on another machine in another zone needs them.
    """
    if stamp[:1].isdigit():
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        return moment.astimezone(UTC)  # a naive moment is local time
    month = _MONTHS.get(stamp[:3])
    day, clock = stamp[4:6].strip(), stamp[7:15]
    if month is None or not day.isdigit() or len(clock) != 8:
        return None
    year = now.year - 1 if (month, int(day)) > (now.month, now.day + 1) else now.year
    try:
        hour, minute, second = (int(part) for part in clock.split(":"))
        return datetime(year, month, int(day), hour, minute, second).astimezone(UTC)
    except ValueError:
        return None


def line_day(stamp: str, today: date) -> date | None:
    """The UTC day of a stamp (see `line_time`)."""
    moment = line_time(stamp, datetime(today.year, today.month, today.day, 23, 59, tzinfo=UTC))
    return moment.date() if moment is not None else None


def redact(text: str) -> str:
    """The text with every mail address's local part replaced: `<…@outlook.com>` stays useful, names do not leave."""
    return _ADDRESS.sub(lambda m: "…@" + m["domain"].lower(), text)
