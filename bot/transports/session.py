"""The Matrix login kept on disk: session.json (user id, device id, access token) and the E2EE pickle key.

Both files live in the store directory next to the E2EE store, written atomically and readable by the owner only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from bot.config.matrix import MatrixConfig
from bot.config.reader import Secret

__all__ = ["MatrixStartError", "SessionFile", "store_path", "write_private"]

log = logging.getLogger("repbot.matrix")


class MatrixStartError(Exception):
    """Raised by start() or the re-login when the bot cannot log in; the message says what to fix."""


class SessionFile:
    """The saved login of one account on one homeserver, so that the bot keeps one device for its life."""

    def __init__(self, store_dir: Path, homeserver: str, user_id: str) -> None:
        self.store_dir = store_dir
        self.path = store_dir / "session.json"
        self.homeserver = homeserver
        self.user_id = user_id

    def load(self) -> dict[str, str] | None:
        """user_id, device_id and access_token, or None (no file, or another account's); raises MatrixStartError."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise MatrixStartError(f"{self.path} is unreadable ({error}); remove it to log in again") from None
        if data.get("user_id") != self.user_id or data.get("homeserver") != self.homeserver:
            log.warning("%s belongs to another account; logging in again", self.path)
            return None
        return {key: str(data[key]) for key in ("user_id", "device_id", "access_token")}

    def save(self, user_id: str, device_id: str, token: str) -> None:
        data = {"homeserver": self.homeserver, "user_id": user_id, "device_id": device_id, "access_token": token}
        write_private(self.path, json.dumps(data))

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    def pickle_key(self, configured: Secret | None) -> str:
        """The configured pickle key, else the one saved in the store directory (generated on first use)."""
        if configured is not None:
            return configured.get()
        path = self.store_dir / "pickle_key"
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        key = secrets.token_urlsafe(32)
        write_private(path, key)
        log.warning("no [matrix] pickle_key configured: generated one in %s (keep it with the store)", path)
        return key


def store_path(config: MatrixConfig, state_dir: str) -> Path:
    """The store directory: [matrix] store_dir, else `matrix` in the state directory."""
    return Path(config.store_dir or os.path.join(state_dir, "matrix"))


def write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read, atomically (temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
