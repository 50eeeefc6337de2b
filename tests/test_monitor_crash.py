"""The bot as a subprocess against a real Synapse, killed with SIGKILL again and again while the blocklist
answers change, and cut off from its homeserver: every alert reaches the room exactly once.

The local DNS server flips an address between listed (with a numbered reason) and clean; the bot checks
every second with `confirm = 1`, so each flip it sees is one change, one history entry and one message.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.monitor.state import HistoryEntry
from bot.monitor.store import Store
from checks.dnsbl.catalog import load_catalog
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.synapse import SynapseServer

ZONE = "zen.spamhaus.org"
IP = "192.0.2.77"
QNAME = f"77.2.0.192.{ZONE}"
PASSWORD = "correct horse battery staple"
KILLS = 20


class Flipper:
    """Flips the address between listed and clean in a background thread; each listing has its own reason."""

    def __init__(self, dns: DnsServer, period: float) -> None:
        self.dns = dns
        self.period = period
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def flip(self) -> None:
        self.count += 1
        self.dns.remove(QNAME)
        if self.count % 2:
            # A one-second TTL: the bot's resolver cache must not hide a flip.
            self.dns.add(QNAME, "A", "127.0.0.2", ttl=1)
            self.dns.add(QNAME, "TXT", f"listing number {self.count}", ttl=1)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.flip()

    def __enter__(self) -> Flipper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Harness:
    """The bot's config, its process, and the operator's view of the alert room."""

    def __init__(self, directory: Path, synapse: SynapseServer, dns: DnsServer) -> None:
        self.synapse = synapse
        self.directory = directory
        suffix = uuid.uuid4().hex[:8]
        self.bot_id, bot_token = synapse.register(f"repbot{suffix}", PASSWORD)
        self.operator_id, self.token = synapse.register(f"op{suffix}", PASSWORD)
        self.room = self._api("POST", "/createRoom", {"invite": [self.bot_id]})["room_id"]
        self._api("POST", f"/join/{self.room}", {}, token=bot_token)
        disabled = json.dumps(sorted(zone.name for zone in load_catalog().zones if zone.name != ZONE))
        dns.add(f"2.0.0.127.{ZONE}", "A", "127.0.0.2")
        dns.negative_ttl = 1
        # Forward-confirmed reverse DNS, so the address's other checks stay quiet.
        dns.add("77.2.0.192.in-addr.arpa", "PTR", "mail.example.test.")
        dns.add("mail.example.test", "A", IP)
        self.state = directory / "state" / "monitor.json"
        self.log = directory / "bot.log"
        self.config = directory / "repbot.toml"
        self.config.write_text(
            f"""
[dns]
nameservers = ["{dns.address}"]
timeout = 0.5
[dnsbl]
disabled = {disabled}
[monitor]
ips = ["{IP}"]
[schedule]
blocklists = "1s"
first_run = "1s"
[alerts]
confirm = 1
retry_max = "1s"
[digest]
enabled = false
[state]
dir = "{directory / "state"}"
[matrix]
homeserver = "{synapse.base_url}"
user_id = "{self.bot_id}"
password = "{PASSWORD}"
pickle_key = "test pickle key"
store_dir = "{directory / "store"}"
alert_rooms = ["{self.room}"]
admins = ["{self.operator_id}"]
""",
            encoding="utf-8",
        )
        self.config.chmod(0o600)
        self.process: subprocess.Popen[bytes] | None = None

    def _api(self, method: str, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        url = f"{self.synapse.base_url}/_matrix/client/v3{path}"
        headers = {"Authorization": f"Bearer {token or self.token}"}
        response = httpx.request(method, url, json=body, headers=headers, timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def start(self, wait: bool = True) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            command = [sys.executable, "-m", "bot.cli", "--log-level", "INFO", "run", "-c", str(self.config)]
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            deadline = time.monotonic() + 60
            while "serving as" not in self.log.read_text(errors="replace")[offset:]:
                assert self.process.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, self.log.read_text()[-3000:]
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def alerts_in_room(self) -> list[str]:
        path = f"/rooms/{self.room}/messages?dir=f&limit=1000"
        events = self._api("GET", path, {})["chunk"]
        return [
            event["content"].get("body", "")
            for event in events
            if event.get("sender") == self.bot_id and event.get("type") == "m.room.message"
        ]

    def recorded(self) -> tuple[list[HistoryEntry], int]:
        """The history entries and the outbox length, from a state file that must always load."""
        store = Store(self.state, read_only=True)  # the bot may be running and holds the lock
        try:
            assert store.recovered_from is None, f"the state file was torn: {store.recovered_from}"
            return store.history(), len(store.pending())
        finally:
            store.close()

    def settle(self, timeout: float = 60.0) -> tuple[list[HistoryEntry], list[str]]:
        """Wait until the outbox is empty and the room has as many alerts as the history has changes."""
        deadline = time.monotonic() + timeout
        while True:
            history, pending = self.recorded()
            room = self.alerts_in_room()
            if (pending == 0 and len(room) >= len(history)) or time.monotonic() > deadline:
                return history, room
            time.sleep(0.3)


@pytest.fixture
def harness(tmp_path: Path, synapse: SynapseServer, dns_server: DnsServer) -> Iterator[Harness]:
    made = Harness(tmp_path, synapse, dns_server)
    try:
        yield made
    finally:
        made.stop()


def _assert_exactly_once(history: list[HistoryEntry], room: list[str]) -> None:
    assert history, "no change was ever seen"
    assert len(room) == len(history), f"{len(history)} changes but {len(room)} messages:\n" + "\n".join(room)
    listings = [text for text in room if "delisted" not in text]  # each listing has its own numbered reason
    assert len(listings) == len(set(listings)), "an alert was posted twice"
    kinds = ["problem" if "new listing" in text else "resolved" if "delisted" in text else "evidence" for text in room]
    assert kinds == [entry.kind for entry in history], "the room's order differs from the history"


def test_kill_9_during_changes_loses_and_doubles_no_alert(harness: Harness, dns_server: DnsServer) -> None:
    rng = random.Random(5)
    harness.start()
    with Flipper(dns_server, period=0.9):
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.0))
            harness.kill()
            harness.recorded()  # the state file loads after every kill
            harness.start(wait=rng.random() < 0.5)
    history, room = harness.settle()
    _assert_exactly_once(history, room)


def test_a_homeserver_outage_delays_alerts_but_loses_none(harness: Harness, dns_server: DnsServer) -> None:
    harness.start()
    flipper = Flipper(dns_server, period=1.0)
    flipper.flip()
    time.sleep(3)
    harness.synapse.stop()
    try:
        for _ in range(3):
            flipper.flip()
            time.sleep(2.5)
        history, pending = harness.recorded()
        assert pending >= 1, "the changes during the outage should wait in the outbox"
    finally:
        harness.synapse.start()
    history, room = harness.settle()
    _assert_exactly_once(history, room)
    assert len(history) >= 4
