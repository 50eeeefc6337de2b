"""The report store: one SQLite file in the state directory, rows by reporter, report id, day and source IP.

A report is written in one transaction, keyed by (reporter, report id): recording it again changes nothing,
and a process killed mid-write leaves either the whole report or none of it (SQLite's journal), so a
restart in the middle of a mailbox counts nothing twice and loses nothing. The store is separate from the
monitor's state file on purpose: it holds thousands of rows that only this module reads.

The query API (`counts`, `dmarc_rows`, `tls_rows`, `reporter_days`) returns frozen values; see docs/reports.md.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from checks.reports.model import DmarcReport, Report, ReportProblem, TlsReport

__all__ = ["STORE_FILE", "DmarcCounts", "DmarcRow", "ProblemRow", "ReportStore", "TlsRow"]

STORE_FILE = "reports.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    reporter_key TEXT NOT NULL, report_id TEXT NOT NULL, kind TEXT NOT NULL, reporter TEXT NOT NULL,
    provider TEXT NOT NULL, policy_domain TEXT NOT NULL, day TEXT NOT NULL, begin TEXT NOT NULL, end TEXT NOT NULL,
    messages INTEGER NOT NULL, source TEXT NOT NULL, recorded_at TEXT NOT NULL,
    PRIMARY KEY (reporter_key, report_id));
CREATE TABLE IF NOT EXISTS dmarc_rows (
    reporter_key TEXT NOT NULL, report_id TEXT NOT NULL, provider TEXT NOT NULL, policy_domain TEXT NOT NULL,
    day TEXT NOT NULL, source_ip TEXT NOT NULL, header_from TEXT NOT NULL, disposition TEXT NOT NULL,
    dkim TEXT NOT NULL, spf TEXT NOT NULL, count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS dmarc_by_day ON dmarc_rows (day, provider, source_ip);
CREATE TABLE IF NOT EXISTS tls_rows (
    reporter_key TEXT NOT NULL, report_id TEXT NOT NULL, provider TEXT NOT NULL, policy_domain TEXT NOT NULL,
    day TEXT NOT NULL, policy_type TEXT NOT NULL, result_type TEXT NOT NULL, receiving_mx TEXT NOT NULL,
    successful INTEGER NOT NULL, failed INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tls_by_day ON tls_rows (day, policy_domain);
CREATE TABLE IF NOT EXISTS problems (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, error TEXT NOT NULL, severity TEXT NOT NULL, code TEXT NOT NULL,
    recorded_at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class DmarcCounts:
    """Messages a reporter counted (from one source IP, or all) on one day, and how they authenticated."""

    messages: int = 0
    dmarc_pass: int = 0
    dkim_pass: int = 0
    spf_pass: int = 0
    quarantined: int = 0
    rejected: int = 0
    reports: int = 0

    @property
    def dmarc_fail(self) -> int:
        return self.messages - self.dmarc_pass


@dataclass(frozen=True)
class DmarcRow:
    """Messages with one outcome: from one source IP as one header_from, in one reporter's report of one day."""

    provider: str
    reporter_key: str
    report_id: str
    policy_domain: str
    day: date
    source_ip: str
    header_from: str
    disposition: str
    dkim: str
    spf: str
    count: int

    @property
    def passed(self) -> bool:
        return self.dkim == "pass" or self.spf == "pass"


@dataclass(frozen=True)
class TlsRow:
    """One policy's sessions in a TLS report; `result_type` is empty on the row of its successful sessions."""

    provider: str
    reporter_key: str
    report_id: str
    policy_domain: str
    day: date
    policy_type: str
    result_type: str
    receiving_mx: str
    successful: int
    failed: int


@dataclass(frozen=True)
class ProblemRow:
    source: str
    error: str
    severity: str
    code: str
    recorded_at: datetime


def _key(report: Report) -> str:
    return report.reporter.strip().lower() or report.provider


