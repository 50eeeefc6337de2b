"""The bot's cross-signing identity on the homeserver: bootstrap it once, keep it, sign each device of the bot.

Clients that "exclude insecure devices" (MSC4153) share room keys only with devices their owner has
cross-signed, so the bot signs its own device. At each start (and after a re-login on a new device) it asks
/keys/query what the homeserver holds and does only what is missing:

- no keys anywhere: make the three keys, upload them (a first upload needs no user-interactive auth, MSC3967);
- the homeserver's keys are ours: nothing to upload;
- the homeserver holds another identity, or none while we hold one: upload ours, which replaces theirs and
  needs the account password (UIA `m.login.password`); a replaced identity is a reset, announced in the room;
- then, if the device lacks a valid self-signing signature, sign it and upload the signature.

A refusal (SSO-only UIA, no password, no endpoints) leaves the bot working unsigned; `Identity.problem` says why
and what to do, for the log (once) and for `!status`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config.matrix import MatrixConfig
from bot.config.reader import Secret, SecretError
from bot.i18n import _
from bot.transports.crosssign import (
    CrossSigningKeys,
    KeyFile,
    KeyFileError,
    fingerprint,
    published_keys,
    sign_json,
    verify_json,
)
from bot.transports.session import MatrixStartError, SessionFile, store_path

__all__ = [
    "CrossSigner",
    "Identity",
    "IdentityKeeper",
    "IdentityRefused",
    "Request",
    "identity_line",
    "identity_report",
    "nio_request",
]

log = logging.getLogger("repbot.matrix")

API = "/_matrix/client/v3"
# (method, path, JSON body) -> (HTTP status, JSON object); network errors propagate.
Request = Callable[[str, str, Mapping[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
RESET_NOTICE = "my identity was reset; verify me again"


class IdentityRefused(Exception):
    """Raised when the homeserver will not take the keys or the signature; the message says what to do."""


@dataclass(frozen=True)
class Identity:
    """What the homeserver shows of the bot's identity after a start: signed or not, and why not."""

    cross_signed: bool
    master_key: str | None = None
    problem: str = ""
    reset: bool = False

    def status_line(self) -> str:
        if self.cross_signed and self.master_key:
            return f"identity: device cross-signed (master key {fingerprint(self.master_key)})"
        return f"identity: this device is NOT cross-signed: {self.problem}"


def identity_line(transport: object) -> str | None:
    """The !status line about cross-signing, for a transport that has an identity (Matrix); else None."""
    identity = getattr(transport, "identity", None)
    return identity.status_line() if isinstance(identity, Identity) else None


@dataclass(frozen=True)
class _Published:
    """The account's keys as /keys/query shows them: the public master and self-signing keys, and our device."""

    master: str | None
    self_signing: str | None
    device: Mapping[str, Any] | None


