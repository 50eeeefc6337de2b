"""Every check for one domain, run at the same time.

The wall time approaches the longest chain of dependent look-ups, not their sum: every module starts at
once, and the resolver answers a question several modules ask (the MX set, say) with one query.
"""

from __future__ import annotations

from . import dkim, dmarc, dnsbl, dnssec, mtasts, mx, smtp, spf_lint, tlsrpt
from .context import CheckContext
from .model import Report, Target
from .runner import CheckFn, run_checks

__all__ = ["DOMAIN_CHECKS", "check_domain"]

# The order findings are shown in: reputation first, then what authenticates mail, then transport.
DOMAIN_CHECKS: tuple[tuple[str, CheckFn], ...] = (
    ("dnsbl", dnsbl.check_domain),
    ("spf", spf_lint.check),
    ("dkim", dkim.check),
    ("dmarc", dmarc.check),
    ("mx", mx.check),
    ("mx-tls", smtp.check),
    ("mta-sts", mtasts.check),
    ("tls-rpt", tlsrpt.check),
    ("dnssec", dnssec.check),
)


async def check_domain(target: Target, ctx: CheckContext) -> Report:
    """The Report of every domain check for `target`."""
    return await run_checks(target, ctx, DOMAIN_CHECKS)
