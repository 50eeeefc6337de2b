"""The one IMAP access layer (aioimaplib): TLS or STARTTLS, password or XOAUTH2, SPECIAL-USE folders, timeouts,
and one transparent reconnect when the server drops the connection.

Secrets come in as callables (`password`, `token`) so that the check library never learns where they live; they
are called in a thread (a `*_command` may block) and never logged. Every failure is a `MailboxError` with a `code`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aioimaplib

from checks.errors import MailboxError
from checks.i18n import _, number

__all__ = ["SPECIAL_USE_FALLBACKS", "Fetched", "Folder", "Mailbox", "MailboxError", "MailboxSettings"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SPECIAL_USE_FALLBACKS: dict[str, tuple[str, ...]] = {
    "\\Junk": ("Junk", "Junk Email", "Junk E-mail", "Spam", "[Gmail]/Spam", "INBOX/Junk", "INBOX.Junk", "INBOX.Spam"),
    "\\Sent": ("Sent", "Sent Items", "Sent Messages", "[Gmail]/Sent Mail", "INBOX/Sent", "INBOX.Sent"),
    "\\Trash": ("Trash", "Deleted Items", "Deleted Messages", "[Gmail]/Trash", "INBOX/Trash", "INBOX.Trash"),
    "\\Archive": ("Archive", "Archives", "INBOX/Archive", "INBOX.Archive"),
}
_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")


class _NoWireLog(logging.Filter):
    """Drops aioimaplib's DEBUG wire dumps: they hold whole messages (complainants' addresses) and SASL strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Received :", "Sending :", "continuation line", "ignored untagged"))


logging.getLogger("aioimaplib.aioimaplib").addFilter(_NoWireLog())


@dataclass(frozen=True)
class MailboxSettings:
    """Where the mailbox is and how to log in; secrets are callables, masked in the repr."""

    host: str
    user: str
    port: int = 993
    security: str = "tls"  # "tls" (implicit, port 993), "starttls" (port 143) or "plain" (tests on loopback only)
    password: Callable[[], str] | None = field(default=None, repr=False)
    token: Callable[[], str] | None = field(default=None, repr=False)  # an XOAUTH2 access token
    timeout: float = 20.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.security not in ("tls", "starttls", "plain"):
            raise ValueError(f"security must be tls, starttls or plain, not {self.security!r}")
        if (self.password is None) == (self.token is None):
            raise ValueError("give exactly one of password or token")


@dataclass(frozen=True)
class Folder:
    name: str
    flags: frozenset[str]


@dataclass(frozen=True)
class Fetched:
    """One fetched message: its raw bytes, or None when it was larger than the cap (`size` says how large)."""

    uid: int
    size: int
    raw: bytes | None


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Xoauth2(aioimaplib.Command):  # type: ignore[misc]
    """AUTHENTICATE XOAUTH2 that answers the server's error challenge with an empty line, as RFC 7628 asks;
    aioimaplib's own method waits forever there when the token is refused."""

    def __init__(self, tag: str, sasl: str, send: Callable[[bytes], None]) -> None:
        super().__init__("AUTHENTICATE", tag, "XOAUTH2", sasl, loop=asyncio.get_running_loop())
        self._send = send

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        super().append_to_resp(line, result)
        if result == "Pending" and bytes(line).startswith(b"+"):
            self._send(b"\r\n")


