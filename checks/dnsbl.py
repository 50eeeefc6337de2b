"""Blocklist (DNSBL/RHSBL), allow-list and reputation-zone look-ups, with the zones' health kept in check.

Semantics (REFERENCE.md, "Blocklists"): a refusal code is `unknown`, never a listing; a timeout, SERVFAIL or
REFUSED is `unknown`; a zone that lists its "must not be listed" test point or answers outside 127.0.0.0/8 is
broken and its answers are `unknown`; a zone with test points that does not list its "must be listed" point is
broken too. Each zone's health is probed at most once an hour (unreachable: again after five minutes) and kept in
`ctx.caches`, so a zone that passes again is used again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .context import CheckContext
from .dns import DnsAnswer, Outcome, reverse_pointer
from .dnsbl_catalog import Catalog, Zone, load_catalog
from .model import Finding, Status, Target, TargetKind

__all__ = ["CHECK_ID", "Catalog", "Health", "Zone", "ZoneHealth", "check_domain", "check_ip", "load_catalog",
           "meanings", "probe_names", "zone_health"]  # fmt: skip

CHECK_ID = "dnsbl"
HEALTH_TTL = timedelta(hours=1)
UNREACHABLE_RETRY = timedelta(minutes=5)
_HEALTH_CACHE = "dnsbl.health"
_INFLIGHT_CACHE = "dnsbl.health.inflight"
_CATALOG_CACHE = "dnsbl.catalog"
_LOOPBACK_FIRST, _LOOPBACK_LAST = 0x7F000000, 0x7FFFFFFF
_STATUS = {"ok": Status.OK, "warn": Status.WARN, "fail": Status.FAIL}


class Health:
    """A zone's health, as plain strings so they serialise as they are."""

    HEALTHY = "healthy"  # lists its "must be listed" test point, not the "must not" one
    UNVERIFIED = "no-test-points"  # reachable and sane for 127.0.0.1/invalid, but it publishes no test points
    BROKEN = "broken"  # lists everything, answers outside 127/8, or drops its listed test point
    REFUSED = "refused"  # answers us with a refusal code (public resolver, unregistered, rate limit)
    UNREACHABLE = "unreachable"  # timeout, SERVFAIL, REFUSED or a network error
    NEEDS_KEY = "needs-dqs-key"  # a Spamhaus DQS-only zone and no key configured: never queried


@dataclass(frozen=True)
class ZoneHealth:
    """The live health of one zone, as `repbot lists` shows it."""

    zone: str
    kind: str
    health: str
    detail: str
    checked_at: datetime
    evidence: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "kind": self.kind,
            "health": self.health,
            "detail": self.detail,
            "checked_at": self.checked_at.isoformat(timespec="seconds"),
            "evidence": dict(self.evidence),
        }


async def check_ip(target: Target, ctx: CheckContext) -> list[Finding]:
    """One finding per IP zone that lists `target`'s family (IPv6 nibble-reversed, only to IPv6 zones)."""
    if not target.is_ip:
        raise TypeError(f"check_ip needs an IP address, not the domain {target.value}")
    family = "ipv4" if target.kind is TargetKind.IPV4 else "ipv6"
    zones = _catalog(ctx).for_family(family)
    return await _check_zones(zones, reverse_pointer(target.value), ctx)


async def check_domain(target: Target, ctx: CheckContext) -> list[Finding]:
    """One finding per domain zone (RHSBL) about `target`."""
    if target.is_ip:
        raise TypeError(f"check_domain needs a domain, not the address {target.value}")
    return await _check_zones(_catalog(ctx).for_family("domain"), target.value, ctx)


async def zone_health(ctx: CheckContext) -> list[ZoneHealth]:
    """Every zone in effect with its kind and health, probed concurrently (or from the hour's cache)."""
    zones = _catalog(ctx).zones
    return list(await asyncio.gather(*(_health(zone, ctx) for zone in zones)))


def _catalog(ctx: CheckContext) -> Catalog:
    cached = ctx.caches.get(_CATALOG_CACHE)
    if cached is not None and cached[0] is ctx.dnsbl:
        catalog: Catalog = cached[1]
        return catalog
    catalog = load_catalog(ctx.dnsbl)
    ctx.caches[_CATALOG_CACHE] = (ctx.dnsbl, catalog)
    return catalog


