"""Google Postmaster Tools API v2: spam rate, authentication, TLS and delivery errors per day, and the sender
compliance status, for each domain.

The JSON shapes follow Google's discovery document `gmailpostmastertools:v2` (revision 20260512):
`POST /v2/domains/{d}/domainStats:query` and `POST /v2/domainStats:batchQuery` take `metricDefinitions`, a
`timeQuery` and page with `pageToken`; `GET /v2/domains/{d}/complianceStatus` gives one row per requirement.
The request and the answers' shapes are in `_postmaster_parse`; the pure `*_findings` functions here turn them
into Findings, and `check` does the HTTP. v1 (deprecated) lives
in `checks.providers.postmaster_v1` and runs when `settings.api == "v1"`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from checks.context import CheckContext
from checks.errors import ServiceError
from checks.i18n import N_, _, ngettext, percent
from checks.model import Finding, Status
from checks.providers._postmaster_parse import (
    ERROR_REASONS,
    METRICS,
    ComplianceRow,
    DomainDay,
    parse_compliance,
    parse_domain_stats,
    query_body,
)
from checks.providers.deadline import request_deadline, whole_request
from checks.providers.oauth import TokenError, TokenSource

__all__ = [
    "API_BASE",
    "GOOGLE_TOKEN_URL",
    "HINTS",
    "METRICS",
    "ComplianceRow",
    "DomainDay",
    "PostmasterError",
    "PostmasterSettings",
    "answered",
    "check",
    "compliance_findings",
    "day_findings",
    "finding",
    "parse_compliance",
    "parse_domain_stats",
    "query_body",
    "spam_summary",
    "token_failure",
    "unreachable",
]

API_BASE = "https://gmailpostmastertools.googleapis.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
# A batch result's error is a google.rpc.Status: a numeric code only; its HTTP status and name, as Google maps them.
RPC_CODES = {
    7: (403, "PERMISSION_DENIED"),
    5: (404, "NOT_FOUND"),
    16: (401, "UNAUTHENTICATED"),
    8: (429, "RESOURCE_EXHAUSTED"),
}
MAX_PAGES = 50  # 17 metrics a day, 200 stats a page: a week is one page; this only stops a looping server


@dataclass(frozen=True)
class PostmasterSettings:
    """Which domains, how to get a token, and Google's thresholds (0.1 % and 0.3 % for the spam rate)."""

    domains: tuple[str, ...]
    token: TokenSource = field(repr=False)
    base_url: str = API_BASE
    spam_rate_warn: float = 0.001
    spam_rate_fail: float = 0.003
    error_rate_warn: float = 0.05
    auth_rate_warn: float = 0.95
    tls_rate_warn: float = 0.99
    days: int = 7
    api: str = "v2"  # "v1" is deprecated: Google replaced trafficStats by domainStats
    page_size: int = 200


class PostmasterError(ServiceError):
    """Postmaster Tools gave no usable answer; `code` is http-NNN, unreachable, timeout or unparsable."""

    def __init__(self, code: str, message: str, status: str = "") -> None:
        self.status = status  # Google's error status, e.g. PERMISSION_DENIED
        super().__init__(code, message)


def finding(
    domain: str,
    what: str,
    status: Status,
    summary: str,
    evidence: dict[str, Any],
    code: str,
    now: datetime,
    advice: str = "",
) -> Finding:
    return Finding("postmaster", f"{domain} {what}", status, summary, evidence, advice, code, now)


def token_failure(domain: str, error: TokenError, now: datetime) -> Finding:
    """The finding for a token that could not be had; an invalid_grant names the 7-day "Testing" expiry."""
    if error.code == "invalid-grant":
        summary = _("Google refused the refresh token (invalid_grant): it was revoked or has expired")
        advice = _(
            'Refresh tokens of an OAuth app left in "Testing" expire after about 7 days: publish the app '
            "(or use a service account), then get a new refresh token (see docs/providers.md)."
        )
    else:
        summary = _("no Postmaster Tools token: {error}").format(error=error)
        advice = _("Check token_command or the stored refresh token.")
    return finding(
        domain, "postmaster", Status.UNKNOWN, summary, {"problem": error.code}, f"postmaster-{error.code}", now, advice
    )


# -- findings ---------------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return _("not reported") if value is None else percent(value, 2)


