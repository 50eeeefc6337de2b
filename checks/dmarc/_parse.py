"""The DMARC record and the RFC 9989 tree walk, pure: parsing, tag data, walk names and their interpretation.

checks.dmarc.policy re-exports every public name here and does the DNS and the findings.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

__all__ = [
    "DMARC_TAGS",
    "WALK_CUT",
    "DmarcRecord",
    "ReportUri",
    "TagSpec",
    "Walk",
    "check_pct",
    "interpret_walk",
    "is_dmarc",
    "load_psl",
    "one_record",
    "organizational_domain_psl",
    "parse_dmarc",
    "walk_names",
]

WALK_CUT = 7  # RFC 9989 §4.10: after the first query, a name of 8 or more labels is cut to its last 7


@dataclass(frozen=True)
class TagSpec:
    """One DMARC tag: its default (None: no default), its allowed values (None: checked otherwise), its meaning."""

    default: str | None
    allowed: frozenset[str] | None
    meaning: str


_POLICIES = frozenset({"none", "quarantine", "reject"})
_MODES = frozenset({"r", "s"})

DMARC_TAGS: Mapping[str, TagSpec] = {
    "v": TagSpec(None, frozenset({"DMARC1"}), "version; must be the first tag"),
    "p": TagSpec(None, _POLICIES, "policy for the domain and, unless sp says otherwise, its subdomains"),
    "sp": TagSpec(None, _POLICIES, "policy for subdomains of the domain that published the record; default: p"),
    "np": TagSpec(None, _POLICIES, "policy for non-existent subdomains (RFC 9989); default: sp"),
    "adkim": TagSpec("r", _MODES, "DKIM alignment: r = same organizational domain, s = the very same name"),
    "aspf": TagSpec("r", _MODES, "SPF alignment: r = same organizational domain, s = the very same name"),
    "pct": TagSpec("100", None, "percentage of failing mail the policy applies to (RFC 7489; gone in RFC 9989)"),
    "fo": TagSpec("0", None, "when failure reports are sent: 0, 1, d, s (colon-separated)"),
    "rf": TagSpec("afrf", None, "failure report format (RFC 7489)"),
    "ri": TagSpec("86400", None, "aggregate report interval in seconds (RFC 7489)"),
    "rua": TagSpec(None, None, "where aggregate reports go: comma-separated mailto: URIs"),
    "ruf": TagSpec(None, None, "where failure reports go: comma-separated mailto: URIs"),
    "psd": TagSpec("u", frozenset({"y", "n", "u"}), "public suffix domain flag (RFC 9989)"),
    "t": TagSpec("n", frozenset({"y", "n"}), "testing (RFC 9989): y asks receivers to apply one step less"),
}

_DMARC_PREFIX = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)", re.IGNORECASE)
_ADDRESS = re.compile(r"^[^@\s]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\.?$")
_SIZE = re.compile(r"^[0-9]+[kmgt]?$", re.IGNORECASE)


def _no_check(_value: str) -> str | None:
    return None


def check_pct(value: str) -> str | None:
    return None if value.isdigit() and 0 <= int(value) <= 100 else "pct must be a whole number from 0 to 100"


def _check_ri(value: str) -> str | None:
    return None if value.isdigit() else "ri must be a number of seconds"


def _check_fo(value: str) -> str | None:
    bad = [part for part in value.split(":") if part.strip() not in {"0", "1", "d", "s"}]
    return f"fo has unknown options {bad}; allowed: 0, 1, d, s" if bad else None


def _check_uris(value: str) -> str | None:
    bad = [uri.uri for uri in _split_uris(value) if uri.domain is None]
    return f"not a mailto: address: {', '.join(bad)}" if bad else None


_VALUE_CHECKS: Mapping[str, Callable[[str], str | None]] = {
    "pct": check_pct,
    "ri": _check_ri,
    "fo": _check_fo,
    "rua": _check_uris,
    "ruf": _check_uris,
}


@dataclass(frozen=True)
class ReportUri:
    """One rua/ruf destination; `domain` is None when it is not a valid mailto: URI."""

    uri: str
    domain: str | None


def _split_uris(value: str) -> list[ReportUri]:
    uris = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        uri, _, size = part.partition("!")
        match = _ADDRESS.match(uri[7:]) if uri[:7].lower() == "mailto:" else None
        valid = match is not None and (not size or _SIZE.match(size) is not None)
        uris.append(ReportUri(part, match.group(1).lower().rstrip(".") if valid and match else None))
    return uris


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed DMARC record: its tags in order, and what is wrong with it."""

    raw: str
    tags: Mapping[str, str]
    errors: tuple[str, ...] = ()
    unknown_tags: tuple[str, ...] = ()

    def get(self, tag: str) -> str:
        """The tag's value, its default, or '' when it has neither."""
        value = self.tags.get(tag)
        if value is None:
            value = DMARC_TAGS[tag].default if tag in DMARC_TAGS else None
        return (value or "").lower() if tag != "v" else (value or "")

    @property
    def policy(self) -> str:
        return self.get("p") if self.get("p") in _POLICIES else "none"

    @property
    def subdomain_policy(self) -> str:
        return self.get("sp") if self.get("sp") in _POLICIES else self.policy

    def report_uris(self, tag: str) -> list[ReportUri]:
        return _split_uris(self.tags.get(tag, ""))

    def without(self, tag: str) -> str:
        """The record text without one tag."""
        return "; ".join(f"{name}={value}" for name, value in self.tags.items() if name != tag)

    def with_tags(self, **changes: str) -> str:
        """The record text with some tags set (added after p= when new): a record to publish."""
        tags = dict(self.tags) or {"v": "DMARC1"}
        tags.setdefault("v", "DMARC1")
        tags.update(changes)
        return "; ".join(f"{name}={value}" for name, value in tags.items())


