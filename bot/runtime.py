"""`repbot run`: the check context, a transport (Matrix or the console), the Bot, and the exit code.

Exit codes: 0 after a clean stop (end of input, SIGTERM, SIGINT), 1 when the bot cannot run
(no [matrix] section, a secret that cannot be read, a login the homeserver refuses, a state directory that
another instance holds or that cannot be read or written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime

from bot.app import Bot, Permissions, RateLimiter, load_command_modules
from bot.commands.core import REGISTRY, Services
from bot.config.loader import Config, SecretError
from bot.context import build_context
from bot.monitor.store import StoreError
from bot.transports.base import Transport
from bot.transports.console import CONSOLE_USER, ConsoleTransport

__all__ = ["EXIT_FATAL", "EXIT_OK", "run_bot"]

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


def _transport(config: Config, console: bool) -> tuple[Transport, Permissions, RateLimiter, Fatal]:
    """The transport, who may command it, its rate limit, and the exceptions that mean 'cannot start'."""
    if console:
        return ConsoleTransport(), Permissions(admins=(CONSOLE_USER,)), RateLimiter(None), ()
    from bot.transports.matrix import MatrixStartError, MatrixTransport

    assert config.matrix is not None
    matrix = config.matrix
    permissions = Permissions(admins=matrix.admins, answer_strangers=matrix.answer_strangers)
    transport = MatrixTransport(matrix, state_dir=config.state_dir)
    return transport, permissions, RateLimiter(matrix.rate_limit_per_hour), (MatrixStartError,)


async def _serve(config: Config, console: bool) -> int:
    load_command_modules()
    transport, permissions, limiter, fatal = _transport(config, console)
    fatal = (*fatal, StoreError)  # the state directory is another instance's, or cannot be read or written
    ctx = build_context(config)
    services = Services(config, ctx, transport, REGISTRY, datetime.now(UTC))
    bot = Bot(services, permissions, limiter)
    runner: asyncio.Task[int] | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            await transport.start(bot.handle)
            stack.push_async_callback(transport.stop)
            for lifespan in REGISTRY.lifespans:
                await stack.enter_async_context(lifespan(services))
            runner = asyncio.create_task(transport.run())
            _stop_on_signals(runner)
            return await runner
    except asyncio.CancelledError:
        if runner is not None and runner.cancelled():
            log.info("stopped by a signal")
            return EXIT_OK
        raise
    except fatal as error:
        log.error("%s", error)
        return EXIT_FATAL
    finally:
        await ctx.aclose()


def _stop_on_signals(task: asyncio.Task[int]) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, task.cancel)
