"""The monitor's stored values as frozen dataclasses: alert state, history entries, outbox items, dead letters.

Each has `to_json()` for the state files and `from_json()` that reads what an older repbot wrote (schema 1,
TinyDB tables) as well as today's files: a missing optional field takes its default, a missing key field or a
value of the wrong type raises ValueError, so the store can drop that one record with a log line.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.transports.base import Incoming

__all__ = [
    "STATE_FIELDS", "AlertState", "DeadLetter", "HistoryEntry", "OutboxItem", "json_table", "json_text",
    "short_reason",
]  # fmt: skip


def short_reason(reason: str) -> str:
    """A Matrix error code in a refusal (M_FORBIDDEN), or the refusal's first 80 characters."""
    code = re.search(r"\bM_[A-Z_]+\b", reason)
    return code.group(0) if code else reason[:80]


def _text(data: Mapping[str, Any], name: str, default: str | None = "") -> Any:
    value = data.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is {type(value).__name__}, not text")
    return sys.intern(value)  # shared: thousands of records read from JSON repeat the same few texts


def _required(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"no {name}")
    return value


def _number(data: Mapping[str, Any], name: str, default: float = 0) -> float:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is {type(value).__name__}, not a number")
    return float(value)


def _mapping(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} is {type(value).__name__}, not a table")
    return value


def json_text(value: Mapping[str, Any]) -> str:
    """A table as its canonical JSON text (sorted keys, no spaces; "" when empty), one shared str per text.

    An AlertState keeps its evidence so: one str instead of a dict and its lists per state (73k states of a /20
    on every blocklist held 73k dicts and 146k lists, which the collector walked), equal texts shared through
    sys.intern (whose table lets a text go once nothing holds it), parsed only when read."""
    if not value:
        return ""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except TypeError:  # keys of mixed types cannot be sorted: sort them as the text they become
        text = json_text(json.loads(json.dumps(value, default=str)))
    return sys.intern(text)


def json_table(text: str) -> dict[str, Any]:
    """The table a json_text holds ({} for "", or for a text that is not a table's)."""
    if not text:
        return {}
    try:
        loaded = json.loads(text)
    except ValueError:  # a hand-edited file: the state reads as if it had no evidence
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _table_text(data: Mapping[str, Any], name: str) -> str:
    """A table field as its JSON text: today's files keep the text, older ones the table itself."""
    value = data.get(f"{name}_json", data.get(name))
    if isinstance(value, str):
        if value and not isinstance(json.loads(value), dict):
            raise ValueError(f"{name} is not the text of a table")
        return sys.intern(value)
    return json_text(_mapping({name: value}, name))


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the monitor knows of one (target, check, subject): its confirmed status and the candidate change."""

    key: str
    target: str
    check: str
    subject: str
    status: str | None = None
    signature: str | None = None
    since: str | None = None
    candidate: str | None = None
    candidate_count: int = 0
    candidate_since: str | None = None
    unknown_since: str | None = None
    unknown_alerted: bool = False
    unknown_summary: str = ""
    last_seen: str = ""
    last_status: str | None = None
    summary: str = ""
    advice: str = ""
    evidence_json: str = ""  # the evidence as json_text(): read it as `evidence`
    significant_json: str = ""  # the part of the evidence whose change is news, the same way
    candidate_summary: str = ""  # what a candidate status said, for !status while it waits for confirmation

    @property
    def evidence(self) -> Mapping[str, Any]:
        """The finding's evidence, parsed now: a copy of its own for the caller."""
        return json_table(self.evidence_json)

    @property
    def significant(self) -> Mapping[str, Any]:
        return json_table(self.significant_json)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _STATE_FIELDS}

    def to_row(self) -> tuple[Any, ...]:
        """The values in STATE_FIELDS order: how the state file keeps 73k states without repeating 19 names."""
        return _state_row(self)

    def seen_again(self, stamp: str, status: str) -> AlertState:
        """This state, seen once more with nothing else changed: the common case, built without a dict."""
        row = list(_state_row(self))
        row[_LAST_SEEN], row[_LAST_STATUS] = stamp, status
        return AlertState(*row)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> AlertState:
        """A row in STATE_FIELDS order, as the state file keeps it; each value's type is checked.

        Equal texts are shared: 73k states read from JSON would otherwise each hold their own copy of the same
        summary, advice and signature."""
        if len(row) == len(_STATE_FIELDS) and all(map(isinstance, row, _ROW_TYPES)) and row[0]:
            values: list[Any] = [sys.intern(value) if value.__class__ is str else value for value in row]
            return cls(*values)
        return cls.from_json(dict(zip(_STATE_FIELDS, row, strict=False)))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertState:
        key = _required(data, "key")
        target, check, subject = ([*key.split("|", 2), "", ""])[:3]
        return cls(
            key=key,
            target=_text(data, "target", target) or target,
            check=_text(data, "check", check) or check,
            subject=_text(data, "subject", subject) or subject,
            status=_text(data, "status", None),
            signature=_text(data, "signature", None),
            since=_text(data, "since", None),
            candidate=_text(data, "candidate", None),
            candidate_count=int(_number(data, "candidate_count")),
            candidate_since=_text(data, "candidate_since", None),
            unknown_since=_text(data, "unknown_since", None),
            unknown_alerted=bool(data.get("unknown_alerted", False)),
            unknown_summary=_text(data, "unknown_summary"),
            last_seen=_text(data, "last_seen"),
            last_status=_text(data, "last_status", None),
            summary=_text(data, "summary"),
            advice=_text(data, "advice"),
            evidence_json=_table_text(data, "evidence"),
            significant_json=_table_text(data, "significant"),
            candidate_summary=_text(data, "candidate_summary"),
        )