def day_findings(domain: str, day: DomainDay, settings: PostmasterSettings, now: datetime) -> list[Finding]:
    """Spam rate, authentication, TLS and delivery errors of one day; a metric Google did not report is left out."""
    shown = day.day.isoformat()
    found = []
    spam = day.get("spam_rate")
    if spam is not None:
        found.append(_spam(domain, spam, shown, settings, now))
    auth = {name: day.get(f"auth_{name}") for name in ("spf", "dkim", "dmarc")}
    if any(v is not None for v in auth.values()):
        low = [n.upper() for n, v in auth.items() if v is not None and v < settings.auth_rate_warn]
        rates = ", ".join(f"{n.upper()} {_pct(v)}" for n, v in auth.items())
        summary = _("{domain} on {day}: {rates} passed").format(domain=domain, day=shown, rates=rates)
        advice = (
            _("{methods} failed on over {share} of the mail to Gmail").format(
                methods=", ".join(low), share=percent(1 - settings.auth_rate_warn)
            )
            if low
            else ""
        )
        found.append(
            finding(
                domain,
                "authentication",
                Status.WARN if low else Status.OK,
                summary,
                {"day": shown, **auth},
                "gmail-auth-low" if low else "gmail-auth-ok",
                now,
                advice,
            )
        )
    tls = day.get("tls_inbound")
    if tls is not None:
        low_tls = tls < settings.tls_rate_warn
        summary = _("{rate} of {domain}'s mail reached Gmail over TLS on {day}").format(
            rate=_pct(tls), domain=domain, day=shown
        )
        advice = _("Send with opportunistic TLS at least (Postfix: smtp_tls_security_level = may)") if low_tls else ""
        found.append(
            finding(
                domain,
                "TLS",
                Status.WARN if low_tls else Status.OK,
                summary,
                {"day": shown, "rate": tls},
                "gmail-tls-low" if low_tls else "gmail-tls-ok",
                now,
                advice,
            )
        )
    found.extend(_errors(domain, day, shown, settings, now))
    return found


def _spam(domain: str, rate: float, shown: str, settings: PostmasterSettings, now: datetime) -> Finding:
    summary = spam_summary(domain, rate, shown)
    if rate >= settings.spam_rate_fail:
        status, code = Status.FAIL, "gmail-spam-high"
        advice = _("Over Google's {limit} limit: Gmail may reject or junk this domain's mail.").format(
            limit=percent(settings.spam_rate_fail, 1)
        )
    elif rate >= settings.spam_rate_warn:
        status, code = Status.WARN, "gmail-spam-elevated"
        advice = _("Over Google's {limit} target: check who you mail and how they unsubscribe.").format(
            limit=percent(settings.spam_rate_warn, 1)
        )
    else:
        status, code, advice = Status.OK, "gmail-spam-ok", ""
    return finding(domain, "spam rate", status, summary, {"day": shown, "rate": rate}, code, now, advice)


def spam_summary(domain: str, rate: float, shown: str) -> str:
    """The spam-rate sentence, v1's and v2's alike."""
    return _("Gmail users reported {rate} of {domain}'s mail as spam on {day}").format(
        rate=percent(rate, 2), domain=domain, day=shown
    )


def _errors(domain: str, day: DomainDay, shown: str, settings: PostmasterSettings, now: datetime) -> list[Finding]:
    by_class = {kind: day.get(f"errors_{kind}") for kind in ERROR_REASONS}
    if all(v is None for v in by_class.values()):
        return []
    reasons = {
        f"{kind}.{reason}": value
        for kind, names in ERROR_REASONS.items()
        for reason in names
        if (value := day.get(f"errors_{kind}.{reason}"))
    }
    total = sum(v or 0.0 for v in by_class.values())
    spike = total >= settings.error_rate_warn
    shares = {"reject": _pct(by_class["reject"]), "deferred": _pct(by_class["temp_fail"]), "domain": domain}
    if reasons:
        kind, _dot, reason = max(reasons, key=lambda name: reasons[name]).partition(".")
        said = _(
            "Gmail rejected {reject} and deferred {deferred} of {domain}'s mail on {day} (mostly {reason}, {kind})"
        )
        summary = said.format(**shares, day=shown, reason=reason, kind=kind)
    else:
        summary = _("Gmail rejected {reject} and deferred {deferred} of {domain}'s mail on {day}").format(
            **shares, day=shown
        )
    evidence = {"day": shown, "classes": by_class, "reasons": reasons}
    code = "gmail-errors-spike" if spike else "gmail-errors-ok"
    status = Status.WARN if spike else Status.OK
    return [finding(domain, "delivery errors", status, summary, evidence, code, now)]


