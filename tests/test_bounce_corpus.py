"""Real bounces (tests/data/bounces, from Sisimai's set-of-emails) read as the canary reads them.

The expected values were written from each message's own content (see tests/data/bounces/SOURCES.md), not
from what our parser says; every expectation must hold.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from checks.canary.ndr import explain
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


# Sisimai's reasons that are about the recipient, the network or authentication, never our IP's reputation.
NOT_REPUTATION = {
    "userunknown", "mailboxfull", "hostunknown", "hasmoved", "suspend", "mesgtoobig", "exceedlimit", "expired",
    "networkerror", "systemerror", "notaccept", "mailererror", "authfailure", "requireptr", "notcompliantrfc",
}  # fmt: skip
REPUTATION_ROWS = {
    "microsoft.s3150", "microsoft.s3140", "microsoft.s775", "microsoft365.rate-limited", "microsoft365.banned-ip",
    "microsoft365.banned-sender", "google.low-reputation", "google.unusual-rate", "yahoo.tss04", "yahoo.tss09",
    "yahoo.ph01", "yahoo.bl21", "gmx.ip-blocklisted", "gmx.policy",
}  # fmt: skip


def test_no_recipient_network_or_authentication_failure_is_called_a_reputation_block() -> None:
    checked = 0
    for case in CASES:
        if case["reason"] not in NOT_REPUTATION:
            continue
        bounce = _read(case["file"])
        found = explain(bounce.diagnostic or bounce.status or "")
        checked += 1
        assert found is None or found.entry_id not in REPUTATION_ROWS, (case["file"], found.entry_id)
    assert checked >= 150


@pytest.mark.parametrize(
    ("name", "entry_id"),
    [("rhost-google-06.eml", "google.no-ptr"), ("rhost-google-08.eml", "google.not-rfc5322"),
     ("lhost-qmail-09.eml", "microsoft365.banned-ip"), ("rhost-microsoft-05.eml", "microsoft365.rate-limited"),
     ("lhost-qmail-14.eml", "generic.unauthenticated"), ("rhost-google-04.eml", "google.unauthenticated")],
)  # fmt: skip
def test_real_replies_are_explained_by_their_own_words(name: str, entry_id: str) -> None:
    bounce = _read(name)
    found = explain(bounce.diagnostic or "")
    assert found is not None and found.entry_id == entry_id


def test_cut_short_anywhere_a_bounce_never_raises() -> None:
    for case in CASES:
        raw = (DATA / case["file"]).read_bytes()
        for end in (len(raw) // 3, len(raw) // 2, 300, 40):
            found = parse_bounce(raw[:end])
            assert found is None or found.action in ("failed", "delayed", "unknown")
