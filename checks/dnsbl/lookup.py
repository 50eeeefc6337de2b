"""Blocklist (DNSBL/RHSBL), allow-list and reputation-zone look-ups, with the zones' health kept in check.

Semantics (REFERENCE.md, "Blocklists"): a refusal code is `unknown`, never a listing; a timeout, SERVFAIL or
REFUSED is `unknown`; a zone that lists its "must not be listed" test point or answers outside 127.0.0.0/8 is
broken and its answers are `unknown`; a zone with test points that does not list its "must be listed" point is
broken too. When most zones with test points deny theirs (NXDOMAIN), the resolver is hiding the blocklists, so a
zone without test points is `unknown` too, never "not listed". Each zone's health is probed at most once an hour
(unreachable: again after five minutes) and kept in `ctx.caches`, so a zone that passes again is used again.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from checks.context import CheckContext
from checks.dns.resolver import DnsAnswer, Outcome, reverse_pointer
from checks.dnsbl._health import (
    _LOOPBACK_FIRST,
    _LOOPBACK_LAST,
    Health,
    ZoneHealth,
    _addresses,
    _cached_health,
    _health,
    _health_task,
    _query,
    _refusal,
    _servers_key,
    probe_names,
)
from checks.dnsbl.catalog import Catalog, Zone, load_catalog
from checks.i18n import N_, _
from checks.model import Finding, Status, Target, TargetKind

__all__ = ["CHECK_ID", "Catalog", "Health", "Zone", "ZoneHealth", "check_domain", "check_ip", "load_catalog",
           "meanings", "probe_names", "zone_health", "zones_for"]  # fmt: skip

CHECK_ID = "dnsbl"
# How many zones must deny their listed test point before "not listed" from an untested zone means nothing.
DENIED_ZONES_MIN = 3
_CATALOG_CACHE = "dnsbl.catalog"
_STATUS = {"ok": Status.OK, "warn": Status.WARN, "fail": Status.FAIL}


def zones_for(target: Target, ctx: CheckContext) -> tuple[Zone, ...]:
    """The zones in effect that `target`'s kind is asked of: one query each."""
    family = "domain" if not target.is_ip else "ipv4" if target.kind is TargetKind.IPV4 else "ipv6"
    return _catalog(ctx).for_family(family)


async def check_ip(target: Target, ctx: CheckContext) -> list[Finding]:
    """One finding per IP zone that lists `target`'s family (IPv6 nibble-reversed, only to IPv6 zones)."""
    if not target.is_ip:
        raise TypeError(f"check_ip needs an IP address, not the domain {target.value}")
    zones = zones_for(target, ctx)
    return _distrust_untested(zones, await _check_zones(zones, reverse_pointer(target.value), ctx), ctx)


async def check_domain(target: Target, ctx: CheckContext) -> list[Finding]:
    """One finding per domain zone (RHSBL) about `target`."""
    if target.is_ip:
        raise TypeError(f"check_domain needs a domain, not the address {target.value}")
    zones = zones_for(target, ctx)
    return _distrust_untested(zones, await _check_zones(zones, target.value, ctx), ctx)


async def zone_health(ctx: CheckContext) -> list[ZoneHealth]:
    """Every zone in effect with its kind and health, probed concurrently (or from the hour's cache)."""
    zones = _catalog(ctx).zones
    return list(await asyncio.gather(*(_health(zone, ctx) for zone in zones)))


def _denied(zone: Zone, health: ZoneHealth) -> bool:
    """True when the zone's "must be listed" test point came back NXDOMAIN."""
    listed = probe_names(zone)[0]
    probe = health.evidence.get(f"{listed}.{zone.shown_zone}", {})
    return health.health == Health.BROKEN and probe.get("outcome") == Outcome.NXDOMAIN


