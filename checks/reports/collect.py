"""The reports mailbox: read every unmarked message, store its reports, then mark it.

The order is the one `checks.providers.feedback.collect` keeps, for the same reason: record, then mark.
A kill between the two leaves the message unmarked; it is read again and the store, keyed by reporter
and report id, counts nothing twice. A message whose reports cannot be read is kept as a problem (once,
by a hash of its bytes) and flagged with `problem_keyword` as well, so it stays where the operator can
look at it and is not read again. A DMARC failure report (ruf=) is noted, not counted, and marked as read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Protocol

from checks.i18n import _
from checks.mailbox import Mailbox, MailboxSettings
from checks.reports._containers import Limits
from checks.reports.extract import read_bytes
from checks.reports.model import Report, ReportProblem

__all__ = [
    "DEFAULT_KEYWORD",
    "DEFAULT_PROBLEM_KEYWORD",
    "CollectResult",
    "ReportSink",
    "ReportsSettings",
    "collect",
]

log = logging.getLogger(__name__)
DEFAULT_KEYWORD = "$RepbotReport"
DEFAULT_PROBLEM_KEYWORD = "$RepbotReportProblem"
DEFAULT_MAX_BYTES = 25_000_000  # a message; a zipped report of 100,000 records is about 2 MB


class ReportSink(Protocol):
    """Where reports and problems are recorded durably; each returns False for one recorded before."""

    async def record(self, report: Report) -> bool: ...

    async def record_problem(self, problem: ReportProblem, key: str) -> bool: ...


@dataclass(frozen=True)
class ReportsSettings:
    mailbox: MailboxSettings
    folder: str = "INBOX"
    mark: str = "flag"  # "flag" (add `keyword`) or "move" (to `processed_folder`)
    keyword: str = DEFAULT_KEYWORD
    problem_keyword: str = DEFAULT_PROBLEM_KEYWORD
    processed_folder: str = "Processed"
    max_bytes: int = DEFAULT_MAX_BYTES
    limits: Limits = field(default_factory=Limits)


@dataclass
class CollectResult:
    new: list[Report] = field(default_factory=list)
    repeated: int = 0
    problems: list[ReportProblem] = field(default_factory=list)
    messages: int = 0


def _source(folder: str, uid: int, raw: bytes | None) -> str:
    sender = ""
    if raw is not None:
        headers = BytesHeaderParser().parsebytes(raw[:16384])
        sender = str(headers.get("From", "")).strip()[:80]
    where = f"{folder} UID {uid}"
    return _("{message} from {sender}").format(message=where, sender=sender) if sender else where


async def _read(box: Mailbox, settings: ReportsSettings, uid: int) -> tuple[list[Report], list[ReportProblem], str]:
    """The reports and problems of one message, and a stable key for its problems."""
    fetched = await box.fetch(uid, settings.max_bytes)
    source = _source(settings.folder, uid, fetched.raw)
    if fetched.raw is None:
        said = _("too large ({size} bytes, the cap is {cap})").format(size=fetched.size, cap=settings.max_bytes)
        problem = ReportProblem(source, said, code="too-large")
        return [], [problem], f"{settings.folder}:{uid}:{fetched.size}"
    extracted = await asyncio.to_thread(read_bytes, fetched.raw, source, settings.limits)
    return list(extracted.reports), list(extracted.problems), hashlib.sha256(fetched.raw).hexdigest()[:24]


async def collect(settings: ReportsSettings, sink: ReportSink) -> CollectResult:
    """Read every unmarked message: record its reports and problems, then mark it. Raises MailboxError."""
    result = CollectResult()
    async with Mailbox(settings.mailbox) as box:
        if settings.mark == "move":
            await box.create(settings.processed_folder)
        await box.select(settings.folder)
        for uid in await box.unprocessed(settings.keyword):
            reports, problems, key = await _read(box, settings, uid)
            for report in reports:
                if await sink.record(report):
                    result.new.append(report)
                else:
                    result.repeated += 1
            for number, problem in enumerate(problems):
                if await sink.record_problem(problem, f"{key}:{number}"):
                    result.problems.append(problem)
                    log.warning("reports: %s: %s", problem.source, problem.error)
            result.messages += 1
            if not reports and any(p.severity == "error" for p in problems):
                await box.flag(uid, settings.keyword, settings.problem_keyword)  # left in place for a look
            elif settings.mark == "move":
                await box.move(uid, settings.processed_folder)
            else:
                await box.flag(uid, settings.keyword)
    return result
