"""From a file or a message to the report documents inside it: gzip, zip, MIME attachments and inline bodies.

Every decompression is capped by what it produces, not by what a header claims (zip and gzip bombs), and
a gzip stream followed by junk (the CRLF some gateways append, as in Mimecast's reports) is read up to
its end. Pieces that cannot be opened become problems, never exceptions.
"""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

from checks.i18n import _
from checks.reports.model import ReportProblem

__all__ = ["Limits", "Piece", "unpack"]

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
CHUNK = 1 << 16
MAX_DEPTH = 4
# Attachment types that carry reports (RFC 7489 §7.2.1.1, RFC 8460 §5.3, and what reporters really send).
REPORT_TYPES = frozenset(
    {
        "application/zip", "application/x-zip", "application/x-zip-compressed", "application/gzip",
        "application/x-gzip", "application/xml", "text/xml", "application/tlsrpt+json", "application/tlsrpt+gzip",
        "application/json", "application/octet-stream",
    }
)  # fmt: skip
REPORT_SUFFIXES = (".xml", ".gz", ".zip", ".json", ".xml.gz", ".json.gz", ".gzip")


@dataclass(frozen=True)
class Limits:
    """Caps that keep a hostile report from filling memory: bytes after decompression, records per report."""

    max_bytes: int = 64 * 1024 * 1024
    max_records: int = 200_000


@dataclass(frozen=True)
class Piece:
    """One document (XML or JSON, still bytes) and where it came from, for problems' sake."""

    source: str
    data: bytes


class _TooLarge(Exception):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    """The first gzip member, read to its end; bytes after it are ignored, output is capped at `limit`."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        out += inflater.decompress(view[start : start + CHUNK], limit + 1 - len(out))
        while inflater.unconsumed_tail and len(out) <= limit:
            out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
        if len(out) > limit:
            raise _TooLarge
        if inflater.eof:
            break
    if not inflater.eof:
        raise zlib.error("the gzip stream is truncated")
    return bytes(out)


def _unzip(data: bytes, source: str, limit: int) -> Iterator[Piece]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        total = 0
        for info in archive.infolist():
            if info.is_dir():
                continue
            out = bytearray()
            with archive.open(info) as member:
                while chunk := member.read(CHUNK):
                    out += chunk
                    total += len(chunk)
                    if total > limit:
                        raise _TooLarge
            yield Piece(f"{source}:{info.filename}", bytes(out))


def _is_message(data: bytes) -> bool:
    head = data[:2048].lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
    first = head.split(b"\n", 1)[0]
    return b":" in first and not first.startswith((b"<", b"{")) and first.split(b":", 1)[0].strip().isascii()


def _is_failure_report(message: Message) -> bool:
    """An ARF report (RFC 5965/6591): what ruf= sends; its counts are in the aggregate reports already."""
    if message.get_content_type() != "multipart/report":
        return False
    return str(message.get_param("report-type", "")).lower() == "feedback-report"


def _parts(message: Message, source: str) -> Iterator[Piece]:
    """The parts of a message that may hold a report: attachments by type or name, and XML/JSON bodies."""
    for number, part in enumerate(message.walk()):
        if part.is_multipart():
            continue
        kind = part.get_content_type().lower()
        name = part.get_filename() or ""
        if kind not in REPORT_TYPES and not name.lower().endswith(REPORT_SUFFIXES) and kind != "text/plain":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload.strip():
            continue
        if kind == "text/plain" and payload.lstrip()[:1] not in (b"<", b"{"):
            continue  # the covering note ("This is an aggregate report from ...")
        name = name or _("part {number}").format(number=number)
        yield Piece(f"{source}:{name}", payload)


def unpack(data: bytes, source: str, limits: Limits, depth: int = 0) -> Iterator[Piece | ReportProblem]:
    """Every report document in `data` (a file's or a message's bytes), or a problem for what cannot be opened."""
    if depth > MAX_DEPTH:
        yield ReportProblem(source, _("nested too deeply (archives within archives)"), code="nested")
        return
    try:
        if data.startswith(GZIP_MAGIC):
            yield from unpack(_gunzip(data, limits.max_bytes), source, limits, depth + 1)
        elif data.startswith(ZIP_MAGIC):
            for item in _unzip(data, source, limits.max_bytes):
                yield from unpack(item.data, item.source, limits, depth + 1)
        elif _is_message(data):
            message = email.message_from_bytes(data, policy=email.policy.compat32)
            if _is_failure_report(message):
                note = _("a DMARC failure report (ruf=, RFC 6591): one message's sample, not counted")
                yield ReportProblem(source, note, severity="warning", code="failure-report")
                return
            found = False
            for piece in _parts(message, source):
                found = True
                yield from unpack(piece.data, piece.source, limits, depth + 1)
            if not found:
                subject = str(message.get("Subject", ""))[:80]
                said = _("a message with no report attached (subject {subject})").format(subject=repr(subject))
                yield ReportProblem(source, said, code="empty")
        else:
            yield Piece(source, data)
    except _TooLarge:
        said = _("larger than {cap} bytes once decompressed").format(cap=limits.max_bytes)
        yield ReportProblem(source, said, code="too-large")
    except (zlib.error, EOFError) as error:
        yield ReportProblem(source, _("not a readable gzip file: {error}").format(error=error), code="gzip")
    except zipfile.BadZipFile as error:
        yield ReportProblem(source, _("not a readable zip file: {error}").format(error=error), code="zip")
