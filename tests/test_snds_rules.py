"""SNDS's June 2026 rules with a clock moved by hand: the key's 30 days (first seen working, a warning 5 days
before, the date in the "key expired" finding) and the 10-month re-attestation reminder."""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bot.config.loader import ConfigError, parse_config
from bot.config.providers import snds_settings
from checks import CheckContext, Resolver, Status
from checks.model import Finding
from checks.providers import snds, snds_rules
from checks.providers.snds import SndsSettings
from tests.fixtures.http_providers import ProviderServer
from tests.helpers import Clock

START = datetime(2026, 7, 4, 9, 0, tzinfo=UTC)
KEY = "good"


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
async def ctx(clock: Clock) -> AsyncIterator[CheckContext]:
    context = CheckContext(resolver=Resolver(["127.0.0.1"]), timeout=0.5, clock=clock)
    yield context
    await context.aclose()


def settings(server: ProviderServer, state: Path, attested: date | None = None) -> SndsSettings:
    return SndsSettings(
        key=lambda: KEY,
        legacy_base=server.snds_legacy,
        ips=("192.0.2.10",),
        days=1,
        state_dir=str(state),
        attested=attested,
    )


def subject(findings: list[Finding], name: str) -> Finding:
    [found] = [f for f in findings if f.subject == name]
    return found


async def test_key_warns_five_days_before_the_30_and_dates_the_expiry(
    providers: ProviderServer, ctx: CheckContext, clock: Clock, tmp_path: Path
) -> None:
    config = settings(providers, tmp_path)
    first = subject(await snds.check(config, ctx), "SNDS key")
    assert (first.status, first.code, first.evidence["expires"]) == (Status.OK, "snds-key-fresh", "2026-08-03")
    stored = (tmp_path / snds_rules.KEY_FILE).read_text()
    assert KEY not in json.loads(stored).values() and "2026-07-04" in stored

    clock.advance(days=24)  # 2026-07-28: 6 days left
    assert subject(await snds.check(config, ctx), "SNDS key").code == "snds-key-fresh"
    clock.advance(days=1)  # 2026-07-29: 5 days left
    warned = subject(await snds.check(config, ctx), "SNDS key")
    assert (warned.status, warned.code) == (Status.WARN, "snds-key-expiring")
    assert "2026-08-03 (in 5 days)" in warned.summary and "Automated Access" in warned.advice

    clock.advance(days=7)  # 2026-08-05: Microsoft has cut the link off
    providers.expired.add(KEY)
    try:
        found = await snds.check(config, ctx)
    finally:
        providers.expired.discard(KEY)
    expired = [f for f in found if f.code == "snds-key-expired"]
    assert expired and all("expired around 2026-08-03" in f.summary for f in expired)
    assert all("first worked on 2026-07-04, last on 2026-07-29" in f.summary for f in expired)
    assert expired[0].evidence["expired_around"] == "2026-08-03"
    assert not [f for f in found if f.subject == "SNDS key"]


async def test_an_expired_key_never_seen_working_says_so(
    providers: ProviderServer, ctx: CheckContext, tmp_path: Path
) -> None:
    providers.expired.add(KEY)
    try:
        found = await snds.check(settings(providers, tmp_path), ctx)
    finally:
        providers.expired.discard(KEY)
    assert {f.code for f in found} == {"snds-key-expired"}
    assert all("never saw this key working" in f.summary for f in found)


async def test_a_login_page_for_a_known_key_is_dated_too(
    providers: ProviderServer, ctx: CheckContext, tmp_path: Path
) -> None:
    snds_rules.KeyLedger(tmp_path).saw_working(snds_rules.fingerprint("login"), date(2026, 6, 1))
    config = SndsSettings(key=lambda: "login", legacy_base=providers.snds_legacy, ips=("192.0.2.10",), days=1,
                          state_dir=str(tmp_path))  # fmt: skip
    found = await snds.check(config, ctx)
    assert {f.code for f in found} == {"snds-login-page"}
    assert all("expired around 2026-07-01" in f.summary for f in found)


