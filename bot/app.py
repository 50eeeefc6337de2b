"""The Bot: an Incoming line becomes a command run, and its reply goes back through the transport.

It decides who may run what (admin patterns, the refusal reply for strangers), limits costly commands
per user, shows 👀 and a typing notice while a command works, and turns any exception into a short
"internal error" reply with the traceback in the log, never in the room.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.chat import user_matches
from bot.commands.catalog import REGISTRY
from bot.commands.registry import Access, Call, Invocation, ParseFailure, Registry, Services
from bot.i18n import N_, _, use_language
from bot.language import room_language
from bot.render import Rendered, plain_and_html
from bot.transports.base import DeliveryError, Incoming

__all__ = ["Bot", "Permissions", "RateLimiter"]

log = logging.getLogger("repbot.bot")

WORKING = "👀"
INTERNAL_ERROR = N_("internal error, see the logs")
HOUR = 3600.0


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
        """Answer one command line (or stay silent); never raises, whatever the line or the handler does."""
        try:
            with use_language(room_language(self.services.config, self.services.monitor, incoming.room)):
                await self._handle(incoming)
        except Exception:
            # The last guard: a bug anywhere in parsing or replying must cost one line, never the bot.
            log.exception("command line from %s failed", incoming.sender)

    async def _handle(self, incoming: Incoming) -> None:
        admin = self.permissions.is_admin(incoming.sender)
        found = self.registry.find(incoming.body)
        if isinstance(found, ParseFailure):
            await self._refuse(incoming, found, admin)
            return
        command, words = found
        if command.access is Access.ADMIN and not admin:
            # Checked before the arguments are parsed: a stranger's line costs a log line, nothing more.
            log.info("ignored !%s from %s (not an admin)", command.name, incoming.sender)
            if self.permissions.answer_strangers:
                await self._reply(incoming, plain_and_html(_("sorry, I only take commands from my admins")))
            return
        parsed = self.registry.bind(command, words)
        if isinstance(parsed, ParseFailure):
            await self._refuse(incoming, parsed, admin)
            return
        if parsed.command.costly:
            wait = self.limiter.wait_for(incoming.sender)
            if wait > 0:
                minutes = max(1, round(wait / 60))
                text = _("rate limit: {count} costly commands an hour; try again in {minutes} min").format(
                    count=self.limiter.per_hour, minutes=minutes
                )
                await self._reply(incoming, plain_and_html(text))
                return
        await self._run(incoming, parsed)

    async def _refuse(self, incoming: Incoming, failure: ParseFailure, admin: bool) -> None:
        if failure.reply and (admin or self.permissions.answer_strangers):
            await self._reply(incoming, plain_and_html(failure.reply))

    async def _run(self, incoming: Incoming, parsed: Invocation) -> None:
        transport = self.services.transport
        await transport.react(incoming, WORKING)
        await transport.typing(incoming.room, True)
        call = Call(incoming, parsed.command, parsed.args, self.services)
        try:
            reply = await parsed.command.handler(call)
        except Exception:
            log.exception("!%s from %s failed", parsed.command.name, incoming.sender)
            reply = plain_and_html(_(INTERNAL_ERROR))
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
