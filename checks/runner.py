"""Runs a target's checks at the same time and turns their failures into `unknown` findings, in one place."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from ._errors import LookupFailed
from .context import CheckContext
from .model import Finding, Report, Status, Target

__all__ = ["CheckFn", "run_checks"]

log = logging.getLogger(__name__)

CheckFn = Callable[[Target, CheckContext], Awaitable[list[Finding]]]

# A whole check may chain several dependent look-ups, each up to ctx.timeout.
CHECK_TIMEOUT_FACTOR = 6


async def run_checks(target: Target, ctx: CheckContext, checks: Sequence[tuple[str, CheckFn]]) -> Report:
    """The Report of every check for `target`, all run concurrently; findings keep the order of `checks`."""
    started = time.monotonic()
    results = await asyncio.gather(*(_run_one(name, check, target, ctx) for name, check in checks))
    findings = tuple(finding for result in results for finding in result)
    return Report(target, findings, duration=time.monotonic() - started)


async def _run_one(name: str, check: CheckFn, target: Target, ctx: CheckContext) -> list[Finding]:
    try:
        async with asyncio.timeout(ctx.timeout * CHECK_TIMEOUT_FACTOR):
            return await check(target, ctx)
    except LookupFailed as error:
        return [_unknown(name, target, f"could not check: {error}", "lookup-failed", ctx)]
    except TimeoutError:
        summary = f"could not check: no result within {ctx.timeout * CHECK_TIMEOUT_FACTOR:.0f} s"
        return [_unknown(name, target, summary, "timeout", ctx)]
    except Exception:
        # A bug in one check must not hide the others' findings, nor pass as "ok".
        log.exception("check %s failed on %s", name, target)
        return [_unknown(name, target, "internal error in this check, see the logs", "internal-error", ctx)]


def _unknown(name: str, target: Target, summary: str, code: str, ctx: CheckContext) -> Finding:
    return Finding(name, target.value, Status.UNKNOWN, summary, code=code, observed_at=ctx.clock())
