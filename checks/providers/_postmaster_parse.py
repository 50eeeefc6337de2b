"""Postmaster Tools v2's JSON: the QueryDomainStatsRequest repbot sends, and the DomainStat and
DomainComplianceStatus answers read into values (field names from the discovery document, revision 20260512).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

__all__ = [
    "ERROR_REASONS",
    "METRICS",
    "ComplianceRow",
    "DomainDay",
    "parse_compliance",
    "parse_domain_stats",
    "query_body",
]

ERROR_REASONS = {
    "reject": (
        "bad_attachment",
        "bad_or_missing_ptr_record",
        "ip_in_rbls",
        "low_domain_reputation",
        "low_ip_reputation",
        "spammy_content",
        "stamp_policy_error",
        "other",
    ),
    "temp_fail": ("anomalous_traffic_pattern", "other"),
}

# (our metric name, standardMetric, filter): the names come back in DomainStat.metric.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("spam_rate", "SPAM_RATE", ""),
    ("auth_spf", "AUTH_SUCCESS_RATE", 'auth_type = "spf"'),
    ("auth_dkim", "AUTH_SUCCESS_RATE", 'auth_type = "dkim"'),
    ("auth_dmarc", "AUTH_SUCCESS_RATE", 'auth_type = "dmarc"'),
    ("tls_inbound", "TLS_ENCRYPTION_RATE", 'traffic_direction = "inbound"'),
    *((f"errors_{kind}", "DELIVERY_ERROR_RATE", f'error_type = "{kind}"') for kind in ERROR_REASONS),
    *(
        (f"errors_{kind}.{reason}", "DELIVERY_ERROR_RATE", f'error_type = "{kind}" AND error_reason = "{reason}"')
        for kind, reasons in ERROR_REASONS.items()
        for reason in reasons
    ),
)


@dataclass(frozen=True)
class DomainDay:
    """One day of one domain's metrics, by our metric name (a metric Google did not report is absent)."""

    day: date
    values: tuple[tuple[str, float], ...]

    def get(self, name: str) -> float | None:
        return dict(self.values).get(name)


def _number(value: Any) -> float | None:
    if not isinstance(value, dict):
        return None
    for key in ("doubleValue", "floatValue", "intValue"):
        if key in value:
            return float(value[key])  # intValue is an int64 sent as a string
    return None


def parse_domain_stats(stats: Sequence[Any]) -> list[DomainDay]:
    """DomainStat objects (from every page) grouped by day, oldest first; raises ValueError on a bad shape."""
    days: dict[date, dict[str, float]] = {}
    for stat in stats:
        if not isinstance(stat, dict) or not isinstance(stat.get("date"), dict):
            raise ValueError("a domainStats entry without a date")
        when = stat["date"]
        day = date(int(when["year"]), int(when["month"]), int(when["day"]))
        number = _number(stat.get("value"))
        if number is not None and isinstance(stat.get("metric"), str):
            days.setdefault(day, {})[stat["metric"]] = number
    return [DomainDay(day, tuple(sorted(values.items()))) for day, values in sorted(days.items())]


@dataclass(frozen=True)
class ComplianceRow:
    """One requirement of the compliance table: its name, COMPLIANT/NEEDS_WORK, and a reason when Google gives one."""

    requirement: str
    state: str
    reason: str = ""


def _state(status: Any) -> str:
    return str(status.get("status", "STATE_UNSPECIFIED")) if isinstance(status, dict) else "STATE_UNSPECIFIED"


def parse_compliance(payload: Mapping[str, Any]) -> list[ComplianceRow]:
    """The rows of a DomainComplianceStatus (the subdomain's data when Google gives it); raises ValueError."""
    data = payload.get("subdomainComplianceData") or payload.get("complianceData") or {}
    if not isinstance(data, dict) or not isinstance(data.get("rowData", []), list):
        raise ValueError("complianceData is not an object with a rowData list")
    verdicts = {
        "ONE_CLICK_UNSUBSCRIBE": data.get("oneClickUnsubscribeVerdict") or {},
        "HONOR_UNSUBSCRIBE": data.get("honorUnsubscribeVerdict") or {},
    }
    rows = []
    for row in data.get("rowData", []):
        if not isinstance(row, dict):
            raise ValueError("a rowData entry is not an object")
        requirement = str(row.get("requirement", "COMPLIANCE_REQUIREMENT_UNSPECIFIED"))
        verdict = verdicts.get(requirement, {})
        # The discovery document gives rows no reason; the two unsubscribe verdicts carry one. Take either.
        reason = str(row.get("status", {}).get("reason", "") or verdict.get("reason", ""))
        rows.append(ComplianceRow(requirement, _state(row.get("status")), reason))
    return rows


def _date(day: date) -> dict[str, int]:
    return {"year": day.year, "month": day.month, "day": day.day}


def query_body(start: date, end: date, page_size: int, page_token: str = "") -> dict[str, Any]:
    """A QueryDomainStatsRequest for every metric in METRICS, daily, over [start, end]."""
    metrics = [
        {"name": name, "baseMetric": {"standardMetric": metric}, **({"filter": flt} if flt else {})}
        for name, metric, flt in METRICS
    ]
    body: dict[str, Any] = {
        "metricDefinitions": metrics,
        "timeQuery": {"dateRanges": {"dateRanges": [{"start": _date(start), "end": _date(end)}]}},
        "aggregationGranularity": "DAILY",
        "pageSize": page_size,
    }
    if page_token:
        body["pageToken"] = page_token
    return body
