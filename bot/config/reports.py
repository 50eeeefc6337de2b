"""The [reports] section: the mailbox that rua=/TLS-RPT reports arrive in, and the thresholds of their alerts.

Read into `Config.reports` (by `read_reports`, loaded only for files that have the section); `reports_settings`
turns it into the check library's settings, whose secrets are plain callables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.config.loader import Config
from bot.config.mailbox import ImapConfig, read_imap
from bot.config.reader import Section
from checks import CheckContext, parse_domain
from checks.reports.collect import DEFAULT_KEYWORD, DEFAULT_MAX_BYTES, ReportsSettings
from checks.reports.findings import Thresholds
from checks.reports.store import STORE_FILE

__all__ = ["ReportsConfig", "read_reports", "reports_settings", "store_path"]

_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class ReportsConfig:
    imap: ImapConfig
    folder: str = "INBOX"
    mark: str = "flag"
    keyword: str = DEFAULT_KEYWORD
    processed_folder: str = "Processed"
    max_bytes: int = DEFAULT_MAX_BYTES
    domains: tuple[str, ...] = ()
    thresholds: Thresholds = _THRESHOLDS


def read_reports(section: Section) -> ReportsConfig:
    one = "give one of password (_file/_command) or token (_file/_command, for XOAUTH2)"
    imap = read_imap(section, one_credential=one)
    thresholds = Thresholds(
        fail_percent=section.get("fail_percent", float, _THRESHOLDS.fail_percent),
        min_messages=section.get("min_messages", int, _THRESHOLDS.min_messages),
        quiet_days=section.get("quiet_days", int, _THRESHOLDS.quiet_days),
        window_days=section.get("window_days", int, _THRESHOLDS.window_days),
        tls_fail_percent=section.get("tls_fail_percent", float, _THRESHOLDS.tls_fail_percent),
    )
    config = ReportsConfig(
        imap=imap,
        folder=section.get("folder", str, "INBOX"),
        mark=section.choice("mark", "flag", ("flag", "move")),
        keyword=section.get("keyword", str, DEFAULT_KEYWORD),
        processed_folder=section.get("processed_folder", str, "Processed"),
        max_bytes=section.get("max_bytes", int, DEFAULT_MAX_BYTES),
        domains=section.strings("domains", parse_domain),
        thresholds=thresholds,
    )
    for name in ("quiet_days", "window_days", "min_messages"):
        if getattr(thresholds, name) < 1:
            section.problem(name, "must be at least 1")
    if not 0 < thresholds.fail_percent <= 100:
        section.problem("fail_percent", "must be a percentage above 0, at most 100")
    section.finish()
    return config


def store_path(config: Config) -> Path:
    """Where the report store lives: beside the monitor's state."""
    return Path(config.state_dir) / STORE_FILE


def reports_settings(config: Config, ctx: CheckContext) -> ReportsSettings | None:
    """The check library's mailbox settings, or None without a [reports] section."""
    found = config.reports
    if found is None:
        return None
    return ReportsSettings(
        mailbox=found.imap.settings(ctx),
        folder=found.folder,
        mark=found.mark,
        keyword=found.keyword,
        processed_folder=found.processed_folder,
        max_bytes=found.max_bytes,
    )
