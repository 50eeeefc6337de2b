"""The [snds], [feedback] and [postmaster] sections: Config.snds, Config.feedback and Config.postmaster.

Secrets stay `Secret`s here (read on use); `*_settings()` turn them into the check library's settings, whose
secret fields are plain callables, so `checks` never imports `bot`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from bot.config.credentials import credential, optional_credential
from bot.config.loader import Config, _ip
from bot.config.mailbox import ImapConfig, read_imap
from bot.config.reader import Secret, Section
from bot.secrets import register
from checks import CheckContext, parse_domain
from checks.providers.deadline import request_deadline
from checks.providers.feedback import DEFAULT_VERP, FeedbackSettings
from checks.providers.oauth import TokenSource
from checks.providers.postmaster import API_BASE as POSTMASTER_BASE
from checks.providers.postmaster import PostmasterSettings
from checks.providers.snds import TOKEN_URL, RefreshTokenSource, SndsSettings, command_token

__all__ = [
    "FeedbackConfig",
    "PostmasterConfig",
    "SndsConfig",
    "feedback_settings",
    "postmaster_settings",
    "snds_settings",
]


# The check library's defaults are the documented ones; the config restates none of them.
_SNDS = SndsSettings()


@dataclass(frozen=True)
class SndsConfig:
    method: str = _SNDS.method
    key: Secret | None = None
    token: Secret | None = None
    refresh_token: Secret | None = None
    client_id: str = ""
    token_url: str = TOKEN_URL
    scope: str = ""
    legacy_base: str = _SNDS.legacy_base
    api_base: str = _SNDS.api_base
    ips: tuple[str, ...] = ()
    days: int = _SNDS.days
    complaint_warn_percent: float = _SNDS.complaint_warn_percent
    trap_fail: int = _SNDS.trap_fail


@dataclass(frozen=True)
class FeedbackConfig:
    imap: ImapConfig
    folder: str = "INBOX"
    mark: str = "flag"
    keyword: str = "$RepbotSeen"
    processed_folder: str = "Processed"
    max_bytes: int = 2_000_000
    verp: str = DEFAULT_VERP
    window_days: int = 7


@dataclass(frozen=True)
class PostmasterConfig:
    domains: tuple[str, ...] = ()
    token: Secret | None = field(default=None)
    base_url: str = POSTMASTER_BASE
    spam_rate_warn: float = 0.003
    error_rate_warn: float = 0.05


def read_snds(section: Section) -> SndsConfig:
    defaults = SndsConfig()
    method = section.choice("method", defaults.method, ("key", "api"))
    config = SndsConfig(
        method=method,
        key=section.secret("key", required=method == "key"),
        token=section.secret("token"),
        refresh_token=section.secret("refresh_token"),
        client_id=section.get("client_id", str, defaults.client_id),
        token_url=section.get("token_url", str, defaults.token_url),
        scope=section.get("scope", str, defaults.scope),
        legacy_base=section.get("legacy_base", str, defaults.legacy_base),
        api_base=section.get("api_base", str, defaults.api_base),
        ips=section.strings("ips", _ip),
        days=section.number("days", int, defaults.days, low=1, high=90),  # one request a day, SNDS keeps ~90
        complaint_warn_percent=section.get("complaint_warn_percent", float, defaults.complaint_warn_percent),
        trap_fail=section.get("trap_fail", int, defaults.trap_fail),
    )
    if method == "api" and config.token is None and not config.client_id:
        section.problem("token", "the api method needs token (or token_command), or client_id for a refresh token")
    if config.days < 1:
        section.problem("days", "must be at least 1")
    section.finish()
    return config


def read_feedback(section: Section) -> FeedbackConfig:
    one = "give one of password (_file/_command) or token (_file/_command, for XOAUTH2)"
    config = FeedbackConfig(
        imap=read_imap(section, one_credential=one, port_without_tls=143),
        folder=section.get("folder", str, "INBOX"),
        mark=section.choice("mark", "flag", ("flag", "move")),
        keyword=section.get("keyword", str, "$RepbotSeen"),
        processed_folder=section.get("processed_folder", str, "Processed"),
        max_bytes=section.number("max_bytes", int, 2_000_000, low=1024, high=100_000_000),
        verp=section.get("verp", str, DEFAULT_VERP),
        window_days=section.number("window_days", int, 7, low=1, high=3650),
    )
    section.finish()
    return config


def read_postmaster(section: Section) -> PostmasterConfig:
    config = PostmasterConfig(
        domains=section.strings("domains", parse_domain),
        token=section.secret("token", required=True),
        base_url=section.get("base_url", str, POSTMASTER_BASE),
        spam_rate_warn=section.get("spam_rate_warn", float, 0.003),
        error_rate_warn=section.get("error_rate_warn", float, 0.05),
    )
    section.finish()
    return config


def masked_tokens(source: TokenSource) -> TokenSource:
    """The token source, each access token it hands out registered for masking (an API may echo it)."""

    async def token() -> str:
        value = await source()
        register(value)
        return value

    return token


def snds_settings(config: Config, ctx: CheckContext) -> SndsSettings | None:
    """The check library's SNDS settings, or None without an [snds] section."""
    snds = config.snds
    if snds is None:
        return None
    token: Any = None
    if snds.method == "api":
        if snds.token is not None:
            token = command_token(credential(snds.token))
        else:
            seed = optional_credential(snds.refresh_token)
            state = os.path.join(config.state_dir)
            token = RefreshTokenSource(
                ctx.http,
                state,
                snds.client_id,
                token_url=snds.token_url,
                scope=snds.scope,
                seed=seed,
                deadline=request_deadline(ctx),
            )
    return SndsSettings(
        method=snds.method,
        key=optional_credential(snds.key),
        token=None if token is None else masked_tokens(token),
        legacy_base=snds.legacy_base,
        api_base=snds.api_base,
        ips=snds.ips or config.monitor.ips,
        days=snds.days,
        complaint_warn_percent=snds.complaint_warn_percent,
        trap_fail=snds.trap_fail,
    )


def feedback_settings(config: Config, ctx: CheckContext) -> FeedbackSettings | None:
    """The check library's feedback settings, or None without a [feedback] section."""
    fb = config.feedback
    if fb is None:
        return None
    return FeedbackSettings(
        fb.imap.settings(ctx),
        fb.folder,
        fb.mark,
        fb.keyword,
        fb.processed_folder,
        fb.max_bytes,
        fb.verp,
        fb.window_days,
    )


def postmaster_settings(config: Config) -> PostmasterSettings | None:
    pm = config.postmaster
    if pm is None or pm.token is None:
        return None
    return PostmasterSettings(
        pm.domains or config.monitor.domains, credential(pm.token), pm.base_url, pm.spam_rate_warn, pm.error_rate_warn
    )
