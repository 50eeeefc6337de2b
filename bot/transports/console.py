"""The terminal as the bot's room: command lines from stdin, replies and alerts on stdout as plain text.

Each line is a command of its own, run in its own task as soon as it is read, as the Matrix transport does:
`!ping` is answered while a slow `!check` typed before it is still working. A command's own replies come in
its order; replies of different commands come as each is ready. At the end of the input the transport waits
for every command still running, and `run()` returns 0.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from bot.render import Rendered
from bot.transports.base import Incoming, IncomingHandler

__all__ = ["CONSOLE_ROOM", "CONSOLE_USER", "ConsoleTransport"]

log = logging.getLogger("repbot.console")

CONSOLE_ROOM = "console"
CONSOLE_USER = "@operator:console"


class ConsoleTransport:
    """A Transport over stdin/stdout; the person at the terminal is the admin."""

    def __init__(
        self, stdin: TextIO | None = None, stdout: TextIO | None = None, media_dir: Path | None = None
    ) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        # Where images go (the timeline sets it to STATE_DIR/images); a temporary directory until then.
        self.media_dir = media_dir
        self.alert_rooms: Sequence[str] = (CONSOLE_ROOM,)
        self._on_command: IncomingHandler | None = None
        self._sent: dict[str, str] = {}
        self._count = 0
        self._running: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return "<ConsoleTransport>"

    async def start(self, on_command: IncomingHandler) -> None:
        self._on_command = on_command

    async def run(self) -> int:
        """Start a task for each line until the end of the input, then wait for them; 0."""
        assert self._on_command is not None, "start() first"
        number = 0
        try:
            while True:
                line = await asyncio.to_thread(self.stdin.readline)
                if not line:
                    break
                number += 1
                if line.strip():
                    self._spawn(Incoming(CONSOLE_ROOM, CONSOLE_USER, line.rstrip("\n"), f"line-{number}"))
            while self._running:
                await asyncio.wait(set(self._running))
        finally:
            for task in self._running:
                task.cancel()
        return 0

    def _spawn(self, incoming: Incoming) -> None:
        task = asyncio.create_task(self._answer(incoming), name=f"repbot-{incoming.event_id}")
        self._running.add(task)
        task.add_done_callback(self._finished)

    async def _answer(self, incoming: Incoming) -> None:
        assert self._on_command is not None
        await self._on_command(incoming)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a command failed", exc_info=task.exception())

    async def stop(self) -> None:
        self.stdout.flush()

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        self._count += 1
        event_id = f"console-{self._count}"
        self.stdout.write(message.plain.rstrip("\n") + "\n")
        self.stdout.flush()
        if txn_id is not None:
            self._sent[txn_id] = event_id
        return event_id

    async def send_image(
        self, room: str, png: bytes, *, body: str, reply_to: Incoming | None = None, txn_id: str | None = None
    ) -> str:
        """Write the PNG to a file in `media_dir` and print its path."""
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        self._count += 1
        directory = self.media_dir or Path(tempfile.gettempdir()) / "repbot-images"
        directory.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9.-]+", "-", body).strip("-")[:80] or "image"
        path = directory / f"{name}-{self._count}.png"
        await asyncio.to_thread(path.write_bytes, png)
        self.stdout.write(f"{body}: {path}\n")
        self.stdout.flush()
        event_id = f"console-{self._count}"
        if txn_id is not None:
            self._sent[txn_id] = event_id
        return event_id

    async def react(self, incoming: Incoming, key: str) -> None:
        return None

    async def typing(self, room: str, on: bool) -> None:
        return None
