"""Chat commands, declared once: name, arguments with their parsers, help, who may run them, cost.

A module adds commands by decorating handlers with `command(...)` on the shared `REGISTRY`; `bot.app`
imports the command modules, so a new module only has to be listed there. `!help`, `!help CMD` and the
usage replies are generated from the declarations. The same table serves Matrix and the console.
"""

from __future__ import annotations

import enum
import html
import re
import shlex
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.config.loader import Config
from bot.render import Rendered, matrix_report, plain_and_html
from bot.transports.base import Incoming, Transport
from checks import CheckContext, TargetError, parse_domain, parse_target

__all__ = [
    "REGISTRY",
    "Access",
    "Argument",
    "Call",
    "Command",
    "Invocation",
    "LifespanError",
    "ParseFailure",
    "Registry",
    "Services",
    "command",
    "strip_reply_fallback",
]

PREFIX = "!"
MAX_LINE = 1000
MAX_ECHO = 40
MAX_ERROR = 160


class Access(enum.Enum):
    """Who may run a command: the configured admins, or anyone the bot hears."""

    ADMIN = "admin"
    ANYONE = "anyone"


@dataclass(frozen=True)
class Argument:
    """One argument: positional (`<name>` / `[name]`) or an option (`--name VALUE`); `parse` raises ValueError."""

    name: str
    parse: Callable[[str], Any] = str
    required: bool = True
    option: bool = False
    metavar: str = ""

    def usage(self) -> str:
        shown = self.metavar or self.name.upper()
        if self.option:
            return f"[--{self.name} {shown}]"
        return f"<{self.name}>" if self.required else f"[{self.name}]"


@dataclass
class Services:
    """What a handler may use: config, the check context, the transport; `extra` is for other modules."""

    config: Config
    ctx: CheckContext
    transport: Transport
    registry: Registry
    started_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """One command being run: who asked where, the parsed arguments, and the services."""

    incoming: Incoming
    command: Command
    args: Mapping[str, Any]
    services: Services


Handler = Callable[[Call], Awaitable[Rendered | None]]
Lifespan = Callable[[Services], AbstractAsyncContextManager[None]]


class LifespanError(Exception):
    """Raised by a lifespan that cannot start (a port in use); the bot stops with this one line, exit 1."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Handler
    arguments: tuple[Argument, ...] = ()
    access: Access = Access.ADMIN
    costly: bool = False

    def usage(self) -> str:
        return " ".join([PREFIX + self.name, *(argument.usage() for argument in self.arguments)])


@dataclass(frozen=True)
class Invocation:
    """A command line that parsed: the command and its arguments."""

    command: Command
    args: Mapping[str, Any]


@dataclass(frozen=True)
class ParseFailure:
    """A command line that did not parse; `reply` is the one-line answer (empty: say nothing)."""

    reply: str


def strip_reply_fallback(body: str) -> str:
    """The body without a Matrix reply fallback (leading `> ` lines and the blank line after them)."""
    lines = body.splitlines()
    if not lines or not lines[0].startswith(">"):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and not lines[index].strip():
        index += 1
    return "\n".join(lines[index:])


def _echo(text: str, limit: int = MAX_ECHO) -> str:
    """User text shown back in a reply: one line, cut short, never markup."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Registry:
    """The command table, filled by the `command` decorator; also holds lifespan hooks (monitor, ...)."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self.lifespans: list[Lifespan] = []

    def command(
        self,
        name: str,
        *,
        help: str,
        args: Sequence[Argument] = (),
        access: Access = Access.ADMIN,
        costly: bool = False,
        replace: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Declare a command; a second declaration of a name is an error unless `replace=True`."""

        def declare(handler: Handler) -> Handler:
            if name in self.commands and not replace:
                raise ValueError(f"command !{name} is declared twice")
            self.commands[name] = Command(name, help, handler, tuple(args), access, costly)
            return handler

        return declare

    def lifespan(self, hook: Lifespan) -> Lifespan:
        """Declare something that runs while the bot runs (an async context manager factory)."""
        self.lifespans.append(hook)
        return hook

    def parse(self, text: str) -> Invocation | ParseFailure:
        """The command a line asks for, or why not; lines not starting with `!` get no reply."""
        found = self.find(text)
        return found if isinstance(found, ParseFailure) else self.bind(*found)

    def find(self, text: str) -> tuple[Command, list[str]] | ParseFailure:
        """The command a line names and its argument words, before any argument is parsed.

        The bot checks who may run the command between `find` and `bind`, so a stranger's arguments are
        never parsed.
        """
        line = strip_reply_fallback(text).strip()
        if not line.startswith(PREFIX) or len(line) < 2 or line[1].isspace():
            return ParseFailure("")
        if len(line) > MAX_LINE or "\n" in line:
            return ParseFailure(f"a command is one line of at most {MAX_LINE} characters")
        try:
            words = shlex.split(line[1:])
        except ValueError:
            return ParseFailure("unbalanced quotes in the command")
        if not words:
            return ParseFailure("")
        found = self.commands.get(words[0].lower())
        if found is None:
            return ParseFailure(f"unknown command {PREFIX}{_echo(words[0])}: try {PREFIX}help")
        return found, words[1:]

    def bind(self, found: Command, words: list[str]) -> Invocation | ParseFailure:
        """The invocation of `found` with these argument words, or the usage reply."""
        try:
            return Invocation(found, _bind(found, words))
        except ValueError as error:
            return ParseFailure(f"{_echo(str(error), MAX_ERROR)} — usage: {found.usage()}")

    def help(self, name: str | None = None) -> Rendered:
        """`!help` (the table) or `!help CMD` (its usage and help)."""
        if name is not None:
            found = self.commands.get(name.lstrip(PREFIX).lower())
            if found is None:
                return plain_and_html(f"unknown command {PREFIX}{_echo(name)}: try {PREFIX}help")
            who = "admins only" if found.access is Access.ADMIN else "anyone"
            cost = ", rate-limited" if found.costly else ""
            return plain_and_html(f"{found.usage()}\n{found.help} ({who}{cost})")
        ordered = sorted(self.commands.values(), key=lambda c: c.name)
        plain = "\n".join(f"{c.usage()} — {c.help}" for c in ordered)
        rows = "".join(
            f"<tr><td><code>{html.escape(c.usage())}</code></td><td>{html.escape(c.help)}</td></tr>" for c in ordered
        )
        return Rendered(plain=plain, html=f"<table>{rows}</table>")


