"""The operator's language: gettext catalogs (bot/locale/<lang>/LC_MESSAGES/repbot.mo) bound to the active language,
and Babel for the numbers, durations and times that go with the words.

The active language is a context variable, so one reply in one room is worded in that room's language while
the scheduler speaks another room's: `use_language("es")` around the work. English is the source language
and the fallback: a message missing from a catalog is said in English, never dropped. Log lines, JSON,
finding codes and metrics never pass through here.
"""

from __future__ import annotations

import copy
import functools
import gettext
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babel.numbers import NumberPattern

__all__ = [
    "DOMAIN",
    "LANGUAGES",
    "LOCALE_DIR",
    "N_",
    "_",
    "active_language",
    "day_and_month",
    "environment_language",
    "language_name",
    "ngettext",
    "number",
    "parse_language",
    "percent",
    "time_of_day",
    "timestamp",
    "use_language",
]

DOMAIN = "repbot"
LOCALE_DIR = Path(__file__).with_name("locale")
SOURCE_LANGUAGE = "en"
# A third language is one more catalog directory: the list is what ships, read once.
LANGUAGES: tuple[str, ...] = (
    SOURCE_LANGUAGE,
    *sorted(mo.parents[1].name for mo in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")),
)
# The CLI's order, as gettext(3) reads it; LANGUAGE may list several, colon-separated.
ENVIRONMENT = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

_active: ContextVar[str] = ContextVar("repbot_language", default=SOURCE_LANGUAGE)


@functools.cache
def _catalog(language: str) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, LOCALE_DIR, [language], fallback=True)


def _(message: str) -> str:
    """`message` in the active language (English when the catalog lacks it); "" stays "" (gettext would give the
    catalog's header for it)."""
    return _catalog(_active.get()).gettext(message) if message else message


def ngettext(singular: str, plural: str, count: int) -> str:
    """The singular or plural form for `count`, by the active language's plural rule."""
    return _catalog(_active.get()).ngettext(singular, plural, count)


def N_(message: str) -> str:
    """Marks a message for extraction where it is declared (a command's help); `_()` translates it when said."""
    return message


def active_language() -> str:
    return _active.get()


@contextmanager
def use_language(language: str) -> Iterator[None]:
    """Everything said inside is said in `language` (a code from LANGUAGES; anything else is English)."""
    token = _active.set(language if language in LANGUAGES else SOURCE_LANGUAGE)
    try:
        yield
    finally:
        _active.reset(token)


def language_name(code: str) -> str:
    """A language's name in the active language: "español", "Spanish"."""
    from babel import Locale

    return str(Locale.parse(code).get_display_name(_active.get()) or code)


def parse_language(text: str) -> str:
    """A supported language code from what a person wrote ("es", "ES", "es_ES.UTF-8"); raises ValueError."""
    code = _normalise(text)
    if code not in LANGUAGES:
        raise ValueError(f"unsupported language {text[:20]!r}; one of {', '.join(LANGUAGES)}")
    return code


def _normalise(text: str) -> str:
    return text.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()


def environment_language(environ: Mapping[str, str] | None = None) -> str:
    """The language the CLI speaks: the first of LANGUAGE/LC_ALL/LC_MESSAGES/LANG that is set, as gettext does.

    LANGUAGE is a list tried in order; "C" and "POSIX" mean English, and so does a language we have no catalog for.
    """
    env = os.environ if environ is None else environ
    for name in ENVIRONMENT:
        value = env.get(name, "")
        if not value:
            continue
        for candidate in value.split(":") if name == "LANGUAGE" else [value]:
            code = _normalise(candidate)
            if code in ("c", "posix"):
                return SOURCE_LANGUAGE
            if code in LANGUAGES:
                return code
        if name != "LANGUAGE":
            return SOURCE_LANGUAGE  # LC_ALL and the rest name one locale: the first one set decides
    return SOURCE_LANGUAGE


# -- numbers, durations and times, in the active language's conventions ------------------------------------


def number(value: float, decimals: int | None = None) -> str:
    """1234 → "1,234" in English, "1.234" in Spanish; with `decimals`, exactly that many: (2.5, 2) → "2,50"."""
    if decimals is None:
        from babel.numbers import format_decimal  # Babel on first use: `repbot check --json` never needs it

        return format_decimal(value, locale=_active.get())
    return str(_pattern("decimal", _active.get(), decimals).apply(value, _active.get()))


def percent(ratio: float, decimals: int = 0) -> str:
    """A share with exactly `decimals` decimals: 0.004 → "0.40%" in English, "0,40 %" in Spanish (a no-break
    space, as the language writes it)."""
    return str(_pattern("percent", _active.get(), decimals).apply(ratio, _active.get()))


@functools.cache
def _pattern(kind: str, language: str, decimals: int) -> NumberPattern:
    """The language's own decimal or percent pattern with its fraction digits fixed (Babel's `format_percent`
    only takes a whole pattern, which would lose the language's sign placement and spacing)."""
    from babel import Locale

    locale = Locale.parse(language)
    pattern: NumberPattern = copy.copy((locale.decimal_formats if kind == "decimal" else locale.percent_formats)[None])
    pattern.frac_prec = (decimals, decimals)
    return pattern


def timestamp(moment: datetime, zone: tzinfo | None = None) -> str:
    """A date and 24-hour time in the operator's zone: "2026-12-01 14:05 CET" (the ISO date reads everywhere;
    the zone as the tz database abbreviates it, which no language translates)."""
    local = moment.astimezone(zone) if zone is not None else moment
    from babel.dates import format_datetime

    clock = format_datetime(local, "yyyy-MM-dd HH:mm", tzinfo=local.tzinfo, locale=_active.get())
    return f"{clock} {local.strftime('%Z')}".strip()


def time_of_day(moment: datetime, zone: tzinfo | None = None) -> str:
    """A 24-hour time in the operator's zone: "14:05"."""
    local = moment.astimezone(zone) if zone is not None else moment
    from babel.dates import format_datetime

    return format_datetime(local, "HH:mm", tzinfo=local.tzinfo, locale=_active.get())


def day_and_month(day: date) -> str:
    """A short date for an axis: "01 Dec" / "01 dic"."""
    from babel.dates import format_date

    return str(format_date(day, "dd MMM", locale=_active.get())).rstrip(".")
