"""Real complaint reports (tests/data/arf: Sisimai's set-of-emails and Stalwart's mail-auth) read as the bot reads them.

The expected values were read from each message (see tests/data/arf/SOURCES.md), not from our parser.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from checks.providers.feedback import NotAReport, complaint_line, parse_report

DATA = Path(__file__).parent / "data" / "arf"
CASES: list[dict[str, Any]] = tomllib.loads((DATA / "expectations.toml").read_text())["report"]


def test_the_corpus_is_real_and_licensed() -> None:
    assert len(CASES) >= 15
    assert {path.name for path in DATA.glob("*.eml")} == {case["file"] for case in CASES}
    for licence in ("LICENSE.sisimai", "LICENSE.stalwart-MIT", "LICENSE.stalwart-Apache-2.0"):
        assert (DATA / licence).stat().st_size > 500


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_real_report(case: dict[str, Any]) -> None:
    complaint = parse_report((DATA / case["file"]).read_bytes())
    got = (complaint.feedback_type, complaint.source_ip, complaint.sending_domain, complaint.reported_domain)
    assert got == (case["feedback_type"], case["source_ip"], case["domain"], case["reported_domain"])


def test_both_domains_are_shown_when_they_differ() -> None:
    complaint = parse_report((DATA / "arf-14.eml").read_bytes())
    line = complaint_line(complaint)
    assert "from example.jp (" in line and "Reported-Domain amazonses.com)" in line


def test_cut_short_a_report_is_read_or_refused_with_a_reason() -> None:
    for case in CASES:
        raw = (DATA / case["file"]).read_bytes()
        for end in (len(raw) // 3, len(raw) // 2, 300):
            try:
                parse_report(raw[:end])
            except NotAReport as error:
                assert str(error)
