"""SPF (RFC 7208): the async check_host() evaluator, over the pure parser in `checks.spf.parser`.

`parse_record` works from a string and raises SpfSyntaxError; `check_host` does the DNS look-ups and never
raises for DNS outcomes or bad records: a timeout or SERVFAIL is `temperror`, a broken record `permerror`.
The lint (`checks.spf.lint.check`) builds on both.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from checks.dns.resolver import DnsAnswer, Resolver
from checks.spf.parser import (
    LOOKUP_TERMS,
    MacroEnv,
    Mechanism,
    SpfRecord,
    SpfSyntaxError,
    expand,
    expand_domain,
    is_spf_record,
    parse_record,
    uses_macro,
    valid_domain,
)

__all__ = [
    "DEFAULT_EXPLANATION",
    "LOOKUP_TERMS",
    "MAX_LOOKUPS",
    "MAX_MX_NAMES",
    "MAX_VOID_LOOKUPS",
    "Mechanism",
    "SpfRecord",
    "SpfResult",
    "SpfSyntaxError",
    "check_host",
    "is_spf_record",
    "parse_record",
    "sender_and_domain",
    "valid_domain",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
DEFAULT_EXPLANATION = "the domain's SPF record does not authorize this IP address to send its mail"
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")


def sender_and_domain(mail_from: str, helo: str) -> tuple[str, str]:
    """The <sender> and <domain> for a MAIL FROM (or the HELO name when MAIL FROM is empty), RFC 7208 §2.4."""
    mail_from = mail_from.strip().strip("<>")
    if not mail_from:
        return f"postmaster@{helo}", helo
    if "@" not in mail_from:
        return f"postmaster@{mail_from}", mail_from
    return mail_from, mail_from.rpartition("@")[2]


@dataclass(frozen=True)
class SpfResult:
    """The outcome of check_host(): the result, the explanation (fail only), the counts and the steps taken."""

    result: str
    explanation: str = ""
    lookups: int = 0
    void_lookups: int = 0
    trace: tuple[str, ...] = ()
    mechanism: str = ""
    domain: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "explanation": self.explanation,
            "lookups": self.lookups,
            "void_lookups": self.void_lookups,
            "trace": list(self.trace),
        }


class _Abort(Exception):
    """Ends the evaluation with permerror or temperror."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass(frozen=True)
class _Outcome:
    result: str
    mechanism: str = ""
    exp: tuple[str, str] | None = None  # (the record's domain, its exp= domain-spec) when the result is fail


@dataclass
class _State:
    resolver: Resolver
    ip: IPAddress
    sender: str
    local_part: str
    sender_domain: str
    helo: str
    receiver: str
    timestamp: int
    lookups: int = 0
    void_lookups: int = 0
    trace: list[str] = field(default_factory=list)
    ptr_names: list[str] | None = None

    def env(self, domain: str, ptr: str = "unknown") -> MacroEnv:
        return MacroEnv(
            self.sender,
            self.local_part,
            self.sender_domain,
            domain,
            self.ip,
            self.helo,
            self.receiver,
            ptr,
            self.timestamp,
        )

    def note(self, depth: int, text: str) -> None:
        self.trace.append("  " * depth + text)

    def count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _Abort("permerror", f"{term}: more than {MAX_LOOKUPS} DNS-querying terms")

    def count_void(self, name: str) -> None:
        self.void_lookups += 1
        if self.void_lookups > MAX_VOID_LOOKUPS:
            raise _Abort("permerror", f"{name}: more than {MAX_VOID_LOOKUPS} void lookups")