REQUIREMENTS = {
    "SPF": ("SPF", N_("Publish an SPF record listing every host that sends for the domain.")),
    "DKIM": (
        "DKIM",
        N_("Sign every message with DKIM for the From: domain (2048-bit key) and publish the selector."),
    ),
    "SPF_AND_DKIM": (N_("SPF and DKIM"), N_("Bulk senders need both: pass SPF and sign with DKIM.")),
    "DMARC_POLICY": (N_("DMARC policy"), N_("Publish _dmarc.<domain> with at least p=none (and a rua= address).")),
    "DMARC_ALIGNMENT": (
        N_("DMARC alignment"),
        N_("Make the From: domain match the DKIM d= domain or the envelope-from (SPF) domain."),
    ),
    "MESSAGE_FORMATTING": (
        N_("message formatting"),
        N_("Send RFC 5322 messages: one From:, a Date: and a Message-ID:, no malformed headers."),
    ),
    "DNS_RECORDS": (
        N_("forward and reverse DNS"),
        N_("Give each sending IP a PTR whose name resolves back to that IP, and HELO with that name."),
    ),
    "ENCRYPTION": (N_("TLS encryption"), N_("Use TLS when sending to Gmail (Postfix: smtp_tls_security_level = may).")),
    "USER_REPORTED_SPAM_RATE": (
        N_("user-reported spam rate"),
        N_("Keep reported spam under 0.3 % (aim for 0.1 %): mail only people who asked for it."),
    ),
    "ONE_CLICK_UNSUBSCRIBE": (
        N_("one-click unsubscribe"),
        N_("Add List-Unsubscribe (an https URL) and List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)."),
    ),
    "HONOR_UNSUBSCRIBE": (
        N_("honoring unsubscribe"),
        N_("Stop mailing an address within 2 days of its unsubscribe request."),
    ),
}
REASONS = {
    "NO_UNSUB_GENERAL": N_("most messages have no one-click unsubscribe"),
    "NO_UNSUB_SPAM_REPORTS": N_("most messages reported as spam had no one-click unsubscribe"),
    "NO_UNSUB_PROMO_SPAM_REPORTS": N_("most promotional messages reported as spam had no one-click unsubscribe"),
    "NOT_HONORING": N_("unsubscribe requests are not honored"),
    "NOT_HONORING_TOO_FEW_CAMPAIGNS": N_("unsubscribe requests are not honored (too few campaigns to judge well)"),
    "NOT_HONORING_TOO_MANY_CAMPAIGNS": N_("unsubscribe requests are not honored (too many campaigns)"),
}


def _plain(code: str) -> str:
    """A code Google added after this table, said as it is: DMARC_POLICY is "dmarc policy"."""
    return code.lower().replace("_", " ")


def compliance_findings(domain: str, rows: Sequence[ComplianceRow], now: datetime) -> list[Finding]:
    """One finding per requirement: ok when compliant, warn when Google says it needs work (with what to change)."""
    if not rows:
        summary = _("Postmaster Tools has no compliance status for {domain} (too little Gmail traffic?)").format(
            domain=domain
        )
        return [finding(domain, "compliance", Status.UNKNOWN, summary, {}, "postmaster-compliance-no-data", now)]
    found = []
    for row in rows:
        label, advice = REQUIREMENTS.get(row.requirement, (_plain(row.requirement), ""))
        reason = REASONS.get(row.reason, _plain(row.reason))
        label, advice, reason = _(label), _(advice), _(reason)
        evidence = {"requirement": row.requirement, "state": row.state, "reason": row.reason}
        subject = f"compliance {row.requirement.lower()}"
        if row.state == "COMPLIANT":
            summary = _("Gmail: {domain} meets the {label} requirement").format(domain=domain, label=label)
            found.append(finding(domain, subject, Status.OK, summary, evidence, "gmail-compliant", now))
        elif row.state == "NEEDS_WORK":
            said = (
                _("Gmail: {domain} needs work on {label}: {reason}")
                if reason
                else _("Gmail: {domain} needs work on {label}")
            )
            summary = said.format(domain=domain, label=label, reason=reason)
            found.append(finding(domain, subject, Status.WARN, summary, evidence, "gmail-needs-work", now, advice))
        else:
            summary = _("Gmail gives no {label} status for {domain}").format(label=label, domain=domain)
            found.append(finding(domain, subject, Status.UNKNOWN, summary, evidence, "gmail-compliance-unset", now))
    return found


