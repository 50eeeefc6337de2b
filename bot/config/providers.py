"""The [snds], [feedback] and [postmaster] sections: Config.snds, Config.feedback and Config.postmaster.

Secrets stay `Secret`s here (read on use); `*_settings()` turn them into the check library's settings, whose
secret fields are plain callables, so `checks` never imports `bot`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from bot.config.credentials import credential, optional_credential
from bot.config.loader import Config, _ip
from bot.config.mailbox import ImapConfig, read_imap
from bot.config.reader import Secret, Section
from bot.secrets import register
from checks import CheckContext, parse_domain
from checks.providers.deadline import request_deadline
from checks.providers.feedback import DEFAULT_VERP, FeedbackSettings
from checks.providers.oauth import RefreshTokenSource as OAuthRefresh
from checks.providers.oauth import TokenSource
from checks.providers.postmaster import API_BASE as POSTMASTER_BASE
from checks.providers.postmaster import GOOGLE_TOKEN_URL, PostmasterSettings
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
    attested: date | None = None


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


async def _no_token() -> str:
    return ""


_POSTMASTER = PostmasterSettings((), _no_token)  # only its defaults are read
POSTMASTER_TOKEN_FILE = "postmaster-oauth.json"


@dataclass(frozen=True)
class PostmasterConfig:
    """[postmaster]: v2 unless `api = "v1"` (deprecated); a token_command, or the refresh-token grant."""

    domains: tuple[str, ...] = ()
    token: Secret | None = field(default=None)
    api: str = _POSTMASTER.api
    client_id: str = ""
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    token_url: str = GOOGLE_TOKEN_URL
    base_url: str = POSTMASTER_BASE
    days: int = _POSTMASTER.days
    spam_rate_warn: float = _POSTMASTER.spam_rate_warn
    spam_rate_fail: float = _POSTMASTER.spam_rate_fail
    error_rate_warn: float = _POSTMASTER.error_rate_warn
    auth_rate_warn: float = _POSTMASTER.auth_rate_warn
    tls_rate_warn: float = _POSTMASTER.tls_rate_warn


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
        attested=_day(section, "attested"),
    )
    if method == "api" and config.token is None and not config.client_id:
        section.problem("token", "the api method needs token (or token_command), or client_id for a refresh token")
    if config.days < 1:
        section.problem("days", "must be at least 1")
    section.finish()
    return config


def _day(section: Section, name: str) -> date | None:
    """An optional YYYY-MM-DD (a TOML date or a string)."""
    value: Any = section.get(name, object, None)
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        section.problem(name, f"{str(value)[:20]!r} is not a date (YYYY-MM-DD)")
        return None


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
    d = PostmasterConfig()
    client_id = section.get("client_id", str, d.client_id)
    config = PostmasterConfig(
        domains=section.strings("domains", parse_domain),
        token=section.secret("token", required=not client_id),
        api=section.choice("api", d.api, ("v2", "v1")),
        client_id=client_id,
        client_secret=section.secret("client_secret"),
        refresh_token=section.secret("refresh_token"),
        token_url=section.get("token_url", str, d.token_url),
        base_url=section.get("base_url", str, d.base_url),
        days=section.get("days", int, d.days),
        spam_rate_warn=section.get("spam_rate_warn", float, d.spam_rate_warn),
        spam_rate_fail=section.get("spam_rate_fail", float, d.spam_rate_fail),
        error_rate_warn=section.get("error_rate_warn", float, d.error_rate_warn),
        auth_rate_warn=section.get("auth_rate_warn", float, d.auth_rate_warn),
        tls_rate_warn=section.get("tls_rate_warn", float, d.tls_rate_warn),
    )
    if config.days < 1:
        section.problem("days", "must be at least 1")
    if config.spam_rate_warn > config.spam_rate_fail:
        section.problem("spam_rate_warn", "must not be above spam_rate_fail")
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
        state_dir=str(config.state_dir),
        attested=snds.attested,
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


def postmaster_settings(config: Config, ctx: CheckContext) -> PostmasterSettings | None:
    """The check library's Postmaster settings, or None without a [postmaster] section."""
    pm = config.postmaster
    if pm is None:
        return None
    if pm.token is not None:
        token: Any = command_token(credential(pm.token))
    else:
        token = OAuthRefresh(
            ctx.http,
            config.state_dir,
            pm.client_id,
            token_file=POSTMASTER_TOKEN_FILE,
            token_url=pm.token_url,
            seed=optional_credential(pm.refresh_token),
            name="Postmaster",
            client_secret=optional_credential(pm.client_secret),
        )
    return PostmasterSettings(
        pm.domains or config.monitor.domains,
        token,
        base_url=pm.base_url,
        spam_rate_warn=pm.spam_rate_warn,
        spam_rate_fail=pm.spam_rate_fail,
        error_rate_warn=pm.error_rate_warn,
        auth_rate_warn=pm.auth_rate_warn,
        tls_rate_warn=pm.tls_rate_warn,
        days=pm.days,
        api=pm.api,
    )