async def _check_zones(zones: Sequence[Zone], prefix: str, ctx: CheckContext) -> list[Finding]:
    """Every zone's query started at once, then awaited in order: no task per zone, one clock read per check."""
    resolver = ctx.resolver
    if ctx.timeout < resolver.timeout:  # a shorter deadline needs asyncio.timeout, hence a task per zone
        return list(await asyncio.gather(*(_check_zone(zone, prefix, ctx) for zone in zones)))
    now = ctx.clock()
    servers = _servers_key(ctx)
    healths = [_cached_health(zone, ctx, now, servers) or _health_task(zone, ctx, servers) for zone in zones]
    queries = [f"{prefix}.{zone.query_zone}." for zone in zones]
    started: list[DnsAnswer | asyncio.Future[DnsAnswer]] = [resolver.submit(query, "A") for query in queries]
    try:
        answers = [pending if isinstance(pending, DnsAnswer) else await pending for pending in started]
        judged = [
            health
            if isinstance(health, ZoneHealth)
            else health.result()
            if health.done()
            else await asyncio.shield(health)
            for health in healths
        ]
        observed = ctx.clock()
        verdicts = [
            _verdict(zone, f"{prefix}.{zone.shown_zone}", health, answer, observed)
            for zone, health, answer in zip(zones, judged, answers, strict=True)
        ]
        texts: dict[int, DnsAnswer | asyncio.Future[DnsAnswer]] = {
            index: resolver.submit(queries[index], "TXT")
            for index, verdict in enumerate(verdicts)
            if not isinstance(verdict, Finding) and zones[index].txt
        }
        started += texts.values()
        findings = []
        for index, verdict in enumerate(verdicts):
            if isinstance(verdict, Finding):
                findings.append(verdict)
                continue
            txt = texts.get(index)
            if txt is not None and not isinstance(txt, DnsAnswer):
                txt = await txt
            strings = txt.texts() if txt is not None and txt.ok else []
            zone = zones[index]
            findings.append(_listed(zone, f"{prefix}.{zone.shown_zone}", answers[index], verdict, strings, observed))
        return findings
    except BaseException:
        for pending in started:
            if not isinstance(pending, DnsAnswer):
                pending.cancel()
        raise


async def _settled(task: asyncio.Task[ZoneHealth]) -> ZoneHealth:
    """A shared probe's result; shielded, so that a cancelled check does not cancel the probe for everyone."""
    return task.result() if task.done() else await asyncio.shield(task)


async def _check_zone(zone: Zone, prefix: str, ctx: CheckContext) -> Finding:
    query = f"{prefix}.{zone.query_zone}."
    cached = _cached_health(zone, ctx, ctx.clock(), _servers_key(ctx))
    if cached is None:
        health, answer = await asyncio.gather(_health(zone, ctx), _query(ctx, query, "A"))
    else:
        health, answer = cached, await _query(ctx, query, "A")
    shown = f"{prefix}.{zone.shown_zone}"
    verdict = _verdict(zone, shown, health, answer, ctx.clock())
    if isinstance(verdict, Finding):
        return verdict
    txt = await _query(ctx, query, "TXT") if zone.txt else None
    return _listed(zone, shown, answer, verdict, txt.texts() if txt is not None and txt.ok else [], ctx.clock())


def _verdict(zone: Zone, shown: str, health: ZoneHealth, answer: DnsAnswer, now: datetime) -> Finding | list[int]:
    """The finding for one zone's answer, or the listed addresses when it is a listing (its TXT may follow)."""
    if health.health == Health.BROKEN:
        return _broken(zone, shown, answer, health.detail, now)
    if answer.failed:
        return _failed(zone, shown, answer, now)
    if not answer.ok:
        if health.health == Health.REFUSED:
            return _refused(zone, shown, answer, health.detail, now)
        return _not_listed(zone, shown, answer, now)
    addresses = _addresses(answer)
    if any(not _LOOPBACK_FIRST <= address <= _LOOPBACK_LAST for address in addresses):
        return _broken(zone, shown, answer, "it answered outside 127.0.0.0/8", now)
    refusal = _refusal(zone, addresses) or (health.detail if health.health == Health.REFUSED else None)
    if refusal is not None:
        return _refused(zone, shown, answer, refusal, now)
    return addresses


