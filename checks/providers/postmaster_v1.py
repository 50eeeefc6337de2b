"""Google Postmaster Tools v1 (deprecated, `[postmaster] api = "v1"`): the latest day's domain and IP reputation,
spam rate and delivery errors.

Google replaced v1 by v2 (`checks.providers.postmaster`); this stays for accounts not yet moved.
`parse_traffic_stats` is pure (JSON text in, the latest `DayStats` out); `check` fetches
`{base}/v1/domains/{domain}/trafficStats` with a bearer token from the settings' token source.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from checks.context import CheckContext
from checks.i18n import N_, _, percent
from checks.model import Finding, Status
from checks.providers.deadline import request_deadline, whole_request
from checks.providers.oauth import TokenError
from checks.providers.postmaster import (
    HINTS,
    NO_DATA,
    PostmasterSettings,
    answered,
    finding,
    spam_summary,
    token_failure,
    unreachable,
)

__all__ = ["DayStats", "check", "findings_for_day", "parse_traffic_stats"]

REPUTATION = {"HIGH": Status.OK, "MEDIUM": Status.OK, "LOW": Status.WARN, "BAD": Status.FAIL}
# v1 names only the unverified domain for a 403, as it always has.
_HINTS = {**HINTS, 403: N_("the domain is not verified for this account")}


@dataclass(frozen=True)
class DayStats:
    """One day of traffic stats for one domain."""

    day: str  # YYYYMMDD, as in the resource name
    domain_reputation: str
    ip_reputations: tuple[tuple[str, tuple[str, ...]], ...]  # (reputation, sample IPs)
    spam_ratio: float | None
    delivery_errors: tuple[tuple[str, str, float], ...]  # (class, type, ratio)

    @property
    def error_ratio(self) -> float:
        return sum(ratio for _, _, ratio in self.delivery_errors)


def parse_traffic_stats(text: str) -> DayStats | None:
    """The latest day in a trafficStats list answer, or None when Google has no data; raises ValueError."""
    payload = json.loads(text)
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    stats = payload.get("trafficStats") or []
    if not isinstance(stats, list):
        raise ValueError("trafficStats is not a list")
    days = [s for s in stats if isinstance(s, dict) and "name" in s]
    if not days:
        return None
    latest = max(days, key=lambda s: str(s["name"]).rsplit("/", 1)[-1])
    return _day(latest)


def _day(item: dict[str, Any]) -> DayStats:
    ips = tuple(
        (str(r.get("reputation", "REPUTATION_CATEGORY_UNSPECIFIED")), tuple(str(ip) for ip in r.get("sampleIps", ())))
        for r in item.get("ipReputations", ())
    )
    errors = tuple(
        (str(e.get("errorClass", "")), str(e.get("errorType", "")), float(e.get("errorRatio", 0.0)))
        for e in item.get("deliveryErrors", ())
    )
    spam = item.get("userReportedSpamRatio")
    return DayStats(
        day=str(item["name"]).rsplit("/", 1)[-1],
        domain_reputation=str(item.get("domainReputation", "REPUTATION_CATEGORY_UNSPECIFIED")),
        ip_reputations=ips,
        spam_ratio=float(spam) if spam is not None else None,
        delivery_errors=errors,
    )


def findings_for_day(domain: str, stats: DayStats, settings: PostmasterSettings, now: datetime) -> list[Finding]:
    """Reputation (domain, then each IP group), spam rate and delivery errors for one day."""
    shown = f"{stats.day[:4]}-{stats.day[4:6]}-{stats.day[6:]}"
    rep = stats.domain_reputation
    findings = [
        finding(
            domain,
            "reputation",
            REPUTATION.get(rep, Status.UNKNOWN),
            _("Gmail rates {domain} {reputation} on {day}").format(domain=domain, reputation=rep, day=shown),
            {"day": shown, "reputation": rep},
            f"gmail-{rep.lower()}",
            now,
            _("Gmail sends more of this domain's mail to spam: look at complaints and list hygiene.")
            if rep in ("LOW", "BAD")
            else "",
        )
    ]
    findings.extend(_ip_reputation(domain, stats.ip_reputations, shown, now))
    if stats.spam_ratio is not None:
        high = stats.spam_ratio >= settings.spam_rate_fail
        summary = spam_summary(domain, stats.spam_ratio, shown)
        findings.append(
            finding(
                domain,
                "spam rate",
                Status.WARN if high else Status.OK,
                summary,
                {"day": shown, "ratio": stats.spam_ratio},
                "gmail-spam-high" if high else "gmail-spam-ok",
                now,
            )
        )
    spike = stats.error_ratio >= settings.error_rate_warn
    worst = max(stats.delivery_errors, key=lambda e: e[2], default=("", "", 0.0))
    share = percent(stats.error_ratio, 1)
    if worst[1]:
        said = _("Gmail refused or deferred {share} of {domain}'s mail on {day} (mostly {reason}, {kind})")
        summary = said.format(share=share, domain=domain, day=shown, reason=worst[1], kind=worst[0])
    else:
        said = _("Gmail refused or deferred {share} of {domain}'s mail on {day}")
        summary = said.format(share=share, domain=domain, day=shown)
    findings.append(
        finding(
            domain,
            "delivery errors",
            Status.WARN if spike else Status.OK,
            summary,
            {"day": shown, "errors": [list(e) for e in stats.delivery_errors]},
            "gmail-errors-spike" if spike else "gmail-errors-ok",
            now,
        )
    )
    return findings


def _ip_reputation(
    domain: str, groups: Sequence[tuple[str, Sequence[str]]], shown: str, now: datetime
) -> list[Finding]:
    """One finding for every IP group, under one subject, so a recovered IP resolves the alert."""
    if not groups:
        return []
    rated = {level: list(ips) for level, ips in groups}
    poor = [(level, ips) for level, ips in rated.items() if REPUTATION.get(level, Status.OK) is not Status.OK]
    worst = max((REPUTATION[level] for level, _ips in poor), key=lambda status: status.severity, default=Status.OK)
    if poor:
        said = _("Gmail rates IPs {ips} {reputation} on {day}")
        summary = "; ".join(
            said.format(ips=", ".join(ips) or _("(no sample)"), reputation=level, day=shown) for level, ips in poor
        )
    else:
        said = _("Gmail rates every sampled IP {reputations} on {day}")
        summary = said.format(reputations=_(" or ").join(rated), day=shown)
    code = f"gmail-ip-{poor[-1][0].lower()}" if poor else "gmail-ip-ok"
    evidence = {"day": shown, "reputation": {level: ips for level, ips in rated.items()}}
    return [finding(domain, "IP reputation", worst, summary, evidence, code, now)]


async def _domain(domain: str, settings: PostmasterSettings, ctx: CheckContext, token: str) -> list[Finding]:
    now = ctx.clock()
    start, end = (now - timedelta(days=7)).date(), now.date()
    params = {
        "startDate.year": str(start.year),
        "startDate.month": str(start.month),
        "startDate.day": str(start.day),
        "endDate.year": str(end.year),
        "endDate.month": str(end.month),
        "endDate.day": str(end.day),
    }
    url = f"{settings.base_url.rstrip('/')}/v1/domains/{domain}/trafficStats"
    try:
        request = ctx.http().get(url, params=params, headers={"Authorization": f"Bearer {token}"})
        response = await whole_request(request, request_deadline(ctx))
    except httpx.HTTPError as error:
        return [
            finding(
                domain,
                "postmaster",
                Status.UNKNOWN,
                unreachable(error),
                {},
                "postmaster-unreachable",
                now,
            )
        ]
    if response.status_code != 200:
        hint = _(_HINTS.get(response.status_code, NO_DATA))
        summary = answered(f"HTTP {response.status_code}", hint)
        return [
            finding(
                domain,
                "postmaster",
                Status.UNKNOWN,
                summary,
                {"http": response.status_code},
                f"postmaster-http-{response.status_code}",
                now,
            )
        ]
    try:
        stats = parse_traffic_stats(response.text)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return [
            finding(
                domain,
                "postmaster",
                Status.UNKNOWN,
                _("unreadable Postmaster answer: {error}").format(error=error),
                {},
                "postmaster-unparsable",
                now,
            )
        ]
    if stats is None:
        summary = _(
            "Postmaster Tools has no data for {domain} this week (normal below a few hundred Gmail messages a day)"
        ).format(domain=domain)
        return [finding(domain, "postmaster", Status.UNKNOWN, summary, {}, "postmaster-no-data", now)]
    return findings_for_day(domain, stats, settings, now)


async def check(settings: PostmasterSettings, ctx: CheckContext, domains: Sequence[str] = ()) -> list[Finding]:
    """Findings for each domain (default: the configured ones), fetched at the same time."""
    try:
        token = await settings.token()
    except TokenError as error:
        return [token_failure(d, error, ctx.clock()) for d in domains or settings.domains]
    results = await asyncio.gather(*(_domain(d, settings, ctx, token) for d in domains or settings.domains))
    return [finding for result in results for finding in result]