def is_dmarc(text: str) -> bool:
    """Whether a TXT string is a DMARC record at all (starts with v=DMARC1); others are ignored."""
    return _DMARC_PREFIX.match(text) is not None


def parse_dmarc(text: str) -> DmarcRecord:
    """Parse a DMARC record's text; never raises, problems go into `errors` and `unknown_tags`."""
    tags: dict[str, str] = {}
    errors: list[str] = []
    unknown: list[str] = []
    for index, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            errors.append(f"{part!r} is not a tag=value pair")
            continue
        if name in tags:
            errors.append(f"tag {name} appears twice")
            continue
        if index == 0 and (name != "v" or value != "DMARC1"):
            errors.append("the record must start with v=DMARC1 (exactly that case)")
        tags[name] = value
        spec = DMARC_TAGS.get(name)
        if spec is None:
            unknown.append(name)
        elif spec.allowed is not None and (value if name == "v" else value.lower()) not in spec.allowed:
            errors.append(f"{name}={value} is not one of {', '.join(sorted(spec.allowed))}")
        elif (problem := _VALUE_CHECKS.get(name, _no_check)(value)) is not None:
            errors.append(problem)
    if "p" not in tags:
        errors.append("p= is missing (receivers then treat the record as p=none or ignore it)")
    return DmarcRecord(text, tags, tuple(errors), tuple(unknown))


def walk_names(domain: str) -> list[str]:
    """The domains whose _dmarc record the RFC 9989 tree walk asks for, in order (at most 8)."""
    labels = domain.rstrip(".").split(".")
    names = [".".join(labels)]
    labels = labels[-WALK_CUT:] if len(labels) > WALK_CUT else labels[1:]
    while labels:
        names.append(".".join(labels))
        labels = labels[1:]
    return names


_PSL_LOCK = threading.Lock()


@functools.cache
def _parsed_psl() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def _psl() -> PublicSuffixList:
    with _PSL_LOCK:  # one parse, however many threads ask at once
        return _parsed_psl()


async def load_psl() -> None:
    """Parse the Public Suffix List in a thread, the first time: 55 ms of CPU here (more under load) that would
    otherwise stop the event loop."""
    if not _parsed_psl.cache_info().currsize:
        await asyncio.to_thread(_psl)


def organizational_domain_psl(domain: str) -> str:
    """The RFC 7489 organizational domain by the Public Suffix List (the domain itself if it is a suffix)."""
    return _psl().privatesuffix(domain.lower().rstrip(".")) or domain


@dataclass(frozen=True)
class Walk:
    """What the tree walk found: the policy record and where, the organizational domain, and trouble on the way."""

    policy_domain: str | None
    record: DmarcRecord | None
    org_domain: str
    multiple: Mapping[str, tuple[str, ...]]
    failed: str | None  # the name whose lookup failed before a policy was found


def one_record(texts: Sequence[str] | None) -> DmarcRecord | None:
    """The parsed record when exactly one of the TXT strings is a DMARC record; None otherwise."""
    records = [t for t in texts or () if is_dmarc(t)]
    return parse_dmarc(records[0]) if len(records) == 1 else None


def interpret_walk(domain: str, answers: Mapping[str, Sequence[str] | None]) -> Walk:
    """Apply RFC 9989 §4.10 to the TXT strings at each walk name's _dmarc (None: the lookup failed)."""
    names = walk_names(domain)
    policy_domain: str | None = None
    record: DmarcRecord | None = None
    failed: str | None = None
    multiple: dict[str, tuple[str, ...]] = {}
    for name in names:
        texts = answers.get(name)
        if texts is None:
            failed = failed or (name if record is None else None)
            break
        found = [t for t in texts if is_dmarc(t)]
        if len(found) > 1:
            multiple[name] = tuple(found)
        elif found and record is None:
            policy_domain, record = name, parse_dmarc(found[0])
    return Walk(policy_domain, record, _org_domain(domain, names, answers), multiple, failed)


def _org_domain(domain: str, names: Sequence[str], answers: Mapping[str, Sequence[str] | None]) -> str:
    labels = domain.split(".")
    fewest: str | None = None
    for position, name in enumerate(names):
        texts = answers.get(name)
        if texts is None:
            break
        record = one_record(texts)
        if record is None:
            continue
        psd = record.get("psd")
        if psd == "n":
            return name
        if psd == "y" and position > 0:
            return ".".join(labels[-(name.count(".") + 2) :])
        fewest = name
    return fewest or domain
