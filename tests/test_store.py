"""The state file: atomic writes (also under kill -9), corrupt files set aside, the tables' behaviour."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.monitor.state import AlertState, HistoryEntry, OutboxItem, json_text
from bot.monitor.store import ROWS_AT_ONCE, SHARD_BUCKETS, Store, StoreError, _dumps, _dumps_rows, _history_line

FIXED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def _state(key: str, status: str) -> AlertState:
    return AlertState(key, "a", "dnsbl", "zen", status=status)


def _alert_states() -> int:
    gc.collect()
    return sum(isinstance(thing, AlertState) for thing in gc.get_objects())


def test_states_are_a_snapshot_of_rows_the_collector_does_not_walk(tmp_path: Path) -> None:
    already = _alert_states()  # what earlier tests left
    store = Store(tmp_path / "state.json")
    with store.batch():
        for n in range(2_000):
            store.put_state(AlertState(f"192.0.2.{n}|dnsbl|zen", f"192.0.2.{n}", "dnsbl", "zen", status="ok"))
        store.put_state(AlertState("d.test|snds|x", "d.test", "snds", "x", status="warn"))
    before = store.states()
    store.put_state(_state("192.0.2.1|dnsbl|zen", "fail"))
    store.seen_again("192.0.2.2|dnsbl|zen", "T9", "ok")
    assert len(before) == 2_001 and before[1].status == "ok" and before[2].last_seen == ""  # taken before the changes
    assert [state.key for state in store.states(check="snds")] == ["d.test|snds|x"]
    assert store.get_state("192.0.2.2|dnsbl|zen") == AlertState(
        "192.0.2.2|dnsbl|zen", "192.0.2.2", "dnsbl", "zen", status="ok", last_seen="T9", last_status="ok"
    )
    del before
    # The full collection after each run walks what the store keeps: rows of strings are nothing to walk.
    assert _alert_states() == already
    assert not any(gc.is_tracked(row) for info in store._shards.values() for row in info.rows.values())
    store.close()


def test_values_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = Store(path)
    store.put_state(_state("a|dnsbl|zen", "ok"))
    store.put_state(_state("a|dnsbl|zen", "fail"))
    store.add_history(HistoryEntry("2024-01-01T00:00:00", "problem", "a", "dnsbl", "zen"))
    store.set_meta("digest_day", "2024-01-01")
    store.close()
    again = Store(path)
    assert again.get_state("a|dnsbl|zen") == _state("a|dnsbl|zen", "fail")
    assert len(again.states()) == 1
    assert [entry.kind for entry in again.history(target="a")] == ["problem"]
    assert again.get_meta("digest_day") == "2024-01-01"
    assert again.recovered_from is None


def test_a_batch_is_one_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    before = store.writes
    with store.batch():
        for number in range(50):
            store.put_state(_state(f"k{number}", "ok"))
        store.enqueue(OutboxItem("x", "2024", ("!r",)))
    assert store.writes == before + 1
    store.close()
    assert len(Store(tmp_path / "state.json").states()) == 50


def test_an_exception_inside_a_batch_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = Store(path)
    store.put_state(_state("kept", "ok"))
    with pytest.raises(RuntimeError), store.batch():
        store.put_state(_state("half", "fail"))
        store.put_state(_state("kept", "fail"))
        store.enqueue(OutboxItem("x", "2024", ("!r",)))
        store.set_meta("digest_day", "today")
        raise RuntimeError("boom")
    assert list(store.states()) == [_state("kept", "ok")]
    assert store.pending() == [] and store.get_meta("digest_day") is None
    store.close()
    assert [state.key for state in Store(path).states()] == ["kept"]


def test_a_crash_between_temp_file_and_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    store = Store(path)
    store.put_state(_state("old", "ok"))
    original = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError, match=r"state\.(json|states/)"):  # the new shard's file, or the main one
        store.put_state(_state("new", "fail"))
    monkeypatch.undo()
    store.close()
    assert path.read_bytes() == original
    # A temp file a killed process left behind is removed and ignored at the next start.
    (tmp_path / ".state.json.999.tmp").write_text('{"torn": ')
    reopened = Store(path)
    assert [state.key for state in reopened.states()] == ["old"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("state.states/*.tmp"))


WRITER = """
import sys
from bot.monitor.state import AlertState, HistoryEntry
from bot.monitor.store import Store
store = Store(sys.argv[1])
found = store.get_state("counter")
n = found.candidate_count if found is not None else 0


