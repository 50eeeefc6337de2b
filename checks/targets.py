"""One entry point for any target: the IP checks for an address, the domain checks for a name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .context import CheckContext
from .model import Report, Target

__all__ = ["check_target", "check_targets"]


async def check_target(target: Target, ctx: CheckContext) -> Report:
    """The Report for one target."""
    if target.is_ip:
        from .ip import check_ip

        return await check_ip(target, ctx)
    from .domain import check_domain

    return await check_domain(target, ctx)


async def check_targets(
    targets: Sequence[Target], ctx: CheckContext, on_done: Callable[[Report], None] | None = None
) -> list[Report]:
    """Reports for several targets, checked concurrently, in the order given."""

    async def one(target: Target) -> Report:
        report = await check_target(target, ctx)
        if on_done is not None:
            on_done(report)
        return report

    return list(await asyncio.gather(*(one(target) for target in targets)))
