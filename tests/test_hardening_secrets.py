"""Secrets read from files, commands and logins never leak (issue 13, item 6).

A hostile IMAP server answers LOGIN with a NO that echoes the whole command, password included; a
hostile homeserver answers the login with a 403 that echoes the login body. The password, given by
`password_file` or `password_command`, must show as [secure] in the log, the room and monitor.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot import secrets
from bot.logs import setup_logging
from bot.monitor.core import mask_report
from checks import Finding, Report, Status, Target, TargetKind
from tests.fixtures.dnsserver import DnsServer
from tests.test_console import write_config

PASSWORD = 'Tr0ub4dor&3 "quoted" \\ secret'


class EchoingImap:
    """An IMAP server on loopback that refuses every LOGIN with a NO echoing the command line."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.seen: list[bytes] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EchoingImap:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n")
        while line := await reader.readline():
            self.seen.append(line)
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            verb = rest.split(b" ", 1)[0].upper()
            if verb == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            elif verb == b"LOGOUT":
                writer.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                break
            else:
                writer.write(tag + b" NO [AUTHENTICATIONFAILED] " + rest + b" rejected\r\n")
            await writer.drain()
        writer.close()


def test_an_imap_no_echoing_login_leaks_the_password_nowhere(tmp_path: Path, dns_server: DnsServer) -> None:
    secret_file = tmp_path / "fbl-password"
    secret_file.write_text(PASSWORD + "\n", encoding="utf-8")
    config = write_config(tmp_path, dns_server)
    with EchoingImap() as imap:
        with config.open("a", encoding="utf-8") as handle:
            handle.write(
                f'\n[feedback]\nhost = "127.0.0.1"\nport = {imap.port}\nsecurity = "plain"\n'
                f'user = "fbl@example.org"\npassword_file = "{secret_file}"\n'
            )
        command = [sys.executable, "-m", "bot.cli", "--log-level", "INFO", "run", "--console", "-c", str(config)]
        # Two runs: the console answers each line in its own task, so a !status on the same input could come
        # before the run it should show; the second run reads the stored state.
        ran = subprocess.run(
            command, input="!run complaints\n", capture_output=True, text=True, timeout=60, check=False
        )
        assert ran.returncode == 0, ran.stderr
        done = subprocess.run(command, input="!status\n", capture_output=True, text=True, timeout=60, check=False)
        assert any(b"LOGIN" in line for line in imap.seen), imap.seen
    assert done.returncode == 0, done.stderr
    done = subprocess.CompletedProcess(done.args, 0, ran.stdout + done.stdout, ran.stderr + done.stderr)
    # The main state file and its shards (monitor.states/), where the states are.
    files = [tmp_path / "state" / "monitor.json", *sorted((tmp_path / "state" / "monitor.states").iterdir())]
    state = "".join(file.read_text(encoding="utf-8") for file in files)
    assert "rejected" in done.stdout and "rejected" in done.stderr and "rejected" in state  # the NO got through
    for where in (done.stdout, done.stderr, state):
        assert "Tr0ub4dor" not in where
        assert secrets.MASK in where


class EchoingHomeserver(BaseHTTPRequestHandler):
    """A homeserver that answers every login with a 403 echoing the request body."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = json.dumps({"errcode": "M_FORBIDDEN", "error": f"bad login: {body.decode()}"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def echoing_homeserver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingHomeserver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("source", ["password_file", "password_command"])
def test_a_homeserver_403_echoing_the_login_body_leaks_nothing(
    tmp_path: Path, echoing_homeserver: str, source: str
) -> None:
    secret_file = tmp_path / "matrix-password"
    secret_file.write_text(PASSWORD, encoding="utf-8")
    value = str(secret_file) if source == "password_file" else f"cat {secret_file}"
    config = tmp_path / "repbot.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n\n[matrix]\nhomeserver = "{echoing_homeserver}"\n'
        f'user_id = "@repbot:localhost"\n{source} = "{value}"\npickle_key_file = "{secret_file}"\n'
        'admins = ["@alice:localhost"]\n',
        encoding="utf-8",
    )
    config.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--log-level", "DEBUG", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "bad login" in done.stderr and "Tr0ub4dor" not in done.stderr, done.stderr
    assert secrets.MASK in done.stderr


def test_findings_quoting_a_secret_are_masked_and_log_lines_too(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-from-a-command"
    secrets.register(secret)
    finding = Finding("x", "mailbox", Status.UNKNOWN, f'NO LOGIN u "{secret}"', {"reply": [f"{secret}%21"]})
    masked = mask_report(Report(Target(TargetKind.DOMAIN, "example.org"), (finding,)))
    assert secret not in json.dumps(masked.to_json())
    stream = __import__("io").StringIO()
    setup_logging("INFO", "json", stream)
    logging.getLogger("repbot.test").info("sending %s", json.dumps({"password": secret}))
    assert secret not in stream.getvalue() and secrets.MASK in stream.getvalue()
