"""The bot side of the providers: `!snds`, `!complaints`, the snds/complaints/postmaster monitor jobs, the config.

SNDS and Postmaster are the local provider server (`providers`); its answers are module data, swapped per test
with monkeypatch. Complaints come from ARF reports in the real Dovecot. The monitor runs with a recording
transport and an injected clock, as in tests/test_monitor.py.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

import bot.commands.providers  # noqa: F401  (registers the commands and the job families)
from bot.app import Bot, Permissions, RateLimiter
from bot.cli import main
from bot.commands.catalog import REGISTRY
from bot.commands.registry import Services
from bot.config.loader import Config, parse_config
from bot.monitor.core import Monitor, default_families
from bot.monitor.providers import postmaster_reports
from bot.monitor.store import Store
from bot.transports.base import Transport
from checks import CheckContext, Resolver
from tests.fixtures import http_providers
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.http_providers import ProviderServer
from tests.helpers import Clock, RecordingTransport
from tests.test_commands import ADMIN, said
from tests.test_feedback import COMPLAINANTS, assert_no_complainant, garbage, jmrp_2026, jmrp_legacy, rfc5965

NOW = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)
IP = "203.0.113.7"
ROW = "{ip},7/3/2026 12:00 AM,7/3/2026 11:59 PM,900,880,870,{colour},{rate},,,{traps},mail.example.org,,"
STEP = timedelta(hours=6)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def ctx(clock: Clock) -> AsyncIterator[CheckContext]:
    context = CheckContext(resolver=Resolver(["127.0.0.1"]), timeout=0.5, clock=clock)
    yield context
    await context.aclose()


def snds_config(tmp_path: Path, server: ProviderServer, key: str = "good", **extra: Any) -> Config:
    section = {"key": key, "legacy_base": server.snds_legacy, "days": 1, **extra}
    return parse_config(
        {"monitor": {"ips": ["192.0.2.10", "192.0.2.11"]}, "snds": section, "state": {"dir": str(tmp_path)}}
    )


async def ask(config: Config, ctx: CheckContext, *lines: str) -> list[str]:
    """Each line through the Bot as the admin; the plain replies."""
    transport = RecordingTransport()
    services = Services(config, ctx, cast(Transport, transport), REGISTRY, NOW)
    bot = Bot(services, Permissions((ADMIN,)), RateLimiter(None), REGISTRY)
    for number, line in enumerate(lines):
        await bot.handle(said(ADMIN, line, event_id=f"$cmd{number}"))
    return transport.replies


def flat(text: str) -> str:
    """The text with its line wrapping undone."""
    return " ".join(text.split())


# -- !snds ----------------------------------------------------------------------------------------------


async def test_snds_legacy_key(providers: ProviderServer, ctx: CheckContext, tmp_path: Path) -> None:
    [wrapped] = await ask(snds_config(tmp_path, providers), ctx, "!snds")
    reply = flat(wrapped)
    assert "192.0.2.10 on 2026-07-03: YELLOW" in reply
    assert "192.0.2.11 on 2026-07-03: RED, complaint rate 1.2%, 41 trap hits" in reply
    assert "Microsoft blocks 192.0.2.11: Blocked due to user complaints" in reply
    assert "key=good" not in reply


async def test_snds_api_one_ip(providers: ProviderServer, ctx: CheckContext, tmp_path: Path) -> None:
    section = {"method": "api", "token": "good", "api_base": providers.snds_api}
    config = parse_config({"monitor": {"ips": ["192.0.2.10"]}, "snds": section, "state": {"dir": str(tmp_path)}})
    [wrapped] = await ask(config, ctx, "!snds 192.0.2.11")
    reply = flat(wrapped)
    assert "192.0.2.11 on 2026-07-03: RED" in reply  # the API serves the day before the clock's
    assert "192.0.2.10 on" not in reply
    assert "Microsoft blocks 192.0.2.11" in reply


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("login", "SNDS sent an HTML page (a login page?) instead of data"),
        ("expired", "SNDS answered 404: the access key has expired"),
        ("hang", "SNDS did not answer in time"),
    ],
)
async def test_snds_trouble_is_a_plain_unknown(
    providers: ProviderServer,
    ctx: CheckContext,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    key: str,
    reason: str,
) -> None:
    [wrapped] = await ask(snds_config(tmp_path, providers, key), ctx, "!snds")
    reply = flat(wrapped)
    assert "unknown" in reply and reason in reply
    assert "Traceback" not in reply and "<html" not in reply.lower() and f"key={key}" not in reply
    assert not any(record.exc_info for record in caplog.records)


async def test_a_failing_token_command_is_a_plain_unknown(
    providers: ProviderServer, ctx: CheckContext, tmp_path: Path
) -> None:
    section = {"method": "api", "token_command": "echo oops >&2; exit 3", "api_base": providers.snds_api}
    config = parse_config({"monitor": {"ips": ["192.0.2.10"]}, "snds": section, "state": {"dir": str(tmp_path)}})
    [wrapped] = await ask(config, ctx, "!snds")
    reply = flat(wrapped)
    assert "unknown" in reply and "the token command failed: snds.token_command: exited with status 3: oops" in reply
    assert "internal error" not in reply


async def test_snds_usage_and_unconfigured(ctx: CheckContext, tmp_path: Path) -> None:
    config = parse_config({"state": {"dir": str(tmp_path)}})
    bad, missing = await ask(config, ctx, "!snds example.org", "!snds")
    assert bad == "ip: 'example.org' is not an IP address — usage: !snds [ip]"
    assert missing.startswith("SNDS is not configured")


# -- the monitor ----------------------------------------------------------------------------------------


class World:
    """One monitored provider world: the store, the monitor for one family, the alert room, the clock."""

    def __init__(self, config: Config, ctx: CheckContext, clock: Clock, family: str) -> None:
        self.transport = RecordingTransport()
        self.family = family
        families = {family: default_families(config)[family]}
        store = Store(Path(config.state_dir) / "state.json", clock=clock)
        self.monitor = Monitor(config, store, self.transport, ctx, families, clock=clock)
        self.clock = clock

    async def run(self) -> list[str]:
        """One run, then delivery; the alerts it posted."""
        before = len(self.transport.posted)
        await self.monitor.run_family(self.family)
        await self.monitor.deliver()
        self.clock.now += STEP
        return self.transport.texts()[before:]


@pytest.fixture
def snds_world(
    providers: ProviderServer, ctx: CheckContext, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[World, Any]]:
    config = parse_config(
        {
            "snds": {"key": "good", "legacy_base": providers.snds_legacy, "days": 1, "ips": [IP]},
            "state": {"dir": str(tmp_path)},
        }
    )
    world = World(config, ctx, clock, "snds")
    monkeypatch.setattr(http_providers, "SNDS_STATUS", [])

    def serve(colour: str = "GREEN", rate: str = "< 0.1%", traps: int = 0, blocked: str = "") -> None:
        row = ROW.format(ip=IP, colour=colour, rate=rate, traps=traps)
        monkeypatch.setitem(http_providers.SNDS_DATA, http_providers.SNDS_LATEST, [row])
        status = [f"{IP},{IP},Yes,{blocked}"] if blocked else []
        monkeypatch.setattr(http_providers, "SNDS_STATUS", status)

    yield world, serve


async def test_snds_colours_and_a_block_each_alert_once(snds_world: tuple[World, Any]) -> None:
    world, serve = snds_world
    serve("GREEN")
    assert await world.run() == [] and await world.run() == []  # the baseline says nothing
    serve("YELLOW")
    [yellow] = await world.run()
    assert f"snds {IP}: warn (was ok)" in yellow and "YELLOW" in yellow
    assert await world.run() == []
    serve("RED")
    [red] = await world.run()
    assert f"snds {IP}: fail (was warn)" in red and "RED: Microsoft filtered most of this mail" in red
    assert await world.run() == []
    serve("RED", blocked="Blocked due to user complaints")
    [block] = await world.run()
    assert f"snds {IP} ({IP} block): fail (was ok) — Microsoft blocks {IP}: Blocked due to user complaints" in block
    assert await world.run() == [] and await world.run() == []
    assert len(world.transport.posted) == 3


async def test_snds_key_expiry_warning_reaches_the_room_once(snds_world: tuple[World, Any], clock: Clock) -> None:
    world, serve = snds_world
    serve("GREEN")
    assert await world.run() == []  # the key is seen working: its 30 days start now
    clock.now = NOW + timedelta(days=25)  # 5 days left
    [warning] = await world.run()
    assert f"snds {IP} (SNDS key): warn (was ok)" in warning and "(in 5 days)" in warning
    assert "Automated Access" in warning
    assert await world.run() == []


async def test_snds_trap_hits_and_complaint_rate_alert(snds_world: tuple[World, Any]) -> None:
    world, serve = snds_world
    serve("GREEN")
    assert await world.run() == []
    serve("GREEN", traps=2)
    [traps] = await world.run()
    assert "warn (was ok)" in traps and "2 trap hits" in traps and "clean the list" in traps
    assert await world.run() == []
    serve("GREEN", rate="0.5%", traps=2)
    assert await world.run() == []  # still warn, for one more reason: no news
    serve("GREEN")
    [clean] = await world.run()
    assert f"snds {IP} ok again" in clean


async def test_snds_unreachable_is_unknown_not_an_alert(
    snds_world: tuple[World, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, serve = snds_world
    serve("YELLOW")
    [first] = await world.run()
    assert "warn" in first
    monkeypatch.setitem(http_providers.SNDS_DATA, http_providers.SNDS_LATEST, ["<html>login</html>"])
    assert await world.run() == []  # unparsable: unknown, neither a recovery nor a problem


# -- complaints -----------------------------------------------------------------------------------------


def feedback_config(tmp_path: Path, dovecot: DovecotServer, user: str, password: str) -> Config:
    section = {"host": dovecot.host, "port": dovecot.tls_port, "user": user, "password": password, "timeout": 5}
    return parse_config(
        {"monitor": {"domains": ["example.org"]}, "feedback": section, "state": {"dir": str(tmp_path / "state")}}
    )


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> tuple[str, str]:
    user, password = f"fbl{secrets.token_hex(4)}", secrets.token_urlsafe(10)
    dovecot.add_user(user, password)
    return user, password


@pytest.fixture
async def tls_ctx(clock: Clock, dovecot: DovecotServer) -> AsyncIterator[CheckContext]:
    context = CheckContext(resolver=Resolver(["127.0.0.1"]), timeout=5, clock=clock, ssl_context=dovecot.ssl_context())
    yield context
    await context.aclose()


async def test_a_new_complaint_alerts_once(
    dovecot: DovecotServer, mailbox: tuple[str, str], tls_ctx: CheckContext, clock: Clock, tmp_path: Path
) -> None:
    user, password = mailbox
    world = World(feedback_config(tmp_path, dovecot, user, password), tls_ctx, clock, "complaints")
    clock.now = NOW - timedelta(hours=12)
    assert await world.run() == []  # an empty mailbox: example.org has no complaints
    dovecot.deliver(user, rfc5965("03"))
    dovecot.deliver(user, garbage()["plain"])
    [first] = await world.run()
    assert "complaints example.org: warn (was ok) — new complaint: Yahoo CFL: abuse complaint" in first
    assert "Your weekly news, [redacted]" in first and "1 in the last 7 days" in first
    assert await world.run() == []  # the same complaint, next run: nothing
    dovecot.deliver(user, jmrp_2026())
    dovecot.deliver(user, jmrp_2026(None, "Summer sale"))
    dovecot.deliver(user, jmrp_legacy())
    alerts = await world.run()
    assert len(alerts) == 1  # one message for the run, a line per domain
    [again] = alerts
    assert "complaints example.org: more complaints — 2 new complaints about mail from example.org" in again
    assert "Microsoft JMRP about “July offers”; Microsoft JMRP about “Summer sale”" in again
    assert "complaints example.net: warn — new complaint: Microsoft JMRP" in again
    assert await world.run() == [] and await world.run() == []
    assert_no_complainant(*world.transport.texts())
    states = world.monitor.store.states()
    assert sorted(s.subject for s in states) == ["example.net", "example.org"]  # a state per domain, not per report
    clock.now += timedelta(days=8)
    resolved = await world.run()
    assert len(resolved) == 1 and "ok again" in resolved[0]


async def test_complaints_command_counts_per_day_and_domain(
    dovecot: DovecotServer, mailbox: tuple[str, str], tls_ctx: CheckContext, clock: Clock, tmp_path: Path
) -> None:
    user, password = mailbox
    config = feedback_config(tmp_path, dovecot, user, password)
    for raw in (rfc5965("02"), rfc5965("03"), jmrp_2026(), jmrp_legacy(), *garbage().values()):
        dovecot.deliver(user, raw)
    world = World(config, tls_ctx, clock, "complaints")
    await world.run()
    clock.now = NOW
    week, today, bad, zero = await ask(
        config, tls_ctx, "!complaints", "!complaints 2", "!complaints lots", "!complaints 0"
    )
    assert week.splitlines()[:6] == [
        "4 complaints in the last 7 days",
        "  2026-07-01: 1",
        "  2026-07-02: 1",
        "  2026-07-03: 2",
        "  example.org: 3",
        "  example.net: 1",
    ]
    assert "Yahoo CFL: abuse complaint on 2026-07-03 about “Your weekly news, [redacted]”" in week
    assert today.splitlines()[:2] == ["2 complaints in the last 2 days", "  2026-07-03: 2"]
    assert bad == "days: 'lots': give a number of days, 1 to 90 — usage: !complaints [days]"
    assert zero == "days: '0': give a number of days, 1 to 90 — usage: !complaints [days]"
    assert_no_complainant(week, today, *world.transport.texts())
    for name in COMPLAINANTS:
        assert name not in (tmp_path / "state" / "complaints.jsonl").read_text().lower()


async def test_complaints_before_the_first_run_collects_what_waits(
    dovecot: DovecotServer, mailbox: tuple[str, str], tls_ctx: CheckContext, clock: Clock, tmp_path: Path
) -> None:
    user, password = mailbox
    for raw in (rfc5965("02"), rfc5965("03")):
        dovecot.deliver(user, raw)
    clock.now = NOW
    [unread] = await ask(feedback_config(tmp_path / "a", dovecot, user, "wrong password"), tls_ctx, "!complaints")
    assert unread.startswith("nothing has been collected yet: the feedback mailbox cannot be read now:"), unread
    [week] = await ask(feedback_config(tmp_path / "b", dovecot, user, password), tls_ctx, "!complaints")
    assert week.splitlines()[0] == "2 complaints in the last 7 days", week
    [again] = await ask(feedback_config(tmp_path / "b", dovecot, user, password), tls_ctx, "!complaints")
    assert again.splitlines()[0] == "2 complaints in the last 7 days", again  # collected once, counted once


async def test_an_unreadable_mailbox_is_unknown_and_the_journal_still_counts(
    dovecot: DovecotServer, mailbox: tuple[str, str], tls_ctx: CheckContext, clock: Clock, tmp_path: Path
) -> None:
    user, password = mailbox
    dovecot.deliver(user, rfc5965("03"))
    world = World(feedback_config(tmp_path, dovecot, user, password), tls_ctx, clock, "complaints")
    [first] = await world.run()
    assert "new complaint" in first
    world.monitor.families["complaints"] = default_families(feedback_config(tmp_path, dovecot, user, "wrong password"))[
        "complaints"
    ]
    assert await world.run() == []  # unknown for now; the count stays
    states = {s.subject: s for s in world.monitor.store.states()}
    assert states["feedback mailbox"].last_status == "unknown"
    assert states["example.org"].status == "warn"


# -- postmaster -----------------------------------------------------------------------------------------


async def test_postmaster_v2_spam_and_error_spike_alert_once(
    providers: ProviderServer, ctx: CheckContext, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Today's [postmaster] section, unchanged, now reads v2.
    section = {"domains": ["example.org"], "token": "good", "base_url": providers.postmaster}
    config = parse_config({"postmaster": section, "state": {"dir": str(tmp_path)}})
    world = World(config, ctx, clock, "postmaster")
    days = http_providers.POSTMASTER_V2["example.org"]  # 2026-07-02 clean, then 2026-07-03 spam and errors
    monkeypatch.setitem(http_providers.POSTMASTER_V2, "example.org", {"2026-07-02": days["2026-07-02"]})
    [compliance] = await world.run()  # the compliance rows that need work are news from the first run
    assert "(example.org compliance dmarc_alignment): warn — Gmail: example.org needs work on DMARC" in compliance
    assert "one-click unsubscribe: most messages have no one-click unsubscribe" in flat(compliance)
    assert await world.run() == []
    monkeypatch.setitem(http_providers.POSTMASTER_V2, "example.org", days)
    [drop] = await world.run()
    assert "postmaster example.org (example.org spam rate): fail (was ok) — Gmail users reported 0.40%" in drop
    assert "(example.org delivery errors): warn (was ok) — Gmail rejected 12.00%" in drop
    assert "(example.org authentication): warn (was ok)" in drop
    assert await world.run() == []


async def test_postmaster_v1_behind_the_setting(providers: ProviderServer, ctx: CheckContext, tmp_path: Path) -> None:
    section = {"domains": ["example.org"], "token": "good", "base_url": providers.postmaster, "api": "v1"}
    config = parse_config({"postmaster": section, "state": {"dir": str(tmp_path)}})
    [report] = await postmaster_reports(config, ctx)
    codes = {f.code for f in report.findings}
    assert {"gmail-low", "gmail-ip-bad", "gmail-spam-high"} <= codes  # v1's reputation dashboards


def test_postmaster_is_a_known_job_with_a_12h_default() -> None:
    config = parse_config({})
    assert config.schedule.intervals["postmaster"] == timedelta(hours=12)
    assert parse_config({"schedule": {"postmaster": "1d"}}).schedule.intervals["postmaster"] == timedelta(days=1)
    assert "postmaster" not in default_families(config)


# -- config ---------------------------------------------------------------------------------------------

PROVIDERS_TOML = """\
[monitor]
ips = ["192.0.2.10"]
domains = ["example.org"]

