"""The command registry: each command declared once (name, arguments with their parsers, help, who may run it,
cost), the parsing of a line against the declarations, and the `!help`/usage text generated from them.

A module of handlers declares its commands with `command(...)` on the shared `REGISTRY`;
`bot.commands.catalog` imports every such module, so a new one is added there. The same table serves
Matrix and the console. What a handler receives is a `Call`, with the `Services` it may use.
"""

from __future__ import annotations

import enum
import html
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.chat import PREFIX, strip_reply_fallback
from bot.config.loader import Config
from bot.i18n import _
from bot.render import Rendered, plain_and_html
from bot.transports.base import Incoming, Transport
from checks import parse_domain, parse_target

if TYPE_CHECKING:
    from bot.monitor.canary import CanaryRunner
    from bot.monitor.core import Monitor
    from bot.monitor.traffic import TrafficFollower
    from checks import CheckContext
    from checks.canary.verdict import DmarcCounts

__all__ = [
    "REGISTRY",
    "Access",
    "Argument",
    "Call",
    "Command",
    "Invocation",
    "ParseFailure",
    "Registry",
    "Services",
    "command",
    "days_arg",
    "domain_arg",
    "ip_arg",
    "target_arg",
]

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


@dataclass(frozen=True)
class Services:
    """What a handler may use: config, the check context, the transport, and the monitor and canary runner
    (None in a bot that runs without them, as in some tests). Built once by `bot.runtime`, in plain order."""

    config: Config
    ctx: CheckContext
    transport: Transport
    registry: Registry
    started_at: datetime
    monitor: Monitor | None = None
    canaries: CanaryRunner | None = None
    traffic: TrafficFollower | None = None  # the MTA log follower, with [traffic]
    dmarc_counts: DmarcCounts | None = None  # the providers' DMARC counts, with [reports]


@dataclass(frozen=True)
class Call:
    """One command being run: who asked where, the parsed arguments, and the services."""

    incoming: Incoming
    command: Command
    args: Mapping[str, Any]
    services: Services


Handler = Callable[[Call], Awaitable[Rendered | None]]


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


def _echo(text: str, limit: int = MAX_ECHO) -> str:
    """User text shown back in a reply: one line, cut short, never markup."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Registry:
    """The command table, filled by the `command` decorator."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}

    def command(
        self,
        name: str,
        *,
        help: str,
        args: Sequence[Argument] = (),
        access: Access = Access.ADMIN,
        costly: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Declare a command; a second declaration of a name is an error."""

        def declare(handler: Handler) -> Handler:
            if name in self.commands:
                raise ValueError(f"command !{name} is declared twice")
            self.commands[name] = Command(name, help, handler, tuple(args), access, costly)
            return handler

        return declare

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
            return ParseFailure(_("a command is one line of at most {limit} characters").format(limit=MAX_LINE))
        try:
            words = shlex.split(line[1:])
        except ValueError:
            return ParseFailure(_("unbalanced quotes in the command"))
        if not words:
            return ParseFailure("")
        found = self.commands.get(words[0].lower())
        if found is None:
            return ParseFailure(_unknown(words[0]))
        return found, words[1:]

    def bind(self, found: Command, words: list[str]) -> Invocation | ParseFailure:
        """The invocation of `found` with these argument words, or the usage reply."""
        try:
            return Invocation(found, _bind(found, words))
        except ValueError as error:
            reason = _echo(str(error), MAX_ERROR)
            return ParseFailure(_("{reason} — usage: {usage}").format(reason=reason, usage=found.usage()))

    def help(self, name: str | None = None) -> Rendered:
        """`!help` (the table) or `!help CMD` (its usage and help)."""
        if name is not None:
            found = self.commands.get(name.lstrip(PREFIX).lower())
            if found is None:
                return plain_and_html(_unknown(name))
            who = _("admins only") if found.access is Access.ADMIN else _("anyone")
            cost = _(", rate-limited") if found.costly else ""
            return plain_and_html(f"{found.usage()}\n{_(found.help)} ({who}{cost})")
        ordered = sorted(self.commands.values(), key=lambda c: c.name)
        plain = "\n".join(f"{c.usage()} — {_(c.help)}" for c in ordered)
        rows = "".join(
            f"<tr><td><code>{html.escape(c.usage())}</code></td><td>{html.escape(_(c.help))}</td></tr>" for c in ordered
        )
        return Rendered(plain=plain, html=f"<table>{rows}</table>")


def _unknown(name: str) -> str:
    return _("unknown command {command}: try {help}").format(command=PREFIX + _echo(name), help=PREFIX + "help")


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
            name, _equals, inline = word[2:].partition("=")
            argument = options.get(name)
            if argument is None:
                raise ValueError(_("unknown option --{name}").format(name=name))
            if not inline:
                index += 1
                if index >= len(words):
                    raise ValueError(_("--{name} needs a value").format(name=name))
                inline = words[index]
            values[name] = _convert(argument, inline)
        else:
            rest.append(word)
        index += 1
    if len(rest) > len(positional):
        raise ValueError(_("too many arguments ({extra})").format(extra=_echo(rest[len(positional)])))
    for argument, word in zip(positional, rest, strict=False):
        values[argument.name] = _convert(argument, word)
    missing = [a.name for a in positional[len(rest) :] if a.required]
    if missing:
        raise ValueError(_("missing {arguments}").format(arguments=", ".join(missing)))
    return values


def _convert(argument: Argument, word: str) -> Any:
    try:
        return argument.parse(word)
    except (ValueError, OverflowError) as error:  # the check library's TargetError is a ValueError
        raise ValueError(f"{argument.name}: {error}") from None


# -- the shared table, and the argument parsers the handler modules use ------------------------------------

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
        raise ValueError(_("{text!r} is not an IP address").format(text=_echo(text)))
    return target.value


def days_arg(maximum: int) -> Callable[[str], int]:
    """An argument parser for a number of days, 1 to `maximum` (a huge number is a usage error, not a crash)."""

    def parse(text: str) -> int:
        if not text.isdecimal() or len(text) > 6 or not 1 <= int(text) <= maximum:
            raise ValueError(
                _("{text!r}: give a number of days, 1 to {limit}").format(text=_echo(text)[:20], limit=maximum)
            )
        return int(text)

    return parse
