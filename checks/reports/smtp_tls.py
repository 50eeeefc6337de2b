"""SMTP TLS reports (RFC 8460 §4): JSON, one report per document, validated field by field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from checks.i18n import N_, _
from checks.reports.aggregate import ReportError
from checks.reports.model import MAX_RANGE, TlsFailure, TlsPolicy, TlsReport

__all__ = ["FIXES", "RESULT_TYPES", "fix", "parse_tls_report"]

# RFC 8460 §4.3 result types, each with what the receiving domain's operator does about it.
FIXES = {
    "starttls-not-supported": N_("the MX did not offer STARTTLS: enable TLS on it (smtpd_tls_security_level = may)"),
    "certificate-host-mismatch": N_("the MX certificate does not name the MX host: reissue it with that name"),
    "certificate-expired": N_("the MX certificate expired: renew it and reload the MTA"),
    "certificate-not-trusted": N_("the MX certificate is self-signed or its chain is missing: serve the full chain"),
    "validation-failure": N_(
        "the certificate or chain failed validation: check the chain and the names the MTA serves"
    ),
    "tlsa-invalid": N_("the TLSA record does not match the certificate: publish the new key's TLSA before a rollover"),
    "dnssec-invalid": N_("DNSSEC validation failed for the MX or TLSA lookup: fix the zone's signatures or DS"),
    "dane-required": N_("DANE was required but no usable TLSA was found: publish TLSA records for each MX"),
    "sts-policy-fetch-error": N_(
        "the MTA-STS policy could not be fetched: https://mta-sts.DOMAIN/.well-known/mta-sts.txt "
        "must answer 200 with a valid certificate"
    ),
    "sts-policy-invalid": N_("the MTA-STS policy does not parse: fix its version, mode, mx and max_age lines"),
    "sts-webpki-invalid": N_("the mta-sts.DOMAIN web server's certificate is not valid: renew or fix it"),
}
RESULT_TYPES = frozenset(FIXES)


def fix(result_type: str, domain: str) -> str:
    """What `domain`'s operator does about a result type, in the reader's language."""
    return (_(FIXES[result_type]) if result_type in FIXES else _("see the report")).replace("DOMAIN", domain)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(_("{where} is not a JSON object").format(where=where), "schema")
    return value


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(
            _("{where} {value} is not a count").format(where=where, value=repr(str(value)[:30])), "schema"
        )
    return value


def _moment(value: Any, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        said = _("{where} {value} is not an RFC 3339 date-time").format(where=where, value=repr(str(value)[:40]))
        raise ReportError(said, "date") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _failure(item: Any, where: str, warnings: list[str]) -> TlsFailure:
    detail = _object(item, where)
    result_type = str(detail.get("result-type", "")).lower()
    if result_type not in RESULT_TYPES:
        said = _("{where}: result-type {value} is not in RFC 8460")
        warnings.append(said.format(where=where, value=repr(result_type[:40])))
    return TlsFailure(
        result_type=result_type,
        count=_count(detail.get("failed-session-count"), f"{where} failed-session-count"),
        receiving_mx_hostname=str(detail.get("receiving-mx-hostname", "")).lower().rstrip("."),
        receiving_ip=str(detail.get("receiving-ip", "")),
        sending_mta_ip=str(detail.get("sending-mta-ip", "")),
        failure_reason_code=str(detail.get("failure-reason-code", ""))[:200],
        additional_information=str(detail.get("additional-information", ""))[:300],
    )


def _policy(item: Any, number: int, warnings: list[str], budget: int) -> TlsPolicy:
    where = f"policies[{number}]"
    entry = _object(item, where)
    policy = _object(entry.get("policy"), f"{where}.policy")
    summary = _object(entry.get("summary"), f"{where}.summary")
    details = entry.get("failure-details", [])
    if not isinstance(details, list):
        raise ReportError(_("{where}.failure-details is not a list").format(where=where), "schema")
    if len(details) > budget:
        raise ReportError(_("more than {cap} failure details, the cap").format(cap=budget), "too-many-records")
    domain = str(policy.get("policy-domain", "")).lower().rstrip(".")
    if not domain:
        raise ReportError(_("{where}.policy names no policy-domain").format(where=where), "policy")
    mx = policy.get("mx-host", [])
    return TlsPolicy(
        policy_type=str(policy.get("policy-type", "")).lower(),
        policy_domain=domain,
        successful=_count(summary.get("total-successful-session-count"), f"{where} total-successful-session-count"),
        failed=_count(summary.get("total-failure-session-count"), f"{where} total-failure-session-count"),
        failures=tuple(_failure(d, f"{where}.failure-details[{i}]", warnings) for i, d in enumerate(details)),
        mx_hosts=tuple(str(m) for m in (mx if isinstance(mx, list) else [mx])),
    )


def parse_tls_report(data: bytes, source: str = "", max_records: int = 200_000) -> tuple[TlsReport, list[str]]:
    """The report in `data` and its warnings; raises ReportError when it cannot be counted."""
    if not data.strip():
        raise ReportError(_("empty file"), "empty")
    try:
        document = json.loads(data)
    except UnicodeDecodeError as error:
        raise ReportError(_("not valid UTF-8 at byte {offset}").format(offset=error.start), "utf-8") from None
    except json.JSONDecodeError as error:
        raise ReportError(_("not valid JSON: {error}").format(error=error), "json") from None
    top = _object(document, _("the report"))
    warnings: list[str] = []
    report_id = str(top.get("report-id", "")).strip()
    reporter = str(top.get("organization-name", "")).strip()
    if not report_id or not reporter:
        raise ReportError(_("the report lacks report-id or organization-name"), "metadata")
    dates = _object(top.get("date-range"), "date-range")
    begin = _moment(dates.get("start-datetime"), "start-datetime")
    end = _moment(dates.get("end-datetime"), "end-datetime")
    if end < begin:
        raise ReportError(_("date-range ends before it begins"), "date")
    if end - begin > MAX_RANGE:
        hours = f"{(end - begin).total_seconds() / 3600:.0f}"
        warnings.append(_("date range covers {hours} hours (RFC 8460: one day)").format(hours=hours))
    items = top.get("policies")
    if not isinstance(items, list) or not items:
        raise ReportError(_("the report has no policies"), "policy")
    policies = tuple(_policy(item, n, warnings, max_records) for n, item in enumerate(items))
    contact = str(top.get("contact-info", ""))
    return TlsReport(
        reporter, contact, report_id, begin.astimezone(UTC), end.astimezone(UTC), policies, source
    ), warnings
