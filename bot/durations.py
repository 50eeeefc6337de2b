"""Durations as operators write them (`90s`, `15m`, `6h`, `1d`, `1h30m`) and as the bot says them (`3 d 4 h`)."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.i18n import _, active_language

__all__ = ["MAX_DURATION", "format_ago", "format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^(?:\s*\d+\s*[smhdw])+\s*$")
# Ten years: longer than any mute or interval an operator means, and far inside what datetime can add.
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str, maximum: timedelta = MAX_DURATION) -> timedelta:
    """The duration in `text` (`90s`, `15m`, `6h`, `1d`, `2w`, or a sum such as `1h30m`), at most `maximum`.

    Raises ValueError, also for a duration too long (never OverflowError, whatever the digits).
    """
    cleaned = text.strip().lower()
    shown = text if len(text) <= 40 else text[:39] + "…"
    if len(cleaned) > 100 or not _WHOLE.match(cleaned):
        raise ValueError(f"{shown!r} is not a duration; write it like 90s, 15m, 6h, 1d or 1h30m")
    limit = int(maximum.total_seconds())
    seconds = 0
    for number, unit in _PART.findall(cleaned):
        # Digits are capped before int(), so a 4,000-digit number costs nothing and never overflows.
        seconds += int(number) * _UNITS[unit] if len(number.lstrip("0")) <= 12 else limit + 1
        if seconds > limit:
            raise ValueError(f"{shown!r} is too long: at most {format_duration(maximum)}")
    if seconds <= 0:
        raise ValueError(f"{shown!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta | float) -> str:
    """A short human duration with its two largest units: `45 s`, `15 min`, `3 h 20 min`, `3 d 4 h`, in the
    active language (Babel's short units: "3 d 4 h" in Spanish too)."""
    total = int(delta.total_seconds() if isinstance(delta, timedelta) else delta)
    if total < 60:
        return _unit(max(total, 0), "second")
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{_unit(days, 'day')} {_unit(hours, 'hour')}" if hours else _unit(days, "day")
    if hours:
        return f"{_unit(hours, 'hour')} {_unit(minutes, 'minute')}" if minutes else _unit(hours, "hour")
    return _unit(minutes, "minute")


# English keeps the bot's own abbreviations (Babel's short English says "3 days 4 hr").
_ENGLISH = {"second": "s", "minute": "min", "hour": "h", "day": "d"}


def _unit(amount: int, unit: str) -> str:
    language = active_language()
    if language == "en":
        return f"{amount} {_ENGLISH[unit]}"
    from babel.units import format_unit  # only when a language other than English speaks

    return format_unit(amount, f"duration-{unit}", length="short", locale=language)


def format_ago(delta: timedelta) -> str:
    """ "3 d 4 h ago" / "hace 3 d 4 h"."""
    return _("{duration} ago").format(duration=format_duration(delta))
