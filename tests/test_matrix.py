"""The Matrix bot against a real Synapse: invites, commands, E2EE, threads, restarts, revoked tokens, fuzzing.

The bot runs as `repbot run -c FILE` in a subprocess, as an operator would run it; the operator is a
second nio client (with E2EE for the encrypted room). Without Synapse the `synapse` fixture skips, or
fails when CI is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nio import AsyncClient, AsyncClientConfig, Event, MegolmEvent, RoomCreateResponse, RoomSendResponse

from bot.app import Bot, Permissions, RateLimiter
from bot.commands.catalog import REGISTRY
from bot.commands.registry import Services
from bot.config.loader import Config
from bot.context import build_context
from bot.transports.base import Incoming
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.synapse import SynapseServer
from tests.helpers import RecordingTransport
from tests.test_dnsbl import publish_test_points

PASSWORD = "correct horse battery staple"
REPLY_TIMEOUT = 30.0
QUIET = 3.0


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class BotProcess:
    """`repbot run -c FILE` in a subprocess; its log goes to a file the tests can read."""

    def __init__(self, directory: Path, synapse: SynapseServer, dns: DnsServer, admin: str, *, token: bool = False):
        self.directory = directory
        self.localpart = _name("repbot")
        self.user_id, self.registration_token = synapse.register(self.localpart, PASSWORD)
        self.config = directory / "repbot.toml"
        self.log = directory / "bot.log"
        secret = (
            f'access_token = "{self.registration_token}"\ndevice_id = "{self._device_of(synapse)}"'
            if token
            else f'password = "{PASSWORD}"'
        )
        self.config.write_text(
            f"""
[dns]
nameservers = ["{dns.address}"]
timeout = 1.0

[state]
dir = "{directory / "state"}"

