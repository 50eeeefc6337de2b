"""The TOML configuration: read once into frozen dataclasses, every problem named by its key.

Secrets may be given inline (`password = "..."`), from a file (`password_file = "/run/credentials/..."`)
or from a command that prints them (`password_command = "pass show repbot"`), as isync and neomutt users
expect. They are resolved when used, never logged, and masked in reprs (`bot.config.reader`).
The [schedule], [alerts], [digest] and [metrics] sections live in `bot.config.sections`; the names
other modules import from here are re-exported.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config.reader import Secret, SecretError, Section
from bot.config.sections import (
    AlertsConfig,
    DigestConfig,
    MetricsConfig,
    ScheduleConfig,
    read_alerts,
    read_digest,
    read_metrics,
    read_schedule,
)
from checks import DnsblSettings, TargetError, parse_domain, parse_nameserver, parse_target

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
    "Section",
    "load_config",
    "parse_config",
]


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


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()
    timeout: float = 5.0
    concurrency: int = 200


@dataclass(frozen=True)
class DomainSettings:
    dkim_selectors: tuple[str, ...] = ()
    # The IPs that send this domain's mail, for its SPF verdict; None: every monitored IP.
    sending_ips: tuple[str, ...] | None = None


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

    def domain_sending_ips(self) -> dict[str, tuple[str, ...]]:
        """The domains whose sending IPs are configured: domain -> IPs (the rest use every monitored IP)."""
        return {name: s.sending_ips for name, s in self.domains.items() if s.sending_ips is not None}

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
        sending = sub.strings("sending_ips", _ip) if "sending_ips" in sub.data else None
        domains[domain] = DomainSettings(dkim_selectors=sub.strings("dkim_selectors"), sending_ips=sending)
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


# Sections read by other modules register a reader here; the result lands in Config.extra[name].
SECTION_READERS: dict[str, Callable[[Section], Any]] = {}
# Which module registers each such reader: imported only when the file has that section, so that
# `repbot check -c FILE` does not load the canary or provider code.
SECTION_MODULES = {
    "snds": "bot.config.providers",
    "feedback": "bot.config.providers",
    "postmaster": "bot.config.providers",
    "canary": "bot.config.canary",
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
        schedule=read_schedule(root),
        alerts=read_alerts(root),
        digest=read_digest(root),
        metrics=read_metrics(root),
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