def write() -> None:
    global n
    n += 1
    with store.batch():
        store.put_state(AlertState("counter", "t", "c", "s", candidate_count=n, summary="x" * 500))
        store.add_history(HistoryEntry(str(n).zfill(9), "problem", "t", "c", "s", summary="x" * 500))


write()  # the file exists before the test may kill us: a kill can then only land mid-write or between writes
print("ready", flush=True)
while True:
    write()
"""


def _kill_9_after(script: str, path: Path, seconds: float) -> None:
    """Run `script` on the state file at `path`, and kill -9 it `seconds` after it says it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()


def test_kill_9_mid_write_never_leaves_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    last = 0
    for kill in range(20):
        _kill_9_after(WRITER, path, 0.02 + (kill % 7) * 0.013)
        data = json.loads(path.read_bytes())  # raises on a torn file
        store = Store(path)
        assert store.recovered_from is None
        counter = store.get_state("counter")
        assert counter is not None and counter.candidate_count == len(store.history())
        assert [int(entry.at) for entry in store.history()] == list(range(1, len(store.history()) + 1))
        assert len(store.history()) >= last
        last = len(store.history())
        store.close()
        assert isinstance(data, dict)
    assert last > 0


@pytest.mark.parametrize("content", [b'{"state": {"1": {"key": "a"', b"\x00\x00\x00", b"[1, 2]", b'{"state": 3}'])
def test_a_corrupt_file_is_set_aside_and_the_store_starts_fresh(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = Store(path, clock=lambda: FIXED)
    assert store.recovered_from == tmp_path / "state.json.corrupt-20240501T120000Z"
    assert store.recovered_from.read_bytes() == content
    assert list(store.states()) == []
    store.put_state(_state("fresh", "ok"))
    store.close()
    again = Store(path, clock=lambda: FIXED)  # no second move: the fresh file is fine
    assert again.recovered_from is None
    assert [state.key for state in again.states()] == ["fresh"]


def test_a_second_corrupt_file_in_the_same_second_gets_its_own_name(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"{")
    store = Store(path, clock=lambda: FIXED)
    first = store.recovered_from
    store.close()
    path.write_bytes(b"{")
    second = Store(path, clock=lambda: FIXED).recovered_from
    assert first is not None and second is not None and first != second and second.exists()


def test_outbox_leaves_only_when_every_room_has_the_alert(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    store.enqueue(OutboxItem("b", "2024-01-02", ("!one", "!two")))
    store.enqueue(OutboxItem("a", "2024-01-01", ("!one",)))
    assert [item.id for item in store.pending()] == ["a", "b"]
    store.delivered("b", "!one")
    assert store.pending()[1].rooms == ("!two",)
    store.delivered("b", "!two")
    store.delivered("a", "!one")
    assert store.pending() == []


def test_mutes_expire_and_history_is_pruned(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    store.mute("zen.spamhaus.org", "2024-01-02T00:00:00+00:00")
    store.mute("dkim", "2024-01-05T00:00:00+00:00")
    assert store.mutes("2024-01-03T00:00:00+00:00") == {"dkim": "2024-01-05T00:00:00+00:00"}
    assert store.unmute("dkim") and not store.unmute("dkim")
    for day in range(1, 6):
        store.add_history(HistoryEntry(f"2024-01-0{day}T00:00:00+00:00", "problem", "t", "c", "s"))
    assert store.prune_history("2024-01-03T00:00:00+00:00") == 2
    assert [entry.at[:10] for entry in store.history()] == ["2024-01-03", "2024-01-04", "2024-01-05"]
    store.close()
    assert [entry.at[:10] for entry in Store(tmp_path / "state.json").history()] == [
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
    ]


# -- schema 1 (the TinyDB document of earlier versions) migrates on load ---------------------------------------

OLD = Path(__file__).parent / "data" / "store" / "monitor-v1.json"


def test_a_schema_1_file_migrates_on_load_and_keeps_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    path.write_bytes(OLD.read_bytes())
    store = Store(path, clock=lambda: FIXED)
    assert store.recovered_from is None
    listed = store.get_state("192.0.2.25|dnsbl|zen.spamhaus.org")
    assert listed is not None and listed.status == "fail" and listed.significant == {"answers": ["127.0.0.2"]}
    assert {state.key for state in store.states()} == {
        "192.0.2.25|dnsbl|zen.spamhaus.org",
        "192.0.2.25|dnsbl|bl.spamcop.net",
        "example.org|spf|example.org",
    }
    [entry] = store.history(target="192.0.2.25")
    assert (entry.kind, entry.subject, entry.muted) == ("problem", "zen.spamhaus.org", False)
    items = {item.id: item for item in store.pending()}
    assert items["repbot-0123456789abcdef"].attempts == 2 and "new listing" in items["repbot-0123456789abcdef"].plain
    reply = items["canary-tok1"].reply
    assert reply is not None and (reply.room, reply.event_id) == ("!ops:example.org", "$ev1")
    assert (items["digest-timeline-2026-11-01"].kind, items["digest-timeline-2026-11-01"].days) == ("timeline", 7)
    assert store.mutes("2026-11-02T00:00:00+00:00") == {"bl.spamcop.net": "2036-10-29T12:00:00+00:00"}
    assert store.get_meta("canary_pending") == {"tok2": {"canary": {"name": "outlook"}, "reply": None}}
    store.close()
    assert (tmp_path / "monitor.json.schema1").read_bytes() == OLD.read_bytes()
    assert json.loads(path.read_bytes())["schema"] == 3
    again = Store(path)  # the migrated files load as they are
    assert len(again.states()) == 3 and len(again.history()) == 1 and len(again.pending()) == 3
    again.close()


# -- the commit order: a write the process did not finish leaves no half of a run --------------------------


def test_history_and_outbox_of_an_unfinished_commit_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    store = Store(path)
    with store.batch():
        store.put_state(_state("k", "ok"))
        store.add_history(HistoryEntry("2024-01-01", "problem", "a", "dnsbl", "zen"))
    store.close()
    committed = path.read_bytes()
    shards = {file.name: file.read_bytes() for file in (tmp_path / "monitor.states").iterdir()}
    store = Store(path)
    with store.batch():  # this run's state write "never happened": the old state file is put back below
        store.put_state(_state("k", "fail"))
        store.add_history(HistoryEntry("2024-01-02", "resolved", "a", "dnsbl", "zen"))
        store.enqueue(OutboxItem("alert-of-the-lost-run", "2024-01-02", ("!r",)))
    store.enqueue(OutboxItem("a-notice", "2024-01-02", ("!r",)))  # on its own: needs no state write
    store.close()
    # A crash before the main file's rename: the old main file, the shards it names (removed only after that
    # rename) and the new shards no main file names.
    path.write_bytes(committed)
    for name, data in shards.items():
        (tmp_path / "monitor.states" / name).write_bytes(data)
    with (tmp_path / "monitor.history.jsonl").open("ab") as handle:
        handle.write(b'{"seq": 99, "at": "torn')  # and a torn last line
    store = Store(path)
    assert store.get_state("k") == _state("k", "ok")
    assert [entry.kind for entry in store.history()] == ["problem"]
    assert [item.id for item in store.pending()] == ["a-notice"]
    store.put_state(_state("k", "warn"))  # later commits never revive what was dropped
    store.close()
    store = Store(path)
    assert [entry.kind for entry in store.history()] == ["problem"] and len(store.pending()) == 1
    store.close()


async def test_the_writer_thread_merges_commits_and_flush_waits_for_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "monitor.json")
    store.start_writer()
    for number in range(200):
        store.put_state(_state(f"k{number}", "ok"))
    await store.flush()
    assert store.writes <= 200
    store.close()
    again = Store(tmp_path / "monitor.json")
    assert len(again.states()) == 200
    again.close()


async def test_flushes_wait_without_a_thread_each_and_a_failed_write_reaches_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "monitor.json")
    store.start_writer()
    store.put_state(_state("k", "ok"))
    waiting = [asyncio.ensure_future(store.flush()) for _ in range(50)]
    # The loop's executor (6 threads here) is not tied up by 50 waiting flushes: other work still gets a thread.
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "ran"), 5) == "ran"
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    (tmp_path / "monitor.json").unlink()
    (tmp_path / "monitor.json").mkdir()  # the next write cannot replace the file
    store.put_state(_state("k", "fail"))
    with pytest.raises(StoreError):
        await asyncio.wait_for(store.flush(), 5)
    (tmp_path / "monitor.json").rmdir()
    store.put_state(_state("k2", "ok"))  # the failed change is carried by the next commit
    await asyncio.wait_for(store.flush(), 5)
    store.close()
    again = Store(tmp_path / "monitor.json")
    assert again.get_state("k") == _state("k", "fail") and again.get_state("k2") is not None
    again.close()


