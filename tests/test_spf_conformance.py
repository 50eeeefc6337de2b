"""The openspf RFC 7208 test suite, every case, through check_host() over a real local DNS server.

Each YAML document is one section with its own `zonedata`; the shared server is reloaded when the section changes.
Run: `pytest tests/test_spf_conformance.py -q`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from checks.dns.resolver import Resolver
from checks.spf.evaluator import DEFAULT_EXPLANATION, check_host, sender_and_domain
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.shared import RFC7208_SUITE

SUITE = RFC7208_SUITE
# TIMEOUT entries never answer: keep each wait short so the whole suite stays fast.
RESOLVER_TIMEOUT = 0.3


def _sections() -> list[dict[str, Any]]:
    with SUITE.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


SECTIONS = _sections()
CASES = [
    pytest.param(index, name, case, id=f"{section['description']}::{name}")
    for index, section in enumerate(SECTIONS)
    for name, case in section["tests"].items()
]


class SuiteZones:
    """The shared server and which section's zonedata it holds."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.loaded: int | None = None

    def use(self, index: int) -> None:
        if self.loaded != index:
            self.server.clear()
            self.server.load(SECTIONS[index].get("zonedata") or {})
            self.loaded = index


@pytest.fixture(scope="module")
def zones() -> Iterator[SuiteZones]:
    with DnsServer() as server:
        yield SuiteZones(server)


def test_suite_is_complete() -> None:
    assert len(CASES) == sum(len(section["tests"]) for section in SECTIONS) > 200


@pytest.mark.parametrize(("index", "name", "case"), CASES)
async def test_rfc7208(zones: SuiteZones, index: int, name: str, case: dict[str, Any]) -> None:
    zones.use(index)
    resolver = Resolver([zones.server.address], timeout=RESOLVER_TIMEOUT, cache=False)
    helo = str(case.get("helo", ""))
    sender, domain = sender_and_domain(str(case.get("mailfrom", "")), helo)
    try:
        result = await check_host(str(case["host"]), domain, sender, resolver=resolver, helo=helo)
    finally:
        resolver.close()
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    trace = "\n".join(result.trace)
    assert result.result in expected, f"{name}: got {result.result}, expected {expected}\n{trace}"
    if "explanation" in case:
        wanted = DEFAULT_EXPLANATION if case["explanation"] == "DEFAULT" else case["explanation"]
        assert result.explanation == wanted, f"{name}: explanation {result.explanation!r}\n{trace}"
