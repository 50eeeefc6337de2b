"""The Matrix transport (matrix-nio): login or restore, the E2EE store, the sync loop, invites, replies.

The first start logs in with the password and saves user id, device id and access token in the store
directory; later starts restore them, so the bot keeps one device (and its E2EE keys) for its life.
The sync token lives in the E2EE store (`store_sync_tokens`), and events older than the start are
ignored as a second guard: a restart never answers a command twice. A revoked token leads to one fresh
password login, or to exit 1; an unreachable homeserver to a capped exponential backoff.
After the first sync of each login the device is cross-signed (identity.py), and after every sync the
admins' room-key requests are answered (keyshare.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinResponse,
    LoginResponse,
    MatrixRoom,
    MegolmEvent,
    RoomMessageNotice,
    RoomMessageText,
    RoomSendResponse,
    SyncError,
    SyncResponse,
)

from bot.chat import PREFIX, strip_reply_fallback, user_matches
from bot.config.matrix import MatrixConfig
from bot.secrets import mask, register
from bot.transports.base import DeliveryError, Incoming, IncomingHandler, Rendered, plain_and_html
from bot.transports.identity import RESET_NOTICE, CrossSigner, Identity, IdentityKeeper
from bot.transports.keyshare import KeyShare
from bot.transports.media import file_content, image_content
from bot.transports.safety import CONTENT_BUDGET, REPORT_FILENAME, content_size, defuse_mentions, summarise
from bot.transports.session import MatrixStartError, SessionFile, store_path

__all__ = ["Backoff", "MatrixStartError", "MatrixTransport"]

log = logging.getLogger("repbot.matrix")

SYNC_TIMEOUT_MS = 30_000
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 60.0
RELOGIN_MIN_INTERVAL = 60.0
REMEMBERED_TXNS = 1000
STOP_GRACE = 30.0
# Network failures the homeserver may cause; the loop rides them out.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncio.TimeoutError)
try:
    from aiohttp import ClientError

    NETWORK_ERRORS += (ClientError,)
except ImportError:  # pragma: no cover - nio depends on aiohttp
    pass


class Backoff:
    """Capped exponential backoff that logs once when the homeserver goes away and once when it is back."""

    def __init__(self, what: str, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> None:
        self.what = what
        self.first = first
        self.cap = cap
        self.delay = 0.0
        self.down_since: float | None = None

    async def failed(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("%s unreachable (%s); retrying with backoff up to %.0f s", self.what, reason, self.cap)
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.first)
        await asyncio.sleep(self.delay)

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.warning("%s reachable again after %.0f s", self.what, time.monotonic() - self.down_since)
        self.down_since = None
        self.delay = 0.0


class MatrixTransport:
    """A Transport over a Matrix homeserver."""

    def __init__(self, config: MatrixConfig, *, state_dir: str = "./state") -> None:
        self.config = config
        self.alert_rooms: Sequence[str] = config.alert_rooms
        self.store_dir = store_path(config, state_dir)
        self.session = SessionFile(self.store_dir, config.homeserver, config.user_id)
        self.session_path = self.session.path
        self.client: AsyncClient | None = None
        self.started_ms = 0
        self.backoff = Backoff(f"homeserver {config.homeserver}")
        self._on_command: IncomingHandler | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._sent: OrderedDict[str, str] = OrderedDict()
        self._bots: set[str] = set()
        self._allowed_rooms: set[str] = set()
        self._invites_seen: set[str] = set()
        self._last_relogin = 0.0
        self._stopping = False
        self.last_sync: float | None = None
        self.identity: Identity | None = None  # after the first sync: is this device cross-signed?
        self._identity_due = False
        self._keeper: IdentityKeeper | None = None
        self._undecryptable: OrderedDict[str, None] = OrderedDict()
        self._keyshare = KeyShare(self.store_dir, config.admins)

    def __repr__(self) -> str:
        return f"<MatrixTransport {self.config.user_id} at {self.config.homeserver}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, on_command: IncomingHandler) -> None:
        """Log in (or restore the saved login) and load the E2EE store; raises MatrixStartError."""
        self._on_command = on_command
        self.started_ms = int(time.time() * 1000)
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        session = self.session.load()
        if session is not None:
            self.client = self._new_client(session["device_id"])
            register(session["access_token"])
            self.client.restore_login(session["user_id"], session["device_id"], session["access_token"])
            log.info("restored the login of %s (device %s)", session["user_id"], session["device_id"])
        elif self.config.access_token is not None:
            assert self.config.device_id is not None
            self.client = self._new_client(self.config.device_id)
            self.client.restore_login(self.config.user_id, self.config.device_id, self.config.access_token.get())
        else:
            await self._password_login(self.config.device_id)

    async def run(self) -> int:
        """Sync until stopped; 0, or 1 when the homeserver no longer accepts the bot and it cannot log in."""
        first = True
        while not self._stopping:
            assert self.client is not None
            try:
                response = await self.client.sync(timeout=SYNC_TIMEOUT_MS, full_state=first or None)
            except NETWORK_ERRORS as error:
                await self.backoff.failed(type(error).__name__ + (f": {error}" if str(error) else ""))
                continue
            if isinstance(response, SyncError):
                if response.status_code == "M_UNKNOWN_TOKEN":
                    if not await self._relogin():
                        return 1
                    first = True
                    continue
                await self.backoff.failed(f"sync refused: {response}")
                continue
            self.backoff.succeeded()
            self.last_sync = time.time()  # the metrics' sync lag
            if isinstance(response, SyncResponse) and first:
                first = False
                await self._join_configured_rooms()
                self._identity_due = True
                log.info("serving as %s (device %s)", self.client.user_id, self.client.device_id)
            await self._after_sync(response)
        return 0

    async def stop(self) -> None:
        """Let pending replies go out, then close the connection."""
        self._stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
        if self.client is not None:
            await self.client.close()

    # -- login -------------------------------------------------------------------------------

    def _new_client(self, device_id: str | None) -> AsyncClient:
        client_config = AsyncClientConfig(
            store_sync_tokens=True,
            encryption_enabled=True,
            pickle_key=self.session.pickle_key(self.config.pickle_key),
            max_timeouts=0,  # our loop does the backoff, and says so once
            max_limit_exceeded=3,
            request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
        )
        client = AsyncClient(
            self.config.homeserver,
            self.config.user_id,
            device_id=device_id or "",
            store_path=str(self.store_dir),
            config=client_config,
        )
        client.add_event_callback(self._on_text, RoomMessageText)
        client.add_event_callback(self._on_notice, RoomMessageNotice)
        client.add_event_callback(self._on_invite, InviteMemberEvent)
        client.add_event_callback(self._on_undecryptable, MegolmEvent)
        return client

    async def _password_login(self, device_id: str | None) -> None:
        if self.config.password is None:
            raise MatrixStartError(
                f"{self.config.user_id} has no saved login in {self.store_dir} and no password: "
                "set [matrix] password (or password_file / password_command), or access_token and device_id"
            )
        password = self.config.password.get()
        self.client = self._new_client(device_id)
        while True:
            try:
                response = await self.client.login(password, device_name=self.config.device_name)
                break
            except NETWORK_ERRORS as error:
                await self.backoff.failed(type(error).__name__)
        self.backoff.succeeded()
        if not isinstance(response, LoginResponse):
            raise MatrixStartError(
                f"the homeserver refused the login of {self.config.user_id}: {response.status_code} "
                f"{response.message}; check [matrix] user_id and password"
            )
        register(response.access_token)
        self.session.save(response.user_id, response.device_id, response.access_token)
        log.info(
            "logged in as %s, new device %s; the login is saved in %s",
            response.user_id,
            response.device_id,
            self.session_path,
        )

    async def _relogin(self) -> bool:
        """After M_UNKNOWN_TOKEN: one password login on a fresh device; False when that is not possible."""
        now = time.monotonic()
        if self.config.password is None or now - self._last_relogin < RELOGIN_MIN_INTERVAL:
            why = "no password is configured" if self.config.password is None else "the new token was revoked too"
            log.error(
                "the homeserver no longer accepts the access token of %s (M_UNKNOWN_TOKEN) and %s: "
                "set [matrix] password, or a new access_token and device_id, then restart",
                self.config.user_id,
                why,
            )
            return False
        self._last_relogin = now
        log.warning("the access token of %s was revoked (M_UNKNOWN_TOKEN); logging in again", self.config.user_id)
        # The old device may be gone with its keys; a fresh device gets a fresh, consistent E2EE store.
        self.session.forget()
        if self.client is not None:
            await self.client.close()
        try:
            await self._password_login(None)
        except MatrixStartError as error:
            log.error("%s", error)
            return False
        return True

    # -- after each sync -----------------------------------------------------------------------

    async def _after_sync(self, response: object) -> None:
        """Upload, query and claim E2EE keys as the sync asked; failures wait for the next round."""
        client = self.client
        assert client is not None
        try:
            await client.send_to_device_messages()
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            if isinstance(response, SyncResponse):
                await self._keyshare.handle(client, response.to_device_events)
            if self._identity_due and not client.should_upload_keys:
                await self._cross_sign()
        except NETWORK_ERRORS as error:
            log.debug("key maintenance postponed: %s", error)

    async def _cross_sign(self) -> None:
        assert self.client is not None
        if self._keeper is None:
            pickle_key = self.session.pickle_key(self.config.pickle_key)
            signer = CrossSigner(self.store_dir, self.config.user_id, pickle_key, self.config.password)
            self._keeper = IdentityKeeper(signer, retry_on=NETWORK_ERRORS)
        identity = await self._keeper.check(self.client)
        self._identity_due = False
        self.identity = identity
        if identity.reset:
            for room in self.alert_rooms:
                await self._announce(room, f"{RESET_NOTICE} (run `repbot identity` to compare my master key)")

    async def _announce(self, room: str, text: str) -> None:
        try:
            await self.send(room, plain_and_html(text))
        except DeliveryError as error:
            log.warning("could not tell %s that the identity was reset: %s", room, error)

    async def _join_configured_rooms(self) -> None:
        assert self.client is not None
        for room in self.config.rooms:
            response = await self.client.join(room)
            if isinstance(response, JoinResponse):
                self._allowed_rooms.update((room, response.room_id))
            else:
                log.warning("cannot join the configured room %s: %s", room, response)

    # -- events ------------------------------------------------------------------------------

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        assert self.client is not None
        if event.state_key != self.client.user_id or event.membership != "invite":
            return
        if room.room_id in self._invites_seen:
            return
        self._invites_seen.add(room.room_id)
        if user_matches(event.sender, self.config.admins) or room.room_id in self._allowed_rooms:
            log.info("joining %s at the invitation of %s", room.room_id, event.sender)
            response = await self.client.join(room.room_id)
        else:
            log.info("rejecting the invitation to %s from %s (not an admin)", room.room_id, event.sender)
            response = await self.client.room_leave(room.room_id)
        if not isinstance(response, JoinResponse) and hasattr(response, "status_code"):
            log.warning("answering the invitation to %s failed: %s", room.room_id, response)

    async def _on_notice(self, room: MatrixRoom, event: RoomMessageNotice) -> None:
        # Whoever posts notices is a bot: never answer them, or two bots talk forever.
        if self.client is not None and event.sender != self.client.user_id:
            self._bots.add(event.sender)

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        # Once per Megolm session, not per event: a sender without our device's key would flood the log.
        if event.server_timestamp < self.started_ms or event.session_id in self._undecryptable:
            return
        self._undecryptable[event.session_id] = None
        while len(self._undecryptable) > REMEMBERED_TXNS:
            self._undecryptable.popitem(last=False)
        log.warning(
            "cannot decrypt messages from %s in %s (no room key for this device, Megolm session %s)",
            event.sender,
            room.room_id,
            event.session_id,
        )

    async def _on_text(self, room: MatrixRoom, event: RoomMessageText) -> None:
        incoming = self._incoming(room, event)
        if incoming is None or self._on_command is None:
            return
        self._spawn(self._on_command(incoming))

    def _incoming(self, room: MatrixRoom, event: RoomMessageText) -> Incoming | None:
        """The command in a text message, or None when the bot must not answer it."""
        assert self.client is not None
        sender = event.sender
        if sender == self.client.user_id or sender in self._bots or user_matches(sender, self.config.ignore_users):
            return None
        if event.server_timestamp < self.started_ms:
            return None
        content: dict[str, Any] = event.source.get("content") or {}
        relates = content.get("m.relates_to") or {}
        if not isinstance(relates, dict) or relates.get("rel_type") == "m.replace":
            return None  # an edit: the original was the command
        body = strip_reply_fallback(event.body) if "m.in_reply_to" in relates else event.body
        if not body.lstrip().startswith(PREFIX):
            return None
        thread = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
        return Incoming(room.room_id, sender, body, event.event_id, thread if isinstance(thread, str) else None)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- output ------------------------------------------------------------------------------

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        """Post an m.notice (a reply, in the thread when asked there); the same txn_id never posts twice."""
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        content = _notice(message)
        if content_size(content) <= CONTENT_BUDGET:
            return await self._post(room, content, txn_id, reply_to, "message")
        # Too long for one event: the summary first (its id is the reply's), then the whole text as a file.
        event_id = await self._post(room, _notice(summarise(message)), txn_id, reply_to, "message")
        await self._send_file(
            room, mask(message.plain).encode("utf-8"), reply_to, None if txn_id is None else f"{txn_id}-file"
        )
        return event_id

    async def _send_file(self, room: str, data: bytes, reply_to: Incoming | None, txn_id: str | None) -> str:
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        if self.client is None:
            raise DeliveryError("not connected")
        try:
            content = await file_content(
                self.client, room, data, REPORT_FILENAME, REPORT_FILENAME, "text/plain; charset=utf-8"
            )
        except NETWORK_ERRORS as error:
            raise DeliveryError(f"{room}: homeserver unreachable ({type(error).__name__})") from None
        return await self._post(room, content, txn_id, reply_to, "file")

    async def send_image(
        self, room: str, png: bytes, *, body: str, reply_to: Incoming | None = None, txn_id: str | None = None
    ) -> str:
        """Upload the PNG (encrypted in an E2EE room) and post it as m.image; the same txn_id never posts twice."""
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        if self.client is None:
            raise DeliveryError("not connected")
        try:
            content = await image_content(self.client, room, png, mask(body), "repbot-timeline.png")
        except NETWORK_ERRORS as error:
            raise DeliveryError(f"{room}: homeserver unreachable ({type(error).__name__})") from None
        return await self._post(room, content, txn_id, reply_to, "image")

    async def send_file(
        self,
        room: str,
        data: bytes,
        *,
        filename: str,
        mimetype: str,
        body: str,
        reply_to: Incoming | None = None,
        txn_id: str | None = None,
    ) -> str:
        """Upload the file (encrypted in an E2EE room) and post it as m.file; the same txn_id never posts twice."""
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        if self.client is None:
            raise DeliveryError("not connected")
        try:
            content = await file_content(self.client, room, data, body, filename, mimetype)
        except NETWORK_ERRORS as error:
            raise DeliveryError(f"{room}: homeserver unreachable ({type(error).__name__})") from None
        return await self._post(room, content, txn_id, reply_to, "file")

    async def _post(
        self, room: str, content: dict[str, Any], txn_id: str | None, reply_to: Incoming | None, what: str
    ) -> str:
        """Send an m.room.message (as a reply when asked) and remember its txn_id; raises DeliveryError."""
        if reply_to is not None and reply_to.event_id:
            content["m.relates_to"] = _relation(reply_to)
        # Intentional mentions, none: with this key present no legacy push rule (display name, @room)
        # fires on text the bot merely echoes.
        content["m.mentions"] = {}
        response = await self._room_send(room, "m.room.message", content, txn_id)
        if not isinstance(response, RoomSendResponse):
            raise DeliveryError(f"{room} did not accept the {what}: {response}", permanent=_refused(response))
        if txn_id is not None:
            self._sent[txn_id] = response.event_id
            while len(self._sent) > REMEMBERED_TXNS:
                self._sent.popitem(last=False)
        return str(response.event_id)

    async def _room_send(self, room: str, kind: str, content: dict[str, Any], txn_id: str | None) -> object:
        if self.client is None:
            raise DeliveryError("not connected")
        try:
            return await self.client.room_send(room, kind, content, tx_id=txn_id, ignore_unverified_devices=True)
        except NETWORK_ERRORS as error:
            raise DeliveryError(f"{room}: homeserver unreachable ({type(error).__name__})") from None
        except Exception as error:  # nio raises LocalProtocolError/EncryptionError for unknown rooms, missing keys
            raise DeliveryError(f"{room}: {type(error).__name__}: {error}") from None

    async def react(self, incoming: Incoming, key: str) -> None:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": incoming.event_id, "key": key}}
        try:
            await self._room_send(incoming.room, "m.reaction", content, None)
        except DeliveryError as error:
            log.debug("reaction not sent: %s", error)

    async def typing(self, room: str, on: bool) -> None:
        if self.client is None:
            return
        try:
            await self.client.room_typing(room, typing_state=on, timeout=SYNC_TIMEOUT_MS)
        except NETWORK_ERRORS as error:
            log.debug("typing notice not sent: %s", error)


def _notice(message: Rendered) -> dict[str, Any]:
    return {
        "msgtype": "m.notice",
        "body": defuse_mentions(mask(message.plain)),
        "format": "org.matrix.custom.html",
        "formatted_body": mask(message.html),
    }


def _refused(response: object) -> bool:
    """True when the homeserver refused the event itself (a 4xx other than 429), not when it was unreachable."""
    transport = getattr(response, "transport_response", None)
    status = getattr(transport, "status", None)
    if isinstance(status, int):
        return 400 <= status < 500 and status != 429
    return getattr(response, "status_code", None) in ("M_FORBIDDEN", "M_TOO_LARGE", "M_NOT_FOUND", "M_BAD_JSON")


def _relation(reply_to: Incoming) -> dict[str, Any]:
    """m.relates_to for a reply: in the thread when the command was in one, else a plain reply."""
    in_reply_to = {"event_id": reply_to.event_id}
    if reply_to.thread_root:
        return {
            "rel_type": "m.thread",
            "event_id": reply_to.thread_root,
            "is_falling_back": False,
            "m.in_reply_to": in_reply_to,
        }
    return {"m.in_reply_to": in_reply_to}