def _client_ip(ip: str) -> IPAddress:
    address = ipaddress.ip_address(ip.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def check_host(
    ip: str,
    domain: str,
    sender: str,
    *,
    resolver: Resolver,
    helo: str = "",
    receiver: str = "unknown",
    timeout: float | None = None,
    timestamp: int | None = None,
) -> SpfResult:
    """The RFC 7208 check_host() result for `ip` sending as `sender` with SPF `domain`; never raises for DNS.

    `timeout` bounds the whole evaluation (temperror when it runs out); raises ValueError for an invalid `ip`.
    """
    address = _client_ip(ip)
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        local, sender_domain = "", sender or domain
    local = local or "postmaster"
    state = _State(
        resolver,
        address,
        f"{local}@{sender_domain}",
        local,
        sender_domain,
        helo,
        receiver,
        int(time.time()) if timestamp is None else timestamp,
    )
    domain = domain[:-1] if domain.endswith(".") else domain
    try:
        async with asyncio.timeout(timeout):
            outcome = await _check_domain(state, domain, (domain.lower(),), 0)
            explanation = await _explain(state, outcome) if outcome.result == "fail" else ""
    except _Abort as abort:
        state.note(0, f"{abort.result}: {abort.reason}")
        outcome, explanation = _Outcome(abort.result), ""
    except TimeoutError:
        state.note(0, f"temperror: no result within {timeout} s")
        outcome, explanation = _Outcome("temperror"), ""
    return SpfResult(
        outcome.result,
        explanation,
        state.lookups,
        state.void_lookups,
        tuple(state.trace),
        outcome.mechanism,
        domain,
    )


async def _query(state: _State, name: str, rdtype: str) -> DnsAnswer:
    return await state.resolver.query(name.replace("\\", "\\\\") + ".", rdtype)


async def _fetch_record(state: _State, domain: str, depth: int) -> str | None:
    answer = await _query(state, domain, "TXT")
    if answer.failed:
        raise _Abort("temperror", f"TXT {domain}: {answer.describe()}")
    records = [text for text in answer.texts() if is_spf_record(text)]
    if len(records) > 1:
        raise _Abort("permerror", f"{domain} publishes {len(records)} SPF records; exactly one is allowed")
    if not records:
        state.note(depth, f"{domain}: no SPF record")
        return None
    state.note(depth, f"{domain}: {records[0]}")
    return records[0]


async def _check_domain(state: _State, domain: str, chain: tuple[str, ...], depth: int) -> _Outcome:
    if not valid_domain(domain):
        state.note(depth, f"{domain!r} is not a valid domain name -> none")
        return _Outcome("none")
    text = await _fetch_record(state, domain, depth)
    if text is None:
        return _Outcome("none")
    try:
        record = parse_record(text)
    except SpfSyntaxError as error:
        raise _Abort("permerror", f"{domain}: {error}") from None
    for mechanism in record.mechanisms:
        if await _matches(state, mechanism, domain, chain, depth):
            result = mechanism.result
            exp = (domain, record.exp) if result == "fail" and record.exp else None
            state.note(depth, f"{mechanism} matched -> {result}")
            return _Outcome(result, mechanism.text, exp)
    if record.redirect is None:
        state.note(depth, "no mechanism matched -> neutral")
        return _Outcome("neutral")
    state.count_lookup(f"redirect={record.redirect}")
    target = await _target(state, record.redirect, domain)
    return await _recurse(state, f"redirect={target}", target, chain, depth)


async def _recurse(state: _State, label: str, target: str, chain: tuple[str, ...], depth: int) -> _Outcome:
    """check_host on an include or redirect target; a loop, or a target without SPF, is a permerror."""
    if target.lower() in chain:
        raise _Abort("permerror", f"{label} loops back to a domain being evaluated")
    outcome = await _check_domain(state, target, (*chain, target.lower()), depth + 1)
    state.note(depth, f"{label} -> {outcome.result}")
    if outcome.result == "none":
        raise _Abort("permerror", f"{label}: that domain has no SPF record")
    return outcome


async def _target(state: _State, spec: str, domain: str) -> str:
    if not spec:
        return domain
    ptr = await _validated_ptr(state, domain) if uses_macro(spec, "p") else "unknown"
    return expand_domain(spec, state.env(domain, ptr))


async def _matches(state: _State, mechanism: Mechanism, domain: str, chain: tuple[str, ...], depth: int) -> bool:
    kind = mechanism.kind
    if kind == "all":
        return True
    if kind in ("ip4", "ip6"):
        return mechanism.network is not None and state.ip in mechanism.network
    state.count_lookup(mechanism.text)
    target = await _target(state, mechanism.domain_spec, domain)
    if kind == "include":
        return await _include(state, mechanism, target, chain, depth)
    if not valid_domain(target):
        state.note(depth, f"{mechanism}: {target!r} is not a valid domain name, no match")
        return False
    if kind == "a":
        return await _match_a(state, mechanism, target, depth)
    if kind == "mx":
        return await _match_mx(state, mechanism, target, depth)
    if kind == "ptr":
        return await _match_ptr(state, target, depth)
    return await _match_exists(state, mechanism, target, depth)


async def _include(state: _State, mechanism: Mechanism, target: str, chain: tuple[str, ...], depth: int) -> bool:
    return (await _recurse(state, f"include:{target}", target, chain, depth)).result == "pass"


def _address_type(state: _State) -> str:
    return "A" if state.ip.version == 4 else "AAAA"


def _in_network(state: _State, addresses: Sequence[str], mechanism: Mechanism) -> str | None:
    bits = mechanism.cidr4 if state.ip.version == 4 else mechanism.cidr6
    for text in addresses:
        network = ipaddress.ip_network(f"{text}/{bits}", strict=False)
        if state.ip in network:
            return text
    return None


async def _addresses(state: _State, name: str, *, void: bool) -> tuple[str, ...]:
    answer = await _query(state, name, _address_type(state))
    if answer.failed:
        raise _Abort("temperror", f"{answer.rdtype} {name}: {answer.describe()}")
    if answer.missing and void:
        state.count_void(name)
    return answer.records


async def _match_a(state: _State, mechanism: Mechanism, target: str, depth: int) -> bool:
    addresses = await _addresses(state, target, void=True)
    hit = _in_network(state, addresses, mechanism)
    if hit is None:
        state.note(depth, f"{mechanism}: {target} has {', '.join(addresses) or 'no address'}, no match")
    return hit is not None


async def _match_mx(state: _State, mechanism: Mechanism, target: str, depth: int) -> bool:
    answer = await _query(state, target, "MX")
    if answer.failed:
        raise _Abort("temperror", f"MX {target}: {answer.describe()}")
    if answer.missing:
        state.count_void(target)
    names = [str(rd.exchange).rstrip(".") for rd in sorted(answer.rdata, key=lambda rd: rd.preference)]  # type: ignore[attr-defined]
    if len(names) > MAX_MX_NAMES:
        raise _Abort("permerror", f"{mechanism}: {target} has {len(names)} MX names; the limit is {MAX_MX_NAMES}")
    names = [name for name in names if name]  # a null MX (RFC 7505) has no address
    found = await asyncio.gather(*(_addresses(state, name, void=False) for name in names))
    for name, addresses in zip(names, found, strict=True):
        if _in_network(state, addresses, mechanism) is not None:
            state.note(depth, f"{mechanism}: MX {name} matches")
            return True
    state.note(depth, f"{mechanism}: no MX of {target} ({', '.join(names) or 'none'}) matches")
    return False


async def _match_exists(state: _State, mechanism: Mechanism, target: str, depth: int) -> bool:
    answer = await _query(state, target, "A")
    if answer.failed:
        raise _Abort("temperror", f"A {target}: {answer.describe()}")
    if answer.missing:
        state.count_void(target)
        state.note(depth, f"{mechanism}: {target} does not exist, no match")
    return not answer.missing


async def _ptr_names(state: _State, *, void: bool) -> list[str]:
    """The PTR names of the client IP that resolve back to it (at most 10 are tried), RFC 7208 §5.5."""
    reverse = ipaddress.ip_address(state.ip).reverse_pointer
    answer = await _query(state, reverse, "PTR")
    if answer.missing and void:
        state.count_void(reverse)
    if not answer.ok:
        return []
    names = [str(rd.target).rstrip(".") for rd in answer.rdata][:MAX_PTR_NAMES]  # type: ignore[attr-defined]
    found = await asyncio.gather(*(_query(state, name, _address_type(state)) for name in names))
    return [
        name
        for name, addresses in zip(names, found, strict=True)
        if addresses.ok and any(ipaddress.ip_address(a) == state.ip for a in addresses.records)
    ]


async def _match_ptr(state: _State, target: str, depth: int) -> bool:
    target = target.lower()
    for name in await _ptr_names(state, void=True):
        lowered = name.lower()
        if lowered == target or lowered.endswith("." + target):
            return True
    state.note(depth, f"ptr:{target}: no validated PTR name in that domain, no match")
    return False


async def _validated_ptr(state: _State, domain: str) -> str:
    """The `%{p}` value: a validated PTR name, preferring the domain itself or its subdomains."""
    if state.ptr_names is None:
        state.ptr_names = await _ptr_names(state, void=False)
    names, domain = state.ptr_names, domain.lower()
    exact = [n for n in names if n.lower() == domain]
    below = [n for n in names if n.lower().endswith("." + domain)]
    return (exact or below or names or ["unknown"])[0]


async def _explain(state: _State, outcome: _Outcome) -> str:
    """The explanation for a fail: the exp= text if it can be fetched and expanded, else the default."""
    if outcome.exp is None:
        return DEFAULT_EXPLANATION
    domain, spec = outcome.exp
    try:
        name = await _target(state, spec, domain)
        answer = await _query(state, name, "TXT")
        texts = answer.texts() if answer.ok else []
        if len(texts) != 1 or not texts[0].isascii():
            state.note(0, f"exp={name}: {answer.describe() if not answer.ok else f'{len(texts)} usable TXT records'}")
            return DEFAULT_EXPLANATION
        ptr = await _validated_ptr(state, domain) if uses_macro(texts[0], "p") else "unknown"
        return expand(texts[0], state.env(domain, ptr), exp=True)
    except SpfSyntaxError as error:
        state.note(0, f"exp={spec}: {error}; using the default explanation")
        return DEFAULT_EXPLANATION
