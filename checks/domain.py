"""Every check for one domain, run at the same time.

The wall time approaches the longest chain of dependent look-ups, not their sum: every module starts at
once, and the resolver answers a question several modules ask (the MX set, say) with one query.
"""

from __future__ import annotations

from . import dnsbl
from .context import CheckContext
from .model import Report, Target
from .runner import CheckFn, run_checks

__all__ = ["DOMAIN_CHECKS", "check_domain"]

DOMAIN_CHECKS: tuple[tuple[str, CheckFn], ...] = (("dnsbl", dnsbl.check_domain),)


async def check_domain(target: Target, ctx: CheckContext) -> Report:
    """The Report of every domain check for `target`."""
    return await run_checks(target, ctx, DOMAIN_CHECKS)
