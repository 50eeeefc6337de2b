"""SNDS: the documented CSV columns, the traps (login page, 404, empty, no data, hang) and both access methods."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from checks import CheckContext, Resolver, Status
from checks.providers import snds
from checks.providers._snds_parse import classify_answer, dedupe_rows
from checks.providers.snds import SndsAnswerError, SndsSettings
from tests.fixtures.http_providers import LOGIN_PAGE, SNDS_DATA, ProviderServer

NOW = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)
IPS = ("192.0.2.10", "192.0.2.11", "203.0.113.5")
EXAMPLE = (
    "1.1.1.0,12/31/2019 8:00 AM,9/29/2020 9:00 PM,14129,14129,13025,GREEN,< 0.1%,"
    "9/29/2020 8:07 AM,9/29/2020 12:03 PM,41,,,"
)


@pytest.fixture
async def ctx() -> AsyncIterator[CheckContext]:
    context = CheckContext(resolver=Resolver(["127.0.0.1"]), timeout=0.5, clock=lambda: NOW)
    yield context
    await context.aclose()


def legacy(server: ProviderServer, key: str, **extra: object) -> SndsSettings:
    return SndsSettings(method="key", key=lambda: key, legacy_base=server.snds_legacy, ips=IPS, **extra)  # type: ignore[arg-type]


def api(server: ProviderServer, token: str) -> SndsSettings:
    return SndsSettings(method="api", token=snds.command_token(lambda: token), api_base=server.snds_api, ips=IPS)


def by_subject(findings: list[snds.Finding]) -> dict[str, snds.Finding]:  # type: ignore[name-defined]
    return {f.subject: f for f in findings}


# -- pure parsing ---------------------------------------------------------------------------------------


def test_documented_example_row_columns() -> None:
    [row] = snds.parse_data_csv(EXAMPLE + "\r\n")
    assert row.ip == "1.1.1.0"
    assert (row.rcpt_commands, row.data_commands, row.recipients) == (14129, 14129, 13025)
    assert row.colour == "GREEN"
    assert row.complaint_text == "< 0.1%" and row.complaint_percent == 0.1
    assert row.trap_start == datetime(2020, 9, 29, 8, 7) and row.trap_end == datetime(2020, 9, 29, 12, 3)
    # The off-by-one trap: column 10 is the trap hits, 11 the HELO, 12 the JMR P1 sender, 13 the comments.
    assert row.trap_hits == 41 and row.helo == "" and row.jmr_sender == "" and row.comments == ""
    assert row.day == date(2020, 9, 29)


def test_comments_with_commas_and_helo_in_their_columns() -> None:
    [row] = snds.parse_data_csv(SNDS_DATA["070326"][2] + "\r\n")
    assert (row.trap_hits, row.helo, row.jmr_sender) == (41, "mail.example.org", "bounce@example.org")
    assert row.comments == "seen on traps, twice"


@pytest.mark.parametrize(
    ("text", "value"), [("< 0.1%", 0.1), ("None", None), ("", None), ("0.35%", 0.35), (" 1.2 % ", 1.2), ("n/a", None)]
)
def test_complaint_rates(text: str, value: float | None) -> None:
    assert snds.parse_complaint_rate(text) == value


def test_rows_spanning_midnight_counted_once_per_ip_and_day() -> None:
    rows = [row for day in SNDS_DATA.values() for row in snds.parse_data_csv("\r\n".join(day))]
    kept = dedupe_rows(rows)
    assert [(r.ip, r.day.isoformat(), r.colour) for r in kept] == [
        ("192.0.2.10", "2026-07-01", "GREEN"),
        ("192.0.2.10", "2026-07-02", "GREEN"),
        ("192.0.2.10", "2026-07-03", "YELLOW"),
        ("192.0.2.11", "2026-07-01", "YELLOW"),
        ("192.0.2.11", "2026-07-02", "RED"),
        ("192.0.2.11", "2026-07-03", "RED"),
    ]


def test_bad_rows_are_errors_not_data() -> None:
    with pytest.raises(ValueError, match="columns"):
        snds.parse_data_csv("192.0.2.1,7/1/2026 1:00 AM\r\n")
    with pytest.raises(ValueError, match="filter result"):
        snds.parse_data_csv(EXAMPLE.replace("GREEN", "PURPLE"))


def test_ip_status_ranges_expand_and_match() -> None:
    ranges = snds.parse_ip_status("192.0.2.8,192.0.2.11,Yes,SpamHaus SBL/XBL\r\n198.51.100.1,198.51.100.1,Yes,x, y\r\n")
    assert ranges[0].addresses() == ["192.0.2.8", "192.0.2.9", "192.0.2.10", "192.0.2.11"]
    assert "192.0.2.9" in ranges[0] and "192.0.2.12" not in ranges[0] and "2001:db8::1" not in ranges[0]
    assert ranges[1].reason == "x, y"
    findings = snds.findings_for_status(ranges, [], NOW)
    assert sorted(f.subject for f in findings) == sorted(
        [f"192.0.2.{n} block" for n in (8, 9, 10, 11)] + ["198.51.100.1 block"]
    )
    assert all(f.status is Status.FAIL for f in findings)


@pytest.mark.parametrize(
    ("status", "ctype", "body", "code"),
    [
        (404, "text/html", "gone", "key-expired"),
        (200, "text/html", LOGIN_PAGE, "login-page"),
        (200, "text/plain", "  <!DOCTYPE html><html>", "login-page"),
        (200, "text/csv", "\r\n", "empty"),
        (302, "text/html", "", "login-page"),
        (500, "text/plain", "oops", "http-error"),
    ],
)
def test_answers_that_are_not_data(status: int, ctype: str, body: str, code: str) -> None:
    with pytest.raises(SndsAnswerError) as raised:
        classify_answer(status, ctype, body)
    assert raised.value.code == code


# -- legacy key over HTTP -------------------------------------------------------------------------------


async def test_legacy_findings(providers: ProviderServer, ctx: CheckContext) -> None:
    found = by_subject(await snds.check(legacy(providers, "good"), ctx))
    ten, eleven, quiet = found["192.0.2.10"], found["192.0.2.11"], found["203.0.113.5"]
    assert (ten.status, ten.code, ten.evidence["day"]) == (Status.WARN, "snds-yellow", "2026-07-03")
    assert (eleven.status, eleven.code, eleven.evidence["trap_hits"]) == (Status.FAIL, "snds-red", 41)
    assert "1.2%" in eleven.summary and "41 trap hits" in eleven.summary
    assert (quiet.status, quiet.code) == (Status.OK, "snds-no-data")
    assert "100 messages a day" in quiet.summary
    blocked = found["192.0.2.10 block"]
    assert blocked.status is Status.FAIL and "user complaints" in blocked.summary
    assert found["203.0.113.5 block"].status is Status.OK


async def test_every_day_and_one_ip(providers: ProviderServer, ctx: CheckContext) -> None:
    rows = await snds.fetch_data(legacy(providers, "good"), ctx, "192.0.2.11")
    findings = snds.findings_for_rows(rows, ["192.0.2.11"], SndsSettings(), NOW, latest_only=False)
    assert [(f.subject, f.status) for f in findings] == [
        ("192.0.2.11 2026-07-01", Status.WARN),
        ("192.0.2.11 2026-07-02", Status.FAIL),
        ("192.0.2.11 2026-07-03", Status.FAIL),
    ]


async def test_green_row_with_traps_warns(ctx: CheckContext) -> None:
    [row] = snds.parse_data_csv(EXAMPLE.replace(",41,", ",2,"))
    [finding] = snds.findings_for_rows([row], [], SndsSettings(), NOW)
    assert (finding.status, finding.code) == (Status.WARN, "snds-green")


@pytest.mark.parametrize(
    ("key", "code"), [("expired", "snds-key-expired"), ("login", "snds-login-page"), ("hang", "snds-timeout")]
)
async def test_legacy_failures_are_unknown_and_plain(
    providers: ProviderServer, ctx: CheckContext, key: str, code: str
) -> None:
    findings = await snds.check(legacy(providers, key, days=1), ctx)
    assert {(f.subject, f.status, f.code) for f in findings} == {
        ("SNDS data", Status.UNKNOWN, code),
        ("SNDS ipStatus", Status.UNKNOWN, code),
    }
    assert all("key=" not in json.dumps(f.to_json()) for f in findings)


async def test_empty_and_no_data(providers: ProviderServer, ctx: CheckContext) -> None:
    for days in (1, 3):  # one rule, whatever the number of days asked
        empty = by_subject(await snds.check(legacy(providers, "empty", days=days), ctx))
        assert "SNDS data" not in empty, days
        assert {f.code for s, f in empty.items() if not s.endswith("block")} == {"snds-no-data"}, days
        assert empty["192.0.2.10 block"].status is Status.OK  # an empty ipStatus list: nothing blocked
    nodata = by_subject(await snds.check(legacy(providers, "nodata"), ctx))
    assert {f.code for s, f in nodata.items() if not s.endswith("block")} == {"snds-no-data"}


async def test_key_never_logged(providers: ProviderServer, ctx: CheckContext, caplog: pytest.LogCaptureFixture) -> None:
    secret_key = "good"
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # another test may have quieted httpx (bot.logs does)
    await snds.check(legacy(providers, secret_key, days=1), ctx)
    lines = [record.getMessage() for record in caplog.records]
    assert any("data.aspx" in line for line in lines)
    assert not any("key=good" in line for line in lines)


# -- REST API with OAuth --------------------------------------------------------------------------------


async def test_api_with_token_command(providers: ProviderServer, ctx: CheckContext) -> None:
    found = by_subject(await snds.check(api(providers, "good"), ctx))
    assert (found["192.0.2.10"].code, found["192.0.2.10"].evidence["day"]) == ("snds-yellow", "2026-07-03")
    assert found["192.0.2.11"].status is Status.FAIL
    assert found["192.0.2.11 block"].evidence["reason"].startswith("Blocked due to user complaints")
    one = await snds.check(api(providers, "good"), ctx, ip="192.0.2.10")
    assert sorted(f.subject for f in one) == ["192.0.2.10", "192.0.2.10 block"]


async def test_api_bad_token(providers: ProviderServer, ctx: CheckContext) -> None:
    findings = await snds.check(api(providers, "wrong"), ctx)
    assert {f.code for f in findings} == {"snds-auth"}
    assert all("wrong" not in json.dumps(f.to_json()) for f in findings)


async def test_refresh_token_rotates_in_state_dir(providers: ProviderServer, ctx: CheckContext, tmp_path: Path) -> None:
    providers.refresh_tokens["seed-refresh"] = "second-refresh"
    source = snds.RefreshTokenSource(
        ctx.http, tmp_path, "client-id", token_url=providers.token_url, seed=lambda: "seed-refresh"
    )
    assert "seed-refresh" not in repr(source)
    assert await source() == "fresh-access"
    stored = tmp_path / snds.TOKEN_FILE
    assert json.loads(stored.read_text()) == {"refresh_token": "second-refresh"}
    assert stored.stat().st_mode & 0o077 == 0
    # A new process starts from the stored token, not the (now used) seed.
    again = snds.RefreshTokenSource(
        ctx.http, tmp_path, "client-id", token_url=providers.token_url, seed=lambda: "seed-refresh"
    )
    settings = SndsSettings(method="api", token=again, api_base=providers.snds_api, ips=IPS)
    found = by_subject(await snds.check(settings, ctx))
    assert found["192.0.2.11"].code == "snds-red"
    assert json.loads(stored.read_text()) == {"refresh_token": "second-refreshx"}


async def test_refused_refresh_token(providers: ProviderServer, ctx: CheckContext, tmp_path: Path) -> None:
    source = snds.RefreshTokenSource(ctx.http, tmp_path, "id", token_url=providers.token_url, seed=lambda: "revoked")
    with pytest.raises(SndsAnswerError) as raised:
        await source()
    assert raised.value.code == "invalid-grant" and "revoked" not in str(raised.value)


def test_settings_repr_hides_secrets() -> None:
    secret: Callable[[], str] = lambda: "s3cret"  # noqa: E731
    assert "s3cret" not in repr(SndsSettings(key=secret))


async def test_a_dripping_server_meets_the_whole_request_deadline(providers: ProviderServer, ctx: CheckContext) -> None:
    import time

    from checks.providers.deadline import request_deadline

    started = time.monotonic()
    findings = await snds.check(legacy(providers, "drip", days=1), ctx)
    took = time.monotonic() - started
    assert {f.code for f in findings} == {"snds-timeout"} and all(f.status is Status.UNKNOWN for f in findings)
    # Both fetches run at once; each ends at its deadline, never at the 40 s the whole drip would take.
    assert took < 2 * request_deadline(ctx) + 1


async def test_a_dripping_token_endpoint_meets_its_deadline(
    providers: ProviderServer, ctx: CheckContext, tmp_path: Path
) -> None:
    source = snds.RefreshTokenSource(
        ctx.http, tmp_path, "id", token_url=providers.token_url, seed=lambda: "drip", deadline=1.0
    )
    with pytest.raises(SndsAnswerError) as raised:
        await source()
    assert raised.value.code == "unreachable" and "RequestDeadline" in str(raised.value)


def test_findings_in_the_operators_language_and_evidence_unchanged() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    [row] = snds.parse_data_csv(EXAMPLE.replace(",41,", ",2,"))
    [english] = snds.findings_for_rows([row], [], SndsSettings(), NOW)
    with use_language("es"):
        [spanish] = snds.findings_for_rows([row], [], SndsSettings(), NOW)
        [clear] = snds.findings_for_status([], ["192.0.2.7"], NOW)
    assert spanish.summary.startswith(f"{row.ip} el {row.day}: GREEN, tasa de quejas ")
    assert spanish.advice == "2 impactos en trampas de spam: limpia la lista que llegó a ellas"
    assert clear.summary == "Microsoft no bloquea 192.0.2.7"
    assert spanish.evidence == english.evidence and "trap hits" in english.summary


async def test_a_failure_in_the_operators_language(providers: ProviderServer, ctx: CheckContext) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    with use_language("es"):
        failures = by_subject(await snds.check(legacy(providers, "expired", days=1), ctx))
    data = failures["SNDS data"]
    assert data.summary == "SNDS respondió 404: la clave de acceso ha caducado o se revocó"
    assert data.advice.startswith("Los enlaces de acceso automatizado caducan a los 30 días")
    assert (data.code, data.evidence) == ("snds-key-expired", {"problem": "key-expired"})
