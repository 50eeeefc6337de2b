"""Real bounces (tests/data/bounces, from Sisimai's set-of-emails) read as the canary reads them.

The expected values were written from each message's own content (see tests/data/bounces/SOURCES.md), not
from what our parser says; every expectation must hold.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from checks.canary.probe import Bounce, parse_bounce

DATA = Path(__file__).parent / "data" / "bounces"
CASES: list[dict[str, Any]] = tomllib.loads((DATA / "expectations.toml").read_text())["bounce"]


def _read(name: str) -> Bounce:
    bounce = parse_bounce((DATA / name).read_bytes())
    assert bounce is not None, f"{name} is not recognised as a bounce"
    return bounce


def test_the_corpus_is_real_diverse_and_licensed() -> None:
    assert len(CASES) >= 100
    assert len({case["file"].rsplit("-", 1)[0] for case in CASES}) >= 40
    assert (DATA / "LICENSE").read_text().startswith("THIS SOFTWARE IS DISTRIBUTED UNDER THE FOLLOWING BSD")
    assert {path.name for path in DATA.glob("*.eml")} == {case["file"] for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_real_bounce(case: dict[str, Any]) -> None:
    bounce = _read(case["file"])
    got = {"action": bounce.action, "status": bounce.status, "reply": bounce.reply_code}
    want = {"action": case["action"], "status": case.get("status"), "reply": case.get("reply")}
    for key in ("status", "reply"):
        if want[key] is None:
            del want[key], got[key]
    assert got == want, bounce.diagnostic
