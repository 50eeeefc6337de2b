"""Every check for one IP address, run at the same time."""

from __future__ import annotations

from . import dnsbl, mx
from .context import CheckContext
from .model import Finding, Report, Target
from .runner import CheckFn, run_checks

__all__ = ["IP_CHECKS", "check_ip"]


async def _reverse(target: Target, ctx: CheckContext) -> list[Finding]:
    return [await mx.check_reverse(target.value, ctx)]


# Blocklists first: they are what an operator asking about an IP wants to see.
IP_CHECKS: tuple[tuple[str, CheckFn], ...] = (
    ("dnsbl", dnsbl.check_ip),
    ("ptr", _reverse),
)


async def check_ip(target: Target, ctx: CheckContext) -> Report:
    """The Report of every IP check for `target`."""
    return await run_checks(target, ctx, IP_CHECKS)
