"""Hostile and careless command lines (issue 13): bounded durations, the admin check before parsing, the guard."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.commands.registry import Argument, Call, Registry
from bot.durations import MAX_DURATION, parse_duration
from bot.render import Rendered, plain_and_html
from tests.fixtures.dnsserver import DnsServer
from tests.test_commands import ADMIN, STRANGER, make_bot, said
from tests.test_console import run_console, write_config


@pytest.mark.parametrize("text", ["1000000000d", "99999999999999999999s", "999999999d", "3651d", "1" * 4000 + "s"])
def test_huge_durations_are_a_value_error_never_an_overflow(text: str) -> None:
    with pytest.raises(ValueError, match=r"too long|not a duration"):
        parse_duration(text)


def test_durations_up_to_the_bound_still_parse() -> None:
    assert parse_duration("3650d") == MAX_DURATION
    assert parse_duration("1h30m") == timedelta(minutes=90)
    with pytest.raises(ValueError, match="at most 1 min"):
        parse_duration("90s", maximum=timedelta(minutes=1))


@pytest.mark.parametrize("line", ["!mute X 1000000000d", "!mute X 99999999999999999999s", "!mute X 999999999d"])
async def test_a_huge_mute_gets_a_usage_reply(line: str) -> None:
    bot, transport = make_bot()
    await bot.handle(said(ADMIN, line))
    assert len(transport.replies) == 1
    assert "too long" in transport.replies[0] and "usage: !mute <what> <duration>" in transport.replies[0]


async def test_a_strangers_arguments_are_never_parsed() -> None:
    registry = Registry()
    parsed: list[str] = []

    def spy(text: str) -> str:
        parsed.append(text)
        raise OverflowError("never reached for a stranger")

    @registry.command("mute", help="admin only", args=[Argument("what", spy)])
    async def mute(call: Call) -> Rendered:
        return plain_and_html("muted")

    bot, transport = make_bot(registry)
    await bot.handle(said(STRANGER, "!mute 1000000000d"))
    assert parsed == [] and transport.sent == [] and transport.events == []
    await bot.handle(said(ADMIN, "!mute 1000000000d"))
    assert parsed == ["1000000000d"]
    assert transport.replies == ["what: never reached for a stranger — usage: !mute <what>"]


async def test_no_exception_anywhere_in_a_command_ends_the_bot(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()

    def broken(text: str) -> str:
        raise RuntimeError("parser bug")

    @registry.command("odd", help="a parser with a bug", args=[Argument("x", broken)])
    async def odd(call: Call) -> Rendered:
        return plain_and_html("never")

    @registry.command("ping", help="pong")
    async def ping(call: Call) -> Rendered:
        return plain_and_html("pong")

    bot, transport = make_bot(registry)
    await bot.handle(said(ADMIN, "!odd 1"))  # must not raise
    assert any(record.exc_info for record in caplog.records)

    async def refusing_send(room: str, message: Rendered, **kwargs: object) -> str:
        raise ConnectionResetError("the homeserver hung up")

    original = transport.send
    transport.send = refusing_send  # type: ignore[method-assign]
    await bot.handle(said(ADMIN, "!ping", "$p1"))  # must not raise either
    transport.send = original  # type: ignore[method-assign]
    await bot.handle(said(ADMIN, "!ping", "$p2"))
    assert transport.replies == ["pong"]


def test_the_console_survives_a_huge_mute(tmp_path: Path, dns_server: DnsServer) -> None:
    done = run_console(
        write_config(tmp_path, dns_server), ["!mute X 1000000000d", "!mute X 99999999999999999999s", "!ping"]
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if "too long" in line] and lines[-1] == "pong"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("line", ["!check fe80::1%eth0", "!check [fe80::1%25]"])
async def test_targets_the_checks_cannot_take_are_refused_at_parse_time(line: str) -> None:
    bot, transport = make_bot()
    await bot.handle(said(ADMIN, line))
    assert len(transport.replies) == 1 and "usage: !check <target>" in transport.replies[0]
    assert transport.events == ["send"]  # refused before anything ran


def test_the_console_answers_bad_bytes_with_an_error_line_and_goes_on(tmp_path: Path, dns_server: DnsServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run", "--console", "-c", str(write_config(tmp_path, dns_server))],
        input=b"!ping \xff\xfe\n\xc3\n!ping\n",
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "line 1 ignored: byte 0xff at column 7 is not valid utf-8",
        "line 2 ignored: byte 0xc3 at column 1 is not valid utf-8",
        "pong",
    ]
    assert b"Traceback" not in done.stderr
