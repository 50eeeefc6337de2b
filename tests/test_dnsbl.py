"""checks.dnsbl.lookup against a real local DNS server: listings, refusals, failures, broken zones, health, the catalog.

Every query goes to the local server on 127.0.0.1; real zone names are served by it, never asked of the internet.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from checks.context import CheckContext, DnsblSettings
from checks.dns.resolver import Resolver
from checks.dnsbl import lookup as dnsbl
from checks.dnsbl.catalog import Zone, parse_zone
from checks.dnsbl.lookup import Health, check_domain, check_ip, load_catalog, probe_names, zone_health
from checks.errors import CatalogError
from checks.model import Finding, Status, parse_target
from tests.fixtures.dnsserver import DnsServer
from tests.helpers import Clock

IP = "203.0.113.5"
REVERSED = "5.113.0.203"
DOMAIN = "example.org"
DEFUNCT = ("sorbs.net", "manitu.net", "anonmails.de", "spamdown.org", "wpbl.info", "virbl.bit.nl", "msrbl.net",
           "megarbl", "spamcannibal", "ahbl.org")  # fmt: skip


def make_ctx(
    server: DnsServer, *, timeout: float = 2.0, clock: Callable[[], datetime] | None = None, **settings: Any
) -> CheckContext:
    resolver = Resolver([server.address], timeout=2.0, cache=False)
    return CheckContext(
        resolver,
        timeout=timeout,
        clock=clock or Clock(datetime(2026, 1, 1, tzinfo=UTC)),
        dnsbl=DnsblSettings(**settings),
    )


def publish_test_points(server: DnsServer, zones: tuple[Zone, ...] | None = None) -> None:
    """Make every zone that publishes test points list its "must be listed" point, so it is healthy."""
    for zone in zones if zones is not None else load_catalog().zones:
        listed = probe_names(zone)[0]
        if listed is not None:
            server.add(f"{listed}.{zone.query_zone}", "A", _a_code(zone))


def _a_code(zone: Zone) -> str:
    if zone.refusal_bits:
        return "127.0.0.2" if 1 in zone.refusal_bits and 2 in zone.bits else "127.0.0.8"
    if zone.codes:
        return next(iter(zone.codes))
    return "127.0.10.0" if zone.octets else str(ipaddress.IPv4Address(zone.levels[0].first))


def by_zone(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.subject: finding for finding in findings}


SMALL_ZONE: Mapping[str, Any] = {
    "title": "Small test list",
    "queries": "ip",
    "families": ["ipv4", "ipv6"],
    "role": "block",
    "test_points": True,
    "txt": True,
    "delist": "https://bl.example.test/delist",
    "codes": {"127.0.0.2": "listed for testing"},
}


def small_ctx(server: DnsServer, name: str = "bl.zone.test", **overrides: Any) -> CheckContext:
    """A context whose catalog is only one small test zone."""
    every = {zone.name for zone in load_catalog().zones}
    return make_ctx(server, disabled=frozenset(every), extra_zones={name: {**SMALL_ZONE, **overrides}}, **{})


# -- listings ----------------------------------------------------------------------------------------------------


async def test_listed_with_codes_txt_and_delisting_url(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.add(f"{REVERSED}.zen.spamhaus.org", "A", "127.0.0.4")
    dns_server.add(f"{REVERSED}.zen.spamhaus.org", "A", "127.0.0.11")
    dns_server.add(f"{REVERSED}.zen.spamhaus.org", "TXT", "https://check.spamhaus.org/query/ip/203.0.113.5")
    findings = by_zone(await check_ip(parse_target(IP), make_ctx(dns_server)))
    zen = findings["zen.spamhaus.org"]
    assert zen.status is Status.FAIL and zen.code == "listed" and zen.check == "dnsbl"
    assert sorted(zen.evidence["answers"]) == ["127.0.0.11", "127.0.0.4"]
    assert zen.evidence["txt"] == ["https://check.spamhaus.org/query/ip/203.0.113.5"]
    assert zen.evidence["query"] == f"{REVERSED}.zen.spamhaus.org"
    assert "XBL" in zen.summary and "PBL, set by Spamhaus" in zen.summary
    assert "https://check.spamhaus.org/" in zen.advice and "PBL removal form" in zen.advice  # 127.0.0.11 is PBL
    assert zen.to_json()["evidence"]["answers"]  # the JSON shape `repbot check --json` prints
    assert findings["bl.spamcop.net"].status is Status.OK and findings["bl.spamcop.net"].code == "not-listed"


async def test_not_listed_everywhere_is_ok(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    findings = await check_ip(parse_target(IP), make_ctx(dns_server))
    assert findings and all(f.status is Status.OK for f in findings), [f.summary for f in findings if f.status]
    codes = {f.subject: f.code for f in findings}
    assert codes["list.dnswl.org"] == "not-allow-listed"
    assert codes["rep.mailspike.net"] == "no-reputation"
    assert "dbl.spamhaus.org" not in codes  # domain lists are not asked about IPs


async def test_domain_lists_with_bitmasks(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.add(f"{DOMAIN}.multi.uribl.com", "A", "127.0.0.6")
    dns_server.add(f"{DOMAIN}.dbl.spamhaus.org", "A", "127.0.1.104")
    findings = by_zone(await check_domain(parse_target(DOMAIN), make_ctx(dns_server)))
    assert set(findings) == {"dbl.spamhaus.org", "multi.surbl.org", "multi.uribl.com"}  # ZRD needs a DQS key
    uribl = findings["multi.uribl.com"]
    assert uribl.status is Status.FAIL and "black" in uribl.summary and "grey" in uribl.summary
    assert "phishing" in findings["dbl.spamhaus.org"].summary
    assert findings["multi.surbl.org"].status is Status.OK


async def test_uceprotect_collateral_levels_warn(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    for level in (1, 2, 3):
        dns_server.add(f"{REVERSED}.dnsbl-{level}.uceprotect.net", "A", "127.0.0.2")
    findings = by_zone(await check_ip(parse_target(IP), make_ctx(dns_server)))
    assert findings["dnsbl-1.uceprotect.net"].status is Status.FAIL
    assert findings["dnsbl-2.uceprotect.net"].status is Status.WARN
    assert findings["dnsbl-3.uceprotect.net"].status is Status.WARN
    assert "disabled" in findings["dnsbl-2.uceprotect.net"].advice


@pytest.mark.parametrize(
    ("zone", "answer", "status", "code", "words"),
    [
        ("rep.mailspike.net", "127.0.0.11", Status.WARN, "reputation-poor", "bad reputation"),
        ("rep.mailspike.net", "127.0.0.10", Status.WARN, "reputation-poor", "worst"),
        ("rep.mailspike.net", "127.0.0.19", Status.OK, "reputation-good", "excellent"),
        ("rep.mailspike.net", "127.0.0.2", Status.UNKNOWN, "unexpected-answer", "outside its documented levels"),
        ("score.senderscore.com", "127.0.4.85", Status.OK, "reputation-good", "good Sender Score"),
        ("score.senderscore.com", "127.0.4.40", Status.WARN, "reputation-poor", "poor Sender Score"),
        ("list.dnswl.org", "127.0.5.2", Status.OK, "allow-listed", "service or network provider; trust: medium"),
    ],
)
async def test_reputation_and_allow_lists(
    dns_server: DnsServer, zone: str, answer: str, status: Status, code: str, words: str
) -> None:
    publish_test_points(dns_server)
    dns_server.add(f"{REVERSED}.{zone}", "A", answer)
    finding = by_zone(await check_ip(parse_target(IP), make_ctx(dns_server)))[zone]
    assert (finding.status, finding.code) == (status, code)
    assert words in finding.summary


# -- refusals and failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "target", "answer"),
    [
        ("zen.spamhaus.org", IP, "127.255.255.254"),
        ("zen.spamhaus.org", IP, "127.255.255.255"),
        ("zen.spamhaus.org", IP, "127.255.255.252"),
        ("dbl.spamhaus.org", DOMAIN, "127.0.1.255"),
        ("multi.uribl.com", DOMAIN, "127.0.0.1"),
        ("multi.surbl.org", DOMAIN, "127.0.0.1"),
        ("list.dnswl.org", IP, "127.0.0.255"),
        ("score.senderscore.com", IP, "127.255.255.255"),
    ],
)
async def test_refusal_codes_are_unknown_with_advice(
    dns_server: DnsServer, zone: str, target: str, answer: str
) -> None:
    publish_test_points(dns_server)
    name = f"{REVERSED if target == IP else DOMAIN}.{zone}"
    dns_server.add(name, "A", answer)
    check = check_ip if target == IP else check_domain
    finding = by_zone(await check(parse_target(target), make_ctx(dns_server)))[zone]
    assert finding.status is Status.UNKNOWN and finding.code == "refused"
    assert finding.evidence["answers"] == [answer]
    assert "unbound" in finding.advice
    if "spamhaus" in zone:
        assert "DQS" in finding.advice
    if zone == "score.senderscore.com":
        assert "registered" in finding.advice


async def test_refused_test_point_makes_the_zone_refused(dns_server: DnsServer) -> None:
    # Behind a public resolver Spamhaus answers every query, test points included, with a refusal code.
    dns_server.add("*.zen.zone.test", "A", "127.255.255.254")
    ctx = small_ctx(dns_server, "zen.zone.test", dqs="zen", refusals={"127.255.255.254": "public resolver"})
    health = await zone_health(ctx)
    assert [(h.zone, h.health) for h in health] == [("zen.zone.test", Health.REFUSED)]
    [finding] = await check_ip(parse_target(IP), ctx)
    assert finding.code == "refused" and "DQS" in finding.advice


@pytest.mark.parametrize(("behaviour", "code"), [("servfail", "servfail"), ("refused", "dns-refused")])
async def test_servfail_and_refused_rcode_are_unknown(dns_server: DnsServer, behaviour: str, code: str) -> None:
    ctx = small_ctx(dns_server)
    dns_server.add("2.0.0.127.bl.zone.test", "A", "127.0.0.2")
    dns_server.set_behaviour(f"{REVERSED}.bl.zone.test", behaviour)
    [finding] = await check_ip(parse_target(IP), ctx)
    assert finding.status is Status.UNKNOWN and finding.code == code


async def test_timeout_is_unknown_within_ctx_timeout(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.set_behaviour("*.bl.spamcop.net", "timeout")
    dns_server.set_behaviour("2.0.0.127.bl.spamcop.net", None)  # only the look-up itself times out
    ctx = make_ctx(dns_server, timeout=0.5)
    started = time.monotonic()
    findings = by_zone(await check_ip(parse_target(IP), ctx))
    assert time.monotonic() - started < 1.8
    assert findings["bl.spamcop.net"].status is Status.UNKNOWN
    assert findings["bl.spamcop.net"].code == "timeout"
    assert findings["psbl.surriel.com"].status is Status.OK


async def test_dead_zone_listing_everything_is_broken(dns_server: DnsServer) -> None:
    dns_server.add("*.dead.test", "A", "127.0.0.2")
    ctx = small_ctx(dns_server, "dead.test")
    [finding] = await check_ip(parse_target(IP), ctx)
    assert finding.status is Status.UNKNOWN and finding.code == "broken-zone"
    assert "1.0.0.127" in finding.summary
    [health] = await zone_health(ctx)
    assert health.health == Health.BROKEN


async def test_answer_outside_loopback_is_broken(dns_server: DnsServer) -> None:
    ctx = small_ctx(dns_server)
    dns_server.add("2.0.0.127.bl.zone.test", "A", "127.0.0.2")
    dns_server.add(f"{REVERSED}.bl.zone.test", "A", "198.51.100.1")  # a parked domain's wildcard
    [finding] = await check_ip(parse_target(IP), ctx)
    assert finding.code == "broken-zone" and "outside 127.0.0.0/8" in finding.summary


async def test_missing_listed_test_point_is_broken(dns_server: DnsServer) -> None:
    ctx = small_ctx(dns_server)
    dns_server.add(f"{REVERSED}.bl.zone.test", "A", "127.0.0.2")
    [finding] = await check_ip(parse_target(IP), ctx)
    assert finding.status is Status.UNKNOWN and finding.code == "broken-zone"
    assert "does not list its test point" in finding.summary


async def test_zone_without_test_points_is_used_and_reported_as_such(dns_server: DnsServer) -> None:
    ctx = small_ctx(dns_server, test_points=False)
    dns_server.add(f"{REVERSED}.bl.zone.test", "A", "127.0.0.2")
    [finding] = await check_ip(parse_target(IP), ctx)
    assert finding.status is Status.FAIL
    [health] = await zone_health(ctx)
    assert health.health == Health.UNVERIFIED


async def test_answer_that_needs_tcp(dns_server: DnsServer) -> None:
    ctx = small_ctx(dns_server)
    dns_server.add("2.0.0.127.bl.zone.test", "A", "127.0.0.2")
    dns_server.add(f"{REVERSED}.bl.zone.test", "A", "127.0.0.2")
    dns_server.add(f"{REVERSED}.bl.zone.test", "TXT", "listed because " + "x" * 600)
    dns_server.set_behaviour(f"{REVERSED}.bl.zone.test", "truncate")
    [finding] = await check_ip(parse_target(IP), ctx)
    assert finding.status is Status.FAIL
    assert finding.evidence["txt"] == ["listed because " + "x" * 600]
    assert dns_server.count(f"{REVERSED}.bl.zone.test", transport="tcp") >= 1


# -- IPv6, DQS, operator settings --------------------------------------------------------------------------------


async def test_ipv6_is_nibble_reversed_and_asked_only_of_ipv6_zones(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    target = parse_target("2001:db8::1")
    nibbles = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    dns_server.add(f"{nibbles}.zen.spamhaus.org", "A", "127.0.0.3")
    findings = by_zone(await check_ip(target, make_ctx(dns_server)))
    assert set(findings) == {z.name for z in load_catalog().zones if "ipv6" in z.families}
    assert findings["zen.spamhaus.org"].code == "listed"
    asked = {name for name, _, _ in dns_server.queries if name.startswith(nibbles)}
    assert {name.removeprefix(nibbles + ".") for name in asked} == set(findings)


async def test_dqs_key_rewrites_spamhaus_zones_and_is_not_shown(dns_server: DnsServer) -> None:
    settings = DnsblSettings(dqs_key="SeCrEtKeY")
    publish_test_points(dns_server, load_catalog(settings).zones)
    dns_server.add(f"{DOMAIN}.secretkey.zrd.dq.spamhaus.net", "A", "127.0.2.5")
    ctx = make_ctx(dns_server, dqs_key="SeCrEtKeY")
    findings = by_zone(await check_domain(parse_target(DOMAIN), ctx))
    assert "zrd.spamhaus.org" in findings  # DQS-only, on once a key is set
    assert findings["zrd.spamhaus.org"].status is Status.WARN
    assert findings["zrd.spamhaus.org"].evidence["query"] == f"{DOMAIN}.[key].zrd.dq.spamhaus.net"
    asked = {name for name, _, _ in dns_server.queries}
    assert f"{DOMAIN}.secretkey.dbl.dq.spamhaus.net" in asked
    assert not any(name.endswith("spamhaus.org") for name in asked)
    assert all("secretkey" not in repr(f.to_json()).lower() for f in findings.values())
    health = {h.zone: h for h in await zone_health(ctx)}
    assert health["zrd.spamhaus.org"].health == Health.UNVERIFIED
    assert "secretkey" not in repr(health["dbl.spamhaus.org"].to_json()).lower()


async def test_dqs_only_zone_without_key(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    health = {h.zone: h.health for h in await zone_health(make_ctx(dns_server))}
    assert health["zrd.spamhaus.org"] == Health.NEEDS_KEY
    assert not any("zrd" in name for name, _, _ in dns_server.queries)


async def test_disabled_and_extra_zones(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.add("2.0.0.127.bl.zone.test", "A", "127.0.0.2")
    dns_server.add(f"{REVERSED}.bl.zone.test", "A", "127.0.0.2")
    ctx = make_ctx(
        dns_server,
        disabled=frozenset({"dnsbl-2.uceprotect.net", "dnsbl-3.uceprotect.net"}),
        extra_zones={"bl.zone.test": SMALL_ZONE},
    )
    findings = by_zone(await check_ip(parse_target(IP), ctx))
    assert "dnsbl-2.uceprotect.net" not in findings and "dnsbl-3.uceprotect.net" not in findings
    assert findings["bl.zone.test"].status is Status.FAIL
    assert not any("uceprotect.net" in name and "dnsbl-1" not in name for name, _, _ in dns_server.queries)


def test_disabling_an_unknown_zone_names_it() -> None:
    with pytest.raises(CatalogError) as error:
        load_catalog(DnsblSettings(disabled=frozenset({"dnsbl.sorbs.net"})))
    assert (error.value.zone, error.value.field) == ("dnsbl.sorbs.net", "disabled")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"queries": "url"}, "queries"),
        ({"families": ["ipv5"]}, "families"),
        ({"families": []}, "families"),
        ({"role": "maybe"}, "role"),
        ({"delist": "ftp://x"}, "delist"),
        ({"test_points": "yes"}, "test_points"),
        ({"codes": {"10.0.0.2": "outside"}}, "codes"),
        ({"codes": {"127.0.0.2": ""}}, "codes"),
        ({"codes": {}}, "codes"),
        ({"bits": {"3": "two bits"}}, "bits"),
        ({"refusals": {"nonsense": "x"}}, "refusals"),
        ({"levels": [{"first": "127.0.0.9", "last": "127.0.0.3", "meaning": "x"}]}, "levels"),
        ({"role": "reputation", "levels": [{"first": "127.0.0.2", "last": "127.0.0.3", "meaning": "x"}]}, "levels"),
        ({"dqs_only": True}, "dqs_only"),
        ({"colour": "red"}, "colour"),
        ({"title": 3}, "title"),
        ({"note_codes": "127.0.0.10"}, "note_codes"),
        ({"note_codes": ["10.0.0.1"]}, "note_codes"),
    ],
)
def test_catalog_errors_name_zone_and_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(CatalogError) as error:
        load_catalog(DnsblSettings(extra_zones={"Bad.Zone.Test.": {**SMALL_ZONE, **change}}))
    assert (error.value.zone, error.value.field) == ("bad.zone.test", field)
    assert "bad.zone.test" in str(error.value) and field in str(error.value)


# -- health caching ----------------------------------------------------------------------------------------------


async def test_health_is_probed_at_most_once_an_hour(dns_server: DnsServer) -> None:
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    every = {zone.name for zone in load_catalog().zones}
    ctx = make_ctx(dns_server, clock=clock, disabled=frozenset(every), extra_zones={"bl.zone.test": SMALL_ZONE})
    dns_server.add("*.bl.zone.test", "A", "127.0.0.2")  # dead: lists everything
    target = parse_target(IP)
    assert [f.code for f in await check_ip(target, ctx)] == ["broken-zone"]
    assert [f.code for f in await check_ip(target, ctx)] == ["broken-zone"]
    assert dns_server.count("1.0.0.127.bl.zone.test") == 1

    dns_server.clear()  # the zone is repaired ...
    dns_server.reset_counters()
    dns_server.add("2.0.0.127.bl.zone.test", "A", "127.0.0.2")
    dns_server.add(f"{REVERSED}.bl.zone.test", "A", "127.0.0.2")
    clock.advance(minutes=59)
    assert [f.code for f in await check_ip(target, ctx)] == ["broken-zone"]  # ... but not probed again yet
    assert dns_server.count("1.0.0.127.bl.zone.test") == 0
    clock.advance(minutes=2)
    assert [f.code for f in await check_ip(target, ctx)] == ["listed"]  # used again once it passes
    assert dns_server.count("1.0.0.127.bl.zone.test") == 1


async def test_health_cache_survives_a_new_event_loop(dns_server: DnsServer) -> None:
    ctx = small_ctx(dns_server)
    dns_server.add("2.0.0.127.bl.zone.test", "A", "127.0.0.2")
    await check_ip(parse_target(IP), ctx)
    assert ctx.caches["dnsbl.health"]  # kept in ctx.caches, keyed by zone and resolver
    probes = dns_server.count("2.0.0.127.bl.zone.test")
    await check_ip(parse_target("192.0.2.1"), ctx)
    assert dns_server.count("2.0.0.127.bl.zone.test") == probes == 1


async def test_concurrent_checks_probe_once(dns_server: DnsServer) -> None:
    ctx = small_ctx(dns_server)
    dns_server.add("2.0.0.127.bl.zone.test", "A", "127.0.0.2")
    dns_server.delay = 0.02
    import asyncio

    await asyncio.gather(*(check_ip(parse_target(f"192.0.2.{i}"), ctx) for i in range(1, 20)))
    assert dns_server.count("2.0.0.127.bl.zone.test") == 1


async def test_lists_reports_every_zone(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.set_behaviour("*.psbl.surriel.com", "servfail")
    dns_server.add("1.0.0.127.bl.spamcop.net", "A", "127.0.0.2")
    health = {h.zone: h for h in await zone_health(make_ctx(dns_server))}
    assert set(health) == {zone.name for zone in load_catalog().zones}
    assert health["zen.spamhaus.org"].health == Health.HEALTHY
    assert health["bl.spamcop.net"].health == Health.BROKEN
    assert health["psbl.surriel.com"].health == Health.UNREACHABLE
    assert health["bl.0spam.org"].health == Health.UNVERIFIED
    assert health["list.dnswl.org"].kind == "allow" and health["zen.spamhaus.org"].kind == "ip"
    assert health["bl.spamcop.net"].to_json()["health"] == "broken"


# -- the catalog's conventions (a meta-test) ---------------------------------------------------------------------


def test_catalog_conventions() -> None:
    catalog = load_catalog()
    names = {zone.name for zone in catalog.zones}
    required = {
        "zen.spamhaus.org", "dbl.spamhaus.org", "zrd.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org",
        "psbl.surriel.com", "all.s5h.net", "bl.mailspike.net", "rep.mailspike.net", "dnsbl-1.uceprotect.net",
        "dnsbl-2.uceprotect.net", "dnsbl.dronebl.org", "bl.0spam.org", "multi.surbl.org", "multi.uribl.com",
        "list.dnswl.org", "score.senderscore.com",
    }  # fmt: skip
    assert required <= names
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    for zone in catalog.zones:
        assert not any(dead in zone.name for dead in DEFUNCT), zone.name
        assert zone.delist == "none" or zone.delist.startswith("https://"), zone.name
        answers = [*zone.codes, *zone.refusals]
        answers += [str(ipaddress.IPv4Address(n)) for level in zone.levels for n in (level.first, level.last)]
        assert all(ipaddress.IPv4Address(a) in loopback for a in answers), zone.name
        assert not set(zone.codes) & set(zone.refusals), zone.name
        if zone.role == "reputation":
            assert zone.levels and all(level.status in ("ok", "warn") for level in zone.levels), zone.name
        if zone.queries == "ip":
            assert zone.families, zone.name
        if "spamhaus" in zone.name:
            assert zone.dqs and "127.255.255.254" in zone.refusals, zone.name
    assert catalog["zrd.spamhaus.org"].dqs_only
    assert catalog["dbl.spamhaus.org"].refusals["127.0.1.255"]
    assert catalog["b.barracudacentral.org"].requires_registration
    assert catalog["score.senderscore.com"].requires_registration
    assert catalog["dnsbl-2.uceprotect.net"].collateral and catalog["dnsbl-3.uceprotect.net"].collateral
    assert catalog["multi.uribl.com"].refusal_bits == {1: catalog["multi.uribl.com"].refusal_bits[1]}
    assert catalog["list.dnswl.org"].kind == "allow" and catalog["rep.mailspike.net"].kind == "reputation"


def test_meanings_decode_codes_bits_octets_levels() -> None:
    catalog = load_catalog()
    assert dnsbl.meanings(catalog["multi.surbl.org"], int(ipaddress.IPv4Address("127.0.0.24"))) == [
        "PH: phishing",
        "MW: malware",
    ]
    dnswl = dnsbl.meanings(catalog["list.dnswl.org"], int(ipaddress.IPv4Address("127.0.15.3")))
    assert dnswl == ["email marketing provider", "trust: high"]
    assert "does not document" in dnsbl.meanings(catalog["bl.spamcop.net"], int(ipaddress.IPv4Address("127.0.0.9")))[0]


def test_parse_zone_roundtrip_kind() -> None:
    zone = parse_zone("v6.zone.test", {**SMALL_ZONE, "families": ["ipv6"]})
    assert zone.kind == "ip6" and probe_names(zone)[0] is not None
    assert probe_names(zone)[1] == ".".join(reversed("00000000000000000000ffff7f000001"))


async def test_cancelled_check_leaves_the_shared_probe_and_the_limit_alone(dns_server: DnsServer) -> None:
    import asyncio

    publish_test_points(dns_server)
    dns_server.delay = 0.05
    ctx = make_ctx(dns_server)
    first = asyncio.ensure_future(check_ip(parse_target(IP), ctx))
    second = asyncio.ensure_future(check_ip(parse_target("203.0.113.6"), ctx))
    await asyncio.sleep(0.01)
    first.cancel()
    findings = await second
    assert first.cancelled()
    assert findings and all(f.status is not Status.UNKNOWN for f in findings)
    await asyncio.sleep(0.1)  # the abandoned queries' answers arrive and free their slots
    assert ctx.resolver.in_flight() == (0, 0)


async def test_zones_without_test_points_are_unknown_when_the_tested_zones_are_denied(dns_server: DnsServer) -> None:
    # A filtering resolver: the root and other names answer, every blocklist name is NXDOMAIN.
    dns_server.add("example.org", "A", "192.0.2.1")
    ctx = make_ctx(dns_server)
    findings = by_zone(await check_ip(parse_target("192.0.2.25"), ctx))
    untested = [zone for zone in load_catalog().for_family("ipv4") if not zone.test_points and zone.usable]
    assert untested
    for zone in untested:
        finding = findings[zone.name]
        assert finding.status is Status.UNKNOWN and finding.code == "untrusted-resolver", finding.summary
        assert "not listed" not in finding.summary
    assert not any(f.status is Status.OK for f in findings.values())
    publish_test_points(dns_server)
    ctx.caches.clear()
    findings = by_zone(await check_ip(parse_target("192.0.2.25"), ctx))
    assert all(findings[zone.name].status is Status.OK for zone in untested)


async def test_an_sbl_listing_is_not_told_about_the_pbl_removal_form(dns_server: DnsServer) -> None:
    publish_test_points(dns_server)
    dns_server.add(f"{REVERSED}.zen.spamhaus.org", "A", "127.0.0.2")
    zen = by_zone(await check_ip(parse_target(IP), make_ctx(dns_server)))["zen.spamhaus.org"]
    assert zen.code == "listed" and "SBL" in zen.summary
    assert "https://check.spamhaus.org/" in zen.advice and "PBL" not in zen.advice


async def test_meanings_and_notes_are_in_the_operators_language_and_evidence_stays_english(
    dns_server: DnsServer,
) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    publish_test_points(dns_server)
    dns_server.add(f"{REVERSED}.zen.spamhaus.org", "A", "127.0.0.11")
    with use_language("es"):
        zen = by_zone(await check_ip(parse_target(IP), make_ctx(dns_server)))["zen.spamhaus.org"]
    assert "127.0.0.11 PBL, puesta por Spamhaus: este rango no debería enviar correo directamente" in zen.summary
    assert "formulario de retirada de la PBL" in zen.advice
    assert zen.evidence["meanings"] == ["127.0.0.11 PBL, set by Spamhaus: this range should not send mail directly"]
