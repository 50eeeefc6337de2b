"""Which language a room is spoken to in: the room's own choice (`!language`, kept in the monitor's store meta),
else `[bot] language`, else English."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.i18n import LANGUAGES

if TYPE_CHECKING:
    from bot.config.loader import Config
    from bot.monitor.core import Monitor

__all__ = ["room_language", "set_room_language"]

_META = "language:"


def room_language(config: Config, monitor: Monitor | None, room: str) -> str:
    """The language to answer `room` in; a stored code no longer shipped falls back to the configured one."""
    if monitor is not None:
        chosen = monitor.store.get_meta(_META + room)
        if isinstance(chosen, str) and chosen in LANGUAGES:
            return chosen
    return config.language


def set_room_language(monitor: Monitor, room: str, language: str | None) -> None:
    """Remember `room`'s language (None: back to the configured default)."""
    monitor.store.set_meta(_META + room, language)
