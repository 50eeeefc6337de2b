"""The blocklist zone catalog: `zones.toml` parsed into frozen values, validated, and fitted to the operator's settings.

Parsing is pure (no DNS): `parse_zone` turns one TOML table into a `Zone` or raises CatalogError naming the zone
and the field; `load_catalog` applies `DnsblSettings` (disabled zones, extra zones, the Spamhaus DQS key).
"""

from __future__ import annotations

import functools
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from checks.context import DnsblSettings
from checks.errors import CatalogError

__all__ = ["Catalog", "Level", "Zone", "load_catalog", "parse_zone"]

QUERIES = frozenset({"ip", "domain"})
FAMILIES = frozenset({"ipv4", "ipv6"})
ROLES = frozenset({"block", "allow", "reputation"})
STATUSES = frozenset({"ok", "warn", "fail"})
DQS_SUFFIX = "dq.spamhaus.net"
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_KNOWN_FIELDS = frozenset(
    {
        "title", "queries", "families", "role", "severity", "codes", "bits", "octets", "levels", "refusals",
        "refusal_bits", "delist", "test_points", "test_listed", "txt", "dqs", "dqs_only", "requires_registration",
        "collateral", "note", "note_codes",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Level:
    """An inclusive range of answers with one meaning (and, for reputation zones, one status)."""

    first: int
    last: int
    meaning: str
    status: str | None = None

    def __contains__(self, address: int) -> bool:
        return self.first <= address <= self.last


@dataclass(frozen=True)
class Zone:
    """One blocklist, allow-list or reputation zone and the meaning of its answers."""

    name: str
    title: str
    queries: str
    role: str
    delist: str
    test_points: bool
    families: frozenset[str] = frozenset()
    severity: str = "fail"
    codes: Mapping[str, str] = field(default_factory=dict)
    bits: Mapping[int, str] = field(default_factory=dict)
    octets: Mapping[int, Mapping[int, str]] = field(default_factory=dict)
    levels: tuple[Level, ...] = ()
    refusals: Mapping[str, str] = field(default_factory=dict)
    refusal_bits: Mapping[int, str] = field(default_factory=dict)
    test_listed: str | None = None
    txt: bool = False
    dqs: str | None = None
    dqs_only: bool = False
    requires_registration: str | None = None
    collateral: bool = False
    note: str = ""
    #: The answers the note is about (empty: every listing); a PBL note is wrong advice for an SBL listing.
    note_codes: frozenset[str] = frozenset()
    #: The name actually queried: `name`, or KEY.<dqs>.dq.spamhaus.net once a DQS key is set.
    query_zone: str = ""
    #: `query_zone` with the DQS key masked, for evidence and logs.
    shown_zone: str = ""
    #: False for a DQS-only zone without a key: listed by `repbot lists` but never queried.
    usable: bool = True

    @functools.cached_property
    def kind(self) -> str:
        """The one-word kind shown to operators: ip4, ip6, ip, domain, allow or reputation (in every finding's
        evidence: worked out once)."""
        if self.role != "block":
            return self.role
        if self.queries == "domain":
            return "domain"
        if self.families == FAMILIES:
            return "ip"
        return "ip4" if "ipv4" in self.families else "ip6"

    def lists(self, family: str) -> bool:
        """True when this zone is asked about targets of `family` ("ipv4", "ipv6" or "domain")."""
        return self.usable and (self.queries == "domain" if family == "domain" else family in self.families)


@dataclass(frozen=True)
class Catalog:
    """The zones in effect, in catalog order."""

    zones: tuple[Zone, ...]
    _by_family: dict[str, tuple[Zone, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getitem__(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.zones)

    def for_family(self, family: str) -> tuple[Zone, ...]:
        """The usable zones asked about `family` ("ipv4", "ipv6" or "domain"); asked once per target, kept."""
        found = self._by_family.get(family)
        if found is None:
            found = self._by_family[family] = tuple(zone for zone in self.zones if zone.lists(family))
        return found


def load_catalog(settings: DnsblSettings | None = None) -> Catalog:
    """The shipped catalog with `settings` applied; raises CatalogError for bad zone data or settings."""
    settings = settings or DnsblSettings()
    zones = dict(_shipped())
    for name, table in settings.extra_zones.items():
        zones[_zone_name(name)] = parse_zone(name, table)
    for name in sorted(settings.disabled):
        if _zone_name(name) not in zones:
            raise CatalogError(name, "disabled", "no such zone in the catalog or the extra zones")
        del zones[_zone_name(name)]
    return Catalog(tuple(_with_dqs(zone, settings.dqs_key) for zone in zones.values()))


@functools.cache
def _shipped() -> tuple[tuple[str, Zone], ...]:
    # Beside this module, not through importlib.resources: its import costs more than reading the file.
    text = Path(__file__).with_name("zones.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    tables = data.get("zones")
    if not isinstance(tables, dict) or not tables:
        raise CatalogError("*", "zones", 'zones.toml has no [zones."NAME"] tables')
    return tuple((_zone_name(name), parse_zone(name, table)) for name, table in tables.items())


def _with_dqs(zone: Zone, key: str | None) -> Zone:
    if key and zone.dqs:
        return replace(zone, query_zone=f"{key}.{zone.dqs}.{DQS_SUFFIX}", shown_zone=f"[key].{zone.dqs}.{DQS_SUFFIX}")
    return replace(zone, query_zone=zone.name, shown_zone=zone.name, usable=not zone.dqs_only)


def _zone_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def parse_zone(name: str, table: Mapping[str, Any]) -> Zone:
    """The Zone for one catalog table; raises CatalogError naming the zone and the field."""
    zone = _zone_name(name)
    if not isinstance(table, Mapping):
        raise CatalogError(zone, "*", "expected a table of fields")
    unknown = sorted(set(table) - _KNOWN_FIELDS)
    if unknown:
        raise CatalogError(zone, unknown[0], f"unknown field; expected one of {sorted(_KNOWN_FIELDS)}")
    get = _Fields(zone, table)
    queries = get.choice("queries", QUERIES)
    families = frozenset(get.strings("families", FAMILIES)) if queries == "ip" else frozenset()
    if queries == "ip" and not families:
        raise CatalogError(zone, "families", "an IP zone must list at least one of ipv4, ipv6")
    role = get.choice("role", ROLES)
    levels = get.levels(role)
    parsed = Zone(
        name=zone,
        title=get.text("title"),
        queries=queries,
        role=role,
        delist=get.delist(),
        test_points=get.flag("test_points", required=True),
        families=families,
        severity=get.choice("severity", frozenset({"fail", "warn"}), default="fail"),
        codes=get.answers("codes"),
        bits=get.bit_table("bits"),
        octets=get.octets(),
        levels=levels,
        refusals=get.answers("refusals"),
        refusal_bits=get.bit_table("refusal_bits"),
        test_listed=get.optional_text("test_listed"),
        txt=get.flag("txt"),
        dqs=get.optional_text("dqs"),
        dqs_only=get.flag("dqs_only"),
        requires_registration=get.optional_text("requires_registration"),
        collateral=get.flag("collateral"),
        note=get.optional_text("note") or "",
        note_codes=frozenset(get.answer_list("note_codes")),
    )
    if parsed.dqs_only and not parsed.dqs:
        raise CatalogError(zone, "dqs_only", "a DQS-only zone needs its `dqs` name")
    if role == "block" and not (parsed.codes or parsed.bits or parsed.levels):
        raise CatalogError(zone, "codes", "a block list needs `codes`, `bits` or `levels` to explain its answers")
    return parsed


class _Fields:
    """Typed access to one zone table's fields; every error names the zone and the field."""

    def __init__(self, zone: str, table: Mapping[str, Any]) -> None:
        self.zone = zone
        self.table = table

    def fail(self, name: str, problem: str) -> CatalogError:
        return CatalogError(self.zone, name, problem)

    def text(self, name: str) -> str:
        value = self.table.get(name)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "expected a non-empty string")
        return value.strip()

    def optional_text(self, name: str) -> str | None:
        return self.text(name) if name in self.table else None

    def flag(self, name: str, *, required: bool = False) -> bool:
        if name not in self.table and not required:
            return False
        value = self.table.get(name)
        if not isinstance(value, bool):
            raise self.fail(name, "expected true or false")
        return value

    def choice(self, name: str, allowed: frozenset[str], default: str | None = None) -> str:
        if name not in self.table and default is not None:
            return default
        value = self.table.get(name)
        if value not in allowed:
            raise self.fail(name, f"expected one of {sorted(allowed)}, got {value!r}")
        return str(value)

    def strings(self, name: str, allowed: frozenset[str]) -> list[str]:
        value = self.table.get(name, [])
        if not isinstance(value, list) or any(item not in allowed for item in value):
            raise self.fail(name, f"expected a list drawn from {sorted(allowed)}, got {value!r}")
        return [str(item) for item in value]

    def delist(self) -> str:
        value = self.text("delist")
        if value != "none" and not value.startswith("https://") and not value.startswith("http://"):
            raise self.fail("delist", f'expected an http(s) URL or the word "none", got {value!r}')
        return value

    def answer(self, name: str, text: Any) -> int:
        try:
            address = ipaddress.IPv4Address(text)
        except (ipaddress.AddressValueError, ValueError):
            raise self.fail(name, f"{text!r} is not an IPv4 answer such as 127.0.0.2") from None
        if address not in _LOOPBACK:
            raise self.fail(name, f"{text} is outside 127.0.0.0/8, where every blocklist answer must be")
        return int(address)

    def answer_list(self, name: str) -> list[str]:
        value = self.table.get(name, [])
        if not isinstance(value, list):
            raise self.fail(name, f"expected a list of answers such as 127.0.0.10, got {value!r}")
        return [str(ipaddress.IPv4Address(self.answer(name, item))) for item in value]

    def answers(self, name: str) -> dict[str, str]:
        table = self.mapping(name)
        for code in table:
            self.answer(name, code)
        return {str(ipaddress.IPv4Address(code)): meaning for code, meaning in table.items()}

    def mapping(self, name: str) -> dict[str, str]:
        value = self.table.get(name, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, str) and v for v in value.values()):
            raise self.fail(name, 'expected a table of "value" = "meaning" strings')
        return dict(value)

    def small_int(self, name: str, text: str, limit: int) -> int:
        if not text.isdigit() or not 0 <= int(text) <= limit:
            raise self.fail(name, f"{text!r} is not a number from 0 to {limit}")
        return int(text)

    def bit_table(self, name: str) -> dict[int, str]:
        table = self.mapping(name)
        bits = {self.small_int(name, key, 255): meaning for key, meaning in table.items()}
        for bit in bits:
            if bit == 0 or bit & (bit - 1):
                raise self.fail(name, f"{bit} is not a single bit (1, 2, 4 ... 128)")
        return bits

    def octets(self) -> dict[int, dict[int, str]]:
        value = self.table.get("octets", {})
        if not isinstance(value, Mapping):
            raise self.fail("octets", "expected a table of octet number -> table of meanings")
        result: dict[int, dict[int, str]] = {}
        for position, meanings in value.items():
            index = self.small_int("octets", str(position), 4)
            if index < 2:
                raise self.fail("octets", "only octets 2, 3 and 4 can carry meanings (the first is 127)")
            sub = _Fields(self.zone, {"octets": meanings}).mapping("octets")
            result[index] = {self.small_int("octets", key, 255): text for key, text in sub.items()}
        return result

    def levels(self, role: str) -> tuple[Level, ...]:
        value = self.table.get("levels", [])
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            raise self.fail("levels", "expected an array of tables [[levels]] with first, last, meaning")
        levels = []
        for item in value:
            first, last = self.answer("levels", item.get("first")), self.answer("levels", item.get("last"))
            if last < first:
                raise self.fail("levels", f"range {item.get('first')}-{item.get('last')} ends before it starts")
            meaning = item.get("meaning")
            status = item.get("status")
            if not isinstance(meaning, str) or not meaning:
                raise self.fail("levels", "every level needs a `meaning`")
            if status is not None and status not in STATUSES:
                raise self.fail("levels", f"status must be one of {sorted(STATUSES)}, got {status!r}")
            if role == "reputation" and status is None:
                raise self.fail("levels", "every level of a reputation zone needs a `status` (ok or warn)")
            levels.append(Level(first, last, meaning, status))
        if role == "reputation" and not levels:
            raise self.fail("levels", "a reputation zone needs `levels` saying which answers are good or bad")
        return tuple(levels)
