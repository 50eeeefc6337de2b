"""MX and reverse DNS: the MX set, null and implicit MX, each exchange's addresses, PTR and FCrDNS, HELO names.

Check ids: "mx" (the set and each exchange) and "ptr" (each address's reverse DNS, and each HELO name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.rdtypes.ANY.MX

from checks.context import CheckContext
from checks.dns.resolver import DnsAnswer, reverse_pointer
from checks.i18n import _
from checks.model import Finding, Status, Target

__all__ = ["MxHost", "MxSet", "check", "check_helo", "check_reverse", "is_generic_ptr", "mx_hosts"]

MX = "mx"
PTR = "ptr"

_GENERIC_WORDS = re.compile(
    r"(?:^|[.\-_\d])(dyn|dynamic|dynip|dsl|adsl|vdsl|xdsl|dhcp|pool|dial|dialup|ppp|pppoe|cable|broadband|"
    r"client|clients|customer|cust|subscriber|residential|unassigned)(?:$|[.\-_\d])"
)


@dataclass(frozen=True)
class MxHost:
    """One mail exchange: its preference, name and the addresses it resolves to."""

    preference: int
    name: str
    addresses: tuple[str, ...] = ()
    cnames: tuple[str, ...] = ()
    ip_literal: bool = False
    lookups: tuple[DnsAnswer, ...] = field(default=(), compare=False, repr=False)

    @property
    def failed(self) -> bool:
        """True when no address was found because a look-up failed (not because none exist)."""
        return not self.addresses and any(answer.failed for answer in self.lookups)


@dataclass(frozen=True)
class MxSet:
    """A domain's mail exchanges, sorted by preference.

    kind: "mx" (published MX), "null" (RFC 7505 `0 .`), "implicit" (no MX: the domain's own A/AAAA),
    "none" (no MX and no address), "nxdomain" (the domain does not exist), "unknown" (the look-up failed).
    """

    domain: str
    kind: str
    hosts: tuple[MxHost, ...] = ()
    answer: DnsAnswer | None = field(default=None, compare=False, repr=False)
    mixed_null: bool = False

    @property
    def addresses(self) -> tuple[tuple[MxHost, str], ...]:
        """Every (host, address) pair, in preference order, without repeating an address."""
        seen: set[str] = set()
        pairs: list[tuple[MxHost, str]] = []
        for host in self.hosts:
            for address in host.addresses:
                if address not in seen:
                    seen.add(address)
                    pairs.append((host, address))
        return tuple(pairs)


async def mx_hosts(domain: str, ctx: CheckContext) -> MxSet:
    """The MX set of `domain` with each exchange's addresses; never raises for DNS outcomes."""
    domain = domain.rstrip(".").lower()
    answer = await ctx.resolver.query(domain, "MX")
    if answer.failed:
        return MxSet(domain, "unknown", answer=answer)
    if answer.outcome == "nxdomain":
        return MxSet(domain, "nxdomain", answer=answer)
    if answer.missing:
        host = await _resolve_host(0, domain, ctx)
        kind = "implicit" if host.addresses or host.failed else "none"
        return MxSet(domain, kind if not host.failed else "unknown", (host,), answer=answer)
    records = sorted(
        (
            (rd.preference, rd.exchange.to_text(omit_final_dot=True).lower())
            for rd in answer.rdata
            if isinstance(rd, dns.rdtypes.ANY.MX.MX)
        ),
    )
    real = [(pref, name) for pref, name in records if name not in ("", ".")]
    if not real:
        return MxSet(domain, "null", answer=answer)
    hosts = await asyncio.gather(*(_resolve_host(pref, name, ctx) for pref, name in real))
    return MxSet(domain, "mx", tuple(hosts), answer=answer, mixed_null=len(real) != len(records))


async def _resolve_host(preference: int, name: str, ctx: CheckContext) -> MxHost:
    if _is_ip_literal(name):
        return MxHost(preference, name, ip_literal=True)
    a, aaaa = await asyncio.gather(ctx.resolver.query(name, "A"), ctx.resolver.query(name, "AAAA"))
    addresses = tuple(dict.fromkeys(_normal_ip(text) for text in (*a.records, *aaaa.records)))
    cnames = tuple(dict.fromkeys(c.rstrip(".").lower() for c in (*a.cnames, *aaaa.cnames)))
    return MxHost(preference, name, addresses, cnames, lookups=(a, aaaa))


def _is_ip_literal(name: str) -> bool:
    text = name.strip("[]")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return all(label.isdigit() for label in name.split(".")) and name.count(".") == 3
    return True


def _normal_ip(text: str) -> str:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text


# -- findings for the domain ---------------------------------------------------------------------------------


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """The "mx" findings (set and exchanges) and "ptr" findings (MX addresses, sending IPs, HELO names)."""
    if target.is_ip:
        return [await check_reverse(target.value, ctx)]
    mxset = await mx_hosts(target.value, ctx)
    findings = [_set_finding(mxset, ctx)]
    findings.extend(_host_finding(host, mxset, ctx) for host in mxset.hosts if mxset.kind == "mx")
    sending = [_normal_ip(ip) for ip in ctx.sending_ips_for(target.value)]  # this domain's, not every IP's
    ips = list(dict.fromkeys([address for _, address in mxset.addresses] + sending))
    reverse = asyncio.gather(*(check_reverse(ip, ctx) for ip in ips))
    helo = asyncio.gather(*(check_helo(name, ctx) for name in ctx.helo_names))
    ptr_findings, helo_findings = await asyncio.gather(reverse, helo)
    return [*findings, *ptr_findings, *helo_findings]


def _set_finding(mxset: MxSet, ctx: CheckContext) -> Finding:
    domain = mxset.domain
    evidence: dict[str, Any] = {"mx": mxset.answer.to_json() if mxset.answer else {}}
    records = [f"{host.preference} {host.name}" for host in mxset.hosts]

    def make(status: Status, code: str, summary: str, advice: str = "") -> Finding:
        return Finding(MX, domain, status, summary, evidence, advice, code, ctx.clock())

    if mxset.kind == "unknown":
        detail = mxset.answer.said() if mxset.answer and mxset.answer.failed else _("address look-up failed")
        return make(
            Status.UNKNOWN, "lookup-failed", _("could not look up the MX records: {detail}").format(detail=detail)
        )
    if mxset.kind == "nxdomain":
        return make(
            Status.FAIL,
            "nxdomain",
            _("{domain} does not exist (NXDOMAIN)").format(domain=domain),
            _("Check the domain name and its delegation."),
        )
    if mxset.kind == "null":
        return make(
            Status.OK,
            "null-mx",
            _("null MX (0 .): this domain receives no mail; fine for a send-only domain"),
            _(
                "Bounces and DMARC/TLS reports addressed here cannot arrive; "
                "publish a real MX if it should receive mail."
            ),
        )
    if mxset.kind == "none":
        return make(
            Status.WARN,
            "no-mx",
            _("no MX and no A/AAAA: this domain cannot receive mail"),
            _(
                "If on purpose, publish a null MX `{domain}. IN MX 0 .`; otherwise `{domain}. IN MX 10 mail.{domain}.`"
            ).format(domain=domain),
        )
    evidence["records"] = records
    if mxset.kind == "implicit":
        addresses = ", ".join(mxset.hosts[0].addresses)
        return make(
            Status.WARN,
            "implicit-mx",
            _("no MX record: senders fall back to the domain's own address ({addresses})").format(addresses=addresses),
            _(
                "Publish an explicit MX, e.g. `{domain}. IN MX 10 mail.{domain}.`, or a null MX (`0 .`) if send-only."
            ).format(domain=domain),
        )
    if mxset.mixed_null:
        return make(
            Status.FAIL,
            "null-mx-mixed",
            _("a null MX (0 .) published together with other MX records: {records}").format(records=", ".join(records)),
            _("RFC 7505: a null MX must be the only MX record; remove it or the others."),
        )
    return make(Status.OK, "mx", _("{count} MX: {records}").format(count=len(records), records=", ".join(records)))


def _host_finding(host: MxHost, mxset: MxSet, ctx: CheckContext) -> Finding:
    evidence: dict[str, Any] = {"preference": host.preference, "addresses": list(host.addresses)}
    evidence["lookups"] = [answer.to_json() for answer in host.lookups]
    domain = mxset.domain

    def make(status: Status, code: str, summary: str, advice: str = "") -> Finding:
        return Finding(MX, host.name, status, summary, evidence, advice, code, ctx.clock())

    if host.ip_literal:
        return make(
            Status.FAIL,
            "mx-ip-literal",
            _("the MX points to an IP address ({name}); an MX must name a host").format(name=host.name),
            _("Publish an A/AAAA record such as `mail.{domain}. IN A {name}` and point the MX at that name.").format(
                domain=domain, name=host.name
            ),
        )
    if host.failed:
        return make(
            Status.UNKNOWN, "lookup-failed", _("could not look up the addresses of {name}").format(name=host.name)
        )
    if not host.addresses:
        return make(
            Status.FAIL,
            "mx-no-address",
            _("{name} has no A or AAAA record: mail to this MX cannot be delivered").format(name=host.name),
            _("Publish `{name}. IN A <address>` or remove this MX.").format(name=host.name),
        )
    shown = ", ".join(host.addresses)
    if host.cnames:
        evidence["cnames"] = list(host.cnames)
        return make(
            Status.WARN,
            "mx-cname",
            _("{name} is an alias (CNAME to {cnames}); an MX must not point to a CNAME ({shown})").format(
                name=host.name, cnames=host.cnames[-1], shown=shown
            ),
            _("RFC 2181 §10.3: point the MX directly at {cnames} or give {name} its own A/AAAA.").format(
                cnames=host.cnames[-1], name=host.name
            ),
        )
    return make(Status.OK, "mx-address", _("{name} resolves to {shown}").format(name=host.name, shown=shown))


# -- reverse DNS ---------------------------------------------------------------------------------------------


async def check_reverse(ip: str, ctx: CheckContext) -> Finding:
    """The "ptr" Finding for one IP: PTR present, forward-confirmed, not generic-looking."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return Finding(
            PTR, ip, Status.UNKNOWN, f"{ip!r} is not an IP address", code="invalid-ip", observed_at=ctx.clock()
        )
    ip = address.compressed
    suffix = "in-addr.arpa" if address.version == 4 else "ip6.arpa"
    answer = await ctx.resolver.query(f"{reverse_pointer(ip)}.{suffix}", "PTR")
    evidence: dict[str, Any] = {"ptr": answer.to_json()}

    def make(status: Status, code: str, summary: str, advice: str = "") -> Finding:
        return Finding(PTR, ip, status, summary, evidence, advice, code, ctx.clock())

    if answer.failed:
        return make(
            Status.UNKNOWN,
            "lookup-failed",
            _("could not look up the PTR of {ip}: {answer}").format(ip=ip, answer=answer.said()),
        )
    names = [rd.to_text().rstrip(".").lower() for rd in answer.rdata] if answer.ok else []
    if not names:
        who = (
            _("Microsoft (550 5.7.25) and Gmail reject mail")
            if address.version == 6
            else _("Gmail and others reject mail")
        )
        return make(
            Status.FAIL,
            "no-ptr",
            _("{ip} has no PTR record: {who} from addresses without reverse DNS").format(ip=ip, who=who),
            _(
                "Ask whoever runs the address block (your hosting provider) to set the PTR of {ip} to your mail host."
            ).format(ip=ip),
        )
    forward = await asyncio.gather(
        *(ctx.resolver.query(name, "A" if address.version == 4 else "AAAA") for name in names)
    )
    evidence["forward"] = [f.to_json() for f in forward]
    confirmed = [name for name, f in zip(names, forward, strict=True) if ip in {_normal_ip(r) for r in f.records}]
    return _judge_ptr(ip, names, confirmed, forward, make)


_Make = Callable[[Status, str, str, str], Finding]


def _judge_ptr(ip: str, names: list[str], confirmed: list[str], forward: list[DnsAnswer], make: _Make) -> Finding:
    shown = ", ".join(names)
    if not confirmed and any(f.failed for f in forward):
        return make(
            Status.UNKNOWN,
            "lookup-failed",
            _("PTR {shown}, but the forward look-up failed; FCrDNS unknown").format(shown=shown),
            "",
        )
    if not confirmed:
        return make(
            Status.FAIL,
            "fcrdns-mismatch",
            _("PTR {shown} does not resolve back to {ip} (not forward-confirmed)").format(shown=shown, ip=ip),
            _("Publish `{names}. IN {value} {ip}`, or change the PTR to a name that does.").format(
                names=names[0], value="AAAA" if ":" in ip else "A", ip=ip
            ),
        )
    generic = [name for name in confirmed if is_generic_ptr(name, ip)]
    if generic:
        return make(
            Status.WARN,
            "generic-ptr",
            _(
                "PTR {generic} looks generic (dynamic/residential style); receivers may treat it as a botnet host"
            ).format(generic=generic[0]),
            _(
                "Set the PTR of {ip} to your mail host name (e.g. mail.example.org) "
                "and give that name an address record."
            ).format(ip=ip),
        )
    if len(names) > 1:
        return make(
            Status.WARN,
            "multiple-ptr",
            _("{ip} has {count} PTR records ({shown}); receivers pick one at random").format(
                ip=ip, count=len(names), shown=shown
            ),
            _("Keep a single PTR record naming the host that sends mail."),
        )
    return make(Status.OK, "fcrdns", _("PTR {names}, forward-confirmed").format(names=names[0]), "")


def is_generic_ptr(name: str, ip: str) -> bool:
    """True for provider-generated names: ones embedding the address's digits or words such as 'dynamic'."""
    name = name.lower()
    if _GENERIC_WORDS.search(name):
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if address.version == 4:
        octets = str(address).split(".")
        digits = re.findall(r"\d+", name)
        joined = "".join(octets)
        return _contains_run(digits, octets) or _contains_run(digits, octets[::-1]) or joined in name.replace("-", "")
    hexed = address.exploded.replace(":", "")
    return hexed[-8:] in name.replace("-", "").replace(".", "")


def _contains_run(parts: list[str], octets: Iterable[str]) -> bool:
    wanted = [str(int(o)) for o in octets]
    found = [str(int(p)) for p in parts if len(p) <= 3]
    return any(found[i : i + 4] == wanted for i in range(len(found) - 3))


async def check_helo(name: str, ctx: CheckContext) -> Finding:
    """The "ptr" Finding for one configured HELO name: does it resolve back to a sending IP?"""
    name = name.strip().rstrip(".").lower()
    subject = f"helo {name}"
    a, aaaa = await asyncio.gather(ctx.resolver.query(name, "A"), ctx.resolver.query(name, "AAAA"))
    addresses = {_normal_ip(r) for r in (*a.records, *aaaa.records)}
    sending = {_normal_ip(ip) for ip in ctx.sending_ips}
    evidence = {"lookups": [a.to_json(), aaaa.to_json()], "sending_ips": sorted(sending)}

    def make(status: Status, code: str, summary: str, advice: str = "") -> Finding:
        return Finding(PTR, subject, status, summary, evidence, advice, code, ctx.clock())

    if not addresses and (a.failed or aaaa.failed):
        return make(Status.UNKNOWN, "lookup-failed", _("could not look up HELO name {name}").format(name=name))
    if not addresses:
        return make(
            Status.FAIL,
            "helo-no-address",
            _("HELO name {name} has no A/AAAA record").format(name=name),
            _("Publish `{name}. IN A <sending IP>`; receivers check that the HELO name resolves.").format(name=name),
        )
    if sending and not addresses & sending:
        return make(
            Status.WARN,
            "helo-mismatch",
            _("HELO name {name} resolves to {addresses}, none of the sending IPs").format(
                name=name, addresses=", ".join(sorted(addresses))
            ),
            _("Point {name} at the sending IP(s) {sending}, or change the HELO name.").format(
                name=name, sending=", ".join(sorted(sending))
            ),
        )
    return make(
        Status.OK,
        "helo",
        _("HELO name {name} resolves to {addresses}").format(name=name, addresses=", ".join(sorted(addresses))),
    )
