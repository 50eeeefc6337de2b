"""Canaries end to end on loopback: our MTA (aiosmtpd), provider MX servers, a real Dovecot; every verdict."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from checks.canary.maillog import LogSource
from checks.canary.probe import (
    Canary,
    CanarySettings,
    SubmissionSettings,
    build_message,
    look,
    read_bounce,
    read_receiver_verdict,
    send,
)
from checks.canary.verdict import classify, provider_finding, run_canary, settle
from checks.mailbox import Mailbox, MailboxSettings
from checks.model import Finding, Status
from tests.fixtures.mta import MtaLab

DEADLINE = timedelta(seconds=4)


def _user(lab: MtaLab, prefix: str) -> tuple[str, MailboxSettings]:
    name, password = f"{prefix}{secrets.token_hex(3)}", secrets.token_hex(8)
    lab.dovecot.add_user(name, password)
    box = MailboxSettings(HOST, name, port=lab.dovecot.port, security="plain", password=lambda: password, timeout=5)
    return name, box


HOST = "127.0.0.1"


def _settings(
    lab: MtaLab, mode: str, *, log: bool = True, password: str | None = None, **extra: object
) -> CanarySettings:
    seed, seed_box = _user(lab, "seed")
    sender, sender_box = _user(lab, "me")
    lab.mta.bounce_to = sender
    submission = SubmissionSettings(
        HOST, lab.mta.port, "plain", user="me", password=lambda: password or lab.mta.password, timeout=5
    )
    values: dict[str, object] = {
        "name": "outlook",
        "seed": f"{seed}@{mode}.test",
        "sender": f"{sender}@example.org",
        "seed_mailbox": seed_box,
        "sender_mailbox": sender_box,
        "submission": submission,
        "deadline": DEADLINE,
        "poll_interval": 0.2,
        "log": LogSource(path=str(lab.mta.log_path)) if log else None,
    }
    values.update(extra)
    return CanarySettings(**values)  # type: ignore[arg-type]


async def test_inbox_with_latency_and_the_copy_is_moved_away(mta_lab: MtaLab) -> None:
    settings = _settings(mta_lab, "inbox")
    verdict = await run_canary(settings)
    assert verdict.kind == "inbox", verdict.summary
    assert verdict.latency is not None and 0 <= verdict.latency < 10
    assert any("compauth=pass" in line for line in verdict.lines)
    finding = verdict.to_finding()
    assert (finding.check, finding.subject, finding.status, finding.code) == (
        "canary",
        "outlook",
        Status.OK,
        "canary-inbox",
    )
    assert "latency_seconds" in finding.evidence
    async with Mailbox(settings.seed_mailbox) as box:
        await box.select("INBOX")
        assert await box.search("HEADER", "X-Repbot-Canary", verdict.canary.token) == []
        trash = await box.find_folder("\\Trash")
        assert trash is not None
        await box.select(trash)
        assert len(await box.search("HEADER", "X-Repbot-Canary", verdict.canary.token)) == 1


async def test_junk_with_scl_and_compauth(mta_lab: MtaLab) -> None:
    verdict = await run_canary(_settings(mta_lab, "junk", found_action="keep"))
    assert verdict.kind == "junk", verdict.summary
    assert "SCL 5" in verdict.summary and "compauth=fail" in verdict.summary and "reason 001" in verdict.summary
    assert any(line.startswith("X-Forefront-Antispam-Report:") and "SCL:5" in line for line in verdict.lines)
    assert verdict.to_finding().status is Status.WARN


async def test_bounced_with_the_code_explained(mta_lab: MtaLab) -> None:
    started = datetime.now(UTC)
    verdict = await run_canary(_settings(mta_lab, "reject"))
    assert verdict.kind == "bounced", verdict.summary
    assert "S3150" in verdict.summary
    assert verdict.explanation is not None and verdict.explanation.entry_id == "microsoft.s3150"
    assert "olcsupport.office.com" in verdict.advice
    assert any("Diagnostic-Code" in line and "S3150" in line for line in verdict.lines)
    assert datetime.now(UTC) - started < DEADLINE + timedelta(seconds=2)  # found by its DSN, not by the deadline


async def test_deferred_with_the_remote_4xx(mta_lab: MtaLab) -> None:
    verdict = await run_canary(_settings(mta_lab, "defer"))
    assert verdict.kind == "deferred", verdict.summary
    assert "451 4.7.650" in verdict.summary
    assert verdict.explanation is not None and verdict.explanation.entry_id == "microsoft.s775"
    assert any("status=deferred" in line for line in verdict.lines)


@pytest.mark.parametrize("log_format", ["postfix", "opensmtpd"])
async def test_missing_after_remote_acceptance_is_the_silent_drop(mta_lab: MtaLab, log_format: str) -> None:
    mta_lab.mta.format = log_format
    verdict = await run_canary(_settings(mta_lab, "drop"))
    assert verdict.kind == "missing-accepted", verdict.summary
    assert "suspected silent drop" in verdict.summary
    accepted = [line for line in verdict.lines if "Queued mail for delivery" in line]
    assert accepted and verdict.canary.message_id in accepted[0]
    assert "olcsupport.office.com" in verdict.advice
    assert verdict.to_finding().status is Status.FAIL


async def test_missing_acceptance_unknown_without_log(mta_lab: MtaLab) -> None:
    verdict = await run_canary(_settings(mta_lab, "drop", log=False))
    assert verdict.kind == "missing-unknown", verdict.summary
    assert "evidence missing" in verdict.summary and "no MTA log configured" in verdict.summary
    unreadable = _settings(mta_lab, "drop", log=False)
    unreadable = CanarySettings(**{**unreadable.__dict__, "log": LogSource(path="/nonexistent/mail.log")})
    verdict = await run_canary(unreadable)
    assert verdict.kind == "missing-unknown" and "/nonexistent/mail.log" in verdict.summary


async def test_not_sent_refused_login_refused_recipient_and_never_relayed(mta_lab: MtaLab) -> None:
    wrong = await run_canary(_settings(mta_lab, "inbox", password="wrong-password"))
    assert wrong.kind == "not-sent" and "refused our login" in wrong.summary
    assert "wrong-password" not in repr(wrong.to_finding().to_json())
    refused = await run_canary(_settings(mta_lab, "nowhere"))
    assert refused.kind == "not-sent" and "554 5.7.1" in refused.lines[0]
    held = await run_canary(_settings(mta_lab, "hold"))
    assert held.kind == "not-sent", held.summary
    assert "no delivery attempt" in held.summary


async def test_pending_before_the_deadline_then_resumed_from_storage(mta_lab: MtaLab) -> None:
    settings = _settings(mta_lab, "drop", deadline=timedelta(seconds=60))
    canary = await send(settings)
    assert canary.submitted and canary.queue_id
    placement = await look(settings, canary)
    early = await settle(settings, canary, placement, datetime.now(UTC))
    assert early.kind == "pending" and not early.final
    assert early.to_finding().status is Status.UNKNOWN
    # The bot crashed: the stored canary comes back and is settled after its deadline.
    stored = Canary.from_json(canary.to_json())
    assert stored == canary
    await mta_lab.mta.drain()
    later = await settle(settings, stored, await look(settings, stored), stored.deadline_at + timedelta(seconds=1))
    assert later.kind == "missing-accepted"


async def test_direct_to_the_seed_mx_records_the_remote_reply(mta_lab: MtaLab) -> None:
    from checks.context import CheckContext
    from checks.dns.resolver import Resolver

    ctx = CheckContext(resolver=Resolver(), smtp_port=mta_lab.providers["drop"].port)
    settings = _settings(mta_lab, "drop", send_via="direct", submission=None, direct_host=HOST, log=False)
    try:
        verdict = await run_canary(settings, ctx)
    finally:
        await ctx.aclose()
    assert verdict.kind == "missing-accepted", verdict.summary
    assert verdict.canary.reply is not None and verdict.canary.reply.startswith("250 2.6.0")


async def test_provider_verdict_combines_canaries_and_snds(mta_lab: MtaLab) -> None:
    import asyncio

    drops = list(await asyncio.gather(*(run_canary(_settings(mta_lab, "drop")) for _ in range(3))))
    assert [d.kind for d in drops] == ["missing-accepted"] * 3, [d.summary for d in drops]
    snds = [Finding("snds", "192.0.2.25", Status.FAIL, "RED since Tuesday (spam > 90%)", code="snds-red")]
    finding = provider_finding("outlook", drops, snds)
    assert finding.status is Status.FAIL
    assert finding.summary.startswith("3 of the last 3 canaries to outlook accepted with 250 and never delivered")
    assert "SNDS 192.0.2.25: RED since Tuesday" in finding.summary and "likely silent block" in finding.summary
    assert "olcsupport.office.com" in finding.advice
    assert all("Queued mail for delivery" in line for line in finding.evidence["accepted"])


# --- pure helpers ---------------------------------------------------------------------------------------


def test_message_is_plain_and_tokened() -> None:
    message = build_message("seed@outlook.com", "me@example.org", "rb0123456789abcdef", datetime.now(UTC))
    assert message["Message-ID"] == "<rb0123456789abcdef@example.org>"
    assert "rb0123456789abcdef" in message["Subject"] and message["X-Repbot-Canary"] == "rb0123456789abcdef"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert "http" not in body and "unsubscribe" not in body.lower()


def test_receiver_verdict_headers() -> None:
    raw = (
        b"Authentication-Results: spf=pass (sender IP is 192.0.2.25) smtp.mailfrom=example.org; dkim=pass\r\n"
        b" (signature was verified) header.d=example.org;dmarc=pass action=none;compauth=pass reason=100\r\n"
        b"X-MS-Exchange-Organization-SCL: 1\r\nSubject: x\r\n\r\nbody\r\n"
    )
    verdict = read_receiver_verdict(raw)
    assert verdict.results == {"spf": "pass", "dkim": "pass", "dmarc": "pass", "compauth": "pass"}
    assert verdict.compauth_reason == "100" and verdict.scl == 1
    assert len(verdict.lines) == 2


def test_bounce_parsing_ignores_the_canary_itself() -> None:
    canary = build_message("s@x.test", "me@example.org", "rbfeed", datetime.now(UTC)).as_bytes()
    assert read_bounce(canary, "rbfeed") is None
    plain = b"From: MAILER-DAEMON@x\r\nSubject: failure\r\n\r\nrbfeed: host said: 550 5.7.606 Access denied\r\n"
    bounce = read_bounce(plain, "rbfeed")
    assert bounce is not None and bounce.diagnostic == "550 5.7.606 Access denied"


def test_classify_not_sent_without_reply() -> None:
    now = datetime.now(UTC)
    canary = Canary("gmail", "rbx", "<rbx@e>", "s@gmail.com", "me@e", now, now, error="SMTPConnectError: refused")
    verdict = classify(canary, None, None, now)
    assert verdict.kind == "not-sent" and "refused" in verdict.summary


# --- the bot side: config, !canary, resume after a crash ------------------------------------------------


class Recorder:
    """A room that records posts; the same txn_id never posts twice."""

    alert_rooms = ("!alerts:localhost",)

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str | None]] = []
        self.txn_ids: set[str] = set()

    async def send(self, room: str, message: Any, *, txn_id: str | None = None, reply_to: Any = None) -> str:
        if txn_id is not None and txn_id in self.txn_ids:
            return "$dup"
        if txn_id is not None:
            self.txn_ids.add(txn_id)
        self.posted.append((room, message.plain, reply_to.thread_root if reply_to else None))
        return f"$event{len(self.posted)}"


def _bot_config(lab: MtaLab, tmp_path: Path) -> tuple[Any, str]:
    from bot.config.loader import parse_config

    seed, seed_box = _user(lab, "seed")
    sender, sender_box = _user(lab, "me")
    lab.mta.bounce_to = sender

    def imap(box: MailboxSettings) -> dict[str, Any]:
        assert box.password is not None
        return {"host": HOST, "port": box.port, "security": "plain", "user": box.user, "password": box.password()}

    data = {
        "state": {"dir": str(tmp_path)},
        "canary": {
            "sender": f"{sender}@example.org",
            "deadline": "3s",
            "poll_interval": "1s",
            "submission": {
                "host": HOST, "port": lab.mta.port, "security": "plain", "user": "me", "password": lab.mta.password,
            },
            "sender_imap": imap(sender_box),
            "log": {"path": str(lab.mta.log_path), "format": "auto"},
            "seed": [{"name": "outlook", "address": f"{seed}@drop.test", "imap": imap(seed_box)}],
        },
    }  # fmt: skip
    return parse_config(data), seed


def test_canary_config_problems_name_the_key() -> None:
    import bot.commands.canary  # noqa: F401  (registers the [canary] reader)
    from bot.config.loader import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"canary": {"send_via": "pigeon", "seed": [{"name": "x", "imap": {"host": "h"}}]}})
    text = str(info.value)
    for key in ("canary.send_via", "canary.sender", "canary.seed[0].address", "canary.seed[0].imap.user",
                "canary.seed[0].imap.password"):  # fmt: skip
        assert key in text, text


async def test_bot_resumes_a_pending_canary_after_a_crash_and_replies_once(mta_lab: MtaLab, tmp_path: Path) -> None:
    import asyncio

    from bot.commands.canary import HISTORY, PENDING, CanaryRunner
    from bot.commands.core import REGISTRY, Call, Invocation, Services
    from bot.monitor.core import Monitor
    from bot.monitor.store import Store
    from bot.transports.base import Incoming
    from checks.context import CheckContext
    from checks.dns.resolver import Resolver

    config, _ = _bot_config(mta_lab, tmp_path)
    transport = Recorder()
    ctx = CheckContext(resolver=Resolver())
    services = Services(config, ctx, transport, REGISTRY, datetime.now(UTC))  # type: ignore[arg-type]
    path = tmp_path / "monitor.json"
    incoming = Incoming("!room:localhost", "@admin:localhost", "!canary outlook", "$command")
    try:
        store = Store(path)
        first = CanaryRunner(services, store, Monitor(config, store, transport, ctx, {}))  # type: ignore[arg-type]
        await first.start()
        parsed = REGISTRY.parse("!canary outlook")
        assert isinstance(parsed, Invocation)
        services.extra["canary"] = first
        answer = await parsed.command.handler(Call(incoming, parsed.command, parsed.args, services))
        assert answer is not None and "outlook: sent" in answer.plain and "checking until" in answer.plain
        (token,) = store.get_meta(PENDING)
        await first.stop()  # the bot dies while the canary is pending
        store.close()
        assert transport.posted == []

        store = Store(path)
        assert token in store.get_meta(PENDING)
        monitor = Monitor(config, store, transport, ctx, {})  # type: ignore[arg-type]
        second = CanaryRunner(services, store, monitor)  # type: ignore[arg-type]
        await second.start()
        for _ in range(200):
            if not store.get_meta(PENDING):
                break
            await asyncio.sleep(0.05)
        await second.stop()
        # The verdict waits in the persisted outbox, written with the end of the canary, until delivered.
        assert [item.id for item in store.pending()] == [f"canary-{token}"]
        assert await monitor.deliver()
        assert await monitor.deliver()  # delivered once: the outbox is empty now
        assert len(transport.posted) == 1
        room, text, thread = transport.posted[0]
        assert (room, thread) == ("!room:localhost", "$command")
        assert token in text and "suspected silent drop" in text and "Queued mail for delivery" in text
        assert [e["kind"] for e in store.get_meta(HISTORY)["outlook"]] == ["missing-accepted"]
        assert any(s.check == "canary" and s.subject == "outlook" for s in store.states())

        third = CanaryRunner(services, store, None)  # a later start finds nothing pending: no second reply
        await third.start()
        await third.stop()
        services.extra["canary"] = third
        parsed = REGISTRY.parse("!canary history outlook")
        assert isinstance(parsed, Invocation)
        history = await parsed.command.handler(Call(incoming, parsed.command, parsed.args, services))
        assert history is not None and token in history.plain and "missing-accepted" in history.plain
        assert len(transport.posted) == 1
        store.close()
    finally:
        await ctx.aclose()