[matrix]
homeserver = "{synapse.base_url}"
user_id = "{self.user_id}"
{secret}
pickle_key = "test pickle key"
store_dir = "{directory / "store"}"
admins = ["{admin}"]
rate_limit_per_hour = 1000
""",
            encoding="utf-8",
        )
        self.config.chmod(0o600)
        self.process: subprocess.Popen[bytes] | None = None

    def _device_of(self, synapse: SynapseServer) -> str:
        response = httpx.get(
            f"{synapse.base_url}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {self.registration_token}"},
        )
        return str(response.json()["device_id"])

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "--log-level", "INFO", "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_for_log("serving as", offset)

    def wait_for_log(self, text: str, offset: int = 0, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace")[offset:]:
                return
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"the bot exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        pytest.fail(f"{text!r} not in the bot's log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(10)

    def session(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.directory / "store" / "session.json").read_text())
        return data


class Operator:
    """A person in Element, played by nio: sends commands and waits for the bot's replies."""

    def __init__(self, synapse: SynapseServer, store: Path, *, e2e: bool = False, prefix: str = "alice") -> None:
        self.localpart = _name(prefix)
        self.user_id, _ = synapse.register(self.localpart, PASSWORD)
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(encryption_enabled=e2e, store_sync_tokens=e2e, max_timeouts=3)
        self.client = AsyncClient(synapse.base_url, self.user_id, store_path=str(store), config=config)
        self.events: list[tuple[str, Event]] = []
        self.client.add_event_callback(self._record, Event)

    async def _record(self, room: Any, event: Event) -> None:
        self.events.append((room.room_id, event))

    async def login(self) -> None:
        response = await self.client.login(PASSWORD, device_name="operator")
        assert response.__class__.__name__ == "LoginResponse", response
        await self.pump(0)

    async def pump(self, timeout_ms: int = 500) -> None:
        """One sync round plus the E2EE key work, as a client's sync loop does."""
        client = self.client
        await client.sync(timeout=timeout_ms)
        await client.send_to_device_messages()
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())

    async def room(self, invite: str, *, encrypted: bool = False) -> str:
        state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
        response = await self.client.room_create(invite=[invite], initial_state=state if encrypted else [])
        assert isinstance(response, RoomCreateResponse), response
        await self.pump(0)
        return str(response.room_id)

    async def say(self, room: str, body: str, relates: dict[str, Any] | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if relates:
            content["m.relates_to"] = relates
        response = await self.client.room_send(room, "m.room.message", content, ignore_unverified_devices=True)
        assert isinstance(response, RoomSendResponse), response
        return str(response.event_id)

    def replies_to(self, event_id: str, sender: str) -> list[dict[str, Any]]:
        """The sources (decrypted when encrypted) of the notices `sender` sent in reply to `event_id`."""
        found = []
        for _, event in self.events:
            content = event.source.get("content", {})
            relates = content.get("m.relates_to") or {}
            replied = (relates.get("m.in_reply_to") or {}).get("event_id")
            if event.sender == sender and content.get("msgtype") == "m.notice" and replied == event_id:
                found.append(event.source)
        return found

    async def reply(self, event_id: str, sender: str, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.replies_to(event_id, sender)
            if found:
                return found[0]
            await self.pump()
        undecryptable = [e for _, e in self.events if isinstance(e, MegolmEvent)]
        pytest.fail(f"no reply to {event_id} within {timeout:.0f} s (undecryptable: {len(undecryptable)})")

    async def quiet(self, seconds: float = QUIET) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.pump(200)

    async def membership(self, room: str, user: str, wanted: str, timeout: float = REPLY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = await self.client.room_get_state_event(room, "m.room.member", user)
            if getattr(response, "content", {}).get("membership") == wanted:
                return
            await asyncio.sleep(0.2)
        pytest.fail(f"{user} did not reach membership {wanted!r} in {room}")


@pytest.fixture(scope="module")
def bot_process(
    synapse: SynapseServer, dns_server_session: DnsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    # Every zone's test points: with only ZEN's, the others deny theirs and repbot rightly trusts no clean answer.
    publish_test_points(dns_server_session)
    dns_server_session.add("1.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    # The admin pattern covers every operator this module registers (alice...), not the strangers (mallory...).
    bot = BotProcess(tmp_path_factory.mktemp("bot"), synapse, dns_server_session, "@alice*:localhost")
    bot.start()
    yield bot
    assert bot.stop() == 0


@pytest.fixture
async def operator(synapse: SynapseServer, tmp_path: Path) -> AsyncIterator[Operator]:
    person = Operator(synapse, tmp_path / "alice")
    await person.login()
    yield person
    await person.client.close()


async def _joined_room(operator: Operator, bot: BotProcess, *, encrypted: bool = False) -> str:
    room = await operator.room(bot.user_id, encrypted=encrypted)
    await operator.membership(room, bot.user_id, "join")
    return room


async def test_invite_from_admin_accepted_and_from_stranger_rejected(
    bot_process: BotProcess, operator: Operator, synapse: SynapseServer, tmp_path: Path
) -> None:
    await _joined_room(operator, bot_process)
    stranger = Operator(synapse, tmp_path / "mallory", prefix="mallory")
    await stranger.login()
    try:
        room = await stranger.room(bot_process.user_id)
        await stranger.membership(room, bot_process.user_id, "leave")
    finally:
        await stranger.client.close()


async def test_ping_and_help_are_answered_as_html_notices(bot_process: BotProcess, operator: Operator) -> None:
    room = await _joined_room(operator, bot_process)
    started = time.monotonic()
    ping = await operator.say(room, "!ping")
    reply = await operator.reply(ping, bot_process.user_id)
    assert time.monotonic() - started < REPLY_TIMEOUT
    content = reply["content"]
    assert (content["msgtype"], content["body"], content["format"]) == ("m.notice", "pong", "org.matrix.custom.html")
    assert content["formatted_body"] == "pong"
    help_event = await operator.say(room, "!help")
    content = (await operator.reply(help_event, bot_process.user_id))["content"]
    assert "!check <target> [--selector S]" in content["body"]
    assert "<table>" in content["formatted_body"]
    bad = await operator.say(room, "!check")
    assert (await operator.reply(bad, bot_process.user_id))["content"]["body"].startswith("missing target")


async def test_check_reports_the_listing(bot_process: BotProcess, operator: Operator) -> None:
    room = await _joined_room(operator, bot_process)
    check = await operator.say(room, "!check 192.0.2.1")
    content = (await operator.reply(check, bot_process.user_id))["content"]
    assert content["body"].startswith("192.0.2.1 (ip): ✗ fail")
    assert "zen.spamhaus.org" in content["body"]
    assert "<details>" in content["formatted_body"]
    reactions = [
        e.source["content"]["m.relates_to"]
        for _, e in operator.events
        if e.source.get("type") == "m.reaction" and e.sender == bot_process.user_id
    ]
    assert {"rel_type": "m.annotation", "event_id": check, "key": "👀"} in reactions


async def test_a_strangers_command_is_ignored(
    bot_process: BotProcess, operator: Operator, synapse: SynapseServer, tmp_path: Path
) -> None:
    room = await _joined_room(operator, bot_process)
    stranger = Operator(synapse, tmp_path / "mallory", prefix="mallory")
    await stranger.login()
    try:
        await operator.client.room_invite(room, stranger.user_id)
        await stranger.client.join(room)
        await stranger.pump(0)
        ignored = await stranger.say(room, "!ping")
        await operator.quiet()
        assert operator.replies_to(ignored, bot_process.user_id) == []
    finally:
        await stranger.client.close()
    ping = await operator.say(room, "!ping")
    await operator.reply(ping, bot_process.user_id)


async def test_a_command_in_a_thread_is_answered_in_the_thread(bot_process: BotProcess, operator: Operator) -> None:
    room = await _joined_room(operator, bot_process)
    root = await operator.say(room, "about the outage")
    relates = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, "m.in_reply_to": {"event_id": root}}
    ping = await operator.say(room, "!ping", relates)
    relation = (await operator.reply(ping, bot_process.user_id))["content"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread"
    assert relation["event_id"] == root
    assert relation["m.in_reply_to"] == {"event_id": ping}


async def test_a_reply_with_a_fallback_is_parsed_as_the_command(bot_process: BotProcess, operator: Operator) -> None:
    room = await _joined_room(operator, bot_process)
    first = await operator.say(room, "some message")
    body = "> <@alice:localhost> some message\n\n!ping"
    ping = await operator.say(room, body, {"m.in_reply_to": {"event_id": first}})
    assert (await operator.reply(ping, bot_process.user_id))["content"]["body"] == "pong"


async def test_an_encrypted_room_just_works(bot_process: BotProcess, synapse: SynapseServer, tmp_path: Path) -> None:
    operator = Operator(synapse, tmp_path / "alice-e2e", e2e=True)
    await operator.login()
    try:
        assert operator.client.olm is not None
        room = await _joined_room(operator, bot_process, encrypted=True)
        await operator.pump(0)
        ping = await operator.say(room, "!ping")
        reply = await operator.reply(ping, bot_process.user_id)
        assert reply["content"]["body"] == "pong"
        raw = [e for r, e in operator.events if r == room and e.sender == bot_process.user_id]
        assert any(isinstance(e, Event) and e.decrypted for e in raw)
    finally:
        await operator.client.close()


# -- fuzzing ----------------------------------------------------------------------------------------

fuzz_lines = st.one_of(
    st.text(max_size=300),
    st.builds(lambda name, rest: f"!{name} {rest}", st.sampled_from(sorted(REGISTRY.commands)), st.text(max_size=200)),
    st.builds(lambda rest: f"> <@x:y> quoted\n\n!{rest}", st.text(max_size=100)),
    st.builds(lambda n: "!check " + "a" * n, st.integers(0, 20_000)),
    st.sampled_from(["!help <b>bold</b>", "!check <script>x</script>", '!spf "', "!\u202eping", "!ping\x00"]),
)


def _fuzz_bot() -> tuple[Bot, RecordingTransport]:
    transport = RecordingTransport()
    config = Config()
    # A resolver nobody answers: a fuzzed !check must end as findings or an error reply, never hang.
    ctx = build_context(config, nameservers=["127.0.0.1:9"], timeout=0.2)
    services = Services(config, ctx, transport, REGISTRY, datetime.now(UTC))
    return Bot(services, Permissions(("@alice:localhost",)), RateLimiter(None)), transport


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=fuzz_lines)
def test_fuzzed_lines_never_break_the_dispatcher(line: str) -> None:
    bot, transport = _fuzz_bot()

    async def one() -> None:
        await bot.handle(Incoming("!r:localhost", "@alice:localhost", line, "$fuzz"))
        await bot.handle(Incoming("!r:localhost", "@alice:localhost", "!ping", "$ping"))

    asyncio.run(one())
    assert transport.replies[-1] == "pong"
    for _, message, _, _ in transport.sent:
        assert "Traceback" not in message.plain
        assert "<script>" not in message.html


async def test_fuzzed_lines_through_synapse_leave_the_bot_answering(
    bot_process: BotProcess, operator: Operator
) -> None:
    room = await _joined_room(operator, bot_process)
    lines: list[str] = []

    @settings(max_examples=20, database=None)
    @given(line=fuzz_lines)
    def collect(line: str) -> None:
        lines.append(line)

    collect()
    for line in lines:
        content = {"msgtype": "m.text", "body": line, "format": "org.matrix.custom.html", "formatted_body": line}
        # Synapse may refuse some (NUL bytes); the bot must survive whatever gets through.
        await operator.client.room_send(room, "m.room.message", content)
    ping = await operator.say(room, "!ping")
    assert (await operator.reply(ping, bot_process.user_id, timeout=60))["content"]["body"] == "pong"


# -- restarts and revoked tokens --------------------------------------------------------------------


async def test_a_restart_answers_nothing_twice(bot_process: BotProcess, operator: Operator) -> None:
    room = await _joined_room(operator, bot_process)
    before = await operator.say(room, "!ping")
    await operator.reply(before, bot_process.user_id)
    device = bot_process.session()["device_id"]
    assert bot_process.stop() == 0
    while_down = await operator.say(room, "!ping")
    bot_process.start()
    assert bot_process.session()["device_id"] == device
    after = await operator.say(room, "!ping")
    await operator.reply(after, bot_process.user_id)
    await operator.quiet()
    assert len(operator.replies_to(before, bot_process.user_id)) == 1
    assert operator.replies_to(while_down, bot_process.user_id) == []
    assert len(operator.replies_to(after, bot_process.user_id)) == 1


def _logout(synapse: SynapseServer, token: str) -> None:
    response = httpx.post(
        f"{synapse.base_url}/_matrix/client/v3/logout", headers={"Authorization": f"Bearer {token}"}, json={}
    )
    assert response.status_code == 200, response.text


async def test_a_revoked_token_leads_to_a_new_login(
    synapse: SynapseServer, dns_server_session: DnsServer, operator: Operator, tmp_path: Path
) -> None:
    (tmp_path / "bot").mkdir()
    bot = BotProcess(tmp_path / "bot", synapse, dns_server_session, operator.user_id)
    bot.start()
    try:
        room = await _joined_room(operator, bot)
        old = bot.session()
        _logout(synapse, old["access_token"])
        bot.wait_for_log("logging in again")
        bot.wait_for_log("serving as", offset=bot.log.read_text().index("logging in again"))
        assert bot.session()["device_id"] != old["device_id"]
        ping = await operator.say(room, "!ping")
        assert (await operator.reply(ping, bot.user_id))["content"]["body"] == "pong"
        assert old["access_token"] not in bot.log.read_text()
    finally:
        assert bot.stop() == 0


def test_a_revoked_token_without_a_password_exits_1(
    synapse: SynapseServer, dns_server_session: DnsServer, tmp_path: Path
) -> None:
    (tmp_path / "bot").mkdir()
    bot = BotProcess(tmp_path / "bot", synapse, dns_server_session, "@nobody:localhost", token=True)
    bot.start()
    _logout(synapse, bot.registration_token)
    assert bot.process is not None
    assert bot.process.wait(60) == 1
    log = bot.log.read_text()
    assert "M_UNKNOWN_TOKEN" in log and "set [matrix] password" in log
    assert bot.registration_token not in log
    assert log.count("M_UNKNOWN_TOKEN") < 5  # one clear error, no busy loop


def test_config_file_permissions_are_enforced_for_inline_secrets(tmp_path: Path) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text('[matrix]\nhomeserver = "http://127.0.0.1:1"\nuser_id = "@b:localhost"\npassword = "x"\n')
    os.chmod(config, 0o644)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run", "-c", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "chmod 600" in done.stderr


async def test_a_homeserver_outage_is_ridden_out_and_logged_once(
    bot_process: BotProcess, operator: Operator, synapse: SynapseServer
) -> None:
    room = await _joined_room(operator, bot_process)
    offset = bot_process.log.stat().st_size
    synapse.stop()
    await asyncio.sleep(5)
    synapse.start()
    bot_process.wait_for_log("reachable again", offset)
    ping = await operator.say(room, "!ping")
    assert (await operator.reply(ping, bot_process.user_id))["content"]["body"] == "pong"
    log = bot_process.log.read_text()[offset:]
    assert log.count("unreachable") == 1 and log.count("reachable again") == 1
