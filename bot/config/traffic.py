"""The [traffic] section: which MTA log to follow, how often, the rate window and thresholds, extra provider families.

Read into `Config.traffic` (loaded only for files that have the section); `traffic_families` builds the check
library's provider families (the shipped ones plus [[traffic.family]], with the smarthosts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.config.loader import Config
from bot.config.reader import Section
from checks.errors import CatalogError
from checks.traffic.providers import Families, load_families, parse_family

__all__ = ["TrafficConfig", "read_traffic", "traffic_config", "traffic_families"]


@dataclass(frozen=True)
class TrafficConfig:
    """[traffic]: a log file (rotations followed) or a journal command, and when to speak."""

    path: str | None = None
    command: tuple[str, ...] = ()
    start: str = "end"  # where a first start begins: the end of the file (only new mail) or its beginning
    poll_interval: timedelta = timedelta(seconds=30)
    window: timedelta = timedelta(hours=1)
    deferral_rate: float = 0.30
    bounce_rate: float = 0.05
    min_attempts: int = 20
    smarthosts: tuple[str, ...] = ()
    families: tuple[Mapping[str, Any], ...] = ()
    keep_days: int = 35

    @property
    def source(self) -> str:
        """What is followed, for messages: the file, or the command's program."""
        return self.path or (self.command[0] if self.command else "nothing")


def _families(root: Section) -> tuple[Mapping[str, Any], ...]:
    raw = root.get("family", list, [])
    rows: list[Mapping[str, Any]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            root.problem(f"family[{index}]", "must be a table with key, name and relays or domains")
            continue
        try:
            parse_family(item)
        except CatalogError as error:
            root.problem(f"family[{index}].{error.field}", error.problem)
            continue
        rows.append(dict(item))
    return tuple(rows)


def _rate(section: Section, name: str, default: float) -> float:
    value = section.get(name, float, default)
    if not 0 < value <= 1:
        section.problem(name, f"must be a fraction above 0 and at most 1 (0.3 means 30 %), got {value}")
        return default
    return value


def read_traffic(section: Section) -> TrafficConfig:
    """[traffic] with its [[traffic.family]] tables."""
    defaults = TrafficConfig()
    path = section.get("path", str, "") or None
    command = section.strings("command")
    if (path is None) == (not command):
        section.problem("path", "give exactly one of path (the MTA's log file) or command (a journalctl command)")
    if any(word in ("-f", "--follow") for word in command):
        section.problem("command", "drop -f/--follow: repbot runs the command each poll, after the stored cursor")
    config = TrafficConfig(
        path=path,
        command=command,
        start=section.choice("start", defaults.start, ("end", "beginning")),
        poll_interval=section.duration("poll_interval", defaults.poll_interval),
        window=section.duration("window", defaults.window),
        deferral_rate=_rate(section, "deferral_rate", defaults.deferral_rate),
        bounce_rate=_rate(section, "bounce_rate", defaults.bounce_rate),
        min_attempts=section.get("min_attempts", int, defaults.min_attempts),
        smarthosts=tuple(host.lower() for host in section.strings("smarthosts")),
        families=_families(section),
        keep_days=section.get("keep_days", int, defaults.keep_days),
    )
    if config.poll_interval < timedelta(seconds=1):
        section.problem("poll_interval", "must be at least 1s")
    if config.window < config.poll_interval:
        section.problem("window", "must be at least the poll_interval")
    if config.min_attempts < 1 or config.keep_days < 1:
        section.problem("min_attempts" if config.min_attempts < 1 else "keep_days", "must be at least 1")
    section.finish()
    return config


def traffic_config(config: Config) -> TrafficConfig | None:
    """The [traffic] section, or None when the config has none."""
    return config.traffic


def traffic_families(traffic: TrafficConfig | None) -> Families:
    """The shipped provider families plus the config's, with its smarthosts."""
    if traffic is None:
        return load_families()
    return load_families(traffic.families, traffic.smarthosts)
