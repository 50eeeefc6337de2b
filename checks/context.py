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

__all__ = ["CheckContext", "DnsblSettings"]

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


@dataclass
class CheckContext:
    """The resolver, HTTP client, clock and operator settings a check may use; tests point it at local servers."""

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
    caches: dict[str, Any] = field(default_factory=dict)
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    def sending_ips_for(self, domain: str) -> tuple[str, ...]:
        """The IPs whose SPF verdict matters for `domain`: its configured ones, else every sending IP."""
        return self.domain_sending_ips.get(domain, self.sending_ips)

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context for outgoing connections: the configured one (tests) or the system's trust store."""
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    def http(self) -> httpx.AsyncClient:
        """A shared HTTP client; imported on first use so that DNS-only commands start fast."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(min(self.timeout, DEFAULT_HTTP_TIMEOUT) * 2),
                follow_redirects=False,
                verify=self.tls_context(),
                headers={"User-Agent": "repbot (mail reputation monitor)"},
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.resolver.close()
