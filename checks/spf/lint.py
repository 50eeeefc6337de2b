"""The SPF lint: the include tree with lookup counts per branch, the usual mistakes, and the sending IPs.

`build_tree` walks the record and its include/redirect targets concurrently and never raises; `check` turns the
tree and a check_host() per configured sending IP into findings (check id "spf").
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from checks.context import CheckContext
from checks.dns.resolver import Resolver
from checks.i18n import _, ngettext
from checks.model import Finding, Status, Target
from checks.spf.evaluator import MAX_LOOKUPS, MAX_MX_NAMES, MAX_VOID_LOOKUPS, SpfResult, check_host
from checks.spf.parser import (
    LOOKUP_TERMS,
    MacroEnv,
    SpfRecord,
    SpfSyntaxError,
    expand_domain,
    is_spf_record,
    parse_record,
    uses_macro,
    valid_domain,
)

__all__ = ["CHECK_ID", "SpfNode", "build_tree", "check", "render_tree"]

CHECK_ID = "spf"
# The subject of the one finding about the domain's sending IPs (one per domain, not one per IP).
SENDING_SUBJECT = "sending IPs"
WARN_LOOKUPS = 8
MAX_NODES = 64
MAX_DEPTH = 12
_SENDER_LETTERS = "slihpv"  # macros whose value depends on the message, not on the domain


@dataclass
class SpfNode:
    """One domain of the include tree: its record, what went wrong, its own counts and its children."""

    domain: str
    via: str = "root"  # root | include | redirect
    record: str = ""
    status: str = "ok"  # ok | none | multiple | syntax | dns-failed | invalid-domain | loop | truncated
    detail: str = ""
    # `detail` in the active language where it quotes a DNS outcome (`detail` stays the English, as JSON has it).
    said: str = field(default="", repr=False)
    parsed: SpfRecord | None = field(default=None, repr=False)
    lookups: int = 0
    void_names: list[str] = field(default_factory=list)
    crowded_mx: list[str] = field(default_factory=list)
    dynamic: list[str] = field(default_factory=list)
    children: list[SpfNode] = field(default_factory=list)

    @property
    def total_lookups(self) -> int:
        """The DNS-querying terms of this branch: its own plus every descendant's."""
        return self.lookups + sum(child.total_lookups for child in self.children)

    @property
    def total_void(self) -> int:
        return len(self.void_names) + sum(child.total_void for child in self.children)

    def walk(self) -> Iterator[SpfNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "via": self.via,
            "record": self.record,
            "status": self.status,
            "detail": self.detail,
            "lookups": self.lookups,
            "branch_lookups": self.total_lookups,
            "void_lookups": self.void_names,
            "children": [child.to_json() for child in self.children],
        }


@dataclass
class _Walk:
    resolver: Resolver
    root: str
    nodes: int = 0


async def build_tree(domain: str, resolver: Resolver) -> SpfNode:
    """The include/redirect tree of `domain`'s SPF record, fetched concurrently; problems are node statuses."""
    domain = domain.rstrip(".").lower()
    return await _node(_Walk(resolver, domain), domain, "root", (domain,))


async def _node(walk: _Walk, domain: str, via: str, chain: tuple[str, ...]) -> SpfNode:
    node = SpfNode(domain, via)
    walk.nodes += 1
    if walk.nodes > MAX_NODES or len(chain) > MAX_DEPTH:
        node.status, node.detail = "truncated", f"not followed: more than {MAX_NODES} records or {MAX_DEPTH} levels"
        return node
    if not valid_domain(domain):
        node.status, node.detail = "invalid-domain", f"{domain!r} is not a valid domain name"
        return node
    answer = await walk.resolver.query(domain + ".", "TXT")
    if answer.failed:
        node.status, node.detail = "dns-failed", f"TXT {domain}: {answer.describe()}"
        node.said = f"TXT {domain}: {answer.said()}"
        return node
    records = [text for text in answer.texts() if is_spf_record(text)]
    if not records:
        node.status, node.detail = "none", f"{domain} publishes no SPF record"
        return node
    node.record = records[0]
    if len(records) > 1:
        node.status, node.detail = "multiple", f"{domain} publishes {len(records)} SPF records"
        return node
    try:
        node.parsed = parse_record(records[0])
    except SpfSyntaxError as error:
        node.status, node.detail = "syntax", str(error)
        return node
    ignored_redirect = node.parsed.redirect is not None and any(m.kind == "all" for m in node.parsed.mechanisms)
    node.lookups = node.parsed.lookup_terms - ignored_redirect
    await _expand_node(walk, node, node.parsed, chain)
    return node


