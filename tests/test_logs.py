"""Structured logs: JSON lines that parse, one line per check run with its duration, and no secrets."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.logs import redact, setup_logging
from tests.fixtures.dnsserver import DnsServer

DQS_KEY = "dqs0key0that0must0never0be0logged"
PASSWORD = "matrix-password-never-logged"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_parse_and_carry_extra_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    redact("hunter2-but-longer")
    log = logging.getLogger("repbot.test")
    log.info("ran %s in %.2f s", "blocklists", 0.5, extra={"job": "blocklists", "duration": 0.5})
    log.debug("not at INFO")
    logging.getLogger("nio.client").info("nio chatter stays out")
    log.warning("the password is hunter2-but-longer")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR"]
    assert lines[0]["message"] == "ran blocklists in 0.50 s"
    assert (lines[0]["job"], lines[0]["duration"], lines[0]["logger"]) == ("blocklists", 0.5, "repbot.test")
    assert lines[1]["message"] == "the password is [secure]"
    assert "ValueError: boom" in lines[2]["traceback"]


def test_a_console_run_logs_json_with_durations_and_never_a_secret(
    tmp_path: Path, dns_server_session: DnsServer
) -> None:
    dns_server_session.add("2.0.0.127.zen.spamhaus.org", "A", "127.0.0.2")
    config = tmp_path / "repbot.toml"
    config.write_text(
        f"""
[dns]
nameservers = ["{dns_server_session.address}"]
timeout = 0.5

[dnsbl]
dqs_key = "{DQS_KEY}"

[monitor]
ips = ["127.0.0.2"]

[state]
dir = "{tmp_path / "state"}"

[matrix]
homeserver = "http://127.0.0.1:9"
user_id = "@repbot:localhost"
password = "{PASSWORD}"
""",
        encoding="utf-8",
    )
    config.chmod(0o600)
    command = [sys.executable, "-m", "bot.cli", "--log-level", "INFO", "--log-format", "json"]
    done = subprocess.run(
        [*command, "run", "--console", "-c", str(config)],
        input="!run blocklists\n!status\n!ping\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pong" in done.stdout
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert records, "no log lines at INFO"
    runs = [r for r in records if r.get("job") == "blocklists"]
    assert len(runs) == 1 and isinstance(runs[0]["duration"], float) and runs[0]["findings"] > 0
    assert all(r["level"] in ("INFO", "WARNING") for r in records), records
    for secret in (DQS_KEY, PASSWORD):
        assert secret not in done.stderr and secret not in done.stdout