class CrossSigner:
    """Brings the homeserver's view of the account's cross-signing in line with the key file."""

    def __init__(self, store_dir: Path, user_id: str, pickle_key: str, password: Secret | None) -> None:
        self.keys = KeyFile(store_dir, user_id)
        self.user_id = user_id
        self.pickle_key = pickle_key
        self.password = password

    def __repr__(self) -> str:
        return f"<CrossSigner {self.user_id}>"

    async def ensure(self, request: Request, device_id: str, device_ed25519: str) -> Identity:
        """Cross-sign this device, making or restoring the identity as needed; never raises IdentityRefused."""
        try:
            return await self._ensure(request, device_id, device_ed25519)
        except IdentityRefused as refusal:
            return Identity(False, problem=str(refusal))

    async def _ensure(self, request: Request, device_id: str, device_ed25519: str) -> Identity:
        published = await self._published(request, device_id)
        device = published.device
        if device is None or (device.get("keys") or {}).get(f"ed25519:{device_id}") != device_ed25519:
            raise IdentityRefused(f"the homeserver does not show this device's ({device_id}) keys; restart the bot")
        # scrypt takes tens of milliseconds: off the event loop.
        keys = await asyncio.to_thread(self._local)
        reset = False
        if keys is None or (keys.public.master, keys.public.self_signing) != (
            published.master,
            published.self_signing,
        ):
            reset = published.master is not None
            if keys is None:
                keys = CrossSigningKeys.generate()
                await asyncio.to_thread(
                    self._save, keys
                )  # before the upload: a retry after a lost answer must upload these same keys
            await self._upload_keys(request, keys)
            log.warning(
                "%s the cross-signing identity of %s (master key %s)",
                "reset" if reset else "published",
                self.user_id,
                fingerprint(keys.public.master),
            )
        if reset or not verify_json(device, self.user_id, keys.public.self_signing):
            await self._sign_device(request, device_id, device, keys)
        return Identity(True, keys.public.master, reset=reset)

    def _save(self, keys: CrossSigningKeys) -> None:
        try:
            self.keys.save(keys, self.pickle_key)
        except OSError as error:  # not a network error: retrying would only make more keys
            raise IdentityRefused(
                f"cannot write {self.keys.path} ({error.strerror}); fix the store directory"
            ) from None

    def _local(self) -> CrossSigningKeys | None:
        """Our keys, or None when there are none yet; raises IdentityRefused when the file will not open."""
        if not self.keys.exists():
            return None
        try:
            return self.keys.load(self.pickle_key)
        except KeyFileError as error:
            raise IdentityRefused(
                f"{error}; restore the pickle key, or move {self.keys.path} away to reset the identity"
            ) from None

    async def _published(self, request: Request, device_id: str) -> _Published:
        status, data = await request("POST", f"{API}/keys/query", {"device_keys": {self.user_id: []}})
        if status != 200:
            raise IdentityRefused(f"the homeserver did not answer /keys/query ({status} {_error(data)})")
        # A self-signing key the master key did not sign is not one identity: it is replaced.
        master, self_signing = published_keys(data, self.user_id)
        device = ((data.get("device_keys") or {}).get(self.user_id) or {}).get(device_id)
        return _Published(master, self_signing, device if isinstance(device, Mapping) else None)

    async def _upload_keys(self, request: Request, keys: CrossSigningKeys) -> None:
        body = keys.upload_body(self.user_id)
        path = f"{API}/keys/device_signing/upload"
        status, data = await request("POST", path, body)
        if status == 401 and "flows" in data:
            status, data = await request("POST", path, {**body, "auth": self._password_auth(data)})
            if status == 401:
                raise IdentityRefused(
                    "the homeserver refused the password when replacing the cross-signing keys "
                    f"({_error(data)}); check [matrix] password"
                )
        if status in (404, 405) or data.get("errcode") == "M_UNRECOGNIZED":
            raise IdentityRefused(
                "the homeserver does not offer cross-signing (/keys/device_signing/upload is missing); upgrade it"
            )
        if status != 200:
            raise IdentityRefused(f"the homeserver refused the cross-signing keys ({status} {_error(data)})")

    def _password_auth(self, challenge: Mapping[str, Any]) -> dict[str, Any]:
        """The UIA `auth` answer with the account password; raises IdentityRefused when that cannot be given."""
        flows = [list(flow.get("stages") or []) for flow in challenge.get("flows") or [] if isinstance(flow, dict)]
        if ["m.login.password"] not in flows:
            offered = " or ".join("+".join(stages) for stages in flows) or "nothing"
            raise IdentityRefused(
                f"the homeserver lets the cross-signing keys be replaced only through {offered}, which a bot "
                "cannot complete; give the bot's account a password login (and [matrix] password), or have the "
                "homeserver's admin allow the reset, then restart the bot"
            )
        if self.password is None:
            raise IdentityRefused(
                "the account already has cross-signing keys that this store does not hold, and replacing them "
                "needs the account password: set [matrix] password (or password_file / password_command), "
                "then restart the bot"
            )
        try:
            password = self.password.get()
        except SecretError as error:
            raise IdentityRefused(str(error)) from None
        return {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": password,
            "session": challenge.get("session"),
        }

    async def _sign_device(
        self, request: Request, device_id: str, device: Mapping[str, Any], keys: CrossSigningKeys
    ) -> None:
        signed = sign_json(device, self.user_id, keys.self_signing)
        body = {self.user_id: {device_id: signed}}
        status, data = await request("POST", f"{API}/keys/signatures/upload", body)
        failures = data.get("failures") or {}
        if status != 200 or failures:
            raise IdentityRefused(
                f"the homeserver refused this device's signature ({status} {failures or _error(data)})"
            )
        log.info("cross-signed this device (%s) with the self-signing key", device_id)


