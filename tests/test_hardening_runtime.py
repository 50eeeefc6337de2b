"""Signals and ports during start-up (issue 13, item 15), with `repbot run` as a subprocess.

The homeserver is a loopback port nobody listens on, so the login is in its backoff when the signal
comes; the metrics port is one this test holds.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import ROOT
from tests.test_console import run_console

BACKOFF_LINE = "unreachable"


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port  # closed again: connecting is refused at once


def _matrix_config(tmp_path: Path, port: int) -> Path:
    secret = tmp_path / "password"
    secret.write_text("a password for nobody", encoding="utf-8")
    config = tmp_path / "repbot.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n\n[matrix]\nhomeserver = "http://127.0.0.1:{port}"\n'
        f'user_id = "@repbot:localhost"\npassword_file = "{secret}"\npickle_key_file = "{secret}"\n'
        'admins = ["@alice:localhost"]\n',
        encoding="utf-8",
    )
    return config


def _wait_for(process: subprocess.Popen[str], log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} early:\n{log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"{text!r} never logged:\n{log.read_text()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_login_backoff_is_a_clean_stop(
    tmp_path: Path, closed_port: int, signum: signal.Signals
) -> None:
    log = tmp_path / "bot.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "-c", str(_matrix_config(tmp_path, closed_port))],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        _wait_for(process, log, BACKOFF_LINE)
        process.send_signal(signum)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "Unclosed client session" not in text and "Traceback" not in text, text


def test_a_metrics_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "repbot.toml"
        config.write_text(
            f'[state]\ndir = "{tmp_path / "state"}"\n\n[metrics]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8"
        )
        done = run_console(config, ["!ping"])
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "cannot listen" in lines[0], done.stderr


def test_sigterm_stops_the_console_while_it_waits_for_input(tmp_path: Path) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n', encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--console", "-c", str(config)],
        cwd=ROOT,
        stdin=subprocess.PIPE,  # open, and nobody types: the read blocks
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        assert "type !help" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