class ReportStore:
    """The SQLite store of reports; safe to share between the event loop and `asyncio.to_thread` workers."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"<ReportStore {self.path}>"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writing ------------------------------------------------------------------------------------------

    def add(self, report: Report, now: datetime | None = None) -> bool:
        """Store a report in one transaction; False (and nothing written) when it was stored before."""
        with self._transaction() as db:
            return _insert(db, report, (now or datetime.now(UTC)).isoformat())

    def add_many(self, reports: Iterable[Report], now: datetime | None = None) -> int:
        """Store reports in one transaction (a backfill's batch: one fsync, not one per report); how many were new."""
        stamp = (now or datetime.now(UTC)).isoformat()
        with self._transaction() as db:
            return sum(_insert(db, report, stamp) for report in reports)

    async def record(self, report: Report) -> bool:
        """`add` in a thread (a large report's rows take a moment): the ReportSink protocol."""
        return await asyncio.to_thread(self.add, report)

    def add_problem(self, problem: ReportProblem, key: str, now: datetime | None = None) -> bool:
        """Keep a problem with a report (once per key) so that the monitor can speak of it."""
        now = now or datetime.now(UTC)
        with self._transaction() as db:
            values = (key, problem.source, problem.error, problem.severity, problem.code, now.isoformat())
            return bool(db.execute("INSERT OR IGNORE INTO problems VALUES (?,?,?,?,?,?)", values).rowcount)

    async def record_problem(self, problem: ReportProblem, key: str) -> bool:
        """`add_problem` in a thread: the ReportSink protocol."""
        return await asyncio.to_thread(self.add_problem, problem, key)

    # -- reading ------------------------------------------------------------------------------------------

    def _select(self, sql: str, args: Sequence[object]) -> list[Any]:
        with self._lock:
            return list(self._db.execute(sql, args))

    def has(self, reporter: str, report_id: str) -> bool:
        rows = self._select("SELECT 1 FROM reports WHERE reporter_key=? AND report_id=?", (reporter.lower(), report_id))
        return bool(rows)

    def report_count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self._select("SELECT COUNT(*) FROM reports", ())[0][0])
        return int(self._select("SELECT COUNT(*) FROM reports WHERE kind=?", (kind,))[0][0])

    def counts(self, reporter: str, day: date, source_ip: str | None = None) -> DmarcCounts:
        """What a provider ('microsoft', 'google', ...) or a reporter counted on `day`, from one IP or all."""
        sql = (
            "SELECT COALESCE(SUM(count),0), COALESCE(SUM(CASE WHEN dkim='pass' OR spf='pass' THEN count END),0),"
            " COALESCE(SUM(CASE WHEN dkim='pass' THEN count END),0),"
            " COALESCE(SUM(CASE WHEN spf='pass' THEN count END),0),"
            " COALESCE(SUM(CASE WHEN disposition='quarantine' THEN count END),0),"
            " COALESCE(SUM(CASE WHEN disposition='reject' THEN count END),0), COUNT(DISTINCT report_id)"
            " FROM dmarc_rows WHERE (provider=? OR reporter_key=?) AND day=?"
        )
        args: list[object] = [reporter.lower(), reporter.lower(), day.isoformat()]
        if source_ip is not None:
            sql += " AND source_ip=?"
            args.append(source_ip)
        row = self._select(sql, args)[0]
        return DmarcCounts(*(int(v) for v in row))

    def dmarc_rows(self, since: date, until: date | None = None) -> list[DmarcRow]:
        """Every DMARC row from `since` (inclusive) to `until` (inclusive, default: no end)."""
        sql = "SELECT provider, reporter_key, report_id, policy_domain, day, source_ip, header_from, disposition,"
        sql += " dkim, spf, count FROM dmarc_rows WHERE day>=? AND day<=? ORDER BY day, reporter_key, source_ip"
        rows = self._select(sql, (since.isoformat(), (until or date.max).isoformat()))
        return [DmarcRow(*_with_day(r, 4)) for r in rows]

    def message_totals(self, since: date) -> list[tuple[str, str, bool, int]]:
        """(provider, source IP, passed DMARC, messages) from `since`, summed in SQLite (for metrics scrapes)."""
        sql = "SELECT provider, source_ip, (dkim='pass' OR spf='pass'), SUM(count) FROM dmarc_rows WHERE day>=?"
        sql += " GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC"
        return [(p, ip, bool(ok), int(n)) for p, ip, ok, n in self._select(sql, (since.isoformat(),))]

    def tls_rows(self, since: date) -> list[TlsRow]:
        sql = "SELECT provider, reporter_key, report_id, policy_domain, day, policy_type, result_type, receiving_mx,"
        sql += " successful, failed FROM tls_rows WHERE day>=? ORDER BY day, policy_domain"
        rows = self._select(sql, (since.isoformat(),))
        return [TlsRow(*_with_day(r, 4)) for r in rows]

    def reporter_days(self, kind: str = "dmarc") -> dict[tuple[str, str], list[date]]:
        """Each (policy domain, provider)'s report days, oldest first (for 'gone quiet')."""
        sql = "SELECT DISTINCT policy_domain, provider, day FROM reports WHERE kind=? ORDER BY day"
        days: dict[tuple[str, str], list[date]] = {}
        for domain, provider, day in self._select(sql, (kind,)):
            days.setdefault((domain, provider), []).append(date.fromisoformat(day))
        return days

    def problems(self, since: datetime) -> list[ProblemRow]:
        rows = self._select(
            "SELECT source, error, severity, code, recorded_at FROM problems WHERE recorded_at>=? ORDER BY recorded_at",
            (since.isoformat(),),
        )
        return [ProblemRow(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4])) for r in rows]