async def _query(ctx: CheckContext, name: str, rdtype: str, urgent: bool = False) -> DnsAnswer:
    """The resolver's answer, cut off at ctx.timeout when that is shorter than the resolver's own timeout."""
    if ctx.timeout >= ctx.resolver.timeout:
        started = ctx.resolver.submit(name, rdtype, urgent=urgent)
        return started if isinstance(started, DnsAnswer) else await started
    try:
        async with asyncio.timeout(ctx.timeout):
            started = ctx.resolver.submit(name, rdtype, urgent=urgent)
            return started if isinstance(started, DnsAnswer) else await started
    except TimeoutError:
        return DnsAnswer(name.rstrip("."), rdtype, Outcome.TIMEOUT, detail=f"no answer within {ctx.timeout:g} s")


def _addresses(answer: DnsAnswer) -> list[int]:
    result = []
    for record in answer.records:
        try:
            result.append(int(ipaddress.IPv4Address(record)))
        except ValueError:
            result.append(-1)  # not an IPv4 address at all: certainly outside 127/8
    return result


def _refusal(zone: Zone, addresses: Sequence[int]) -> str | None:
    for address in addresses:
        reason = zone.refusals.get(str(ipaddress.IPv4Address(address)))
        if reason is not None:
            return reason
        for bit, reason in zone.refusal_bits.items():
            if address & 0xFF & bit:
                return reason
    return None


def meanings(zone: Zone, address: int) -> list[str]:
    """What one answer of `zone` means: its exact code, its bits, its octets and its level."""
    text = str(ipaddress.IPv4Address(address))
    found = [zone.codes[text]] if text in zone.codes else []
    found += [meaning for bit, meaning in sorted(zone.bits.items()) if address & 0xFF & bit]
    for position, table in sorted(zone.octets.items()):
        value = (address >> (8 * (4 - position))) & 0xFF
        found.append(table.get(value, f"octet {position} = {value} (undocumented)"))
    found += [level.meaning for level in zone.levels if address in level]
    return found or [f"{text} (a code this zone does not document)"]


def _listed(
    zone: Zone, shown: str, answer: DnsAnswer, addresses: Sequence[int], txt: list[str], now: datetime
) -> Finding:
    described = [
        f"{record} {'; '.join(meanings(zone, address))}"
        for record, address in zip(answer.records, addresses, strict=True)
    ]
    evidence = _evidence(zone, shown, answer, txt=txt, meanings=described)
    if zone.role == "allow":
        summary = f"on the {zone.title} allow-list (good news): {', '.join(described)}"
        return _finding(zone, Status.OK, "allow-listed", summary, evidence, zone.note, now)
    if zone.role == "reputation":
        return _reputation(zone, addresses, described, evidence, now)
    statuses = [_STATUS[level.status] for level in zone.levels for a in addresses if a in level and level.status]
    status = max(statuses, key=lambda s: s.severity) if statuses else _STATUS[zone.severity]
    summary = f"listed in {zone.title}: {', '.join(described)}"
    if txt:
        summary += f" ({txt[0]})"
    return _finding(zone, status, "listed", summary, evidence, _delist_advice(zone), now)


def _reputation(
    zone: Zone, addresses: Sequence[int], described: list[str], evidence: dict[str, Any], now: datetime
) -> Finding:
    levels = [level for level in zone.levels for address in addresses if address in level]
    if not levels:
        summary = f"{zone.title} gave an answer outside its documented levels: {', '.join(described)}"
        return _finding(zone, Status.UNKNOWN, "unexpected-answer", summary, evidence, "", now)
    status = max((_STATUS[level.status or "ok"] for level in levels), key=lambda s: s.severity)
    code = "reputation-good" if status is Status.OK else "reputation-poor"
    summary = f"{zone.title}: {', '.join(described)}"
    advice = _delist_advice(zone) if status is not Status.OK else zone.note
    return _finding(zone, status, code, summary, evidence, advice, now)


def _not_listed(zone: Zone, shown: str, answer: DnsAnswer, now: datetime) -> Finding:
    evidence = _evidence(zone, shown, answer)
    if zone.role == "allow":
        summary = f"not on the {zone.title} allow-list (informational: most senders are not)"
        return _finding(zone, Status.OK, "not-allow-listed", summary, evidence, "", now)
    if zone.role == "reputation":
        summary = f"{zone.title} has no reputation data for this address"
        return _finding(zone, Status.OK, "no-reputation", summary, evidence, "", now)
    return _finding(zone, Status.OK, "not-listed", f"not listed in {zone.title}", evidence, "", now)


