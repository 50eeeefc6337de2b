"""`!timeline` and `!ticket` against a real Synapse: an m.image and an m.file in a plain room, encrypted
attachments in an E2EE room."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from nio.crypto.attachments import decrypt_attachment
from PIL import Image

from bot.monitor.state import AlertState, HistoryEntry
from bot.monitor.store import Store
from bot.timeline import COLOURS, WIDTH
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.synapse import SynapseServer
from tests.test_matrix import REPLY_TIMEOUT, BotProcess, Operator, _joined_room

IP = "192.0.2.1"


def _seed(path: Path) -> None:
    """Two weeks of a blocklist listing and an SNDS colour change, as the monitor would have stored them."""
    now = datetime.now(UTC)
    store = Store(path)
    with store.batch():
        for zone, status in (("zen.spamhaus.org", "fail"), ("bl.spamcop.net", "ok"), ("psbl.surriel.com", "ok")):
            since = (now - timedelta(days=14)).isoformat()
            key = f"{IP}|dnsbl|{zone}"
            store.put_state(AlertState(key, IP, "dnsbl", zone, status=status, since=since, last_seen=now.isoformat()))
        store.add_history(HistoryEntry((now - timedelta(days=3)).isoformat(), "problem", IP, "dnsbl",
                                       "zen.spamhaus.org", "fail", "listed", old_status="ok"))  # fmt: skip
    store.close()


@pytest.fixture(scope="module")
def timeline_bot(
    synapse: SynapseServer, dns_server_session: DnsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    bot = BotProcess(tmp_path_factory.mktemp("timeline-bot"), synapse, dns_server_session, "@alice*:localhost")
    _seed(bot.directory / "state" / "monitor.json")
    bot.start()
    yield bot
    assert bot.stop() == 0


async def _image_reply(operator: Operator, command: str, sender: str, msgtype: str = "m.image") -> dict[str, Any]:
    deadline = time.monotonic() + REPLY_TIMEOUT
    while time.monotonic() < deadline:
        for _, event in operator.events:
            content = event.source.get("content", {})
            replied = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
            if event.sender == sender and replied == command:
                if content.get("msgtype") == "m.text" and msgtype != "m.text":
                    continue  # !ticket answers with the file and the text
                assert content.get("msgtype") == msgtype, content
                return cast(dict[str, Any], content)
        await operator.pump()
    pytest.fail(f"no {msgtype} in reply to {command}")


def _download(synapse: SynapseServer, operator: Operator, mxc: str) -> bytes:
    assert mxc.startswith("mxc://")
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    response = httpx.get(
        f"{synapse.base_url}/_matrix/client/v1/media/download/{server}/{media_id}",
        headers={"Authorization": f"Bearer {operator.client.access_token}"},
    )
    assert response.status_code == 200, response.text
    return response.content


def _check_picture(png: bytes, height: int) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (WIDTH, height)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20) or []}
    assert COLOURS["fail"] in colours and COLOURS["ok"] in colours


async def test_timeline_posts_an_image_in_a_plain_room(
    timeline_bot: BotProcess, synapse: SynapseServer, tmp_path: Path
) -> None:
    operator = Operator(synapse, tmp_path / "alice")
    await operator.login()
    try:
        room = await _joined_room(operator, timeline_bot)
        command = await operator.say(room, f"!timeline {IP} 14")
        content = await _image_reply(operator, command, timeline_bot.user_id)
        assert "file" not in content
        assert content["info"]["mimetype"] == "image/png" and content["info"]["w"] == WIDTH
        assert content["body"] == f"repbot timeline: {IP}, last 14 days"
        png = _download(synapse, operator, content["url"])
        assert len(png) == content["info"]["size"]
        _check_picture(png, content["info"]["h"])
    finally:
        await operator.client.close()


async def test_timeline_posts_an_encrypted_attachment_in_an_encrypted_room(
    timeline_bot: BotProcess, synapse: SynapseServer, tmp_path: Path
) -> None:
    operator = Operator(synapse, tmp_path / "alice-e2e", e2e=True)
    await operator.login()
    try:
        room = await _joined_room(operator, timeline_bot, encrypted=True)
        await operator.pump(0)
        command = await operator.say(room, "!timeline")
        content = await _image_reply(operator, command, timeline_bot.user_id)
        assert "url" not in content
        attachment = content["file"]
        assert attachment["v"] == "v2" and set(attachment) >= {"url", "key", "iv", "hashes"}
        ciphertext = _download(synapse, operator, attachment["url"])
        assert not ciphertext.startswith(b"\x89PNG")  # the homeserver holds only ciphertext
        png = decrypt_attachment(ciphertext, attachment["key"]["k"], attachment["hashes"]["sha256"], attachment["iv"])
        _check_picture(png, content["info"]["h"])
        raw = [e for r, e in operator.events if r == room and e.sender == timeline_bot.user_id]
        assert any(getattr(e, "decrypted", False) for e in raw)
    finally:
        await operator.client.close()


async def test_ticket_posts_a_text_file_plain_and_encrypted(
    timeline_bot: BotProcess, synapse: SynapseServer, tmp_path: Path
) -> None:
    operator = Operator(synapse, tmp_path / "alice-ticket", e2e=True)
    await operator.login()
    try:
        plain = await _joined_room(operator, timeline_bot)
        command = await operator.say(plain, f"!ticket google {IP}")
        content = await _image_reply(operator, command, timeline_bot.user_id, "m.file")
        assert (content["filename"], content["info"]["mimetype"]) == (f"repbot-ticket-google-{IP}.txt", "text/plain")
        text = _download(synapse, operator, content["url"]).decode()
        assert len(text.encode()) == content["info"]["size"]
        assert "Google's sender contact form" in text and f"Sending IP: {IP}" in text
        secret = await _joined_room(operator, timeline_bot, encrypted=True)
        await operator.pump(0)
        command = await operator.say(secret, f"!ticket outlook {IP}")
        content = await _image_reply(operator, command, timeline_bot.user_id, "m.file")
        attachment = content["file"]
        ciphertext = _download(synapse, operator, attachment["url"])
        data = decrypt_attachment(ciphertext, attachment["key"]["k"], attachment["hashes"]["sha256"], attachment["iv"])
        assert b"Sending IP" not in ciphertext and b"https://olcsupport.office.com/" in data
    finally:
        await operator.client.close()
