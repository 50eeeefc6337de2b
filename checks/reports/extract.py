"""Bytes, files and folders to reports: the one entry point the CLI, the mailbox and the bench share."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from checks.i18n import _
from checks.reports._containers import Limits, Piece, unpack
from checks.reports.aggregate import ReportError, parse_aggregate
from checks.reports.model import Extracted, Report, ReportProblem
from checks.reports.smtp_tls import parse_tls_report

__all__ = ["PROGRESS_EVERY", "iter_files", "read_bytes", "read_paths"]

log = logging.getLogger(__name__)
PROGRESS_EVERY = 500  # files between two progress lines in the log during a backfill


def _document(piece: Piece, limits: Limits) -> tuple[Report, list[str]]:
    head = piece.data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return parse_tls_report(piece.data, piece.source, limits.max_records)
    if head.startswith(b"<") or not head:
        return parse_aggregate(piece.data, piece.source, limits.max_records)
    raise ReportError(_("neither a DMARC report (XML) nor a TLS report (JSON)"), "format")


def _too_large(limits: Limits) -> str:
    return _("larger than {cap} bytes").format(cap=limits.max_bytes)


def read_bytes(data: bytes, source: str, limits: Limits | None = None) -> Extracted:
    """Every report in a file's or a message's bytes, and a problem for each thing wrong; never raises."""
    limits = limits or Limits()
    if len(data) > limits.max_bytes:
        return Extracted(problems=(ReportProblem(source, _too_large(limits), code="too-large"),))
    reports: list[Report] = []
    problems: list[ReportProblem] = []
    for item in unpack(data, source, limits):
        if isinstance(item, ReportProblem):
            problems.append(item)
            continue
        try:
            report, warnings = _document(item, limits)
        except ReportError as error:
            problems.append(ReportProblem(item.source, str(error), "error", error.code))
            continue
        reports.append(report)
        problems += [ReportProblem(item.source, text, "warning", "schema") for text in warnings]
    return Extracted(tuple(reports), tuple(problems))


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """The files named, and the files under the folders named (sorted), one at a time."""
    for path in map(Path, paths):
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


def read_paths(paths: Iterable[str | os.PathLike[str]], limits: Limits | None = None) -> Iterator[Extracted]:
    """One Extracted per file, read one after another (a backfill never holds more than one file)."""
    limits = limits or Limits()
    started, done, reports = time.monotonic(), 0, 0
    for path in iter_files(paths):
        try:
            if path.stat().st_size > limits.max_bytes:
                problem = ReportProblem(str(path), _too_large(limits), code="too-large")
                yield Extracted(problems=(problem,))
                continue
            data = path.read_bytes()
        except OSError as error:
            said = _("cannot read: {error}").format(error=error.strerror)
            yield Extracted(problems=(ReportProblem(str(path), said, code="io"),))
            continue
        extracted = read_bytes(data, str(path), limits)
        done, reports = done + 1, reports + len(extracted.reports)
        if done % PROGRESS_EVERY == 0:
            rate = done / max(time.monotonic() - started, 1e-9)
            log.info("reports: %d files read, %d reports (%.0f files/s)", done, reports, rate)
        yield extracted
