"""Logging set-up for `repbot`: text (the default) or one JSON object per line, libraries kept quiet.

At INFO the bot says what it does (login, each check run with its duration, alerts); nio, httpx, aiohttp
and apscheduler speak only at WARNING unless the level is DEBUG. Secret values registered with
with `bot.secrets` (every secret the bot has read) are replaced by `[secure]` in every line, whatever
logged them, tracebacks included.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.secrets import MASK, mask, register

__all__ = ["FORMATS", "MASK", "JsonFormatter", "announce", "redact", "setup_logging"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("nio", "httpx", "httpcore", "aiohttp", "apscheduler", "peewee", "asyncio", "aioimaplib", "mail.log")
# Attributes every LogRecord has; anything else came in through `extra=` and goes into the JSON line.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def redact(*values: str | None) -> None:
    """Never let these values reach a log line, a finding or a room (see `bot.secrets.register`)."""
    register(*values)


_scrub = mask


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the `extra` fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                data[name] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(data, ensure_ascii=False))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record))


_handler: logging.StreamHandler[TextIO] | None = None


def announce(text: str) -> None:
    """Say one line to the person at the terminal, whatever the log level: plain, or a JSON record in json mode."""
    handler = _handler or logging.StreamHandler(sys.stderr)
    if isinstance(handler.formatter, JsonFormatter):
        record = logging.makeLogRecord({"name": "repbot", "levelname": "INFO", "levelno": logging.INFO, "msg": text})
        handler.handle(record)
        return
    handler.stream.write(mask(text) + "\n")
    handler.flush()


def setup_logging(level: str = "WARNING", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once: the level, the format, and quiet libraries unless DEBUG."""
    global _handler
    handler = _handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in NOISY:
        logging.getLogger(name).setLevel(quiet)
