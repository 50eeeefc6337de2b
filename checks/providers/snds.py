"""Microsoft SNDS: the legacy key CSV (`data.aspx`, `ipStatus.aspx`) and the 2026 REST API, behind one interface.

The pure `parse_*` functions work from text; `fetch_data`/`fetch_status` do the HTTP; `check` turns both into
Findings. An HTML login page, a 404 (expired key), an empty answer and "no data" are told apart from data and
reported as such, never parsed. The key and tokens never reach a Finding or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import TypeVar

import httpx

from checks.context import CheckContext
from checks.errors import SndsAnswerError
from checks.i18n import N_, _
from checks.model import Finding, Status
from checks.providers import oauth, snds_rules
from checks.providers._snds_parse import (
    COLOURS,
    BlockRange,
    DataRow,
    classify_answer,
    dedupe_rows,
    is_no_data,
    parse_complaint_rate,
    parse_data_csv,
    parse_data_json,
    parse_ip_status,
    parse_status_json,
)
from checks.providers.deadline import DEFAULT_DEADLINE, request_deadline, whole_request
from checks.providers.oauth import TOKEN_URL, TokenSource, command_token

__all__ = [
    "TOKEN_FILE",
    "TOKEN_URL",
    "BlockRange",
    "DataRow",
    "RefreshTokenSource",
    "SndsAnswerError",
    "SndsSettings",
    "TokenSource",
    "check",
    "command_token",
    "fetch_data",
    "fetch_status",
    "findings_for_rows",
    "findings_for_status",
    "parse_complaint_rate",
    "parse_data_csv",
    "parse_data_json",
    "parse_ip_status",
    "parse_status_json",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

LEGACY_BASE = "https://sendersupport.olc.protection.outlook.com/snds"
API_BASE = "https://substrate.office.com/ip-domain-management-snds/snds"


@dataclass(frozen=True)
class SndsSettings:
    """How to reach SNDS and what counts as bad; `key` and `token` are secret sources, never shown."""

    method: str = "key"  # "key" (legacy CSV) or "api" (REST with OAuth 2.0)
    key: Callable[[], str] | None = field(default=None, repr=False)
    token: TokenSource | None = field(default=None, repr=False)
    legacy_base: str = LEGACY_BASE
    api_base: str = API_BASE
    ips: tuple[str, ...] = ()
    days: int = 3
    complaint_warn_percent: float = 0.3
    trap_fail: int = 5
    state_dir: str = ""  # where the key's first working day is kept (snds_rules); "" keeps none
    attested: date | None = None  # the last IP-ownership attestation, for the 10-month reminder


# -- fetching -------------------------------------------------------------------------------------------


class _ScrubKey(logging.Filter):
    """Masks `key=` query values in httpx's request log lines: the legacy key travels in the URL."""

    _pattern = re.compile(r"([?&]key=)[^&\s\"']+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(self._pattern.sub(r"\1[secure]", str(a)) if _stringy(a) else a for a in args)
        record.msg = self._pattern.sub(r"\1[secure]", str(record.msg))
        return True


def _stringy(value: object) -> bool:
    return isinstance(value, str | httpx.URL)


logging.getLogger("httpx").addFilter(_ScrubKey())


async def _get(ctx: CheckContext, url: str, params: dict[str, str], headers: dict[str, str]) -> str:
    try:
        response = await whole_request(ctx.http().get(url, params=params, headers=headers), request_deadline(ctx))
    except httpx.TimeoutException:
        raise SndsAnswerError("timeout", _("SNDS did not answer in time")) from None
    except httpx.HTTPError as error:
        said = _("cannot reach SNDS ({error})").format(error=type(error).__name__)
        raise SndsAnswerError("unreachable", said) from None
    classify_answer(response.status_code, response.headers.get("content-type", ""), response.text)
    return response.text


async def _auth(settings: SndsSettings) -> tuple[dict[str, str], dict[str, str]]:
    """The query parameters and headers that carry the credentials of the configured method."""
    if settings.method == "api":
        if settings.token is None:
            raise SndsAnswerError("config", _("SNDS REST API chosen but no token source configured"))
        try:
            token = await settings.token()
        except oauth.TokenError as error:
            raise SndsAnswerError(error.code, str(error)) from None
        return {}, {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if settings.key is None:
        raise SndsAnswerError("config", _("SNDS legacy access chosen but no key configured"))
    return {"key": await asyncio.to_thread(settings.key)}, {}


async def _data_for_day(settings: SndsSettings, ctx: CheckContext, day: date | None, ip: str | None) -> list[DataRow]:
    params, headers = await _auth(settings)
    if settings.method == "api":
        shown = (day or ctx.clock().date() - timedelta(days=1)).isoformat()
        url = f"{settings.api_base.rstrip('/')}/api/report/data/{shown}" + (f"/{ip}" if ip else "")
    else:
        url = f"{settings.legacy_base.rstrip('/')}/data.aspx"
        if day is not None:
            params["date"] = day.strftime("%m%d%y")
    try:
        text = await _get(ctx, url, params, headers)
    except SndsAnswerError as error:
        if error.code == "empty":
            # SNDS answers an empty body when it has no data for the key's IPs; one rule whatever `days` is:
            # no data (ok, snds-no-data), as the ipStatus list's empty answer means nothing is blocked.
            return []
        raise
    return _parse(text, parse_data_json, parse_data_csv, "data")


async def fetch_data(settings: SndsSettings, ctx: CheckContext, ip: str | None = None) -> list[DataRow]:
    """The SNDS rows of the last `settings.days` days, one per (ip, day); raises SndsAnswerError."""
    today = ctx.clock().date()
    days = [today - timedelta(days=n) for n in range(1, max(settings.days, 1) + 1)]
    if settings.method == "key" and settings.days <= 1:
        batches = [await _data_for_day(settings, ctx, None, ip)]
    else:
        batches = list(await asyncio.gather(*(_data_for_day(settings, ctx, day, ip) for day in days)))
    return dedupe_rows(row for batch in batches for row in batch if ip is None or row.ip == ip)


async def fetch_status(settings: SndsSettings, ctx: CheckContext) -> list[BlockRange]:
    """The ipStatus ranges (blocked IPs and why); raises SndsAnswerError."""
    params, headers = await _auth(settings)
    if settings.method == "api":
        url = f"{settings.api_base.rstrip('/')}/api/report/status/ip"
    else:
        url = f"{settings.legacy_base.rstrip('/')}/ipStatus.aspx"
    try:
        text = await _get(ctx, url, params, headers)
    except SndsAnswerError as error:
        if error.code == "empty":
            return []  # an empty ipStatus list means nothing is blocked
        raise
    return _parse(text, parse_status_json, parse_ip_status, "ipStatus")


def _parse(text: str, from_json: Callable[[str], list[_T]], from_csv: Callable[[str], list[_T]], what: str) -> list[_T]:
    """An answer's items by its format (REST JSON or legacy CSV); none for "no data"; raises SndsAnswerError."""
    if is_no_data(text):
        return []
    try:
        return from_json(text) if text.lstrip().startswith(("[", "{")) else from_csv(text)
    except (ValueError, TypeError, AttributeError) as error:
        said = _("SNDS {what} could not be read: {error}").format(what=what, error=error)
        raise SndsAnswerError("unparsable", said) from None


# -- OAuth 2.0 tokens for the REST API (the sources live in checks.providers.oauth) ----------------------------------

TOKEN_FILE = "snds-oauth.json"


class RefreshTokenSource(oauth.RefreshTokenSource):
    """The refresh-token grant for SNDS: Microsoft's endpoint, the token kept in `snds-oauth.json`."""

    def __init__(
        self,
        client: Callable[[], httpx.AsyncClient],
        state_dir: str | os.PathLike[str],
        client_id: str,
        *,
        token_url: str = TOKEN_URL,
        scope: str = "",
        seed: Callable[[], str] | None = None,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        super().__init__(
            client,
            state_dir,
            client_id,
            token_file=TOKEN_FILE,
            token_url=token_url,
            scope=scope,
            seed=seed,
            name="SNDS",
            deadline=deadline,
        )

    async def __call__(self) -> str:
        """An access token; raises SndsAnswerError (auth, unreachable) when none can be had."""
        try:
            return await super().__call__()
        except oauth.TokenError as error:
            raise SndsAnswerError(error.code, str(error)) from None


# -- findings -------------------------------------------------------------------------------------------

_ADVICE = {
    "key-expired": N_(
        "Automated-access links expire after 30 days: create a new one in SNDS, or move to the REST API."
    ),
    "login-page": N_("SNDS wants a login: renew the automated-access key or the OAuth token (see docs/providers.md)."),
    "auth": N_("Renew the OAuth token (token_command or the stored refresh token)."),
    "invalid-grant": N_("The refresh token was revoked or has expired: sign in again and store a new one."),
}


def findings_for_rows(
    rows: Sequence[DataRow], ips: Sequence[str], settings: SndsSettings, now: datetime, latest_only: bool = True
) -> list[Finding]:
    """Per IP: the latest day's colour, complaint rate and trap hits (every day unless latest_only)."""
    wanted = list(ips) or sorted({row.ip for row in rows})
    findings = []
    for ip in wanted:
        mine = [row for row in rows if row.ip == ip]
        if not mine:
            summary = _("SNDS has no data for {ip}: normal for an IP sending under about 100 messages a day").format(
                ip=ip
            )
            # SNDS answered: it has nothing on this IP. Not a failure to check, so not unknown.
            findings.append(Finding("snds", ip, Status.OK, summary, {"ip": ip}, code="snds-no-data"))
            continue
        for row in mine[-1:] if latest_only else mine:
            findings.append(_row_finding(row, ip if latest_only else f"{ip} {row.day}", settings, now))
    return findings


def _row_finding(row: DataRow, subject: str, settings: SndsSettings, now: datetime) -> Finding:
    statuses = [COLOURS[row.colour]]
    advice = []
    if row.colour != "GREEN":
        filtered = (
            _("{colour}: Microsoft filtered most of this mail as spam")
            if row.colour == "RED"
            else _("{colour}: Microsoft filtered some of this mail as spam")
        )
        advice.append(filtered.format(colour=row.colour))
    rate = row.complaint_percent
    if rate is not None and not row.complaint_text.startswith("<") and rate >= settings.complaint_warn_percent:
        statuses.append(Status.WARN)
        advice.append(
            _("complaint rate {rate} is over {limit}%").format(
                rate=row.complaint_text, limit=settings.complaint_warn_percent
            )
        )
    if row.trap_hits:
        statuses.append(Status.FAIL if row.trap_hits >= settings.trap_fail else Status.WARN)
        advice.append(_("{hits} spam-trap hits: clean the list that reached them").format(hits=row.trap_hits))
    status = max(statuses, key=lambda s: s.severity)
    complaints = row.complaint_text or _("none reported")
    summary = _(
        "{ip} on {day}: {colour}, complaint rate {complaints}, {hits} trap hits, {recipients} recipients"
    ).format(
        ip=row.ip, day=row.day, colour=row.colour, complaints=complaints, hits=row.trap_hits, recipients=row.recipients
    )
    evidence = {
        "ip": row.ip,
        "day": row.day.isoformat(),
        "activity": f"{row.start:%Y-%m-%d %H:%M} to {row.end:%Y-%m-%d %H:%M} (Pacific)",
        "colour": row.colour,
        "complaint_rate": row.complaint_text,
        "trap_hits": row.trap_hits,
        "recipients": row.recipients,
        "data_commands": row.data_commands,
        "helo": row.helo,
    }
    return Finding("snds", subject, status, summary, evidence, "; ".join(advice), f"snds-{row.colour.lower()}", now)


def findings_for_status(ranges: Sequence[BlockRange], ips: Sequence[str], now: datetime) -> list[Finding]:
    """Per configured IP: blocked (fail, with the reason) or not; without IPs, every blocked address."""
    blocked = [r for r in ranges if r.blocked]
    if not ips:
        ips = [address for r in blocked for address in r.addresses()]
    findings = []
    for ip in ips:
        hits = [r for r in blocked if ip in r]
        if hits:
            reasons = "; ".join(dict.fromkeys(r.reason or "no reason given" for r in hits))
            evidence = {"ip": ip, "ranges": [f"{r.first}-{r.last}" for r in hits], "reason": reasons}
            advice = _("Ask Microsoft to lift it: https://olcsupport.office.com/ (sender support form)")
            summary = _("Microsoft blocks {ip}: {reasons}").format(ip=ip, reasons=reasons)
            findings.append(Finding("snds", f"{ip} block", Status.FAIL, summary, evidence, advice, "snds-blocked", now))
        else:
            summary = _("Microsoft does not block {ip}").format(ip=ip)
            findings.append(
                Finding("snds", f"{ip} block", Status.OK, summary, {"ip": ip}, code="snds-not-blocked", observed_at=now)
            )
    return findings


def _failure(error: SndsAnswerError, subject: str, now: datetime) -> Finding:
    return Finding(
        "snds",
        subject,
        Status.UNKNOWN,
        str(error),
        {"problem": error.code},
        _(_ADVICE.get(error.code, "")),
        f"snds-{error.code}",
        now,
    )


async def check(settings: SndsSettings, ctx: CheckContext, ip: str | None = None) -> list[Finding]:
    """SNDS findings for the configured IPs (or one): colour, complaints and traps per IP, then block status."""
    ips = [ip] if ip else list(settings.ips or ctx.sending_ips)
    now = ctx.clock()
    data, status = await asyncio.gather(
        fetch_data(settings, ctx, ip), fetch_status(settings, ctx), return_exceptions=True
    )
    findings: list[Finding] = []
    for result, subject in ((data, "SNDS data"), (status, "SNDS ipStatus")):
        if isinstance(result, SndsAnswerError):
            log.warning("SNDS: %s (%s)", result, result.code)
            findings.append(_failure(result, subject, now))
        elif isinstance(result, BaseException):
            raise result
    if isinstance(data, list):
        findings += findings_for_rows(data, ips, settings, now)
    if isinstance(status, list):
        findings += findings_for_status(status, ips, now)
    working = isinstance(data, list) or isinstance(status, list)
    findings = await _key_rules(settings, findings, working, now)
    if settings.attested is not None:
        findings += snds_rules.attestation_findings(settings.attested, now)
    return findings


async def _key_rules(settings: SndsSettings, findings: list[Finding], working: bool, now: datetime) -> list[Finding]:
    """The legacy key's 30 days: its age while it works, the expiry date once SNDS says it expired."""
    if settings.method != "key" or not settings.state_dir or settings.key is None:
        return findings
    ledger = snds_rules.KeyLedger(settings.state_dir)
    try:
        mark = snds_rules.fingerprint(await asyncio.to_thread(settings.key))
    except Exception:  # the key source failed: the fetch said so already
        return findings
    if working:
        return findings + snds_rules.key_age_findings(ledger.saw_working(mark, now.date()), now)
    record = ledger.load()
    record = record if record is not None and record.fingerprint == mark else None
    dated = []
    for item in findings:
        if item.code in ("snds-key-expired", "snds-login-page"):  # an expired link may also get the login page
            evidence = {**item.evidence, "expired_around": str(record.expires) if record else "not known"}
            item = replace(item, summary=f"{item.summary}: {snds_rules.expired_summary(record)}", evidence=evidence)
        dated.append(item)
    return dated
