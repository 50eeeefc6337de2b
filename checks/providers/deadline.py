"""A deadline for a whole provider request (connect, headers and the last byte of the body).

httpx's timeouts bound each network operation, so a server that drips one byte every few seconds keeps
a request alive for ever; every provider fetch (SNDS, Postmaster Tools, the OAuth token endpoint) is
wrapped in `whole_request`, and running out of time is an httpx timeout like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx

from checks.context import CheckContext

__all__ = ["DEFAULT_DEADLINE", "REQUEST_DEADLINE_FACTOR", "RequestDeadline", "request_deadline", "whole_request"]

# A whole request may take this many DNS timeouts: 20 s by default, room for a slow API, never minutes.
REQUEST_DEADLINE_FACTOR = 4
DEFAULT_DEADLINE = 20.0


class RequestDeadline(httpx.TimeoutException):
    """Raised when a request did not complete, body included, within its whole-request deadline."""


def request_deadline(ctx: CheckContext) -> float:
    """The whole-request deadline for the provider fetches made with this context."""
    return ctx.timeout * REQUEST_DEADLINE_FACTOR


async def whole_request(send: Awaitable[httpx.Response], deadline: float) -> httpx.Response:
    """The response of `send` (a non-streaming request, so its body is read) or RequestDeadline."""
    try:
        async with asyncio.timeout(deadline):
            return await send
    except TimeoutError:
        raise RequestDeadline(f"no complete answer within {deadline:g} s") from None
