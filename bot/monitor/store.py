"""The monitor's memory in one TinyDB file: current state, history of changes, the outbox, mutes.

Every write is atomic: the whole document goes to a temporary file in the same directory, is fsynced,
renamed over the old file, and the directory is fsynced. A crash leaves the old file or the new one,
never a torn one. Several changes that belong together (a run's new state, its history and its alert)
are written once, inside `Store.batch()`, so a crash cannot keep the state and lose the alert.

A state file that cannot be read at start is moved aside with a timestamp and the store starts empty;
`Store.recovered_from` names the moved file so the bot can say so in the room.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

__all__ = ["AtomicJSONStorage", "Store", "StoreError"]

log = logging.getLogger(__name__)

Doc = dict[str, Any]


class StoreError(Exception):
    """Raised when the state file cannot be written (disk full, no permission); the message names the path."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicJSONStorage(Storage):
    """A TinyDB Storage that keeps the document in memory and replaces the file atomically on each write.

    Inside `hold()`, writes only change the memory copy; the file is written once when the outermost hold ends.
    """

    def __init__(self, path: str, clock: Any = None) -> None:
        self.path = Path(path)
        self.recovered_from: Path | None = None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._data: Doc | None = None
        self._holds = 0
        self._dirty = False
        self.writes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data = self._load()

    def _load(self) -> Doc | None:
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)  # a write the last process did not finish: the old file stands
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not all(isinstance(table, dict) for table in data.values()):
                raise ValueError("the top level is not a table of tables")
        except ValueError as error:
            self.recovered_from = self._move_aside()
            log.error(
                "state file %s is corrupt (%s); moved to %s, starting fresh", self.path, error, self.recovered_from
            )
            return None
        return data

    def _move_aside(self) -> Path:
        stamp = self._clock().strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
        os.replace(self.path, target)
        _fsync_dir(self.path.parent)
        return target

    def read(self) -> Doc | None:
        return self._data

    def write(self, data: Doc) -> None:
        self._data = data
        if self._holds:
            self._dirty = True
        else:
            self._flush()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Write the file once at the end of the block, not at every change inside it."""
        self._holds += 1
        try:
            yield
        except BaseException:
            self._holds -= 1
            if not self._holds and self._dirty:
                # The memory copy may hold half a change: go back to what the file says.
                self._dirty = False
                self._data = self._load()
            raise
        self._holds -= 1
        if not self._holds and self._dirty:
            self._flush()

    def _flush(self) -> None:
        self._dirty = False
        payload = json.dumps(self._data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise StoreError(f"cannot write the state file {self.path}: {error.strerror}") from error
        _fsync_dir(self.path.parent)
        self.writes += 1

    def close(self) -> None:
        if self._dirty:
            self._flush()


class Store:
    """Typed access to the tables: `state`, `history`, `outbox`, `mutes`, `meta`."""

    def __init__(self, path: str | os.PathLike[str], clock: Any = None) -> None:
        self.path = Path(path)
        self.db = TinyDB(str(self.path), storage=AtomicJSONStorage, clock=clock)
        storage = self.db.storage
        assert isinstance(storage, AtomicJSONStorage)
        self.storage = storage
        self.state = self.db.table("state", cache_size=0)
        self.history_table = self.db.table("history", cache_size=0)
        self.outbox = self.db.table("outbox", cache_size=0)
        self.mutes_table = self.db.table("mutes", cache_size=0)
        self.meta = self.db.table("meta", cache_size=0)

    def __repr__(self) -> str:
        return f"<Store {self.path}>"

    @property
    def recovered_from(self) -> Path | None:
        """Where a corrupt state file found at start was moved, or None."""
        return self.storage.recovered_from

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """A block whose changes reach the file together, in one atomic write."""
        return self.storage.hold()

    def close(self) -> None:
        self.db.close()

    # -- state: one document per (target, check, subject) --------------------------------------------

    def get_state(self, key: str) -> Doc | None:
        found = self.state.get(Query().key == key)
        return dict(found) if found is not None else None

    def put_state(self, doc: Doc) -> None:
        self.state.upsert(doc, Query().key == doc["key"])

    def states(self) -> list[Doc]:
        return [dict(doc) for doc in self.state.all()]

    # -- history: changes only -------------------------------------------------------------------------

    def add_history(self, entry: Doc) -> None:
        self.history_table.insert(entry)

    def history(self, target: str | None = None, check: str | None = None, since: str | None = None) -> list[Doc]:
        """History entries, oldest first, for a target and/or check, from an ISO time on."""

        def wanted(doc: Doc) -> bool:
            return (
                (target is None or doc.get("target") == target)
                and (check is None or doc.get("check") == check)
                and (since is None or str(doc.get("at", "")) >= since)
            )

        return sorted((dict(doc) for doc in self.history_table.all() if wanted(doc)), key=lambda doc: doc["at"])

    def prune_history(self, before: str) -> int:
        """Remove entries older than the ISO time `before`; how many went."""
        return len(self.history_table.remove(Query().at < before))

    # -- outbox: alerts not yet accepted by every room ----------------------------------------------------

    def enqueue(self, item: Doc) -> None:
        self.outbox.insert(item)

    def pending(self) -> list[Doc]:
        return sorted((dict(doc) for doc in self.outbox.all()), key=lambda doc: (doc["created"], doc["id"]))

    def delivered(self, alert_id: str, room: str) -> None:
        """Record that `room` accepted the alert; the alert leaves the outbox once every room has."""
        item = self.outbox.get(Query().id == alert_id)
        if item is None:
            return
        rooms = [name for name in item["rooms"] if name != room]
        if rooms:
            self.outbox.update({"rooms": rooms}, Query().id == alert_id)
        else:
            self.outbox.remove(Query().id == alert_id)

    def retry_later(self, alert_id: str, attempts: int, next_try: float) -> None:
        self.outbox.update({"attempts": attempts, "next_try": next_try}, Query().id == alert_id)

    # -- mutes and small values ---------------------------------------------------------------------------

    def mute(self, what: str, until: str) -> None:
        self.mutes_table.upsert({"what": what, "until": until}, Query().what == what)

    def unmute(self, what: str) -> bool:
        return bool(self.mutes_table.remove(Query().what == what))

    def mutes(self, now: str) -> dict[str, str]:
        """Active mutes: what -> until (ISO); expired ones are dropped."""
        self.mutes_table.remove(Query().until <= now)
        return {doc["what"]: doc["until"] for doc in self.mutes_table.all()}

    def get_meta(self, name: str, default: Any = None) -> Any:
        found = self.meta.get(Query().name == name)
        return found["value"] if found is not None else default

    def set_meta(self, name: str, value: Any) -> None:
        self.meta.upsert({"name": name, "value": value}, Query().name == name)
