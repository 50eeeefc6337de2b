"""The monitor's memory: current state in memory, written once per change set, history and outbox apart.

Files beside each other (for `monitor.json`):

- `monitor.json`: schema, write number (`seq`), mutes, meta, and the table of the state's shards;
- `monitor.states/`: the state of every (target, check, subject), in shards (a check's states in SHARD_BUCKETS
  files by a hash of the key), each shard a file named by the write that made it;
- `monitor.outbox.json`: the messages not yet accepted by every room, and the dead letters;
- `monitor.history.jsonl`: one changed state per line, appended; a year of it never makes a state write slower.

A commit writes only the shards that changed, as new files, before the main file that names them (the old ones
go after it). A state seen again with nothing changed (most states, most runs) changes no shard: a shard's row
without a `last_seen` reads the shard's seen stamp in the main file's table, so a run that sees every state of
a shard again writes one new stamp in the main file, not the shard (`Store.seen_again`). A /20 on every blocklist
(73k states) was a 38 MiB file rewritten at every commit, whose write kept the event loop from the GIL for
up to a second.

Reads are from memory (a dict per table), so a run costs what it changes, not what the file holds. Changes that
belong together (a run's state, its history and its alert) are one `batch()`: one commit, whose files are written
in the order history, outbox, state. The state file's `seq` is the commit point: at load, history lines and
outbox items of a later commit than the state file's are dropped (that run had not finished its write, and it
will see the same change again). Each file is replaced atomically (temporary file, fsync, rename, fsync of the
directory), so kill -9 leaves each file old or new, never torn; a torn last history line is cut off.

With `start_writer()` (the bot), commits are serialised and written by one thread: the event loop only takes a
shallow copy. Commits that pile up while a write is under way are merged, so a burst is one write.
`await flush()` returns once everything committed so far is on disk (the outbox waits for it before it sends).

Schema 1 (one TinyDB document with tables state, history, outbox, mutes, meta) and schema 2 (every state in the
main file) are migrated on load; the old file is kept as `monitor.json.schema1` or `.schema2`. A state file
that cannot be parsed is moved aside with a timestamp (with the shards it named) and the store starts empty;
`Store.recovered_from` names the moved file. A shard that cannot be read is moved aside alone: its states
start afresh. A lock file (`monitor.json.lock`,
flock) keeps a second process off the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import itertools
import json
import logging
import operator
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, overload

from bot.monitor.state import STATE_FIELDS, AlertState, DeadLetter, HistoryEntry, OutboxItem

__all__ = ["SCHEMA", "StateView", "Store", "StoreError"]

log = logging.getLogger(__name__)

SCHEMA = 3
READS = (2, 3)  # the schemas this store loads (schema 1 has no "schema" key: migrated apart)
RACES = 10  # reads of the files another process is writing (read-only) before a missing shard counts as missing
SHARD_BUCKETS = 16  # shards per check: ~4,600 of a /20's 73k blocklist states each, ~1.6 MiB of file
KEEP_DEAD = 50  # dead letters kept for !status; the log has every one
ROWS_AT_ONCE = 100  # state rows per json.dumps call: ~50 KiB, ~0.4 ms with the GIL held (73k rows: 0.3 s)
HISTORY_AT_ONCE = 200  # history lines made per piece of an append (~2 ms)
# What the writer thread sleeps after each piece it made. A thread that computes keeps the GIL for the whole
# switch interval (5 ms) once it has it, and the event loop gives the GIL up at each socket call: without these
# pauses every datagram the loop read during a 73k-state write could cost it 5 ms (the soak's loop was late by
# 0.1-0.4 s). Asleep, the writer lets the loop take the GIL back at once; 730 pieces add ~0.15 s to that write.
WRITER_PAUSE = 0.0002


class StoreError(Exception):
    """The state files cannot be used (no permission, disk full, another instance): one line naming the path."""


Clock = Callable[[], datetime]
T = TypeVar("T")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _replace_atomically(path: Path, payload: bytes | Iterable[bytes], *, sync_dir: bool = True) -> None:
    """`sync_dir=False`: the caller fsyncs the directory once, after several files."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.writelines([payload] if isinstance(payload, bytes) else payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise StoreError(f"cannot write the state file {path}: {_why(error)}") from error
    if sync_dir:
        _fsync_dir(path.parent)


def _paused(pieces: Iterable[bytes], pause: float) -> Iterator[bytes]:
    """The pieces, with the GIL let go for `pause` seconds after each (nothing when 0: no loop in this thread)."""
    for piece in pieces:
        yield piece
        if pause:
            time.sleep(pause)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _dumps_rows(doc: Mapping[str, Any], name: str, rows: Iterable[Any]) -> Iterator[bytes]:
    """`_dumps({**doc, name: list(rows)})` in pieces, `name` last, ROWS_AT_ONCE rows a piece.

    json.dumps holds the GIL for the whole call: one call over 73k states (25 MiB) took 0.43 s, all that time
    keeping the event loop from running although it ran in the writer thread; between two pieces the loop can
    take the GIL. The pieces go to the file as they are made: no copy of the whole file is ever in memory."""
    head = _dumps({**doc, name: []})
    yield head[:-2]
    rows = iter(rows)
    comma = b""
    while piece := list(itertools.islice(rows, ROWS_AT_ONCE)):
        yield comma + _dumps(piece)[1:-1]
        comma = b","
    yield b"]}"


