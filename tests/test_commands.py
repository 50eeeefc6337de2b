"""The command table, help, usage, parsing, permissions and the rate limit, with a recording transport."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.app import INTERNAL_ERROR, WORKING, Bot, Permissions, RateLimiter
from bot.chat import strip_reply_fallback, user_matches
from bot.commands.catalog import REGISTRY
from bot.commands.registry import (
    Access,
    Argument,
    Call,
    Invocation,
    ParseFailure,
    Registry,
    Services,
)
from bot.config.loader import Config
from bot.context import build_context
from bot.render import Rendered, plain_and_html
from bot.transports.base import Incoming
from tests.helpers import RecordingTransport

ADMIN = "@alice:example.org"
STRANGER = "@mallory:evil.example"


def make_bot(
    registry: Registry = REGISTRY,
    admins: tuple[str, ...] = (ADMIN,),
    answer_strangers: bool = False,
    per_hour: int | None = 10,
    clock: list[float] | None = None,
) -> tuple[Bot, RecordingTransport]:
    transport = RecordingTransport()
    config = Config()
    services = Services(config, build_context(config), transport, registry, datetime.now(UTC))
    now = clock if clock is not None else [0.0]
    limiter = RateLimiter(per_hour, clock=lambda: now[0])
    return Bot(services, Permissions(admins, answer_strangers), limiter, registry), transport


def said(sender: str, body: str, event_id: str = "$cmd", thread: str | None = None) -> Incoming:
    return Incoming("!room:example.org", sender, body, event_id, thread)


# -- the table ------------------------------------------------------------------------------------


def test_the_shipped_table() -> None:
    assert set(REGISTRY.commands) >= {"check", "spf", "lists", "status", "ping", "help"}
    assert REGISTRY.commands["check"].usage() == "!check <target> [--selector S]"
    assert REGISTRY.commands["spf"].usage() == "!spf <domain> <ip>"
    assert REGISTRY.commands["check"].costly and not REGISTRY.commands["ping"].costly
    assert all(command.help for command in REGISTRY.commands.values())


def test_a_name_declared_twice_is_an_error() -> None:
    registry = Registry()

    @registry.command("x", help="first")
    async def first(call: Call) -> Rendered:
        return plain_and_html("1")

    with pytest.raises(ValueError, match="declared twice"):
        registry.command("x", help="again")(first)
    assert registry.commands["x"].help == "first"


def test_help_lists_every_command_and_help_cmd_gives_usage() -> None:
    listing = REGISTRY.help()
    for name in REGISTRY.commands:
        assert f"!{name}" in listing.plain
        assert f"!{name}" in listing.html
    one = REGISTRY.help("check")
    assert one.plain.startswith("!check <target> [--selector S]\n")
    assert "rate-limited" in one.plain
    assert REGISTRY.help("!spf").plain.startswith("!spf <domain> <ip>")
    assert REGISTRY.help("nope").plain == "unknown command !nope: try !help"


# -- parsing ----------------------------------------------------------------------------------------


def test_parse_arguments_and_options() -> None:
    parsed = REGISTRY.parse("!check Example.ORG --selector s1")
    assert isinstance(parsed, Invocation)
    assert parsed.command.name == "check"
    assert parsed.args == {"target": "example.org", "selector": "s1"}
    parsed = REGISTRY.parse("!CHECK --selector=s2 192.0.2.1")
    assert isinstance(parsed, Invocation) and parsed.args == {"target": "192.0.2.1", "selector": "s2"}


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("!check", "missing target — usage: !check <target> [--selector S]"),
        ("!check a b", "too many arguments (b) — usage: !check <target> [--selector S]"),
        ("!check example.org --colour red", "unknown option --colour — usage: !check <target> [--selector S]"),
        ("!check example.org --selector", "--selector needs a value — usage: !check <target> [--selector S]"),
        ("!spf example.org example.net", "ip: 'example.net' is not an IP address — usage: !spf <domain> <ip>"),
        ("!frobnicate now", "unknown command !frobnicate: try !help"),
        ('!check "example.org', "unbalanced quotes in the command"),
    ],
)
def test_bad_lines_get_one_line_usage(line: str, reply: str) -> None:
    parsed = REGISTRY.parse(line)
    assert isinstance(parsed, ParseFailure)
    assert parsed.reply == reply
    assert "\n" not in parsed.reply


@pytest.mark.parametrize("line", ["hello", "", "  ", "!", "! ping", "ping!", "> !ping"])
def test_lines_that_are_not_commands_get_no_reply(line: str) -> None:
    assert REGISTRY.parse(line) == ParseFailure("")


def test_a_huge_line_is_refused_in_one_line() -> None:
    parsed = REGISTRY.parse("!check " + "a" * 5000)
    assert isinstance(parsed, ParseFailure) and parsed.reply.startswith("a command is one line")


def test_reply_fallbacks_are_stripped() -> None:
    body = "> <@bob:example.org> !check example.org\n> second line\n\n!ping"
    assert strip_reply_fallback(body) == "!ping"
    assert strip_reply_fallback("!ping") == "!ping"
    assert strip_reply_fallback("> only a quote") == ""
    parsed = REGISTRY.parse(body)
    assert isinstance(parsed, Invocation) and parsed.command.name == "ping"


def test_unknown_command_names_are_echoed_short_and_on_one_line() -> None:
    parsed = REGISTRY.parse("!" + "x" * 300)
    assert isinstance(parsed, ParseFailure)
    assert len(parsed.reply) < 80


# -- permissions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("@alice:example.org", True),
        ("@bob:example.org", True),
        ("@carol:ops.example.org", False),
        ("@eve:example.org.evil", False),
        ("@eve:evilexample.org", False),
        ("@dave:other.org", True),
        ("@dave2:other.org", False),
    ],
)
def test_admin_patterns(user: str, expected: bool) -> None:
    assert user_matches(user, ["@*:example.org", "@dave:other.org"]) is expected


async def test_admin_gets_reaction_typing_and_a_threaded_reply() -> None:
    bot, transport = make_bot()
    command = said(ADMIN, "!ping", "$ping", thread="$root")
    await bot.handle(command)
    assert transport.events == [f"react {WORKING}", "typing True", "typing False", "send"]
    room, message, txn_id, reply_to = transport.sent[0]
    assert (room, message.plain, txn_id, reply_to) == ("!room:example.org", "pong", "reply-$ping", command)


async def test_strangers_are_ignored_or_refused_as_configured() -> None:
    bot, transport = make_bot()
    await bot.handle(said(STRANGER, "!ping"))
    await bot.handle(said(STRANGER, "!nope"))
    assert transport.sent == [] and transport.events == []
    bot, transport = make_bot(answer_strangers=True)
    await bot.handle(said(STRANGER, "!ping"))
    assert transport.replies == ["sorry, I only take commands from my admins"]


async def test_anyone_commands_are_open_to_strangers() -> None:
    registry = Registry()

    @registry.command("hi", help="greet", access=Access.ANYONE)
    async def hi(call: Call) -> Rendered:
        return plain_and_html(f"hi {call.incoming.sender}")

    bot, transport = make_bot(registry)
    await bot.handle(said(STRANGER, "!hi"))
    assert transport.replies == [f"hi {STRANGER}"]


async def test_costly_commands_are_rate_limited_per_user() -> None:
    registry = Registry()
    runs: list[str] = []

    @registry.command("sweep", help="costly", costly=True, args=[Argument("n", int, required=False)])
    async def sweep(call: Call) -> Rendered:
        runs.append(call.incoming.sender)
        return plain_and_html("swept")

    clock = [1000.0]
    bot, transport = make_bot(registry, admins=("@*:example.org",), per_hour=2, clock=clock)
    for number in range(3):
        await bot.handle(said(ADMIN, "!sweep", f"$a{number}"))
    await bot.handle(said("@bob:example.org", "!sweep", "$b"))
    assert runs == [ADMIN, ADMIN, "@bob:example.org"]
    assert transport.replies[2] == "rate limit: 2 costly commands an hour; try again in 60 min"
    clock[0] += 3600
    await bot.handle(said(ADMIN, "!sweep", "$a-later"))
    assert runs[-1] == ADMIN and len(runs) == 4


async def test_a_failing_handler_becomes_a_short_reply_and_a_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()

    @registry.command("boom", help="fails")
    async def boom(call: Call) -> Rendered:
        raise RuntimeError("secret detail")

    bot, transport = make_bot(registry)
    await bot.handle(said(ADMIN, "!boom"))
    assert transport.replies == [INTERNAL_ERROR]
    assert "secret detail" not in transport.replies[0]
    assert any(record.exc_info and "!boom" in record.getMessage() for record in caplog.records)
    assert transport.events[-2:] == ["typing False", "send"]


async def test_bad_arguments_reply_with_usage_through_the_bot() -> None:
    bot, transport = make_bot()
    await bot.handle(said(ADMIN, "!spf example.org"))
    assert transport.replies == ["missing ip — usage: !spf <domain> <ip>"]
    assert transport.events == ["send"]  # no 👀 for a line that never ran


async def test_the_same_reply_is_not_sent_twice_for_one_event() -> None:
    bot, transport = make_bot()
    await bot.handle(said(ADMIN, "!ping", "$same"))
    await bot.handle(said(ADMIN, "!ping", "$same"))
    assert transport.replies == ["pong"]
