"""The hook through which the check library's sentences (summaries, advice, target errors) are translated, and
the numbers in them written in the reader's conventions.

The library knows no language and no catalog: it marks its sentences with `_()` and `N_()`, writes the numbers
it says with `number()` and `percent()`, and whoever drives it (the bot) installs its functions once with
`install()`. Unset, every sentence stays English and every number is written as Python's format would (the
bot's functions say English too unless a language is active: `--json` runs in none). Finding codes and
evidence are never passed through here: a number in the evidence stays a number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["N_", "_", "install", "ngettext", "number", "percent"]

Gettext = Callable[[str], str]
Ngettext = Callable[[str, str, int], str]
Number = Callable[[float, int | None], str]
Percent = Callable[[float, int], str]


def _english(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _plain_number(value: float, decimals: int | None) -> str:
    # What the library's f-strings wrote before the hook: 1234, 2.5 (`:g`), 0.40 with decimals.
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain_percent(ratio: float, decimals: int) -> str:
    return f"{ratio:.{decimals}%}"


@dataclass
class _Hook:
    gettext: Gettext = str
    ngettext: Ngettext = _english
    number: Number = _plain_number
    percent: Percent = _plain_percent


_hook = _Hook()


def _(message: str) -> str:
    return _hook.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _hook.ngettext(singular, plural, count)


def N_(message: str) -> str:
    """Marks a sentence in a table for extraction; `_()` translates it when a Finding is made from it."""
    return message


def number(value: float, decimals: int | None = None) -> str:
    """A count or a measure for a sentence: 1234, or 2.5 with `decimals=1`; "1.234" and "2,5" in Spanish."""
    return _hook.number(value, decimals)


def percent(ratio: float, decimals: int = 0) -> str:
    """A share (0.004) for a sentence: "0.40%" with `decimals=2`; "0,40 %" in Spanish."""
    return _hook.percent(ratio, decimals)


def install(gettext: Gettext, ngettext: Ngettext, number: Number, percent: Percent) -> None:
    """Word the library's sentences and write its numbers with these functions from now on (the bot's, which
    follow its active language)."""
    _hook.gettext, _hook.ngettext, _hook.number, _hook.percent = gettext, ngettext, number, percent
