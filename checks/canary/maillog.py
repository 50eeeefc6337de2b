"""Follow one message through the operator's MTA log (Postfix or OpenSMTPD) and quote what the remote answered.

The parsing is pure: `trace(lines, message_id, recipient, queue_id)` reads log lines (syslog files, rotated copies,
`journalctl --output=short`) and returns a `Trace` with every delivery attempt and the remote's exact reply.
`read_log(source)` does the I/O: files with their rotated siblings (`.1`, `.2.gz`, ...) or a command's output.
Without log access `read_log` raises `LogUnavailable`, which the caller turns into "evidence missing".
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from checks.errors import LookupFailed
from checks.i18n import _
from checks.traffic.lines import Delivery, MessageId, detect_format, parse_line

__all__ = [
    "Attempt",
    "LogSource",
    "LogUnavailable",
    "Trace",
    "detect_format",
    "follow",
    "queue_id_from_reply",
    "read_log",
    "trace",
]

log = logging.getLogger(__name__)

FORMATS = ("postfix", "opensmtpd")
MAX_LOG_BYTES = 64 * 1024 * 1024
_QUEUED = re.compile(r"(?:queued as|Message accepted for delivery:?|\bid=)\s*([0-9A-Fa-f]{8,16}|[0-9A-Z]{6,})", re.I)
_SMTPD_QUEUED = re.compile(r"^2\d\d[ -]2\.0\.0 (?P<msgid>[0-9a-f]{8}) Message accepted")


class LogUnavailable(LookupFailed):
    """Raised when the MTA log cannot be read (no path or command configured, permission denied, command failed)."""


@dataclass(frozen=True)
class LogSource:
    """Where the MTA log is: a file path (rotated siblings are read too) or a command, and its format."""

    path: str | None = None
    command: Sequence[str] | None = None
    format: str = "auto"
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise ValueError(f"log format must be auto, postfix or opensmtpd, not {self.format!r}")


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: our MTA's status, the relay it talked to, the remote's reply and the log line."""

    status: str  # sent | deferred | bounced
    recipient: str
    relay: str
    reply: str | None  # the remote's exact reply, when it gave one
    detail: str  # what the MTA wrote in parentheses / stat=
    line: str

    @property
    def remote_accepted(self) -> bool:
        """True when the remote answered 2xx to the message data."""
        return self.status == "sent" and self.reply is not None and self.reply.startswith("2")


@dataclass(frozen=True)
class Trace:
    """What the log says about one message for one recipient."""

    format: str
    queue_ids: tuple[str, ...]
    attempts: tuple[Attempt, ...]
    lines: tuple[str, ...] = field(default=())

    @property
    def final(self) -> Attempt | None:
        """The attempt that decides: the acceptance if any, else the last attempt."""
        accepted = [a for a in self.attempts if a.status == "sent"]
        if accepted:
            return accepted[-1]
        return self.attempts[-1] if self.attempts else None

    @property
    def status(self) -> str:
        """sent | bounced | deferred | unseen (nothing logged for this recipient yet)."""
        final = self.final
        return final.status if final else "unseen"


def queue_id_from_reply(reply: str) -> str | None:
    """Our MTA's queue id from its submission reply ('250 2.0.0 Ok: queued as 4F1AB2' or OpenSMTPD's msgid)."""
    match = _SMTPD_QUEUED.match(reply)
    if match:
        return match["msgid"]
    found = _QUEUED.search(reply)
    return found.group(1) if found else None


def _attempt(delivery: Delivery) -> Attempt:
    # An expiry is final for the canary as a bounce is: the sender gets a non-delivery report.
    status = "bounced" if delivery.status == "expired" else delivery.status
    return Attempt(status, delivery.recipient, delivery.relay, delivery.reply, delivery.detail, delivery.line)


def _is_attempt(item: object, mta: str, qids: set[str], recipient: str) -> TypeGuard[Delivery]:
    return (
        isinstance(item, Delivery)
        and item.mta == mta
        and item.queue_id in qids
        and item.recipient.lower() == recipient.lower()
    )


