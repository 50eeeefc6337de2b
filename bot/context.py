"""The bridge from configuration to the check library's CheckContext."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from bot.config.loader import Config
from bot.i18n import _, ngettext, number, percent
from checks import CheckContext, Resolver
from checks.i18n import install

# The check library's summaries, advice and target errors are said, and their numbers written, in the bot's
# active language: bot.i18n's functions follow it. Installed here, where the bot hands its settings to the
# library (the transports, which must not import checks, reach bot.i18n but never this).
install(_, ngettext, number, percent)

__all__ = ["build_context"]


def build_context(
    config: Config,
    *,
    nameservers: Sequence[str] = (),
    timeout: float | None = None,
    extra_selectors: Mapping[str, Sequence[str]] | None = None,
) -> CheckContext:
    """A CheckContext from the config, with command-line overrides; reads the DQS key secret if any."""
    resolver = Resolver(
        nameservers or config.dns.nameservers,
        timeout=timeout if timeout is not None else config.dns.timeout,
        concurrency=config.dns.concurrency,
    )
    dnsbl = config.dnsbl
    if config.dnsbl_key is not None:
        dnsbl = dataclasses.replace(dnsbl, dqs_key=config.dnsbl_key.get())
    selectors = {domain: tuple(names) for domain, names in config.dkim_selectors().items()}
    for domain, names in (extra_selectors or {}).items():
        selectors[domain] = tuple(dict.fromkeys((*selectors.get(domain, ()), *names)))
    return CheckContext(
        resolver=resolver,
        timeout=resolver.timeout,
        sending_ips=config.monitor.ips,
        domain_sending_ips=config.domain_sending_ips(),
        helo_names=config.monitor.helo_names,
        dkim_selectors=selectors,
        dnsbl=dnsbl,
    )
