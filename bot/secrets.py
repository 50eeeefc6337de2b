"""Every secret value the bot holds, wherever it came from, and the one function that masks them.

Values enter when a `Secret` is read (inline, `*_file`, `*_command`), when a token source hands out an
access or refresh token, and for inline secrets as soon as the config is loaded. `mask` replaces each
value, and the forms a peer may echo it in (JSON- or IMAP-quoted, URL-encoded), with `[secure]`. It is
applied by the log formatters, to findings before the monitor stores or posts them, and to every
message a transport sends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_LENGTH", "mask", "mask_value", "register", "registered"]

MASK = "[secure]"
# Shorter values would mask ordinary words ("admin", "test") all over the log; no real secret is this short.
MIN_LENGTH = 6

_lock = threading.Lock()  # secret commands run in threads (token_command): registration must not race
_values: tuple[str, ...] = ()


def register(*values: str | None) -> None:
    """Mask these values (and their quoted and encoded forms) from now on; short or empty ones are ignored."""
    global _values
    forms = {form for value in values if value and len(value) >= MIN_LENGTH for form in _forms(value)}
    with _lock:
        # Longest first, so a value containing another is masked whole, not left half visible.
        _values = tuple(sorted(set(_values) | forms, key=len, reverse=True))


def _forms(value: str) -> Iterable[str]:
    from html import escape  # html.entities' big table, only once a secret is registered

    yield value
    yield json.dumps(value)[1:-1]  # inside a JSON string (a homeserver echoing the login body)
    yield value.replace("\\", "\\\\").replace('"', '\\"')  # an IMAP quoted string (LOGIN user "PASS")
    yield quote_plus(value)  # a form body (the OAuth refresh grant)
    yield quote(value, safe="")
    yield escape(value)  # a message's HTML body


def mask(text: str) -> str:
    """The text with every registered secret replaced by [secure]."""
    for value in _values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_value(value: Any) -> Any:
    """A JSON-like value (evidence) with every string in it masked."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {mask(str(key)): mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_value(item) for item in value)
    return value


def registered() -> bool:
    """Whether any secret value is known yet (nothing to mask before the first one)."""
    return bool(_values)