@pytest.mark.parametrize("count", [0, 1, ROWS_AT_ONCE, ROWS_AT_ONCE + 1, 3 * ROWS_AT_ONCE + 7])
def test_the_state_file_written_in_pieces_is_the_one_document(count: int) -> None:
    rows = [_state(f"k{number}|dnsbl|zön", "ok").to_row() for number in range(count)]
    doc = {"schema": 2, "seq": 7, "mutes": {"x": "y"}}
    pieces = list(_dumps_rows(doc, "state", iter(rows)))
    assert b"".join(pieces) == _dumps({**doc, "state": rows})
    assert len(pieces) == 2 + -(-count // ROWS_AT_ONCE)  # the head, a piece per ROWS_AT_ONCE rows, the tail


def test_a_large_state_table_survives_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path / "monitor.json")
    with store.batch():
        for number in range(3 * ROWS_AT_ONCE + 7):
            store.put_state(_state(f"k{number}", "fail" if number % 7 else "ok"))
    store.close()
    again = Store(tmp_path / "monitor.json")
    assert sorted(state.key for state in again.states()) == sorted(
        f"k{number}" for number in range(3 * ROWS_AT_ONCE + 7)
    )
    assert again.get_state("k7") == _state("k7", "ok")
    again.close()


# -- one instance per state directory, and the state-file gaps of issue 13 ---------------------------------

