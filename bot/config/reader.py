"""What every section reader uses: `Section`, which names each problem by its full key, and `Secret`.

Secrets may be given inline (`password = "..."`), from a file (`password_file = "/run/credentials/..."`)
or from a command that prints them (`password_command = "pass show repbot"`), as isync and neomutt users
expect. They are resolved when used, never logged, and masked in reprs.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TypeVar

from bot.durations import parse_duration
from bot.i18n import _
from bot.secrets import register

__all__ = ["MAX_TIMEOUT", "SECRET_COMMAND_TIMEOUT", "Secret", "SecretError", "Section"]

SECRET_COMMAND_TIMEOUT = 30.0
# The longest timeout any setting may ask for: beyond it a dead server only blocks what waits behind it.
MAX_TIMEOUT = 300.0
T = TypeVar("T")
N = TypeVar("N", int, float)
D = TypeVar("D")


class SecretError(Exception):
    """Raised when a secret's file cannot be read or its command fails; never includes the secret."""


@dataclass(frozen=True)
class Secret:
    """A secret given inline, as a file or as a command; read on use, shown as [secure]."""

    key: str
    inline: str | None = field(default=None, repr=False)
    file: str | None = None
    command: str | None = None

    def __repr__(self) -> str:
        source = "inline" if self.inline is not None else "file" if self.file else "command"
        return f"Secret({self.key}, {source}, [secure])"

    def get(self) -> str:
        """The secret's value, registered for masking; raises SecretError naming the key (not the value)."""
        value = self._read()
        register(value)
        return value

    def _read(self) -> str:
        if self.inline is not None:
            return self.inline
        if self.file:
            try:
                return Path(self.file).read_text(encoding="utf-8").strip()
            except OSError as error:
                raise SecretError(_("{key}_file: cannot read {file}: {error}").format(key=self.key, file=self.file,
                                   error=error.strerror)) from None  # fmt: skip
        assert self.command is not None
        return _run_secret_command(self.key, self.command)


def _run_secret_command(key: str, command: str) -> str:
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=SECRET_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SecretError(
            _("{key}_command: no answer within {seconds} s").format(key=key, seconds=f"{SECRET_COMMAND_TIMEOUT:.0f}")
        ) from None
    if done.returncode != 0:
        # stderr may echo the secret on some helpers; report only its first line, cut short.
        first = (done.stderr.strip().splitlines() or [""])[0][:120]
        raise SecretError(
            _("{key}_command: exited with status {status}: {first}").format(
                key=key, status=done.returncode, first=first
            )
        )
    value = done.stdout.strip()
    if not value:
        raise SecretError(_("{key}_command: printed nothing").format(key=key))
    return value


class Section:
    """Reads one table of the TOML file, recording each problem with its full key name."""

    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if not isinstance(data, dict):
            problems.append(f"{path}: " + _("expected a table, got {kind}").format(kind=type(data).__name__))
            data = {}
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"{self.key(name)}: {text}")

    def get(self, name: str, kind: type[T], default: T) -> T:
        self.seen.add(name)
        value = self.data.get(name, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            said = _("expected {kind}, got {got} {value!r}").format(
                kind=kind.__name__, got=type(value).__name__, value=value
            )
            self.problem(name, said[:200])
            return default
        if isinstance(value, int | float) and not isinstance(value, bool) and value is not default:
            # No setting is a negative amount, and TOML's nan and inf would hang or spin whatever reads them.
            if not math.isfinite(value):
                self.problem(name, _("expected a finite number, got {value!r}").format(value=value))
                return default
            if value < 0:
                self.problem(name, _("must not be negative, got {value!r}").format(value=value))
                return default
        return value

    def number(self, name: str, kind: type[N], default: N, *, low: float, high: float | None = None) -> N:
        """The number at `name`, from `low` to `high` (a low of 0 means more than 0); `default` when absent."""
        value = self.get(name, kind, default)
        too_low = value <= 0 if low == 0 else value < low
        if value is not default and (too_low or (high is not None and value > high)):
            lowest = _("more than 0") if low == 0 else _("at least {low}").format(low=f"{low:g}")
            highest = _(" and at most {high}").format(high=f"{high:g}") if high is not None else ""
            self.problem(
                name, _("must be {lowest}{highest}, got {value!r}").format(lowest=lowest, highest=highest, value=value)
            )
            return default
        return value

    def required_str(self, name: str) -> str:
        if name not in self.data:
            self.problem(name, _("is required"))
        return self.get(name, str, "")

    def strings(self, name: str, check: Callable[[str], str] | None = None) -> tuple[str, ...]:
        values = self.get(name, list, [])
        result: list[str] = []
        for index, value in enumerate(values):
            if not isinstance(value, str):
                self.problem(f"{name}[{index}]", _("expected a string, got {value!r}").format(value=value)[:200])
                continue
            try:
                result.append(check(value) if check else value)
            except ValueError as error:  # the check library's TargetError is a ValueError
                self.problem(f"{name}[{index}]", str(error))
        return tuple(result)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        """The string at `name`, which must be one of `allowed`; `default` when absent or wrong."""
        value = self.get(name, str, default)
        if value not in allowed:
            self.problem(
                name, _("expected one of {allowed}, got {value!r}").format(allowed=", ".join(allowed), value=value)
            )
            return default
        return value

    def duration(self, name: str, default: D) -> timedelta | D:
        """The duration written at `name` ("15m", "6h"...); `default` when absent or unreadable."""
        text = self.get(name, str, "")
        if not text:
            return default
        try:
            return parse_duration(text)
        except ValueError as error:
            self.problem(name, str(error))
            return default

    def secret(self, name: str, required: bool = False) -> Secret | None:
        given = [k for k in (name, f"{name}_file", f"{name}_command") if k in self.data]
        self.seen.update((name, f"{name}_file", f"{name}_command"))
        if len(given) > 1:
            self.problem(name, _("give only one of {given}").format(given=", ".join(given)))
            return None
        if not given:
            if required:
                self.problem(name, _("is required (or {name}_file, or {name}_command)").format(name=name))
            return None
        value = self.data[given[0]]
        if not isinstance(value, str) or not value:
            self.problem(given[0], _("expected a non-empty string"))
            return None
        kind = given[0].removeprefix(name).lstrip("_") or "inline"
        return Secret(self.key(name), **{kind: value})

    def table(self, name: str) -> Section:
        self.seen.add(name)
        return Section(self.data.get(name, {}), self.key(name), self.problems)

    def finish(self) -> None:
        """Report every key nobody asked for: a typo must not be silently ignored."""
        for name in self.data:
            if name not in self.seen:
                hint = get_close_matches(name, self.seen, n=1)
                suggestion = _(" (did you mean {hint!r}?)").format(hint=hint[0]) if hint else ""
                self.problem(name, _("unknown key{suggestion}").format(suggestion=suggestion))
