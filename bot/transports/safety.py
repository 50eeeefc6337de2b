"""What keeps a Matrix message deliverable and quiet: the event size cap and mention defusing.

Homeservers refuse events over 65,536 bytes (the spec's limit, headers and signatures included), and in
an encrypted room the ciphertext is base64 of the whole event, a third larger. So a message whose content
is over CONTENT_BUDGET bytes becomes a short summary notice plus the full plain text as a file.
"""

from __future__ import annotations

import html
import json
from typing import Any

from bot.transports.base import Rendered

__all__ = ["CONTENT_BUDGET", "MAX_EVENT_BYTES", "REPORT_FILENAME", "content_size", "defuse_mentions", "summarise"]

MAX_EVENT_BYTES = 65_536
# 30,000 bytes of content grow to about 40,000 once encrypted and base64-encoded, leaving room for the
# relation, the sender keys and the signatures under MAX_EVENT_BYTES.
CONTENT_BUDGET = 30_000
SUMMARY_CHARS = 3_000
SUMMARY_LINE = 200
REPORT_FILENAME = "repbot-report.txt"
# A word joiner after the `@`: the text reads the same, but no push rule or client sees a room mention.
_ROOM_MENTION = "@room"
_DEFUSED = "@\u2060room"


def content_size(content: dict[str, Any]) -> int:
    """The bytes of the content as JSON, non-ASCII escaped as the wire may carry it (the larger size)."""
    return len(json.dumps(content, ensure_ascii=True).encode("ascii"))


def defuse_mentions(text: str) -> str:
    """The text with `@room` unable to notify the room, whoever wrote it."""
    return text.replace(_ROOM_MENTION, _DEFUSED)


def summarise(message: Rendered, filename: str = REPORT_FILENAME) -> Rendered:
    """The first lines of a message too long for one event, saying where the rest is."""
    lines = message.plain.splitlines()
    kept: list[str] = []
    used = 0
    for line in lines:
        shown = line if len(line) <= SUMMARY_LINE else line[: SUMMARY_LINE - 1] + "…"
        if used + len(shown) > SUMMARY_CHARS:
            break
        kept.append(shown)
        used += len(shown) + 1
    size_kb = max(1, round(len(message.plain.encode("utf-8")) / 1024))
    note = f"… the whole report ({len(lines)} lines, {size_kb} KB) is in the attached file {filename}"
    plain = "\n".join([*kept, note])
    body = html.escape("\n".join(kept))
    return Rendered(plain=plain, html=f"<pre>{body}</pre><p><em>{html.escape(note)}</em></p>")
