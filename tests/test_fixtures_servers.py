"""The real-server fixtures work with real clients: Synapse with nio, Dovecot with aioimaplib."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from email.message import EmailMessage

import aioimaplib
import httpx
import pytest
from nio import AsyncClient, JoinResponse, LoginResponse, RoomCreateResponse, RoomSendResponse, SyncResponse

from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.synapse import SynapseServer


def _unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


# --- Synapse -------------------------------------------------------------------------


async def test_synapse_invite_join_and_message(synapse: SynapseServer) -> None:
    alice_id, alice_token = synapse.register(_unique("alice"), "alice-pass")
    bob_name = _unique("bob")
    bob_id, _ = synapse.register(bob_name, "bob-pass")
    assert alice_id == synapse.user_id(alice_id[1:].split(":")[0])

    alice = AsyncClient(synapse.base_url, alice_id)
    alice.access_token = alice_token
    bob = AsyncClient(synapse.base_url, bob_id)
    try:
        login = await bob.login("bob-pass", device_name="fixture-test")
        assert isinstance(login, LoginResponse), login

        created = await alice.room_create(name="fixture room", invite=[bob_id])
        assert isinstance(created, RoomCreateResponse), created
        joined = await bob.join(created.room_id)
        assert isinstance(joined, JoinResponse), joined
        first = await bob.sync(timeout=0, full_state=True)
        assert isinstance(first, SyncResponse), first

        sent = await alice.room_send(
            created.room_id, "m.room.message", {"msgtype": "m.notice", "body": "hello from alice"}
        )
        assert isinstance(sent, RoomSendResponse), sent

        bodies: list[str] = []
        deadline = time.monotonic() + 10
        while "hello from alice" not in bodies and time.monotonic() < deadline:
            sync = await bob.sync(timeout=2000, since=bob.next_batch)
            assert isinstance(sync, SyncResponse), sync
            room = sync.rooms.join.get(created.room_id)
            if room is not None:
                bodies += [getattr(event, "body", "") for event in room.timeline.events]
        assert "hello from alice" in bodies
    finally:
        await alice.close()
        await bob.close()


async def test_synapse_admin_registration(synapse: SynapseServer) -> None:
    admin_id, admin_token = synapse.register(_unique("admin"), "pw", admin=True)
    async with httpx.AsyncClient(base_url=synapse.base_url) as http:
        response = await http.get(
            f"/_synapse/admin/v2/users/{admin_id}", headers={"Authorization": f"Bearer {admin_token}"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["admin"] is True


def test_synapse_stop_and_start_keep_data(synapse: SynapseServer) -> None:
    user_id, token = synapse.register(_unique("carol"), "carol-pass")
    headers = {"Authorization": f"Bearer {token}"}
    whoami = f"{synapse.base_url}/_matrix/client/v3/account/whoami"
    synapse.stop()
    try:
        assert not synapse.running
        with pytest.raises(httpx.TransportError):
            httpx.get(whoami, headers=headers, timeout=2)
    finally:
        synapse.start()
    assert synapse.running
    response = httpx.get(whoami, headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == user_id


# --- Dovecot -------------------------------------------------------------------------


def _message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = "canary@example.net"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@example.org>"
    msg.set_content("canary body\n")
    return msg.as_bytes()


async def _login(dovecot: DovecotServer, user: str, password: str, *, tls: bool = False) -> aioimaplib.IMAP4:
    client: aioimaplib.IMAP4
    if tls:
        client = aioimaplib.IMAP4_SSL(dovecot.host, dovecot.tls_port, ssl_context=dovecot.ssl_context())
    else:
        client = aioimaplib.IMAP4(dovecot.host, dovecot.port)
    await client.wait_hello_from_server()
    response = await client.login(user, password)
    assert response.result == "OK", response
    return client


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "implicit-tls"])
async def test_dovecot_login_and_special_use(dovecot: DovecotServer, tls: bool) -> None:
    user = _unique("canary")
    dovecot.add_user(user, "s3cret")
    client = await _login(dovecot, user, "s3cret", tls=tls)
    try:
        listing = await client.list('""', "*")
        assert listing.result == "OK"
        lines = [line.decode() if isinstance(line, bytes) else str(line) for line in listing.lines]
        assert any("\\Junk" in line and line.endswith("Junk") for line in lines), lines
        assert any("\\Sent" in line and line.endswith("Sent") for line in lines), lines
    finally:
        await client.logout()


async def test_dovecot_wrong_password_fails(dovecot: DovecotServer) -> None:
    user = _unique("canary")
    dovecot.add_user(user, "right")
    client = aioimaplib.IMAP4(dovecot.host, dovecot.port)
    await client.wait_hello_from_server()
    response = await client.login(user, "wrong")
    assert response.result == "NO"
    await client.logout()


@pytest.mark.parametrize("folder", ["INBOX", "Junk"])
async def test_dovecot_delivered_message_is_found(dovecot: DovecotServer, folder: str) -> None:
    user = _unique("canary")
    dovecot.add_user(user, "s3cret")
    subject = f"canary-{secrets.token_hex(6)}"
    path = dovecot.deliver(user, _message(subject), folder=folder)
    assert path.parent.name == "new"
    client = await _login(dovecot, user, "s3cret")
    try:
        selected = await client.select(folder)
        assert selected.result == "OK", selected
        found = await client.search("SUBJECT", f'"{subject}"')
        assert found.result == "OK"
        assert found.lines[0].split(), found
        other = "Junk" if folder == "INBOX" else "INBOX"
        await client.select(other)
        assert not (await client.search("SUBJECT", f'"{subject}"')).lines[0].split()
    finally:
        await client.logout()


async def test_dovecot_starttls(dovecot: DovecotServer) -> None:
    reader, writer = await asyncio.open_connection(dovecot.host, dovecot.port)
    try:
        greeting = await reader.readline()
        assert b"STARTTLS" in greeting, greeting
        writer.write(b"a1 STARTTLS\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"a1 OK")
        await writer.start_tls(dovecot.ssl_context(), server_hostname=dovecot.host)
        writer.write(b"a2 CAPABILITY\r\n")
        await writer.drain()
        capability = await reader.readline()
        assert capability.startswith(b"* CAPABILITY") and b"STARTTLS" not in capability
        assert (await reader.readline()).startswith(b"a2 OK")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_dovecot_xoauth2(dovecot: DovecotServer) -> None:
    user = _unique("oauth")
    dovecot.add_user(user, "unused-password")
    good = secrets.token_urlsafe(24)
    dovecot.add_token(good, user)

    client = aioimaplib.IMAP4_SSL(dovecot.host, dovecot.tls_port, ssl_context=dovecot.ssl_context())
    await client.wait_hello_from_server()
    response = await client.xoauth2(user, good)
    assert response.result == "OK", response
    assert (await client.select("INBOX")).result == "OK"
    await client.logout()

    # A bad token gets a "+ <base64 JSON error>" challenge first (RFC 7628 §3.2.2); the
    # client must answer it with an empty line before the tagged NO arrives. aioimaplib
    # 2.0.3 does not, and its xoauth2() hangs, so speak the protocol by hand here.
    reader, writer = await asyncio.open_connection(dovecot.host, dovecot.port)
    try:
        await reader.readline()
        sasl = base64.b64encode(f"user={user}\x01auth=Bearer not-a-valid-token\x01\x01".encode())
        writer.write(b"a1 AUTHENTICATE XOAUTH2 " + sasl + b"\r\n")
        await writer.drain()
        challenge = await asyncio.wait_for(reader.readline(), 10)
        assert challenge.startswith(b"+ "), challenge
        assert json.loads(base64.b64decode(challenge[2:]))["status"] in ("400", "401")
        writer.write(b"\r\n")
        await writer.drain()
        final = await asyncio.wait_for(reader.readline(), 10)
        assert final.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), final
    finally:
        writer.close()
        await writer.wait_closed()
    dovecot.revoke_token(good)


async def test_dovecot_stop_and_start_keep_users_and_mail(dovecot: DovecotServer) -> None:
    user = _unique("outage")
    dovecot.add_user(user, "s3cret")
    dovecot.deliver(user, _message("before the outage"))
    dovecot.stop()
    try:
        assert not dovecot.running
        with pytest.raises(OSError):
            await asyncio.open_connection(dovecot.host, dovecot.port)
    finally:
        dovecot.start()
    assert dovecot.running
    client = await _login(dovecot, user, "s3cret")
    try:
        assert (await client.select("INBOX")).result == "OK"
        assert (await client.search("SUBJECT", '"before the outage"')).lines[0].split()
    finally:
        await client.logout()