def _failed(zone: Zone, shown: str, answer: DnsAnswer, now: datetime) -> Finding:
    code = {Outcome.TIMEOUT: "timeout", Outcome.SERVFAIL: "servfail", Outcome.REFUSED: "dns-refused"}
    summary = f"could not ask {zone.title}: {answer.describe()}"
    advice = "Unknown, not clean: the look-up will be tried again on the next run."
    return _finding(zone, Status.UNKNOWN, code.get(answer.outcome, "dns-error"), summary,
                    _evidence(zone, shown, answer), advice, now)  # fmt: skip


def _refused(zone: Zone, shown: str, answer: DnsAnswer, reason: str, now: datetime) -> Finding:
    fixes = ["use a local recursive resolver (for example unbound) that asks the list directly, not a public "
             "or provider forwarder"]  # fmt: skip
    if zone.dqs:
        fixes.append(f"set a Spamhaus DQS key (free) so the zone is asked as KEY.{zone.dqs}.dq.spamhaus.net")
    if zone.requires_registration:
        fixes.append(zone.requires_registration)
    advice = f"{reason}. To get real answers: " + "; or ".join(fixes) + "."
    summary = f"{zone.title} refused to answer: {reason}"
    return _finding(zone, Status.UNKNOWN, "refused", summary, _evidence(zone, shown, answer), advice, now)


def _broken(zone: Zone, shown: str, answer: DnsAnswer, reason: str, now: datetime) -> Finding:
    summary = f"{zone.title} looks broken ({reason}); its answer means nothing"
    advice = "The zone is ignored until its test points pass again; consider disabling it if this lasts."
    return _finding(zone, Status.UNKNOWN, "broken-zone", summary,
                    _evidence(zone, shown, answer, reason=reason), advice, now)  # fmt: skip


def _delist_advice(zone: Zone) -> str:
    where = "" if zone.delist == "none" else f"Details and removal: {zone.delist}"
    return " ".join(part for part in (where, zone.note) if part)


def _evidence(zone: Zone, shown: str, answer: DnsAnswer, **extra: Any) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "answers": list(answer.records),
        "txt": extra.pop("txt", []),
        "query": shown,
        "outcome": answer.outcome,
        "kind": zone.kind,
    }
    if answer.server:
        evidence["server"] = answer.server
    if answer.detail:
        evidence["detail"] = answer.detail
    if zone.delist != "none":
        evidence["delist"] = zone.delist
    evidence.update(extra)
    return evidence


def _finding(
    zone: Zone, status: Status, code: str, summary: str, evidence: dict[str, Any], advice: str, now: datetime
) -> Finding:
    return Finding(CHECK_ID, zone.name, status, summary, evidence, advice, code, now)


# -- zone health ------------------------------------------------------------------------------------------------


_ServersKey = tuple[str, ...]
_SERVERS_CACHE = "dnsbl.servers"


def _servers_key(ctx: CheckContext) -> _ServersKey:
    """The resolver's nameservers as text, part of the health cache's key (computed once per nameserver tuple)."""
    nameservers = ctx.resolver.nameservers
    cached = ctx.caches.get(_SERVERS_CACHE)
    if cached is not None and cached[0] is nameservers:
        key: _ServersKey = cached[1]
        return key
    key = tuple(str(ns) for ns in nameservers)
    ctx.caches[_SERVERS_CACHE] = (nameservers, key)
    return key


def _cache_key(zone: Zone, servers: _ServersKey) -> tuple[str, _ServersKey]:
    return zone.query_zone, servers


def _cached_health(zone: Zone, ctx: CheckContext, now: datetime, servers: _ServersKey) -> ZoneHealth | None:
    entry = ctx.caches.get(_HEALTH_CACHE, {}).get((zone.query_zone, servers))
    if entry is None or entry[0] <= now:
        return None
    health: ZoneHealth = entry[1]
    return health


async def _health(zone: Zone, ctx: CheckContext) -> ZoneHealth:
    """The zone's health from the cache, or probed once however many checks ask at the same time."""
    servers = _servers_key(ctx)
    cached = _cached_health(zone, ctx, ctx.clock(), servers)
    if cached is not None:
        return cached
    return await asyncio.shield(_health_task(zone, ctx, servers))


