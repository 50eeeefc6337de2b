"""CheckContext is immutable and owns its HTTP clients for its whole life, derived contexts included."""

from __future__ import annotations

import dataclasses
import ssl

import pytest

from checks import CheckContext, Resolver
from tests.fixtures.dnsserver import DnsServer


def _ctx(dns: DnsServer) -> CheckContext:
    return CheckContext(resolver=Resolver([dns.address], timeout=0.3, cache=False), timeout=0.3)


async def test_a_derived_context_shares_the_owners_client_and_closes_with_it(dns_server: DnsServer) -> None:
    # `!check --selector` derives a context with dataclasses.replace; its client used to be a new one nobody closed.
    ctx = _ctx(dns_server)
    derived = dataclasses.replace(ctx, dkim_selectors={"example.org": ("s1",)})
    client = derived.http()
    assert ctx.http() is client
    assert derived.caches is ctx.caches and derived.resolver is ctx.resolver
    await ctx.aclose()
    assert client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        derived.http()  # a new client now would be one nobody closes


async def test_another_trust_store_gets_its_own_client_closed_with_the_rest(dns_server: DnsServer) -> None:
    ctx = _ctx(dns_server)
    strict = dataclasses.replace(ctx, ssl_context=ssl.create_default_context())
    assert strict.http() is not ctx.http()
    assert strict.http() is strict.http()
    clients = [ctx.http(), strict.http()]
    await strict.aclose()
    assert all(client.is_closed for client in clients)


async def test_the_context_is_frozen_and_closes_as_a_context_manager(dns_server: DnsServer) -> None:
    async with _ctx(dns_server) as ctx:
        with pytest.raises(dataclasses.FrozenInstanceError):
            ctx.timeout = 1.0  # type: ignore[misc]
        client = ctx.http()
    assert client.is_closed
    assert "SharedResources" not in repr(ctx) and "_http" not in repr(ctx)
