"""The TOML configuration: read once into frozen dataclasses, every problem named by its key.

Secrets may be given inline (`password = "..."`), from a file (`password_file = "/run/credentials/..."`)
or from a command that prints them (`password_command = "pass show repbot"`), as isync and neomutt users
expect. They are resolved when used, never logged, and masked in reprs (`bot.config.reader`).
The [schedule], [alerts], [digest] and [metrics] sections live in `bot.config.sections`; the names
other modules import from here are re-exported.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.config.matrix import MatrixConfig, read_matrix
from bot.config.reader import MAX_TIMEOUT, Secret, SecretError, Section
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
from bot.i18n import _, ngettext
from checks import DnsblSettings, TargetError, parse_domain, parse_nameserver, parse_target
from checks.dnsbl.catalog import load_catalog
from checks.errors import CatalogError

if TYPE_CHECKING:
    from bot.config.canary import CanaryConfig
    from bot.config.providers import FeedbackConfig, PostmasterConfig, SndsConfig
    from bot.config.reports import ReportsConfig
    from bot.config.traffic import TrafficConfig

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


T = TypeVar("T")


class ConfigError(Exception):
    """Raised when the configuration has problems; `problems` lists each as 'key: what is wrong'."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        if len(problems) == 1:
            super().__init__(f"{where}{problems[0]}")
        else:
            head = ngettext(
                "{count} problems in the configuration:", "{count} problems in the configuration:", len(problems)
            ).format(count=len(problems))
            super().__init__(f"{where}{head}\n  " + "\n  ".join(problems))


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
    snds: SndsConfig | None = None
    feedback: FeedbackConfig | None = None
    postmaster: PostmasterConfig | None = None
    canary: CanaryConfig | None = None
    reports: ReportsConfig | None = None
    traffic: TrafficConfig | None = None
    language: str = "en"  # [bot] language: the rooms' default, and the monitor's
    source: str = ""

    def dkim_selectors(self) -> dict[str, tuple[str, ...]]:
        return {name: settings.dkim_selectors for name, settings in self.domains.items()}

    def domain_sending_ips(self) -> dict[str, tuple[str, ...]]:
        """The domains whose sending IPs are configured: domain -> IPs (the rest use every monitored IP)."""
        return {name: s.sending_ips for name, s in self.domains.items() if s.sending_ips is not None}

    def secrets(self) -> list[Secret]:
        """Every secret the configuration holds, for the file-permission check."""
        return _secrets_within(self)


def _secrets_within(value: Any) -> list[Secret]:
    """Every Secret inside a value (a section, the whole Config), however nested: a new section needs no code here."""
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
        timeout=section.number("timeout", float, 5.0, low=0, high=MAX_TIMEOUT),
        concurrency=section.number("concurrency", int, 200, low=1, high=10_000),
    )
    section.finish()
    return config


def _read_dnsbl(root: Section) -> tuple[DnsblSettings, Secret | None]:
    section = root.table("dnsbl")
    key = section.secret("dqs_key")
    disabled = frozenset(name.lower().rstrip(".") for name in section.strings("disabled"))
    zones = section.get("zones", dict, {})
    settings = DnsblSettings(disabled=disabled, extra_zones=zones)
    try:
        load_catalog(settings)  # the zone tables as every IP check will read them
    except CatalogError as error:
        where = "disabled" if error.field == "disabled" else f"zones.{error.zone}.{error.field}".replace(".*", "")
        section.problem(where, f"{error.problem} (zone {error.zone!r})" if where == "disabled" else error.problem)
    section.finish()
    # The key is read only when lookups start: `config check` must not run the operator's commands.
    return settings, key


def _read_bot(root: Section) -> str:
    from bot.i18n import LANGUAGES

    section = root.table("bot")
    language = section.choice("language", "en", LANGUAGES)
    section.finish()
    return language


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


def _optional(root: Section, name: str, reader: Callable[[Section], T]) -> T | None:
    """The section `name` as `reader` reads it, or None when the file has no such section."""
    if name not in root.data:
        root.seen.add(name)  # so that a misspelt [sdns] is told "did you mean snds"
        return None
    return reader(root.table(name))


# The optional sections' readers import their module only when the file has the section, so that
# `repbot check -c FILE` does not load the canary or provider code (aiosmtplib, aioimaplib, httpx).


def _read_snds(section: Section) -> SndsConfig:
    from bot.config.providers import read_snds

    return read_snds(section)


def _read_feedback(section: Section) -> FeedbackConfig:
    from bot.config.providers import read_feedback

    return read_feedback(section)


def _read_postmaster(section: Section) -> PostmasterConfig:
    from bot.config.providers import read_postmaster

    return read_postmaster(section)


def _read_canary(section: Section) -> CanaryConfig:
    from bot.config.canary import read_canary

    return read_canary(section)


def _read_reports(section: Section) -> ReportsConfig:
    from bot.config.reports import read_reports

    return read_reports(section)


def _read_traffic(section: Section) -> TrafficConfig:
    from bot.config.traffic import read_traffic

    return read_traffic(section)


def parse_config(data: Mapping[str, Any], source: str = "") -> Config:
    """A Config from parsed TOML; raises ConfigError listing every problem."""
    problems: list[str] = []
    root = Section(dict(data), "", problems)
    dnsbl, dnsbl_key = _read_dnsbl(root)
    state = root.table("state")
    state_dir = state.get("dir", str, "./state")
    state.finish()
    config = Config(
        dns=_read_dns(root),
        dnsbl=dnsbl,
        dnsbl_key=dnsbl_key,
        monitor=_read_monitor(root),
        domains=_read_domains(root),
        matrix=read_matrix(root),
        state_dir=state_dir,
        schedule=read_schedule(root),
        alerts=read_alerts(root),
        digest=read_digest(root),
        metrics=read_metrics(root),
        snds=_optional(root, "snds", _read_snds),
        feedback=_optional(root, "feedback", _read_feedback),
        postmaster=_optional(root, "postmaster", _read_postmaster),
        canary=_optional(root, "canary", _read_canary),
        reports=_optional(root, "reports", _read_reports),
        traffic=_optional(root, "traffic", _read_traffic),
        language=_read_bot(root),
        source=source,
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
        raise ConfigError([_("cannot read the file: {reason}").format(reason=error.strerror)], source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_("not valid TOML: {error}").format(error=error)], source) from None
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
