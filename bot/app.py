"""The Bot: an Incoming line becomes a command run, and its reply goes back through the transport.

It decides who may run what (admin patterns, the refusal reply for strangers), limits costly commands
per user, shows 👀 and a typing notice while a command works, and turns any exception into a short
"internal error" reply with the traceback in the log, never in the room.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bot.commands.core import REGISTRY, Access, Call, Invocation, ParseFailure, Registry, Services, user_matches
from bot.render import Rendered, plain_and_html
from bot.transports.base import DeliveryError, Incoming

__all__ = ["COMMAND_MODULES", "Bot", "Permissions", "RateLimiter", "load_command_modules"]

log = logging.getLogger("repbot.bot")

# Modules that declare commands on REGISTRY; a new command module is listed here.
COMMAND_MODULES = (
    "bot.commands.core",
    "bot.commands.monitor",
    "bot.commands.providers",
    "bot.commands.canary",
    "bot.commands.timeline",
    "bot.commands.traffic",
    "bot.metrics",
)
WORKING = "👀"
INTERNAL_ERROR = "internal error, see the logs"
HOUR = 3600.0


def load_command_modules(modules: Iterable[str] = COMMAND_MODULES) -> None:
    """Import each command module once, so its declarations land in REGISTRY."""
    for name in modules:
        importlib.import_module(name)


@dataclass(frozen=True)
class Permissions:
    """Who counts as an admin (ids or `@*:server` patterns) and whether strangers get a refusal."""

    admins: tuple[str, ...] = ()
    answer_strangers: bool = False

    def is_admin(self, user_id: str) -> bool:
        return user_matches(user_id, self.admins)


class RateLimiter:
    """At most `per_hour` costly commands per user in any sliding hour; `None` means no limit."""

    def __init__(self, per_hour: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self.used: dict[str, deque[float]] = {}

    def wait_for(self, user: str) -> float:
        """0 and the use is counted, or the seconds until the user may run a costly command again."""
        if self.per_hour is None:
            return 0.0
        now = self.clock()
        times = self.used.setdefault(user, deque())
        while times and now - times[0] >= HOUR:
            times.popleft()
        if len(times) >= self.per_hour:
            return HOUR - (now - times[0]) if times else HOUR
        times.append(now)
        return 0.0


class Bot:
    """Dispatches commands from a transport to the registry's handlers and replies."""

    def __init__(
        self,
        services: Services,
        permissions: Permissions,
        limiter: RateLimiter,
        registry: Registry = REGISTRY,
    ) -> None:
        self.services = services
        self.permissions = permissions
        self.limiter = limiter
        self.registry = registry

    async def handle(self, incoming: Incoming) -> None:
        """Answer one command line (or stay silent); never raises for a bad line or a failing handler."""
        admin = self.permissions.is_admin(incoming.sender)
        parsed = self.registry.parse(incoming.body)
        if isinstance(parsed, ParseFailure):
            if parsed.reply and (admin or self.permissions.answer_strangers):
                await self._reply(incoming, plain_and_html(parsed.reply))
            return
        if parsed.command.access is Access.ADMIN and not admin:
            log.info("ignored !%s from %s (not an admin)", parsed.command.name, incoming.sender)
            if self.permissions.answer_strangers:
                await self._reply(incoming, plain_and_html("sorry, I only take commands from my admins"))
            return
        if parsed.command.costly:
            wait = self.limiter.wait_for(incoming.sender)
            if wait > 0:
                minutes = max(1, round(wait / 60))
                text = f"rate limit: {self.limiter.per_hour} costly commands an hour; try again in {minutes} min"
                await self._reply(incoming, plain_and_html(text))
                return
        await self._run(incoming, parsed)

    async def _run(self, incoming: Incoming, parsed: Invocation) -> None:
        transport = self.services.transport
        await transport.react(incoming, WORKING)
        await transport.typing(incoming.room, True)
        call = Call(incoming, parsed.command, parsed.args, self.services)
        try:
            reply = await parsed.command.handler(call)
        except Exception:
            log.exception("!%s from %s failed", parsed.command.name, incoming.sender)
            reply = plain_and_html(INTERNAL_ERROR)
        finally:
            await transport.typing(incoming.room, False)
        if reply is not None:
            await self._reply(incoming, reply)

    async def _reply(self, incoming: Incoming, message: Rendered) -> None:
        txn_id = f"reply-{incoming.event_id}" if incoming.event_id else None
        try:
            await self.services.transport.send(incoming.room, message, txn_id=txn_id, reply_to=incoming)
        except DeliveryError as error:
            log.warning("reply to %s in %s not delivered: %s", incoming.event_id or "a command", incoming.room, error)
