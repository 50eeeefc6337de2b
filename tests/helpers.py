"""What several test modules need and is not a server: a clock moved by hand, a room that records, and a test
for English left in a sentence said in another language.

Real protocol peers live in tests/fixtures; these two stand in only where the thing under test is the bot's own
logic (which alert, which reply, which transaction id), never a protocol.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from bot.transports.base import DeliveryError, Incoming, IncomingHandler, Rendered

__all__ = ["ALERT_ROOM", "NBSP", "Clock", "RecordingTransport", "Sent", "english_words"]

ALERT_ROOM = "!alerts:localhost"
NBSP = "\N{NO-BREAK SPACE}"  # what Babel puts between a number and its sign in Spanish ("0,40 %")


class Clock:
    """An injected clock (`ctx.clock`, the monitor's) that tests move by hand."""

    def __init__(self, now: datetime = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Sent(NamedTuple):
    """One message the room accepted."""

    room: str
    message: Rendered
    txn_id: str | None
    reply_to: Incoming | None


@dataclass
class RecordingTransport:
    """A Transport that records what the bot does, in order: posts, pictures, files, reactions, typing.

    The same transaction id in the same room never posts twice (as Matrix promises), and `refuse` makes the next
    that many sends fail with DeliveryError, as a homeserver outage would.
    """

    alert_rooms: Sequence[str] = (ALERT_ROOM,)
    sent: list[Sent] = field(default_factory=list)
    images: list[tuple[str, bytes]] = field(default_factory=list)
    files: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # room, filename, mimetype, data
    events: list[str] = field(default_factory=list)
    refuse: int = 0
    attempts: int = 0
    _by_txn: dict[tuple[str, str], str] = field(default_factory=dict)

    async def start(self, on_command: IncomingHandler) -> None:
        return None

    async def run(self) -> int:
        return 0

    async def stop(self) -> None:
        return None

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        self.attempts += 1
        if self.refuse:
            self.refuse -= 1
            raise DeliveryError("homeserver unreachable")
        if txn_id is not None and (room, txn_id) in self._by_txn:
            return self._by_txn[(room, txn_id)]
        self.sent.append(Sent(room, message, txn_id, reply_to))
        self.events.append("send")
        event_id = f"$event{len(self.sent)}"
        if txn_id is not None:
            self._by_txn[(room, txn_id)] = event_id
        return event_id

    async def send_image(
        self, room: str, png: bytes, *, body: str, reply_to: Incoming | None = None, txn_id: str | None = None
    ) -> str:
        if txn_id is not None and (room, txn_id) in self._by_txn:
            return self._by_txn[(room, txn_id)]
        self.images.append((room, png))
        event_id = f"$image{len(self.images)}"
        if txn_id is not None:
            self._by_txn[(room, txn_id)] = event_id
        return event_id

    async def send_file(
        self,
        room: str,
        data: bytes,
        *,
        filename: str,
        mimetype: str,
        body: str,
        reply_to: Incoming | None = None,
        txn_id: str | None = None,
    ) -> str:
        if txn_id is not None and (room, txn_id) in self._by_txn:
            return self._by_txn[(room, txn_id)]
        self.files.append((room, filename, mimetype, data))
        event_id = f"$file{len(self.files)}"
        if txn_id is not None:
            self._by_txn[(room, txn_id)] = event_id
        return event_id

    async def react(self, incoming: Incoming, key: str) -> None:
        self.events.append(f"react {key}")

    async def typing(self, room: str, on: bool) -> None:
        self.events.append(f"typing {on}")

    @property
    def posted(self) -> list[tuple[str, str]]:
        """(room, plain text) of each post."""
        return [(sent.room, sent.message.plain) for sent in self.sent]

    @property
    def replies(self) -> list[str]:
        return [sent.message.plain for sent in self.sent]

    def texts(self) -> list[str]:
        return self.replies


# Words of our English sentences that no Spanish one has (a code such as SUSPECTED_SPAM is one word, not these).
_ENGLISH = re.compile(
    r"\b(the|of|on|and|with|after|never|last|yet|reached|accepted|delivered|missing|mail|reported|passed|needs"
    r"|meets|rates|sign|confidence|suspected|likely|canary|canaries|verified|token was)\b",
    re.IGNORECASE,
)


# A host or domain name (mx2.mail.example, 5.629) is a name, not words: "mail" in it is no English left.
_NAMES = re.compile(r"[\w-]+(?:\.[\w-]+)+")


def english_words(text: str) -> list[str]:
    """The words of our English still in `text`, a sentence said in another language (empty when none is)."""
    return _ENGLISH.findall(_NAMES.sub(" ", text))
