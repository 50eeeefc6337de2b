"""RFC 7208 §7 macros: syntax checks and expansion, pure functions with no DNS.

The only macro that needs DNS is `%{p}`; the evaluator resolves it first and passes the value in `MacroEnv`.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from ._errors import CheckError

__all__ = [
    "EXP_ONLY_LETTERS",
    "MACRO_LETTERS",
    "MacroEnv",
    "SpfSyntaxError",
    "check_domain_spec",
    "check_macro_string",
    "expand",
    "expand_domain",
    "ip_dot_format",
    "uses_macro",
]

MACRO_LETTERS = frozenset("slodiphv")
EXP_ONLY_LETTERS = frozenset("crt")
DELIMITERS = ".-+,/_="
MAX_DOMAIN = 253
_TOPLABEL = re.compile(r"(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9])\Z", re.IGNORECASE)


class SpfSyntaxError(CheckError, ValueError):
    """Raised when an SPF record, term or macro string breaks the RFC 7208 grammar (a permerror)."""


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
