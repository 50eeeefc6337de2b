"""SPF syntax, pure functions with no DNS: the record parser (RFC 7208 §4.6, §5) and macros (§7).

The only macro that needs DNS is `%{p}`; the evaluator resolves it first and passes the value in `MacroEnv`.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from checks.errors import SpfSyntaxError

__all__ = [
    "EXP_ONLY_LETTERS",
    "LOOKUP_TERMS",
    "MACRO_LETTERS",
    "MacroEnv",
    "Mechanism",
    "SpfRecord",
    "SpfSyntaxError",
    "check_domain_spec",
    "check_macro_string",
    "expand",
    "expand_domain",
    "ip_dot_format",
    "is_spf_record",
    "parse_record",
    "uses_macro",
    "valid_domain",
]

MACRO_LETTERS = frozenset("slodiphv")
EXP_ONLY_LETTERS = frozenset("crt")
DELIMITERS = ".-+,/_="
MAX_DOMAIN = 253
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MODIFIER = re.compile(r"([a-zA-Z][a-zA-Z0-9_.\-]*)=(.*)\Z", re.DOTALL)
_MECH_NAME = re.compile(r"([^:/]*)(.*)\Z", re.DOTALL)
_CIDR_TAIL = re.compile(r"(?:/(\d+))?(?://(\d+))?\Z")
_CIDR4 = re.compile(r"(?:0|[1-9]\d?)\Z")
_CIDR6 = re.compile(r"(?:0|[1-9]\d{0,2})\Z")
_IP4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}\Z")
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists"})
_TOPLABEL = re.compile(r"(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9])\Z", re.IGNORECASE)


@dataclass(frozen=True)
class _Macro:
    letter: str
    digits: int | None
    reverse: bool
    delimiters: str
    escape: bool


# A parsed macro string: literal text and macros, in order.
_Token = str | _Macro


@dataclass(frozen=True)
class MacroEnv:
    """The values the macro letters stand for during one check_host() evaluation."""

    sender: str
    local_part: str
    sender_domain: str
    domain: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    helo: str
    receiver: str = "unknown"
    validated_ptr: str = "unknown"
    timestamp: int = 0

    def value(self, letter: str) -> str:
        """The raw value of one macro letter (lower case)."""
        values = {
            "s": self.sender,
            "l": self.local_part,
            "o": self.sender_domain,
            "d": self.domain,
            "i": ip_dot_format(self.ip),
            "p": self.validated_ptr,
            "v": "in-addr" if self.ip.version == 4 else "ip6",
            "h": self.helo,
            "c": str(self.ip),
            "r": self.receiver,
            "t": str(self.timestamp),
        }
        return values[letter]


def ip_dot_format(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The `%{i}` form: dotted quad for IPv4, 32 dot-separated upper-case nibbles for IPv6."""
    if ip.version == 4:
        return str(ip)
    return ".".join(f"{ip.packed.hex():0>32}".upper())


def _parse(text: str, *, exp: bool) -> list[_Token]:
    """Tokens of a macro string; raises SpfSyntaxError. With `exp`, spaces and c/r/t are allowed."""
    tokens: list[_Token] = []
    literal: list[str] = []
    i, end = 0, len(text)
    while i < end:
        ch = text[i]
        if ch != "%":
            if not (0x21 <= ord(ch) <= 0x7E or (exp and ch == " ")):
                raise SpfSyntaxError(f"character {ch!r} is not allowed in {text!r}")
            literal.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < end else ""
        if nxt in ("%", "_", "-"):
            if literal:
                tokens.append("".join(literal))
                literal = []
            tokens.append(_Macro({"%": "%%", "_": "%_", "-": "%-"}[nxt], None, False, "", False))
            i += 2
            continue
        if nxt != "{":
            raise SpfSyntaxError(f"'%' must be followed by '{{', '%', '_' or '-' in {text!r}")
        close = text.find("}", i)
        if close < 0:
            raise SpfSyntaxError(f"unclosed macro in {text!r}")
        if literal:
            tokens.append("".join(literal))
            literal = []
        tokens.append(_parse_macro(text[i + 2 : close], text, exp=exp))
        i = close + 1
    if literal:
        tokens.append("".join(literal))
    return tokens


_BODY = re.compile(r"([a-zA-Z])(\d*)([rR]?)([.\-+,/_=]*)\Z")


