"""A Spanish-speaking operator's session, end to end: `repbot run --console` with `[bot] language = "es"` against
the local DNS server, and the digest and alert wording the monitor posts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.i18n import use_language
from bot.monitor.alerts import Event, digest_message, event_line
from bot.monitor.state import AlertState, HistoryEntry
from tests.fixtures.dnsserver import DnsServer
from tests.test_cli import LISTED_IP, ROOT, world
from tests.test_console import run_console, write_config

__all__ = ["world"]  # the fixture, shared with test_cli


def _spanish_config(tmp_path: Path, dns: DnsServer) -> Path:
    return write_config(tmp_path, dns, head='[bot]\nlanguage = "es"\n')


def test_a_console_session_in_spanish(tmp_path: Path, dns_server: DnsServer) -> None:
    dns_server.add("2.0.0.127.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("1.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    config = _spanish_config(tmp_path, dns_server)
    # Each line is answered in its own task, so the lines whose order matters go in sessions of their own.
    sessions = [
        ["!help", "!check 192.0.2.1", "!check bad..example", "!status", "!nope"],
        ["!run blocklists"],
        ["!status"],
    ]
    runs = [run_console(config, lines, timeout=120) for lines in sessions]
    for done in runs:
        assert done.returncode == 0, done.stderr
    out = "\n".join(done.stdout for done in runs)
    # !help: the generated table, each command's help in Spanish
    assert "!check <target> [--selector S] — comprueba ahora una IP o un dominio: listas de bloqueo" in out
    assert "!language [language] — el idioma en que hablo en esta sala" in out
    # !check of a listed IP: the verdict, the status words and the finding's summary and advice
    assert "192.0.2.1 (ip): ✗ fallo —" in out
    assert "zen.spamhaus.org: en la lista de bloqueo Spamhaus ZEN: 127.0.0.2" in out
    assert "Detalles y solicitud de baja: https://check.spamhaus.org/" in out
    # a bad target: the parser's reason and the usage
    assert "target: 'bad..example' tiene una etiqueta vacía (dos puntos seguidos" in out
    assert "— uso: !check <target> [--selector S]" in out
    # !status before and after a run, and the alert the run posts into the room
    assert "aún no hay resultados: la primera pasada programada no ha terminado (prueba !run)" in out
    assert "repbot: 1 cambio\n✗ 192.0.2.1: nueva inclusión en zen.spamhaus.org — en la lista de bloqueo" in out
    assert "ejecutado blocklists: 1 change(s)" not in out
    assert "(las alertas van a las salas de alertas)" in out
    # the second !status runs in a later session: its run was 0 or 1 s before, as the clock ticks
    assert re.search(r"✗ 192\.0\.2\.1: fallo, 17 comprobaciones, última pasada hace [01] s", out), out
    assert "orden desconocida !nope: prueba !help" in out
    for english in ("listed in", "no results yet", "unknown command", "usage:", "changes", "checks,"):
        assert english not in out, english
    assert not any("Traceback" in done.stderr for done in runs)


NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _state(status: str, since: timedelta) -> AlertState:
    return AlertState.from_json({"key": f"192.0.2.1|dnsbl|zen.spamhaus.org|{status}", "target": "192.0.2.1",
            "check": "dnsbl", "subject": "zen.spamhaus.org", "status": status, "since": (NOW - since).isoformat(),
            "summary": "en la lista de bloqueo Spamhaus ZEN: 127.0.0.2"})  # fmt: skip


def test_the_digest_in_spanish() -> None:
    change = HistoryEntry.from_json({"at": (NOW - timedelta(hours=3)).isoformat(), "kind": "problem",
              "target": "192.0.2.1", "check": "dnsbl", "subject": "zen.spamhaus.org", "muted": True})  # fmt: skip
    with use_language("es"):
        clear = digest_message([_state("ok", timedelta(days=1))], [], NOW).plain
        wrong = digest_message([_state("fail", timedelta(days=3, hours=4))], [change], NOW).plain
    assert clear == "✓ resumen diario de repbot: todo en orden (1 comprobación en 1 objetivo)."
    assert wrong.startswith("resumen diario de repbot: 1 problema, 1 cambio en 24 h\n")
    assert "✗ 192.0.2.1 dnsbl zen.spamhaus.org desde hace 3 d 4 h: en la lista de bloqueo" in wrong
    assert "cambios:\n  2026-12-01T06:00 problema 192.0.2.1 zen.spamhaus.org (silenciada)" in wrong


def test_alerts_and_resolutions_in_spanish() -> None:
    base = Event("problem", "192.0.2.1", "dnsbl", "zen.spamhaus.org", "fail", "…", at=NOW.isoformat())
    with use_language("es"):
        resolved = event_line(replace(base, kind="resolved", status="ok", lasted=timedelta(days=2, hours=1)))
        blind = event_line(replace(base, kind="cannot-check", status="unknown", since=NOW.isoformat()))
        again = event_line(replace(base, kind="checking-again", status="ok", lasted=timedelta(minutes=45)))
    assert resolved == "✓ 192.0.2.1: retirada de zen.spamhaus.org tras 2 d 1 h — …"
    assert blind == "? no puedo comprobar dnsbl 192.0.2.1 (zen.spamhaus.org) desde 2026-12-01 09:00 UTC: …"
    assert again == "✓ vuelvo a comprobar dnsbl 192.0.2.1 (zen.spamhaus.org) tras 45 min"


def _repbot_in(language: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env={**env, "LANG": language},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_repbot_check_speaks_the_environments_language_and_json_stays_english(world: DnsServer) -> None:
    query = ("check", LISTED_IP, "--nameserver", world.address, "--timeout", "1")
    text = _repbot_in("es_ES.UTF-8", *query)
    assert f"{LISTED_IP} (ip): ✗ fallo —" in text.stdout
    assert "en la lista de bloqueo Spamhaus ZEN" in text.stdout
    assert "listed in" not in text.stdout
    data = json.loads(_repbot_in("es_ES.UTF-8", *query, "--json").stdout)
    (target,) = data if isinstance(data, list) else data["targets"]
    zen = next(f for f in target["findings"] if f["subject"] == "zen.spamhaus.org")
    assert (zen["status"], zen["summary"][:25]) == ("fail", "listed in Spamhaus ZEN: 1")
    assert "ip): ✗ fail —" in _repbot_in("C.UTF-8", *query).stdout
    bad = _repbot_in("es_MX.UTF-8", "check", "a..b")
    assert "tiene una etiqueta vacía" in bad.stderr + bad.stdout


def test_language_is_chosen_per_room_and_kept(tmp_path: Path, dns_server: DnsServer) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text(f'[dns]\nnameservers = ["{dns_server.address}"]\n[state]\ndir = "{tmp_path / "state"}"\n')
    lines = ["!language", "!language es", "!nope", "!language klingon", "!language"]
    first = run_console(config, lines)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "this room speaks English (available: en, es)",
        "a partir de ahora hablo español en esta sala",
        "orden desconocida !nope: prueba !help",
        "language: unsupported language 'klingon'; one of en, es — uso: !language [language]",
        "en esta sala hablo español (disponibles: en, es)",
    ]
    again = run_console(config, ["!nope", "!language en", "!nope"])  # kept in the state, across a restart
    assert again.stdout.splitlines() == [
        "orden desconocida !nope: prueba !help",
        "from now on I speak English in this room",
        "unknown command !nope: try !help",
    ]


def test_config_check_speaks_the_environments_language(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[dns]\ntimeout = -1\nnamservers = []\n[bot]\nlanguage = "fr"\n', encoding="utf-8")
    done = _repbot_in("es_ES.UTF-8", "config", "check", "-c", str(bad))
    assert done.returncode == 1
    assert "3 problemas en la configuración:" in done.stdout
    assert "dns.timeout: no puede ser negativo, pero hay -1" in done.stdout
    assert "dns.namservers: clave desconocida (¿querías decir 'nameservers'?)" in done.stdout
    assert "bot.language: se esperaba uno de en, es, pero hay 'fr'" in done.stdout
    english = _repbot_in("C", "config", "check", "-c", str(bad))
    assert "dns.namservers: unknown key (did you mean 'nameservers'?)" in english.stdout
