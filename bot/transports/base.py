"""What the bot needs from a room, whatever carries it: Matrix or the terminal.

Transports never import `checks`: they carry command text in and rendered replies out.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["DeliveryError", "Incoming", "IncomingHandler", "Rendered", "Transport"]


@dataclass(frozen=True)
class Rendered:
    """A message in both forms a Matrix client shows: a plain body and an HTML body."""

    plain: str
    html: str


def plain_and_html(text: str) -> Rendered:
    """A short message with no markup of its own, escaped for HTML."""
    return Rendered(plain=text, html=html.escape(text).replace("\n", "<br/>"))


@dataclass(frozen=True)
class Incoming:
    """A command line someone typed in a room, with what a reply needs to find its place."""

    room: str
    sender: str
    body: str
    event_id: str = ""
    thread_root: str | None = None


class DeliveryError(Exception):
    """Raised when the room did not accept a message (homeserver down, rate limited, not joined).

    `permanent`: the room refused this message itself (M_FORBIDDEN, M_TOO_LARGE, another 4xx but 429), so
    sending it again unchanged will fail again; a transient failure (network, 5xx, 429) is worth retrying.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


IncomingHandler = Callable[[Incoming], Awaitable[None]]


class Transport(Protocol):
    """A room the bot talks in. `send` returns only once the message is accepted (an event id)."""

    alert_rooms: Sequence[str]

    async def start(self, on_command: IncomingHandler) -> None:
        """Connect and begin delivering commands to `on_command`; returns once ready."""

    async def run(self) -> int:
        """Serve until stopped or the input ends; the process exit code."""

    async def stop(self) -> None:
        """Disconnect, after pending replies are out."""

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        """Post `message`; the same txn_id never posts twice. Raises DeliveryError when not accepted."""

    async def send_image(
        self, room: str, png: bytes, *, body: str, reply_to: Incoming | None = None, txn_id: str | None = None
    ) -> str:
        """Post a PNG (`m.image`; an encrypted attachment in an E2EE room), `body` its description; the event id.

        Raises DeliveryError when the upload or the message is not accepted.
        """

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
        """Post a file (`m.file`; encrypted in an E2EE room) named `filename`; the event id.

        Raises DeliveryError when the upload or the message is not accepted.
        """

    async def react(self, incoming: Incoming, key: str) -> None:
        """Put a reaction on a command (best effort)."""

    async def typing(self, room: str, on: bool) -> None:
        """Show or clear the typing notice (best effort)."""