def _parse_macro(body: str, text: str, *, exp: bool) -> _Macro:
    match = _BODY.match(body)
    if match is None:
        raise SpfSyntaxError(f"invalid macro %{{{body}}} in {text!r}")
    letter_raw, digits, reverse, delimiters = match.groups()
    letter = letter_raw.lower()
    if letter not in MACRO_LETTERS and not (exp and letter in EXP_ONLY_LETTERS):
        where = "an explanation" if letter in EXP_ONLY_LETTERS else "any macro"
        raise SpfSyntaxError(f"macro letter {letter_raw!r} is not allowed outside {where} in {text!r}")
    count = int(digits) if digits else None
    if count == 0:
        raise SpfSyntaxError(f"macro %{{{body}}}: the number of parts must not be zero")
    return _Macro(letter, count, bool(reverse), delimiters, letter_raw.isupper())


def check_macro_string(text: str, *, exp: bool = False) -> None:
    """Raise SpfSyntaxError unless `text` is a valid macro string (an explain string with `exp`)."""
    _parse(text, exp=exp)


def check_domain_spec(text: str) -> None:
    """Raise SpfSyntaxError unless `text` is a valid domain-spec: ends in a macro or '.' toplabel ['.']."""
    if not text:
        raise SpfSyntaxError("empty domain")
    tokens = _parse(text, exp=False)
    if isinstance(tokens[-1], _Macro):
        return
    body = text[:-1] if text.endswith(".") else text
    head, dot, toplabel = body.rpartition(".")
    if not dot or not head or not _TOPLABEL.match(toplabel):
        raise SpfSyntaxError(f"{text!r} is not a valid domain (it must end in a macro or '.' and a top label)")


def uses_macro(text: str, letters: str) -> bool:
    """True when the (valid) macro string uses one of the letters, e.g. 'p' or the sender's 'slo'."""
    try:
        tokens = _parse(text, exp=True)
    except SpfSyntaxError:
        return False
    return any(isinstance(token, _Macro) and token.letter in letters for token in tokens)


def _apply(macro: _Macro, env: MacroEnv) -> str:
    if macro.letter in ("%%", "%_", "%-"):
        return {"%%": "%", "%_": " ", "%-": "%20"}[macro.letter]
    value = env.value(macro.letter)
    if macro.digits is not None or macro.reverse or macro.delimiters:
        parts = re.split("[" + re.escape(macro.delimiters or ".") + "]", value)
        if macro.reverse:
            parts.reverse()
        if macro.digits is not None:
            parts = parts[-macro.digits :]
        value = ".".join(parts)
    if macro.escape:
        value = urllib.parse.quote(value, safe="")
    return value


def expand(text: str, env: MacroEnv, *, exp: bool = False) -> str:
    """The macro string with every macro replaced; raises SpfSyntaxError for a bad macro."""
    return "".join(token if isinstance(token, str) else _apply(token, env) for token in _parse(text, exp=exp))


def expand_domain(text: str, env: MacroEnv) -> str:
    """A domain-spec expanded into a target name: no trailing dot, left labels dropped beyond 253 characters."""
    name = expand(text, env)
    if name.endswith("."):
        name = name[:-1]
    while len(name) > MAX_DOMAIN and "." in name:
        name = name.split(".", 1)[1]
    return name


@dataclass(frozen=True)
class Mechanism:
    """One directive: qualifier, kind (all, include, a, mx, ptr, ip4, ip6, exists), its target and CIDR lengths."""

    qualifier: str
    kind: str
    domain_spec: str = ""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""

    @property
    def result(self) -> str:
        return _QUALIFIERS[self.qualifier]

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class SpfRecord:
    """A parsed SPF record: its mechanisms in order, and its modifiers."""

    text: str
    mechanisms: tuple[Mechanism, ...]
    redirect: str | None = None
    exp: str | None = None
    unknown_modifiers: tuple[str, ...] = ()

    @property
    def lookup_terms(self) -> int:
        """How many terms of this record count toward the 10-lookup limit (redirect included)."""
        return sum(m.kind in LOOKUP_TERMS for m in self.mechanisms) + (self.redirect is not None)


def is_spf_record(text: str) -> bool:
    """True when the TXT string is an SPF version 1 record: 'v=spf1' (any case) then a space or the end."""
    return text[:6].lower() == "v=spf1" and (len(text) == 6 or text[6] == " ")