def _static_target(walk: _Walk, node: SpfNode, spec: str) -> str | None:
    """The target name when it does not depend on the message (no %{s}, %{l}, %{i}...), else None."""
    if not spec:
        return node.domain
    if uses_macro(spec, _SENDER_LETTERS):
        node.dynamic.append(spec)
        return None
    env = MacroEnv(
        f"postmaster@{walk.root}", "postmaster", walk.root, node.domain, ipaddress.ip_address("192.0.2.1"), ""
    )
    return expand_domain(spec, env).lower()


async def _expand_node(walk: _Walk, node: SpfNode, record: SpfRecord, chain: tuple[str, ...]) -> None:
    branches: list[tuple[str, str]] = []
    probes: list[tuple[str, str]] = []
    for mechanism in record.mechanisms:
        if mechanism.kind not in LOOKUP_TERMS:
            continue
        target = _static_target(walk, node, mechanism.domain_spec)
        if target is None:
            continue
        if mechanism.kind == "include":
            branches.append(("include", target))
        elif mechanism.kind in ("a", "mx", "exists"):
            probes.append((mechanism.kind, target))
    has_all = any(m.kind == "all" for m in record.mechanisms)
    if record.redirect is not None and not has_all:
        target = _static_target(walk, node, record.redirect)
        if target is not None:
            branches.append(("redirect", target))
    children = [_child(walk, via, target, chain) for via, target in branches]
    results = await asyncio.gather(*children, *(_probe(walk, node, kind, target) for kind, target in probes))
    node.children = [child for child in results if isinstance(child, SpfNode)]


async def _child(walk: _Walk, via: str, target: str, chain: tuple[str, ...]) -> SpfNode:
    if target in chain:
        loop = " -> ".join((*chain[chain.index(target) :], target))
        return SpfNode(target, via, status="loop", detail=f"{via} loop: {loop}")
    return await _node(walk, target, via, (*chain, target))


async def _probe(walk: _Walk, node: SpfNode, kind: str, target: str) -> None:
    """Record a void lookup (a name with no address or MX) and an MX set over the 10-name limit."""
    if not valid_domain(target):
        return
    rdtype = "MX" if kind == "mx" else "A"
    answer = await walk.resolver.query(target + ".", rdtype)
    if kind == "a" and answer.missing:
        answer = await walk.resolver.query(target + ".", "AAAA")
    if answer.missing:
        node.void_names.append(f"{kind}:{target}")
    elif kind == "mx" and len(answer.records) > MAX_MX_NAMES:
        node.crowded_mx.append(f"{target} ({len(answer.records)} MX names)")


def render_tree(root: SpfNode) -> str:
    """The tree as text, one line per record, with the lookups counted in each branch."""
    lines: list[str] = []
    _render(root, "", "", lines)
    return "\n".join(lines)


def _render(node: SpfNode, lead: str, child_lead: str, lines: list[str]) -> None:
    label = node.domain if node.via == "root" else f"{node.via}:{node.domain}"
    lookups = node.total_lookups
    counts = f"[{lookups} lookup{'' if lookups == 1 else 's'}, {node.total_void} void]"
    what = node.record if node.status == "ok" else f"{node.status.upper()}: {node.detail}"
    lines.append(f"{lead}{label} {counts} {what}")
    for index, child in enumerate(node.children):
        last = index == len(node.children) - 1
        _render(child, child_lead + ("└─ " if last else "├─ "), child_lead + ("   " if last else "│  "), lines)


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """The SPF findings for a domain: the record and its tree, its mistakes, and each sending IP's result."""
    if target.is_ip:
        return []
    domain = target.value
    ips = ctx.sending_ips_for(domain)
    async with asyncio.TaskGroup() as group:
        walking = group.create_task(build_tree(domain, ctx.resolver))
        checking = [group.create_task(_check_ip(ip, domain, ctx)) for ip in ips]
    tree, results = walking.result(), [task.result() for task in checking]
    evidence = {"tree": tree.to_json(), "tree_text": render_tree(tree)}
    findings = _root_findings(tree, ctx, evidence)
    if tree.status not in ("none", "dns-failed", "invalid-domain"):
        findings += _tree_findings(tree, ctx)
    if tree.status == "ok":
        findings += _limit_findings(tree, ctx, evidence)
    if ips:
        findings.append(_sending_finding(list(zip(ips, results, strict=True)), tree, ctx))
    return findings