_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(AlertState))
STATE_FIELDS = _STATE_FIELDS
_state_row = operator.attrgetter(*_STATE_FIELDS)
_LAST_SEEN, _LAST_STATUS = _STATE_FIELDS.index("last_seen"), _STATE_FIELDS.index("last_status")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "str | None": (str, type(None)), "int": int, "bool": bool
}  # fmt: skip
_ROW_TYPES = tuple(_TYPES[str(f.type)] for f in dataclasses.fields(AlertState))


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One confirmed change, as it was told (or recorded while muted)."""

    at: str
    kind: str
    target: str
    check: str
    subject: str
    status: str = ""
    summary: str = ""
    old_status: str | None = None
    since: str | None = None
    detail: str = ""
    lasted: float | None = None
    muted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _HISTORY_FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryEntry:
        lasted = data.get("lasted")
        return cls(
            at=_required(data, "at"),
            kind=_text(data, "kind"),
            target=_text(data, "target"),
            check=_text(data, "check"),
            subject=_text(data, "subject"),
            status=_text(data, "status", None) or "",
            summary=_text(data, "summary"),
            old_status=_text(data, "old_status", None),
            since=_text(data, "since", None),
            detail=_text(data, "detail"),
            lasted=_number(data, "lasted") if lasted is not None else None,
            muted=bool(data.get("muted", False)),
        )


_HISTORY_FIELDS = tuple(f.name for f in dataclasses.fields(HistoryEntry))


def _incoming(data: Any) -> Incoming | None:
    if not data:
        return None
    if not isinstance(data, Mapping):
        raise ValueError("reply is not a table")
    return Incoming(
        room=_required(data, "room"),
        sender=_text(data, "sender"),
        body="",
        event_id=_text(data, "event_id"),
        thread_root=_text(data, "thread_root", None),
    )


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message not yet accepted by every room it is for: an alert, a reply, a notice, or a timeline picture."""

    id: str
    created: str
    rooms: tuple[str, ...]
    plain: str = ""
    html: str = ""
    attempts: int = 0
    next_try: float = 0.0
    reply: Incoming | None = None
    kind: str = "message"  # or "timeline": the picture is drawn when it is sent
    days: int = 0
    refusals: int = 0  # permanent refusals (4xx) in a row; at the limit the item becomes a dead letter
    last_error: str = ""
    # The store's write that must be on disk for this item to count (0: none); see Store's commit order.
    needs: int = 0

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _OUTBOX_FIELDS}
        data["rooms"] = list(self.rooms)
        reply = self.reply
        data["reply"] = (
            None
            if reply is None
            else {
                "room": reply.room,
                "sender": reply.sender,
                "event_id": reply.event_id,
                "thread_root": reply.thread_root,
            }
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, created: str = "") -> OutboxItem:
        """`created` is used when the item has none (a queue item from a hand-edited or older file)."""
        rooms = data.get("rooms")
        if not isinstance(rooms, list | tuple) or not rooms or not all(isinstance(r, str) for r in rooms):
            raise ValueError("no rooms")
        return cls(
            id=_required(data, "id"),
            created=_text(data, "created", None) or created,
            rooms=tuple(rooms),
            plain=_text(data, "plain"),
            html=_text(data, "html"),
            attempts=int(_number(data, "attempts")),
            next_try=_number(data, "next_try"),
            reply=_incoming(data.get("reply")),
            kind=_text(data, "kind", None) or "message",
            days=int(_number(data, "days")),
            refusals=int(_number(data, "refusals")),
            last_error=_text(data, "last_error"),
            needs=int(_number(data, "needs")),
        )


_OUTBOX_FIELDS = tuple(f.name for f in dataclasses.fields(OutboxItem))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An outbox item a room refused for good: kept for `!status` and the log, never tried again."""

    item: OutboxItem
    room: str
    reason: str
    at: str

    @property
    def short_reason(self) -> str:
        """The refusal's error code (M_TOO_LARGE), or its first words: what a note or a status line can hold."""
        return short_reason(self.reason)

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item.to_json(), "room": self.room, "reason": self.reason, "at": self.at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeadLetter:
        return cls(
            OutboxItem.from_json(_mapping(data, "item")),
            _required(data, "room"),
            _text(data, "reason"),
            _text(data, "at"),
        )
