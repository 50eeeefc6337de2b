"""Google Postmaster Tools v1 against the local provider server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from checks import CheckContext, Resolver, Status
from checks.providers import postmaster
from checks.providers.postmaster import PostmasterSettings
from tests.fixtures.http_providers import POSTMASTER, ProviderServer

NOW = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def ctx() -> AsyncIterator[CheckContext]:
    context = CheckContext(resolver=Resolver(["127.0.0.1"]), timeout=0.5, clock=lambda: NOW)
    yield context
    await context.aclose()


def settings(server: ProviderServer, token: str = "good") -> PostmasterSettings:
    return PostmasterSettings(("example.org", "quiet.example"), lambda: token, base_url=server.postmaster)


def test_latest_day_is_parsed() -> None:
    stats = postmaster.parse_traffic_stats(json.dumps({"trafficStats": POSTMASTER["example.org"]}))
    assert stats is not None
    assert (stats.day, stats.domain_reputation, stats.spam_ratio) == ("20260703", "LOW", 0.004)
    assert stats.ip_reputations[0] == ("BAD", ("192.0.2.10",))
    assert stats.error_ratio == pytest.approx(0.12)
    assert postmaster.parse_traffic_stats("{}") is None


async def test_drop_and_spike(providers: ProviderServer, ctx: CheckContext) -> None:
    found = {f.subject: f for f in await postmaster.check(settings(providers), ctx)}
    assert (found["example.org reputation"].status, found["example.org reputation"].code) == (Status.WARN, "gmail-low")
    assert found["example.org IP reputation"].status is Status.FAIL
    assert "192.0.2.10" in found["example.org IP reputation"].summary
    assert found["example.org spam rate"].code == "gmail-spam-high"
    assert found["example.org delivery errors"].code == "gmail-errors-spike"
    assert "SUSPECTED_SPAM" in found["example.org delivery errors"].summary
    assert {f.status for s, f in found.items() if s.startswith("quiet.example")} == {Status.OK}


async def test_no_data_unverified_and_bad_token(providers: ProviderServer, ctx: CheckContext) -> None:
    [empty] = await postmaster.check(settings(providers), ctx, ["empty.example"])
    assert (empty.status, empty.code) == (Status.UNKNOWN, "postmaster-no-data")
    [stranger] = await postmaster.check(settings(providers), ctx, ["stranger.example"])
    assert stranger.code == "postmaster-http-403" and "not verified" in stranger.summary
    [refused] = await postmaster.check(settings(providers, "wrong-token"), ctx, ["example.org"])
    assert refused.code == "postmaster-http-401" and "wrong-token" not in json.dumps(refused.to_json())


async def test_hanging_server_is_unknown(providers: ProviderServer, ctx: CheckContext) -> None:
    [hung] = await postmaster.check(settings(providers, "hang"), ctx, ["example.org"])
    assert (hung.status, hung.code) == (Status.UNKNOWN, "postmaster-unreachable")


async def test_a_dripping_server_meets_the_whole_request_deadline(providers: ProviderServer, ctx: CheckContext) -> None:
    import time

    from checks.providers.deadline import request_deadline

    started = time.monotonic()
    [slow] = await postmaster.check(settings(providers, "drip"), ctx, ["example.org"])
    assert (slow.status, slow.code) == (Status.UNKNOWN, "postmaster-unreachable")
    assert time.monotonic() - started < request_deadline(ctx) + 1
