"""The outbox against a real Synapse: a message the room refuses for good (the bot kicked) becomes a dead letter
after a bounded number of tries, with a short note tried in its place; an oversized alert goes out as a summary
and a file (it would be refused as M_TOO_LARGE), and later alerts never wait."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config.loader import parse_config
from bot.context import build_context
from bot.monitor.core import MAX_REFUSALS, Monitor
from bot.monitor.store import Store
from bot.render import Rendered, plain_and_html, status_text
from bot.transports.base import Incoming
from bot.transports.matrix import MatrixTransport
from tests.fixtures.synapse import SynapseServer

PASSWORD = "correct horse battery staple"


class Room:
    """The operator's side: a room with the bot in it, read and steered through the client API."""

    def __init__(self, synapse: SynapseServer) -> None:
        self.synapse = synapse
        suffix = uuid.uuid4().hex[:8]
        self.bot_id, self.bot_token = synapse.register(f"repbot{suffix}", PASSWORD)
        self.operator_id, self.token = synapse.register(f"op{suffix}", PASSWORD)
        self.room = self.api("POST", "/createRoom", {"invite": [self.bot_id]})["room_id"]
        self.api("POST", f"/join/{self.room}", {}, token=self.bot_token)

    def api(self, method: str, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        url = f"{self.synapse.base_url}/_matrix/client/v3{path}"
        response = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {token or self.token}"})
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def bodies(self) -> list[str]:
        events = self.api("GET", f"/rooms/{self.room}/messages?dir=f&limit=1000", {})["chunk"]
        return [
            event["content"].get("body", "")
            for event in events
            if event.get("sender") == self.bot_id and event.get("type") == "m.room.message"
        ]


@pytest.fixture
async def world(synapse: SynapseServer, tmp_path: Path) -> AsyncIterator[tuple[Room, Monitor]]:
    room = Room(synapse)
    config = parse_config(
        {
            "matrix": {
                "homeserver": synapse.base_url,
                "user_id": room.bot_id,
                "password": PASSWORD,
                "pickle_key": "test pickle key",
                "alert_rooms": [room.room],
                "store_dir": str(tmp_path / "matrix"),
            },
            "state": {"dir": str(tmp_path / "state")},
            "digest": {"enabled": False},
        }
    )
    assert config.matrix is not None
    transport = MatrixTransport(config.matrix, state_dir=config.state_dir)

    async def ignore(incoming: Incoming) -> None:
        return None

    await transport.start(ignore)
    syncing = asyncio.create_task(transport.run())
    store = Store(tmp_path / "state" / "monitor.json")
    ctx = build_context(config)
    monitor = Monitor(config, store, transport, ctx, families={})
    monitor.retry_max = 0.05
    try:
        for _ in range(200):  # the first sync has brought the room
            if transport.client is not None and room.room in transport.client.rooms:
                break
            await asyncio.sleep(0.05)
        yield room, monitor
    finally:
        await monitor.stop()
        await transport.stop()
        syncing.cancel()
        await asyncio.gather(syncing, return_exceptions=True)
        store.close()
        await ctx.aclose()


async def _deliver_until(monitor: Monitor, done: Any, rounds: int = 100) -> None:
    for _ in range(rounds):
        await monitor.deliver()
        if done():
            return
        await asyncio.sleep(0.06)
    raise AssertionError("the outbox did not get there")


async def test_an_oversized_alert_goes_out_as_a_file_and_the_next_alert_still_goes(
    world: tuple[Room, Monitor],
) -> None:
    room, monitor = world
    huge = "x" * 70_000  # over Matrix's 65,536-byte event limit: sent as is, Synapse would answer M_TOO_LARGE
    with monitor.store.batch():
        monitor.post(Rendered(huge, huge), alert_id="too-large")
        monitor.post(plain_and_html("repbot: the alert after it"), alert_id="after")
    await _deliver_until(monitor, lambda: not monitor.store.pending())
    bodies = room.bodies()
    assert "repbot: the alert after it" in bodies
    assert not any(huge in body for body in bodies)  # a summary and the full text as a file instead
    assert not monitor.store.dead_letters()


async def test_a_room_the_bot_was_kicked_from_refuses_a_bounded_number_of_times(
    world: tuple[Room, Monitor], caplog: pytest.LogCaptureFixture
) -> None:
    room, monitor = world
    room.api("POST", f"/rooms/{room.room}/kick", {"user_id": room.bot_id, "reason": "test"})
    with monitor.store.batch():
        monitor.post(plain_and_html("repbot: nobody will read this"), alert_id="kicked")
    await _deliver_until(monitor, lambda: not monitor.store.pending())
    ids = [letter.item.id for letter in monitor.store.dead_letters()]
    assert ids[0] == "kicked" and len(ids) == 2 and ids[1].startswith("undelivered-kicked")  # the note, no third
    refusals = [record for record in caplog.records if "refused by" in record.getMessage()]
    assert len(refusals) == (MAX_REFUSALS - 1) * 2  # each of the two tried MAX_REFUSALS times in all
    assert "given up (dead letter)" in caplog.text
    text = status_text(monitor.store.states(), {}, monitor.clock(), dead=monitor.store.dead_letters())
    assert "undelivered: 2 message(s) refused by their room" in text and "M_FORBIDDEN" in text
    monitor.store.close()
    reopened = Store(monitor.store.path)  # the dead letters are kept across restarts
    assert [letter.item.id for letter in reopened.dead_letters()] == ids
    reopened.close()
