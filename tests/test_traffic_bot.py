"""Traffic in the bot: [traffic], the follower feeding the real monitor and store, rotation and restart, the
block alert within one poll interval, rates that alert and resolve, !traffic, `repbot traffic`, digest, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.commands.catalog import REGISTRY
from bot.commands.registry import Call, Invocation, Services
from bot.config.loader import Config, ConfigError, parse_config
from bot.context import build_context
from bot.monitor.core import STATE_FILE as MONITOR_FILE
from bot.monitor.store import Store
from bot.monitor.traffic import STATE_FILE, TrafficFollower, digest_lines, traffic_metrics
from bot.render import Rendered
from bot.runtime import build_services, start_services
from bot.transports.base import Incoming
from tests.fixtures.maillog import synthetic_log

ROOM = "!alerts:localhost"
GMAIL = "gmail-smtp-in.l.google.com[142.250.102.27]:25"
OUTLOOK = "outlook-com.olc.protection.outlook.com[52.101.68.2]:25"
S3150 = (
    "host outlook-com.olc.protection.outlook.com[52.101.68.2] said: 550 5.7.1 Unfortunately, messages from"
    " [192.0.2.25] weren't sent. Please contact your Internet service provider since part of their network is on our"
    " block list (S3150). (in reply to MAIL FROM command)"
)


class Room:
    """A recording room: what was posted, and an event for each post (no sleeping to wait for one)."""

    def __init__(self) -> None:
        self.alert_rooms: Sequence[str] = (ROOM,)
        self.posted: list[str] = []
        self.txn_ids: set[str] = set()
        self.arrived = asyncio.Event()

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        if txn_id is None or txn_id not in self.txn_ids:
            self.posted.append(message.plain)
            self.arrived.set()
        if txn_id is not None:
            self.txn_ids.add(txn_id)
        return f"$e{len(self.posted)}"

    async def send_image(self, room: str, png: bytes, **_: Any) -> str:
        return "$image"

    async def react(self, incoming: Incoming, key: str) -> None:
        return None

    async def typing(self, room: str, on: bool) -> None:
        return None

    async def wait_for(self, text: str, timeout: float) -> str:
        async with asyncio.timeout(timeout):
            while True:
                found = next((p for p in self.posted if text in p), None)
                if found is not None:
                    return found
                self.arrived.clear()
                await self.arrived.wait()


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def smtp(moment: datetime, qid: str, rcpt: str, relay: str, status: str, detail: str, dsn: str = "2.0.0") -> str:
    return (
        f"{_stamp(moment)} mail postfix/smtp[813]: {qid}: to=<{rcpt}>, relay={relay}, delay=1.1,"
        f" delays=0.1/0/0.5/0.5, dsn={dsn}, status={status} ({detail})"
    )


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def make_config(tmp_path: Path, **traffic: Any) -> Config:
    values = {"path": str(tmp_path / "mail.log"), "start": "beginning", "poll_interval": "1s", "window": "1h",
              "min_attempts": 5, **traffic}  # fmt: skip
    body = "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())
    text = f'[monitor]\nips = ["192.0.2.25"]\n[state]\ndir = "{tmp_path / "state"}"\n[traffic]\n{body}\n'
    return parse_config(__import__("tomllib").loads(text))


@contextlib.asynccontextmanager
async def running_bot(config: Config, room: Room, clock: Any = None) -> AsyncIterator[Services]:
    """The bot's real services (monitor, traffic follower) started as `repbot run` starts them, around a room."""
    ctx = build_context(config)
    if clock is not None:
        ctx = dataclasses.replace(ctx, clock=clock)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(ctx.aclose)
        store = stack.enter_context(contextlib.closing(Store(Path(config.state_dir) / MONITOR_FILE)))
        services = build_services(config, ctx, room, store)  # type: ignore[arg-type]
        await start_services(stack, services)
        yield services


def follower_of(services: Services) -> TrafficFollower:
    assert services.traffic is not None
    return services.traffic


def monitor_of(services: Services) -> Any:
    assert services.monitor is not None
    return services.monitor


async def run_command(services: Services, line: str) -> str:
    parsed = REGISTRY.parse(line)
    assert isinstance(parsed, Invocation), parsed
    reply = await parsed.command.handler(Call(Incoming(ROOM, "@admin:localhost", line), parsed.command,
                                              parsed.args, services))  # fmt: skip
    assert reply is not None
    return reply.plain


