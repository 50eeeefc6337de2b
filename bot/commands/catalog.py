"""The registry with every command family declared: a new module of handlers is imported here, once."""

from __future__ import annotations

from bot.commands import canary, general, monitor, providers, reports, ticket, timeline, traffic
from bot.commands.registry import REGISTRY

__all__ = ["FAMILIES", "REGISTRY"]

# The modules whose `command(...)` declarations fill REGISTRY, by family; importing them is what declares them.
FAMILIES = (general, monitor, providers, canary, timeline, reports, ticket, traffic)