def _bind(found: Command, words: list[str]) -> dict[str, Any]:
    """Match words to the command's arguments; raises ValueError with a short reason."""
    options = {a.name: a for a in found.arguments if a.option}
    positional = [a for a in found.arguments if not a.option]
    values: dict[str, Any] = {}
    rest: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--") and len(word) > 2:
            name, _, inline = word[2:].partition("=")
            argument = options.get(name)
            if argument is None:
                raise ValueError(f"unknown option --{name}")
            if not inline:
                index += 1
                if index >= len(words):
                    raise ValueError(f"--{name} needs a value")
                inline = words[index]
            values[name] = _convert(argument, inline)
        else:
            rest.append(word)
        index += 1
    if len(rest) > len(positional):
        raise ValueError(f"too many arguments ({_echo(rest[len(positional)])})")
    for argument, word in zip(positional, rest, strict=False):
        values[argument.name] = _convert(argument, word)
    missing = [a.name for a in positional[len(rest) :] if a.required]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return values


def _convert(argument: Argument, word: str) -> Any:
    try:
        return argument.parse(word)
    except (ValueError, OverflowError, TargetError) as error:
        raise ValueError(f"{argument.name}: {error}") from None


# -- admin patterns -----------------------------------------------------------------------------


def user_matches(user_id: str, patterns: Iterable[str]) -> bool:
    """True when the user id is one of the patterns (`@alice:example.org`, `@*:example.org`)."""
    return any(_pattern(p).fullmatch(user_id) is not None for p in patterns)


def _pattern(pattern: str) -> re.Pattern[str]:
    # `*` never crosses the `:` between localpart and server, so `@*:example.org` cannot match
    # `@eve:evil.org:example.org`-style tricks, and never matches an empty server.
    return re.compile(".+?" if pattern == "*" else "[^:]+".join(re.escape(part) for part in pattern.split("*")))


# -- the commands this module ships ------------------------------------------------------------

REGISTRY = Registry()
command = REGISTRY.command


def target_arg(text: str) -> str:
    """A domain or IP, normalised; raises ValueError with the parser's reason."""
    return parse_target(text).value


def domain_arg(text: str) -> str:
    return parse_domain(text)


def ip_arg(text: str) -> str:
    target = parse_target(text)
    if not target.is_ip:
        raise ValueError(f"{_echo(text)!r} is not an IP address")
    return target.value


@command("ping", help="say pong (is the bot alive?)")
async def ping(call: Call) -> Rendered:
    return plain_and_html("pong")


@command("help", help="this list, or the usage of one command", args=[Argument("command", required=False)])
async def help_command(call: Call) -> Rendered:
    return call.services.registry.help(call.args.get("command"))


@command(
    "check",
    help="check an IP or a domain now: blocklists, DNS records, TLS",
    args=[Argument("target", target_arg), Argument("selector", str, option=True, metavar="S")],
    costly=True,
)
async def check(call: Call) -> Rendered:
    from dataclasses import replace

    from checks.runner import check_target

    target = parse_target(call.args["target"])
    ctx = call.services.ctx
    selector = call.args.get("selector")
    if selector and not target.is_ip:
        known = ctx.dkim_selectors.get(target.value, ())
        ctx = replace(ctx, dkim_selectors={**ctx.dkim_selectors, target.value: (*known, selector)})
    return matrix_report([await check_target(target, ctx)])


@command(
    "spf",
    help="evaluate SPF for a sending IP, as a receiver would",
    args=[Argument("domain", domain_arg), Argument("ip", ip_arg)],
)
async def spf_command(call: Call) -> Rendered:
    from bot.render import spf_text
    from checks.spf import evaluator as spf

    domain, ip = call.args["domain"], call.args["ip"]
    result = await spf.check_host(ip, domain, f"postmaster@{domain}", resolver=call.services.ctx.resolver)
    text = spf_text(domain, ip, result)
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


@command("lists", help="every blocklist zone with its live health", costly=True)
async def lists_command(call: Call) -> Rendered:
    from bot.render import lists_text
    from checks.dnsbl import lookup as dnsbl

    text = lists_text(await dnsbl.zone_health(call.services.ctx))
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


@command("status", help="the latest results for every monitored IP and domain", costly=True)
async def status(call: Call) -> Rendered:
    # Until the monitor keeps state, the status is a fresh check of every monitored target.
    from checks.runner import check_targets

    config = call.services.config
    names = [*config.monitor.ips, *config.monitor.domains]
    if not names:
        return plain_and_html("nothing is monitored: add ips or domains under [monitor]")
    reports = await check_targets([parse_target(name) for name in names], call.services.ctx)
    return matrix_report(reports)
