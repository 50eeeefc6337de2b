"""The RFC 7208 suite again, every case, through `repbot spf --json` (the CLI's own parsing of the domain and HELO).

A receiver evaluates a malformed domain or HELO to `none` (RFC 7208 §4.3), so the CLI must too, and say so in --json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from bot.cli import main
from checks.spf.evaluator import sender_and_domain
from tests.fixtures.dnsserver import DnsServer
from tests.test_spf_conformance import CASES, SuiteZones


@pytest.fixture(scope="module")
def suite() -> Iterator[SuiteZones]:
    with DnsServer() as server:
        yield SuiteZones(server)


@pytest.mark.parametrize(("index", "name", "case"), CASES)
def test_rfc7208_through_the_cli(
    suite: SuiteZones, capsys: pytest.CaptureFixture[str], index: int, name: str, case: dict[str, Any]
) -> None:
    suite.use(index)
    helo = str(case.get("helo", ""))
    sender, domain = sender_and_domain(str(case.get("mailfrom", "")), helo)
    argv = ["spf", f"--ip={case['host']}", f"--sender={sender}", f"--helo={helo}",
            f"--nameserver={suite.server.address}", "--timeout=0.3", "--json", "--", domain]  # fmt: skip
    code = main(argv)
    out = capsys.readouterr()
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert out.out, f"{name}: exit {code}, no JSON; stderr: {out.err}"
    result = json.loads(out.out)["result"]
    assert result in expected, f"{name}: got {result}, expected {expected}; stderr: {out.err}"
