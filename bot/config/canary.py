"""The [canary] section: the sender, the submission server, the sender's and each seed's mailbox, the mail log.

Read into Config.canary; `canary_settings` turns it into the check library's settings per seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.config.credentials import optional_credential
from bot.config.loader import Config
from bot.config.mailbox import ImapConfig, read_imap
from bot.config.reader import MAX_TIMEOUT, Secret, Section
from checks import CheckContext
from checks.canary.maillog import LogSource
from checks.canary.probe import CanarySettings, SubmissionSettings
from checks.mailbox import MailboxSettings

__all__ = ["CanaryConfig", "SeedConfig", "canary_settings", "read_canary"]


@dataclass(frozen=True)
class SeedConfig:
    name: str
    address: str
    imap: ImapConfig
    junk: tuple[str, ...] = ()
    deadline: timedelta | None = None


@dataclass(frozen=True)
class CanaryConfig:
    sender: str
    seeds: tuple[SeedConfig, ...]
    send_via: str = "submission"
    submission: SubmissionSettings | None = None
    submission_password: Secret | None = None
    sender_imap: ImapConfig | None = None
    log: LogSource | None = None
    deadline: timedelta = timedelta(minutes=30)
    poll_interval: timedelta = timedelta(minutes=1)
    found_action: str = "move"
    move_to: str | None = None
    snds: bool = True


def _imap(section: Section) -> ImapConfig:
    one = "give exactly one of password(_file/_command) or token(_file/_command)"
    imap = read_imap(section, one_credential=one)
    section.finish()
    return imap


def _seeds(root: Section) -> tuple[SeedConfig, ...]:
    raw = root.get("seed", list, [])
    seeds = []
    for index, item in enumerate(raw):
        section = Section(item, root.key(f"seed[{index}]"), root.problems)
        name, address = section.required_str("name"), section.required_str("address")
        imap = _imap(section.table("imap"))
        junk = section.strings("junk")
        seeds.append(SeedConfig(name, address, imap, junk, section.duration("deadline", None)))
        section.finish()
    if not seeds:
        root.problem("seed", "give at least one [[canary.seed]] (name, address, imap)")
    return tuple(seeds)


def _submission(section: Section) -> tuple[SubmissionSettings, Secret | None]:
    security = section.choice("security", "starttls", ("starttls", "tls", "plain"))
    password = section.secret("password")
    user = section.get("user", str, "") or None
    port = section.number("port", int, 587, low=1, high=65535)
    timeout = section.number("timeout", float, 30.0, low=0, high=MAX_TIMEOUT)
    settings = SubmissionSettings(
        section.required_str("host"), port, security, user, optional_credential(password), timeout
    )
    section.finish()
    return settings, password


def _log(section: Section) -> LogSource | None:
    path = section.get("path", str, "") or None
    command_line = section.strings("command") or None
    fmt = section.choice("format", "auto", ("auto", "postfix", "opensmtpd"))
    section.finish()
    if path is None and command_line is None:
        return None
    return LogSource(path=path, command=command_line, format=fmt)


def read_canary(section: Section) -> CanaryConfig:
    """[canary] with its [canary.submission], [canary.sender_imap], [canary.log] and [[canary.seed]] tables."""
    send_via = section.choice("send_via", "submission", ("submission", "direct"))
    submission, password = (None, None)
    if "submission" in section.data or send_via == "submission":
        submission, password = _submission(section.table("submission"))
    sender_imap = _imap(section.table("sender_imap")) if "sender_imap" in section.data else None
    config = CanaryConfig(
        sender=section.required_str("sender"),
        seeds=_seeds(section),
        send_via=send_via,
        submission=submission,
        submission_password=password,
        sender_imap=sender_imap,
        log=_log(section.table("log")),
        deadline=section.duration("deadline", timedelta(minutes=30)),
        poll_interval=section.duration("poll_interval", timedelta(minutes=1)),
        found_action=section.choice("found_action", "move", ("move", "delete", "keep")),
        move_to=section.get("move_to", str, "") or None,
        snds=section.get("snds", bool, True),
    )
    section.finish()
    return config


def canary_settings(config: Config, ctx: CheckContext) -> dict[str, CanarySettings]:
    """The check library's settings per seed name; empty without [canary]."""
    canary = config.canary
    if canary is None:
        return {}
    sender_box = canary.sender_imap.settings(ctx) if canary.sender_imap else None
    return {seed.name: _seed_settings(canary, seed, sender_box, ctx) for seed in canary.seeds}


def _seed_settings(
    canary: CanaryConfig, seed: SeedConfig, sender_box: MailboxSettings | None, ctx: CheckContext
) -> CanarySettings:
    return CanarySettings(
        name=seed.name,
        seed=seed.address,
        sender=canary.sender,
        seed_mailbox=seed.imap.settings(ctx),
        sender_mailbox=sender_box,
        send_via=canary.send_via,
        submission=canary.submission,
        deadline=seed.deadline or canary.deadline,
        poll_interval=canary.poll_interval.total_seconds(),
        junk_names=seed.junk,
        found_action=canary.found_action,
        move_to=canary.move_to,
        log=canary.log,
    )
