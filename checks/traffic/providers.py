"""Which provider a delivery went to: families from `providers.toml` (plus the config's), matched on the relay host.

`Families.route(delivery)` is pure and cached per (relay host, recipient domain): a `Route` says whether the
attempt went to a provider (and which family), stayed on this machine (local, lmtp, pipe, a content filter on
loopback) or went to the operator's own smarthost, whose answers say nothing about the providers behind it.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from checks.errors import CatalogError
from checks.traffic.lines import Delivery

__all__ = ["LOCAL", "OTHER", "SMARTHOST", "Families", "Family", "Route", "load_families", "parse_families"]

OTHER = "other"
LOCAL = "local"
SMARTHOST = "smarthost"
NDR_FAMILIES = frozenset({"microsoft", "google", "yahoo", "gmx"})
_FIELDS = frozenset({"key", "name", "ndr", "relays", "domains", "fallback", "reporters"})
_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PATTERN = re.compile(r"^(?:\*\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*(?:\.\*)?$")
_LOCAL_DAEMONS = frozenset({"local", "virtual", "pipe", "discard", "error", "lmtp", "mda", "lka", "retry"})
_LOCAL_RELAYS = frozenset({"local", "virtual", "localhost", "dovecot"})


@dataclass(frozen=True)
class Family:
    """One provider family: its key, its name, and the host and domain patterns that pick it."""

    key: str
    name: str
    ndr: str | None = None
    relays: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()
    reporters: tuple[str, ...] = ()  # DMARC report org_name or sender domain, lower case


@dataclass(frozen=True)
class Route:
    """Where one attempt went: kind 'provider' (with its family key), 'local' or 'smarthost'."""

    kind: str
    provider: str
    ndr: str | None = None

    @property
    def remote(self) -> bool:
        return self.kind == "provider"


_LOCAL_ROUTE = Route(LOCAL, LOCAL)


def matches(pattern: str, host: str) -> bool:
    """'*.example.net' matches hosts under it; 'hotmail.*' matches hotmail.<any one or two labels>; else exact."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if pattern.endswith(".*"):
        stem = pattern[:-1]
        return host.startswith(stem) and 1 <= host[len(stem) :].count(".") + 1 <= 2
    return host == pattern


def _is_loopback(ip: str) -> bool:
    # A content filter (amavis on 127.0.0.1:10024) or a local relay: string tests, as this runs for every line.
    return ip.startswith("127.") or ip in ("::1", "IPv6:::1") or ip.startswith("::ffff:127.")


class Families:
    """The provider families in decision order, and the operator's smarthost patterns."""

    def __init__(self, families: Sequence[Family], smarthosts: Sequence[str] = ()) -> None:
        self.families = tuple(families)
        self.smarthosts = tuple(host.lower() for host in smarthosts)
        self.by_key = {family.key: family for family in self.families}
        self._route = functools.lru_cache(maxsize=8192)(self._decide)

    def __repr__(self) -> str:
        return f"<Families {[f.key for f in self.families]} smarthosts={list(self.smarthosts)}>"

    def name(self, key: str) -> str:
        """The human name of a family key ('other', 'local' and 'smarthost' name themselves), as JSON keeps it."""
        family = self.by_key.get(key)
        return family.name if family is not None else key

    def route(self, delivery: Delivery, domain: str | None = None) -> Route:
        """Where this attempt went (`domain`: the recipient's, when the caller has it already); pure."""
        if delivery.daemon in _LOCAL_DAEMONS or delivery.relay in _LOCAL_RELAYS or _is_loopback(delivery.relay_ip):
            return _LOCAL_ROUTE
        return self._route(delivery.relay_host, delivery.domain if domain is None else domain)

    def reporter(self, org_name: str, sender_domain: str = "") -> str | None:
        """The family key of a DMARC aggregate report's reporter (its org_name, or the domain it came from)."""
        names = {org_name.strip().lower(), sender_domain.strip().lower()} - {""}
        for family in self.families:
            if names & set(family.reporters):
                return family.key
        for name in names:
            route = self._route("", name)
            if route.provider != OTHER:
                return route.provider
        return None

    def provider_of(self, host: str, domain: str) -> Route:
        """The route for a relay host (may be empty) and a recipient domain."""
        return self._route(host.lower(), domain.lower())

    def _decide(self, host: str, domain: str) -> Route:
        if host and any(matches(pattern, host) for pattern in self.smarthosts):
            return Route(SMARTHOST, SMARTHOST)
        if host == "localhost":
            return Route(LOCAL, LOCAL)
        for field in ("relays", "domains", "fallback"):
            subject = domain if field == "domains" else host
            if not subject:
                continue
            for family in self.families:
                if any(matches(pattern, subject) for pattern in getattr(family, field)):
                    return Route("provider", family.key, family.ndr)
        return Route("provider", OTHER)


def _strings(where: str, data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    raw = data.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise CatalogError(where, name, "must be a list of host patterns")
    lowered = tuple(item.lower().rstrip(".") for item in raw)
    for item in lowered:
        if not _PATTERN.match(item):
            raise CatalogError(where, name, f"{item!r} is not a host, '*.example.net' or 'name.*'")
    return lowered


def parse_family(data: Mapping[str, Any]) -> Family:
    """One [[family]] table; raises CatalogError naming the family and the field."""
    where = str(data.get("key", "?"))
    unknown = set(data) - _FIELDS
    if unknown:
        raise CatalogError(where, sorted(unknown)[0], "unknown field")
    key, name, ndr = data.get("key"), data.get("name", data.get("key")), data.get("ndr")
    if not isinstance(key, str) or not _KEY.match(key) or key in (OTHER, LOCAL, SMARTHOST):
        raise CatalogError(where, "key", "must be lower case letters, digits and dashes (not other/local/smarthost)")
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(where, "name", "must be a non-empty string")
    if ndr is not None and ndr not in NDR_FAMILIES:
        raise CatalogError(where, "ndr", f"must be one of {sorted(NDR_FAMILIES)}")
    relays, domains = _strings(where, data, "relays"), _strings(where, data, "domains")
    reporters = data.get("reporters", [])
    if not isinstance(reporters, list) or not all(isinstance(item, str) and item.strip() for item in reporters):
        raise CatalogError(where, "reporters", "must be a list of names")
    family = Family(
        key, name, ndr, relays, domains, _strings(where, data, "fallback"), tuple(r.lower() for r in reporters)
    )
    if not (family.relays or family.domains or family.fallback):
        raise CatalogError(where, "relays", "give relays, domains or fallback")
    return family


def parse_families(rows: Iterable[Mapping[str, Any]], extra: Iterable[Mapping[str, Any]] = ()) -> tuple[Family, ...]:
    """The shipped families with the config's added; a config family with a shipped key replaces it, in place."""
    families: dict[str, Family] = {}
    for row in rows:
        family = parse_family(row)
        if family.key in families:
            raise CatalogError(family.key, "key", "is used twice")
        families[family.key] = family
    for row in extra:
        family = parse_family(row)
        families[family.key] = family
    return tuple(families.values())


@functools.cache
def _shipped() -> tuple[dict[str, Any], ...]:
    text = resources.files(__package__).joinpath("providers.toml").read_text(encoding="utf-8")
    rows = tomllib.loads(text).get("family", [])
    return tuple(rows)


def load_families(extra: Iterable[Mapping[str, Any]] = (), smarthosts: Sequence[str] = ()) -> Families:
    """The shipped families (providers.toml), extended by the config's, as a Families."""
    return Families(parse_families(_shipped(), extra), smarthosts)
