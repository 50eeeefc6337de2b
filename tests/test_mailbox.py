"""The IMAP layer against a real Dovecot: TLS, STARTTLS, secret commands, XOAUTH2, SPECIAL-USE, drops and hangs."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage

import pytest

from checks.mailbox import Mailbox, MailboxError, MailboxSettings
from tests.fixtures.dovecot import DovecotServer


def _message(subject: str, size: int = 0) -> bytes:
    message = EmailMessage()
    message["From"] = "sender@example.org"
    message["To"] = "box@example.org"
    message["Subject"] = subject
    message["Message-ID"] = f"<{secrets.token_hex(6)}@example.org>"
    message.set_content("hello\n" + "x" * size)
    return message.as_bytes()


@pytest.fixture
def user(dovecot: DovecotServer) -> tuple[str, str]:
    name, password = f"box{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    return name, password


def settings(dovecot: DovecotServer, user: str, security: str = "tls", **extra: object) -> MailboxSettings:
    port = dovecot.tls_port if security == "tls" else dovecot.port
    values: dict[str, object] = {"ssl_context": dovecot.ssl_context(), "timeout": 5.0, **extra}
    return MailboxSettings(dovecot.host, user, port, security, **values)  # type: ignore[arg-type]


def _secret(value: str) -> Callable[[], str]:
    return lambda: value


@pytest.mark.parametrize("security", ["tls", "starttls", "plain"])
async def test_login_list_search_fetch(dovecot: DovecotServer, user: tuple[str, str], security: str) -> None:
    name, password = user
    dovecot.deliver(name, _message("first"))
    dovecot.deliver(name, _message("junk one"), folder="Junk")
    async with Mailbox(settings(dovecot, name, security, password=_secret(password))) as box:
        assert await box.find_folder("\\Junk") == "Junk"
        assert await box.find_folder("\\Sent") == "Sent"
        assert await box.find_folder("\\Archive") is None
        assert await box.select("INBOX") == 1
        [uid] = await box.unprocessed("$RepbotSeen")
        fetched = await box.fetch(uid, 100_000)
        assert fetched.raw is not None and b"Subject: first" in fetched.raw
        await box.flag(uid, "$RepbotSeen")
        assert await box.unprocessed("$RepbotSeen") == []
        assert await box.search("UNSEEN") == [uid]  # BODY.PEEK left \Seen alone
        await box.select("Junk")
        assert len(await box.search("SUBJECT", '"junk one"')) == 1


async def test_password_command(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    name, password = user
    command = ["/bin/sh", "-c", f"printf %s {password}"]

    def run() -> str:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    async with Mailbox(settings(dovecot, name, password=run)) as box:
        assert await box.select("INBOX") == 0


async def test_wrong_password_is_clear_and_secret_free(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    name, _ = user
    with pytest.raises(MailboxError) as raised:
        await Mailbox(settings(dovecot, name, password=_secret("not-the-password-xyz"))).connect()
    assert raised.value.code == "auth" and name in str(raised.value)
    assert "not-the-password-xyz" not in str(raised.value)


async def test_xoauth2_good_and_bad_token(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    name, _ = user
    token = secrets.token_urlsafe(24)
    dovecot.add_token(token, name)
    async with Mailbox(settings(dovecot, name, token=_secret(token))) as box:
        assert await box.select("INBOX") >= 0
    with pytest.raises(MailboxError) as raised:
        await Mailbox(settings(dovecot, name, "starttls", token=_secret("revoked-token-abc"))).connect()
    assert raised.value.code == "auth" and "XOAUTH2" in str(raised.value)
    assert "revoked-token-abc" not in str(raised.value)


async def test_tls_with_untrusted_certificate(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    import ssl

    name, password = user
    untrusting = ssl.create_default_context()  # the system store does not know the test CA
    for security in ("tls", "starttls"):
        with pytest.raises(MailboxError) as raised:
            await Mailbox(
                settings(dovecot, name, security, password=_secret(password), ssl_context=untrusting)
            ).connect()
        assert raised.value.code == "tls", raised.value


async def test_move_and_copy_fallback(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    name, password = user
    for n in range(2):
        dovecot.deliver(name, _message(f"move me {n}"))
    async with Mailbox(settings(dovecot, name, password=_secret(password))) as box:
        await box.create("Processed")
        await box.select("INBOX")
        first, second = await box.search("ALL")
        await box.move(first, "Processed")
        box.capabilities = box.capabilities - {"MOVE"}  # the COPY + \Deleted + UID EXPUNGE path
        await box.move(second, "Processed")
        assert await box.search("ALL") == []
        assert await box.select("Processed") == 2


async def test_delete_expunges_for_good(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    name, password = user
    for n in range(3):
        dovecot.deliver(name, _message(f"delete me {n}"))
    async with Mailbox(settings(dovecot, name, password=_secret(password))) as box:
        await box.select("INBOX")
        first, second, third = await box.search("ALL")
        await box.delete(first)
        box.capabilities = box.capabilities - {"UIDPLUS"}  # the plain EXPUNGE path
        await box.delete(second)
        assert await box.search("ALL") == [third]
        assert await box.search("DELETED") == []


async def test_size_cap(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    name, password = user
    dovecot.deliver(name, _message("big", size=50_000))
    async with Mailbox(settings(dovecot, name, password=_secret(password))) as box:
        await box.select("INBOX")
        [uid] = await box.search("ALL")
        fetched = await box.fetch(uid, 10_000)
        assert fetched.raw is None and fetched.size > 50_000


async def test_reconnects_after_a_drop(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    name, password = user
    dovecot.deliver(name, _message("survivor"))
    async with Mailbox(settings(dovecot, name, password=_secret(password))) as box:
        await box.select("INBOX")
        kicked = subprocess.run(
            ["doveadm", "-c", str(dovecot.config_path), "kick", name], capture_output=True, text=True, check=False
        )
        assert kicked.returncode == 0, kicked.stderr
        await asyncio.sleep(0.2)
        assert len(await box.search("ALL")) == 1
        assert box.connects == 2


@pytest.fixture
async def rude_server() -> AsyncIterator[tuple[int, int]]:
    """Two servers: one greets then hangs up at the first command, one accepts and never speaks."""
    held: list[asyncio.StreamWriter] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK IMAP4rev1 ready\r\n")
        await reader.readline()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    one = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    two = await asyncio.start_server(silent, "127.0.0.1", 0)
    yield one.sockets[0].getsockname()[1], two.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    for server in (one, two):
        server.close()
        await server.wait_closed()


async def test_server_that_hangs_up_or_never_speaks(rude_server: tuple[int, int]) -> None:
    hang_up, silent = rude_server
    box = Mailbox(MailboxSettings("127.0.0.1", "u", hang_up, "plain", password=_secret("p"), timeout=2))
    with pytest.raises(MailboxError) as raised:
        await box.connect()
    assert raised.value.code == "dropped" and "closed the connection" in str(raised.value)
    box = Mailbox(MailboxSettings("127.0.0.1", "u", silent, "plain", password=_secret("p"), timeout=0.5))
    with pytest.raises(MailboxError) as raised:
        await box.connect()
    assert raised.value.code == "timeout"


async def test_refused_connection() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MailboxError) as raised:
        await Mailbox(MailboxSettings("127.0.0.1", "u", port, "plain", password=_secret("p"), timeout=2)).connect()
    assert raised.value.code == "connect"


def test_settings_need_one_secret_and_hide_it() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        MailboxSettings("h", "u")
    assert "hunter2" not in repr(MailboxSettings("h", "u", password=_secret("hunter2")))
