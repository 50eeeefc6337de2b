"""The state file: atomic writes (also under kill -9), corrupt files set aside, the tables' behaviour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.monitor.store import Store, StoreError

FIXED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_values_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = Store(path)
    store.put_state({"key": "a|dnsbl|zen", "status": "ok"})
    store.put_state({"key": "a|dnsbl|zen", "status": "fail"})
    store.add_history({"at": "2024-01-01T00:00:00", "target": "a", "check": "dnsbl", "kind": "problem"})
    store.set_meta("digest_day", "2024-01-01")
    store.close()
    again = Store(path)
    assert again.get_state("a|dnsbl|zen") == {"key": "a|dnsbl|zen", "status": "fail"}
    assert len(again.states()) == 1
    assert [entry["kind"] for entry in again.history(target="a")] == ["problem"]
    assert again.get_meta("digest_day") == "2024-01-01"
    assert again.recovered_from is None


def test_a_batch_is_one_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    before = store.storage.writes
    with store.batch():
        for number in range(50):
            store.put_state({"key": f"k{number}", "status": "ok"})
        store.enqueue({"id": "x", "created": "2024", "rooms": ["!r"], "attempts": 0, "next_try": 0.0})
    assert store.storage.writes == before + 1
    assert len(Store(tmp_path / "state.json").states()) == 50


def test_an_exception_inside_a_batch_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = Store(path)
    store.put_state({"key": "kept", "status": "ok"})
    with pytest.raises(RuntimeError), store.batch():
        store.put_state({"key": "half", "status": "fail"})
        raise RuntimeError("boom")
    assert [doc["key"] for doc in store.states()] == ["kept"]
    assert [doc["key"] for doc in Store(path).states()] == ["kept"]


def test_a_crash_between_temp_file_and_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    store = Store(path)
    store.put_state({"key": "old", "status": "ok"})
    original = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError, match=r"state\.json"):
        store.put_state({"key": "new", "status": "fail"})
    monkeypatch.undo()
    assert path.read_bytes() == original
    # A temp file a killed process left behind is removed and ignored at the next start.
    (tmp_path / ".state.json.999.tmp").write_text('{"torn": ')
    reopened = Store(path)
    assert [doc["key"] for doc in reopened.states()] == ["old"]
    assert not list(tmp_path.glob("*.tmp"))


WRITER = """
import sys
from bot.monitor.store import Store
store = Store(sys.argv[1])
n = (store.get_state("counter") or {"n": 0})["n"]


def write() -> None:
    global n
    n += 1
    with store.batch():
        store.put_state({"key": "counter", "n": n})
        store.add_history({"at": str(n).zfill(9), "target": "t", "check": "c", "pad": "x" * 500})


write()  # the file exists before the test may kill us: a kill can then only land mid-write or between writes
print("ready", flush=True)
while True:
    write()
"""


def test_kill_9_mid_write_never_leaves_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    last = 0
    for kill in range(20):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(0.02 + (kill % 7) * 0.013)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        data = json.loads(path.read_bytes())  # raises on a torn file
        store = Store(path)
        assert store.recovered_from is None
        counter = store.get_state("counter")
        assert counter is not None and counter["n"] == len(store.history())
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
    assert store.states() == []
    store.put_state({"key": "fresh", "status": "ok"})
    again = Store(path, clock=lambda: FIXED)  # no second move: the fresh file is fine
    assert again.recovered_from is None
    assert [doc["key"] for doc in again.states()] == ["fresh"]


def test_a_second_corrupt_file_in_the_same_second_gets_its_own_name(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"{")
    first = Store(path, clock=lambda: FIXED).recovered_from
    path.write_bytes(b"{")
    second = Store(path, clock=lambda: FIXED).recovered_from
    assert first is not None and second is not None and first != second and second.exists()


def test_outbox_leaves_only_when_every_room_has_the_alert(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.json")
    store.enqueue({"id": "b", "created": "2024-01-02", "rooms": ["!one", "!two"], "attempts": 0, "next_try": 0.0})
    store.enqueue({"id": "a", "created": "2024-01-01", "rooms": ["!one"], "attempts": 0, "next_try": 0.0})
    assert [item["id"] for item in store.pending()] == ["a", "b"]
    store.delivered("b", "!one")
    assert store.pending()[1]["rooms"] == ["!two"]
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
        store.add_history({"at": f"2024-01-0{day}T00:00:00+00:00", "target": "t", "check": "c"})
    assert store.prune_history("2024-01-03T00:00:00+00:00") == 2
    assert [entry["at"][:10] for entry in store.history()] == ["2024-01-03", "2024-01-04", "2024-01-05"]