_LAST_SEEN = STATE_FIELDS.index("last_seen")
_LAST_STATUS, _CHECK = STATE_FIELDS.index("last_status"), STATE_FIELDS.index("check")
# A state as the store keeps it: its values in STATE_FIELDS order (AlertState.to_row). A tuple of strings, numbers
# and None is one the garbage collector stops tracking at its first young collection; 73k AlertStates were 73k
# objects that the full collection after each run walked (85-250 ms with the GIL held, the soak's worst stalls).
StateRow = tuple[Any, ...]
ShardRows = tuple[str, tuple[StateRow, ...]]  # a shard to write: its seen stamp and its states' rows


class StateView(Sequence[AlertState]):
    """A snapshot of the states, each made when it is read: `!status` takes one (a copy of 73k references) and
    words it in slices of the event loop, and nothing the store does meanwhile changes it."""

    __slots__ = ("_rows",)

    def __init__(self, rows: tuple[StateRow, ...]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> AlertState: ...
    @overload
    def __getitem__(self, index: slice) -> StateView: ...
    def __getitem__(self, index: int | slice) -> AlertState | StateView:
        if isinstance(index, slice):
            return StateView(self._rows[index])
        return AlertState(*self._rows[index])

    def __iter__(self) -> Iterator[AlertState]:
        return itertools.starmap(AlertState, self._rows)

    def __repr__(self) -> str:
        return f"<StateView of {len(self._rows)} states>"


@dataclass
class _Commit:
    """What one or more commits still have to write; None: that file did not change.

    `main` is (every shard's seen stamp, mutes, meta); `shards` the shards whose rows changed."""

    seq: int
    history_append: list[tuple[int, HistoryEntry]]
    history_rewrite: tuple[tuple[int, HistoryEntry], ...] | None = None
    outbox: tuple[tuple[OutboxItem, ...], tuple[DeadLetter, ...]] | None = None
    main: tuple[dict[str, str], dict[str, str], dict[str, str]] | None = None
    shards: dict[str, ShardRows] = field(default_factory=dict)

    def merge(self, later: _Commit) -> _Commit:
        rewrite = later.history_rewrite if later.history_rewrite is not None else self.history_rewrite
        append = later.history_append
        if later.history_rewrite is None:
            append = [*self.history_append, *later.history_append]
        outbox = later.outbox if later.outbox is not None else self.outbox
        main = later.main if later.main is not None else self.main
        return _Commit(later.seq, append, rewrite, outbox, main, {**self.shards, **later.shards})


# A shard's rows have no last_seen: it is the shard's stamp, or the shard's `seen` table has it (few rows).
SHARD_FIELDS = tuple(name for name in STATE_FIELDS if name != "last_seen")
_shard_row = operator.itemgetter(*(index for index, name in enumerate(STATE_FIELDS) if name != "last_seen"))
_last_seen, _key = operator.itemgetter(_LAST_SEEN), operator.itemgetter(STATE_FIELDS.index("key"))


def _shard_doc(stamp: str, rows: tuple[StateRow, ...]) -> Iterator[bytes]:
    """A shard file: the last_seen of each state that is not the stamp, then the rows (in C: 73k in ~0.3 s)."""
    seen = tuple(map(_last_seen, rows))
    own = dict(itertools.compress(zip(map(_key, rows), seen, strict=True), map(stamp.__ne__, seen)))
    return _dumps_rows({"fields": SHARD_FIELDS, "seen": own}, "state", map(_shard_row, rows))


class _Files:
    """The three files of one store and how each is written; used by the caller's thread or the writer."""

    def __init__(self, path: Path) -> None:
        self.main = path
        self.states = path.with_name(f"{path.stem}.states")
        self.outbox = path.with_name(f"{path.stem}.outbox.json")
        self.history = path.with_name(f"{path.stem}.history.jsonl")
        self.writes = 0
        self.shard_files: dict[str, str] = {}  # shard -> its file in `states`, as the main file on disk names it
        self.pause = 0.0  # WRITER_PAUSE once the writer thread is the only one that writes

    def write(self, commit: _Commit) -> None:
        if commit.history_rewrite is not None:
            entries = itertools.chain(commit.history_rewrite, commit.history_append)
            _replace_atomically(self.history, self._history_pieces(entries))
        elif commit.history_append:
            self._append_history(commit.history_append)
        if commit.outbox is not None:
            items, dead = commit.outbox
            doc = {"schema": SCHEMA, "seq": commit.seq, "items": [item.to_json() for item in items]}
            doc["dead"] = [letter.to_json() for letter in dead]
            _replace_atomically(self.outbox, _dumps(doc))
        if commit.main is not None:
            self._write_main(commit, *commit.main)
        self.writes += 1

    def _write_main(self, commit: _Commit, stamps: dict[str, str], mutes: dict[str, str], meta: dict[str, str]) -> None:
        """The changed shards as new files, then the main file naming them (the commit point), then the files they
        replace go: whenever a crash comes, the main file on disk names complete shards of one commit."""
        written = {shard: self._write_shard(shard, commit.seq, *rows) for shard, rows in commit.shards.items()}
        if written:
            _fsync_dir(self.states)
        files = {**self.shard_files, **written}
        doc = {"schema": SCHEMA, "seq": commit.seq, "mutes": mutes}
        doc["meta"] = {name: json.loads(value) for name, value in meta.items()}
        doc["shards"] = {shard: [files[shard], stamp] for shard, stamp in sorted(stamps.items()) if shard in files}
        _replace_atomically(self.main, _dumps(doc))
        gone = [old for shard, new in written.items() if (old := self.shard_files.get(shard, new)) != new]
        self.shard_files = files
        for name in gone:
            with contextlib.suppress(OSError):  # a file left over is removed at the next start
                (self.states / name).unlink()

    def _write_shard(self, shard: str, seq: int, stamp: str, states: tuple[StateRow, ...]) -> str:
        name = f"{shard}.{seq}.json"
        try:
            self.states.mkdir(exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the state directory {self.states}: {_why(error)}") from error
        _replace_atomically(self.states / name, _paused(_shard_doc(stamp, states), self.pause), sync_dir=False)
        return name

    def _history_pieces(self, entries: Iterable[tuple[int, HistoryEntry]]) -> Iterator[bytes]:
        """The lines of `entries`, HISTORY_AT_ONCE a piece."""

        def pieces() -> Iterator[bytes]:
            rest = iter(entries)
            while chunk := list(itertools.islice(rest, HISTORY_AT_ONCE)):
                yield b"".join(itertools.starmap(_history_line, chunk))

        return _paused(pieces(), self.pause)

    def _append_history(self, entries: Iterable[tuple[int, HistoryEntry]]) -> None:
        try:
            with open(self.history, "ab") as handle:
                handle.writelines(self._history_pieces(entries))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StoreError(f"cannot write the history file {self.history}: {_why(error)}") from error


def _parsed(parse: Callable[[Any], T], doc: Any, what: str, path: Path, *, table: bool = True) -> T | None:
    """One record read; one that cannot be read is dropped with a log line, and the rest stays."""
    try:
        if table and not isinstance(doc, Mapping):
            raise ValueError("not a table")
        return parse(doc)
    except (TypeError, ValueError, AttributeError) as error:
        log.error("dropped a %s of %s that cannot be read (%s): %.200r", what, path, error, doc)
        return None


def _seen_only(before: StateRow, after: StateRow) -> bool:
    """Whether `after` is `before` with another last_seen and nothing else."""
    return before[:_LAST_SEEN] == after[:_LAST_SEEN] and before[_LAST_SEEN + 1 :] == after[_LAST_SEEN + 1 :]


def _shard_name(state: AlertState) -> str:
    """The shard a new state joins: its check's (a run of one family sees all of them again), by a stable hash."""
    check = re.sub(r"[^a-z0-9-]+", "-", state.check.lower()).strip("-")[:40] or "state"
    return f"{check}.{zlib.crc32(state.key.encode()) % SHARD_BUCKETS}"


@dataclass
class _Shard:
    """One shard of the state table, as the store keeps track of it (the event loop's thread only)."""

    # Its states, key -> row, in the order they came: a commit copies a written shard's rows in one C call (the
    # 73k lookups in one table of all states it replaced kept the loop 37 ms, cache misses mostly).
    rows: dict[str, StateRow] = field(default_factory=dict)
    stamp: str = ""  # its seen stamp in the main file: the last_seen of every floating row
    grounded: set[str] = field(default_factory=set)  # keys whose row does not float: few, after a write

    def afloat(self) -> int:
        """How many of its rows the file keeps without a last_seen (their last_seen is the stamp)."""
        return len(self.rows) - len(self.grounded)


class _Raced(Exception):
    """A read-only store found a shard gone: the owner wrote a newer main file meanwhile; read again."""


def _history_line(seq: int, entry: HistoryEntry) -> bytes:
    return _dumps({"seq": seq, **entry.to_json()}) + b"\n"


class _Writer:
    """One thread that writes merged commits in order; the event loop hands them over and goes on."""

    def __init__(self, files: _Files, written: int) -> None:
        self.files = files
        self.pending: _Commit | None = None
        self.written = written  # the last commit on disk: those before the writer started were written directly
        self.error: StoreError | None = None
        self.error_seq = 0  # the last commit the failed write carried: a later one waits for its own try
        self._condition = threading.Condition()
        self._closing = False
        # Futures of `flush` callers, settled from this thread: waiting for a write ties up no thread of the loop's
        # executor (the PSL parse and the providers' secret commands run there), however many wait.
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._thread = threading.Thread(target=self._run, name="repbot-store-writer", daemon=True)
        files.pause = WRITER_PAUSE
        self._thread.start()

    def submit(self, commit: _Commit) -> None:
        with self._condition:
            self.pending = commit if self.pending is None else self.pending.merge(commit)
            self._condition.notify_all()

    def when_written(self, seq: int) -> asyncio.Future[None]:
        """A future of the running loop, done once `seq` is on disk; its exception the StoreError of a failed write."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._condition:
            self._waiters.append((seq, loop, future))
            self._wake(closed=False)
        return future

    def _wake(self, *, closed: bool) -> None:
        """Settle the waiters this state of the files answers (called holding the condition)."""
        keep = []
        for waiter in self._waiters:
            seq, loop, future = waiter
            if self.written >= seq or closed:
                error = None
            elif self.error is not None and seq <= self.error_seq:
                error = self.error
            else:
                keep.append(waiter)
                continue
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, error)
        self._waiters = keep

    def close(self) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join()
        self.files.pause = 0.0
        with self._condition:
            self._wake(closed=True)  # every commit was written (or failed and logged): nothing left to wait for

    def _run(self) -> None:
        while True:
            with self._condition:
                while self.pending is None and not self._closing:
                    self._condition.wait()
                commit, self.pending = self.pending, None
                if commit is None:
                    return
            try:
                self.files.write(commit)
            except StoreError as error:
                log.error("%s; the change stays in memory and is written with the next one", error)
                with self._condition:
                    # Keep it, in front of whatever came in meanwhile, for the next commit to carry.
                    self.pending = commit if self.pending is None else commit.merge(self.pending)
                    self.error, self.error_seq = error, commit.seq
                    self._wake(closed=False)
                    self._condition.notify_all()
                    if self._closing:
                        return
                    self._condition.wait()  # until a new commit (or close) arrives
                continue
            with self._condition:
                self.written = max(self.written, commit.seq)
                self.error = None
                self._wake(closed=False)
                self._condition.notify_all()


def _settle(future: asyncio.Future[None], error: StoreError | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class Store:
    """State, history, outbox, dead letters, mutes and meta values, each a table in memory."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock | None = None, *, read_only: bool = False) -> None:
        """`read_only`: look at the files another process owns (no lock, nothing written or moved)."""
        self.path = Path(path)
        self.read_only = read_only
        self._clock = clock or (lambda: datetime.now(UTC))
        self.files = _Files(self.path)
        self.recovered_from: Path | None = None
        self._empty()
        self._holds = 0
        self._undo: list[Callable[[], None]] = []
        # Each state's value before the batch, for a rollback: one table, not a closure per state (a run puts
        # 73k states, and each closure was objects for the garbage collector to walk until the commit).
        self._old_states: dict[str, StateRow | None] = {}
        self._dirty_main = self._dirty_outbox = self._rewrite_history = False
        self._new_history: list[HistoryEntry] = []
        self._new_items: set[str] = set()
        # This batch's shards to write, and the shards whose floating rows it saw again: (stamp, how many).
        self._dirty_shards: set[str] = set()
        self._sightings: dict[str, tuple[str, int]] = {}
        self._writer: _Writer | None = None
        self._lock_fd = -1 if read_only else self._lock()
        try:
            self._open()
        except BaseException:
            self._unlock()
            raise

    def _empty(self) -> None:
        self._shards: dict[str, _Shard] = {}  # each holds its states' rows: get_state makes the AlertState
        self._shard_of: dict[str, str] = {}  # key -> its shard, in the order the keys came
        self._history: list[tuple[int, HistoryEntry]] = []
        self._outbox: dict[str, OutboxItem] = {}
        self._dead: list[DeadLetter] = []
        self._mutes: dict[str, str] = {}
        self._meta: dict[str, str] = {}  # JSON text: what get_meta hands out is a copy nobody else holds
        self._seq = 0
        self.files.shard_files = {}

    def _open(self) -> None:
        self._patient = self.read_only
        for attempt in range(RACES):
            self._patient = self.read_only and attempt < RACES - 1  # the last try takes a missing shard as missing
            try:
                self._load()
                return
            except _Raced:  # read-only: the owner replaced a shard between our two reads
                self._empty()

    def __repr__(self) -> str:
        return f"<Store {self.path}>"

    @property
    def writes(self) -> int:
        """How many commits reached the disk (merged ones count once)."""
        return self.files.writes

    # -- opening -----------------------------------------------------------------------------------------

    def _lock(self) -> int:
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the state directory {directory}: {_why(error)}") from error
        lock = self.path.with_name(f"{self.path.name}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StoreError(f"cannot write in the state directory {directory}: {_why(error)}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise StoreError(
                    f"another repbot (pid {holder}) is using the state directory {directory}; "
                    "stop it, or give this one its own [state] dir"
                ) from None
            raise StoreError(f"cannot lock {lock}: {_why(error)}") from error
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def _read(self, path: Path) -> Any:
        """The parsed JSON of a file, None when it is missing; a corrupt one is moved aside."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return self._set_aside(path, "it is a directory")
        except OSError as error:
            raise StoreError(f"cannot read the state file {path}: {_why(error)}") from error
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("the top level is not a table")
        except RecursionError:
            return self._set_aside(path, "nested too deep")
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return self._set_aside(path, str(error)[:200])
        return data

    def _set_aside(self, path: Path, why: str) -> None:
        if self.read_only:
            log.error("state file %s is unreadable (%s)", path, why)
            self.recovered_from = self.recovered_from or path
            return None
        stamp = self._clock().strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        try:
            os.replace(path, target)
        except OSError as error:
            reason = f"the state file {path} is unreadable ({why}) and cannot be moved aside: {_why(error)}"
            raise StoreError(reason) from None
        _fsync_dir(path.parent)
        log.error("state file %s is unreadable (%s); moved to %s, starting fresh", path, why, target)
        if self.recovered_from is None:
            self.recovered_from = target
        return None

    def _load(self) -> None:
        for leftover in () if self.read_only else self.path.parent.glob(f".{self.path.stem}.*.tmp"):
            leftover.unlink(missing_ok=True)  # a write the last process did not finish: the old file stands
        main = self._read(self.files.main)
        if main is None and not self.read_only and self.files.states.exists():
            # Shards no main file names: kept aside with it (a fresh store must not mix them with its own).
            self._set_aside(self.files.states, "its main file is missing or unreadable")
        if main is not None and "schema" not in main:
            self._migrate(main)
            return
        if main is not None and main.get("schema") not in READS:
            raise StoreError(
                f"the state file {self.path} has schema {main.get('schema')!r}; this repbot reads {SCHEMA}"
            )
        try:
            main = main or {}
            committed = int(main.get("seq", 0))
            self._load_main(main)
            outbox = self._read(self.files.outbox) or {}
            self._load_outbox(outbox, committed)
            cut = self._load_history(committed)
        except (TypeError, ValueError, AttributeError) as error:
            raise StoreError(f"the state file {self.path} has a bad shape: {error}") from None
        self._seq = max(committed, int(outbox.get("seq", 0)), cut)
        if self.read_only:
            return
        self._remove_unnamed_shards()
        if cut > committed or len(self._outbox) < len(outbox.get("items", ())):
            # Leftovers of a commit whose state write never happened: remove them from the files now, so a
            # later commit with the same number cannot make them count.
            self._seq += 1
            self.files.write(_Commit(self._seq, [], tuple(self._history), self._outbox_snapshot(), None))
        if main.get("schema") == 2:
            self._upgrade()

    def _load_main(self, main: Mapping[str, Any]) -> None:
        """The main file: schema 2 holds the states themselves, schema 3 names the shards that do."""
        for state, _floating in self._rows(main, self.path):
            self._adopt(state)
        self._load_shards(dict(main.get("shards") or {}))
        self._mutes = {str(what): str(until) for what, until in dict(main.get("mutes") or {}).items()}
        self._meta = {str(name): json.dumps(value) for name, value in dict(main.get("meta") or {}).items()}

    def _rows(self, doc: Mapping[str, Any], path: Path, stamp: str = "") -> Iterator[tuple[AlertState, bool]]:
        """The states of a file's `state` rows (in its `fields` order), each with whether it floats.

        A shard's rows have no last_seen: the shard's `seen` table has it, or it is `stamp` (the row floats)."""
        fields = list(doc.get("fields") or STATE_FIELDS)
        bare = "last_seen" not in fields
        literal = dict(doc.get("seen") or {}) if bare else {}
        today = fields == list(SHARD_FIELDS if bare else STATE_FIELDS)
        for row in list(doc.get("state") or ()):
            floating = False
            if bare and isinstance(row, list) and row and isinstance(row[0], str):
                floating = row[0] not in literal
                row = [*row[:_LAST_SEEN], literal.get(row[0], stamp), *row[_LAST_SEEN:]] if today else row
            if isinstance(row, list) and today:
                state = _parsed(AlertState.from_row, row, "state", path, table=False)
            else:
                record = dict(zip(fields, row, strict=False)) if isinstance(row, list) else row
                if bare and isinstance(record, dict):
                    record.setdefault("last_seen", literal.get(record.get("key"), stamp))
                state = _parsed(AlertState.from_json, record, "state", path)
            if state is not None:
                yield state, floating

    def _adopt(self, state: AlertState, shard: str | None = None, *, floating: bool = False) -> None:
        """A state read from a file joins the table (the first of a key wins): in `shard`, or the one it hashes to."""
        key = state.key
        if key in self._shard_of:
            return
        if shard is None:
            self._shards[self._place(state)].rows[key] = state.to_row()
            return
        self._shard_of[key] = shard
        info = self._shards.setdefault(shard, _Shard())
        info.rows[key] = state.to_row()
        if not floating:
            info.grounded.add(key)

    def _load_shards(self, table: Mapping[str, Any]) -> None:
        for shard, entry in table.items():
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
                raise ValueError(f"the shard {shard!r} is not [file, stamp]")
            name, stamp = entry
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"the shard {shard!r} names the file {name!r}")
            path = self.files.states / name
            doc = self._read(path)
            if doc is None:
                if self._patient and not path.exists():
                    raise _Raced
                if not path.exists():
                    log.error("state shard %s, named by %s, is missing; its states start afresh", path, self.path)
                continue
            self.files.shard_files[str(shard)] = name
            self._shards[str(shard)] = _Shard(stamp=stamp)
            for state, floating in self._rows(doc, path, stamp):
                self._adopt(state, str(shard), floating=floating)

    def _remove_unnamed_shards(self) -> None:
        """Shard files the main file does not name: a write that never reached its commit point (a crash before
        the main file), or files a newer commit replaced that a crash kept from being removed."""
        named = set(self.files.shard_files.values())
        try:
            leftovers = [path for path in self.files.states.iterdir() if path.name not in named]
        except OSError:  # no shards yet
            return
        for path in leftovers:
            if path.suffix in (".json", ".tmp"):  # not the ones moved aside as unreadable
                with contextlib.suppress(OSError):
                    path.unlink()

    def _upgrade(self) -> None:
        """Schema 2 kept every state in the main file: write them as shards; the old file is kept beside."""
        backup = self.path.with_name(f"{self.path.name}.schema2")
        _replace_atomically(backup, self.files.main.read_bytes())
        self.files.write(self._everything(self._seq))
        log.info("state file %s moved from schema 2 to %d; the old file is %s", self.path, SCHEMA, backup)

    def _everything(self, seq: int) -> _Commit:
        """A commit that writes every shard and the main file."""
        self._dirty_shards.update(self._shards)
        stamps, shards = self._shard_changes()
        self._dirty_shards.clear()
        return _Commit(seq, [], None, None, (stamps, dict(self._mutes), dict(self._meta)), shards)

    def _load_outbox(self, outbox: Mapping[str, Any], committed: int) -> None:
        self._add_items(list(outbox.get("items") or ()), committed, self.clock_text())
        for doc in list(outbox.get("dead") or ()):
            if (letter := _parsed(DeadLetter.from_json, doc, "dead letter", self.path)) is not None:
                self._dead.append(letter)

    def clock_text(self) -> str:
        return self._clock().isoformat()

    def _add_items(self, docs: Iterable[Any], committed: int, now: str) -> None:
        """Outbox items of committed writes; one without `created` is dated now, so it is still sent."""
        for doc in docs:
            item = _parsed(lambda data: OutboxItem.from_json(data, created=now), doc, "outbox item", self.path)
            if item is not None and item.needs <= committed:
                self._outbox[item.id] = item

    def _load_history(self, committed: int) -> int:
        """Read the history up to the committed write; the highest write number seen (for the next one)."""
        try:
            raw = self.files.history.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise StoreError(f"cannot read the history file {self.files.history}: {_why(error)}") from error
        highest, start = 0, 0
        while start < len(raw):
            end = raw.find(b"\n", start)
            if end < 0:
                highest = max(highest, committed + 1)  # a torn last line: rewritten below
                break
            try:
                doc = json.loads(raw[start:end])
                seq = int(doc.pop("seq", 0))
                entry = HistoryEntry.from_json(doc)
            except (ValueError, TypeError, AttributeError, RecursionError) as error:
                log.error("dropped a history line of %s that cannot be read (%s)", self.files.history, error)
                highest = max(highest, committed + 1)
                start = end + 1
                continue
            highest = max(highest, seq)
            if seq <= committed:
                self._history.append((seq, entry))
            start = end + 1
        return highest

    def _migrate(self, old: Mapping[str, Any]) -> None:
        """Schema 1, a TinyDB document (table -> {doc id -> doc}), into today's three files; the old one is kept."""
        backup = self.path.with_name(f"{self.path.name}.schema1")
        tables = {name: table for name, table in old.items() if isinstance(table, dict)}
        if len(tables) != len(old):
            self._set_aside(self.files.main, "the top level is not a table of tables")
            return
        try:
            for doc in tables.get("state", {}).values():
                if (state := _parsed(AlertState.from_json, doc, "state", self.path)) is not None:
                    self._adopt(state)
            for doc in tables.get("history", {}).values():
                if (entry := _parsed(HistoryEntry.from_json, doc, "history entry", self.path)) is not None:
                    self._history.append((0, entry))
            self._history.sort(key=lambda pair: pair[1].at)
            self._add_items(tables.get("outbox", {}).values(), 0, self.clock_text())
            for doc in tables.get("mutes", {}).values():
                if isinstance(doc, dict) and isinstance(doc.get("what"), str) and isinstance(doc.get("until"), str):
                    self._mutes[doc["what"]] = doc["until"]
            for doc in tables.get("meta", {}).values():
                if isinstance(doc, dict) and isinstance(doc.get("name"), str):
                    self._meta[doc["name"]] = json.dumps(doc.get("value"))
        except (TypeError, ValueError, AttributeError) as error:
            raise StoreError(f"the state file {self.path} (schema 1) has a bad shape: {error}") from None
        self._seq = 1
        if self.read_only:
            return
        _replace_atomically(backup, self.files.main.read_bytes())
        commit = self._everything(1)
        commit.history_rewrite, commit.outbox = tuple(self._history), self._outbox_snapshot()
        self.files.write(commit)
        log.info("state file %s moved from schema 1 to %d; the old file is %s", self.path, SCHEMA, backup)

    # -- commits -------------------------------------------------------------------------------------------

    def start_writer(self) -> None:
        """From now on, commits are written by a thread; the caller only hands them over."""
        if self._writer is None:
            self._writer = _Writer(self.files, self._seq)

    async def flush(self) -> None:
        """Wait until every commit so far is on disk; StoreError when the write that carried the last one failed."""
        if self._writer is not None:
            await self._writer.when_written(self._seq)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """A block whose changes are committed together (one write); an exception inside undoes them."""
        return self._hold()

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        self._holds += 1
        try:
            yield
        except BaseException:
            self._holds -= 1
            if not self._holds:
                self._rollback()
            raise
        self._holds -= 1
        if not self._holds:
            self._commit()

    def _change(self, undo: Callable[[], None] | None, *, main: bool = False, outbox: bool = False) -> None:
        if undo is not None:
            self._undo.append(undo)
        self._dirty_main |= main
        self._dirty_outbox |= outbox
        if not self._holds:
            self._commit()

    def _rollback(self) -> None:
        for undo in reversed(self._undo):
            undo()
        for key, old in self._old_states.items():
            if old is None:
                self._forget(key)
            else:
                self._shards[self._shard_of[key]].rows[key] = old
        self._clear_pending()

    def _clear_pending(self) -> None:
        self._undo.clear()
        self._old_states.clear()
        self._dirty_shards.clear()
        self._sightings.clear()
        self._new_history.clear()
        self._new_items.clear()
        self._dirty_main = self._dirty_outbox = self._rewrite_history = False

    def _commit(self) -> None:
        if not (self._dirty_main or self._dirty_outbox or self._new_history or self._rewrite_history):
            self._clear_pending()
            return
        self._seq += 1
        seq = self._seq
        main = self._dirty_main or bool(self._new_history)
        if main:
            # These items count only once this commit's state file is written (see the module's docstring).
            for alert_id in self._new_items:
                if alert_id in self._outbox:
                    self._outbox[alert_id] = dataclasses.replace(self._outbox[alert_id], needs=seq)
        appended = [(seq, entry) for entry in self._new_history]
        self._history.extend(appended)
        stamps, shards = self._shard_changes() if main else ({}, {})
        commit = _Commit(
            seq,
            [] if self._rewrite_history else appended,
            tuple(self._history) if self._rewrite_history else None,
            self._outbox_snapshot() if self._dirty_outbox else None,
            (stamps, dict(self._mutes), dict(self._meta)) if main else None,
            shards,
        )
        self._clear_pending()
        if self.read_only:
            raise StoreError(f"the state file {self.path} was opened read-only")
        if self._writer is not None:
            self._writer.submit(commit)
        else:
            self.files.write(commit)

    def _shard_changes(self) -> tuple[dict[str, str], dict[str, ShardRows]]:
        """Every shard's seen stamp after this commit, and the shards it writes, with their states.

        A shard whose floating rows were all seen again at one stamp only moves its stamp; one with a changed or
        an unseen floating row is written whole, its stamp then the newest last_seen among its states."""
        for shard, (stamp, count) in self._sightings.items():
            info = self._shards[shard]
            if shard in self._dirty_shards or count != info.afloat():
                self._dirty_shards.add(shard)
            else:
                info.stamp = stamp
        written: dict[str, ShardRows] = {}
        for shard in self._dirty_shards:  # in C: a /20's first runs write 73k states, in one turn of the loop
            info = self._shards[shard]
            rows = tuple(info.rows.values())
            seen = tuple(map(_last_seen, rows))
            info.stamp = max(seen, default="")
            info.grounded = set(itertools.compress(info.rows, map(info.stamp.__ne__, seen)))
            written[shard] = (info.stamp, rows)
        return {name: info.stamp for name, info in self._shards.items()}, written

    def _outbox_snapshot(self) -> tuple[tuple[OutboxItem, ...], tuple[DeadLetter, ...]]:
        return tuple(self._outbox.values()), tuple(self._dead)

    def close(self) -> None:
        """Write what is committed, stop the writer, release the lock."""
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        finally:
            self._unlock()

    # -- state: one AlertState per (target, check, subject) ------------------------------------------------

    def _row(self, key: str) -> StateRow | None:
        shard = self._shard_of.get(key)
        return None if shard is None else self._shards[shard].rows.get(key)

    def get_state(self, key: str) -> AlertState | None:
        row = self._row(key)
        return None if row is None else AlertState(*row)

    def put_state(self, state: AlertState) -> None:
        key, row = state.key, state.to_row()
        old = self._row(key)
        if old is not None and key not in self._old_states and _seen_only(old, row):
            # Only last_seen moved, though the caller could not tell (an unknown seen again, still unknown).
            self._sighted(key, old, row)
            return
        self._old_states.setdefault(key, old)
        shard = self._place(state)
        self._shards[shard].rows[key] = row
        self._dirty_shards.add(shard)
        self._change(None, main=True)

    def seen_again(self, key: str, stamp: str, status: str) -> None:
        """The stored state of `key` seen once more at `stamp` with `status`, nothing else changed.

        `put_state(state.seen_again(stamp, status))` in effect, without comparing the two states (nor making one:
        a blocklists run of a /20 sees 73k states again)."""
        old = self._shards[self._shard_of[key]].rows[key]
        if status != old[_LAST_STATUS] or key in self._old_states:
            self.put_state(AlertState(*old).seen_again(stamp, status))
        else:
            self._sighted(key, old, (*old[:_LAST_SEEN], stamp, *old[_LAST_SEEN + 1 :]))

    def _sighted(self, key: str, old: StateRow, new: StateRow) -> None:
        """`new` is `old` seen again (first time in this batch, same last_status). A floating row seen again at
        the same stamp as the other floating rows of its shard leaves the shard's file as it is (`_shard_changes`)."""
        stamp = new[_LAST_SEEN]
        self._old_states[key] = old
        shard = self._shard_of[key]
        info = self._shards[shard]
        info.rows[key] = new
        at, count = self._sightings.get(shard, (stamp, 0))
        if at == stamp and key not in info.grounded:
            self._sightings[shard] = (stamp, count + 1)
        else:
            self._dirty_shards.add(shard)
        self._change(None, main=True)

    def _place(self, state: AlertState) -> str:
        """The shard of the state's key (a new key joins the one it hashes to)."""
        shard = self._shard_of.get(state.key)
        if shard is None:  # a new key: its row is not in its shard's file yet, so it does not float
            shard = self._shard_of[state.key] = _shard_name(state)
            self._shards.setdefault(shard, _Shard()).grounded.add(state.key)
        return shard

    def _forget(self, key: str) -> None:
        shard = self._shard_of.pop(key, None)
        if shard is not None:
            self._shards[shard].rows.pop(key, None)
            self._shards[shard].grounded.discard(key)

    def states(self, check: str | None = None) -> StateView:
        """Every state (of one check), as they are now: a snapshot that makes each AlertState when it is read."""
        rows = tuple(itertools.chain.from_iterable(info.rows.values() for info in self._shards.values()))
        if check is not None:
            rows = tuple(row for row in rows if row[_CHECK] == check)
        return StateView(rows)

    @staticmethod
    def _restore(table: dict[str, Any], key: str, old: Any) -> None:
        if old is None:
            table.pop(key, None)
        else:
            table[key] = old

    # -- history: changes only -------------------------------------------------------------------------

    def add_history(self, entry: HistoryEntry) -> None:
        self._new_history.append(entry)
        self._change(None)

    def history(
        self, target: str | None = None, check: str | None = None, since: str | None = None
    ) -> list[HistoryEntry]:
        """History entries, oldest first, for a target and/or check, from an ISO time on."""
        found = [
            entry
            for _, entry in self._history
            if (target is None or entry.target == target)
            and (check is None or entry.check == check)
            and (since is None or entry.at >= since)
        ]
        found.extend(
            e
            for e in self._new_history
            if (target is None or e.target == target)
            and (check is None or e.check == check)
            and (since is None or e.at >= since)
        )
        return sorted(found, key=lambda entry: entry.at)

    def prune_history(self, before: str) -> int:
        """Remove entries older than the ISO time `before`; how many went."""
        kept = [pair for pair in self._history if pair[1].at >= before]
        removed = len(self._history) - len(kept)
        if removed:
            old = self._history
            self._history = kept

            def undo() -> None:
                self._history = old

            self._rewrite_history = True
            self._change(undo)
        return removed

    # -- outbox: messages not yet accepted by every room --------------------------------------------------

    def enqueue(self, item: OutboxItem) -> None:
        old = self._outbox.get(item.id)
        self._outbox[item.id] = item
        self._new_items.add(item.id)
        self._change(lambda: self._restore(self._outbox, item.id, old), outbox=True)

    def pending(self) -> list[OutboxItem]:
        return sorted(self._outbox.values(), key=lambda item: (item.created, item.id))

    def get_item(self, alert_id: str) -> OutboxItem | None:
        return self._outbox.get(alert_id)

    def _update_item(self, alert_id: str, new: OutboxItem | None) -> None:
        old = self._outbox.get(alert_id)
        if old is None:
            return
        if new is None:
            del self._outbox[alert_id]
        else:
            self._outbox[alert_id] = new
        self._change(lambda: self._restore(self._outbox, alert_id, old), outbox=True)

    def delivered(self, alert_id: str, room: str) -> None:
        """Record that `room` accepted the alert; the alert leaves the outbox once every room has."""
        item = self._outbox.get(alert_id)
        if item is not None:
            rooms = tuple(name for name in item.rooms if name != room)
            self._update_item(alert_id, dataclasses.replace(item, rooms=rooms, refusals=0) if rooms else None)

    def retry_later(
        self, alert_id: str, attempts: int, next_try: float, *, error: str = "", refused: bool = False
    ) -> None:
        item = self._outbox.get(alert_id)
        if item is not None:
            refusals = item.refusals + 1 if refused else 0
            new = dataclasses.replace(item, attempts=attempts, next_try=next_try, refusals=refusals, last_error=error)
            self._update_item(alert_id, new)

    def dead_letter(self, alert_id: str, room: str, reason: str) -> DeadLetter | None:
        """Give up on the item in this room: it leaves the outbox (for that room) and joins the dead letters."""
        item = self._outbox.get(alert_id)
        if item is None:
            return None
        letter = DeadLetter(item, room, reason, self._clock().isoformat())
        old_dead = list(self._dead)

        def undo() -> None:
            self._dead = old_dead

        with self.batch():
            self._dead = [*self._dead, letter][-KEEP_DEAD:]
            self._change(undo, outbox=True)
            self.delivered(alert_id, room)
        return letter

    def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead)

    # -- mutes and small values ---------------------------------------------------------------------------

    def mute(self, what: str, until: str) -> None:
        old = self._mutes.get(what)
        self._mutes[what] = until
        self._change(lambda: self._restore(self._mutes, what, old), main=True)

    def unmute(self, what: str) -> bool:
        old = self._mutes.pop(what, None)
        if old is not None:
            self._change(lambda: self._restore(self._mutes, what, old), main=True)
        return old is not None

    def mutes(self, now: str) -> dict[str, str]:
        """Active mutes: what -> until (ISO); expired ones are left out (and dropped at the next write)."""
        return {what: until for what, until in self._mutes.items() if until > now}

    def get_meta(self, name: str, default: Any = None) -> Any:
        found = self._meta.get(name)
        return json.loads(found) if found is not None else default

    def set_meta(self, name: str, value: Any) -> None:
        old = self._meta.get(name)
        self._meta[name] = json.dumps(value)
        self._change(lambda: self._restore(self._meta, name, old), main=True)
