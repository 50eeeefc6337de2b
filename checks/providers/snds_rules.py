"""SNDS's June 2026 rules: automated-access keys expire 30 days after they are made, IP ownership is re-attested
every 10 months.

Microsoft does not say when a key was made, so repbot records the day it first saw a key working (in
`state_dir/snds-key.json`, by a fingerprint of the key, never the key) and counts from there: a warning 5 days
before the 30 days are up, and the expiry date in the "key expired" finding. The pure `*_findings` functions
take the record and the clock; `KeyLedger` keeps the record.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from checks.i18n import N_, _
from checks.model import Finding, Status

__all__ = [
    "ATTEST_MONTHS",
    "KEY_DAYS",
    "KEY_FILE",
    "KEY_WARN_DAYS",
    "KeyLedger",
    "KeyRecord",
    "attestation_due",
    "attestation_findings",
    "expired_summary",
    "fingerprint",
    "key_age_findings",
]

KEY_FILE = "snds-key.json"
KEY_DAYS = 30
KEY_WARN_DAYS = 5
ATTEST_MONTHS = 10
ATTEST_WARN_DAYS = 30

RENEW_KEY = N_(
    "Renew it: sign in at https://sendersupport.olc.protection.outlook.com/snds/, open Automated Access, "
    "generate a new data link, and put its key= value in key_file (or where key_command reads it); repbot sees "
    'the new key and counts 30 days again. Or move to the REST API (method = "api").'
)
REATTEST = N_(
    "Re-attest: sign in at https://sendersupport.olc.protection.outlook.com/snds/, confirm the IP ranges "
    "(Microsoft mails the range's contact again), then set [snds] attested to the new date."
)


@dataclass(frozen=True)
class KeyRecord:
    """The key repbot saw working (by fingerprint), and the first and last days it did."""

    fingerprint: str
    first_ok: date
    last_ok: date

    @property
    def expires(self) -> date:
        return self.first_ok + timedelta(days=KEY_DAYS)


def fingerprint(key: str) -> str:
    """A short digest that tells keys apart without keeping them (the key is long and random)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class KeyLedger:
    """The KeyRecord in `state_dir/snds-key.json`, written atomically; a missing or broken file is no record."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / KEY_FILE

    def load(self) -> KeyRecord | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return KeyRecord(
                str(data["fingerprint"]), date.fromisoformat(data["first_ok"]), date.fromisoformat(data["last_ok"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def saw_working(self, print_: str, today: date) -> KeyRecord:
        """Record that the key with this fingerprint worked today; a new key starts a new record."""
        old = self.load()
        first = old.first_ok if old is not None and old.fingerprint == print_ else today
        record = KeyRecord(print_, first, today)
        if record != old:
            self._store(record)
        return record

    def _store(self, record: KeyRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = {"fingerprint": record.fingerprint, "first_ok": str(record.first_ok), "last_ok": str(record.last_ok)}
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)


def key_age_findings(record: KeyRecord, now: datetime) -> list[Finding]:
    """The key's age against the 30 days: ok, then a warning from 5 days before the expiry, with the steps."""
    today = now.date()
    left = (record.expires - today).days
    evidence = {"first_seen_working": str(record.first_ok), "expires": str(record.expires), "days_left": left}
    if left > KEY_WARN_DAYS:
        summary = _("the SNDS key first worked on {first}; it expires around {expires} ({left} days)").format(
            first=record.first_ok, expires=record.expires, left=left
        )
        return [Finding("snds", "SNDS key", Status.OK, summary, evidence, code="snds-key-fresh", observed_at=now)]
    if left > 0:
        when = _("in {days} days").format(days=left)
    else:
        when = _("today") if left == 0 else _("{days} days ago, still working").format(days=-left)
    summary = _("the SNDS key expires around {expires} ({when}): it first worked on {first}").format(
        expires=record.expires, when=when, first=record.first_ok
    )
    return [Finding("snds", "SNDS key", Status.WARN, summary, evidence, _(RENEW_KEY), "snds-key-expiring", now)]


def expired_summary(record: KeyRecord | None) -> str:
    """The date part of the "key expired" finding."""
    if record is None:
        return _("repbot never saw this key working, so the day it was made is not known")
    return _("it first worked on {first}, last on {last}: expired around {expires} ({days} days)").format(
        first=record.first_ok, last=record.last_ok, expires=record.expires, days=KEY_DAYS
    )


def attestation_due(attested: date) -> date:
    """The day 10 months after `attested` (the month's last day when it is shorter)."""
    month = attested.month - 1 + ATTEST_MONTHS
    year, month = attested.year + month // 12, month % 12 + 1
    return date(year, month, min(attested.day, calendar.monthrange(year, month)[1]))


def attestation_findings(attested: date, now: datetime) -> list[Finding]:
    """A reminder from 30 days before the 10-month re-attestation; a failure once it is past."""
    due = attestation_due(attested)
    left = (due - now.date()).days
    evidence = {"attested": str(attested), "due": str(due), "days_left": left}
    if left > ATTEST_WARN_DAYS:
        status, code, advice = Status.OK, "snds-attest-ok", ""
        summary = _("SNDS IP ownership was attested on {attested}; the next re-attestation is due by {due}").format(
            attested=attested, due=due
        )
    elif left >= 0:
        status, code, advice = Status.WARN, "snds-attest-due", _(REATTEST)
        summary = _("re-attest the SNDS IP ownership by {due} ({left} days left; last attested {attested})").format(
            due=due, left=left, attested=attested
        )
    else:
        status, code, advice = Status.FAIL, "snds-attest-overdue", _(REATTEST)
        summary = _("the SNDS re-attestation was due on {due} ({days} days ago; last attested {attested})").format(
            due=due, days=-left, attested=attested
        )
    return [Finding("snds", "SNDS attestation", status, summary, evidence, advice, code, now)]
