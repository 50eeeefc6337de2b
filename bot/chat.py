"""What a chat line looks like, known to the commands and the transports alike: the prefix, reply fallbacks, user ids.

It imports nothing of the check library, so the transports can use it (see tests/test_architecture.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PREFIX", "strip_reply_fallback", "user_matches"]

PREFIX = "!"


def strip_reply_fallback(body: str) -> str:
    """The body without a Matrix reply fallback (leading `> ` lines and the blank line after them)."""
    lines = body.splitlines()
    if not lines or not lines[0].startswith(">"):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and not lines[index].strip():
        index += 1
    return "\n".join(lines[index:])


def user_matches(user_id: str, patterns: Iterable[str]) -> bool:
    """True when the user id is one of the patterns (`@alice:example.org`, `@*:example.org`)."""
    return any(_pattern(p).fullmatch(user_id) is not None for p in patterns)


def _pattern(pattern: str) -> re.Pattern[str]:
    # `*` never crosses the `:` between localpart and server, so `@*:example.org` cannot match
    # `@eve:evil.org:example.org`-style tricks, and never matches an empty server.
    return re.compile(".+?" if pattern == "*" else "[^:]+".join(re.escape(part) for part in pattern.split("*")))