def test_config_section_and_its_errors(tmp_path: Path) -> None:
    config = make_config(tmp_path, smarthosts=["Smtp.Relay.Example"], deferral_rate=0.5)
    traffic = config.traffic
    assert traffic is not None
    assert traffic.smarthosts == ("smtp.relay.example",) and traffic.deferral_rate == 0.5
    assert traffic.poll_interval == timedelta(seconds=1)
    with pytest.raises(ConfigError) as both:
        make_config(tmp_path, command=["journalctl", "-f"])
    assert "traffic.path" in str(both.value)
    with pytest.raises(ConfigError) as follow:
        make_config(tmp_path, path="", command=["journalctl", "-f", "-u", "postfix@-"])
    assert "traffic.command" in str(follow.value) and "--follow" in str(follow.value)
    with pytest.raises(ConfigError) as rate:
        make_config(tmp_path, bounce_rate=5)
    assert "traffic.bounce_rate" in str(rate.value)
    text = (
        f'[state]\ndir = "{tmp_path}"\n[traffic]\npath = "x"\n[[traffic.family]]\nkey = "Bad Key"\nrelays = ["a.b"]\n'
    )
    with pytest.raises(ConfigError) as family:
        parse_config(__import__("tomllib").loads(text))
    assert "traffic.family[0].key" in str(family.value)


