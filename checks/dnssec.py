"""DNSSEC: did the domain's answers come back authenticated (AD from a validating resolver), and is there a DS?

Check id "dnssec". The AD bit only means something when the resolver validates, so the DS record at the parent
is asked for as well: together they tell "signed and validated" from "signed, but this resolver does not
validate" and from "unsigned".
"""

from __future__ import annotations

import asyncio
from typing import Any

from checks.context import CheckContext
from checks.i18n import N_, _
from checks.model import Finding, Status, Target

__all__ = ["check"]

DNSSEC = "dnssec"
DANE_NEEDS_IT = N_("DANE (TLSA for your MX) and strict senders need it.")


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """One "dnssec" finding for a domain target; none for an IP."""
    if target.is_ip:
        return []
    return [await _judge(target.value, ctx)]


async def _judge(domain: str, ctx: CheckContext) -> Finding:
    soa, dnskey, ds = await asyncio.gather(
        ctx.resolver.query(domain, "SOA"), ctx.resolver.query(domain, "DNSKEY"), ctx.resolver.query(domain, "DS")
    )
    evidence: dict[str, Any] = {
        "soa": soa.to_json() | {"ad": soa.authenticated},
        "dnskey": dnskey.to_json() | {"ad": dnskey.authenticated},
        "ds": ds.to_json() | {"ad": ds.authenticated},
    }

    def make(status: Status, code: str, summary: str, advice: str = "") -> Finding:
        return Finding(DNSSEC, domain, status, summary, evidence, advice, code, ctx.clock())

    authenticated = any(a.authenticated for a in (soa, dnskey) if not a.failed)
    if authenticated:
        where = _("a DS at the parent") if ds.ok else _("a signed parent zone")
        return make(
            Status.OK, "validated", _("signed and validated: answers carry the AD bit ({where})").format(where=where)
        )
    if ds.ok:
        if soa.outcome == "servfail" or dnskey.outcome == "servfail":
            summary = _("a DS exists at the parent but the zone's answers fail (SERVFAIL): the signatures may be bogus")
            advice = _("Check the zone's signatures and that the DS matches a published DNSKEY (e.g. with dnsviz.net).")
            return make(Status.UNKNOWN, "servfail-signed", summary, advice)
        summary = _("a DS exists at the parent, so the zone is signed, but the resolver does not validate (no AD bit)")
        advice = _("Point repbot at a validating resolver (unbound, or a public one) so DNSSEC and DANE can be judged.")
        return make(Status.UNKNOWN, "resolver-not-validating", summary, advice)
    if ds.failed and (soa.failed or dnskey.failed):
        return make(Status.UNKNOWN, "lookup-failed", _("could not look up the DS record: {ds}").format(ds=ds.said()))
    if dnskey.ok:
        summary = _("DNSKEY published but no DS at the parent: the signatures are not trusted by anyone")
        advice = (
            _("Publish the DS record for {domain} at your registrar.").format(domain=domain) + " " + _(DANE_NEEDS_IT)
        )
        return make(Status.WARN, "no-ds", summary, advice)
    summary = _("not signed with DNSSEC (no DS at the parent, answers not authenticated)")
    advice = _("Sign the zone (most DNS hosts offer it) and publish the DS at your registrar.") + " " + _(DANE_NEEDS_IT)
    return make(Status.WARN, "unsigned", summary, advice)
