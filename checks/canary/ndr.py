"""Explain bounce and deferral replies: what the remote means, and where to go about it.

The facts live in `ndr.toml` (loaded once, validated here); `explain(reply)` is pure: it reads the basic and
enhanced status codes, Microsoft's `(S3150)` codes and provider markers from the reply text, and returns the
most specific `Explanation`, or None when nothing in the table fits.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from checks.errors import CatalogError
from checks.i18n import N_, _

__all__ = [
    "Contact",
    "Entry",
    "Explanation",
    "ReplyCodes",
    "entry_said",
    "explain",
    "load_contacts",
    "load_table",
    "parse_reply",
    "provider_family",
]

KINDS = frozenset({"s-code", "enhanced", "marker"})
# "generic" rows are the IANA meaning of a code (RFC 7372 and friends), used when no provider's own row fits.
PROVIDERS = frozenset({"microsoft", "microsoft365", "google", "yahoo", "gmx", "generic"})
_FAMILY = {
    "microsoft": "microsoft", "microsoft365": "microsoft", "google": "google", "yahoo": "yahoo", "gmx": "gmx",
    "generic": "generic",
}  # fmt: skip
_ALIASES = {
    "microsoft": ("outlook", "hotmail", "live", "msn", "microsoft", "office365", "m365", "exchange"),
    "google": ("gmail", "google", "googlemail"),
    "yahoo": ("yahoo", "aol", "ymail"),
    "gmx": ("gmx", "web.de", "webde", "1und1", "ionos"),
}
_MARKERS: dict[str, re.Pattern[str]] = {
    "microsoft": re.compile(
        r"outlook\.com|hotmail|messaging\.microsoft\.com|microsoft|\(S\d{3,4}\)|\bprod\.outlook", re.IGNORECASE
    ),
    "google": re.compile(r"gsmtp|google\.com|gmail", re.IGNORECASE),
    "yahoo": re.compile(r"yahoo|\baol\b|\[(?:TSS|PH|BL|TS)\d\d\]", re.IGNORECASE),
    "gmx": re.compile(r"gmx|web\.de|nemesis esmtp|mxweb", re.IGNORECASE),
}
# The basic code anywhere: Postfix quotes it mid-text ("host mx.example.org[192.0.2.1] said: 550 5.1.1 ...").
_BASIC = re.compile(r"(?:^|(?<=[\s:(\[<\"'=#]))([245]\d\d)(?=[\s,-]|:\s|$)")
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_S_CODE = re.compile(r"\b(S\d{3,4})\b")
_ENTRY_FIELDS = frozenset(
    {"id", "provider", "kind", "match", "text", "unique", "temporary", "meaning", "action", "contact", "block"}
)
_ID = re.compile(r"^[a-z0-9]+\.[a-z0-9-]+$")
_CODE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Contact:
    """Somewhere an operator can go about a code; `url` is empty for 'fix it yourself'."""

    key: str
    name: str
    url: str


@dataclass(frozen=True)
class Entry:
    """One row of ndr.toml."""

    id: str
    provider: str
    kind: str
    match: tuple[str, ...]
    unique: bool
    temporary: bool
    meaning: str
    action: str
    contact: Contact
    text: tuple[str, ...] = ()  # enhanced only: the reply must also contain one of these (case-insensitive)
    block: bool = False

    @property
    def family(self) -> str:
        return _FAMILY[self.provider]

    def said(self) -> str:
        """The row's meaning, action and contact in the active language (what `Explanation.said()` says)."""
        return _sentence(self.meaning, self.action, self.contact.name, self.contact.url, _)

    def matches_text(self, lowered_reply: str) -> bool:
        """True when the entry asks for no text, or the (lower-cased) reply contains one of its texts."""
        return not self.text or any(item.lower() in lowered_reply for item in self.text)

    def matches_code(self, code: str) -> bool:
        """True when an enhanced code falls on one of this entry's codes or ranges."""
        key = _code_key(code)
        for item in self.match:
            first, _, last = item.partition("-")
            if _code_key(first) <= key <= _code_key(last or first):
                return True
        return False


@dataclass(frozen=True)
class ReplyCodes:
    """The codes found in one reply: basic (550), enhanced (5.7.1), Microsoft S-codes, and the provider it shows."""

    basic: str | None
    enhanced: tuple[str, ...]
    s_codes: tuple[str, ...]
    provider: str | None