def test_a_new_key_starts_its_own_30_days(tmp_path: Path) -> None:
    ledger = snds_rules.KeyLedger(tmp_path)
    old = ledger.saw_working(snds_rules.fingerprint("old-key"), date(2026, 6, 1))
    again = ledger.saw_working(snds_rules.fingerprint("old-key"), date(2026, 6, 20))
    assert (again.first_ok, again.last_ok) == (old.first_ok, date(2026, 6, 20))
    new = ledger.saw_working(snds_rules.fingerprint("new-key"), date(2026, 6, 28))
    assert (new.first_ok, new.expires) == (date(2026, 6, 28), date(2026, 7, 28))
    (tmp_path / snds_rules.KEY_FILE).write_text("{not json")
    assert ledger.load() is None


async def test_reattestation_reminder_before_ten_months(
    providers: ProviderServer, ctx: CheckContext, clock: Clock, tmp_path: Path
) -> None:
    config = settings(providers, tmp_path, attested=date(2025, 10, 31))  # due 2026-08-31 (10 months, month end)
    clock.now = datetime(2026, 7, 31, 9, 0, tzinfo=UTC)
    ok = subject(await snds.check(config, ctx), "SNDS attestation")
    assert (ok.status, ok.code, ok.evidence["due"]) == (Status.OK, "snds-attest-ok", "2026-08-31")
    clock.advance(days=1)  # 30 days left
    due = subject(await snds.check(config, ctx), "SNDS attestation")
    assert (due.status, due.code) == (Status.WARN, "snds-attest-due")
    assert "by 2026-08-31 (30 days left" in due.summary and "attested" in due.advice
    clock.advance(days=31)  # 2026-09-01
    late = subject(await snds.check(config, ctx), "SNDS attestation")
    assert (late.status, late.code) == (Status.FAIL, "snds-attest-overdue") and "due on 2026-08-31" in late.summary


def test_attestation_due_dates() -> None:
    assert snds_rules.attestation_due(date(2026, 1, 15)) == date(2026, 11, 15)
    assert snds_rules.attestation_due(date(2026, 4, 30)) == date(2027, 2, 28)
    assert snds_rules.attestation_due(date(2027, 4, 29)) == date(2028, 2, 29)


def test_attested_in_the_config(tmp_path: Path) -> None:
    base = {"key": "k", "ips": ["192.0.2.10"]}
    as_toml = tomllib.loads("attested = 2026-03-01")["attested"]
    for given in (as_toml, "2026-03-01"):
        config = parse_config({"snds": {**base, "attested": given}, "state": {"dir": str(tmp_path)}})
        assert config.snds is not None and config.snds.attested == date(2026, 3, 1)
    ctx = CheckContext(resolver=Resolver(["127.0.0.1"]))
    made = snds_settings(config, ctx)
    assert made is not None and (made.attested, made.state_dir) == (date(2026, 3, 1), str(tmp_path))
    with pytest.raises(ConfigError, match=r"snds\.attested: 'March' is not a date"):
        parse_config({"snds": {**base, "attested": "March"}})


def test_reminders_in_the_operators_language() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    with use_language("es"):
        [due] = snds_rules.attestation_findings(date(2025, 10, 31), datetime(2026, 8, 1, 9, 0, tzinfo=UTC))
        never = snds_rules.expired_summary(None)
    assert due.summary.startswith("vuelve a certificar la propiedad de las IP en SNDS antes del 2026-08-31 (quedan 30")
    assert due.advice.startswith("Vuelve a certificar: inicia sesión en https://sendersupport")
    assert never == "repbot nunca vio funcionar esta clave, así que no se sabe el día en que se creó"
    assert due.evidence["due"] == "2026-08-31"