CONSOLE_CONFIG = """
[monitor]
ips = ["192.0.2.1"]
[schedule]
first_run = "1h"
[digest]
enabled = false
[state]
dir = "{dir}"
"""


def _console(config: Path, **kwargs: object) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bot.cli", "run", "--console", "-c", str(config)]
    root = Path(__file__).parent.parent
    return subprocess.Popen(command, cwd=root, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload,no-any-return]


def test_a_second_instance_on_the_same_state_dir_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text(CONSOLE_CONFIG.format(dir=tmp_path / "state"), encoding="utf-8")
    first = _console(config, stdin=subprocess.PIPE)
    try:
        lock = tmp_path / "state" / "monitor.json.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = _console(config, stdin=subprocess.DEVNULL)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and f"another repbot (pid {first.pid}) is using the state directory" in lines[0], err
        assert "Traceback" not in err and out == ""
    finally:
        assert first.stdin is not None
        first.stdin.close()
        first.wait(30)
    assert first.returncode == 0
    assert _console(config, stdin=subprocess.DEVNULL).wait(60) == 0  # the lock went with the first process


def _as_nobody(path: Path) -> str:
    """Open the store in a forked child that dropped root (tests run as root); the child's StoreError text."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.close(reader)
        message = "opened"
        try:
            os.setgid(65534)
            os.setuid(65534)
            Store(path).close()
        except StoreError as error:
            message = f"StoreError: {error}"
        except BaseException as error:  # anything else is the bug this test looks for
            message = f"{type(error).__name__}: {error}"
        os.write(writer, message.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(child, 0)
    return text


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory that uid nobody can reach (pytest's tmp_path is under root's 0700 directory)."""
    directory = Path(tempfile.mkdtemp(prefix="repbot-store-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_a_read_only_state_dir_is_refused_in_one_line(reachable: Path) -> None:
    (reachable / "state").mkdir(mode=0o755)  # root's: nobody can read it, not write it
    message = _as_nobody(reachable / "state" / "monitor.json")
    assert message.startswith("StoreError: cannot write in the state directory") and "Permission denied" in message


def test_a_state_file_of_mode_000_is_refused_in_one_line(reachable: Path) -> None:
    directory = reachable / "state"
    directory.mkdir()
    directory.chmod(0o777)
    (directory / "monitor.json").write_text('{"schema": 2, "seq": 1, "state": {}}')
    (directory / "monitor.json").chmod(0o000)
    message = _as_nobody(directory / "monitor.json")
    assert message == f"StoreError: cannot read the state file {directory / 'monitor.json'}: Permission denied"


def test_a_state_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match=r"^cannot create the state directory .*file/state: Not a directory$"):
        Store(tmp_path / "file" / "state" / "monitor.json")


@pytest.mark.parametrize("make", ["directory", "deep"])
def test_a_directory_or_deeply_nested_json_is_set_aside(tmp_path: Path, make: str) -> None:
    path = tmp_path / "monitor.json"
    if make == "directory":
        path.mkdir()
        (path / "inside").write_text("x")
    else:
        path.write_text("[" * 100_000 + "]" * 100_000)
    store = Store(path, clock=lambda: FIXED)
    assert store.recovered_from == tmp_path / "monitor.json.corrupt-20240501T120000Z"
    assert list(store.states()) == []
    store.put_state(_state("fresh", "ok"))
    store.close()
    assert [state.key for state in Store(path).states()] == ["fresh"]


def test_a_queue_item_without_created_is_kept_and_a_broken_one_dropped(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    old = {
        "outbox": {
            "1": {"id": "no-date", "rooms": ["!r"], "attempts": 0, "next_try": 0.0, "plain": "p", "html": "h"},
            "2": {"id": "no-rooms", "created": "2024-01-01"},
            "3": ["not", "a", "table"],
        },
        "state": {"1": {"status": "ok"}, "2": {"key": "a|dnsbl|zen", "status": "ok"}},
    }
    path.write_text(json.dumps(old))
    store = Store(path, clock=lambda: FIXED)
    assert [(item.id, item.created) for item in store.pending()] == [("no-date", FIXED.isoformat())]
    assert [state.key for state in store.states()] == ["a|dnsbl|zen"]
    store.close()


def test_a_state_row_of_the_wrong_shape_is_dropped_and_the_others_load(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    store = Store(path)
    store.put_state(_state("kept", "ok"))
    store.close()
    [shard] = (tmp_path / "monitor.states").iterdir()
    doc = json.loads(shard.read_bytes())
    good = doc["state"][0]
    doc["state"] += [[*good[:4], 7, *good[5:]], good[:3], "not a row"]  # status 7, a short row, a string
    shard.write_text(json.dumps(doc))
    assert [state.key for state in Store(path).states()] == ["kept"]


# -- shards: a commit writes the shards that changed; a state seen again changes none ----------------------


def _seen(store: Store, stamp: str, keys: list[str]) -> None:
    with store.batch():
        for key in keys:
            store.seen_again(key, stamp, "ok")


def _shard_files(path: Path) -> set[str]:
    return {file.name for file in path.with_name(f"{path.stem}.states").iterdir()}


def test_a_run_that_sees_every_state_again_writes_no_shard(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    store = Store(path)
    keys = [f"192.0.2.{number}|dnsbl|zen" for number in range(200)]
    with store.batch():
        for key in keys:
            store.put_state(AlertState(key, key.split("|")[0], "dnsbl", "zen", "ok", last_seen="T1", last_status="ok"))
    first = _shard_files(path)
    assert len(first) == SHARD_BUCKETS  # one check: its buckets
    _seen(store, "T2", keys)
    assert _shard_files(path) == first  # the main file's stamps moved, no shard was written
    _seen(store, "T3", keys[1:])  # one state not seen: its shard is written, with that state's own last_seen
    assert len(_shard_files(path) - first) == 1
    store.close()
    again = Store(path)
    assert again.get_state(keys[0]) == store.get_state(keys[0]) and again.get_state(keys[0]).last_seen == "T2"  # type: ignore[union-attr]
    assert {state.last_seen for state in again.states() if state.key != keys[0]} == {"T3"}
    _seen(again, "T4", keys)  # the materialised state floats again once its shard is written
    _seen(again, "T5", keys)
    again.close()
    assert {state.last_seen for state in Store(path).states()} == {"T5"}


def test_a_state_put_again_with_only_a_new_last_seen_writes_no_shard(tmp_path: Path) -> None:
    """An unknown seen again, still unknown, goes through put_state: the store tells it from a change itself."""
    path = tmp_path / "monitor.json"
    store = Store(path)
    unknown = AlertState("k|dnsbl|zen", "k", "dnsbl", "zen", unknown_since="T0", last_seen="T1", last_status="unknown")
    store.put_state(unknown)
    first = _shard_files(path)
    store.put_state(dataclasses.replace(unknown, last_seen="T2"))
    assert _shard_files(path) == first
    store.put_state(dataclasses.replace(unknown, last_seen="T3", unknown_summary="timeout"))
    assert _shard_files(path) != first
    store.close()
    assert Store(path).get_state("k|dnsbl|zen") == dataclasses.replace(
        unknown, last_seen="T3", unknown_summary="timeout"
    )


def test_a_seen_again_that_changes_the_status_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    store = Store(path)
    store.put_state(AlertState("k|dnsbl|zen", "k", "dnsbl", "zen", "ok", last_seen="T1", last_status="ok"))
    with pytest.raises(RuntimeError), store.batch():  # rolled back: nothing of it stays
        store.seen_again("k|dnsbl|zen", "T2", "ok")
        raise RuntimeError("boom")
    assert store.get_state("k|dnsbl|zen").last_seen == "T1"  # type: ignore[union-attr]
    store.seen_again("k|dnsbl|zen", "T3", "unknown")
    store.close()
    state = Store(path).get_state("k|dnsbl|zen")
    assert state is not None and (state.last_seen, state.last_status) == ("T3", "unknown")


SEER = """
import sys
from bot.monitor.state import AlertState
from bot.monitor.store import Store
store = Store(sys.argv[1])
found = store.get_state("counter|c|s")
n = found.candidate_count if found is not None else 0
if found is None:
    with store.batch():
        store.put_state(AlertState("counter|c|s", "t", "c", "s"))
        for i in range(300):
            store.put_state(AlertState(f"{i}|dnsbl|z", str(i), "dnsbl", "z", "ok", last_seen="0" * 9, last_status="ok"))
print("ready", flush=True)
while True:
    n += 1
    with store.batch():  # every third run misses a seventh of the states: their shards are written, not the others
        for i in range(300):
            if not (n % 3 == 0 and i % 7 == 0):
                store.seen_again(f"{i}|dnsbl|z", str(n).zfill(9), "ok")
        store.put_state(AlertState("counter|c|s", "t", "c", "s", candidate_count=n))
"""


def test_kill_9_between_shard_and_main_writes_keeps_one_commit(tmp_path: Path) -> None:
    """Whatever a kill interrupts, each state's last_seen is that of the last committed run that saw it."""
    path = tmp_path / "state.json"
    for kill in range(12):
        _kill_9_after(SEER, path, 0.05 + (kill % 5) * 0.021)
        store = Store(path)
        assert store.recovered_from is None
        counter = store.get_state("counter|c|s")
        assert counter is not None
        done = counter.candidate_count
        for i in range(300):
            seen = max((m for m in range(done + 1) if not (m % 3 == 0 and i % 7 == 0 and m)), default=0)
            assert store.get_state(f"{i}|dnsbl|z").last_seen == str(seen).zfill(9), (i, done)  # type: ignore[union-attr]
        named = {entry[0] for entry in json.loads(path.read_bytes())["shards"].values()}
        store.close()
        assert _shard_files(path) == named  # what the kill left unnamed went at the load
    assert done > 3


# -- schema 2 (every state in the main file) migrates on load; equal texts are shared -----------------------

SCHEMA_2_FIELDS = [
    "key", "target", "check", "subject", "status", "signature", "since", "candidate", "candidate_count",
    "candidate_since", "unknown_since", "unknown_alerted", "unknown_summary", "last_seen", "last_status", "summary",
    "advice", "evidence", "significant", "candidate_summary",
]  # fmt: skip


def _schema_2_row(ip: str) -> list[object]:
    evidence = {"answers": ["127.0.0.2"], "txt": [], "query": f"{ip}.zen", "kind": "block"}
    return [f"{ip}|dnsbl|zen", ip, "dnsbl", "zen", "fail", '["fail", "listed", {"answers": ["127.0.0.2"]}]',
            "2026-01-01", None, 0, None, None, False, "", "2026-02-01", "fail", "listed in zen", "see zen",
            evidence, {"answers": ["127.0.0.2"]}, ""]  # fmt: skip


def test_a_schema_2_file_migrates_on_load_and_keeps_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    doc = {"schema": 2, "seq": 4, "mutes": {"zen": "2036-01-01"}, "meta": {"last_run:blocklists": "2026-02-01"}}
    doc.update(fields=SCHEMA_2_FIELDS, state=[_schema_2_row("192.0.2.1"), _schema_2_row("192.0.2.2")])
    old = json.dumps(doc).encode()
    path.write_bytes(old)
    (tmp_path / "monitor.history.jsonl").write_bytes(
        _history_line(4, HistoryEntry("2026-01-01", "problem", "a", "dnsbl", "zen"))
    )
    store = Store(path)
    state = store.get_state("192.0.2.1|dnsbl|zen")
    assert (
        state is not None
        and state.evidence["query"] == "192.0.2.1.zen"
        and state.significant == {"answers": ["127.0.0.2"]}
    )
    assert state.evidence_json == '{"answers":["127.0.0.2"],"kind":"block","query":"192.0.2.1.zen","txt":[]}'
    assert store.mutes("2030-01-01") == {"zen": "2036-01-01"} and len(store.history()) == 1
    store.close()
    assert (tmp_path / "monitor.json.schema2").read_bytes() == old
    assert json.loads(path.read_bytes())["schema"] == 3
    again = Store(path)
    assert again.get_state("192.0.2.1|dnsbl|zen") == state and len(again.states()) == 2 and len(again.history()) == 1
    again.close()


def test_equal_texts_of_loaded_states_are_one_object(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    store = Store(path)
    for ip in ("192.0.2.1", "192.0.2.2"):
        # Texts made apart, as each finding makes its own.
        summary, significant = "".join(["listed ", "in zen"]), json_text({"answers": ["127.0.0.2"]})
        store.put_state(
            AlertState(f"{ip}|dnsbl|zen", ip, "dnsbl", "zen", summary=summary, significant_json=significant)
        )
    store.close()
    first, second = Store(path).states()
    assert first.summary is second.summary and first.significant_json is second.significant_json
    assert first.significant == {"answers": ["127.0.0.2"]}


def test_shards_without_a_main_file_are_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    store = Store(path)
    store.put_state(_state("a|dnsbl|zen", "ok"))
    store.close()
    path.unlink()
    store = Store(path, clock=lambda: FIXED)
    assert list(store.states()) == [] and store.recovered_from == tmp_path / "monitor.states.corrupt-20240501T120000Z"
    store.close()
