"""Whose mail a report counted: is a source IP yours ([monitor] ips, your MX or helo hosts, your SPF)?

A source is yours when it is one of your sending IPs, an address of one of your domains' MX hosts or of your
helo names, or when your SPF authorises it (RFC 7208 check_host = pass, evaluated with `checks.spf`). An SPF
evaluation that fails (temperror, a DNS timeout) decides nothing: the source is then not known to be yours,
and says why. Each IP is evaluated once per run, at most `MAX_SPF` of them, a few at a time.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from checks.context import CheckContext
from checks.i18n import _, number
from checks.mx import mx_hosts
from checks.spf.evaluator import check_host

__all__ = ["MAX_SPF", "SourceVerdict", "classify_sources"]

MAX_SPF = 300
CONCURRENCY = 16


@dataclass(frozen=True)
class SourceVerdict:
    """Whether a source IP sends your mail, and why (or why that could not be decided): `why` is for a person,
    in the language active when the sources were classified."""

    ip: str
    ours: bool
    why: str = ""
    decided: bool = True


def _networks(ips: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    found = []
    for text in ips:
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    return found


async def _host_addresses(names: Iterable[str], ctx: CheckContext) -> dict[str, str]:
    """address -> the helo name that resolves to it."""
    names = list(dict.fromkeys(n.rstrip(".").lower() for n in names if n))
    answers = await asyncio.gather(
        *(ctx.resolver.query(n, kind) for n in names for kind in ("A", "AAAA")), return_exceptions=True
    )
    found: dict[str, str] = {}
    for index, answer in enumerate(answers):
        if not isinstance(answer, BaseException):
            why = _("helo host {name}").format(name=names[index // 2])
            for record in answer.records:
                found.setdefault(ipaddress.ip_address(record).compressed, why)
    return found


async def _mx_addresses(domains: Iterable[str], ctx: CheckContext) -> dict[str, str]:
    found: dict[str, str] = {}
    for mx in await asyncio.gather(*(mx_hosts(d, ctx) for d in dict.fromkeys(domains))):
        for host, address in mx.addresses:
            found.setdefault(ipaddress.ip_address(address).compressed, f"MX {host.name}")
    return found


async def _spf(ip: str, domains: Sequence[str], ctx: CheckContext, gate: asyncio.Semaphore) -> SourceVerdict:
    failures = []
    for domain in domains:
        async with gate:
            result = await check_host(
                ip, domain, f"postmaster@{domain}", resolver=ctx.resolver, timeout=ctx.timeout * 4
            )
        if result.result == "pass":
            return SourceVerdict(ip, True, _("SPF of {domain}").format(domain=domain))
        if result.result in ("temperror", "permerror"):
            failures.append(_("SPF of {domain}: {result}").format(domain=domain, result=result.result))
    if failures:
        return SourceVerdict(ip, False, "; ".join(failures), decided=False)
    return SourceVerdict(ip, False, _("not in your IPs, MX, helo hosts or SPF"))


async def classify_sources(
    sources: Mapping[str, Sequence[str]],
    ctx: CheckContext,
    sending_ips: Sequence[str] = (),
    helo_names: Sequence[str] = (),
) -> dict[str, SourceVerdict]:
    """A verdict per source IP; `sources` maps each IP to the domains it sent as (its header_from domains)."""
    networks = _networks(sending_ips)
    domains = sorted({d for names in sources.values() for d in names if d})
    mx, helo = await asyncio.gather(_mx_addresses(domains, ctx), _host_addresses(helo_names, ctx))
    verdicts: dict[str, SourceVerdict] = {}
    pending: list[str] = []
    for ip in sources:
        address = ipaddress.ip_address(ip)
        if any(address in net for net in networks):
            verdicts[ip] = SourceVerdict(ip, True, _("in [monitor] ips"))
        elif ip in mx or ip in helo:
            verdicts[ip] = SourceVerdict(ip, True, mx.get(ip) or helo[ip])
        else:
            pending.append(ip)
    gate = asyncio.Semaphore(CONCURRENCY)
    checked = await asyncio.gather(*(_spf(ip, sorted(set(sources[ip])), ctx, gate) for ip in pending[:MAX_SPF]))
    verdicts.update((v.ip, v) for v in checked)
    unevaluated = _("not evaluated: more than {count} sources").format(count=number(MAX_SPF))
    for ip in pending[MAX_SPF:]:
        verdicts[ip] = SourceVerdict(ip, False, unevaluated, decided=False)
    return verdicts
