"""Follow a growing log file across rotations, or the journal through a command, from a stored position.

A `Position` is where reading stopped: the file's inode, the byte offset just past the last complete line, and
a fingerprint of the file's first line (`head`), which finds the same file again after logrotate renamed it
(`mail.log.1`), compressed it (`mail.log.1.gz`, `mail.log-20261130.gz`) or copied it before truncating
(`copytruncate`). `read_new(path, position)` returns the complete lines written since, oldest first, and the
new position, so a caller that stores both in one write neither counts a line twice nor skips one.

Blocking file I/O: call it through `asyncio.to_thread`. `read_journal` runs the journal command with
`--after-cursor` and returns the lines and the new cursor.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from checks.errors import LookupFailed
from checks.i18n import N_, _

__all__ = ["Chunk", "LogGone", "Position", "iter_lines", "read_journal", "read_new", "rotated_siblings"]

HEAD_BYTES = 256
READ_LIMIT = 64 * 1024 * 1024
CURSOR_MARK = b"-- cursor: "


class LogGone(LookupFailed):
    """Raised when the log cannot be read at all (missing path, permission denied, the command failed).

    `str()` is English (logs, evidence); `said()` words it in the active language when it is said, which for the
    follower is later than it is raised (the poll runs in no language; `!traffic` in its room's).
    """

    def __init__(self, template: str, **fields: object) -> None:
        self.template, self.fields = template, fields
        super().__init__(template.format(**fields))

    def said(self) -> str:
        return _(self.template).format(**self.fields)


@dataclass(frozen=True)
class Position:
    """Where reading stopped: inode, offset past the last complete line, first-line fingerprint; or a cursor."""

    inode: int = 0
    offset: int = 0
    head: str = ""
    cursor: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"inode": self.inode, "offset": self.offset, "head": self.head, "cursor": self.cursor}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Position | None:
        if not data:
            return None
        try:
            inode, offset = int(data.get("inode", 0)), int(data.get("offset", 0))
            return cls(inode, offset, str(data.get("head", "")), str(data.get("cursor", "")))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Chunk:
    """Complete lines read (bytes, no newline), the position after them, and what happened on the way."""

    lines: list[bytes]
    position: Position
    partial: int = 0  # a line cut off at a rotation, never completed
    rotation: str = ""  # "", "renamed", "truncated", "lost" (the rotated file was not found)
    more: bool = False  # READ_LIMIT stopped the read: call again


def _fingerprint(first: bytes) -> str:
    return hashlib.sha256(first).hexdigest()[:24] if first else ""


def _head_of(handle: IO[bytes]) -> str:
    """The fingerprint of the first complete line, or '' while the file has none."""
    start = handle.read(HEAD_BYTES)
    newline = start.find(b"\n")
    if newline < 0:
        return _fingerprint(start) if len(start) == HEAD_BYTES else ""
    return _fingerprint(start[:newline])


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile reads bytes like any IO[bytes]
    return open(path, "rb")


def rotated_siblings(path: Path) -> list[Path]:
    """The rotated copies of a log (name.1, name.2.gz, name-20261130, ...), newest first."""
    found = [p for p in path.parent.glob(path.name + "[.-]*") if p != path and p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _read_from(handle: IO[bytes], offset: int, limit: int) -> tuple[list[bytes], int, bytes, bool]:
    """Complete lines from `offset`, the bytes they took, the unfinished tail, and whether the limit hit."""
    handle.seek(offset)
    data = handle.read(limit + 1)
    more = len(data) > limit
    data = data[:limit] if more else data
    end = data.rfind(b"\n")
    if end < 0:
        return [], 0, data, more
    body = data[:end]
    return body.split(b"\n"), end + 1, data[end + 1 :], more


def _find_old(path: Path, position: Position) -> Path | None:
    """The file the position was in, now rotated: same inode, else the same first line."""
    siblings = rotated_siblings(path)[:4]
    for candidate in siblings:
        if candidate.suffix != ".gz" and candidate.stat().st_ino == position.inode:
            return candidate
    for candidate in siblings:
        try:
            with _open(candidate) as handle:
                if position.head and _head_of(handle) == position.head:
                    return candidate
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
    return None


def _rest_of_old(path: Path, position: Position) -> tuple[list[bytes], int, bool]:
    """The lines the rotated file got after our offset, the count of a cut-off last line, and whether it was found."""
    old = _find_old(path, position)
    if old is None:
        return [], 0, False
    try:
        with _open(old) as handle:
            lines, _, tail, _ = _read_from(handle, position.offset, READ_LIMIT)
    except (OSError, EOFError, gzip.BadGzipFile):
        return [], 0, False
    return lines, 1 if tail.strip() else 0, True


def read_new(path: Path, position: Position | None, *, from_end: bool = False, limit: int = READ_LIMIT) -> Chunk:
    """The complete lines appended since `position` (None: from the start, or the end with `from_end`)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        # Between logrotate's rename and the MTA's reopen the file may be missing for a moment: the caller's
        # `unknown` is tolerated for that long; a wrong path stays unknown and is reported.
        raise LogGone(N_("no MTA log at {path}"), path=path) from None
    except OSError as error:
        raise LogGone(N_("cannot read {path}: {reason}"), path=path, reason=error.strerror or error) from None
    with handle:
        stat = os.fstat(handle.fileno())
        head = _head_of(handle)
        if position is None:
            start = stat.st_size if from_end else 0
            lines, used, _, more = _read_from(handle, start, 0 if from_end else limit)
            return Chunk(lines, Position(stat.st_ino, start + used, head), more=more and not from_end)
        before: list[bytes] = []
        partial, rotation = 0, ""
        same_inode = stat.st_ino == position.inode
        same_head = not position.head or not head or head == position.head
        if same_inode and same_head and stat.st_size >= position.offset:
            offset = position.offset
        else:
            before, partial, found = _rest_of_old(path, position)
            rotation = ("truncated" if same_inode else "renamed") if found else "lost"
            offset = 0
        lines, used, _, more = _read_from(handle, offset, limit)
        return Chunk([*before, *lines], Position(stat.st_ino, offset + used, head), partial, rotation, more)


def iter_lines(path: Path) -> Iterator[bytes]:
    """Every line of one file, plain or gzip, as bytes without the newline (for the offline summary)."""
    try:
        with _open(path) as handle:
            for raw in handle:
                yield raw.rstrip(b"\n")
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        reason = getattr(error, "strerror", None) or error
        raise LogGone(N_("cannot read {path}: {reason}"), path=path, reason=reason) from None


async def read_journal(
    command: Sequence[str], cursor: str, timeout: float = 30.0, limit: int = READ_LIMIT
) -> tuple[list[bytes], str]:
    """Run the journal command after `cursor` (with --show-cursor); its lines and the cursor it ended at."""
    argv = [*command, "--show-cursor", "--no-pager"]
    if cursor:
        argv.append(f"--after-cursor={cursor}")
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
    except OSError as error:
        why = error.strerror or error
        raise LogGone(
            N_("cannot run the journal command {command!r}: {reason}"), command=command[0], reason=why
        ) from None
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        seconds = f"{timeout:.0f}"
        raise LogGone(N_("the journal command {command!r} took longer than {limit} s"), command=command[0],
                      limit=seconds) from None  # fmt: skip
    if process.returncode != 0:
        reason = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {process.returncode}"]
        raise LogGone(
            N_("the journal command {command!r} failed: {reason}"), command=command[0], reason=reason[0][:200]
        )
    lines = out[:limit].split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    new_cursor = cursor
    if lines and lines[-1].startswith(CURSOR_MARK):
        new_cursor = lines.pop()[len(CURSOR_MARK) :].decode("ascii", "replace").strip()
    return [line for line in lines if not line.startswith(b"-- ")], new_cursor