@dataclass(frozen=True)
class Explanation:
    """What a reply means and what to do; `matched` is the code or text that chose the entry."""

    entry_id: str
    provider: str
    matched: str
    basic: str | None
    enhanced: str | None
    temporary: bool
    meaning: str
    action: str
    contact_name: str
    contact_url: str
    block: bool = False

    def line(self) -> str:
        """One human sentence: meaning, action, and where to go."""
        return _sentence(self.meaning, self.action, self.contact_name, self.contact_url, str)

    def said(self) -> str:
        """`line()` in the active language, for a finding's advice (evidence keeps `line()`'s English)."""
        return _sentence(self.meaning, self.action, self.contact_name, self.contact_url, _)


def _sentence(meaning: str, action: str, contact: str, url: str, say: Callable[[str], str]) -> str:
    where = say(N_("Where: {contact}{url}.")).format(contact=say(contact), url=f" <{url}>" if url else "")
    return f"{say(meaning)} {say(action)} {where}"


def _code_key(code: str) -> tuple[int, int, int]:
    klass, subject, detail = code.split(".")
    return int(klass), int(subject), int(detail)


def provider_family(name: str | None) -> str | None:
    """The provider family ('microsoft', 'google', 'yahoo', 'gmx') a canary name or domain stands for, or None."""
    if not name:
        return None
    lowered = name.lower()
    for family, aliases in _ALIASES.items():
        if any(alias in lowered for alias in aliases):
            return family
    return None


def parse_reply(text: str) -> ReplyCodes:
    """The codes in a reply text (one line or several); pure."""
    basic = _BASIC.search(text)
    enhanced = tuple(dict.fromkeys(".".join(m.groups()) for m in _ENHANCED.finditer(text)))
    s_codes = tuple(dict.fromkeys(_S_CODE.findall(text)))
    provider = next((name for name, pattern in _MARKERS.items() if pattern.search(text)), None)
    return ReplyCodes(basic.group(1) if basic else None, enhanced, s_codes, provider)


def _pick(entries: Sequence[Entry], reply: str, codes: ReplyCodes, family: str | None) -> tuple[Entry, str] | None:
    for entry in entries:
        if entry.kind == "s-code":
            hit = next((s for s in codes.s_codes if s in entry.match), None)
            if hit is not None:
                return entry, hit
    lowered = reply.lower()
    for entry in entries:
        if entry.kind == "marker":
            hit = next((m for m in entry.match if m.lower() in lowered), None)
            if hit is not None:
                return entry, hit
    for code in codes.enhanced:
        candidates = [
            entry for entry in entries
            if entry.kind == "enhanced" and entry.matches_code(code) and entry.matches_text(lowered)
        ]  # fmt: skip
        # Rows that also read the text are more specific than the code alone.
        candidates.sort(key=lambda entry: not entry.text)
        chosen = next((entry for entry in candidates if family is not None and entry.family == family), None)
        if chosen is None and family is None:
            chosen = next((entry for entry in candidates if entry.unique and entry.family != "generic"), None)
        if chosen is None:
            chosen = next((entry for entry in candidates if entry.family == "generic"), None)
        if chosen is not None:
            return chosen, code
    return None


def explain(reply: str, provider: str | None = None, table: Sequence[Entry] | None = None) -> Explanation | None:
    """The explanation of a remote's reply, or None; `provider` (a canary name or domain) breaks ties."""
    entries = load_table() if table is None else table
    codes = parse_reply(reply)
    family = codes.provider or provider_family(provider)
    picked = _pick(entries, reply, codes, family)
    if picked is None:
        return None
    entry, matched = picked
    enhanced = matched if _CODE.match(matched) else (codes.enhanced[0] if codes.enhanced else None)
    return Explanation(
        entry_id=entry.id,
        provider=entry.provider,
        matched=matched,
        basic=codes.basic,
        enhanced=enhanced,
        temporary=codes.basic.startswith("4") if codes.basic else entry.temporary,
        meaning=entry.meaning,
        action=entry.action,
        contact_name=entry.contact.name,
        contact_url=entry.contact.url,
        block=entry.block,
    )


def _require_str(where: str, data: Mapping[str, Any], name: str, *, empty: bool = False) -> str:
    value = data.get(name)
    if not isinstance(value, str) or (not value.strip() and not empty):
        raise CatalogError(where, name, "must be a non-empty string")
    return value