def _health_task(zone: Zone, ctx: CheckContext, servers: _ServersKey) -> asyncio.Task[ZoneHealth]:
    """The one probe of `zone` in flight on this loop (started if need be); it fills the cache when done."""
    per_loop = ctx.caches.setdefault(_INFLIGHT_CACHE, weakref.WeakKeyDictionary())
    inflight: dict[tuple[str, _ServersKey], asyncio.Task[ZoneHealth]]
    inflight = per_loop.setdefault(asyncio.get_running_loop(), {})
    key = _cache_key(zone, servers)
    task = inflight.get(key)
    if task is None:
        task = inflight[key] = asyncio.ensure_future(_probe_and_keep(zone, ctx, key))
        task.add_done_callback(lambda _: inflight.pop(key, None))
    return task


async def _probe_and_keep(zone: Zone, ctx: CheckContext, key: tuple[str, _ServersKey]) -> ZoneHealth:
    health = await _probe(zone, ctx)
    ttl = UNREACHABLE_RETRY if health.health == Health.UNREACHABLE else HEALTH_TTL
    ctx.caches.setdefault(_HEALTH_CACHE, {})[key] = (health.checked_at + ttl, health)
    return health


def probe_names(zone: Zone) -> tuple[str | None, str]:
    """The (must be listed, must not be listed) names to prepend to the zone; the first is None without test points."""
    if zone.queries == "domain":
        return (zone.test_listed or "test") if zone.test_points else None, "invalid"
    if "ipv4" in zone.families:
        return ("2.0.0.127" if zone.test_points else None), "1.0.0.127"
    # Built by hand: dnspython writes IPv4-mapped addresses as in-addr.arpa names.
    listed = _nibbles("::ffff:7f00:2") if zone.test_points else None
    return listed, _nibbles("::ffff:7f00:1")


def _nibbles(address: str) -> str:
    return ".".join(reversed(ipaddress.IPv6Address(address).exploded.replace(":", "")))


async def _probe(zone: Zone, ctx: CheckContext) -> ZoneHealth:
    now = ctx.clock()
    if not zone.usable:
        detail = "served only through Spamhaus DQS: set dnsbl.dqs_key to use it"
        return ZoneHealth(zone.name, zone.kind, Health.NEEDS_KEY, detail, now)
    listed, unlisted = probe_names(zone)
    points = [unlisted] if listed is None else [unlisted, listed]
    # Urgent: every check of this zone waits for these answers, so they go ahead of queued look-ups.
    answers = await asyncio.gather(*(_query(ctx, f"{point}.{zone.query_zone}.", "A", urgent=True) for point in points))
    health, detail = _judge(zone, answers[0], answers[1] if listed is not None else None)
    evidence = {f"{point}.{zone.shown_zone}": _probe_evidence(a) for point, a in zip(points, answers, strict=True)}
    return ZoneHealth(zone.name, zone.kind, health, detail, now, evidence)


def _probe_evidence(answer: DnsAnswer) -> dict[str, Any]:
    return {"outcome": answer.outcome, "answers": list(answer.records)}


def _judge(zone: Zone, unlisted: DnsAnswer, listed: DnsAnswer | None) -> tuple[str, str]:
    """The health and its reason from the two test-point answers (pure: no I/O)."""
    for answer, must_list in ((unlisted, False), (listed, True)):
        if answer is None or not answer.ok:
            continue
        addresses = _addresses(answer)
        if any(not _LOOPBACK_FIRST <= address <= _LOOPBACK_LAST for address in addresses):
            return Health.BROKEN, f"it answers outside 127.0.0.0/8 ({', '.join(answer.records)})"
        refusal = _refusal(zone, addresses)
        if refusal is not None:
            return Health.REFUSED, refusal
        if not must_list:
            point = probe_names(zone)[1]
            return Health.BROKEN, f"it lists {point}, a test point that must never be listed (it lists everything)"
    failed = [answer for answer in (unlisted, listed) if answer is not None and answer.failed]
    if failed:
        return Health.UNREACHABLE, failed[0].describe()
    if listed is None:
        return Health.UNVERIFIED, "reachable; publishes no test points, so its listings cannot be verified"
    if not listed.ok:
        point = str(probe_names(zone)[0])
        return Health.BROKEN, f"it does not list its test point {point} ({listed.describe()})"
    return Health.HEALTHY, "lists its test point and not the one it must not list"
