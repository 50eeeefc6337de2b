"""`repbot run`: the check context, a transport (Matrix or the console), the Bot, and the exit code.

Exit codes: 0 after a clean stop (end of input, SIGTERM, SIGINT, also during the start-up login), 1 when
the bot cannot run (no [matrix] section, a secret that cannot be read, a login the homeserver refuses, a
port in use, a state directory that another instance holds or that cannot be read or written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bot.app import Bot, Permissions, RateLimiter
from bot.commands.catalog import REGISTRY
from bot.commands.registry import Services
from bot.config.loader import Config, SecretError
from bot.context import build_context
from bot.i18n import _, ngettext, number, use_language
from bot.logs import announce
from bot.metrics import MetricsStartError, serve_metrics
from bot.monitor.canary import CanaryRunner
from bot.monitor.core import STATE_FILE, Monitor
from bot.monitor.store import Store, StoreError
from bot.transports.base import Transport
from bot.transports.console import CONSOLE_USER, ConsoleTransport
from checks import CheckContext

if TYPE_CHECKING:
    from bot.monitor.traffic import TrafficFollower
    from checks.canary.verdict import DmarcCounts

__all__ = ["EXIT_FATAL", "EXIT_OK", "build_services", "console_transport", "run_bot", "start_line", "start_services"]

EXIT_OK = 0
EXIT_FATAL = 1
log = logging.getLogger("repbot")


def run_bot(config: Config, console: bool = False) -> int:
    """Run the bot until it stops; the process exit code."""
    _quiet_libraries(console)
    if not console and config.matrix is None:
        log.error("no [matrix] section in %s: add one, or run with --console", config.source or "the configuration")
        return EXIT_FATAL
    try:
        return asyncio.run(_serve(config, console))
    except SecretError as error:
        log.error("%s", error)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_OK


def _quiet_libraries(console: bool) -> None:
    # nio logs every request at INFO and warns about each retry; keep our own voice.
    logging.getLogger("nio").setLevel(logging.ERROR)
    logging.getLogger("peewee").setLevel(logging.WARNING)
    repbot = logging.getLogger("repbot")
    if not console and repbot.getEffectiveLevel() > logging.INFO:
        repbot.setLevel(logging.INFO)  # a service should say when it logs in and when the homeserver goes away


Fatal = tuple[type[Exception], ...]


def console_transport(config: Config, stdin: TextIO | None = None, stdout: TextIO | None = None) -> ConsoleTransport:
    """The terminal as the bot's room; pictures (the timeline) are written under the state directory."""
    return ConsoleTransport(stdin, stdout, media_dir=Path(config.state_dir) / "images")


def _transport(config: Config, console: bool) -> tuple[Transport, Permissions, RateLimiter, Fatal]:
    """The transport, who may command it, its rate limit, and the exceptions that mean 'cannot start'."""
    if console:
        return console_transport(config), Permissions(admins=(CONSOLE_USER,)), RateLimiter(None), ()
    from bot.transports.matrix import MatrixStartError, MatrixTransport

    assert config.matrix is not None
    matrix = config.matrix
    permissions = Permissions(admins=matrix.admins, answer_strangers=matrix.answer_strangers)
    transport = MatrixTransport(matrix, state_dir=config.state_dir)
    return transport, permissions, RateLimiter(matrix.rate_limit_per_hour), (MatrixStartError,)


def build_services(config: Config, ctx: CheckContext, transport: Transport, store: Store) -> Services:
    """Everything a handler may use, built in plain order: the monitor on the store, then what feeds it."""
    monitor = Monitor(config, store, transport, ctx)
    dmarc = _dmarc_counts(config)
    traffic = _traffic_follower(config, ctx, monitor)
    canaries = CanaryRunner(config, ctx, monitor, traffic, dmarc) if config.canary is not None else None
    return Services(
        config, ctx, transport, REGISTRY, datetime.now(UTC),
        monitor=monitor, canaries=canaries, traffic=traffic, dmarc_counts=dmarc,
    )  # fmt: skip


def _dmarc_counts(config: Config) -> DmarcCounts | None:
    if config.reports is None:
        return None
    from bot.monitor.reports import StoredDmarcCounts

    return StoredDmarcCounts(config)


def _traffic_follower(config: Config, ctx: CheckContext, monitor: Monitor) -> TrafficFollower | None:
    if config.traffic is None:
        return None
    from bot.config.traffic import traffic_families
    from bot.monitor.traffic import TrafficFollower

    return TrafficFollower(config.traffic, traffic_families(config.traffic), config.state_dir, monitor, ctx.clock)


async def start_services(stack: contextlib.AsyncExitStack, services: Services) -> None:
    """Start the monitor, then the canaries (their job goes on its scheduler) and the MTA log follower;
    `stack` stops them in reverse."""
    if services.monitor is not None:
        await services.monitor.start()
        stack.push_async_callback(services.monitor.stop)
    if services.canaries is not None:
        await services.canaries.start()
        stack.push_async_callback(services.canaries.stop)
    if services.traffic is not None:
        following = asyncio.create_task(services.traffic.run(), name="repbot-traffic")
        stack.push_async_callback(_cancelled, following)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _serve(config: Config, console: bool) -> int:
    transport, permissions, limiter, fatal = _transport(config, console)
    # What means "cannot start": a port in use, a state directory another instance holds or that cannot be used.
    fatal = (*fatal, MetricsStartError, StoreError)
    # Signals stop the bot from the first moment: a SIGTERM during the start-up login backoff is a
    # clean stop (exit 0), and the transport's stop still closes what its start had opened.
    signalled = _stop_on_signals()
    try:
        async with contextlib.AsyncExitStack() as stack:
            ctx = build_context(config)
            stack.push_async_callback(ctx.aclose)
            store = stack.enter_context(contextlib.closing(Store(Path(config.state_dir) / STATE_FILE)))
            services = build_services(config, ctx, transport, store)
            await stack.enter_async_context(
                serve_metrics(config.metrics, services.monitor, transport, services.traffic)
            )
            bot = Bot(services, permissions, limiter)
            stack.push_async_callback(transport.stop)
            await transport.start(bot.handle)
            await start_services(stack, services)
            if console:
                announce(start_line(config))
            return await transport.run()
    except asyncio.CancelledError:
        if signalled:
            log.info("stopped by %s", signalled[0].name)
            return EXIT_OK
        raise
    except fatal as error:
        log.error("%s", error)
        return EXIT_FATAL


def start_line(config: Config) -> str:
    """What `run --console` says first (on stderr, so stdout stays the room): who, what it watches, how to start;
    in the configured language, as the room is spoken to."""
    ips, domains = len(config.monitor.ips), len(config.monitor.domains)
    with use_language(config.language):
        line = _("repbot in the console as {user}, watching {ips} and {domains}; type !help")
        return line.format(
            user=CONSOLE_USER,
            ips=ngettext("{count} IP", "{count} IPs", ips).format(count=number(ips)),
            domains=ngettext("{count} domain", "{count} domains", domains).format(count=number(domains)),
        )


def _stop_on_signals() -> list[signal.Signals]:
    """Cancel the running task on SIGTERM or SIGINT; the list the signals received are put in."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        received.append(signum)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop, signum)
    return received