async def _check_ip(ip: str, domain: str, ctx: CheckContext) -> SpfResult:
    helo = ctx.helo_names[0] if ctx.helo_names else domain
    try:
        return await check_host(
            ip, domain, f"postmaster@{domain}", resolver=ctx.resolver, helo=helo, timeout=ctx.timeout * 4
        )
    except ValueError as error:
        return SpfResult("permerror", trace=(f"{ip!r} is not an IP address: {error}",))


def _finding(
    ctx: CheckContext, subject: str, status: Status, code: str, summary: str, advice: str = "", **evidence: Any
) -> Finding:
    return Finding(CHECK_ID, subject, status, summary, evidence, advice, code, ctx.clock())


def _starter_record(ctx: CheckContext, domain: str) -> str:
    terms = ["v=spf1", "mx"]
    for ip in ctx.sending_ips_for(domain):
        try:
            terms.append(f"ip{ipaddress.ip_address(ip).version}:{ip}")
        except ValueError:
            continue
    return " ".join([*terms, "-all"])


def _root_findings(tree: SpfNode, ctx: CheckContext, evidence: dict[str, Any]) -> list[Finding]:
    domain = tree.domain
    if tree.status == "none":
        starter = _starter_record(ctx, domain)
        advice = _('Publish one TXT record at {domain}: "{starter}" (list every server that sends its mail).').format(
            domain=domain, starter=starter
        )
        summary = _("{domain} publishes no SPF record").format(domain=domain)
        return [_finding(ctx, domain, Status.FAIL, "missing", summary, advice)]
    if tree.status == "dns-failed":
        return [
            _finding(
                ctx,
                domain,
                Status.UNKNOWN,
                "dns-failed",
                _("could not fetch the SPF record: {detail}").format(detail=tree.said or tree.detail),
            )
        ]
    if tree.status == "invalid-domain":
        return [_finding(ctx, domain, Status.FAIL, "invalid-domain", tree.detail)]
    summary = (_("SPF record: {record}") if tree.status == "ok" else _("SPF record present: {record}")).format(
        record=tree.record
    )
    return [_finding(ctx, domain, Status.OK, "record", summary, record=tree.record, **evidence)]


