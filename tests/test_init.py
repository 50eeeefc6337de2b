"""`repbot init`: flags for automation, answers on stdin, mode 0600 from creation, and a config that checks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from bot.cli import main


def _repbot(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_non_interactive_flags_write_a_0600_config_that_checks(tmp_path: Path) -> None:
    output = tmp_path / "repbot.toml"
    old = os.umask(0o022)  # a usual umask: the file must still not be readable by others
    try:
        code = main(
            ["init", "--non-interactive", "--output", str(output), "--homeserver", "https://matrix.example.org/",
             "--user-id", "@repbot:example.org", "--password-file", "/run/credentials/repbot.service/matrix-password",
             "--admin", "@alice:example.org", "--room", "#mail:example.org", "--ip", "192.0.2.1",
             "--ip", "2001:DB8::1", "--domain", "Example.ORG", "--state-dir", str(tmp_path / "state")]
        )  # fmt: skip
    finally:
        os.umask(old)
    assert code == 0
    assert _mode(output) == 0o600
    data = tomllib.loads(output.read_text())
    assert data["monitor"] == {"ips": ["192.0.2.1", "2001:db8::1"], "domains": ["example.org"]}
    matrix = data["matrix"]
    assert matrix["homeserver"] == "https://matrix.example.org"
    assert matrix["password_file"] == "/run/credentials/repbot.service/matrix-password"
    assert matrix["admins"] == ["@alice:example.org"] and matrix["alert_rooms"] == ["#mail:example.org"]
    checked = _repbot("config", "check", "-c", str(output))
    assert checked.returncode == 0 and checked.stdout.strip().endswith(": ok"), checked


def test_it_refuses_to_overwrite_without_force_and_names_missing_flags(tmp_path: Path) -> None:
    output = tmp_path / "repbot.toml"
    output.write_text("# mine\n")
    done = _repbot("init", "--non-interactive", "--console", "--ip", "192.0.2.1", "-o", str(output))
    assert done.returncode == 3 and "--force" in done.stderr
    assert output.read_text() == "# mine\n"
    done = _repbot("init", "--non-interactive", "--console", "--ip", "192.0.2.1", "-o", str(output), "--force")
    assert done.returncode == 0, done.stderr
    assert "[matrix]" not in output.read_text() and _mode(output) == 0o600
    missing = _repbot("init", "--non-interactive", "-o", str(tmp_path / "other.toml"), "--ip", "192.0.2.1")
    assert missing.returncode == 3
    assert "missing --homeserver, --user-id, --password-file or --password-command, --admin" in missing.stderr
    bad = _repbot("init", "--non-interactive", "--console", "--ip", "not-an-ip", "-o", str(tmp_path / "x.toml"))
    assert bad.returncode == 3 and "not-an-ip" in bad.stderr and not (tmp_path / "x.toml").exists()


def test_interactive_answers_on_stdin(tmp_path: Path) -> None:
    answers = "\n".join(
        [
            "matrix.example.org",  # not a URL: asked again
            "https://matrix.example.org",
            "@repbot:example.org",
            "a long inline password",
            "@alice:example.org",
            "",  # no room yet
            "192.0.2.1 198.51.100.7",
            "example.org",
        ]
    )
    done = _repbot("init", "-o", "repbot.toml", stdin=answers + "\n", cwd=tmp_path)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "give the homeserver's URL" in done.stdout
    assert "config check ok" in done.stdout and "next: repbot run -c repbot.toml" in done.stdout
    output = tmp_path / "repbot.toml"
    assert _mode(output) == 0o600
    data = tomllib.loads(output.read_text())
    assert data["matrix"]["password"] == "a long inline password"
    assert data["monitor"]["ips"] == ["192.0.2.1", "198.51.100.7"]
    # Inline secret, mode 0600: the check (and so `repbot run`) accepts it.
    assert _repbot("config", "check", "-c", str(output)).returncode == 0


def test_interactive_console_only_and_eof_is_an_error(tmp_path: Path) -> None:
    done = _repbot("init", "-o", "c.toml", stdin="\n\nexample.org\n", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "next: repbot run -c c.toml --console" in done.stdout
    cut_short = _repbot("init", "-o", "d.toml", stdin="https://matrix.example.org\n", cwd=tmp_path)
    assert cut_short.returncode == 3 and "no answer" in cut_short.stderr
    assert not (tmp_path / "d.toml").exists()


def test_the_wizard_speaks_spanish(tmp_path: Path) -> None:
    answers = (
        "matrix.example.org\nhttps://matrix.example.org\nrepbot\n@repbot:example.org\n\npw\n@alice:example.org\n\n"
    )
    spanish = {"LANG": "es_ES.UTF-8", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""}
    env = {**os.environ, **spanish, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "init", "-o", "r.toml"], input=answers + "192.0.2.1\n\n",
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    assert "URL del servidor Matrix (p. ej. https://matrix.example.org; vacío: usar la terminal como sala): " in out
    assert "indica la URL del servidor Matrix" in out and "'repbot' no es un id de usuario Matrix" in out
    assert "el bot necesita una contraseña para iniciar sesión" in out
    assert "r.toml: escrito (modo 0600), config check correcto" in out and "a continuación: repbot run -c r.toml" in out
    for english in ("Homeserver URL", "give the", "is not a Matrix", "needs a password", "written", "next:"):
        assert english not in out, english
    again = subprocess.run([sys.executable, "-m", "bot.cli", "init", "-o", "r.toml"], capture_output=True, text=True,
                           timeout=60, check=False, cwd=tmp_path, env=env)  # fmt: skip
    assert again.returncode == 3 and "r.toml ya existe: usa --force para reemplazarlo" in again.stderr
