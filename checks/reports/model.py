"""The values a DMARC aggregate or SMTP TLS report becomes: frozen dataclasses, JSON in the `--json` shape."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

__all__ = [
    "AuthResult",
    "DmarcRecord",
    "DmarcReport",
    "Extracted",
    "PublishedPolicy",
    "ReportHead",
    "ReportProblem",
    "TlsFailure",
    "TlsPolicy",
    "TlsReport",
    "provider_of",
    "report_day",
]

# Reporters whose mail volume makes them the ones that matter, by the domain of their address or org_name.
# The names are the ones the rest of repbot uses for providers (SNDS is "microsoft", Postmaster is "google").
PROVIDER_DOMAINS = {
    "microsoft": ("outlook.com", "microsoft.com", "hotmail.com", "protection.outlook.com"),
    "google": ("google.com", "gmail.com"),
    "yahoo": ("yahoo.com", "yahooinc.com", "yahoo-inc.com", "aol.com"),
    "apple": ("icloud.com", "apple.com"),
    "fastmail": ("fastmail.com", "messagingengine.com"),
    "mimecast": ("mimecast.org", "mimecast.com", "mimecastreport.com"),
    "gmx": ("gmx.net", "gmx.com", "gmx.de"),
    "proton": ("proton.me", "protonmail.com", "protonmail.ch"),
    "comcast": ("comcast.net", "xfinity.com"),
}


def provider_of(reporter: str, contact: str = "") -> str:
    """The provider a report comes from ('microsoft', 'google'...), else its reporter in lower case.

    The contact address's domain decides first (`dmarcreport@microsoft.com`), then the organisation name,
    as a domain (`google.com`) or by its first word (`Outlook.com`, `Yahoo! Inc.`, `Mimecast`).
    """
    name = reporter.strip().lower()
    host = contact.rsplit("@", 1)[1].strip(" >").lower() if "@" in contact else ""
    word = re.split(r"[^a-z0-9-]", name, maxsplit=1)[0]
    for candidate in (host, name):
        for provider, domains in PROVIDER_DOMAINS.items():
            if candidate and any(candidate == d or candidate.endswith("." + d) for d in domains):
                return provider
    for provider, domains in PROVIDER_DOMAINS.items():
        if word and word in {d.split(".")[0] for d in domains}:
            return provider
    return name or host


def report_day(begin: datetime, end: datetime) -> date:
    """The day a report counts for: the UTC date of its range's middle, so a range from local midnight
    (22:00 UTC the evening before) still lands on the day the reporter means."""
    return (begin + (end - begin) / 2).astimezone(UTC).date() if end >= begin else begin.date()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ReportProblem:
    """Something wrong with one report: `error` ones were not counted, `warning` ones were (with this caveat)."""

    source: str
    error: str
    severity: str = "error"
    code: str = "invalid"

    def to_json(self) -> dict[str, str]:
        return {"file": self.source, "error": self.error, "severity": self.severity, "code": self.code}


@dataclass(frozen=True)
class AuthResult:
    """One raw SPF or DKIM result from <auth_results> (not the DMARC-aligned one)."""

    domain: str
    result: str
    selector: str = ""
    scope: str = ""


@dataclass(frozen=True)
class PublishedPolicy:
    """<policy_published>: the DMARC record the reporter found (RFC 9990 adds np, testing, discovery_method)."""

    domain: str
    p: str
    sp: str = ""
    np: str = ""
    adkim: str = ""
    aspf: str = ""
    pct: int | None = None
    testing: str = ""
    discovery_method: str = ""
    fo: str = ""


@dataclass(frozen=True)
class DmarcRecord:
    """One <record>: messages from one source IP with one set of results."""

    source_ip: str
    count: int
    disposition: str
    dkim: str  # policy_evaluated: the DMARC-aligned result
    spf: str
    header_from: str
    envelope_from: str = ""
    envelope_to: str = ""
    reasons: tuple[str, ...] = ()
    dkim_results: tuple[AuthResult, ...] = ()
    spf_results: tuple[AuthResult, ...] = ()

    @property
    def passed(self) -> bool:
        """DMARC passes when the aligned DKIM or the aligned SPF result passes."""
        return self.dkim == "pass" or self.spf == "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "source_ip": self.source_ip,
            "count": self.count,
            "disposition": self.disposition,
            "dkim": self.dkim,
            "spf": self.spf,
            "header_from": self.header_from,
            "envelope_from": self.envelope_from,
            "reasons": list(self.reasons),
            "auth_results": {
                "dkim": [{"domain": r.domain, "selector": r.selector, "result": r.result} for r in self.dkim_results],
                "spf": [{"domain": r.domain, "scope": r.scope, "result": r.result} for r in self.spf_results],
            },
        }


@dataclass(frozen=True)
class ReportHead:
    """What every report starts with: who sent it, its id, and the time it covers."""

    reporter: str
    contact: str
    report_id: str
    begin: datetime
    end: datetime

    @property
    def provider(self) -> str:
        return provider_of(self.reporter, self.contact)

    @property
    def day(self) -> date:
        return report_day(self.begin, self.end)

    def _head_json(self, kind: str, policy_domain: str, source: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "reporter": self.reporter,
            "provider": self.provider,
            "contact": self.contact,
            "report_id": self.report_id,
            "policy_domain": policy_domain,
            "begin": _iso(self.begin),
            "end": _iso(self.end),
            "day": self.day.isoformat(),
            "source": source,
        }


@dataclass(frozen=True)
class DmarcReport(ReportHead):
    """One aggregate report (RFC 7489 appendix C, RFC 9990, or the old draft schema)."""

    policy: PublishedPolicy
    records: tuple[DmarcRecord, ...]
    schema: str = "rfc7489"  # "rfc7489", "rfc9990" or "draft"
    generator: str = ""
    source: str = ""
    kind: str = field(default="dmarc", init=False)

    @property
    def policy_domain(self) -> str:
        return self.policy.domain

    @property
    def messages(self) -> int:
        return sum(r.count for r in self.records)

    def to_json(self) -> dict[str, Any]:
        p = self.policy
        policy = {
            "p": p.p, "sp": p.sp, "np": p.np, "adkim": p.adkim, "aspf": p.aspf, "pct": p.pct,
            "testing": p.testing, "discovery_method": p.discovery_method, "fo": p.fo,
        }  # fmt: skip
        return {
            **self._head_json(self.kind, self.policy_domain, self.source),
            "schema": self.schema,
            "generator": self.generator,
            "policy": policy,
            "messages": self.messages,
            "records": [r.to_json() for r in self.records],
        }


@dataclass(frozen=True)
class TlsFailure:
    """One failure-details entry: sessions that failed one way at one receiving MX."""

    result_type: str
    count: int
    receiving_mx_hostname: str = ""
    receiving_ip: str = ""
    sending_mta_ip: str = ""
    failure_reason_code: str = ""
    additional_information: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "result_type": self.result_type,
            "receiving_mx_hostname": self.receiving_mx_hostname,
            "receiving_ip": self.receiving_ip,
            "sending_mta_ip": self.sending_mta_ip,
            "count": self.count,
            "failure_reason_code": self.failure_reason_code,
        }


@dataclass(frozen=True)
class TlsPolicy:
    """One policies[] entry: the policy the sender applied to a domain and how its sessions went."""

    policy_type: str
    policy_domain: str
    successful: int
    failed: int
    failures: tuple[TlsFailure, ...] = ()
    mx_hosts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_type": self.policy_type,
            "policy_domain": self.policy_domain,
            "successful": self.successful,
            "failed": self.failed,
            "mx_hosts": list(self.mx_hosts),
            "failures": [f.to_json() for f in self.failures],
        }


@dataclass(frozen=True)
class TlsReport(ReportHead):
    """One SMTP TLS report (RFC 8460)."""

    policies: tuple[TlsPolicy, ...]
    source: str = ""
    kind: str = field(default="tlsrpt", init=False)

    @property
    def policy_domain(self) -> str:
        return self.policies[0].policy_domain if self.policies else ""

    def to_json(self) -> dict[str, Any]:
        head = self._head_json(self.kind, self.policy_domain, self.source)
        return {**head, "policies": [p.to_json() for p in self.policies]}


Report = DmarcReport | TlsReport


@dataclass(frozen=True)
class Extracted:
    """What one file or message held: the reports read, and the problems with the rest."""

    reports: tuple[Report, ...] = ()
    problems: tuple[ReportProblem, ...] = ()


MAX_RANGE = timedelta(hours=24, minutes=5)  # some reporters end at 00:00:00 of the next day, plus clock slop
