"""`repbot` for a Spanish-speaking operator (LANG=es_ES.UTF-8): every subcommand's --help, argparse's own words and
its errors, in Spanish; and English as it always was when the environment asks for none."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from bot.config.loader import parse_config
from bot.i18n import use_language
from bot.runtime import start_line
from tests.fixtures.dnsserver import DnsServer
from tests.test_cli import ROOT
from tests.test_dnsbl import publish_test_points

SUBCOMMANDS = [
    [], ["check"], ["spf"], ["ticket"], ["lists"], ["traffic"], ["run"], ["identity"], ["reports"], ["config"],
    ["config", "check"], ["config", "example"], ["init"],
]  # fmt: skip
ARGPARSE_ENGLISH = ("usage:", "positional arguments", "options:", "show this help message and exit")


@pytest.fixture
def spanish(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _our_english_help() -> set[str]:
    """Every help and description text we wrote, as English says it."""
    with use_language("en"):
        parsers = list(_parsers(build_parser()))
    texts = {parser.description for parser in parsers if parser.description}
    texts |= {action.help for parser in parsers for action in parser._actions if action.help}
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                texts |= {choice.help for choice in action._choices_actions if choice.help}
    return {text for text in texts if text}


def _help(capsys: pytest.CaptureFixture[str], words: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "repbot")
def test_every_help_is_in_spanish(spanish: None, capsys: pytest.CaptureFixture[str], words: list[str]) -> None:
    out = _help(capsys, words)
    assert out.startswith(f"uso: repbot {' '.join(words)}".rstrip()), out
    assert "opciones:" in out and "muestra este mensaje de ayuda y sale" in out
    for english in (*ARGPARSE_ENGLISH, *_our_english_help()):
        assert english not in out, english


def test_the_top_help_names_each_command_in_spanish(spanish: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys, [])
    assert "Vigila la reputación de un servidor de correo y avisa cuando el correo deja de" in out
    assert "argumentos posicionales:" in out and "comprueba ahora IP y dominios" in out
    assert "muestra la versión y sale" in out


@pytest.mark.parametrize(
    ("args", "spanish_words"),
    [
        (["check"], "repbot check: se requieren los siguientes argumentos: TARGET (consulta repbot check --help)"),
        (["nope"], "repbot: argumento COMMAND: opción no válida: 'nope' (elige entre 'check', "),
        (["check", "--timeout", "x", "192.0.2.1"], "argumento --timeout: 'x' no es un número"),
        (["check", "--timeout", "-1", "192.0.2.1"], "argumento --timeout: debe ser mayor que 0"),
        (["lists", "--bogus"], "repbot: argumentos no reconocidos: --bogus"),
        (["check", "--selector"], "argumento --selector: se esperaba un argumento"),
    ],
)
def test_argument_errors_in_spanish(spanish: None, capsys: pytest.CaptureFixture[str], args: list[str],
                                    spanish_words: str) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 3
    err = capsys.readouterr().err
    assert spanish_words in err, err
    for english in ("required", "invalid choice", "unrecognized", "expected", "is not a number", "see repbot"):
        assert english not in err, english


def test_english_stays_english_and_a_real_process_speaks_spanish() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LANG", "LC_"))}

    def repbot(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, check=False, env=env | extra)  # fmt: skip

    english = repbot("check", "--help", LANG="C")
    assert english.stdout.startswith("usage: repbot check") and "show this help message and exit" in english.stdout
    assert "a DKIM selector to check" in english.stdout
    assert "the following arguments are required: TARGET (see repbot check --help)" in repbot("check").stderr
    spanish = repbot("--help", LANG="es_ES.UTF-8")
    assert spanish.stdout.startswith("uso: repbot") and "opciones:" in spanish.stdout, spanish.stderr


def test_repbot_lists_in_spanish(spanish: None, capsys: pytest.CaptureFixture[str], dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.set_behaviour("*.psbl.surriel.com", "servfail")
    assert main(["lists", "--nameserver", dns_server.address, "--timeout", "1"]) == 0
    out = capsys.readouterr().out
    head, *rows = out.splitlines()
    assert head.split() == ["zona", "tipo", "estado"], head
    by_zone = {row.split()[0]: row for row in rows}
    assert by_zone["zen.spamhaus.org"].split()[1:3] == ["ip", "sana"]
    assert "inaccesible (SERVFAIL desde 127.0.0.1:" in by_zone["psbl.surriel.com"]
    assert "lista blanca" in by_zone["list.dnswl.org"] and "necesita-clave-dqs" in by_zone["zrd.spamhaus.org"]
    for english in ("zone", "kind", "health", "unreachable", "allow", "needs-dqs-key", " from 127."):
        assert english not in out, english
    assert main(["lists", "--nameserver", dns_server.address, "--timeout", "1", "--json"]) == 0
    assert '"health":"unreachable"' in capsys.readouterr().out  # JSON keeps its values


def test_the_console_says_its_first_line_in_the_configured_language() -> None:
    config = parse_config(
        {"bot": {"language": "es"}, "monitor": {"ips": ["192.0.2.1"], "domains": ["a.test", "b.test"]}}
    )
    assert (
        start_line(config) == "repbot en la consola como @operator:console, vigilando 1 IP y 2 dominios; escribe !help"
    )
    english = replace(config, language="en")
    assert start_line(english) == "repbot in the console as @operator:console, watching 1 IP and 2 domains; type !help"


def test_identity_and_an_unreadable_traffic_log_in_spanish(
    spanish: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text("[monitor]\n", encoding="utf-8")
    assert main(["identity", "-c", str(bare)]) == 1
    assert capsys.readouterr().out == f"no hay sección [matrix] en {bare}\n"
    config = tmp_path / "repbot.toml"
    config.write_text(f'[matrix]\nhomeserver = "http://127.0.0.1:9"\nuser_id = "@b:x"\npassword = "p"\n'
                      f'store_dir = "{tmp_path}"\n', encoding="utf-8")  # fmt: skip
    config.chmod(0o600)
    assert main(["identity", "-c", str(config)]) == 1
    assert "@b:x aún no tiene identidad de firma cruzada en " in capsys.readouterr().out
    assert main(["traffic", "--log", str(tmp_path / "missing.log")]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"repbot: no puedo leer {tmp_path / 'missing.log'}: "), err


def test_run_says_why_it_cannot_start_in_spanish(
    spanish: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("x = [\n", encoding="utf-8")
    assert main(["run", "-c", str(broken)]) == 1
    assert capsys.readouterr().err.startswith(f"repbot: {broken}: no es TOML válido: ")


def test_a_process_reading_reports_says_the_check_librarys_words_in_spanish(tmp_path: Path) -> None:
    # A process of its own: in the test session another test may have installed the translation already.
    junk = tmp_path / "junk.xml.gz"
    junk.write_bytes(bytes(range(256)) * 4)  # neither XML nor JSON nor gzip
    done = subprocess.run([sys.executable, "-m", "bot", "reports", str(junk)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "LANG": "es_ES.UTF-8", "LANGUAGE": ""})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"problema (error) {junk}: no es un informe DMARC (XML) ni un informe TLS (JSON)" in done.stdout, done.stdout
