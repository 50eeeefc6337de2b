"""The [matrix] section: homeserver, login, rooms, admins. It imports nothing of the check library, as the
Matrix transport reads it (see tests/test_architecture.py)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.reader import Secret, Section

__all__ = ["MatrixConfig", "read_matrix"]


@dataclass(frozen=True)
class MatrixConfig:
    homeserver: str
    user_id: str
    password: Secret | None = None
    access_token: Secret | None = None
    device_id: str | None = None
    device_name: str = "repbot"
    store_dir: str = ""
    pickle_key: Secret | None = None
    rooms: tuple[str, ...] = ()
    alert_rooms: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    answer_strangers: bool = False
    rate_limit_per_hour: int = 10
    ignore_users: tuple[str, ...] = ()


def read_matrix(root: Section) -> MatrixConfig | None:
    if "matrix" not in root.data:
        root.seen.add("matrix")
        return None
    section = root.table("matrix")
    homeserver = section.required_str("homeserver")
    if homeserver and not homeserver.startswith(("https://", "http://")):
        section.problem("homeserver", "must be a URL such as https://matrix.example.org")
    user_id = section.required_str("user_id")
    if user_id and (not user_id.startswith("@") or ":" not in user_id):
        section.problem("user_id", "must look like @repbot:example.org")
    password = section.secret("password")
    token = section.secret("access_token")
    device_id = section.get("device_id", str, "") or None
    if password is None and token is None:
        section.problem("password", "give a password (or password_file/_command) or an access_token")
    if token is not None and device_id is None:
        section.problem("device_id", "is required with access_token (E2EE keys belong to one device)")
    config = MatrixConfig(
        homeserver=homeserver.rstrip("/"),
        user_id=user_id,
        password=password,
        access_token=token,
        device_id=device_id,
        device_name=section.get("device_name", str, "repbot"),
        store_dir=section.get("store_dir", str, ""),
        pickle_key=section.secret("pickle_key"),
        rooms=section.strings("rooms"),
        alert_rooms=section.strings("alert_rooms"),
        admins=section.strings("admins", _admin_pattern),
        answer_strangers=section.get("answer_strangers", bool, False),
        rate_limit_per_hour=section.get("rate_limit_per_hour", int, 10),
        ignore_users=section.strings("ignore_users", _admin_pattern),
    )
    if config.rate_limit_per_hour < 1:
        section.problem("rate_limit_per_hour", "must be at least 1")
    section.finish()
    return config


def _admin_pattern(text: str) -> str:
    if not text.startswith("@") or ":" not in text:
        raise ValueError(f"{text!r} must be a user id (@alice:example.org) or a pattern (@*:example.org)")
    return text
