"""Cross-signing of the bot's own device: the signing primitives, the key file, and the bot against Synapse.

The signatures the bot uploads are checked here with an independent implementation: Synapse's own
`canonicaljson` for the encoding and `cryptography` for ed25519, never the code under test. The operator
client plays Element with "exclude insecure devices" (MSC4153): it shares its room keys only with devices
their owner has cross-signed, and blacklists the rest.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nio import AsyncClient, AsyncClientConfig, MegolmEvent, RoomGetEventResponse, RoomSendResponse
from nio.crypto.key_request import OutgoingKeyRequest

from bot.config.reader import Secret
from bot.transports.crosssign import CrossSigningKeys, KeyFile, KeyFileError, canonical_json, sign_json, verify_json
from bot.transports.identity import CrossSigner, Identity
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.synapse import SynapseServer
from tests.test_matrix import PASSWORD, REPLY_TIMEOUT, BotProcess, Operator

# The signing example of the Matrix spec, appendix "Signing JSON" (Apache-2.0): this seed signs {} and
# {"one": 1, "two": "Two"} to these signatures.
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_SIGNATURES = {
    "{}": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
    '{"one": 1, "two": "Two"}': (
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
    ),
}


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _independently_signed(value: dict[str, Any], user_id: str, public_key: str) -> bool:
    """Does `value` carry a valid ed25519 signature by `public_key`? Synapse's canonicaljson + cryptography."""
    from canonicaljson import encode_canonical_json

    signature = value.get("signatures", {}).get(user_id, {}).get(f"ed25519:{public_key}")
    if signature is None:
        return False
    signable = {key: item for key, item in value.items() if key not in ("signatures", "unsigned")}
    try:
        Ed25519PublicKey.from_public_bytes(_b64(public_key)).verify(_b64(signature), encode_canonical_json(signable))
    except InvalidSignature:
        return False
    return True