def _insert(db: sqlite3.Connection, report: Report, stamp: str) -> bool:
    key, day = _key(report), report.day.isoformat()
    messages = report.messages if isinstance(report, DmarcReport) else sum(p.failed for p in report.policies)
    head = (key, report.report_id, report.kind, report.reporter, report.provider, report.policy_domain, day)
    inserted = db.execute(
        "INSERT OR IGNORE INTO reports VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (*head, report.begin.isoformat(), report.end.isoformat(), messages, report.source, stamp),
    ).rowcount
    if not inserted:
        return False
    if isinstance(report, DmarcReport):
        db.executemany("INSERT INTO dmarc_rows VALUES (?,?,?,?,?,?,?,?,?,?,?)", _dmarc_rows(key, report))
    else:
        db.executemany("INSERT INTO tls_rows VALUES (?,?,?,?,?,?,?,?,?,?)", _tls_rows(key, report))
    return True


def _with_day(row: Any, index: int) -> list[Any]:
    values = list(row)
    values[index] = date.fromisoformat(values[index])
    return values


def _dmarc_rows(key: str, report: DmarcReport) -> Iterator[tuple[object, ...]]:
    """One row per distinct outcome, counts summed: a 2,286-record report of mostly alike records shrinks."""
    summed: dict[tuple[str, str, str, str, str], int] = {}
    for r in report.records:
        outcome = (r.source_ip, r.header_from, r.disposition, r.dkim, r.spf)
        summed[outcome] = summed.get(outcome, 0) + r.count
    head = (key, report.report_id, report.provider, report.policy_domain, report.day.isoformat())
    for outcome, count in summed.items():
        yield (*head, *outcome, count)


def _tls_rows(key: str, report: TlsReport) -> Iterator[tuple[object, ...]]:
    head = (key, report.report_id, report.provider)
    day = report.day.isoformat()
    for policy in report.policies:
        where = (*head, policy.policy_domain, day, policy.policy_type)
        yield (*where, "", "", policy.successful, 0)
        for failure in policy.failures:
            yield (*where, failure.result_type, failure.receiving_mx_hostname, 0, failure.count)
