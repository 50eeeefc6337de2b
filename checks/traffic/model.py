"""The values the traffic tally gives out: one counted attempt, one kind of reply, one provider's summary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from checks.canary.ndr import Explanation, entry_said
from checks.traffic.lines import Delivery, redact

__all__ = ["Outcome", "ProviderSummary", "Reply", "reply_code"]

_CODE_PARTS = re.compile(r"\((S\d{3,4})\)|\[([A-Z]{2,3}\d\d)\]")
_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")


class Outcome(NamedTuple):
    """One counted attempt, for the live window: provider key, outcome, the line's stamp and its reply."""

    provider: str
    route: str  # provider | local | smarthost
    status: str
    stamp: str
    code: str
    explanation: Explanation | None
    raw_line: str = ""  # as logged, addresses and all: never let it leave the process

    @property
    def block(self) -> bool:
        return self.explanation is not None and self.explanation.block

    @property
    def line(self) -> str:
        """The log line with every address's local part removed: what may be quoted in the room."""
        return redact(self.raw_line)


@dataclass(frozen=True)
class Reply:
    """One kind of reply from one provider: its code, how often, what it means, one redacted line.

    `explanation` is the English sentence (JSON and the stored tally keep it); `entry` the ndr.toml row it came
    from, so that `said()` can word it in the reader's language whenever it is read.
    """

    code: str
    count: int
    explanation: str
    line: str
    block: bool = False
    entry: str = ""

    def said(self) -> str:
        """The explanation in the active language; the stored English when the row is no longer shipped."""
        return entry_said(self.entry, self.explanation)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "count": self.count, "explanation": self.explanation}


@dataclass(frozen=True)
class ProviderSummary:
    """One provider's counts and its replies, most frequent first."""

    provider: str
    name: str
    sent: int
    deferred: int
    bounced: int
    expired: int
    accepted: int
    replies: tuple[Reply, ...]

    @property
    def attempts(self) -> int:
        return self.sent + self.deferred + self.bounced + self.expired

    def to_json(self) -> dict[str, Any]:
        counts = {"sent": self.sent, "deferred": self.deferred, "bounced": self.bounced, "expired": self.expired}
        return {"provider": self.provider, "name": self.name, **counts, "accepted": self.accepted,
                "replies": [reply.to_json() for reply in self.replies]}  # fmt: skip


def reply_code(delivery: Delivery) -> str:
    """A stable code for a reply: '550 5.7.1 S3150', '421 4.7.0 TSS04', 'connect timeout', ..."""
    reply = delivery.reply
    if reply is None:
        detail = delivery.detail.lower()
        for marker, code in _LOCAL_REASONS:
            if marker in detail:
                return code
        return delivery.dsn or delivery.status
    parts = [reply[:3]]
    enhanced = _ENHANCED.search(reply[3:40])
    if enhanced is not None:
        parts.append(enhanced.group(1))
    elif delivery.dsn:
        parts.append(delivery.dsn)
    found = _CODE_PARTS.search(reply)
    if found is not None:
        parts.append(found.group(1) or found.group(2))
    return " ".join(parts)


_LOCAL_REASONS = (
    ("timed out", "connect timeout"),
    ("connection refused", "connection refused"),
    ("network is unreachable", "network unreachable"),
    ("host not found", "host not found"),
    ("name service error", "dns error"),
    ("no route to host", "no route"),
    ("lost connection", "lost connection"),
    ("tls", "tls failure"),
)
