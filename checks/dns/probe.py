"""Does the resolver tell the truth? Ask it about names whose answer is known before asking.

Captive portals, filtering resolvers and broken forwarders answer NXDOMAIN for every name, the root included;
others rewrite NXDOMAIN into the address of an advertising page. From such a resolver "no SPF record", "does
not exist" and "not listed" are lies, so checks.runner asks `probe_resolver` first and, when it lies, turns
every finding of the run into `unknown` naming the resolver and what it got wrong.

Only the Resolver's public query API is used, so the probe does not depend on how the client works inside.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from checks.dns.resolver import DnsAnswer, Outcome, Resolver
from checks.i18n import N_, _

__all__ = ["LIE_NXDOMAIN", "LIE_REWRITES", "ResolverHealth", "probe_resolver", "resolver_name"]

LIE_NXDOMAIN = N_("answers NXDOMAIN for names that exist")
LIE_REWRITES = N_("answers with an address for names that cannot exist (NXDOMAIN rewriting)")
# The root zone always has a SOA; a name under .invalid (RFC 6761) or a random one under .com never exists.
_MUST_EXIST = ((".", "SOA"),)


def _must_not_exist(nonce: str) -> tuple[tuple[str, str], ...]:
    return ((f"{nonce}.invalid", "A"), (f"{nonce}-nxdomain-probe.com", "A"))


@dataclass(frozen=True)
class ResolverHealth:
    """What the probe found: the resolver it asked, the lies it caught (none: honest) and the answers."""

    resolver: str
    lies: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def honest(self) -> bool:
        return not self.lies

    def problem(self) -> str:
        """'the resolver at 127.0.0.53 answers NXDOMAIN for names that exist' (empty when honest), in the active
        language (`lies` keeps the English, as the evidence has it)."""
        if not self.lies:
            return ""
        lies = _(" and ").join(_(lie) for lie in self.lies)
        return _("the resolver at {resolver} {lies}").format(resolver=self.resolver, lies=lies)


def resolver_name(resolver: Resolver) -> str:
    """The nameservers as an operator writes them: 127.0.0.53, or 127.0.0.1:5353 off the standard port."""
    return ", ".join(ns.host if ns.port == 53 else str(ns) for ns in resolver.nameservers)


def _shown(answer: DnsAnswer) -> dict[str, Any]:
    data: dict[str, Any] = {"outcome": answer.outcome}
    if answer.records:
        data["records"] = list(answer.records)
    return data


async def probe_resolver(resolver: Resolver, nonce: str | None = None) -> ResolverHealth:
    """Ask the resolver about names that must exist and names that cannot; a failed query is no lie."""
    nonce = nonce or "rb" + secrets.token_hex(8)
    present, absent = _MUST_EXIST, _must_not_exist(nonce)
    answers = await asyncio.gather(*(resolver.query(name, rdtype) for name, rdtype in (*present, *absent)))
    found, invented = answers[: len(present)], answers[len(present) :]
    lies = []
    if any(answer.outcome == Outcome.NXDOMAIN for answer in found):
        lies.append(LIE_NXDOMAIN)
    if any(answer.ok and answer.records for answer in invented):
        lies.append(LIE_REWRITES)
    evidence = {
        f"{name} {rdtype}": _shown(answer) for (name, rdtype), answer in zip((*present, *absent), answers, strict=True)
    }
    return ResolverHealth(resolver_name(resolver), tuple(lies), evidence)
