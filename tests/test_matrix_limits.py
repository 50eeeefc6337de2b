"""Events a homeserver accepts and that ping nobody (issue 13 items 2 and 12), against the real Synapse.

A domain with a 60 KB SPF record or 300 MX hosts makes a report far over Matrix's 65,536-byte event
limit: it must arrive as a short summary plus the whole report as an attached text file (encrypted in an
encrypted room). Every message carries `"m.mentions": {}`, so text the bot echoes cannot highlight anyone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nio import DownloadResponse
from nio.crypto import decrypt_attachment

from bot.transports.safety import MAX_EVENT_BYTES, REPORT_FILENAME
from tests import test_matrix
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.synapse import SynapseServer
from tests.test_matrix import REPLY_TIMEOUT, BotProcess, Operator, _joined_room

operator = test_matrix.operator  # the fixture: a person logged in with nio

BIG_SPF = "bigspf.example"
MANY_MX = "manymx.example"
BIG_DMARC = "bigdmarc.example"


def _big_spf() -> list[str]:
    # 60 KB of mechanisms in 255-byte strings: one TXT record, served over TCP.
    mechanisms = " ".join(f"ip4:198.51.{n // 256}.{n % 256}" for n in range(3200))
    text = f"v=spf1 {mechanisms} -all"
    return [text[i : i + 255] for i in range(0, len(text), 255)]


@pytest.fixture(scope="module")
def big_world(dns_server_session: DnsServer) -> DnsServer:
    strings = " ".join(f'"{part}"' for part in _big_spf())
    dns_server_session.add(BIG_SPF, "TXT", strings)
    for number in range(300):
        dns_server_session.add(MANY_MX, "MX", f"{number} mx{number}.{MANY_MX}.")
    tags = "; ".join(f"x{number}=unknown-tag-{number}" for number in range(1000))
    record = f"v=DMARC1; p=none; {tags}"
    dmarc = " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
    dns_server_session.add(f"_dmarc.{BIG_DMARC}", "TXT", dmarc)
    return dns_server_session


@pytest.fixture(scope="module")
def limits_bot(
    synapse: SynapseServer, big_world: DnsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    bot = BotProcess(tmp_path_factory.mktemp("limits-bot"), synapse, big_world, "@alice*:localhost")
    bot.start()
    yield bot
    assert bot.stop() == 0


async def _replies(operator: Operator, command: str, sender: str, wanted: int, timeout: float) -> list[dict[str, Any]]:
    """The sources of every event `sender` sent in reply to `command` (notices and files), once `wanted` are in."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = []
        for _, event in operator.events:
            content = event.source.get("content", {})
            replied = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
            if event.sender == sender and replied == command:
                found.append(event.source)
        if len(found) >= wanted:
            return found
        await operator.pump()
    pytest.fail(f"{len(found)} of {wanted} replies to {command} within {timeout:.0f} s: {found}")


async def _download(operator: Operator, content: dict[str, Any]) -> bytes:
    if "file" in content:
        encrypted = content["file"]
        response = await operator.client.download(mxc=encrypted["url"])
        assert isinstance(response, DownloadResponse), response
        return bytes(
            decrypt_attachment(response.body, encrypted["key"]["k"], encrypted["hashes"]["sha256"], encrypted["iv"])
        )
    response = await operator.client.download(mxc=content["url"])
    assert isinstance(response, DownloadResponse), response
    return bytes(response.body)


async def _check_long_report(operator: Operator, bot: BotProcess, room: str, target: str) -> None:
    command = await operator.say(room, f"!check {target}")
    notice, attached = await _replies(operator, command, bot.user_id, 2, REPLY_TIMEOUT * 3)
    for source in (notice, attached):
        assert len(json.dumps(source).encode()) < MAX_EVENT_BYTES
        assert source["content"]["m.mentions"] == {}
    assert notice["content"]["msgtype"] == "m.notice"
    assert f"{target} (domain)" in notice["content"]["body"]
    assert REPORT_FILENAME in notice["content"]["body"]
    assert attached["content"]["msgtype"] == "m.file"
    full = (await _download(operator, attached["content"])).decode("utf-8")
    assert full.startswith(f"{target} (domain)") and len(full) > len(notice["content"]["body"])
    assert attached["content"]["info"]["size"] == len(full.encode("utf-8"))


@pytest.mark.parametrize("target", [BIG_SPF, MANY_MX, BIG_DMARC], ids=["60-kb-spf", "300-mx", "1000-dmarc-tags"])
async def test_a_report_too_long_for_one_event_becomes_a_summary_and_a_file(
    limits_bot: BotProcess, operator: Operator, target: str
) -> None:
    room = await _joined_room(operator, limits_bot)
    await _check_long_report(operator, limits_bot, room, target)


async def test_in_an_encrypted_room_the_report_file_is_encrypted(
    limits_bot: BotProcess, synapse: SynapseServer, tmp_path: Path
) -> None:
    operator = Operator(synapse, tmp_path / "alice-e2e", e2e=True)
    await operator.login()
    try:
        room = await _joined_room(operator, limits_bot, encrypted=True)
        await operator.pump(0)
        command = await operator.say(room, f"!check {BIG_SPF}")
        _, attached = await _replies(operator, command, limits_bot.user_id, 2, REPLY_TIMEOUT * 3)
        assert "url" not in attached["content"] and "file" in attached["content"]
        assert (await _download(operator, attached["content"])).decode().startswith(f"{BIG_SPF} (domain)")
    finally:
        await operator.client.close()


async def test_echoed_text_highlights_nobody(
    limits_bot: BotProcess, operator: Operator, synapse: SynapseServer
) -> None:
    room = await _joined_room(operator, limits_bot)
    # The bot echoes the bad target back: the operator's own name and @room, written by anyone.
    command = await operator.say(room, f"!check @room-{operator.localpart}")
    (reply,) = await _replies(operator, command, limits_bot.user_id, 1, REPLY_TIMEOUT)
    assert reply["content"]["m.mentions"] == {}
    assert "@room" not in reply["content"]["body"] and operator.localpart in reply["content"]["body"]
    # Synapse's default rules already keep m.notice quiet; this holds the line should replies ever be m.text
    # or an operator's own push rule match on the body.
    response = httpx.get(
        f"{synapse.base_url}/_matrix/client/v3/notifications",
        headers={"Authorization": f"Bearer {operator.client.access_token}"},
    )
    pushed = {item["event"]["event_id"]: item for item in response.json()["notifications"]}
    actions = pushed[reply["event_id"]]["actions"] if reply["event_id"] in pushed else []
    assert not [
        a for a in actions if isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True)
    ]


def test_the_summary_of_any_report_fits_one_event() -> None:
    from bot.render import Rendered
    from bot.transports.safety import CONTENT_BUDGET, content_size, defuse_mentions, summarise

    for plain in ["x" * 300_000, "\n".join(["✓ line @room " * 20] * 10_000), "\n" * 100_000]:
        summary = summarise(Rendered(plain=plain, html=f"<pre>{plain}</pre>"))
        content = {"msgtype": "m.notice", "body": defuse_mentions(summary.plain), "formatted_body": summary.html}
        assert content_size(content) <= CONTENT_BUDGET
        assert "@room" not in content["body"]
