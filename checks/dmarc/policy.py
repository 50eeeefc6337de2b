"""DMARC: find the policy record by the RFC 9989 DNS tree walk, compare with the RFC 7489 lookup, and lint it.

All the walk's names are asked at once (the resolver shares and caches the answers), so the check costs
two round trips: the walk with the apex and DKIM keys, then the external report authorisations.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from checks.context import CheckContext
from checks.dmarc._parse import (
    DMARC_TAGS,
    DmarcRecord,
    ReportUri,
    TagSpec,
    Walk,
    check_pct,
    interpret_walk,
    is_dmarc,
    load_psl,
    one_record,
    organizational_domain_psl,
    parse_dmarc,
    walk_names,
)
from checks.dns.resolver import DnsAnswer
from checks.i18n import N_, _
from checks.messages import DNS_FAILED, Messages, emit
from checks.model import Finding, Status, Target

__all__ = [
    "DMARC_TAGS",
    "DmarcRecord",
    "ReportUri",
    "TagSpec",
    "Walk",
    "check",
    "interpret_walk",
    "is_dmarc",
    "organizational_domain_psl",
    "parse_dmarc",
    "walk_names",
]

CHECK = "dmarc"
_STRENGTH = {"none": 0, "quarantine": 1, "reject": 2}

_OK, _WARN, _FAIL, _UNKNOWN = Status.OK, Status.WARN, Status.FAIL, Status.UNKNOWN

#: code -> (status, summary, advice); the {fields} come from the finding's evidence.
MESSAGES: Messages = {
    "record": (_OK, N_("DMARC policy {policy} at {name}"), ""),
    "inherited": (_OK, N_("DMARC policy {policy}, inherited from {name} (its sp= applies)"), ""),
    "missing": (
        _FAIL,
        N_("no DMARC record for {domain} (tree walk: {walk})"),
        N_('publish _dmarc.{org_domain} TXT "{suggested}", read the reports, then move to p=quarantine and p=reject'),
    ),
    "dns-failed": DNS_FAILED,
    "multiple": (
        _FAIL,
        N_("{count} DMARC records at {name}: receivers ignore them all"),
        N_("keep exactly one TXT record starting with v=DMARC1 at {name}"),
    ),
    "apex-record": (
        _WARN,
        N_("a DMARC record at {domain} itself has no effect"),
        N_("publish it at _dmarc.{domain} and remove the v=DMARC1 TXT record from {domain}"),
    ),
    "syntax": (_FAIL, N_("the DMARC record at {name} has errors: {errors}"), N_('fix it, e.g. "{suggested}"')),
    "unknown-tag": (
        _WARN,
        N_("unknown DMARC tags at {name}: {tags}"),
        N_("remove them; receivers ignore tags they do not know"),
    ),
    "p-none": (
        _WARN,
        N_("DMARC policy is none: monitoring only, spoofed mail is still delivered"),
        N_('once the reports show your mail aligned, publish {name} TXT "{suggested}", later reject'),
    ),
    "sp-weaker": (
        _WARN,
        N_("sp={sp} gives subdomains a weaker policy than p={policy}: spoofing a subdomain is easier"),
        N_('unless subdomains send unauthenticated mail, publish {name} TXT "{suggested}"'),
    ),
    "pct": (_WARN, N_("pct={pct}: the policy covers only part of the failing mail"), N_('publish "{suggested}"')),
    "testing": (
        _WARN,
        N_("t=y: receivers apply one step less than the policy"),
        N_('once clean, publish "{suggested}"'),
    ),
    "no-rua": (
        _WARN,
        N_("no rua=: nobody receives aggregate reports, so failures go unseen"),
        N_('publish {name} TXT "{suggested}"'),
    ),
    "report-unauthorised": (
        _WARN,
        N_("{dest} has not authorised DMARC reports for {domain}: receivers will not send them there"),
        N_('ask the operator of {dest} to publish {auth_name} TXT "v=DMARC1", or report to an address of your own'),
    ),
    "report-auth-unknown": (_UNKNOWN, N_("could not check {auth_name}: {outcome}"), N_("try again later")),
    "walk-differs": (
        _WARN,
        N_("RFC 7489 receivers use {legacy}, RFC 9989 receivers {name}"),
        N_("publish the intended record at _dmarc.{domain} so that every receiver applies the same policy"),
    ),
    "alignment": (_OK, N_("{spf}; {dkim}"), N_("sign with d={domain} and send from an envelope address at {domain}")),
}


def _emit(
    code: str,
    subject: str,
    evidence: Mapping[str, Any],
    status: Status | None = None,
    said: Mapping[str, str] | None = None,
) -> Finding:
    return emit(CHECK, MESSAGES, code, subject, evidence, status, said)


async def _txt(ctx: CheckContext, name: str) -> DnsAnswer:
    return await ctx.resolver.query(name, "TXT")


def _texts(answer: DnsAnswer) -> list[str] | None:
    return None if answer.failed else answer.texts()


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """DMARC findings for a domain: the record, its policy, reports, apex records and alignment."""
    domain = target.value
    names = walk_names(domain)
    selectors = ctx.dkim_selectors.get(domain, ())
    walk_answers, apex, keys = await asyncio.gather(
        asyncio.gather(*(_txt(ctx, f"_dmarc.{name}") for name in names)),
        _txt(ctx, domain),
        asyncio.gather(*(_txt(ctx, f"{sel}._domainkey.{domain}") for sel in selectors)),
    )
    answers = list(walk_answers)
    # The Public Suffix List is parsed (in a thread, once) only after the first round trip, so that it does
    # not hold back the other checks' first queries. Its answer is in the walk unless the name is very long.
    await load_psl()
    org7489 = organizational_domain_psl(domain)
    if org7489 not in names:
        names.append(org7489)
        answers.append(await _txt(ctx, f"_dmarc.{org7489}"))
    by_name = {name: _texts(answer) for name, answer in zip(names, answers, strict=True)}
    walk = interpret_walk(domain, by_name)
    findings = []
    if stray := [t for t in apex.texts() if is_dmarc(t)]:
        findings.append(_emit("apex-record", domain, {"domain": domain, "records": stray}))
    for name, texts in walk.multiple.items():
        findings.append(_emit("multiple", domain, {"name": f"_dmarc.{name}", "count": len(texts), "records": texts}))
    if walk.failed is not None:
        failed = answers[names.index(walk.failed)]
        evidence: dict[str, Any] = {
            "name": f"_dmarc.{walk.failed}",
            "outcome": failed.describe(),
            "walk": walk_names(domain),
        }
        return [*findings, _emit("dns-failed", domain, evidence, said={"outcome": failed.said()})]
    if walk.record is None or walk.policy_domain is None:
        suggested = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{org7489}"
        walked = ", ".join(f"_dmarc.{name}" for name in walk_names(domain))
        evidence = {"domain": domain, "walk": walked, "org_domain": org7489, "suggested": suggested}
        return [*findings, _emit("missing", domain, evidence)]
    findings.extend(_record_findings(domain, walk.policy_domain, walk.record, walk))
    findings.extend(await _report_findings(ctx, domain, walk.policy_domain, walk.record))
    findings.extend(_rfc7489_findings(domain, org7489, walk, by_name))
    findings.append(_alignment(domain, walk, apex, keys, selectors))
    return findings


def _record_findings(domain: str, where: str, record: DmarcRecord, walk: Walk) -> list[Finding]:
    inherited = where != domain
    effective = record.subdomain_policy if inherited else record.policy
    base = {"name": f"_dmarc.{where}", "record": record.raw, "policy": effective, "org_domain": walk.org_domain}

    def emit(code: str, **extra: Any) -> None:
        out.append(_emit(code, domain, {**base, **extra}))

    out: list[Finding] = []
    if record.errors:
        fixed = {"v": "DMARC1", "p": effective} if "p" not in record.tags else {"v": "DMARC1"}
        emit("syntax", errors="; ".join(record.errors), suggested=record.with_tags(**fixed))
    else:
        emit("inherited" if inherited else "record")
    if record.unknown_tags:
        emit("unknown-tag", tags=", ".join(record.unknown_tags))
    if effective == "none":
        tag = "sp" if inherited and "sp" in record.tags else "p"
        emit("p-none", suggested=record.with_tags(**{tag: "quarantine"}))
    sp = record.tags.get("sp", "").lower()
    if not inherited and sp in _STRENGTH and _STRENGTH[sp] < _STRENGTH[record.policy]:
        emit("sp-weaker", sp=sp, policy=record.policy, suggested=record.with_tags(sp=record.policy))
    if record.get("pct") != "100" and check_pct(record.get("pct")) is None:
        emit("pct", pct=record.get("pct"), suggested=record.without("pct"))
    if record.get("t") == "y":
        emit("testing", suggested=record.without("t"))
    if "rua" not in record.tags:
        emit("no-rua", suggested=record.with_tags(rua=f"mailto:dmarc-reports@{walk.org_domain}"))
    return out


async def _report_findings(ctx: CheckContext, domain: str, where: str, record: DmarcRecord) -> list[Finding]:
    """External report destinations must authorise themselves (RFC 7489 §7.1): <where>._report._dmarc.<dest>."""
    own = organizational_domain_psl(where)
    external = sorted(
        {
            uri.domain
            for tag in ("rua", "ruf")
            for uri in record.report_uris(tag)
            if uri.domain is not None and organizational_domain_psl(uri.domain) != own
        }
    )
    names = [f"{where}._report._dmarc.{dest}" for dest in external]
    answers = await asyncio.gather(*(_txt(ctx, name) for name in names))
    out = []
    for dest, name, answer in zip(external, names, answers, strict=True):
        evidence: dict[str, Any] = {"domain": where, "dest": dest, "auth_name": name, "outcome": answer.describe()}
        evidence |= {"records": answer.texts(), "record": record.raw}
        if answer.failed:
            out.append(_emit("report-auth-unknown", domain, evidence, said={"outcome": answer.said()}))
        elif not any(is_dmarc(text) for text in answer.texts()):
            out.append(_emit("report-unauthorised", domain, evidence))
    return out


def _rfc7489_findings(domain: str, org: str, walk: Walk, answers: Mapping[str, Sequence[str] | None]) -> list[Finding]:
    """Receivers still on RFC 7489 look at the domain, then the PSL organizational domain; say if they differ."""
    legacy = domain if one_record(answers.get(domain)) is not None else org
    legacy_where = legacy if one_record(answers.get(legacy)) is not None else None
    if legacy_where == walk.policy_domain:
        return []
    evidence = {"domain": domain, "name": f"_dmarc.{walk.policy_domain}", "psl_org_domain": org}
    evidence |= {"legacy": f"_dmarc.{legacy_where}" if legacy_where else "no record"}
    return [_emit("walk-differs", domain, evidence)]


@dataclass(frozen=True)
class _Words:
    """A sentence made twice from one template: English for the evidence (JSON, logs), the active language for the
    summary; `said_fields` are the fields worded otherwise there (a DNS outcome's `said()`, a translated part)."""

    template: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    said_fields: Mapping[str, str] = field(default_factory=dict)

    def english(self) -> str:
        return self.template.format_map(self.fields)

    def said(self) -> str:
        return _(self.template).format_map({**self.fields, **self.said_fields})


def _alignment(
    domain: str, walk: Walk, apex: DnsAnswer, keys: Sequence[DnsAnswer], selectors: Sequence[str]
) -> Finding:
    """What DNS shows: one SPF record at the domain, and keys at the configured DKIM selectors."""
    assert walk.record is not None
    aspf, adkim = walk.record.get("aspf"), walk.record.get("adkim")
    spf = [t for t in apex.texts() if t.lower().startswith("v=spf1")]
    live = [sel for sel, key in zip(selectors, keys, strict=True) if _has_key(key)]
    where = (_Words(N_("exactly {domain}"), {"domain": domain}) if aspf == "s"
             else _Words(N_("at {domain} or under {org}"), {"domain": domain, "org": walk.org_domain}))  # fmt: skip
    if apex.failed:
        spf_words = _Words(N_("SPF not judged: TXT {domain} {outcome}"), {"domain": domain, "outcome": apex.describe()},
                           {"outcome": apex.said()})  # fmt: skip
    elif len(spf) == 1:
        spf_words = _Words(N_("SPF can align if the envelope sender (MAIL FROM) is {where} (aspf={aspf})"),
                           {"where": where.english(), "aspf": aspf}, {"where": where.said()})  # fmt: skip
    else:
        spf_words = _Words(N_("SPF cannot align with {domain} itself ({count} SPF records there)"),
                           {"domain": domain, "count": len(spf)})  # fmt: skip
    if not selectors:
        dkim_words = _Words(N_("DKIM not judged: no selector configured"))
    elif live:
        dkim_words = _Words(N_("DKIM can align with d={domain} (adkim={adkim}; selectors with a key: {selectors})"),
                            {"domain": domain, "adkim": adkim, "selectors": ", ".join(live)})  # fmt: skip
    else:
        dkim_words = _Words(N_("DKIM cannot align: no key at the configured selectors {selectors}"),
                            {"selectors": ", ".join(selectors)})  # fmt: skip
    spf_text, dkim_text = spf_words.english(), dkim_words.english()
    said = {"spf": spf_words.said(), "dkim": dkim_words.said()}
    if apex.failed:
        status = Status.OK if live else Status.UNKNOWN
    elif len(spf) == 1 and (live or not selectors):
        status = Status.OK
    elif len(spf) == 1 or live:
        status = Status.WARN
    else:
        status = Status.UNKNOWN if apex.failed or any(k.failed for k in keys) else Status.FAIL
    evidence: dict[str, Any] = {"domain": domain, "spf": spf_text, "dkim": dkim_text, "aspf": aspf, "adkim": adkim}
    evidence |= {"spf_records": spf, "selectors": list(selectors), "selectors_with_key": live}
    return _emit("alignment", domain, evidence, status, said)


def _has_key(answer: DnsAnswer) -> bool:
    return any(re.search(r"(^|;)\s*p\s*=\s*[A-Za-z0-9+/]", text) for text in answer.texts())
