"""The monitor, driven through the real DNS check against a local DNS server whose answers change over time.

The clock is injected: each run is "30 minutes later", so a day of monitoring takes a fraction of a second.
Alerts go to a recording transport that deduplicates transaction ids the way a homeserver does.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config.loader import Config, ScheduleConfig, parse_config
from bot.monitor import collector
from bot.monitor.alerts import ALERT_GROUPS, ALERT_LINES, AlertRules, Event, digest_message, observe, render_events
from bot.monitor.core import Family, Job, Monitor, default_families
from bot.monitor.state import AlertState
from bot.monitor.store import Store
from bot.pacing import paced
from bot.render import Rendered
from bot.transports.base import Incoming
from checks import CheckContext, DnsblSettings, Finding, Report, Resolver, Status, parse_target
from checks.dnsbl.catalog import load_catalog
from tests.fixtures.dnsserver import DnsServer
from tests.helpers import ALERT_ROOM, Clock, RecordingTransport

ZONE = "zen.spamhaus.org"
IP = "192.0.2.10"
IP2 = "192.0.2.11"
ROOM = ALERT_ROOM
STEP = timedelta(minutes=30)


class Scenario:
    """One monitored world: the DNS server, the store, the monitor, the room and the clock."""

    def __init__(self, dns: DnsServer, path: Path, config: Config, transport: RecordingTransport) -> None:
        self.dns = dns
        self.path = path
        self.config = config
        self.clock = Clock(datetime(2024, 5, 1, 6, 0, tzinfo=UTC))
        self.transport = transport
        others = {zone.name for zone in load_catalog().zones} - {ZONE}
        resolver = Resolver([dns.address], timeout=0.3, cache=False)
        settings = DnsblSettings(disabled=frozenset(others))
        self.ctx = CheckContext(resolver=resolver, timeout=0.3, clock=self.clock, dnsbl=settings)
        dns.add(f"2.0.0.127.{ZONE}", "A", "127.0.0.2")  # the RFC 5782 test point: the zone works
        self.monitor = self.new_monitor()

    def new_monitor(self) -> Monitor:
        if hasattr(self, "monitor"):
            self.monitor.store.close()  # a restart: the old process let go of the state directory's lock
        families = {"blocklists": default_families(self.config)["blocklists"]}
        store = Store(self.path, clock=self.clock)
        return Monitor(self.config, store, self.transport, self.ctx, families, clock=self.clock)

    def listed(self, ip: str = IP, code: str = "127.0.0.2", reason: str = "https://check.spamhaus.org/sbl") -> None:
        name = ".".join(reversed(ip.split("."))) + f".{ZONE}"
        self.dns.set_behaviour(name, None)
        self.dns.remove(name)
        self.dns.add(name, "A", code)
        self.dns.add(name, "TXT", reason)

    def clean(self, ip: str = IP) -> None:
        name = ".".join(reversed(ip.split("."))) + f".{ZONE}"
        self.dns.set_behaviour(name, None)
        self.dns.remove(name)

    def failing(self, how: str = "servfail", ip: str = IP) -> None:
        self.dns.set_behaviour(".".join(reversed(ip.split("."))) + f".{ZONE}", how)

    async def run(self, times: int = 1) -> None:
        for _ in range(times):
            await self.monitor.run_family("blocklists")
            await self.monitor.deliver()
            self.clock.now += STEP


def make_config(tmp_path: Path, ips: Sequence[str] = (IP,), **alerts: Any) -> Config:
    return parse_config({"monitor": {"ips": list(ips)}, "alerts": alerts, "state": {"dir": str(tmp_path)}})


@pytest.fixture
def world(dns_server: DnsServer, tmp_path: Path) -> Scenario:
    return Scenario(dns_server, tmp_path / "state.json", make_config(tmp_path), RecordingTransport())


async def test_a_listing_alerts_at_once_and_the_delisting_names_its_duration(world: Scenario) -> None:
    await world.run(2)
    world.listed()
    await world.run(3)
    world.clean()
    await world.run(2)
    texts = world.transport.texts()
    assert len(texts) == 2, texts
    assert f"{IP}: new listing on {ZONE}" in texts[0]
    assert "check.spamhaus.org" in texts[0]  # the delisting advice
    assert f"{IP}: delisted from {ZONE} after 1 h 30 min" in texts[1]


async def test_a_single_flap_says_nothing(dns_server: DnsServer, tmp_path: Path) -> None:
    config = make_config(tmp_path, immediate_new_listing=False)
    world = Scenario(dns_server, tmp_path / "state.json", config, RecordingTransport())
    await world.run(2)
    world.listed()
    await world.run(1)
    world.clean()
    await world.run(3)
    world.listed()
    await world.run(2)  # now it holds for two runs: one alert
    world.clean()
    await world.run(1)
    world.listed()
    await world.run(2)  # a one-run gap in a listing is not a delisting
    texts = world.transport.texts()
    assert len(texts) == 1, texts
    assert "new listing" in texts[0]


async def test_unknown_is_neither_a_recovery_nor_a_problem(world: Scenario) -> None:
    await world.run(2)
    world.failing("servfail")
    await world.run(2)
    world.clean()
    await world.run(1)
    world.listed()
    await world.run(1)
    world.failing("timeout")
    await world.run(1)
    world.failing("refused")
    await world.run(1)
    world.listed()
    await world.run(2)
    texts = world.transport.texts()
    assert len(texts) == 1, texts
    assert "new listing" in texts[0]


async def test_a_long_run_of_unknowns_says_cannot_check_once_then_checking_again(world: Scenario) -> None:
    await world.run(2)
    world.failing("servfail")
    await world.run(8)  # 4 hours: past the 2 h threshold
    world.clean()
    await world.run(2)
    texts = world.transport.texts()
    assert len(texts) == 2, texts
    assert f"cannot check dnsbl {IP} ({ZONE}) since 2024-05-01 07:00" in texts[0]
    assert "SERVFAIL" in texts[0]
    assert f"checking dnsbl {IP} ({ZONE}) again after 4 h" in texts[1]


async def test_a_changed_listing_reason_is_news_once_it_holds(world: Scenario) -> None:
    world.listed(code="127.0.0.2")
    await world.run(2)
    world.listed(code="127.0.0.4", reason="https://check.spamhaus.org/xbl")
    await world.run(3)
    texts = world.transport.texts()
    assert len(texts) == 2, texts
    assert "answers was 127.0.0.2, now 127.0.0.4" in texts[1]


async def test_changes_of_one_run_are_grouped_into_one_message(dns_server: DnsServer, tmp_path: Path) -> None:
    config = make_config(tmp_path, ips=(IP, IP2))
    world = Scenario(dns_server, tmp_path / "state.json", config, RecordingTransport())
    await world.run(2)
    world.listed(IP)
    world.listed(IP2)
    await world.run(1)
    texts = world.transport.texts()
    assert len(texts) == 1 and texts[0].startswith("repbot: 2 changes")
    assert f"{IP}: new listing" in texts[0] and f"{IP2}: new listing" in texts[0]


async def test_a_run_of_many_new_listings_says_them_by_zone(dns_server: DnsServer, tmp_path: Path) -> None:
    ips = [f"192.0.2.{number}" for number in range(1, ALERT_LINES + 11)]
    world = Scenario(dns_server, tmp_path / "state.json", make_config(tmp_path, ips=ips), RecordingTransport())
    await world.run(2)
    for ip in ips:
        world.listed(ip)
    await world.run(1)
    [text] = world.transport.texts()
    lines = text.splitlines()
    assert lines[0] == f"repbot: {len(ips)} changes" and "grouped by kind" in lines[1]
    assert lines[2] == f"problem: {len(ips)} on {len(ips)} targets"
    assert f"new listing on {ZONE}" in lines[3] and lines[3].endswith(f"(and {len(ips) - 1} more like it)")
    assert lines[4].startswith("    → ") and len(lines) == 5
    assert len(world.monitor.store.history()) == len(ips)  # the history keeps each one


def _event(target: str, check: str, code: str, kind: str = "problem", subject: str = "") -> Event:
    status = "ok" if kind == "resolved" else "fail"
    return Event(kind, target, check, subject or target, status, f"{code} on {target}", advice=f"fix {code}", code=code)


def test_an_alert_of_thousands_of_changes_is_a_line_per_kind_of_change() -> None:
    ips = [f"10.20.{number // 256}.{number % 256}" for number in range(4_096)]
    domains = [f"d{number}.example" for number in range(200)]
    events = [_event(ip, "ptr", "missing") for ip in ips]
    events += [_event(domain, check, check) for domain in domains for check in ("dkim", "mta-sts", "tlsrpt")]
    events += [_event(ip, "dnsbl", "listed", subject=zone) for ip in ips[:3] for zone in ("zen", "spamcop")]
    events += [_event(domain, "spf", "pass", kind="resolved") for domain in domains[:2]]
    rendered = render_events(events)
    lines = rendered.plain.splitlines()
    assert lines[0] == "repbot: 4,704 changes"
    assert lines[2] == "problem: 4,702 on 4,296 targets"
    assert lines[3] == f"  ✗ ptr {ips[0]}: fail — missing on {ips[0]} (and 4,095 more like it)"
    assert lines[4] == "    → fix missing"
    assert "  ✗ 10.20.0.0: new listing on zen — listed on 10.20.0.0 (and 2 more like it)" in lines
    assert "resolved: 2 on 2 targets" in lines
    assert len(lines) == 3 + 2 * 6 + 2 * 1, lines  # the head, each kind and its groups with their advice
    assert rendered.html.count("<br/>") < 40


def test_a_grouped_alert_shows_the_largest_groups_and_counts_the_rest() -> None:
    events = [_event(f"d{n}.example", "dmarc", f"code{n % (ALERT_GROUPS + 5)}") for n in range(ALERT_GROUPS * 10)]
    lines = render_events(events).plain.splitlines()
    groups = [line for line in lines if line.startswith("  ✗")]
    assert len(groups) == ALERT_GROUPS
    assert lines[-1] == "  … and 40 more of 5 other kinds"  # 5 codes of 8 events each did not fit


def test_a_digest_of_thousands_of_problems_is_a_line_per_kind() -> None:
    now = datetime(2024, 5, 2, 6, 0, tzinfo=UTC)
    since = (now - timedelta(days=1)).isoformat()

    def wrong(target: str, check: str, subject: str) -> AlertState:
        return AlertState(f"{target}|{check}|{subject}", target, check, subject, "fail", since=since, summary="bad")

    states = [wrong(f"10.20.{n // 256}.{n % 256}", "ptr", f"10.20.{n // 256}.{n % 256}") for n in range(4_096)]
    states += [wrong(f"d{n}.example", "dkim", "default") for n in range(200)]
    lines = digest_message(states, [], now).plain.splitlines()
    assert lines[0] == "repbot daily digest: 4,296 problem(s), 0 change(s) in 24 h"
    assert lines[1:] == [
        "✗ 10.20.0.0 ptr 10.20.0.0 for 1 d: bad (and 4,095 more like it)",
        "✗ d0.example dkim default for 1 d: bad (and 199 more like it)",
    ]


async def test_full_collections_wait_for_the_end_of_a_run_and_the_stop_gives_them_back(world: Scenario) -> None:
    before = gc.get_threshold()
    await world.monitor.start(schedule=False)
    try:
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] == collector.NEVER
        await world.run(1)
        assert gc.get_freeze_count() > 0  # what the run left is out of the collector's sight
    finally:
        await world.monitor.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_paced_work_gives_the_loop_turns_between_its_items() -> None:
    seen: list[str] = []

    async def other() -> None:
        for _ in range(3):
            seen.append("other")
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)  # the other task starts
    async for item in paced(range(3), step=0):  # a turn after every item
        seen.append(f"item {item}")
    await task
    assert seen == ["other", "item 0", "other", "item 1", "other", "item 2"]
    assert [item async for item in paced(iter(range(5)))] == [0, 1, 2, 3, 4]  # in order, every one


def test_the_full_collection_waits_for_the_last_of_the_runs_under_way() -> None:
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    collector.take_over()
    gc.callbacks.append(count)
    try:
        collector.run_begins()  # blocklists: its findings so far are alive until it ends
        collector.run_begins()  # domains
        collector.after_run()  # domains ends first: walking blocklists' findings now would stall the loop
        assert full == []
        collector.after_run()
        assert full == [1]
        collector.run_begins()  # a family that never ends (one always under way) still gets collected
        for _ in range(collector.MAX_DEFERRED):
            collector.run_begins()
            collector.after_run()
        assert full == [1, 1]
    finally:
        gc.callbacks.remove(count)
        collector.after_run()
        collector.give_back()


async def test_a_muted_alert_is_recorded_but_not_posted(world: Scenario) -> None:
    await world.run(2)
    world.monitor.store.mute(ZONE, (world.clock.now + timedelta(hours=1)).isoformat())
    world.listed()
    await world.run(1)
    assert world.transport.texts() == []
    history = world.monitor.store.history(target=IP)
    assert [(entry.kind, entry.muted) for entry in history] == [("problem", True)]
    world.clean()
    await world.run(4)  # the mute has expired by now: the delisting is posted
    assert len(world.transport.texts()) == 1 and "delisted" in world.transport.texts()[0]


async def test_the_outbox_retries_across_an_outage_and_a_restart(world: Scenario) -> None:
    await world.run(2)
    world.transport.refuse = 3
    world.listed()
    await world.run(1)
    assert world.transport.posted == []
    pending = world.monitor.store.pending()
    assert len(pending) == 1 and pending[0].attempts == 1
    world.monitor.store.close()
    world.monitor = world.new_monitor()  # a restart: the alert is still there
    world.monitor.store.retry_later(pending[0].id, 1, 0.0)
    world.monitor.retry_max = 0.05
    await world.monitor.start(schedule=False)
    try:
        for _ in range(100):
            if world.transport.posted:
                break
            await asyncio.sleep(0.02)
    finally:
        await world.monitor.stop()
    assert len(world.transport.texts()) == 1 and "new listing" in world.transport.texts()[0]
    assert world.monitor.store.pending() == []


async def test_a_crash_after_sending_does_not_post_twice(world: Scenario) -> None:
    await world.run(2)
    world.listed()
    await world.monitor.run_family("blocklists")
    item = world.monitor.store.pending()[0]
    # The homeserver took it, then the process died before the outbox was updated.
    from bot.monitor.core import _txn_id

    await world.transport.send(ROOM, Rendered(item.plain, item.html), txn_id=_txn_id(item.id, ROOM))
    world.monitor = world.new_monitor()
    await world.monitor.deliver()
    assert len(world.transport.posted) == 1
    assert world.monitor.store.pending() == []


async def test_a_corrupt_state_file_is_reported_in_the_room(world: Scenario) -> None:
    world.monitor.store.close()
    world.path.write_text('{"state": {"1": ')
    world.monitor = world.new_monitor()
    await world.monitor.start(schedule=False)
    await world.monitor.deliver()
    await world.monitor.stop()
    texts = world.transport.texts()
    assert len(texts) == 1 and "state file was unreadable" in texts[0] and ".corrupt-" in texts[0]


async def test_the_digest_says_all_clear_or_what_is_wrong_once_a_day(world: Scenario) -> None:
    await world.run(2)
    assert world.monitor.digest() is not None
    assert world.monitor.digest() is None  # once a day
    await world.monitor.deliver()
    assert world.transport.texts()[-1].startswith("✓ repbot daily digest: all clear (1 checks on 1 targets)")
    world.listed()
    await world.run(2)
    world.clock.now += timedelta(days=1)
    world.monitor.digest()
    await world.monitor.deliver()
    digest = world.transport.texts()[-1]
    assert "1 problem(s)" in digest and f"{IP} dnsbl {ZONE} for 1 d 1 h" in digest


async def test_the_weekly_digest_posts_the_timeline_picture(dns_server: DnsServer, tmp_path: Path) -> None:
    config = parse_config(
        {
            "monitor": {"ips": [IP]},
            "state": {"dir": str(tmp_path)},
            "digest": {"timeline_weekday": "Wednesday"},  # the scenario clock starts on Wednesday 2024-05-01
        }
    )
    world = Scenario(dns_server, tmp_path / "state.json", config, RecordingTransport())
    await world.run(2)
    world.monitor.digest()
    await world.monitor.deliver()
    await world.monitor.deliver()
    assert [room for room, _ in world.transport.images] == [ROOM]
    assert world.transport.images[0][1].startswith(b"\x89PNG\r\n\x1a\n")
    assert world.transport.texts()[-1].startswith("✓ repbot daily digest")
    world.clock.now += timedelta(days=1)  # Thursday: the digest alone
    world.monitor.digest()
    await world.monitor.deliver()
    assert len(world.transport.images) == 1
    assert [text[:22] for text in world.transport.texts()] == ["✓ repbot daily digest:"] * 2


async def test_the_scheduler_runs_each_family_once_soon_after_start(world: Scenario) -> None:
    schedule = ScheduleConfig(intervals={"blocklists": timedelta(hours=1)}, first_run=timedelta(seconds=0))
    world.monitor.config = replace(world.config, schedule=schedule)
    await world.monitor.start()
    try:
        jobs = {job.id: job for job in world.monitor._scheduler.get_jobs()}
        assert set(jobs) == {"blocklists", "digest"}
        job = jobs["blocklists"]
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)
        for _ in range(100):
            if world.monitor.store.get_meta("last_run:blocklists"):
                break
            await asyncio.sleep(0.05)
        assert world.monitor.store.get_meta("last_run:blocklists") is not None
    finally:
        await world.monitor.stop()


async def test_stop_cancels_and_awaits_the_runs_in_flight(world: Scenario) -> None:
    started, cleaned = asyncio.Event(), []

    async def stuck(ctx: CheckContext) -> list[Report]:
        started.set()
        try:
            await asyncio.Event().wait()  # a run that would outlive the bot
        finally:
            cleaned.append("run ended")
        return []

    world.monitor.families["stuck"] = Family("stuck", stuck, timedelta(hours=1))
    world.monitor._locks["stuck"] = asyncio.Lock()
    await world.monitor.start(schedule=False)
    asked = asyncio.create_task(world.monitor.run_family("stuck"))  # as !run does
    await started.wait()
    await world.monitor.stop()
    assert cleaned == ["run ended"]  # before stop returned: the store can be closed now
    with pytest.raises(asyncio.CancelledError):
        await asked
    assert world.monitor.store.get_meta("last_run:stuck") is None


async def test_other_jobs_run_on_the_same_scheduler_and_stop_with_it(
    world: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ran, cleaned = asyncio.Event(), []

    async def job() -> None:
        ran.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("job ended")

    schedule = ScheduleConfig(intervals={}, first_run=timedelta(seconds=0))
    world.monitor.config = replace(world.config, schedule=schedule)
    world.monitor.families.clear()
    world.monitor.add_job(Job("canary", timedelta(hours=6), job))  # before start
    await world.monitor.start()
    world.monitor.add_job(Job("later", timedelta(hours=6), job))  # after start, as the runtime's canary runner does
    try:
        jobs = {item.id: item for item in world.monitor._scheduler.get_jobs()}
        assert set(jobs) == {"canary", "later", "digest"}
        assert (jobs["canary"].coalesce, jobs["canary"].max_instances) == (True, 1)
        await asyncio.wait_for(ran.wait(), 5)
    finally:
        await world.monitor.stop()
    assert cleaned and set(cleaned) == {"job ended"}
    await asyncio.sleep(0.05)  # the scheduler's own task for the job ends after the job
    # A job that stop cancelled ends quietly: no traceback at every restart.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert "job was stopped before it ended" in caplog.text


def _finding(status: Status, **evidence: Any) -> Finding:
    return Finding("mx-tls", "mx.example.org", status, "certificate", evidence, code=status.value)


def test_evidence_inside_the_same_status_matters_only_for_what_operators_care_about() -> None:
    rules = AlertRules(confirm=1)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    state, events = observe(None, "example.org", _finding(Status.OK, days_left=60, serial="1"), now, rules)
    assert events == []
    state, events = observe(state, "example.org", _finding(Status.OK, days_left=59, serial="2"), now, rules)
    assert events == []  # a day less, another serial: no news
    state, events = observe(state, "example.org", _finding(Status.OK, days_left=20), now, rules)
    assert [event.detail for event in events] == ["certificate expiry is now near"]
    state, events = observe(state, "example.org", _finding(Status.OK, policy_hash="a", policy_id="1"), now, rules)
    state, events = observe(state, "example.org", _finding(Status.OK, policy_hash="b", policy_id="1"), now, rules)
    assert [event.detail for event in events] == ["policy changed but its id did not"]


async def _command(world: Scenario, line: str) -> str:
    from bot.commands.catalog import REGISTRY
    from bot.commands.registry import Call, Invocation, Services

    parsed = REGISTRY.parse(line)
    assert isinstance(parsed, Invocation), parsed
    services = Services(world.config, world.ctx, world.transport, REGISTRY, world.clock(), monitor=world.monitor)
    reply = await parsed.command.handler(
        Call(Incoming(ROOM, "@admin:localhost", line), parsed.command, parsed.args, services)
    )
    assert reply is not None
    return reply.plain


async def test_the_room_commands_read_and_steer_the_monitor(world: Scenario) -> None:
    assert "no results yet" in await _command(world, "!status")
    assert await _command(world, "!run") == "ran blocklists: no change"
    world.listed()
    assert "1 change(s)" in await _command(world, "!run blocklists")
    status = await _command(world, "!status")
    assert f"✗ {IP}: fail, 1 checks, last run 0 s ago" in status and f"dnsbl {ZONE} for 0 s" in status
    assert "new listing" not in await _command(world, f"!history {IP}")
    assert "problem dnsbl zen.spamhaus.org" in await _command(world, f"!history {IP} dnsbl")
    assert "muted zen.spamhaus.org until 2024-05-01 08:00 UTC" in await _command(world, "!mute zen.spamhaus.org 2h")
    assert "muted: zen.spamhaus.org until 2024-05-01 08:00" in await _command(world, "!status")
    assert await _command(world, "!unmute zen.spamhaus.org") == "unmuted zen.spamhaus.org"
    assert "no job 'snds'" in await _command(world, "!run snds")
    from bot.commands.registry import REGISTRY, ParseFailure

    assert isinstance(REGISTRY.parse("!mute dkim soon"), ParseFailure)  # a duration the parser refuses


def _lie(dns: DnsServer, how: str | None) -> None:
    """Make the whole DNS tree lie: "nxdomain" for every name, the root included; None to stop."""
    for name in (".", "*."):
        dns.set_behaviour(name, how)


async def test_a_lying_resolver_is_said_once_and_never_delists(world: Scenario) -> None:
    await world.run(2)
    world.listed()
    await world.run(2)
    _lie(world.dns, "nxdomain")
    await world.run(6)
    _lie(world.dns, None)
    await world.run(2)
    texts = world.transport.texts()
    assert len(texts) == 3, texts
    assert "new listing" in texts[0]
    resolver = world.dns.address
    assert texts[1] == f"? cannot check: the resolver at {resolver} answers NXDOMAIN for names that exist. " + (
        "No blocklist, SPF, DKIM or DMARC verdict is drawn from it."
    )
    assert texts[2] == f"✓ the resolver at {resolver} answers truthfully again: checking again."
    assert not any("delisted" in text for text in texts)


async def test_a_resolver_that_rewrites_nxdomain_lists_nothing(world: Scenario) -> None:
    await world.run(2)
    world.dns.add("*.", "A", "192.0.2.80")  # the advertising page, for every name that does not exist
    await world.run(3)
    texts = world.transport.texts()
    assert len(texts) == 1, texts
    assert "NXDOMAIN rewriting" in texts[0] and "listing" not in texts[0]


async def test_status_after_one_run_says_pending_confirmation(dns_server: DnsServer, tmp_path: Path) -> None:
    config = make_config(tmp_path, immediate_new_listing=False)
    world = Scenario(dns_server, tmp_path / "state.json", config, RecordingTransport())
    world.listed()
    await world.run(1)
    status = await _command(world, "!status")
    assert f"✗ {IP}: fail, pending confirmation (1 of 2 runs), 1 checks" in status, status
    assert f"    ✗ dnsbl {ZONE}: fail, pending confirmation (1 of 2 runs): listed" in status, status
    assert "unknown" not in status
    await world.run(1)
    status = await _command(world, "!status")
    assert f"✗ {IP}: fail, 1 checks" in status and "pending" not in status, status


async def test_only_a_run_of_dns_checks_says_the_resolver_is_honest_again(world: Scenario) -> None:
    _lie(world.dns, "nxdomain")
    await world.run(1)
    snds = Finding("snds", IP, Status.OK, "GREEN", {}, code="snds-green", observed_at=world.clock.now)
    world.monitor.process([Report(parse_target(IP), (snds,))])  # another family's run, while the resolver lies
    await world.monitor.deliver()
    texts = world.transport.texts()
    assert len(texts) == 1 and "cannot check: the resolver" in texts[0], texts


def _spf(code: str, status: Status, summary: str, **evidence: Any) -> Finding:
    return Finding("spf", "example.org", status, summary, evidence, code=code)


async def test_findings_of_one_check_about_one_subject_share_a_state_and_its_problems_are_said(
    world: Scenario,
) -> None:
    # SPF says several things of one domain under the domain's name. Kept apart, each overwrote the other's state
    # at every run, and the warning never held for the two runs that confirm it.
    domain = parse_target("example.org")
    record = _spf("record", Status.OK, "v=spf1 mx -all", record="v=spf1 mx -all")
    too_many = _spf("lookups", Status.WARN, "11 DNS lookups (limit 10)", lookups=11)
    no_all = _spf("no-all", Status.WARN, "the record has no 'all'")
    kinds = []
    for findings in ([record, too_many], [record, too_many], [record, too_many, no_all], [record, too_many, no_all],
                     [record], [record]):  # fmt: skip
        events = world.monitor.process([Report(domain, tuple(findings))])
        kinds.append([(event.kind, event.status) for event in events])
        world.clock.now += STEP
    assert kinds[0] == [] and kinds[1] == [("problem", "warn")]  # confirmed on its second run, as any problem
    assert kinds[3] == [("evidence", "warn")]  # another of them going wrong is news
    assert kinds[5] == [("resolved", "ok")]
    [state] = [s for s in world.monitor.store.states() if s.check == "spf"]
    assert state.status == "ok" and state.summary == "v=spf1 mx -all"