# -- fetching ---------------------------------------------------------------------------------------------------


NO_DATA = N_("no data")
# What an HTTP refusal most likely means, by status.
HINTS = {
    401: N_("the token was refused"),
    403: N_("the domain is not verified for this account, or the token lacks the postmaster scope"),
    404: N_("unknown domain"),
    429: N_("quota exceeded"),
}


def answered(http: str, hint: str) -> str:
    """The sentence for an HTTP refusal ("HTTP 403 PERMISSION_DENIED"), v1's and v2's alike."""
    return _("Postmaster Tools answered {http}: {hint}").format(http=http, hint=hint)


def unreachable(error: Exception) -> str:
    """The sentence for a network failure, named by the exception's type."""
    return _("cannot reach Postmaster Tools ({error})").format(error=type(error).__name__)


def _google_error(response: httpx.Response) -> PostmasterError:
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    status = str(error.get("status", "")) if isinstance(error, dict) else ""
    return _status_error(response.status_code, status)


def _status_error(http: int, status: str) -> PostmasterError:
    words = f"HTTP {http}" + (f" {status}" if status else "")
    return PostmasterError(f"http-{http}", answered(words, _(HINTS.get(http, NO_DATA))), status)


async def _call(ctx: CheckContext, method: str, url: str, token: str, body: Any = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    try:
        request = ctx.http().request(method, url, json=body, headers=headers)
        response = await whole_request(request, request_deadline(ctx))
    except httpx.TimeoutException:
        raise PostmasterError("unreachable", _("Postmaster Tools did not answer in time")) from None
    except httpx.HTTPError as error:
        raise PostmasterError("unreachable", unreachable(error)) from None
    if response.status_code != 200:
        raise _google_error(response)
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise PostmasterError("unparsable", _("Postmaster Tools sent something that is not a JSON object"))
    return payload


def _window(settings: PostmasterSettings, now: datetime) -> tuple[date, date]:
    return (now - timedelta(days=max(settings.days, 1))).date(), now.date()


async def _pages(
    domain: str, first: dict[str, Any], settings: PostmasterSettings, ctx: CheckContext, token: str
) -> list[Any]:
    """Every DomainStat of a query, following nextPageToken from the first page."""
    stats = list(first.get("domainStats") or [])
    following, seen = str(first.get("nextPageToken") or ""), set[str]()
    url = f"{settings.base_url.rstrip('/')}/v2/domains/{domain}/domainStats:query"
    start, end = _window(settings, ctx.clock())
    while following:
        if following in seen or len(seen) >= MAX_PAGES:
            said = ngettext(
                "Postmaster Tools kept paging ({count} page)", "Postmaster Tools kept paging ({count} pages)", len(seen)
            )
            raise PostmasterError("unparsable", said.format(count=len(seen)))
        seen.add(following)
        page = await _call(ctx, "POST", url, token, query_body(start, end, settings.page_size, following))
        stats += page.get("domainStats") or []
        following = str(page.get("nextPageToken") or "")
    return stats


async def _query(domain: str, settings: PostmasterSettings, ctx: CheckContext, token: str) -> list[Any]:
    start, end = _window(settings, ctx.clock())
    url = f"{settings.base_url.rstrip('/')}/v2/domains/{domain}/domainStats:query"
    first = await _call(ctx, "POST", url, token, query_body(start, end, settings.page_size))
    return await _pages(domain, first, settings, ctx, token)


async def _batch(
    domains: Sequence[str], settings: PostmasterSettings, ctx: CheckContext, token: str
) -> list[list[Any] | PostmasterError]:
    """Every domain's stats in one batchQuery (then its own pages); per domain when the batch is refused."""
    start, end = _window(settings, ctx.clock())
    requests = [{"parent": f"domains/{d}", **query_body(start, end, settings.page_size)} for d in domains]
    url = f"{settings.base_url.rstrip('/')}/v2/domainStats:batchQuery"
    try:
        answer = await _call(ctx, "POST", url, token, {"requests": requests})
    except PostmasterError as error:
        if error.code != "http-403":
            return [error] * len(domains)
        # One unverified domain refuses the whole batch: ask each alone, to say which.
        return list(await asyncio.gather(*(_safe(_query(d, settings, ctx, token)) for d in domains)))
    results = answer.get("results") or []
    if not isinstance(results, list) or len(results) != len(domains):
        said = _("batchQuery answered a different number of results")
        return [PostmasterError("unparsable", said)] * len(domains)

    async def one(domain: str, result: Any) -> list[Any] | PostmasterError:
        if isinstance(result, dict) and isinstance(result.get("error"), dict):
            http, status = RPC_CODES.get(int(result["error"].get("code", 0)), (500, "INTERNAL"))
            return _status_error(http, status)
        return await _safe(_pages(domain, (result or {}).get("response") or {}, settings, ctx, token))

    return list(await asyncio.gather(*(one(d, r) for d, r in zip(domains, results, strict=True))))


async def _safe(job: Awaitable[list[Any]]) -> list[Any] | PostmasterError:
    try:
        return await job
    except PostmasterError as error:
        return error


def _failure(domain: str, what: str, error: PostmasterError, now: datetime) -> Finding:
    evidence = {"problem": error.code, **({"status": error.status} if error.status else {})}
    return finding(domain, what, Status.UNKNOWN, str(error), evidence, f"postmaster-{error.code}", now)


def _stats_findings(
    domain: str, stats: list[Any] | PostmasterError, settings: PostmasterSettings, now: datetime
) -> list[Finding]:
    if isinstance(stats, PostmasterError):
        return [_failure(domain, "postmaster", stats, now)]
    try:
        days = parse_domain_stats(stats)
    except (ValueError, TypeError, KeyError) as error:
        unreadable = PostmasterError("unparsable", _("unreadable domainStats: {error}").format(error=error))
        return [_failure(domain, "postmaster", unreadable, now)]
    if not days:
        summary = ngettext(
            "Postmaster Tools has no data for {domain} in the last {days} day "
            "(normal below a few hundred Gmail messages a day)",
            "Postmaster Tools has no data for {domain} in the last {days} days "
            "(normal below a few hundred Gmail messages a day)",
            settings.days,
        ).format(domain=domain, days=settings.days)
        return [finding(domain, "postmaster", Status.UNKNOWN, summary, {}, "postmaster-no-data", now)]
    return day_findings(domain, days[-1], settings, now)


async def _compliance(domain: str, settings: PostmasterSettings, ctx: CheckContext, token: str) -> list[Finding]:
    url = f"{settings.base_url.rstrip('/')}/v2/domains/{domain}/complianceStatus"
    now = ctx.clock()
    try:
        rows = parse_compliance(await _call(ctx, "GET", url, token))
    except PostmasterError as error:
        return [_failure(domain, "compliance", error, now)]
    except (ValueError, TypeError, AttributeError) as error:
        unreadable = PostmasterError("unparsable", _("unreadable compliance: {error}").format(error=error))
        return [_failure(domain, "compliance", unreadable, now)]
    return compliance_findings(domain, rows, now)


async def check(settings: PostmasterSettings, ctx: CheckContext, domains: Sequence[str] = ()) -> list[Finding]:
    """Findings for each domain (default: the configured ones): the latest day's stats, then compliance."""
    wanted = list(domains or settings.domains)
    if settings.api == "v1":
        from checks.providers import postmaster_v1  # deprecated; loaded only for the accounts that ask for it

        return await postmaster_v1.check(settings, ctx, wanted)
    now = ctx.clock()
    try:
        token = await settings.token()
    except TokenError as error:
        return [token_failure(d, error, now) for d in wanted]
    if len(wanted) == 1:
        stats: list[list[Any] | PostmasterError] = [await _safe(_query(wanted[0], settings, ctx, token))]
    else:
        stats = await _batch(wanted, settings, ctx, token)
    compliance = await asyncio.gather(*(_compliance(d, settings, ctx, token) for d in wanted))
    return [
        f
        for domain, mine, rows in zip(wanted, stats, compliance, strict=True)
        for f in (*_stats_findings(domain, mine, settings, now), *rows)
    ]
