"""Durations as operators write them (`90s`, `15m`, `6h`, `1d`, `1h30m`) and as the bot says them (`3 d 4 h`)."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^(?:\s*\d+\s*[smhdw])+\s*$")


def parse_duration(text: str) -> timedelta:
    """The duration in `text` (`90s`, `15m`, `6h`, `1d`, `2w`, or a sum such as `1h30m`); raises ValueError."""
    cleaned = text.strip().lower()
    if not _WHOLE.match(cleaned):
        raise ValueError(f"{text!r} is not a duration; write it like 90s, 15m, 6h, 1d or 1h30m")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(cleaned))
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta | float) -> str:
    """A short human duration with its two largest units: `45 s`, `15 min`, `3 h 20 min`, `3 d 4 h`."""
    total = int(delta.total_seconds() if isinstance(delta, timedelta) else delta)
    if total < 60:
        return f"{max(total, 0)} s"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"