def _distrust_untested(zones: Sequence[Zone], findings: list[Finding], ctx: CheckContext) -> list[Finding]:
    """`unknown` for the clean answers of zones without test points, when the tested zones show the resolver lies."""
    now, servers = ctx.clock(), _servers_key(ctx)
    tested = [(zone, _cached_health(zone, ctx, now, servers)) for zone in zones if zone.test_points and zone.usable]
    denied = sum(1 for zone, health in tested if health is not None and _denied(zone, health))
    if denied < DENIED_ZONES_MIN or denied * 2 < len(tested):
        return findings
    untested = {zone.name for zone in zones if not zone.test_points}
    summary = _(
        "cannot trust a clean answer: {denied} of {tested} zones with test points answer NXDOMAIN for the "
        "test point they must list, so this resolver hides listings, and this zone publishes no test points"
    ).format(denied=denied, tested=len(tested))
    advice = _("Use a resolver that asks the blocklists directly (a local unbound), not a filtering forwarder.")
    return [
        Finding(f.check, f.subject, Status.UNKNOWN, summary, {**f.evidence, "denied_zones": denied}, advice,
                "untrusted-resolver", f.observed_at)
        if f.subject in untested and f.status is Status.OK else f
        for f in findings
    ]  # fmt: skip


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
        return _broken(zone, shown, answer, health.detail, now, health.said())
    if answer.failed:
        return _failed(zone, shown, answer, now)
    if not answer.ok:
        if health.health == Health.REFUSED:
            return _refused(zone, shown, answer, health.detail, now)
        return _not_listed(zone, shown, answer, now)
    addresses = _addresses(answer)
    if any(not _LOOPBACK_FIRST <= address <= _LOOPBACK_LAST for address in addresses):
        return _broken(zone, shown, answer, N_("it answered outside 127.0.0.0/8"), now)
    refusal = _refusal(zone, addresses) or (health.detail if health.health == Health.REFUSED else None)
    if refusal is not None:
        return _refused(zone, shown, answer, refusal, now)
    return addresses


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
    pairs = list(zip(answer.records, addresses, strict=True))
    evidence = _evidence(zone, shown, answer, txt=txt, meanings=[_described(zone, *pair, str) for pair in pairs])
    # The data file's meanings are English in the evidence and in the operator's language in the summary.
    described = [_described(zone, *pair, _) for pair in pairs]
    if zone.role == "allow":
        summary = _("on the {zone} allow-list (good news): {meanings}").format(
            zone=zone.title, meanings=", ".join(described)
        )
        return _finding(zone, Status.OK, "allow-listed", summary, evidence, _(zone.note) if zone.note else "", now)
    if zone.role == "reputation":
        return _reputation(zone, addresses, described, evidence, now)
    statuses = [_STATUS[level.status] for level in zone.levels for a in addresses if a in level and level.status]
    status = max(statuses, key=lambda s: s.severity) if statuses else _STATUS[zone.severity]
    summary = _("listed in {zone}: {meanings}").format(zone=zone.title, meanings=", ".join(described))
    if txt:
        summary += f" ({txt[0]})"
    return _finding(zone, status, "listed", summary, evidence, _delist_advice(zone, answer.records), now)


def _described(zone: Zone, record: str, address: int, say: Callable[[str], str]) -> str:
    return f"{record} {'; '.join(say(meaning) for meaning in meanings(zone, address))}"


def _reputation(
    zone: Zone, addresses: Sequence[int], described: list[str], evidence: dict[str, Any], now: datetime
) -> Finding:
    levels = [level for level in zone.levels for address in addresses if address in level]
    if not levels:
        summary = _("{zone} gave an answer outside its documented levels: {meanings}").format(
            zone=zone.title, meanings=", ".join(described)
        )
        return _finding(zone, Status.UNKNOWN, "unexpected-answer", summary, evidence, "", now)
    status = max((_STATUS[level.status or "ok"] for level in levels), key=lambda s: s.severity)
    code = "reputation-good" if status is Status.OK else "reputation-poor"
    summary = f"{zone.title}: {', '.join(described)}"
    advice = _delist_advice(zone) if status is not Status.OK else (_(zone.note) if zone.note else "")
    return _finding(zone, status, code, summary, evidence, advice, now)


