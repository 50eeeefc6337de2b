"""Google Postmaster Tools v2 (and the deprecated v1) against the local provider server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from checks import CheckContext, Resolver, Status
from checks.model import Finding
from checks.providers import postmaster, postmaster_v1
from checks.providers.oauth import RefreshTokenSource, TokenSource
from checks.providers.postmaster import PostmasterSettings
from tests.fixtures.http_providers import COMPLIANCE_V2, POSTMASTER, ProviderServer
from tests.helpers import NBSP, english_words

NOW = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def ctx() -> AsyncIterator[CheckContext]:
    context = CheckContext(resolver=Resolver(["127.0.0.1"]), timeout=0.5, clock=lambda: NOW)
    yield context
    await context.aclose()


def fixed(token: str) -> TokenSource:
    async def source() -> str:
        return token

    return source


def settings(server: ProviderServer, token: str = "good", api: str = "v2") -> PostmasterSettings:
    domains = ("example.org", "quiet.example")
    return PostmasterSettings(domains, fixed(token), base_url=server.postmaster, api=api)


def by_subject(findings: list[Finding]) -> dict[str, Finding]:
    return {f.subject: f for f in findings}


# -- v2 -----------------------------------------------------------------------------------------------------------


async def test_v2_latest_day_over_pages(providers: ProviderServer, ctx: CheckContext) -> None:
    before = len(providers.log)
    found = by_subject(await postmaster.check(settings(providers), ctx, ["example.org"]))
    queries = [line for line in providers.log[before:] if line.endswith("domainStats:query")]
    assert len(queries) >= 3  # 2 days x 17 metrics, in pages of 7 stats: the client followed nextPageToken
    spam = found["example.org spam rate"]
    assert (spam.status, spam.code, spam.evidence["day"]) == (Status.FAIL, "gmail-spam-high", "2026-07-03")
    auth = found["example.org authentication"]
    assert (auth.status, auth.code) == (Status.WARN, "gmail-auth-low")
    assert "SPF 80.00%" in auth.summary and "DKIM 99.00%" in auth.summary and "SPF" in auth.advice
    assert found["example.org TLS"].code == "gmail-tls-low" and "90.00%" in found["example.org TLS"].summary
    errors = found["example.org delivery errors"]
    assert errors.code == "gmail-errors-spike" and "low_ip_reputation, reject" in errors.summary
    assert errors.evidence["classes"] == {"reject": 0.12, "temp_fail": 0.01}


async def test_v2_spam_thresholds() -> None:
    base = PostmasterSettings(("d",), fixed("x"))
    for rate, code, status in (
        (0.0005, "gmail-spam-ok", Status.OK),
        (0.001, "gmail-spam-elevated", Status.WARN),
        (0.0029, "gmail-spam-elevated", Status.WARN),
        (0.003, "gmail-spam-high", Status.FAIL),
    ):
        day = postmaster.DomainDay(date(2026, 7, 3), (("spam_rate", rate),))
        [spam] = postmaster.day_findings("d", day, base, NOW)
        assert (spam.code, spam.status) == (code, status), rate


async def test_v2_compliance_rows(providers: ProviderServer, ctx: CheckContext) -> None:
    found = by_subject(await postmaster.check(settings(providers), ctx, ["example.org"]))
    assert found["example.org compliance spf"].status is Status.OK
    align = found["example.org compliance dmarc_alignment"]
    assert (align.status, align.code) == (Status.WARN, "gmail-needs-work")
    assert "DMARC alignment" in align.summary and "DKIM d=" in align.advice
    unsub = found["example.org compliance one_click_unsubscribe"]
    assert "no one-click unsubscribe" in unsub.summary and "RFC 8058" in unsub.advice
    assert unsub.evidence["reason"] == "NO_UNSUB_GENERAL"
    rows = postmaster.parse_compliance(COMPLIANCE_V2["example.org"])
    assert [r.requirement for r in rows] == ["SPF", "DMARC_ALIGNMENT", "ONE_CLICK_UNSUBSCRIBE"]


async def test_v2_batch_for_several_domains(providers: ProviderServer, ctx: CheckContext) -> None:
    before = len(providers.log)
    found = by_subject(await postmaster.check(settings(providers), ctx, ["example.org", "warm.example"]))
    assert "POST /gpt/v2/domainStats:batchQuery" in providers.log[before:]
    assert found["warm.example spam rate"].code == "gmail-spam-elevated"
    assert found["example.org spam rate"].code == "gmail-spam-high"
    assert found["warm.example compliance dkim"].status is Status.OK


async def test_v2_unverified_domain_is_permission_denied(providers: ProviderServer, ctx: CheckContext) -> None:
    found = by_subject(await postmaster.check(settings(providers), ctx, ["quiet.example", "stranger.example"]))
    stranger = found["stranger.example postmaster"]
    assert (stranger.status, stranger.code) == (Status.UNKNOWN, "postmaster-http-403")
    assert "PERMISSION_DENIED" in stranger.summary and "not verified" in stranger.summary
    assert found["stranger.example compliance"].code == "postmaster-http-403"
    assert {f.status for s, f in found.items() if s.startswith("quiet.example")} == {Status.OK}


async def test_v2_a_domain_refused_inside_the_batch(providers: ProviderServer, ctx: CheckContext) -> None:
    found = by_subject(await postmaster.check(settings(providers), ctx, ["quiet.example", "other.partial"]))
    refused = found["other.partial postmaster"]
    assert (refused.code, refused.evidence["status"]) == ("postmaster-http-403", "PERMISSION_DENIED")
    assert found["quiet.example spam rate"].status is Status.OK


async def test_v2_empty_range_is_no_data(providers: ProviderServer) -> None:
    later = CheckContext(resolver=Resolver(["127.0.0.1"]), timeout=0.5, clock=lambda: datetime(2026, 9, 1, tzinfo=UTC))
    try:
        found = by_subject(await postmaster.check(settings(providers), later, ["example.org"]))
        [empty] = [
            f for f in await postmaster.check(settings(providers), later, ["empty.example"]) if "compl" not in f.subject
        ]
    finally:
        await later.aclose()
    assert (found["example.org postmaster"].status, found["example.org postmaster"].code) == (
        Status.UNKNOWN,
        "postmaster-no-data",
    )
    assert empty.code == "postmaster-no-data"


async def test_v2_refused_and_hanging(providers: ProviderServer, ctx: CheckContext) -> None:
    found = await postmaster.check(settings(providers, "wrong-token"), ctx, ["example.org"])
    assert {f.code for f in found} == {"postmaster-http-401"}
    assert all("wrong-token" not in json.dumps(f.to_json()) for f in found)
    hung = await postmaster.check(settings(providers, "hang"), ctx, ["example.org"])
    assert {(f.status, f.code) for f in hung} == {(Status.UNKNOWN, "postmaster-unreachable")}


async def test_v2_invalid_grant_names_the_testing_expiry(
    providers: ProviderServer, ctx: CheckContext, tmp_path: Path
) -> None:
    source = RefreshTokenSource(
        ctx.http, tmp_path, "client", token_url=providers.token_url, seed=lambda: "revoked", client_secret=lambda: "s"
    )
    config = PostmasterSettings(("example.org",), source, base_url=providers.postmaster)
    [finding] = await postmaster.check(config, ctx)
    assert (finding.status, finding.code) == (Status.UNKNOWN, "postmaster-invalid-grant")
    assert "invalid_grant" in finding.summary and '"Testing"' in finding.advice and "7 days" in finding.advice
    assert "revoked" not in json.dumps(finding.evidence)


async def test_v2_refresh_token_sends_client_secret(
    providers: ProviderServer, ctx: CheckContext, tmp_path: Path
) -> None:
    providers.refresh_tokens["google-seed"] = "google-next"
    source = RefreshTokenSource(
        ctx.http,
        tmp_path,
        "client",
        token_url=providers.token_url,
        seed=lambda: "google-seed",
        client_secret=lambda: "s",
    )
    assert await source() == "fresh-access"
    assert "google-next" in (tmp_path / "oauth.json").read_text()


async def test_v2_summaries_and_advice_in_the_operators_language(providers: ProviderServer, ctx: CheckContext) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    domains = ["example.org", "stranger.example"]
    english = by_subject(await postmaster.check(settings(providers), ctx, domains))
    with use_language("es"):
        found = by_subject(await postmaster.check(settings(providers), ctx, domains))
    spam = found["example.org spam rate"]
    # Percentages as Spanish writes them (Babel): a decimal comma and a no-break space before the sign.
    assert spam.summary.replace(NBSP, " ") == (
        "Los usuarios de Gmail marcaron como correo no deseado el 0,40 % del correo de example.org el 2026-07-03"
    )
    assert spam.advice.replace(NBSP, " ").startswith("Por encima del límite del 0,3 % de Google: Gmail puede rechazar")
    assert found["example.org authentication"].summary.replace(NBSP, " ") == (
        "example.org el 2026-07-03: pasaron SPF 80,00 %, DKIM 99,00 %, DMARC 99,00 %"
    )
    assert "0,40\N{NO-BREAK SPACE}%" in spam.summary
    errors = found["example.org delivery errors"].summary
    assert errors.endswith("del correo de example.org el 2026-07-03 (sobre todo low_ip_reputation, reject)")
    unsub = found["example.org compliance one_click_unsubscribe"]
    assert unsub.summary == (
        "Gmail: example.org debe mejorar el requisito de baja con un clic: "
        "la mayoría de los mensajes no tienen baja con un clic"
    )
    assert "el dominio no está verificado" in found["stranger.example postmaster"].summary
    for subject, finding in found.items():
        assert not english_words(f"{finding.summary} {finding.advice}"), (subject, finding.summary, finding.advice)
        mine = english[subject]
        assert (finding.code, finding.status, finding.evidence) == (mine.code, mine.status, mine.evidence)
    assert "needs work on one-click unsubscribe" in english["example.org compliance one_click_unsubscribe"].summary
    assert english_words(english["example.org spam rate"].summary)  # and the test does see English


async def test_v1_summaries_in_the_operators_language(providers: ProviderServer, ctx: CheckContext) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    with use_language("es"):
        found = by_subject(await postmaster.check(settings(providers, api="v1"), ctx))
    assert found["example.org reputation"].summary == "Gmail califica example.org como LOW el 2026-07-03"
    assert found["example.org IP reputation"].summary == "Gmail califica las IP 192.0.2.10 como BAD el 2026-07-03"
    for subject, finding in found.items():
        assert not english_words(f"{finding.summary} {finding.advice}"), (subject, finding.summary)


# -- v1 (deprecated, api = "v1") ------------------------------------------------------------------------------------


def test_v1_latest_day_is_parsed() -> None:
    stats = postmaster_v1.parse_traffic_stats(json.dumps({"trafficStats": POSTMASTER["example.org"]}))
    assert stats is not None
    assert (stats.day, stats.domain_reputation, stats.spam_ratio) == ("20260703", "LOW", 0.004)
    assert stats.ip_reputations[0] == ("BAD", ("192.0.2.10",))
    assert stats.error_ratio == pytest.approx(0.12)
    assert postmaster_v1.parse_traffic_stats("{}") is None


async def test_v1_drop_and_spike(providers: ProviderServer, ctx: CheckContext) -> None:
    found = by_subject(await postmaster.check(settings(providers, api="v1"), ctx))
    assert (found["example.org reputation"].status, found["example.org reputation"].code) == (Status.WARN, "gmail-low")
    assert found["example.org IP reputation"].status is Status.FAIL
    assert "192.0.2.10" in found["example.org IP reputation"].summary
    assert found["example.org spam rate"].code == "gmail-spam-high"
    assert found["example.org delivery errors"].code == "gmail-errors-spike"
    assert "SUSPECTED_SPAM" in found["example.org delivery errors"].summary
    assert {f.status for s, f in found.items() if s.startswith("quiet.example")} == {Status.OK}


async def test_v1_no_data_unverified_and_bad_token(providers: ProviderServer, ctx: CheckContext) -> None:
    [empty] = await postmaster.check(settings(providers, api="v1"), ctx, ["empty.example"])
    assert (empty.status, empty.code) == (Status.UNKNOWN, "postmaster-no-data")
    [stranger] = await postmaster.check(settings(providers, api="v1"), ctx, ["stranger.example"])
    assert stranger.code == "postmaster-http-403" and "not verified" in stranger.summary
    [refused] = await postmaster.check(settings(providers, "wrong-token", "v1"), ctx, ["example.org"])
    assert refused.code == "postmaster-http-401" and "wrong-token" not in json.dumps(refused.to_json())
    [hung] = await postmaster.check(settings(providers, "hang", "v1"), ctx, ["example.org"])
    assert (hung.status, hung.code) == (Status.UNKNOWN, "postmaster-unreachable")


async def test_a_dripping_server_meets_the_whole_request_deadline(providers: ProviderServer, ctx: CheckContext) -> None:
    import time

    from checks.providers.deadline import request_deadline

    started = time.monotonic()
    found = await postmaster.check(settings(providers, "drip"), ctx, ["example.org"])
    assert found and {(f.status, f.code) for f in found} == {(Status.UNKNOWN, "postmaster-unreachable")}, found
    # Two requests one after the other (the stats, then the compliance status), each within its own deadline.
    assert time.monotonic() - started < 2 * request_deadline(ctx) + 1
