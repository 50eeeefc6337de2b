"""The hook through which the check library's sentences (summaries, advice, target errors) are translated.

The library knows no language and no catalog: it marks its sentences with `_()` and `N_()`, and whoever drives
it (the bot) installs its translation functions once with `install()`. Unset, every sentence stays English (and
the bot's functions say English too unless a language is active: `--json` runs in none). Finding codes and
evidence are never passed through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["N_", "_", "install", "ngettext"]

Gettext = Callable[[str], str]
Ngettext = Callable[[str, str, int], str]


def _english(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


@dataclass
class _Hook:
    gettext: Gettext = str
    ngettext: Ngettext = _english


_hook = _Hook()


def _(message: str) -> str:
    return _hook.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _hook.ngettext(singular, plural, count)


def N_(message: str) -> str:
    """Marks a sentence in a table for extraction; `_()` translates it when a Finding is made from it."""
    return message


def install(gettext: Gettext, ngettext: Ngettext) -> None:
    """Word the library's sentences with these functions from now on (the bot's, which follow its active language)."""
    _hook.gettext, _hook.ngettext = gettext, ngettext
