"""The [schedule], [alerts], [digest] and [metrics] sections: job intervals, alert rules, the digest, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config.reader import Section
from bot.durations import parse_duration

__all__ = [
    "DEFAULT_INTERVALS",
    "KNOWN_FAMILIES",
    "AlertsConfig",
    "DigestConfig",
    "MetricsConfig",
    "ScheduleConfig",
    "read_alerts",
    "read_digest",
    "read_metrics",
    "read_schedule",
]


# The monitor's job families and how often each runs by default.
# snds, complaints, canary and reports run only when their section is configured; SNDS data changes once a day.
# Reports arrive once a day per reporter; an hourly read keeps the mailbox small and the news fresh.
DEFAULT_INTERVALS = {
    "blocklists": "30m",
    "domains": "6h",
    "tls": "12h",
    "snds": "6h",
    "complaints": "15m",
    "canary": "6h",
    "postmaster": "12h",
    "reports": "1h",
}
KNOWN_FAMILIES = ("blocklists", "domains", "tls", "snds", "complaints", "canary", "postmaster", "reports")


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
    timeline_weekday: str = ""  # "monday".."sunday": that day's digest also posts the week's timeline picture


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: where the Prometheus endpoint listens ("127.0.0.1:9464"); empty: no endpoint."""

    listen: str = ""
    host: str = "127.0.0.1"
    port: int = 0


def read_schedule(root: Section) -> ScheduleConfig:
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


def read_alerts(root: Section) -> AlertsConfig:
    section = root.table("alerts")
    defaults = AlertsConfig()
    config = AlertsConfig(
        confirm=section.number("confirm", int, defaults.confirm, low=1, high=100),
        immediate_new_listing=section.get("immediate_new_listing", bool, defaults.immediate_new_listing),
        unknown_after=section.duration("unknown_after", defaults.unknown_after),
        retention=section.duration("retention", defaults.retention),
        retry_max=section.duration("retry_max", defaults.retry_max),
    )
    section.finish()
    return config


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def read_digest(root: Section) -> DigestConfig:
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
    weekday = section.get("timeline_weekday", str, "").lower()
    if weekday and weekday not in WEEKDAYS:
        section.problem("timeline_weekday", f'expected a day such as "monday", got {weekday!r}')
        weekday = ""
    config = DigestConfig(
        enabled=section.get("enabled", bool, True), at=parsed, timezone=zone, timeline_weekday=weekday
    )
    section.finish()
    return config


def read_metrics(root: Section) -> MetricsConfig:
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
