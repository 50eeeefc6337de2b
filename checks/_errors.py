"""Every exception the check library raises, in one tree.

    CheckError                 root: anything a check can raise on purpose
    ├── TargetError            the text is not a domain, an IPv4 or an IPv6 address
    ├── CatalogError           the blocklist zone data (zones.toml or config) is malformed
    └── LookupFailed           a network look-up gave no usable answer
        └── DnsFailed          a DNS query ended in SERVFAIL, REFUSED, timeout or a network error

Checks turn LookupFailed into an `unknown` Finding; they never let it reach a caller.
"""

from __future__ import annotations

__all__ = ["CatalogError", "CheckError", "DnsFailed", "LookupFailed", "TargetError"]


class CheckError(Exception):
    """Raised on purpose by the check library; the root of its errors."""


class TargetError(CheckError, ValueError):
    """Raised when a target is not a valid domain name, IPv4 or IPv6 address."""


class CatalogError(CheckError):
    """Raised when zone data is malformed; the message names the zone and the field."""

    def __init__(self, zone: str, field: str, problem: str) -> None:
        self.zone = zone
        self.field = field
        self.problem = problem
        super().__init__(f"zone {zone!r}, field {field!r}: {problem}")


class LookupFailed(CheckError):
    """Raised when a network look-up gave no usable answer."""


class DnsFailed(LookupFailed):
    """Raised when a DNS query ended without an answer (its outcome says why)."""

    def __init__(self, name: str, rdtype: str, outcome: str, server: str = "") -> None:
        self.name = name
        self.rdtype = rdtype
        self.outcome = outcome
        self.server = server
        where = f" from {server}" if server else ""
        super().__init__(f"{rdtype} {name}: {outcome}{where}")