async def test_follows_appends_and_rotation_and_a_restart_counts_nothing_twice(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    log = tmp_path / "mail.log"
    now = datetime.now(UTC).replace(microsecond=0)
    append(log, *(smtp(now, f"A{i}", f"u{i}@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp") for i in range(3)))
    room = Room()
    async with running_bot(config, room) as services:
        follower = follower_of(services)
        await follower.poll()
        assert follower.tally.providers["google"]["sent"] == 3
        append(log, smtp(now, "B1", "x@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))
        os.rename(log, tmp_path / "mail.log.1")  # logrotate's rename; the MTA writes one more line to the old file
        append(tmp_path / "mail.log.1", smtp(now, "B2", "y@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))
        append(log, smtp(now, "C1", "z@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))
        await follower.poll()
        assert follower.tally.providers["google"]["sent"] == 6
        append(log, smtp(now, "C2", "w@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))
    # A restart: the same state, and the line written while the bot was down.
    async with running_bot(config, room) as services:
        follower = follower_of(services)
        await follower.poll()
        await follower.poll()
        assert follower.tally.providers["google"]["sent"] == 7
        assert follower.tally.providers["google"]["accepted"] == 7
    state = (tmp_path / "state" / STATE_FILE).read_text()
    assert "google" in state and "@" not in state  # provider keys and counts only


async def test_a_block_reply_reaches_the_room_within_one_poll_interval(tmp_path: Path) -> None:
    config = make_config(tmp_path, poll_interval="2s")
    log = tmp_path / "mail.log"
    log.touch()
    room = Room()
    async with running_bot(config, room):
        await asyncio.sleep(0)  # the follower's first poll finds the empty log
        now = datetime.now(UTC)
        appended = time.monotonic()
        append(
            log,
            smtp(now, "D1", "jane.doe@outlook.com", OUTLOOK, "bounced", S3150, "5.7.1"),
            smtp(now, "D2", "bob@hotmail.com", OUTLOOK, "bounced", S3150, "5.7.1"),
        )
        alert = await room.wait_for("S3150", timeout=2.0 + 3.0)
        took = time.monotonic() - appended
    assert took < 2.0 + 1.0, f"the alert took {took:.1f} s for a 2 s poll interval"
    assert "traffic microsoft-consumer: fail" in alert
    assert "2 messages affected" in alert
    assert "olcsupport.office.com" in alert  # the delisting route
    assert "Log: " in alert and "…@outlook.com" in alert and "jane.doe" not in alert and "bob@" not in alert
    assert len([p for p in room.posted if "S3150" in p]) == 1


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def test_deferral_rate_alerts_and_resolves(tmp_path: Path) -> None:
    config = make_config(tmp_path, deferral_rate=0.3, window="30m")
    log = tmp_path / "mail.log"
    start = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    clock = Clock(start)
    said = f"host {GMAIL[:-3]} said: 421-4.7.0 Try again later, closing connection. - gsmtp"
    append(log, *(smtp(start, f"E{i}", f"u{i}@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp") for i in range(5)))
    append(log, *(smtp(start, f"F{i}", f"v{i}@gmail.com", GMAIL, "deferred", said, "4.7.0") for i in range(5)))
    room = Room()
    async with running_bot(config, room, clock) as services:
        follower: TrafficFollower = follower_of(services)
        follower.clock = clock
        await follower.poll()
        await monitor_of(services).deliver()
        assert any("50 % of 10 attempts to Google" in p and "deferred" in p for p in room.posted), room.posted
        clock.now = start + timedelta(minutes=31)
        await follower.poll()
        await monitor_of(services).deliver()
        assert any("ok again" in p and "no mail to Google" in p for p in room.posted), room.posted
        text = await run_command(services, "!traffic google")
    assert "421 4.7.0 ×5" in text


async def test_traffic_command_digest_and_metrics(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    log = tmp_path / "mail.log"
    today = datetime.now(UTC).replace(hour=1)
    yesterday = today - timedelta(days=1)
    append(log, smtp(yesterday, "G1", "a@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"),
           smtp(yesterday, "G2", "b@outlook.com", OUTLOOK, "bounced", S3150, "5.7.1"),
           smtp(today, "G3", "c@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"),
           "garbage that is no log line")  # fmt: skip
    room = Room()
    async with running_bot(config, room) as services:
        await follower_of(services).poll()
        week = await run_command(services, "!traffic 7")
        today_only = await run_command(services, "!traffic")
        outlook = await run_command(services, "!traffic outlook 7")
        nope = await run_command(services, "!traffic yahoo")
        bad = await run_command(services, "!traffic 400")
        metrics = {m.name: m for m in traffic_metrics(follower_of(services))}
    assert "Google (Gmail and Workspace): 2 sent, 0 deferred, 0 bounced" in week
    assert "Microsoft consumer (Outlook.com, Hotmail, Live): 0 sent, 0 deferred, 1 bounced" in week
    assert "550 5.7.1 S3150 ×1 — Outlook.com refuses mail" in week
    assert "1 skipped (garbage 1)" in week
    assert "Google (Gmail and Workspace): 1 sent" in today_only and "Microsoft" not in today_only
    assert "Its DMARC report" not in outlook and "Missing: the DMARC aggregate report" in outlook
    assert "no mail to a provider named 'yahoo'" in nope
    assert "give 1 to 35 days" in bad
    lines = digest_lines(config, datetime.now(UTC))
    assert lines[0] == f"outbound mail on {yesterday.date().isoformat()}:"
    assert any("Google (Gmail and Workspace): 1 sent" in line for line in lines)
    assert any("1 bounced (top reply 550 5.7.1 S3150 ×1)" in line for line in lines)
    found = metrics["repbot_traffic_deliveries"].samples
    samples = {(s.labels["provider"], s.labels["outcome"]): s.value for s in found if s.name.endswith("_total")}
    assert samples[("google", "sent")] == 2 and samples[("microsoft-consumer", "bounced")] == 1


async def test_an_unreadable_log_is_unknown_not_a_crash(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    (tmp_path / "mail.log").mkdir()  # a directory where the log should be
    room = Room()
    async with running_bot(config, room) as services:
        reports = await follower_of(services).poll()
        text = await run_command(services, "!traffic")
    assert reports[0].findings[0].status.value == "unknown"
    assert "the log cannot be read right now" in text


def test_repbot_traffic_offline_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = synthetic_log(tmp_path / "mail.log", 3000)
    assert main(["traffic", "--log", str(log), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"providers", "lines", "skipped"} <= set(data)
    google = next(p for p in data["providers"] if p["provider"] == "google")
    assert {"provider", "sent", "deferred", "bounced", "replies"} <= set(google)
    assert all({"code", "count", "explanation"} <= set(r) for r in google["replies"])
    assert data["lines"] == 3001 and data["skipped"] >= 1
    assert "user1" not in json.dumps(data)
    assert main(["traffic", "--log", str(log)]) == 0
    assert "Google (Gmail and Workspace):" in capsys.readouterr().out
    assert main(["traffic", "--log", str(tmp_path / "missing.log")]) == 3
    assert "cannot read" in capsys.readouterr().err


FAKE_JOURNALCTL = """#!/usr/bin/env python3
# Stands in for journalctl: prints the entries of a file after --after-cursor (or the last -n), then, as
# journalctl does, '-- cursor: N' only when it printed an entry.
import sys
entries = open(sys.argv[1], encoding="utf-8").read().splitlines()
after = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--after-cursor=")), None)
last = int(sys.argv[sys.argv.index("-n") + 1]) if "-n" in sys.argv else None
start = after + 1 if after is not None else (len(entries) - last if last is not None else 0)
for line in entries[start:]:
    print(line)
if "--show-cursor" in sys.argv and entries[start:]:
    print(f"-- cursor: {len(entries) - 1}")
"""


async def test_the_journal_through_a_command_resumes_at_its_cursor(tmp_path: Path) -> None:
    entries = tmp_path / "journal.txt"
    script = tmp_path / "journalctl"
    script.write_text(FAKE_JOURNALCTL, encoding="utf-8")
    script.chmod(0o755)
    now = datetime.now(UTC)
    append(entries, smtp(now, "J0", "old@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))
    text = (
        f'[state]\ndir = "{tmp_path / "state"}"\n[traffic]\ncommand = ["{script}", "{entries}"]\npoll_interval = "1s"\n'
    )
    config = parse_config(__import__("tomllib").loads(text))
    room = Room()
    async with running_bot(config, room) as services:
        follower = follower_of(services)
        await follower.poll()  # start = "end": only the cursor
        append(entries, smtp(now, "J1", "a@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"),
               smtp(now, "J2", "b@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))  # fmt: skip
        await follower.poll()
        await follower.poll()
        assert follower.tally.providers["google"]["sent"] == 2
    append(entries, smtp(now, "J3", "c@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))
    async with running_bot(config, room) as services:
        follower = follower_of(services)
        await follower.poll()
        assert follower.tally.providers["google"]["sent"] == 3
        assert follower.position is not None and follower.position.cursor == "3"


async def test_the_join_reads_stored_canaries_and_feeds_the_canary_provider_verdict(tmp_path: Path) -> None:
    from bot.monitor.canary import CanaryRunner
    from checks.canary.probe import Canary

    config = make_config(tmp_path)
    log = tmp_path / "mail.log"
    now = datetime.now(UTC).replace(microsecond=0)
    ok = "250 2.6.0 <x@example.org> [InternalId=1, Hostname=AM9.eurprd.prod.outlook.com] Queued mail for delivery"
    append(log, *(smtp(now, f"H{i}", f"u{i}@outlook.com", OUTLOOK, "sent", ok) for i in range(4)))
    seed, deadline = "seed@outlook.com", now + timedelta(minutes=30)
    canary = Canary("outlook", "tok1", "<tok1@example.org>", seed, "me@example.org", now, deadline, submitted=True,
                    reply="250 2.0.0 Ok: queued as 4F1A")  # fmt: skip
    entry: dict[str, Any] = {
        "canary": canary.to_json(), "kind": "missing-accepted", "summary": "accepted with 250 and missing",
        "lines": [], "advice": "", "latency": None, "at": now.isoformat(),
    }  # fmt: skip
    room = Room()
    async with running_bot(config, room) as services:
        await follower_of(services).poll()
        monitor = monitor_of(services)
        with monitor.store.batch():
            monitor.store.set_meta("canary_history", {"outlook": [entry]})
        text = await run_command(services, "!traffic outlook")
        runner = CanaryRunner(services.config, services.ctx, monitor, services.traffic, services.dmarc_counts)
        report = runner._provider_report("outlook", [entry])
    assert f"accepted 4 messages from 192.0.2.25 on {now.date().isoformat()}" in text
    assert "1 of 1 canaries missing after acceptance: suspected silent drop, medium confidence" in text
    finding = report.findings[0]
    assert finding.evidence["join"]["accepted"] == 4 and finding.evidence["join"]["canaries_dropped"] == 1
    assert "Missing: the DMARC aggregate report (confidence lowered)." in finding.summary


def test_rates_need_min_attempts_keep_hysteresis_and_skip_other(tmp_path: Path) -> None:
    from bot.config.traffic import traffic_families
    from bot.monitor.traffic import WindowCounts, provider_findings

    traffic = make_config(tmp_path, min_attempts=10, deferral_rate=0.3).traffic
    assert traffic is not None
    families = traffic_families(traffic)

    def status(window: dict[str, WindowCounts], alerting: dict[str, str]) -> dict[str, str]:
        findings, _ = provider_findings(traffic, families, window, {}, alerting, "1 h")
        return {f.subject: f.status.value for f in findings}

    assert status({"google": WindowCounts(sent=2, deferred=3)}, {}) == {"google": "ok"}  # 5 < min_attempts
    assert status({"google": WindowCounts(sent=7, deferred=3)}, {}) == {"google": "warn"}  # 30 %
    assert status({"google": WindowCounts(sent=75, deferred=25)}, {"google": "deferrals"}) == {"google": "warn"}
    assert status({"google": WindowCounts(sent=77, deferred=23)}, {}) == {"google": "ok"}
    assert status({"google": WindowCounts(sent=77, deferred=23)}, {"google": "deferrals"}) == {"google": "ok"}
    assert status({"other": WindowCounts(sent=1, deferred=50)}, {}) == {"other": "ok"}


@pytest.mark.parametrize("damage", ["{not json", '{"source": "SRC", "tally": {"lines": "many"}}', "[1, 2]"])
async def test_a_damaged_state_is_set_aside_and_the_bot_starts(tmp_path: Path, damage: str) -> None:
    config = make_config(tmp_path)
    append(tmp_path / "mail.log", smtp(datetime.now(UTC), "K1", "a@gmail.com", GMAIL, "sent", "250 2.0.0 OK - gsmtp"))
    state = tmp_path / "state" / STATE_FILE
    state.parent.mkdir(parents=True)
    state.write_text(damage.replace("SRC", str(tmp_path / "mail.log")), encoding="utf-8")
    async with running_bot(config, Room()) as services:
        await follower_of(services).poll()
        assert follower_of(services).tally.providers["google"]["sent"] == 1
    assert (tmp_path / "state" / (STATE_FILE + ".unreadable")).exists()


async def test_traffic_explains_a_refusal_in_spanish_before_and_after_a_restart(tmp_path: Path) -> None:
    from bot.i18n import use_language

    config = make_config(tmp_path)
    append(tmp_path / "mail.log", smtp(datetime.now(UTC), "S1", "b@outlook.com", OUTLOOK, "bounced", S3150, "5.7.1"))
    replies = []
    for _run in range(2):  # the second run reads the tally the first one stored
        async with running_bot(config, Room()) as services:
            await follower_of(services).poll()
            with use_language("es"):
                replies.append(await run_command(services, "!traffic outlook"))
            english = await run_command(services, "!traffic outlook")
    for text in replies:
        assert "550 5.7.1 S3150 ×1 — Outlook.com rechaza el correo de tu IP porque parte de su red" in text, text
        assert "Dónde:" in text and "refuses mail" not in text and "Where:" not in text
    assert "550 5.7.1 S3150 ×1 — Outlook.com refuses mail from your IP" in english and "Where:" in english
    stored = json.loads((tmp_path / "state" / STATE_FILE).read_text(encoding="utf-8"))
    assert "refuses mail" in json.dumps(stored)  # the state keeps the English sentence, and the row it came from


def test_repbot_traffic_in_spanish(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    log = tmp_path / "mail.log"
    append(log, smtp(datetime.now(UTC), "S1", "b@outlook.com", OUTLOOK, "bounced", S3150, "5.7.1"))
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    assert main(["traffic", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert f"correo saliente en {log}:" in out and "enviados 0, aplazados 0, rebotados 1" in out, out
    assert "Outlook.com rechaza el correo" in out and "refuses" not in out and "outbound" not in out
    assert "Microsoft para consumidores (Outlook.com, Hotmail, Live): enviados 0" in out, out
    assert main(["traffic", "--log", str(log), "--json"]) == 0
    as_json = capsys.readouterr().out
    assert "refuses mail" in as_json and "Microsoft consumer (Outlook.com" in as_json  # JSON keeps the English


async def test_a_block_alert_and_the_digest_in_spanish(tmp_path: Path) -> None:
    from bot.i18n import use_language

    config = dataclasses.replace(make_config(tmp_path, poll_interval="1s"), language="es")
    now = datetime.now(UTC)
    append(tmp_path / "mail.log", *(smtp(now, f"D{n}", f"u{n}@outlook.com", OUTLOOK, "bounced", S3150, "5.7.1")
                                    for n in range(2)))  # fmt: skip
    room = Room()
    async with running_bot(config, room):
        alert = await room.wait_for("S3150", timeout=5.0)
    assert "rechazó correo con una respuesta de bloqueo (550 5.7.1 S3150): 2 mensajes afectados desde" in alert, alert
    assert "Microsoft para consumidores (Outlook.com, Hotmail, Live) rechazó" in alert  # the shipped name, translated
    assert "Outlook.com rechaza el correo de tu IP" in alert and "Registro: " in alert and "Dónde:" in alert
    for english in ("refused mail", "messages affected", "refuses mail", "Log: ", "Where:"):
        assert english not in alert, english
    with use_language("es"):
        lines = digest_lines(config, now + timedelta(days=1))
    assert lines[0] == f"correo saliente el {now.date().isoformat()}:", lines
    assert "enviados 0, aplazados 0, rebotados 2 (respuesta más frecuente 550 5.7.1 S3150 ×2)" in lines[1], lines