def _postfix(lines: Sequence[str], message_id: str, recipient: str, queue_id: str | None) -> Trace:
    bare = message_id.strip("<>")
    parsed = [parse_line(line) for line in lines]
    qids = {queue_id} if queue_id else set()
    qids.update(p.queue_id for p in parsed if isinstance(p, MessageId) and p.message_id == bare)
    attempts, evidence = [], []
    for item in parsed:
        if isinstance(item, MessageId) and item.queue_id in qids:
            evidence.append(item.line)
        elif _is_attempt(item, "postfix", qids, recipient):
            attempts.append(_attempt(item))
            evidence.append(item.line)
    return Trace("postfix", tuple(sorted(qids)), tuple(attempts), tuple(evidence))


def _opensmtpd(lines: Sequence[str], message_id: str, recipient: str, queue_id: str | None) -> Trace:
    bare = message_id.strip("<>")
    msgids = {queue_id[:8].lower()} if queue_id else set()
    attempts, evidence = [], []
    for line in lines:
        item = parse_line(line)
        if not isinstance(item, Delivery) or item.mta != "opensmtpd" or item.daemon != "mta":
            continue
        mine = item.queue_id[:8] in msgids or (bare and bare in item.detail)
        if not mine or item.recipient.lower() != recipient.lower():
            continue
        msgids.add(item.queue_id[:8])
        attempts.append(_attempt(item))
        evidence.append(item.line)
    return Trace("opensmtpd", tuple(sorted(msgids)), tuple(attempts), tuple(evidence))


def trace(
    lines: Sequence[str], message_id: str, recipient: str, queue_id: str | None = None, log_format: str = "auto"
) -> Trace:
    """Every attempt to deliver `message_id` to `recipient` in these log lines; pure."""
    chosen = detect_format(lines) if log_format == "auto" else log_format
    if chosen == "opensmtpd":
        return _opensmtpd(lines, message_id, recipient, queue_id)
    if chosen == "postfix":
        return _postfix(lines, message_id, recipient, queue_id)
    return Trace("unknown", (), ())


def _rotated(path: Path) -> list[Path]:
    """The file and its rotated siblings, oldest first: name.N(.gz) ... name.1, name."""
    siblings: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1 :].removesuffix(".gz")
        if suffix.isdigit():
            siblings.append((int(suffix), candidate))
    ordered = [p for _, p in sorted(siblings, reverse=True)]
    return [*ordered, path] if path.exists() else ordered


def _read_files(path: Path, max_files: int) -> list[str]:
    files = _rotated(path)[-max_files:]
    if not files:
        raise LogUnavailable(_("no MTA log at {path}").format(path=path))
    lines: list[str] = []
    budget = MAX_LOG_BYTES
    for name in reversed(files):
        try:
            opener = gzip.open if name.suffix == ".gz" else open
            with opener(name, "rb") as handle:
                data = handle.read(budget)
        except OSError as error:
            said = _("cannot read the MTA log {name}: {reason}")
            raise LogUnavailable(said.format(name=name, reason=error.strerror or error)) from None
        budget -= len(data)
        lines[:0] = data.decode("utf-8", "replace").splitlines()
        if budget <= 0:
            break
    return lines


async def _run_command(command: Sequence[str], timeout: float) -> list[str]:
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
    except OSError as error:
        said = _("cannot run the log command {command!r}: {reason}")
        raise LogUnavailable(said.format(command=command[0], reason=error.strerror or error)) from None
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        said = _("the log command {command!r} took longer than {seconds} s").format(
            command=command[0], seconds=f"{timeout:.0f}"
        )
        raise LogUnavailable(said) from None
    if process.returncode != 0:
        reason = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {process.returncode}"]
        raise LogUnavailable(
            _("the log command {command!r} failed: {reason}").format(command=command[0], reason=reason[0][:200])
        )
    return out[-MAX_LOG_BYTES:].decode("utf-8", "replace").splitlines()


async def read_log(source: LogSource | None, max_files: int = 3) -> list[str]:
    """The log lines, oldest first; raises LogUnavailable saying why there are none."""
    if source is None or (source.path is None and not source.command):
        raise LogUnavailable(_("no MTA log configured (give a log path or a log command)"))
    if source.command:
        return await _run_command(source.command, source.timeout)
    assert source.path is not None
    return await asyncio.to_thread(_read_files, Path(source.path), max_files)


async def follow(
    source: LogSource | None, message_id: str, recipient: str, queue_id: str | None = None
) -> Trace | LogUnavailable:
    """The trace of one message, or the LogUnavailable saying why it cannot be known."""
    try:
        lines = await read_log(source)
    except LogUnavailable as error:
        return error
    return trace(lines, message_id, recipient, queue_id, source.format if source else "auto")
