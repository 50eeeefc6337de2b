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
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from bot.secrets import mask
from bot.transports.base import Incoming, IncomingHandler, Rendered

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
        lines = self._lines_in_background()
        number = 0
        try:
            while True:
                line, problem = await lines.get()
                if not line:
                    break
                number += 1
                if problem:
                    self.stdout.write(f"line {number} ignored: {problem}\n")
                    self.stdout.flush()
                elif line.strip():
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

    def _lines_in_background(self) -> asyncio.Queue[tuple[str, str]]:
        """Lines from a daemon thread: a blocked read must never keep a stopped bot (SIGTERM) from exiting."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    item = self._read_line()
                except (OSError, ValueError) as error:  # stdin closed under us
                    item = ("", f"cannot read the input: {error}")
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, item)
                except RuntimeError:  # the loop is gone: the bot has stopped
                    return
                if not item[0]:
                    return

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        return lines

    def _read_line(self) -> tuple[str, str]:
        """The next line ("" at the end of the input) and why it cannot be a command ("" when it can)."""
        raw_stdin = getattr(self.stdin, "buffer", None)
        if raw_stdin is None:
            return self.stdin.readline(), ""
        # Bytes first, decoded here: the text layer's strict decoding would raise on the first bad byte
        # and end the console; a bad line is answered and the next one read.
        raw: bytes = raw_stdin.readline()
        encoding = getattr(self.stdin, "encoding", None) or "utf-8"
        try:
            return raw.decode(encoding), ""
        except UnicodeDecodeError as error:
            return "?", f"byte {raw[error.start]:#04x} at column {error.start + 1} is not valid {encoding}"

    async def stop(self) -> None:
        self.stdout.flush()

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        self._count += 1
        event_id = f"console-{self._count}"
        self.stdout.write(mask(message.plain).rstrip("\n") + "\n")
        self.stdout.flush()
        if txn_id is not None:
            self._sent[txn_id] = event_id
        return event_id

    async def send_image(
        self, room: str, png: bytes, *, body: str, reply_to: Incoming | None = None, txn_id: str | None = None
    ) -> str:
        """Write the PNG to a file in `media_dir` and print its path."""
        return await self._write(png, _file_stem(body, "image"), ".png", body, txn_id)

    async def send_file(
        self,
        room: str,
        data: bytes,
        *,
        filename: str,
        mimetype: str,
        body: str,
        reply_to: Incoming | None = None,
        txn_id: str | None = None,
    ) -> str:
        """Write the file to `media_dir` under its own name (numbered) and print its path."""
        stem, dot, suffix = filename.rpartition(".")
        return await self._write(data, _file_stem(stem or filename, "file"), f".{suffix}" if dot else "", body, txn_id)

    async def _write(self, data: bytes, name: str, suffix: str, body: str, txn_id: str | None) -> str:
        if txn_id is not None and txn_id in self._sent:
            return self._sent[txn_id]
        self._count += 1
        directory = self.media_dir or Path(tempfile.gettempdir()) / "repbot-images"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}-{self._count}{suffix}"
        await asyncio.to_thread(path.write_bytes, data)
        self.stdout.write(f"{mask(body)}: {path}\n")
        self.stdout.flush()
        event_id = f"console-{self._count}"
        if txn_id is not None:
            self._sent[txn_id] = event_id
        return event_id

    async def react(self, incoming: Incoming, key: str) -> None:
        return None

    async def typing(self, room: str, on: bool) -> None:
        return None


def _file_stem(text: str, fallback: str) -> str:
    """A file name from a caption: accents dropped, not the letters ("línea de tiempo" -> "linea-de-tiempo")."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.sub(r"[^A-Za-z0-9.-]+", "-", plain).strip("-")[:80] or fallback
