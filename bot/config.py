"""The TOML configuration: read once into frozen dataclasses, every problem named by its key.

Secrets may be given inline (`password = "..."`), from a file (`password_file = "/run/credentials/..."`)
or from a command that prints them (`password_command = "pass show repbot"`), as isync and neomutt users
expect. They are resolved when used, never logged, and masked in reprs.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import stat
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from checks import DnsblSettings, TargetError, parse_domain, parse_nameserver, parse_target

from .durations import parse_duration

__all__ = [
    "AlertsConfig",
    "Config",
    "ConfigError",
    "DigestConfig",
    "DnsConfig",
    "DomainSettings",
    "MatrixConfig",
    "MetricsConfig",
    "MonitorConfig",
    "ScheduleConfig",
    "Secret",
    "SecretError",
    "load_config",
    "parse_config",
]

SECRET_COMMAND_TIMEOUT = 30.0
T = TypeVar("T")
D = TypeVar("D")


class ConfigError(Exception):
    """Raised when the configuration has problems; `problems` lists each as 'key: what is wrong'."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        if len(problems) == 1:
            super().__init__(f"{where}{problems[0]}")
        else:
            super().__init__(f"{where}{len(problems)} problems in the configuration:\n  " + "\n  ".join(problems))


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
        """The secret's value; raises SecretError naming the key (not the value) when it cannot be had."""
        if self.inline is not None:
            return self.inline
        if self.file:
            try:
                return Path(self.file).read_text(encoding="utf-8").strip()
            except OSError as error:
                raise SecretError(f"{self.key}_file: cannot read {self.file}: {error.strerror}") from None
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
        raise SecretError(f"{key}_command: no answer within {SECRET_COMMAND_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        # stderr may echo the secret on some helpers; report only its first line, cut short.
        first = (done.stderr.strip().splitlines() or [""])[0][:120]
        raise SecretError(f"{key}_command: exited with status {done.returncode}: {first}")
    value = done.stdout.strip()
    if not value:
        raise SecretError(f"{key}_command: printed nothing")
    return value


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()
    timeout: float = 5.0
    concurrency: int = 200


@dataclass(frozen=True)
class DomainSettings:
    dkim_selectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class MonitorConfig:
    ips: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    helo_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class MatrixConfig:
    homeserver: str
    user_id: str
    password: Secret | None = None
    access_token: Secret | None = None
    device_id: str | None = None
    device_name: str = "repbot"
    store_dir: str = ""
    pickle_key: Secret | None = None
    rooms: tuple[str, ...] = ()
    alert_rooms: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    answer_strangers: bool = False
    rate_limit_per_hour: int = 10
    ignore_users: tuple[str, ...] = ()


# The monitor's job families and how often each runs by default.
# snds, complaints and canary run only when their section is configured; SNDS data changes once a day.
DEFAULT_INTERVALS = {
    "blocklists": "30m",
    "domains": "6h",
    "tls": "12h",
    "snds": "6h",
    "complaints": "15m",
    "canary": "6h",
    "postmaster": "12h",
}
KNOWN_FAMILIES = ("blocklists", "domains", "tls", "snds", "complaints", "canary", "postmaster")


@dataclass(frozen=True)
class ScheduleConfig:
    """[schedule]: an interval per job family, the random spread, and the delay of the first run."""

    intervals: Mapping[str, timedelta] = field(
        default_factory=lambda: {name: parse_duration(text) for name, text in DEFAULT_INTERVALS.items()}
    )
    jitter: timedelta = timedelta(minutes=2)
    first_run: timedelta = timedelta(seconds=15)


@dataclass(frozen=True)
class AlertsConfig:
    """[alerts]: confirmations before a change counts, unknown tolerance, history retention, retry cap."""

    confirm: int = 2
    immediate_new_listing: bool = True
    unknown_after: timedelta = timedelta(hours=2)
    retention: timedelta = timedelta(days=365)
    retry_max: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class DigestConfig:
    """[digest]: the daily summary's hour and time zone."""

    enabled: bool = True
    at: time = time(8, 0)
    timezone: str = "UTC"


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: where the Prometheus endpoint listens ("127.0.0.1:9464"); empty: no endpoint."""

    listen: str = ""
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class Config:
    dns: DnsConfig = field(default_factory=DnsConfig)
    dnsbl: DnsblSettings = field(default_factory=DnsblSettings)
    dnsbl_key: Secret | None = None
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    domains: Mapping[str, DomainSettings] = field(default_factory=dict)
    matrix: MatrixConfig | None = None
    state_dir: str = "./state"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def dkim_selectors(self) -> dict[str, tuple[str, ...]]:
        return {name: settings.dkim_selectors for name, settings in self.domains.items()}

    def secrets(self) -> list[Secret]:
        """Every secret the configuration holds, for the file-permission check."""
        found: list[Secret | None] = [self.dnsbl_key]
        if self.matrix is not None:
            found += [self.matrix.password, self.matrix.access_token, self.matrix.pickle_key]
        found += _secrets_within(list(self.extra.values()))
        return [secret for secret in found if secret is not None]


def _secrets_within(value: Any) -> list[Secret]:
    """Every Secret inside the sections other modules read ([snds], [canary], ...), however nested."""
    if isinstance(value, Secret):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, item.name) for item in dataclasses.fields(value)]
    elif isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [secret for item in value for secret in _secrets_within(item)]
    return []


class Section:
    """Reads one table of the TOML file, recording each problem with its full key name."""

    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if not isinstance(data, dict):
            problems.append(f"{path}: expected a table, got {type(data).__name__}")
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
            self.problem(name, f"expected {kind.__name__}, got {type(value).__name__} {value!r}"[:200])
            return default
        return value

    def required_str(self, name: str) -> str:
        if name not in self.data:
            self.problem(name, "is required")
        return self.get(name, str, "")

    def strings(self, name: str, check: Callable[[str], str] | None = None) -> tuple[str, ...]:
        values = self.get(name, list, [])
        result: list[str] = []
        for index, value in enumerate(values):
            if not isinstance(value, str):
                self.problem(f"{name}[{index}]", f"expected a string, got {value!r}"[:200])
                continue
            try:
                result.append(check(value) if check else value)
            except (ValueError, TargetError) as error:
                self.problem(f"{name}[{index}]", str(error))
        return tuple(result)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        """The string at `name`, which must be one of `allowed`; `default` when absent or wrong."""
        value = self.get(name, str, default)
        if value not in allowed:
            self.problem(name, f"expected one of {', '.join(allowed)}, got {value!r}")
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
            self.problem(name, f"give only one of {', '.join(given)}")
            return None
        if not given:
            if required:
                self.problem(name, f"is required (or {name}_file, or {name}_command)")
            return None
        value = self.data[given[0]]
        if not isinstance(value, str) or not value:
            self.problem(given[0], "expected a non-empty string")
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
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.problem(name, f"unknown key{suggestion}")


def _ip(text: str) -> str:
    target = parse_target(text)
    if not target.is_ip:
        raise ValueError(f"{text!r} is not an IP address")
    return target.value


def _nameserver(text: str) -> str:
    return str(parse_nameserver(text))


def _read_dns(root: Section) -> DnsConfig:
    section = root.table("dns")
    config = DnsConfig(
        nameservers=section.strings("nameservers", _nameserver),
        timeout=section.get("timeout", float, 5.0),
        concurrency=section.get("concurrency", int, 200),
    )
    if config.timeout <= 0:
        section.problem("timeout", "must be more than 0 seconds")
    if config.concurrency < 1:
        section.problem("concurrency", "must be at least 1")
    section.finish()
    return config


def _read_dnsbl(root: Section) -> tuple[DnsblSettings, Secret | None]:
    section = root.table("dnsbl")
    key = section.secret("dqs_key")
    disabled = frozenset(name.lower().rstrip(".") for name in section.strings("disabled"))
    zones = section.get("zones", dict, {})
    section.finish()
    # The key is read only when lookups start: `config check` must not run the operator's commands.
    return DnsblSettings(disabled=disabled, extra_zones=zones), key


def _read_monitor(root: Section) -> MonitorConfig:
    section = root.table("monitor")
    config = MonitorConfig(
        ips=section.strings("ips", _ip),
        domains=section.strings("domains", parse_domain),
        helo_names=section.strings("helo_names", parse_domain),
    )
    section.finish()
    return config


def _read_domains(root: Section) -> dict[str, DomainSettings]:
    section = root.table("domains")
    domains: dict[str, DomainSettings] = {}
    for name in list(section.data):
        sub = section.table(name)
        try:
            domain = parse_domain(name)
        except TargetError as error:
            section.problem(name, str(error))
            continue
        domains[domain] = DomainSettings(dkim_selectors=sub.strings("dkim_selectors"))
        sub.finish()
    return domains


def _read_matrix(root: Section) -> MatrixConfig | None:
    if "matrix" not in root.data:
        root.seen.add("matrix")
        return None
    section = root.table("matrix")
    homeserver = section.required_str("homeserver")
    if homeserver and not homeserver.startswith(("https://", "http://")):
        section.problem("homeserver", "must be a URL such as https://matrix.example.org")
    user_id = section.required_str("user_id")
    if user_id and (not user_id.startswith("@") or ":" not in user_id):
        section.problem("user_id", "must look like @repbot:example.org")
    password = section.secret("password")
    token = section.secret("access_token")
    device_id = section.get("device_id", str, "") or None
    if password is None and token is None:
        section.problem("password", "give a password (or password_file/_command) or an access_token")
    if token is not None and device_id is None:
        section.problem("device_id", "is required with access_token (E2EE keys belong to one device)")
    config = MatrixConfig(
        homeserver=homeserver.rstrip("/"),
        user_id=user_id,
        password=password,
        access_token=token,
        device_id=device_id,
        device_name=section.get("device_name", str, "repbot"),
        store_dir=section.get("store_dir", str, ""),
        pickle_key=section.secret("pickle_key"),
        rooms=section.strings("rooms"),
        alert_rooms=section.strings("alert_rooms"),
        admins=section.strings("admins", _admin_pattern),
        answer_strangers=section.get("answer_strangers", bool, False),
        rate_limit_per_hour=section.get("rate_limit_per_hour", int, 10),
        ignore_users=section.strings("ignore_users", _admin_pattern),
    )
    if config.rate_limit_per_hour < 1:
        section.problem("rate_limit_per_hour", "must be at least 1")
    section.finish()
    return config


def _admin_pattern(text: str) -> str:
    if not text.startswith("@") or ":" not in text:
        raise ValueError(f"{text!r} must be a user id (@alice:example.org) or a pattern (@*:example.org)")
    return text


def _read_schedule(root: Section) -> ScheduleConfig:
    section = root.table("schedule")
    defaults = ScheduleConfig()
    intervals = dict(defaults.intervals)
    for name in KNOWN_FAMILIES:
        if name in section.data:
            intervals[name] = section.duration(name, intervals.get(name, timedelta(hours=1)))
    config = ScheduleConfig(
        intervals=intervals,
        jitter=section.duration("jitter", defaults.jitter),
        first_run=section.duration("first_run", defaults.first_run),
    )
    section.finish()
    return config


def _read_alerts(root: Section) -> AlertsConfig:
    section = root.table("alerts")
    defaults = AlertsConfig()
    config = AlertsConfig(
        confirm=section.get("confirm", int, defaults.confirm),
        immediate_new_listing=section.get("immediate_new_listing", bool, defaults.immediate_new_listing),
        unknown_after=section.duration("unknown_after", defaults.unknown_after),
        retention=section.duration("retention", defaults.retention),
        retry_max=section.duration("retry_max", defaults.retry_max),
    )
    if config.confirm < 1:
        section.problem("confirm", "must be at least 1 (1 alerts on the first run that sees a change)")
    section.finish()
    return config


def _read_digest(root: Section) -> DigestConfig:
    section = root.table("digest")
    at = section.get("at", str, "08:00")
    hour, _, minute = at.partition(":")
    parsed = time(8, 0)
    if hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60:
        parsed = time(int(hour), int(minute))
    else:
        section.problem("at", f'expected a time of day such as "08:00", got {at!r}')
    zone = section.get("timezone", str, "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        section.problem("timezone", f'unknown time zone {zone!r}; use a name such as "Europe/Berlin" or "UTC"')
        zone = "UTC"
    config = DigestConfig(enabled=section.get("enabled", bool, True), at=parsed, timezone=zone)
    section.finish()
    return config


def _read_metrics(root: Section) -> MetricsConfig:
    section = root.table("metrics")
    listen = section.get("listen", str, "")
    section.finish()
    if not listen:
        return MetricsConfig()
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        section.problem("listen", f'expected HOST:PORT such as "127.0.0.1:9464" (IPv6: "[::1]:9464"), got {listen!r}')
        return MetricsConfig()
    return MetricsConfig(listen=listen, host=host, port=int(port))


# Sections read by other modules register a reader here; the result lands in Config.extra[name].
SECTION_READERS: dict[str, Callable[[Section], Any]] = {}
# Which module registers each such reader: imported only when the file has that section, so that
# `repbot check -c FILE` does not load the canary or provider code.
SECTION_MODULES = {
    "snds": "bot.provider_config",
    "feedback": "bot.provider_config",
    "postmaster": "bot.provider_config",
    "canary": "bot.canary_commands",
}


def parse_config(data: Mapping[str, Any], source: str = "") -> Config:
    """A Config from parsed TOML; raises ConfigError listing every problem."""
    problems: list[str] = []
    root = Section(dict(data), "", problems)
    dnsbl, dnsbl_key = _read_dnsbl(root)
    state = root.table("state")
    state_dir = state.get("dir", str, "./state")
    state.finish()
    extra: dict[str, Any] = {}
    for name in root.data:
        if name in SECTION_MODULES:
            importlib.import_module(SECTION_MODULES[name])
        reader = SECTION_READERS.get(name)
        if reader is not None:
            extra[name] = reader(root.table(name))
    config = Config(
        dns=_read_dns(root),
        dnsbl=dnsbl,
        dnsbl_key=dnsbl_key,
        monitor=_read_monitor(root),
        domains=_read_domains(root),
        matrix=_read_matrix(root),
        state_dir=state_dir,
        schedule=_read_schedule(root),
        alerts=_read_alerts(root),
        digest=_read_digest(root),
        metrics=_read_metrics(root),
        source=source,
        extra=extra,
    )
    root.finish()
    if problems:
        raise ConfigError(problems, source)
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """The Config in a TOML file; raises ConfigError (also for a missing file or bad TOML)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"cannot read the file: {error.strerror}"], source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"not valid TOML: {error}"], source) from None
    return parse_config(data, source)


def insecure_secrets_problem(config: Config) -> str | None:
    """Why the process must not start with this file, or None: inline secrets in a file others can read."""
    if not config.source:
        return None
    inline = [secret.key for secret in config.secrets() if secret.inline is not None]
    if not inline:
        return None
    try:
        mode = os.stat(config.source).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return (
            f"{config.source} holds {', '.join(inline)} inline and other users can read it "
            f"(mode {stat.S_IMODE(mode):o}). Run: chmod 600 {config.source} "
            f"(or move the secret to a *_file or *_command key)."
        )
    return None