def _tree_findings(tree: SpfNode, ctx: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    loops: set[frozenset[str]] = set()
    for node in tree.walk():
        if node.status == "loop":  # A -> B -> A and B -> A -> B, reached from two sides, are one loop
            cycle = frozenset(node.detail.partition(": ")[2].split(" -> "))
            if cycle in loops:
                continue
            loops.add(cycle)
        findings += _node_findings(node, tree, ctx)
    if tree.parsed is None:
        return findings
    final = [node.parsed for node in _redirect_chain(tree) if node.parsed is not None]
    alls = [mechanism for record in final for mechanism in record.mechanisms if mechanism.kind == "all"]
    ends_in_redirect = bool(final) and final[-1].redirect is not None
    if not alls and not ends_in_redirect:
        advice = _("End the record with -all (or ~all while testing): {record}").format(
            record=_with_term(tree.record, "-all")
        )
        findings.append(
            _finding(ctx, tree.domain, Status.WARN, "no-all", _("the record has no 'all': others get neutral"), advice)
        )
    for mechanism in alls:
        if mechanism.qualifier == "?":
            advice = _("Use -all (or ~all): {record}").format(record=tree.record.replace(mechanism.text, "-all"))
            summary = _("?all: mail from any other server gets neutral, which protects nothing")
            findings.append(_finding(ctx, tree.domain, Status.WARN, "neutral-all", summary, advice))
    return findings


def _redirect_chain(tree: SpfNode) -> list[SpfNode]:
    chain = [tree]
    while True:
        nxt = [child for child in chain[-1].children if child.via == "redirect"]
        if not nxt:
            return chain
        chain.append(nxt[0])


def _node_findings(node: SpfNode, tree: SpfNode, ctx: CheckContext) -> list[Finding]:
    subject, out = node.domain, []
    where = "" if node is tree else _(" (reached by {via} from {domain})").format(via=node.via, domain=tree.domain)
    problems = {
        "multiple": (Status.FAIL, "multiple-records", _("Merge them into one TXT record starting with v=spf1.")),
        "syntax": (Status.FAIL, "syntax-error", _("Fix the record; receivers treat it as a permanent error.")),
        "loop": (Status.FAIL, "loop", _("Remove the include or redirect that points back up the chain.")),
        "dns-failed": (Status.UNKNOWN, "include-dns-failed", ""),
        "invalid-domain": (Status.FAIL, "invalid-include", _("Point the include at a valid domain name.")),
        "truncated": (Status.FAIL, "too-deep", _("Flatten the includes; the record needs far more than 10 lookups.")),
    }
    if node is not tree and node.status == "none":
        advice = _("Remove {term}, or ask its owner to publish SPF; receivers give permerror.").format(
            term=f"{node.via}:{node.domain}"
        )
        out.append(
            _finding(
                ctx,
                subject,
                Status.FAIL,
                "include-none",
                _("{detail}{where}").format(detail=node.detail, where=where),
                advice,
            )
        )
    elif node.status in problems and not (node is tree and node.status == "dns-failed"):
        status, code, advice = problems[node.status]
        out.append(
            _finding(
                ctx,
                subject,
                status,
                code,
                _("{detail}{where}").format(detail=node.said or node.detail, where=where),
                advice,
                record=node.record,
            )
        )
    if node.parsed is None:
        return out
    for mechanism in node.parsed.mechanisms:
        if mechanism.kind == "all" and mechanism.qualifier == "+":
            advice = _("Replace +all with -all: {record}").format(record=node.record.replace(mechanism.text, "-all"))
            summary = _("+all{where}: every server on the internet may send as {domain}").format(
                where=where, domain=tree.domain
            )
            out.append(_finding(ctx, subject, Status.FAIL, "plus-all", summary, advice))
        elif mechanism.kind == "ptr":
            advice = _("Replace ptr with ip4:/ip6: or a: terms; RFC 7208 says ptr should not be used.")
            summary = _("{term}{where}: slow, unreliable, and ignored by some receivers").format(
                term=mechanism.text, where=where
            )
            out.append(_finding(ctx, subject, Status.WARN, "ptr", summary, advice))
    for crowded in node.crowded_mx:
        summary = _("mx{where}: {crowded}; more than {limit} is a permerror").format(
            where=where, crowded=crowded, limit=MAX_MX_NAMES
        )
        out.append(_finding(ctx, subject, Status.FAIL, "too-many-mx", summary, _("Use ip4:/ip6: terms instead of mx.")))
    return out


def _limit_findings(tree: SpfNode, ctx: CheckContext, evidence: dict[str, Any]) -> list[Finding]:
    lookups, voids, domain = tree.total_lookups, tree.total_void, tree.domain
    per_include = {f"{child.via}:{child.domain}": child.total_lookups + 1 for child in tree.children}
    facts = {"lookups": lookups, "per_include": per_include, "tree_text": evidence["tree_text"]}
    if lookups > MAX_LOOKUPS:
        status, code = Status.FAIL, "too-many-lookups"
        summary = _("{lookups} DNS lookups; over {limit} receivers give permerror").format(
            lookups=lookups, limit=MAX_LOOKUPS
        )
    elif lookups >= WARN_LOOKUPS:
        status, code = Status.WARN, "lookups-near-limit"
        summary = _("{lookups} DNS lookups, close to the limit of {limit}").format(lookups=lookups, limit=MAX_LOOKUPS)
    else:
        summary = _("{lookups} DNS lookups of {limit} allowed").format(lookups=lookups, limit=MAX_LOOKUPS)
        status, code = Status.OK, "lookups"
    if any(node.status == "loop" for node in tree.walk()):
        status, code = Status.FAIL, "too-many-lookups"
        summary = _("{lookups} DNS lookups before an include loop, which never ends: receivers give permerror").format(
            lookups=lookups
        )
    advice = "" if status is Status.OK else _lookup_advice(per_include)
    findings = [_finding(ctx, domain, status, code, summary, advice, **facts)]
    if voids:
        names = [name for node in tree.walk() for name in node.void_names]
        status = Status.FAIL if voids > MAX_VOID_LOOKUPS else Status.WARN
        code = "too-many-void-lookups" if voids > MAX_VOID_LOOKUPS else "void-lookups"
        summary = _("{voids} void lookups ({names}); over {limit} receivers give permerror").format(
            voids=voids, names=", ".join(names), limit=MAX_VOID_LOOKUPS
        )
        advice = _("Remove the terms whose names do not exist.")
        findings.append(_finding(ctx, domain, status, code, summary, advice, void_lookups=names))
    return findings


def _lookup_advice(per_include: dict[str, int]) -> str:
    heaviest = sorted(per_include.items(), key=lambda item: -item[1])[:3]
    named = ", ".join(f"{name} ({count})" for name, count in heaviest)
    advice = _("Replace a:/mx: terms with ip4:/ip6: and drop unused includes")
    return advice + (_("; the heaviest: {named}").format(named=named) if named else "")


def _with_term(record: str, term: str) -> str:
    """The record with `term` put before its final 'all' or redirect, or at its end."""
    words = record.split()
    for index, word in enumerate(words):
        if word.lower().lstrip("+-~?") == "all" or word.lower().startswith("redirect="):
            return " ".join([*words[:index], term, *words[index:]])
    return " ".join([*words, term])


SHOWN_IPS = 10  # IPs named in a summary or an advice; the evidence lists them all


def _sending_finding(results: list[tuple[str, SpfResult]], tree: SpfNode, ctx: CheckContext) -> Finding:
    """One finding for the domain's sending IPs: ok when all pass, else the IPs that fail (or cannot be told)."""
    domain = tree.domain
    failing = [(ip, result) for ip, result in results if result.result not in ("pass", "temperror")]
    unknown = [(ip, result) for ip, result in results if result.result == "temperror"]
    evidence: dict[str, Any] = {
        "domain": domain,
        "ips": len(results),
        "failing": [ip for ip, _ in failing],
        "unknown": [ip for ip, _ in unknown],
    }
    # The first problem's whole result (trace, lookups), so a single sending IP keeps every detail it had.
    example = (failing or unknown or results)[0]
    evidence.update(ip=example[0], **example[1].to_json(), mechanism=example[1].mechanism)
    if failing:
        summary = _failing_summary(failing, len(results), domain)
        return _finding(ctx, SENDING_SUBJECT, Status.FAIL, "sending-ip-not-authorized", summary,
                        _failing_advice([ip for ip, _ in failing], tree, ctx), **evidence)  # fmt: skip
    if unknown:
        names = _listed([ip for ip, _ in unknown])
        summary = ngettext(
            "could not tell whether {names} passes SPF for {domain}: temperror",
            "could not tell whether {names} pass SPF for {domain}: temperror",
            len(unknown),
        ).format(names=names, domain=domain)
        return _finding(ctx, SENDING_SUBJECT, Status.UNKNOWN, "sending-ip-unknown", summary, **evidence)
    if len(results) == 1:
        summary = _("{ip} passes SPF for {domain} ({mechanism})").format(
            ip=example[0], domain=domain, mechanism=example[1].mechanism
        )
    else:
        summary = _("all {count} sending IPs pass SPF for {domain}").format(count=len(results), domain=domain)
    return _finding(ctx, SENDING_SUBJECT, Status.OK, "sending-ip-pass", summary, **evidence)


def _listed(ips: list[str]) -> str:
    more = _(" and {count} more").format(count=len(ips) - SHOWN_IPS) if len(ips) > SHOWN_IPS else ""
    return ", ".join(ips[:SHOWN_IPS]) + more


def _failing_summary(failing: list[tuple[str, SpfResult]], total: int, domain: str) -> str:
    def one(result: SpfResult) -> str:
        why = f" ({result.trace[-1].strip()})" if result.result in ("permerror", "none") and result.trace else ""
        return f"{result.result}{why}"

    if len(failing) == 1 and total == 1:
        return _("{ip} does not pass SPF for {domain}: {result}").format(
            ip=failing[0][0], domain=domain, result=one(failing[0][1])
        )
    kinds = sorted({result.result for _, result in failing})
    listed = _listed([ip for ip, _ in failing])
    return _("{count} of {total} sending IPs do not pass SPF for {domain} ({kinds}): {listed}").format(
        count=len(failing), total=total, domain=domain, kinds=", ".join(kinds), listed=listed
    )


def _failing_advice(ips: list[str], tree: SpfNode, ctx: CheckContext) -> str:
    terms: list[str] = []
    for ip in ips:
        try:
            terms.append(f"ip{ipaddress.ip_address(ip).version}:{ip}")
        except ValueError:
            return _("{ip} is not an IP address; fix the sending_ips setting.").format(ip=repr(ip))
    more = _(" (and {count} more; a CIDR range such as ip4:192.0.2.0/24 is shorter)").format(
        count=len(terms) - SHOWN_IPS
    )
    shown = " ".join(terms[:SHOWN_IPS])
    suffix = more if len(terms) > SHOWN_IPS else ""
    if tree.status == "ok":
        return _("Add {terms}{more} to the record: {record}").format(
            terms=shown, more=suffix, record=_with_term(tree.record, shown)
        )
    return _('Publish one TXT record at {domain}: "{starter}"').format(
        domain=tree.domain, starter=_starter_record(ctx, tree.domain)
    )
