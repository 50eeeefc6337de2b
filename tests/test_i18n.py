"""The catalogs: compiled and current, complete for every message the code marks, placeholders intact; the
language chosen by config, room and environment; numbers, durations and times through Babel."""

from __future__ import annotations

import io
import json
import string
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from bot import i18n
from bot.config.loader import ConfigError, parse_config
from bot.durations import format_ago as ago
from bot.i18n import _, environment_language, ngettext, number, parse_language, timestamp, use_language

ROOT = Path(__file__).resolve().parents[1]
CATALOGS = sorted(i18n.LOCALE_DIR.glob(f"*/LC_MESSAGES/{i18n.DOMAIN}.po"))
# The same keywords as the docs' `pybabel extract -k N_` (Babel's defaults plus N_).
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}


def _read(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle)


def _extracted() -> dict[str | tuple[str, ...], str]:
    """Every message id the code marks, with where it is, as `pybabel extract` finds them."""
    found: dict[str | tuple[str, ...], str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map=[("bot/**.py", "python"), ("checks/**.py", "python")], keywords=KEYWORDS
    ):
        key = message if isinstance(message, str) else tuple(m for m in message if m)
        found[key] = f"{filename}:{lineno}"
    return found


def _singular(key: object) -> str:
    return str(key[0] if isinstance(key, tuple | list) else key)


def _fields(text: object) -> set[str]:
    assert isinstance(text, str)
    return {f"{name}!{conv}" for _lit, name, _spec, conv in string.Formatter().parse(text) if name is not None}


def test_there_is_a_spanish_catalog() -> None:
    assert "es" in i18n.LANGUAGES and i18n.LANGUAGES[0] == "en"
    assert [path.parts[-3] for path in CATALOGS] == [lang for lang in i18n.LANGUAGES if lang != "en"]


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_each_catalog_compiles_and_the_shipped_mo_is_current(po: Path) -> None:
    compiled = io.BytesIO()
    write_mo(compiled, _read(po))
    assert po.with_suffix(".mo").read_bytes() == compiled.getvalue(), "run pybabel compile (docs/i18n.md)"


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_every_marked_message_is_translated_none_fuzzy_none_empty(po: Path) -> None:
    catalog = _read(po)
    entries = {_singular(message.id): message for message in catalog if message.id}
    missing = {where: key for key, where in _extracted().items() if _singular(key) not in entries}
    assert not missing, f"not in {po}: {missing}"
    fuzzy = [message.id for message in entries.values() if message.fuzzy]
    empty = [
        message.id
        for message in entries.values()
        if not all(message.string if isinstance(message.string, tuple) else [message.string])
    ]
    assert not fuzzy and not empty, (fuzzy, empty)


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_the_placeholders_of_every_translation_match_the_english(po: Path) -> None:
    for message in _read(po):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set().union(*(_fields(text) for text in ids))
        for text in strings:
            assert _fields(text) == wanted, f"{message.id!r}: {text!r}"


def test_english_is_the_source_and_the_fallback() -> None:
    assert _("pong") == "pong"
    with use_language("es"):
        assert (
            _("sorry, I only take commands from my admins") == "lo siento, solo acepto órdenes de mis administradores"
        )
        assert _("a sentence no catalog has") == "a sentence no catalog has"
        assert _("") == ""  # an empty advice stays empty, never the catalog's header
    with use_language("xx"):
        assert _("unknown option --{name}") == "unknown option --{name}"


def test_plurals_follow_the_language() -> None:
    assert ngettext("{count} checks", "{count} checks", 1) == "{count} checks"
    with use_language("es"):
        assert ngettext("{count} checks", "{count} checks", 1234).format(count=number(1234)) == "1.234 comprobaciones"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "en"),
        ({"LANG": "es_ES.UTF-8"}, "es"),
        ({"LANG": "es_MX.UTF-8", "LC_ALL": "C"}, "en"),
        ({"LC_ALL": "es_AR.UTF-8", "LANG": "en_US.UTF-8"}, "es"),
        ({"LC_MESSAGES": "es_CL", "LANG": "en_US"}, "es"),
        ({"LANGUAGE": "fr:es", "LANG": "en_US"}, "es"),
        ({"LANGUAGE": "fr", "LANG": "es_ES"}, "es"),
        ({"LANG": "de_DE.UTF-8"}, "en"),
        ({"LANG": "POSIX"}, "en"),
    ],
)
def test_the_cli_reads_the_environment_in_gettext_order(environ: dict[str, str], expected: str) -> None:
    assert environment_language(environ) == expected


def test_parse_language() -> None:
    assert parse_language("ES") == "es"
    assert parse_language("es_ES.UTF-8") == "es"
    with pytest.raises(ValueError, match="unsupported language 'klingon'"):
        parse_language("klingon")


def test_numbers_durations_and_times_in_the_operators_locale() -> None:
    moment = datetime(2026, 12, 1, 13, 5, tzinfo=UTC)
    with use_language("es"):
        assert number(1234) == "1.234"
        assert ago(timedelta(days=3, hours=4, minutes=10)) == "hace 3 d 4 h"
        assert ago(timedelta(minutes=45)) == "hace 45 min"
        assert timestamp(moment, ZoneInfo("Europe/Madrid")) == "2026-12-01 14:05 CET"
    assert number(1234) == "1,234"
    assert ago(timedelta(days=3, hours=4)) == "3 d 4 h ago"  # English as it always was


def test_the_config_names_the_language_and_refuses_an_unknown_one() -> None:
    assert parse_config({}).language == "en"
    assert parse_config({"bot": {"language": "es"}}).language == "es"
    with pytest.raises(ConfigError, match=r"bot\.language: expected one of en, es, got 'fr'"):
        parse_config({"bot": {"language": "fr"}})


def test_the_data_files_sentences_are_in_the_generated_list() -> None:
    """checks/data_words.py is what puts ndr.toml's and zones.toml's sentences in the catalog: it must be current."""
    import importlib.util

    from checks.data_words import MESSAGES

    spec = importlib.util.spec_from_file_location("data_words", ROOT / "scripts" / "data_words.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert list(MESSAGES) == script.collect(), "run: python scripts/data_words.py, then update the catalog"


def test_the_check_library_writes_numbers_as_before_until_the_bot_installs_its_own() -> None:
    """Alone, checks.i18n writes what its f-strings wrote; the bot's functions follow the language, and importing
    them loads no Babel (`repbot check --json` must not pay for it)."""
    script = (
        "import json, sys\n"
        "from checks.i18n import number, percent\n"
        "plain = [number(2089), number(2.0), number(2.5, 1), percent(0.004, 2), percent(0.05)]\n"
        "import bot.context\n"
        "from bot.i18n import use_language\n"
        "loaded = 'babel' in sys.modules\n"
        "with use_language('es'):\n"
        "    spanish = [number(2089), number(2.0), number(100.0, 1), percent(0.004, 2), percent(0.05)]\n"
        "print(json.dumps([plain, loaded, spanish, number(2089), percent(0.004, 2)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    plain, loaded, spanish, *english = json.loads(done.stdout)
    assert plain == ["2089", "2", "2.5", "0.40%", "5%"]
    assert not loaded
    assert spanish == ["2.089", "2", "100,0", "0,40\N{NO-BREAK SPACE}%", "5\N{NO-BREAK SPACE}%"]
    assert english == ["2,089", "0.40%"]  # the bot's English groups thousands, as its replies do