def parse_record(text: str) -> SpfRecord:
    """The parsed record; raises SpfSyntaxError for anything RFC 7208 §4.6 makes a permerror."""
    if not is_spf_record(text):
        raise SpfSyntaxError(f"not an SPF record: {text[:40]!r}")
    bad = next((ch for ch in text if not 0x20 <= ord(ch) <= 0x7E), None)
    if bad is not None:
        raise SpfSyntaxError(f"character {bad!r} is not allowed in an SPF record (only printable ASCII)")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, str] = {}
    unknown: list[str] = []
    for term in text[6:].split(" "):
        if not term:
            continue
        modifier = _MODIFIER.match(term)
        if modifier is None:
            mechanisms.append(_parse_mechanism(term))
            continue
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            if name in modifiers:
                raise SpfSyntaxError(f"the {name}= modifier appears more than once")
            check_domain_spec(value)
            modifiers[name] = value
        else:
            check_macro_string(value, exp=True)
            unknown.append(term)
    return SpfRecord(text, tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"), tuple(unknown))


def _parse_mechanism(term: str) -> Mechanism:
    qualifier = term[0] if term[0] in _QUALIFIERS else "+"
    body = term[1:] if term[0] in _QUALIFIERS else term
    match = _MECH_NAME.match(body)
    assert match is not None
    kind, rest = match.group(1).lower(), match.group(2)
    if kind == "all":
        if rest:
            raise SpfSyntaxError(f"{term!r}: 'all' takes no argument")
        return Mechanism(qualifier, kind, text=term)
    if kind in ("include", "exists"):
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{term!r}: {kind} needs ':' and a domain")
        check_domain_spec(rest[1:])
        return Mechanism(qualifier, kind, rest[1:], text=term)
    if kind == "ptr":
        if rest and not rest.startswith(":"):
            raise SpfSyntaxError(f"{term!r}: ptr takes no CIDR length")
        if rest:
            check_domain_spec(rest[1:])
        return Mechanism(qualifier, kind, rest[1:], text=term)
    if kind in ("a", "mx"):
        return _parse_address_mechanism(qualifier, kind, rest, term)
    if kind in ("ip4", "ip6"):
        return _parse_ip_mechanism(qualifier, kind, rest, term)
    raise SpfSyntaxError(f"unknown mechanism {term!r}")


def _parse_address_mechanism(qualifier: str, kind: str, rest: str, term: str) -> Mechanism:
    tail = _CIDR_TAIL.search(rest)
    assert tail is not None
    head = rest[: tail.start()]
    cidr4 = _cidr(tail.group(1), _CIDR4, 32, term)
    cidr6 = _cidr(tail.group(2), _CIDR6, 128, term)
    if head and not head.startswith(":"):
        raise SpfSyntaxError(f"{term!r}: expected ':domain', '/len' or '//len' after {kind}")
    if head:
        check_domain_spec(head[1:])
    return Mechanism(qualifier, kind, head[1:], None, cidr4, cidr6, term)


def _cidr(digits: str | None, pattern: re.Pattern[str], limit: int, term: str) -> int:
    if digits is None:
        return limit
    if not pattern.match(digits) or int(digits) > limit:
        raise SpfSyntaxError(f"{term!r}: invalid CIDR length /{digits} (0 to {limit}, no leading zero)")
    return int(digits)


def _parse_ip_mechanism(qualifier: str, kind: str, rest: str, term: str) -> Mechanism:
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"{term!r}: {kind} needs ':' and an address")
    address, slash, length = rest[1:].partition("/")
    v4 = kind == "ip4"
    bits = _cidr(length if slash else None, _CIDR4 if v4 else _CIDR6, 32 if v4 else 128, term)
    try:
        if v4 and not _IP4.match(address):
            raise ValueError(address)
        network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    except ValueError:
        raise SpfSyntaxError(f"{term!r}: {address!r} is not an {'IPv4' if v4 else 'IPv6'} address") from None
    if network.version != (4 if v4 else 6):
        raise SpfSyntaxError(f"{term!r}: {address!r} is not an {'IPv4' if v4 else 'IPv6'} address")
    return Mechanism(qualifier, kind, "", network, bits if v4 else 32, bits if not v4 else 128, term)


def valid_domain(name: str) -> bool:
    """True for a multi-label domain name with labels of 1 to 63 ASCII characters (RFC 7208 §4.3)."""
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253 or not name.isascii() or name.startswith("["):
        return False
    labels = name.split(".")
    if len(labels) < 2 or any(not 0 < len(label) <= 63 for label in labels):
        return False
    return not labels[-1].isdigit()