class IdentityKeeper:
    """Runs the CrossSigner for a nio client after each login; says once in the log why the device is unsigned."""

    def __init__(self, signer: CrossSigner, *, retry_on: tuple[type[BaseException], ...]) -> None:
        self.signer = signer
        self.retry_on = retry_on
        self.identity: Identity | None = None

    async def check(self, client: Any) -> Identity:
        """The identity after signing the client's device; raises only the `retry_on` (network) errors."""
        ed25519 = client.olm.account.identity_keys["ed25519"]
        try:
            identity = await self.signer.ensure(nio_request(client), client.device_id, ed25519)
        except self.retry_on:
            raise
        except Exception:  # an answer nobody foresaw must not stop the bot
            log.exception("cross-signing this device failed")
            identity = Identity(False, problem="cross-signing failed unexpectedly (see the log); restart to retry")
        if not identity.cross_signed and (self.identity is None or self.identity.problem != identity.problem):
            log.warning(
                "this device is not cross-signed, so clients that exclude insecure devices will not talk to it: %s",
                identity.problem,
            )
        self.identity = identity
        return identity


def identity_report(matrix: MatrixConfig | None, state_dir: str, source: str = "") -> tuple[int, str]:
    """`repbot identity`: 0 when the homeserver serves the master key kept in the store, else 1 (3: unasked)."""
    if matrix is None:
        return 1, _("no [matrix] section in {source}").format(source=source or _("the configuration"))
    store = store_path(matrix, state_dir)
    keys = KeyFile(store, matrix.user_id)
    if not keys.exists():
        text = _("{user} has no cross-signing identity in {path} yet: start the bot once")
        return 1, text.format(user=matrix.user_id, path=keys.path)
    try:
        public = keys.public()
    except KeyFileError as error:
        return 1, str(error)
    code, served = _compare_served(matrix, store, public.master)
    master, self_signing = _("master key:"), _("self-signing key:")
    width = max(len(master), len(self_signing)) + 1
    return code, (
        _("{user} cross-signing identity ({path})").format(user=matrix.user_id, path=keys.path) + "\n"
        f"{master:<{width}}{fingerprint(public.master)}\n"
        f"{self_signing:<{width}}{fingerprint(public.self_signing)}\n"
        f"{served}"
    )


def _compare_served(matrix: MatrixConfig, store: Path, master: str) -> tuple[int, str]:
    """The exit code and a line on whether the homeserver serves this master key for the account."""
    import httpx

    session = SessionFile(store, matrix.homeserver, matrix.user_id)
    try:
        saved = session.load()
        token = saved["access_token"] if saved else matrix.access_token.get() if matrix.access_token else None
    except (MatrixStartError, SecretError) as error:
        return 3, _("the homeserver was not asked: {error}").format(error=error)
    if token is None:
        return 3, _("the homeserver was not asked: no saved login and no access_token")
    try:
        response = httpx.post(
            f"{matrix.homeserver.rstrip('/')}{API}/keys/query",
            headers={"Authorization": f"Bearer {token}"},
            json={"device_keys": {matrix.user_id: []}},
            timeout=10.0,
        )
        data = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError) as error:
        text = _("the homeserver could not be asked ({error}); compare again when it answers")
        return 3, text.format(error=type(error).__name__)
    served, _self_signing = published_keys(data if isinstance(data, dict) else {}, matrix.user_id)
    if served == master:
        return 0, _("the homeserver {homeserver} serves this master key").format(homeserver=matrix.homeserver)
    if served is None:
        text = _("the homeserver {homeserver} serves no master key for the bot: restart the bot to publish it")
        return 1, text.format(homeserver=matrix.homeserver)
    text = _(
        "the homeserver {homeserver} serves ANOTHER master key ({fingerprint}): someone replaced the bot's identity;"
        " restart the bot (with its password) to restore this one"
    )
    return 1, text.format(homeserver=matrix.homeserver, fingerprint=fingerprint(served))


def nio_request(client: Any) -> Request:
    """A Request over a logged-in nio AsyncClient's HTTP session, with its access token."""

    async def request(method: str, path: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/json"}
        response = await client.send(method, path, json.dumps(body), headers=headers)
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = None
        finally:
            response.release()
        return int(response.status), data if isinstance(data, dict) else {}

    return request


def _error(data: Mapping[str, Any]) -> str:
    return f"{data.get('errcode', '')} {data.get('error', '')}".strip() or "no error message"