class Mailbox:
    """An IMAP session; use `async with Mailbox(settings) as box:`. Calls reconnect once after a drop."""

    def __init__(self, settings: MailboxSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lost: asyncio.Future[None] | None = None
        self._selected: str | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.connects = 0

    def __repr__(self) -> str:
        s = self.settings
        return f"<Mailbox {s.user}@{s.host}:{s.port} {s.security}>"

    async def __aenter__(self) -> Mailbox:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the connection ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, secure and log in; raises MailboxError."""
        await self._drop()
        s = self.settings
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        lost = self._lost

        def on_lost(exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

        context = s.ssl_context or ssl.create_default_context()
        self._client = aioimaplib.IMAP4(
            s.host,
            s.port,
            timeout=s.timeout,
            conn_lost_cb=on_lost,
            ssl_context=context if s.security == "tls" else None,
        )
        try:
            await self._run("connect", self._client.wait_hello_from_server())
            if s.security == "starttls":
                await self._starttls(context)
            await self._login()
        except BaseException:
            await self._drop()
            raise
        self.capabilities = frozenset(c.upper() for c in self._client.protocol.capabilities)
        self.connects += 1

    async def _starttls(self, context: ssl.SSLContext) -> None:
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise MailboxError("tls", _("{host} does not offer STARTTLS").format(host=self.settings.host))
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=asyncio.get_running_loop())
        response = await self._run("STARTTLS", protocol.execute(command))
        if response.result != "OK":
            said = _("{host} refused STARTTLS: {reply}")
            raise MailboxError("tls", said.format(host=self.settings.host, reply=_text(response)))
        loop = asyncio.get_running_loop()
        upgrade = loop.start_tls(protocol.transport, protocol, context, server_hostname=self.settings.host)
        protocol.transport = await self._run("TLS handshake", upgrade)
        await self._run("CAPABILITY", protocol.capability())  # forget what was said in clear text

    async def _login(self) -> None:
        s = self.settings
        protocol = self._client.protocol
        if s.token is not None:
            token = await asyncio.to_thread(s.token)
            sasl = base64.b64encode(f"user={s.user}\x01auth=Bearer {token}\x01\x01".encode()).decode("ascii")
            response = await self._run(
                "AUTHENTICATE",
                protocol.execute(_Xoauth2(protocol.new_tag(), sasl, protocol.transport.write), scrub=sasl),
            )
        else:
            assert s.password is not None
            password = await asyncio.to_thread(s.password)
            response = await self._run("LOGIN", protocol.login(s.user, password))
        if response.result != "OK":
            said = (
                _("{host} refused the XOAUTH2 token for {user}: {reply}")
                if s.token is not None
                else _("{host} refused the password for {user}: {reply}")
            )
            raise MailboxError("auth", said.format(host=s.host, user=s.user, reply=_text(response)))
        protocol.state = aioimaplib.AUTH
        await self._run("CAPABILITY", protocol.capability())

    async def close(self) -> None:
        """Log out politely (best effort) and close."""
        if self._client is not None and self._lost is not None and not self._lost.done():
            with contextlib.suppress(TimeoutError, aioimaplib.AioImapException, OSError):
                await asyncio.wait_for(self._client.logout(), min(self.settings.timeout, 2.0))
        await self._drop()

    async def _drop(self) -> None:
        client, self._client, self._selected = self._client, None, None
        if client is not None and client.protocol.transport is not None:
            client.protocol.transport.close()
        if client is not None:
            for task in (client._client_task, *client.protocol.tasks):
                task.cancel()

    async def _run(self, what: str, operation: Awaitable[T]) -> T:
        """Await one IMAP exchange under the timeout, failing fast when the connection drops."""
        task = asyncio.ensure_future(operation)
        lost = self._lost
        waiting: set[asyncio.Future[Any]] = {task} if lost is None else {task, lost}
        try:
            async with asyncio.timeout(self.settings.timeout):
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            task.cancel()
            said = _("{what}: no answer from {host} within {seconds} s")
            seconds = number(self.settings.timeout)
            raise MailboxError("timeout", said.format(what=what, host=self.settings.host, seconds=seconds)) from None
        if not task.done():
            task.cancel()
            said = _("{what}: {host} closed the connection").format(what=what, host=self.settings.host)
            raise MailboxError("dropped", said)
        try:
            return task.result()
        except ssl.SSLError as error:
            said = _("{what}: TLS failed with {host}: {reason}")
            raise MailboxError("tls", said.format(what=what, host=self.settings.host, reason=error.reason)) from None
        except (OSError, TimeoutError) as error:
            said = _("{what}: cannot reach {host}:{port}: {error}")
            where = {"host": self.settings.host, "port": self.settings.port}
            raise MailboxError("connect", said.format(what=what, error=error, **where)) from None
        except aioimaplib.AioImapException as error:
            raise MailboxError("protocol", f"{what}: {error}") from None

    async def _call(self, what: str, make: Callable[[Any], Awaitable[T]]) -> T:
        """Run `make(protocol)` in the selected folder; after a drop, reconnect once and try again."""
        for attempt in (1, 2):
            if self._client is None or (self._lost is not None and self._lost.done()):
                folder = self._selected
                await self.connect()
                if folder is not None:
                    await self.select(folder)
            try:
                return await self._run(what, make(self._client.protocol))
            except MailboxError as error:
                if error.code != "dropped" or attempt == 2:
                    raise
                log.info("IMAP %s: connection dropped, reconnecting", self.settings.host)
        raise AssertionError("unreachable")

    # -- folders and messages ---------------------------------------------------------------------------

    async def folders(self) -> list[Folder]:
        """Every folder with its flags (SPECIAL-USE ones such as \\Junk included)."""
        response = await self._call("LIST", lambda p: p.simple_command("LIST", '""', '"*"'))
        found = []
        for line in response.lines[:-1]:
            match = _LIST_LINE.match(bytes(line))
            if match:
                name = match["name"].decode("utf-8", "replace")
                if name.startswith('"'):
                    name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                found.append(Folder(name, frozenset(match["flags"].decode().split())))
        return found

    async def find_folder(self, special_use: str, names: Sequence[str] = ()) -> str | None:
        """The folder with a SPECIAL-USE flag (`\\Junk`), else the first existing conventional name."""
        folders = await self.folders()
        for folder in folders:
            if special_use.lower() in {flag.lower() for flag in folder.flags}:
                return folder.name
        existing = {folder.name.lower(): folder.name for folder in folders}
        for name in (*names, *SPECIAL_USE_FALLBACKS.get(special_use, ())):
            if name.lower() in existing:
                return existing[name.lower()]
        return None

    async def select(self, folder: str) -> int:
        """Select a folder; return how many messages it holds."""
        response = await self._call("SELECT", lambda p: p.select(_quote(folder)))
        if response.result != "OK":
            said = _("cannot open folder {folder!r}: {reply}")
            raise MailboxError("protocol", said.format(folder=folder, reply=_text(response)))
        self._selected = folder
        return aioimaplib.extract_exists(response) or 0

    async def search(self, *criteria: str) -> list[int]:
        """The UIDs matching IMAP search criteria, e.g. ('UNKEYWORD', '$RepbotSeen') or ('HEADER', 'X-Id', 'v')."""
        response = await self._call("SEARCH", lambda p: p.search(*criteria, charset=None, by_uid=True))
        if response.result != "OK":
            raise MailboxError("protocol", _("search refused: {reply}").format(reply=_text(response)))
        return sorted({int(n) for line in response.lines[:-1] for n in bytes(line).split() if n.isdigit()})

    async def unprocessed(self, keyword: str) -> list[int]:
        """The UIDs not yet marked with `keyword` (and not deleted)."""
        return await self.search("UNKEYWORD", keyword, "UNDELETED")

    async def fetch(self, uid: int, max_bytes: int) -> Fetched:
        """A message's raw bytes without setting \\Seen; raw is None when it is larger than max_bytes."""
        sized = await self._call("FETCH", lambda p: p.fetch(str(uid), "(RFC822.SIZE)", by_uid=True))
        match = next((m for line in sized.lines if (m := _SIZE.search(bytes(line)))), None)
        if match is None:
            raise MailboxError("protocol", _("message UID {uid} is gone").format(uid=uid))
        size = int(match[1])
        if size > max_bytes:
            return Fetched(uid, size, None)
        response = await self._call("FETCH", lambda p: p.fetch(str(uid), "(BODY.PEEK[])", by_uid=True))
        raw = next((bytes(item) for item in response.lines if isinstance(item, bytearray)), None)
        if raw is None:
            raise MailboxError("protocol", _("message UID {uid} came without a body").format(uid=uid))
        return Fetched(uid, size, raw)

    async def flag(self, uid: int, *flags: str) -> None:
        """Add flags or keywords (`\\Seen`, `$RepbotSeen`) to a message."""
        joined = "(" + " ".join(flags) + ")"
        response = await self._call("STORE", lambda p: p.store(str(uid), "+FLAGS.SILENT", joined, by_uid=True))
        if response.result != "OK":
            raise MailboxError("protocol", _("cannot flag UID {uid}: {reply}").format(uid=uid, reply=_text(response)))

    async def move(self, uid: int, folder: str) -> None:
        """Move a message: MOVE where offered, else COPY, then delete the original."""
        if "MOVE" in self.capabilities:
            response = await self._call("MOVE", lambda p: p.move(str(uid), _quote(folder), by_uid=True))
        else:
            response = await self._call("COPY", lambda p: p.copy(str(uid), _quote(folder), by_uid=True))
            if response.result == "OK":
                await self.delete(uid)
                return
        if response.result != "OK":
            said = _("cannot move UID {uid} to {folder!r}: {reply}")
            raise MailboxError("protocol", said.format(uid=uid, folder=folder, reply=_text(response)))

    async def delete(self, uid: int) -> None:
        """Delete a message for good: \\Deleted, then UID EXPUNGE (UIDPLUS), else a plain EXPUNGE."""
        await self.flag(uid, "\\Deleted")
        if "UIDPLUS" in self.capabilities:
            response = await self._call("EXPUNGE", lambda p: p.expunge(str(uid), by_uid=True))
        else:
            response = await self._call("EXPUNGE", lambda p: p.expunge())
        if response.result != "OK":
            said = _("cannot expunge UID {uid}: {reply}")
            raise MailboxError("protocol", said.format(uid=uid, reply=_text(response)))

    async def create(self, folder: str) -> None:
        """Create a folder; an existing one is fine."""
        await self._call("CREATE", lambda p: p.simple_command("CREATE", _quote(folder)))


def _text(response: Any) -> str:
    """The server's last response line, short (it never holds our secrets: those are only sent, not echoed)."""
    last = response.lines[-1] if response.lines else b""
    return bytes(last).decode("utf-8", "replace")[:200]
