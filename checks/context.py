"""What a check needs from outside, passed as one argument."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from checks.dns.resolver import Resolver

if TYPE_CHECKING:
    import httpx

__all__ = ["CheckContext", "DnsblSettings", "SharedResources"]

DEFAULT_HTTP_TIMEOUT = 10.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DnsblSettings:
    """The operator's changes to the shipped zone catalog."""

    dqs_key: str | None = field(default=None, repr=False)
    disabled: frozenset[str] = frozenset()
    extra_zones: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:
        key = "[secure]" if self.dqs_key else None
        return f"DnsblSettings(dqs_key={key}, disabled={sorted(self.disabled)}, extra={sorted(self.extra_zones)})"


class SharedResources:
    """What a context and every context derived from it (`dataclasses.replace`) share, and the first one closes.

    The HTTP clients are made on first use, one per TLS context and timeout, so DNS-only commands start fast
    and a derived context with another trust store gets a client that uses it. Closed once, by `aclose`.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[int, float], tuple[ssl.SSLContext, httpx.AsyncClient]] = {}
        self._default_tls: ssl.SSLContext | None = None
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._clients)} http client(s)"
        return f"<SharedResources {state}>"

    def default_tls(self) -> ssl.SSLContext:
        if self._default_tls is None:
            self._default_tls = ssl.create_default_context()
        return self._default_tls

    def http(self, verify: ssl.SSLContext, timeout: float) -> httpx.AsyncClient:
        """The client for this trust store and timeout; RuntimeError once closed (a new one would leak)."""
        if self.closed:
            raise RuntimeError("this CheckContext is closed: its HTTP client cannot be used any more")
        key = (id(verify), timeout)
        if key not in self._clients:
            import httpx

            client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                verify=verify,
                headers={"User-Agent": "repbot (mail reputation monitor)"},
            )
            self._clients[key] = (verify, client)  # the context is kept so that its id is not reused
        return self._clients[key][1]

    async def aclose(self) -> None:
        self.closed = True
        clients, self._clients = list(self._clients.values()), {}
        for _, client in clients:
            await client.aclose()


@dataclass(frozen=True)
class CheckContext:
    """The resolver, HTTP client, clock and operator settings a check may use; tests point it at local servers.

    Immutable: derive a variant with `dataclasses.replace`, which shares the resolver, the caches and the HTTP
    clients. Whoever made the first context closes it (`aclose`, or `async with`), once, for all of them.
    """

    resolver: Resolver
    timeout: float = 5.0
    clock: Callable[[], datetime] = _utcnow
    sending_ips: tuple[str, ...] = ()
    # Per domain, the IPs that send its mail (for its SPF verdict); a domain not named here uses sending_ips.
    domain_sending_ips: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    helo_names: tuple[str, ...] = ()
    dkim_selectors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dnsbl: DnsblSettings = field(default_factory=DnsblSettings)
    smtp_port: int = 25
    https_port: int = 443
    ssl_context: ssl.SSLContext | None = None
    caches: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    shared: SharedResources = field(default_factory=SharedResources, repr=False, compare=False)

    async def __aenter__(self) -> CheckContext:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def sending_ips_for(self, domain: str) -> tuple[str, ...]:
        """The IPs whose SPF verdict matters for `domain`: its configured ones, else every sending IP."""
        return self.domain_sending_ips.get(domain, self.sending_ips)

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context for outgoing connections: the configured one (tests) or the system's trust store."""
        return self.ssl_context if self.ssl_context is not None else self.shared.default_tls()

    def http(self) -> httpx.AsyncClient:
        """The shared HTTP client for this context's trust store; imported on first use."""
        return self.shared.http(self.tls_context(), min(self.timeout, DEFAULT_HTTP_TIMEOUT) * 2)

    async def aclose(self) -> None:
        """Close the HTTP clients and the resolver, for this context and every one derived from it."""
        await self.shared.aclose()
        self.resolver.close()