[snds]
method = "api"
token_command = "echo token"
api_base = "http://127.0.0.1:9/snds"
days = 2

[feedback]
host = "imap.example.org"
user = "fbl@example.org"
password_command = "echo secret"
mark = "move"

[postmaster]
domains = ["example.org"]
token_command = "echo token"

[schedule]
snds = "12h"
complaints = "10m"
postmaster = "1d"

[state]
dir = "{state}"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "repbot.toml"
    path.write_text(text.format(state=tmp_path / "state"), encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("section", "typo", "key"),
    [
        ("snds", "dayz = 2", "snds.dayz"),
        ("feedback", "pasword = 'x'", "feedback.pasword"),
        ("postmaster", "domain = 'x'", "postmaster.domain"),
    ],
)
def test_config_check_with_provider_sections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, typo: str, key: str
) -> None:
    good = _write(tmp_path, PROVIDERS_TOML)
    assert main(["config", "check", "-c", str(good)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")
    bad = _write(tmp_path, PROVIDERS_TOML.replace(f"[{section}]\n", f"[{section}]\n{typo}\n"))
    assert main(["config", "check", "-c", str(bad)]) == 1
    assert key in capsys.readouterr().out


# -- the console, end to end ------------------------------------------------------------------------------


def test_console_snds_end_to_end(tmp_path: Path, providers: ProviderServer, dns_server: DnsServer) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text(
        f"""
[dns]
nameservers = ["{dns_server.address}"]
timeout = 1.0

[monitor]
ips = ["192.0.2.10", "192.0.2.11"]

[snds]
key_command = "echo good"
legacy_base = "{providers.snds_legacy}"
days = 1

[state]
dir = "{tmp_path / "state"}"
""",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run", "--console", "-c", str(config)],
        input="!snds\n!snds 192.0.2.11\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("192.0.2.11 on 2026-07-03: RED") == 2
    assert "192.0.2.10 on 2026-07-03: YELLOW" in done.stdout
    assert "Traceback" not in done.stderr and "good" not in done.stderr