def _not_listed(zone: Zone, shown: str, answer: DnsAnswer, now: datetime) -> Finding:
    evidence = _evidence(zone, shown, answer)
    if zone.role == "allow":
        summary = _("not on the {zone} allow-list (informational: most senders are not)").format(zone=zone.title)
        return _finding(zone, Status.OK, "not-allow-listed", summary, evidence, "", now)
    if zone.role == "reputation":
        summary = _("{zone} has no reputation data for this address").format(zone=zone.title)
        return _finding(zone, Status.OK, "no-reputation", summary, evidence, "", now)
    summary = _("not listed in {zone}").format(zone=zone.title)
    return _finding(zone, Status.OK, "not-listed", summary, evidence, "", now)


def _failed(zone: Zone, shown: str, answer: DnsAnswer, now: datetime) -> Finding:
    code = {Outcome.TIMEOUT: "timeout", Outcome.SERVFAIL: "servfail", Outcome.REFUSED: "dns-refused",
            Outcome.NOT_SENT: "not-sent"}  # fmt: skip
    summary = _("could not ask {zone}: {outcome}").format(zone=zone.title, outcome=answer.said())
    advice = _("Unknown, not clean: the look-up will be tried again on the next run.")
    return _finding(zone, Status.UNKNOWN, code.get(answer.outcome, "dns-error"), summary,
                    _evidence(zone, shown, answer), advice, now)  # fmt: skip


def _refused(zone: Zone, shown: str, answer: DnsAnswer, reason: str, now: datetime) -> Finding:
    reason = _(reason)  # zones.toml's refusal sentence, which zone health keeps in English too
    fixes = [_("use a local recursive resolver (for example unbound) that asks the list directly, not a public "
               "or provider forwarder")]  # fmt: skip
    if zone.dqs:
        fixes.append(_("set a Spamhaus DQS key (free) so the zone is asked as KEY.{zone}.dq.spamhaus.net").format(
            zone=zone.dqs))  # fmt: skip
    if zone.requires_registration:
        fixes.append(_(zone.requires_registration))
    advice = _("{reason}. To get real answers: {fixes}.").format(reason=reason, fixes=_("; or ").join(fixes))
    summary = _("{zone} refused to answer: {reason}").format(zone=zone.title, reason=reason)
    return _finding(zone, Status.UNKNOWN, "refused", summary, _evidence(zone, shown, answer), advice, now)


def _broken(zone: Zone, shown: str, answer: DnsAnswer, reason: str, now: datetime, said: str | None = None) -> Finding:
    """`reason` in English, for the evidence; `said` in the active language (`_(reason)` when not given)."""
    shown_reason = _(reason) if said is None else said
    summary = _("{zone} looks broken ({reason}); its answer means nothing").format(zone=zone.title, reason=shown_reason)
    advice = _("The zone is ignored until its test points pass again; consider disabling it if this lasts.")
    return _finding(zone, Status.UNKNOWN, "broken-zone", summary,
                    _evidence(zone, shown, answer, reason=reason), advice, now)  # fmt: skip


def _delist_advice(zone: Zone, answers: Sequence[str] = ()) -> str:
    where = "" if zone.delist == "none" else _("Details and removal: {url}").format(url=zone.delist)
    note = _(zone.note) if zone.note and (not zone.note_codes or zone.note_codes & set(answers)) else ""
    return " ".join(part for part in (where, note) if part)


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
    if answer.trace:
        evidence["trace"] = [step.to_json() for step in answer.trace]
    if zone.delist != "none":
        evidence["delist"] = zone.delist
    evidence.update(extra)
    return evidence


def _finding(
    zone: Zone, status: Status, code: str, summary: str, evidence: dict[str, Any], advice: str, now: datetime
) -> Finding:
    return Finding(CHECK_ID, zone.name, status, summary, evidence, advice, code, now)