def _public(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode().rstrip("=")


# -- the primitives -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "signature"), sorted(SPEC_SIGNATURES.items()))
def test_signatures_match_the_spec_example(text: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(_b64(SPEC_SEED))
    signed = sign_json(json.loads(text), "domain", key)
    assert signed["signatures"]["domain"][f"ed25519:{_public(key)}"] == signature


def test_canonical_json_is_the_specs() -> None:
    assert canonical_json({"b": "2", "a": "1"}) == b'{"a":"1","b":"2"}'
    assert canonical_json({"a": "日本語"}) == '{"a":"日本語"}'.encode()
    assert canonical_json({"a": None, "b": [1, True]}) == b'{"a":null,"b":[1,true]}'
    for bad in ({"a": 1.5}, {"a": 2**53}):
        with pytest.raises(ValueError):
            canonical_json(bad)


def test_signing_ignores_unsigned_and_keeps_other_signatures() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    device = {"user_id": "@b:x", "device_id": "D", "keys": {"ed25519:D": "k"}, "unsigned": {"device_display_name": "b"}}
    once = sign_json(device, "@b:x", other)
    twice = sign_json({**once, "unsigned": {"x": 1}}, "@b:x", key)
    assert "unsigned" not in twice
    assert _independently_signed(twice, "@b:x", _public(key)) and _independently_signed(twice, "@b:x", _public(other))
    assert verify_json(twice, "@b:x", _public(key))
    assert not verify_json({**twice, "device_id": "E"}, "@b:x", _public(key))


def test_upload_body_signs_the_subkeys_with_the_master_key() -> None:
    keys = CrossSigningKeys.generate()
    body = keys.upload_body("@b:x")
    master = body["master_key"]
    assert master == {
        "user_id": "@b:x",
        "usage": ["master"],
        "keys": {f"ed25519:{keys.public.master}": keys.public.master},
    }
    for name, usage in (("self_signing_key", "self_signing"), ("user_signing_key", "user_signing")):
        assert body[name]["usage"] == [usage]
        assert _independently_signed(body[name], "@b:x", keys.public.master)
    assert repr(keys) == "CrossSigningKeys()"  # no key material in logs or tracebacks


def test_the_key_file_is_sealed_private_and_reopens_only_with_its_pickle_key(tmp_path: Path) -> None:
    keys = CrossSigningKeys.generate()
    file = KeyFile(tmp_path, "@b:x")
    file.save(keys, "pickle key")
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    text = file.path.read_text()
    for role in ("master", "self_signing", "user_signing"):
        seed = getattr(keys, role).private_bytes_raw()
        assert base64.b64encode(seed).decode().rstrip("=") not in text
    assert file.load("pickle key").public == keys.public
    assert file.public() == keys.public
    with pytest.raises(KeyFileError, match="pickle key"):
        file.load("another key")
    with pytest.raises(KeyFileError, match="not of @c:x"):
        KeyFile(tmp_path, "@c:x").load("pickle key")
    data = json.loads(text)
    data["public"]["master"] = _public(Ed25519PrivateKey.generate())
    file.path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError):
        file.load("pickle key")


# -- refusals, from a homeserver on loopback that answers as configured -----------------------------


class _Homeserver(http.server.ThreadingHTTPServer):
    """Answers POSTs from a table of path -> (status, JSON), and records the bodies it got."""

    def __init__(self, answers: dict[str, tuple[int, dict[str, Any]]]) -> None:
        super().__init__(("127.0.0.1", 0), _HomeserverHandler)
        self.answers = answers
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HomeserverHandler(http.server.BaseHTTPRequestHandler):
    server: _Homeserver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append((self.path, body))
        status, answer = self.server.answers.get(self.path, (404, {"errcode": "M_UNRECOGNIZED"}))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


DEVICE_KEY = _public(Ed25519PrivateKey.generate())
QUERY = "/_matrix/client/v3/keys/query"
UPLOAD = "/_matrix/client/v3/keys/device_signing/upload"


def _account(master: str | None) -> dict[str, Any]:
    """A /keys/query answer for @b:x with device D (and a master key when given)."""
    device = {"user_id": "@b:x", "device_id": "D", "keys": {"ed25519:D": DEVICE_KEY}}
    answer: dict[str, Any] = {"device_keys": {"@b:x": {"D": device}}}
    if master:
        answer["master_keys"] = {
            "@b:x": {"user_id": "@b:x", "usage": ["master"], "keys": {f"ed25519:{master}": master}}
        }
    return answer


async def _ensure(
    answers: dict[str, tuple[int, dict[str, Any]]],
    tmp_path: Path,
    password: str | None,
    seen: list[tuple[str, dict[str, Any]]] | None = None,
) -> Identity:
    server = _Homeserver(answers)
    if seen is not None:
        server.bodies = seen
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:

            async def request(method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
                response = await client.request(method, path, json=body)
                return response.status_code, response.json()

            secret = Secret("password", inline=password) if password else None
            return await CrossSigner(tmp_path, "@b:x", "pickle", secret).ensure(request, "D", DEVICE_KEY)
    finally:
        server.shutdown()
        server.server_close()


async def test_single_sign_on_only_leaves_the_bot_unsigned_and_says_why(tmp_path: Path) -> None:
    flows = {"session": "s", "flows": [{"stages": ["m.login.sso"]}]}
    served = _public(Ed25519PrivateKey.generate())
    answers_seen: list[tuple[str, dict[str, Any]]] = []
    identity = await _ensure({QUERY: (200, _account(served)), UPLOAD: (401, flows)}, tmp_path, "secret", answers_seen)
    assert not identity.cross_signed
    assert "m.login.sso" in identity.problem and "NOT cross-signed" in identity.status_line()
    # No password is sent where it is not asked for; the new keys wait in the store for a later replacement.
    assert [path for path, _ in answers_seen] == [QUERY, UPLOAD]
    assert KeyFile(tmp_path, "@b:x").public().master != _only_key(_account(served)["master_keys"]["@b:x"])


async def test_a_homeserver_without_cross_signing_leaves_the_bot_unsigned(tmp_path: Path) -> None:
    identity = await _ensure({QUERY: (200, _account(None))}, tmp_path, None)
    assert not identity.cross_signed and "upgrade it" in identity.problem


async def test_a_key_file_the_pickle_key_does_not_open_is_kept_not_replaced(tmp_path: Path) -> None:
    KeyFile(tmp_path, "@b:x").save(CrossSigningKeys.generate(), "another pickle key")
    before = (tmp_path / "cross_signing.json").read_bytes()
    identity = await _ensure({QUERY: (200, _account(None))}, tmp_path, "secret")
    assert not identity.cross_signed and "pickle key" in identity.problem and "move" in identity.problem
    assert (tmp_path / "cross_signing.json").read_bytes() == before


def test_identity_without_a_store_says_to_start_the_bot(tmp_path: Path) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text(
        f'[matrix]\nhomeserver = "http://127.0.0.1:9"\nuser_id = "@b:x"\npassword = "p"\nstore_dir = "{tmp_path}"\n'
    )
    config.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "identity", "-c", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1 and "start the bot once" in done.stdout


# -- against Synapse ------------------------------------------------------------------------------


def _query(synapse: SynapseServer, token: str, user_id: str) -> dict[str, Any]:
    response = httpx.post(
        f"{synapse.base_url}/_matrix/client/v3/keys/query",
        headers={"Authorization": f"Bearer {token}"},
        json={"device_keys": {user_id: []}},
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _only_key(key: dict[str, Any]) -> str:
    (public,) = key["keys"].values()
    return str(public)


def _cross_signed_devices(query: dict[str, Any], user_id: str) -> set[str]:
    """The devices a client that excludes insecure devices trusts: master -> self-signing -> device."""
    master_key = query.get("master_keys", {}).get(user_id)
    self_signing_key = query.get("self_signing_keys", {}).get(user_id)
    if master_key is None or self_signing_key is None:
        return set()
    master = _only_key(master_key)
    if "master" not in master_key["usage"] or not _independently_signed(self_signing_key, user_id, master):
        return set()
    self_signing = _only_key(self_signing_key)
    devices = query["device_keys"].get(user_id, {})
    return {device_id for device_id, keys in devices.items() if _independently_signed(keys, user_id, self_signing)}


def _identity(synapse: SynapseServer, bot: BotProcess) -> tuple[str, str, str]:
    """(master, self-signing key, device id) as the homeserver shows them, after checking every signature."""
    session = bot.session()
    query = _query(synapse, session["access_token"], bot.user_id)
    master = _only_key(query["master_keys"][bot.user_id])
    self_signing = _only_key(query["self_signing_keys"][bot.user_id])
    assert _independently_signed(query["self_signing_keys"][bot.user_id], bot.user_id, master)
    assert session["device_id"] in _cross_signed_devices(query, bot.user_id)
    return master, self_signing, session["device_id"]


async def _exclude_insecure_devices(operator: Operator, synapse: SynapseServer, bot: BotProcess) -> None:
    """Trust as Element with 'exclude insecure devices': only the devices their owner cross-signed."""
    client = operator.client
    if client.should_query_keys:
        await client.keys_query()
    trusted = _cross_signed_devices(_query(synapse, client.access_token, bot.user_id), bot.user_id)
    for device in client.device_store.active_user_devices(bot.user_id):
        if device.device_id in trusted:
            client.verify_device(device)
        else:
            client.blacklist_device(device)


async def _strict_send(operator: Operator, room: str, body: str) -> str:
    # Without ignore_unverified_devices an unverified device left in the room would make this raise.
    response = await operator.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
    assert isinstance(response, RoomSendResponse), response
    return str(response.event_id)


async def _strict_ping(operator: Operator, synapse: SynapseServer, room: str, bot: BotProcess) -> dict[str, Any]:
    await _exclude_insecure_devices(operator, synapse, bot)
    return await operator.reply(await _strict_send(operator, room, "!ping"), bot.user_id)


async def _room_with(operator: Operator, bot: BotProcess, *, encrypted: bool = False) -> str:
    room = await operator.room(bot.user_id, encrypted=encrypted)
    await operator.membership(room, bot.user_id, "join")
    return room


async def _notice(operator: Operator, room: str, sender: str, starts: str) -> str:
    deadline = time.monotonic() + REPLY_TIMEOUT
    while time.monotonic() < deadline:
        for where, event in operator.events:
            body = event.source.get("content", {}).get("body", "")
            if where == room and event.sender == sender and body.startswith(starts):
                return str(body)
        await operator.pump()
    pytest.fail(f"no notice starting {starts!r} in {room}")


async def _new_device(synapse: SynapseServer, user_id: str, store: Path) -> AsyncClient:
    """A second login of the same person (a new Element session), its keys uploaded."""
    store.mkdir(parents=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True, max_timeouts=3)
    client = AsyncClient(synapse.base_url, user_id, store_path=str(store), config=config)
    assert type(await client.login(PASSWORD, device_name="new laptop")).__name__ == "LoginResponse"
    await client.sync(timeout=0)
    await client.keys_upload()
    return client


async def _request_key(client: AsyncClient, event: MegolmEvent, bot: BotProcess, request_id: str) -> None:
    """Ask the bot's devices for the key of `event`, and remember the request as nio does for its own."""
    message = event.as_key_request(bot.user_id, client.device_id, request_id=request_id)
    await client.to_device(message)
    assert client.olm is not None
    request = OutgoingKeyRequest(request_id, event.session_id, event.room_id, event.algorithm)
    client.olm.outgoing_key_requests[event.session_id] = request


async def _admins_new_device_gets_the_bots_keys(
    synapse: SynapseServer, operator: Operator, bot: BotProcess, room: str, event_id: str, store: Path
) -> None:
    """The admin's new device asks for the key of a bot message: refused until the admin cross-signs it."""
    token = operator.client.access_token
    admin = CrossSigningKeys.generate()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{synapse.base_url}/_matrix/client/v3/keys"
    assert httpx.post(f"{url}/device_signing/upload", headers=headers, json=admin.upload_body(operator.user_id))
    laptop = await _new_device(synapse, operator.user_id, store)
    try:
        fetched = await laptop.room_get_event(room, event_id)
        assert isinstance(fetched, RoomGetEventResponse) and isinstance(fetched.event, MegolmEvent)
        megolm = fetched.event
        await _request_key(laptop, megolm, bot, "before-signing")
        bot.wait_for_log("its owner has not verified (cross-signed) it")
        device = _query(synapse, token, operator.user_id)["device_keys"][operator.user_id][laptop.device_id]
        signed = sign_json(device, operator.user_id, admin.self_signing)
        body = {operator.user_id: {laptop.device_id: signed}}
        answer = httpx.post(f"{url}/signatures/upload", headers=headers, json=body)
        assert answer.status_code == 200 and not answer.json().get("failures"), answer.text
        bot_curve = megolm.sender_key
        assert laptop.olm is not None
        # nio takes forwarded keys only from its own user's devices; Element-like clients take a session
        # re-shared by the device that created it, which is what the bot does here.
        laptop.olm._should_accept_forward = lambda sender, key, forwarded: (
            sender == bot.user_id and key == bot_curve and forwarded.session_id in laptop.olm.outgoing_key_requests
        )
        await _request_key(laptop, megolm, bot, "after-signing")
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            await laptop.sync(timeout=500)
            decrypted = (
                laptop.decrypt_event(megolm)
                if laptop.olm.inbound_group_store.get(room, megolm.sender_key, megolm.session_id)
                else None
            )
            if decrypted is not None:
                assert decrypted.source["content"]["body"] == "pong"
                return
        pytest.fail(f"the bot did not forward the room key:\n{bot.log.read_text()[-2000:]}")
    finally:
        await laptop.close()


def _identity_command(bot: BotProcess) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "identity", "-c", str(bot.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serves this master key" in done.stdout
    return done.stdout


async def test_the_bot_cross_signs_keeps_and_resets_its_identity(
    synapse: SynapseServer, dns_server_session: DnsServer, tmp_path: Path
) -> None:
    operator = Operator(synapse, tmp_path / "alice", e2e=True)
    await operator.login()
    (tmp_path / "bot").mkdir()
    bot = BotProcess(tmp_path / "bot", synapse, dns_server_session, operator.user_id)
    try:
        bot.start()
        bot.wait_for_log("cross-signed this device")
        master, self_signing, device = _identity(synapse, bot)
        key_file = bot.directory / "store" / "cross_signing.json"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        grouped = " ".join(master[i : i + 4] for i in range(0, len(master), 4))
        assert grouped in _identity_command(bot)

        encrypted = await _room_with(operator, bot, encrypted=True)
        await operator.pump(0)
        reply = await _strict_ping(operator, synapse, encrypted, bot)
        assert reply["content"]["body"] == "pong"
        assert reply["content"]["m.mentions"] == {}  # inside the encrypted payload, as in a plain room
        await _admins_new_device_gets_the_bots_keys(
            synapse, operator, bot, encrypted, reply["event_id"], tmp_path / "laptop"
        )
        assert "forwarded room key" in bot.log.read_text()
        alerts = await _room_with(operator, bot)

        offset = bot.log.stat().st_size
        assert bot.stop() == 0
        bot.start()
        assert _identity(synapse, bot) == (master, self_signing, device)
        restarted = bot.log.read_text()[offset:]
        assert "reset" not in restarted and "published" not in restarted and "cross-signed this device" not in restarted

        assert bot.stop() == 0
        shutil.rmtree(bot.directory / "store")
        with bot.config.open("a") as config:  # [matrix] is the file's last section
            config.write(f'alert_rooms = ["{alerts}"]\n')
        bot.start()
        notice = await _notice(operator, alerts, bot.user_id, "my identity was reset; verify me again")
        new_master, new_self_signing, new_device = _identity(synapse, bot)
        assert new_master != master and new_self_signing != self_signing and new_device != device
        assert " ".join(new_master[i : i + 4] for i in range(0, len(new_master), 4)) in _identity_command(bot)
        assert "repbot identity" in notice
        log = bot.log.read_text()
        assert PASSWORD not in log and "Traceback" not in log
    finally:
        bot.stop()
        await operator.client.close()


def _seed_identity(synapse: SynapseServer, token: str, user_id: str) -> str:
    """Give the account cross-signing keys of its own (as an earlier Element login would); the master key."""
    keys = CrossSigningKeys.generate()
    response = httpx.post(
        f"{synapse.base_url}/_matrix/client/v3/keys/device_signing/upload",
        headers={"Authorization": f"Bearer {token}"},
        json=keys.upload_body(user_id),
    )
    assert response.status_code == 200, response.text
    return keys.public.master


async def test_without_a_password_the_bot_runs_and_says_it_is_not_cross_signed(
    synapse: SynapseServer, dns_server_session: DnsServer, tmp_path: Path
) -> None:
    operator = Operator(synapse, tmp_path / "alice", e2e=True)
    await operator.login()
    (tmp_path / "bot").mkdir()
    bot = BotProcess(tmp_path / "bot", synapse, dns_server_session, operator.user_id, token=True)
    master = _seed_identity(synapse, bot.registration_token, bot.user_id)
    try:
        bot.start()
        bot.wait_for_log("this device is not cross-signed")
        room = await _room_with(operator, bot)
        status = await operator.say(room, "!status")
        body = (await operator.reply(status, bot.user_id))["content"]["body"]
        assert "NOT cross-signed" in body and "[matrix] password" in body
        ping = await operator.say(room, "!ping")
        assert (await operator.reply(ping, bot.user_id))["content"]["body"] == "pong"
        query = _query(synapse, bot.registration_token, bot.user_id)
        assert _only_key(query["master_keys"][bot.user_id]) == master  # the account's identity is left alone
        assert bot.log.read_text().count("this device is not cross-signed") == 1

        # A client that excludes insecure devices keeps its keys from the unsigned bot: it cannot read, and
        # says so once for the Megolm session, not once per message.
        encrypted = await _room_with(operator, bot, encrypted=True)
        await operator.pump(0)
        await _exclude_insecure_devices(operator, synapse, bot)
        unread = [await _strict_send(operator, encrypted, "!ping") for _ in range(3)]
        bot.wait_for_log("cannot decrypt messages from")
        after = await operator.say(room, "!ping")
        await operator.reply(after, bot.user_id)
        assert all(operator.replies_to(event_id, bot.user_id) == [] for event_id in unread)
        assert bot.log.read_text().count("cannot decrypt messages from") == 1
    finally:
        bot.stop()
        await operator.client.close()