def _parse_contacts(raw: Any) -> dict[str, Contact]:
    if not isinstance(raw, Mapping):
        raise CatalogError("contacts", "contacts", "must be a table of tables")
    contacts: dict[str, Contact] = {}
    for key, data in raw.items():
        if not isinstance(data, Mapping):
            raise CatalogError(str(key), "contacts", "must be a table")
        url = _require_str(key, data, "url", empty=True)
        if url and not url.startswith(("https://", "mailto:")):
            raise CatalogError(key, "url", "must start with https:// or mailto:")
        contacts[key] = Contact(key, _require_str(key, data, "name"), url)
    return contacts


def _check_match(where: str, kind: str, match: tuple[str, ...]) -> None:
    for item in match:
        if kind == "s-code" and not re.fullmatch(r"S\d{3,4}", item):
            raise CatalogError(where, "match", f"{item!r} is not an S-code such as S3150")
        if kind == "enhanced":
            first, _, last = item.partition("-")
            if not _CODE.match(first) or (last and not _CODE.match(last)):
                raise CatalogError(where, "match", f"{item!r} is not an enhanced code or range")


def parse_entry(data: Mapping[str, Any], contacts: Mapping[str, Contact]) -> Entry:
    """One [[codes]] table as an Entry; raises CatalogError naming the entry and the field."""
    where = str(data.get("id", "?"))
    unknown = set(data) - _ENTRY_FIELDS
    if unknown:
        raise CatalogError(where, sorted(unknown)[0], "unknown field")
    entry_id = _require_str(where, data, "id")
    provider, kind = _require_str(where, data, "provider"), _require_str(where, data, "kind")
    if provider not in PROVIDERS:
        raise CatalogError(where, "provider", f"must be one of {sorted(PROVIDERS)}")
    if kind not in KINDS:
        raise CatalogError(where, "kind", f"must be one of {sorted(KINDS)}")
    raw_match = data.get("match")
    if not isinstance(raw_match, list) or not raw_match or not all(isinstance(m, str) and m for m in raw_match):
        raise CatalogError(where, "match", "must be a non-empty list of strings")
    match = tuple(raw_match)
    _check_match(where, kind, match)
    contact = contacts.get(_require_str(where, data, "contact"))
    if contact is None:
        raise CatalogError(where, "contact", "names no [contacts] table")
    if not isinstance(data.get("temporary"), bool):
        raise CatalogError(where, "temporary", "must be true or false")
    unique = data.get("unique", kind != "enhanced")
    if not isinstance(unique, bool):
        raise CatalogError(where, "unique", "must be true or false")
    block = data.get("block", False)
    if not isinstance(block, bool):
        raise CatalogError(where, "block", "must be true or false")
    meaning, action = _require_str(where, data, "meaning"), _require_str(where, data, "action")
    text = data.get("text", [])
    if kind != "enhanced" and text:
        raise CatalogError(where, "text", "only enhanced rows read the text; a marker row is text already")
    if not isinstance(text, list) or not all(isinstance(t, str) and t.strip() for t in text):
        raise CatalogError(where, "text", "must be a list of non-empty strings")
    return Entry(
        entry_id, provider, kind, match, unique, data["temporary"], meaning, action, contact, tuple(text), block
    )


def parse_table(data: Mapping[str, Any]) -> tuple[Entry, ...]:
    """All entries of a parsed ndr.toml, validated; raises CatalogError."""
    contacts = _parse_contacts(data.get("contacts", {}))
    rows = data.get("codes")
    if not isinstance(rows, list):
        raise CatalogError("codes", "codes", "must be an array of tables")
    entries = tuple(parse_entry(row, contacts) for row in rows)
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            raise CatalogError(entry.id, "id", "is used twice")
        seen.add(entry.id)
    return entries


@functools.cache
def _shipped() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("ndr.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def load_table() -> tuple[Entry, ...]:
    """The shipped table (checks/ndr.toml), parsed once."""
    return parse_table(_shipped())


@functools.cache
def _entries_by_id() -> dict[str, Entry]:
    return {entry.id: entry for entry in load_table()}


def entry_said(entry_id: str, stored: str) -> str:
    """The explanation of the shipped row `entry_id` (what a stored tally or block keeps) in the active language;
    `stored`, the English kept beside it, when the row is gone or none was kept."""
    entry = _entries_by_id().get(entry_id) if entry_id else None
    return entry.said() if entry is not None else stored


@functools.cache
def load_contacts() -> dict[str, Contact]:
    """The shipped [contacts] (where to go about a provider), by key."""
    return _parse_contacts(_shipped().get("contacts", {}))
