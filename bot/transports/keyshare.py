"""Room-key requests: the bot forwards the keys of its own messages only to its admins' verified devices.

An admin who logs in on a new device cannot read the bot's earlier messages until some device forwards the
Megolm keys. nio answers requests only from the bot's own verified devices (it has none) and drops the rest;
here the bot answers an admin's device when it is verified the way clients now judge devices (MSC4153): the
admin's self-signing key signed it, the admin's master key signed that key, and that master key is the one
the bot saw first for that admin (pinned in `admin_identities.json` in the store). A changed master key is
refused until the operator removes its pin. Only sessions the bot itself created are forwarded: other
people's keys are theirs to share.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nio import RoomKeyRequest, RoomKeyRequestCancellation

from bot.chat import user_matches
from bot.transports.crosssign import published_keys, verify_json
from bot.transports.identity import API, Request, nio_request
from bot.transports.session import write_private

__all__ = ["PIN_FILE", "KeyShare"]

log = logging.getLogger("repbot.matrix")

PIN_FILE = "admin_identities.json"


class _Untrusted(Exception):
    """Raised when a requesting device is not verified; the message says why."""


class KeyShare:
    """Answers m.room_key_request from admins' verified devices with m.forwarded_room_key."""

    def __init__(self, store_dir: Path, admins: Sequence[str]) -> None:
        self.pins_path = store_dir / PIN_FILE
        self.admins = tuple(admins)
        self._refused: set[tuple[str, str, str]] = set()

    def __repr__(self) -> str:
        return f"<KeyShare for {len(self.admins)} admin patterns>"

    async def handle(self, client: Any, to_device_events: Iterable[object]) -> None:
        """Forward the keys asked for in one sync's to-device events, where the asker may have them."""
        events = list(to_device_events)
        cancelled = {e.request_id for e in events if isinstance(e, RoomKeyRequestCancellation)}
        for event in events:
            if not isinstance(event, RoomKeyRequest) or event.request_id in cancelled:
                continue
            if event.sender == client.user_id or not user_matches(event.sender, self.admins):
                continue  # nio's own rules (the bot's devices), or nobody's business
            try:
                await self._answer(client, event)
            except _Untrusted as why:
                self._refuse(event, str(why))
            except Exception as error:  # the homeserver or nio failing; the device asks again later
                log.warning(
                    "answering the room-key request of %s failed: %s: %s", event.sender, type(error).__name__, error
                )

    def _refuse(self, event: RoomKeyRequest, why: str) -> None:
        key = (event.sender, event.requesting_device_id, why)
        if key not in self._refused:
            self._refused.add(key)
            log.warning("not sharing room keys with %s's device %s: %s", event.sender, event.requesting_device_id, why)

    async def _answer(self, client: Any, event: RoomKeyRequest) -> None:
        olm = client.olm
        if event.sender_key != olm.account.identity_keys["curve25519"]:
            raise _Untrusted("the session is not one of the bot's own")
        group = olm.inbound_group_store.get(event.room_id, event.sender_key, event.session_id)
        if group is None:
            raise _Untrusted(f"the bot no longer holds session {event.session_id}")
        curve = await self._verified_curve(nio_request(client), event.sender, event.requesting_device_id)
        device = olm.device_store.active_user_devices(event.sender)
        known = [d for d in device if d.device_id == event.requesting_device_id and d.curve25519 == curve]
        if not known:
            raise _Untrusted("the device is not among the room members' known devices yet")
        if olm.session_store.get(curve) is None:
            await client.keys_claim({event.sender: [event.requesting_device_id]})
        session = olm.session_store.get(curve)
        if session is None:
            raise _Untrusted("no Olm session could be set up with the device")
        # nio has no public call to forward a key to another user's device; this is the one it uses for ours.
        message = olm._encrypt_forwarding_key(event.room_id, group, session, known[0])
        await client.to_device(message)
        log.info("forwarded room key %s to %s's verified device %s", event.session_id, event.sender, known[0].device_id)

    async def _verified_curve(self, request: Request, user_id: str, device_id: str) -> str:
        """The device's curve25519 key, when its owner cross-signed it under the pinned master key."""
        status, data = await request("POST", f"{API}/keys/query", {"device_keys": {user_id: [device_id]}})
        if status != 200:
            raise _Untrusted(f"the homeserver did not answer /keys/query ({status})")
        master, self_signing = published_keys(data, user_id)
        device = ((data.get("device_keys") or {}).get(user_id) or {}).get(device_id)
        if master is None or self_signing is None or not isinstance(device, dict):
            raise _Untrusted("its owner has not set up cross-signing")
        if not verify_json(device, user_id, self_signing):
            raise _Untrusted("its owner has not verified (cross-signed) it")
        self._check_pin(user_id, master)
        curve = (device.get("keys") or {}).get(f"curve25519:{device_id}")
        if not isinstance(curve, str):
            raise _Untrusted("it publishes no curve25519 key")
        return curve

    def _check_pin(self, user_id: str, master: str) -> None:
        try:
            pins: dict[str, str] = json.loads(self.pins_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pins = {}
        except (OSError, ValueError) as error:
            raise _Untrusted(f"{self.pins_path} is unreadable ({error})") from None
        pinned = pins.get(user_id)
        if pinned is None:
            pins[user_id] = master
            write_private(self.pins_path, json.dumps(pins, indent=1, sort_keys=True))
            log.info("pinned the cross-signing master key of %s", user_id)
        elif pinned != master:
            raise _Untrusted(
                f"the master key of {user_id} changed since it was pinned; if that admin reset their identity, "
                f"remove their line from {self.pins_path}"
            )
