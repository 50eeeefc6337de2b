"""DNSBL zone health: each zone probed at its RFC 5782 test points, at most once an hour per nameserver set.

The probe of a zone is shared by every check that needs it at the same time, and its result is kept in
`ctx.caches`; checks.dnsbl.lookup judges its answers against it (and re-exports Health, ZoneHealth and probe_names).
"""

from __future__ import annotations

import asyncio
import ipaddress
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from checks.context import CheckContext
from checks.dns.resolver import DnsAnswer, Outcome
from checks.dnsbl.catalog import Zone
from checks.i18n import N_, _

HEALTH_TTL = timedelta(hours=1)
UNREACHABLE_RETRY = timedelta(minutes=5)
_HEALTH_CACHE = "dnsbl.health"
_INFLIGHT_CACHE = "dnsbl.health.inflight"
_LOOPBACK_FIRST, _LOOPBACK_LAST = 0x7F000000, 0x7FFFFFFF


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
    """The live health of one zone, as `repbot lists` shows it.

    The reason is kept as its English sentence and fields, and worded when it is read: a probe is cached for an
    hour and shared by rooms that speak different languages. `detail` is the English (evidence, JSON), `said()`
    the active language's.
    """

    zone: str
    kind: str
    health: str
    reason: str
    checked_at: datetime
    evidence: Mapping[str, Any] = field(default_factory=dict, compare=False)
    fields: Mapping[str, str | DnsAnswer] = field(default_factory=dict, compare=False)

    @property
    def detail(self) -> str:
        return self._words(str)

    def said(self) -> str:
        return self._words(_)

    def _words(self, say: Callable[[str], str]) -> str:
        if not self.fields:  # a zones.toml refusal sentence is said as it is: no placeholders to fill
            return say(self.reason)
        english = say is str
        values = {
            name: (value.describe() if english else value.said()) if isinstance(value, DnsAnswer) else value
            for name, value in self.fields.items()
        }
        return say(self.reason).format(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "kind": self.kind,
            "health": self.health,
            "detail": self.detail,
            "checked_at": self.checked_at.isoformat(timespec="seconds"),
            "evidence": dict(self.evidence),
        }


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
        # A fixed detail, so that `said()` finds it in the catalog (the timeout itself is the operator's setting).
        return DnsAnswer(name.rstrip("."), rdtype, Outcome.TIMEOUT, detail=N_("no answer within the check's timeout"))


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
        reason = N_("served only through Spamhaus DQS: set dnsbl.dqs_key to use it")
        return ZoneHealth(zone.name, zone.kind, Health.NEEDS_KEY, reason, now)
    listed, unlisted = probe_names(zone)
    points = [unlisted] if listed is None else [unlisted, listed]
    # Urgent: every check of this zone waits for these answers, so they go ahead of queued look-ups.
    answers = await asyncio.gather(*(_query(ctx, f"{point}.{zone.query_zone}.", "A", urgent=True) for point in points))
    health, reason, fields = _judge(zone, answers[0], answers[1] if listed is not None else None)
    evidence = {f"{point}.{zone.shown_zone}": _probe_evidence(a) for point, a in zip(points, answers, strict=True)}
    return ZoneHealth(zone.name, zone.kind, health, reason, now, evidence, fields)


def _probe_evidence(answer: DnsAnswer) -> dict[str, Any]:
    return {"outcome": answer.outcome, "answers": list(answer.records)}


_Judged = tuple[str, str, dict[str, str | DnsAnswer]]
_AS_ANSWERED = "{outcome}"  # an unreachable zone's reason is its failed answer's own phrase


def _judge(zone: Zone, unlisted: DnsAnswer, listed: DnsAnswer | None) -> _Judged:
    """The health, its reason (English) and the reason's fields, from the two test-point answers (pure: no I/O)."""
    for answer, must_list in ((unlisted, False), (listed, True)):
        if answer is None or not answer.ok:
            continue
        addresses = _addresses(answer)
        if any(not _LOOPBACK_FIRST <= address <= _LOOPBACK_LAST for address in addresses):
            return (
                Health.BROKEN,
                N_("it answers outside 127.0.0.0/8 ({answers})"),
                {"answers": ", ".join(answer.records)},
            )
        refusal = _refusal(zone, addresses)
        if refusal is not None:
            return Health.REFUSED, refusal, {}
        if not must_list:
            reason = N_("it lists {point}, a test point that must never be listed (it lists everything)")
            return Health.BROKEN, reason, {"point": probe_names(zone)[1]}
    failed = [answer for answer in (unlisted, listed) if answer is not None and answer.failed]
    if failed:
        return Health.UNREACHABLE, _AS_ANSWERED, {"outcome": failed[0]}
    if listed is None:
        return Health.UNVERIFIED, N_("reachable; publishes no test points, so its listings cannot be verified"), {}
    if not listed.ok:
        point = str(probe_names(zone)[0])
        return (
            Health.BROKEN,
            N_("it does not list its test point {point} ({outcome})"),
            {"point": point, "outcome": listed},
        )
    return Health.HEALTHY, N_("lists its test point and not the one it must not list"), {}
