"""repbot's check library: async functions that look at the world and return Findings.

It knows nothing of Matrix, schedules, storage or rendering. Each standard or data source has its own
family (`checks.dnsbl`, `checks.spf`, ...), imported where it is used so that a command loads only
what it runs.
"""

from checks.context import CheckContext, DnsblSettings
from checks.dns.resolver import DnsAnswer, Nameserver, Outcome, Resolver, parse_nameserver, reverse_pointer
from checks.errors import CatalogError, CheckError, DnsFailed, LookupFailed, TargetError
from checks.model import Finding, Report, Status, Target, TargetKind, parse_domain, parse_target, worst_status

__all__ = [
    "CatalogError",
    "CheckContext",
    "CheckError",
    "DnsAnswer",
    "DnsFailed",
    "DnsblSettings",
    "Finding",
    "LookupFailed",
    "Nameserver",
    "Outcome",
    "Report",
    "Resolver",
    "Status",
    "Target",
    "TargetError",
    "TargetKind",
    "parse_domain",
    "parse_nameserver",
    "parse_target",
    "reverse_pointer",
    "worst_status",
]
