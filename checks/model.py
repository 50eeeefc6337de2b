"""Targets, statuses, findings and reports: the values every check exchanges."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import idna

from checks.errors import TargetError
from checks.i18n import _

__all__ = [
    "Finding",
    "Report",
    "Status",
    "Target",
    "TargetKind",
    "parse_domain",
    "parse_target",
    "worst_status",
]

MAX_LABEL = 63
MAX_NAME = 253


class Status(enum.Enum):
    """A finding's verdict. `unknown` means nobody could tell: never ok, never fail."""

    OK = "ok"
    UNKNOWN = "unknown"
    WARN = "warn"
    FAIL = "fail"

    @property
    def severity(self) -> int:
        """Rank for 'worst of': fail > warn > unknown > ok."""
        return _SEVERITY[self._value_]

    @property
    def exit_code(self) -> int:
        """The Nagios plugin exit code: 0 ok, 1 warn, 2 fail (critical), 3 unknown."""
        return _EXIT_CODE[self._value_]


# Keyed by value, not by member: an Enum member hashes in Python, and a /20 sweep ranks ~300,000 statuses.
_SEVERITY = {"ok": 0, "unknown": 1, "warn": 2, "fail": 3}
_EXIT_CODE = {"ok": 0, "warn": 1, "fail": 2, "unknown": 3}


def _severity(status: Status) -> int:
    return _SEVERITY[status._value_]


def worst_status(statuses: Iterable[Status]) -> Status:
    """The worst of the statuses; nothing at all is unknown, never ok."""
    return max(statuses, key=_severity, default=Status.UNKNOWN)


class TargetKind(enum.Enum):
    DOMAIN = "domain"
    IPV4 = "ipv4"
    IPV6 = "ipv6"


@dataclass(frozen=True)
class Target:
    """A normalised target: an A-label domain without trailing dot, or an IP address in its canonical form."""

    kind: TargetKind
    value: str

    @property
    def is_ip(self) -> bool:
        return self.kind is not TargetKind.DOMAIN

    @property
    def json_kind(self) -> str:
        """'ip' or 'domain', as the JSON output names it."""
        return "ip" if self.is_ip else "domain"

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if not self.is_ip:
            raise TypeError(f"{self.value} is a domain, not an IP address")
        return ipaddress.ip_address(self.value)

    def __str__(self) -> str:
        return self.value


def parse_target(text: str) -> Target:
    """The Target for an IP address or domain name; raises TargetError saying what is wrong."""
    raw = text.strip()
    if not raw:
        raise TargetError(_("empty target: give a domain name or an IP address"))
    candidate = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            # A zone id names an interface of this host: no blocklist or reverse zone can answer for it.
            raise TargetError(
                _("{target!r} has a zone id (%{zone}); give the address alone").format(
                    target=_shorten(raw), zone=_shorten(address.scope_id, 20)
                )
            )
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        kind = TargetKind.IPV4 if address.version == 4 else TargetKind.IPV6
        return Target(kind, address.compressed)
    if _looks_like_ipv4(candidate):
        raise TargetError(_("{target!r} is not a valid IPv4 address").format(target=_shorten(raw)))
    if ":" in candidate:
        raise TargetError(_("{target!r} is not a valid IPv6 address").format(target=_shorten(raw)))
    return Target(TargetKind.DOMAIN, parse_domain(raw))


def _too_long() -> str:
    return _("{name!r} is too long: {length} characters, the limit is {limit}")


def parse_domain(text: str) -> str:
    """The lower-case A-label form of a host name, without trailing dot; raises TargetError."""
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    shown = _shorten(text.strip())
    if not name:
        raise TargetError(_("empty domain name"))
    if len(name) > MAX_NAME * 4 or (name.isascii() and len(name) > MAX_NAME):
        raise TargetError(_too_long().format(name=shown, length=len(name), limit=MAX_NAME))
    labels = name.split(".")
    if any(not label for label in labels):
        raise TargetError(_("{name!r} has an empty label (two dots in a row, or a leading dot)").format(name=shown))
    if len(labels) < 2:
        raise TargetError(
            _("{name!r} is a single label; give a full domain name such as example.org").format(name=shown)
        )
    ascii_labels = [_to_a_label(label, shown) for label in labels]
    if ascii_labels[-1].isdigit():
        raise TargetError(
            _("{name!r} is neither an IP address nor a domain (its last label is a number)").format(name=shown)
        )
    ascii_name = ".".join(ascii_labels)
    if len(ascii_name) > MAX_NAME:
        raise TargetError(_too_long().format(name=shown, length=len(ascii_name), limit=MAX_NAME))
    return ascii_name


def _to_a_label(label: str, shown: str) -> str:
    if label.isascii():
        lowered = label.lower()
        if len(lowered) > MAX_LABEL:
            raise TargetError(
                _("{name!r} has a label of {length} characters; the limit is {limit}").format(
                    name=shown, length=len(lowered), limit=MAX_LABEL
                )
            )
        if lowered.startswith("xn--"):
            _check_idna(lowered, shown)
        elif not all(ch.isalnum() or ch == "-" for ch in lowered) or "_" in lowered:
            raise TargetError(_("{name!r} contains a character not allowed in a host name").format(name=shown))
        elif lowered.startswith("-") or lowered.endswith("-"):
            raise TargetError(_("{name!r} has a label that starts or ends with a hyphen").format(name=shown))
        return lowered
    return _check_idna(label, shown)


def _check_idna(label: str, shown: str) -> str:
    try:
        encoded = idna.encode(label, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as error:
        raise TargetError(
            _("{name!r} is not a valid internationalised name: {error}").format(name=shown, error=error)
        ) from None
    if len(encoded) > MAX_LABEL:
        raise TargetError(
            _("{name!r} has a label longer than {limit} characters once encoded").format(name=shown, limit=MAX_LABEL)
        )
    return encoded


def _looks_like_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(part.isdigit() for part in parts)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Finding:
    """One verdict about one subject of one check, with the evidence it rests on and what to do."""

    check: str
    subject: str
    status: Status
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    advice: str = ""
    code: str = ""
    observed_at: datetime = field(default_factory=_now, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "subject": self.subject,
            "status": self.status.value,
            "code": self.code,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "advice": self.advice,
            "observed_at": _stamp(self.observed_at),
        }


_last_stamp: tuple[datetime | None, str] = (None, "")


def _stamp(moment: datetime) -> str:
    """`moment.isoformat(timespec="seconds")`, said once for the findings of one check, which share one clock read
    (73k findings of a /20 took 0.1 s of isoformat). By identity, not equality: equal instants in two zones
    are two texts. The tuple keeps the object alive, so its identity is never reused."""
    global _last_stamp
    last, text = _last_stamp
    if moment is not last:
        text = moment.isoformat(timespec="seconds")
        _last_stamp = (moment, text)
    return text


@dataclass(frozen=True)
class Report:
    """The findings for one target; its status is the worst of them."""

    target: Target
    findings: tuple[Finding, ...]
    duration: float = 0.0

    @property
    def status(self) -> Status:
        return worst_status(finding.status for finding in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.value,
            "kind": self.target.json_kind,
            "status": self.status.value,
            "findings": [finding.to_json() for finding in self.findings],
        }
