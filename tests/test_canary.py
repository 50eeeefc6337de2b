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
    Placement,
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
from tests.helpers import RecordingTransport, english_words

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


async def test_the_provider_summary_in_the_operators_language(mta_lab: MtaLab) -> None:
    import asyncio

    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    with use_language("es"):
        *drops, arrived, junk, unlogged = await asyncio.gather(
            run_canary(_settings(mta_lab, "drop")),
            run_canary(_settings(mta_lab, "drop")),
            run_canary(_settings(mta_lab, "inbox")),
            run_canary(_settings(mta_lab, "junk", found_action="keep")),
            run_canary(_settings(mta_lab, "drop", log=False)),
        )
        dropped, inbox, last, none = (
            provider_finding("outlook", verdicts) for verdicts in (drops, [arrived], [arrived, junk], [])
        )
    assert [v.kind for v in (*drops, arrived, junk, unlogged)] == [
        "missing-accepted", "missing-accepted", "inbox", "junk", "missing-unknown",
    ]  # fmt: skip
    assert dropped.summary == (
        "canarios a outlook aceptados con 250 y nunca entregados: 2 de los últimos 2; probable bloqueo silencioso"
    )
    assert inbox.summary.startswith("canario a outlook en la bandeja de entrada: 1 de 1, normalmente tras ")
    assert last.summary.startswith("último canario a outlook: en la carpeta de correo no deseado (Junk) de seed")
    assert "motivo compauth 001" in last.summary and last.summary.endswith(
        " (1 de los últimos 2 en la bandeja de entrada)"
    )
    assert none.summary == "aún no hay ningún canario terminado a outlook"
    assert "no hay registro del MTA configurado" in unlogged.summary
    for finding in (dropped, inbox, last, none, unlogged.to_finding()):
        assert not english_words(f"{finding.summary} {finding.advice}"), (finding.summary, finding.advice)
    assert (dropped.code, dropped.status, dropped.evidence["canaries"][0]) == (
        "provider-drop", Status.FAIL, f"{drops[0].canary.token} missing-accepted",
    )  # fmt: skip


async def test_a_refused_login_and_an_unreadable_seed_mailbox_in_the_operators_language(mta_lab: MtaLab) -> None:
    import asyncio
    from dataclasses import replace

    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    blind = _settings(mta_lab, "inbox")
    wrong_box = replace(blind.seed_mailbox, password=lambda: "wrong-password")
    with use_language("es"):
        refused, unreadable = await asyncio.gather(
            run_canary(_settings(mta_lab, "inbox", password="wrong-password")),
            run_canary(replace(blind, seed_mailbox=wrong_box)),
        )
    assert refused.summary.startswith("no enviado: el servidor de envío rechazó nuestro inicio de sesión")
    assert refused.canary.error == "the submission server refused our login"  # stored and logged as it was
    assert unreadable.kind == "unreadable", unreadable.summary
    assert unreadable.summary.startswith(f"no puedo leer el buzón semilla: auth: {HOST} rechazó la contraseña de ")
    for verdict in (refused, unreadable):
        assert not english_words(verdict.summary), verdict.summary


async def test_a_scheduled_canary_is_worded_in_the_alerts_language(mta_lab: MtaLab, tmp_path: Path) -> None:
    """No room asked for it: its verdict and the provider's are said as the alerts are ([bot] language)."""
    import asyncio
    from dataclasses import replace

    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.monitor.canary import HISTORY, PENDING, CanaryRunner
    from bot.monitor.core import Monitor
    from bot.monitor.store import Store
    from checks.context import CheckContext
    from checks.dns.resolver import Resolver

    config, _ = _bot_config(mta_lab, tmp_path)
    config = replace(config, language="es")
    ctx = CheckContext(resolver=Resolver())
    store = Store(tmp_path / "monitor.json")
    runner = CanaryRunner(config, ctx, Monitor(config, store, RecordingTransport(), ctx, {}))
    try:
        await runner.launch_due()
        for _ in range(200):
            if store.get_meta(HISTORY) and not store.get_meta(PENDING):
                break
            await asyncio.sleep(0.05)
        [entry] = store.get_meta(HISTORY)["outlook"]
        assert entry["summary"].startswith("aceptado por el remoto con 250 y ni en la bandeja de entrada"), entry
        state = store.get_state("drop.test|canary|outlook")
        assert state is not None
        said = state.summary or state.candidate_summary
        assert said == "canario a outlook aceptado con 250 y nunca entregado: 1 de 1; probable bloqueo silencioso"
    finally:
        await runner.stop()
        store.close()
        await ctx.aclose()


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
    from bot.config.loader import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"canary": {"send_via": "pigeon", "seed": [{"name": "x", "imap": {"host": "h"}}]}})
    text = str(info.value)
    for key in ("canary.send_via", "canary.sender", "canary.seed[0].address", "canary.seed[0].imap.user",
                "canary.seed[0].imap.password"):  # fmt: skip
        assert key in text, text


async def test_bot_resumes_a_pending_canary_after_a_crash_and_replies_once(mta_lab: MtaLab, tmp_path: Path) -> None:
    import asyncio

    from bot.commands.catalog import REGISTRY
    from bot.commands.registry import Call, Invocation, Services
    from bot.monitor.canary import HISTORY, PENDING, CanaryRunner
    from bot.monitor.core import Monitor
    from bot.monitor.store import Store
    from bot.transports.base import Incoming
    from checks.context import CheckContext
    from checks.dns.resolver import Resolver

    config, _ = _bot_config(mta_lab, tmp_path)
    transport = RecordingTransport()
    ctx = CheckContext(resolver=Resolver())
    path = tmp_path / "monitor.json"
    incoming = Incoming("!room:localhost", "@admin:localhost", "!canary outlook", "$command")
    try:
        store = Store(path)
        first = CanaryRunner(config, ctx, Monitor(config, store, transport, ctx, {}))
        await first.start()
        parsed = REGISTRY.parse("!canary outlook")
        assert isinstance(parsed, Invocation)
        services = Services(config, ctx, transport, REGISTRY, datetime.now(UTC), canaries=first)
        answer = await parsed.command.handler(Call(incoming, parsed.command, parsed.args, services))
        assert answer is not None and "outlook: sent" in answer.plain and "checking until" in answer.plain
        (token,) = store.get_meta(PENDING)
        await first.stop()  # the bot dies while the canary is pending
        store.close()
        assert transport.posted == []

        store = Store(path)
        assert token in store.get_meta(PENDING)
        monitor = Monitor(config, store, transport, ctx, {})
        second = CanaryRunner(config, ctx, monitor)
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
        room, message, _, reply_to = transport.sent[0]
        text = message.plain
        assert (room, reply_to.thread_root if reply_to else None) == ("!room:localhost", "$command")
        assert token in text and "suspected silent drop" in text and "Queued mail for delivery" in text
        assert [e["kind"] for e in store.get_meta(HISTORY)["outlook"]] == ["missing-accepted"]
        assert any(s.check == "canary" and s.subject == "outlook" for s in store.states())

        third = CanaryRunner(config, ctx, monitor)  # a later start finds nothing pending: no second reply
        await third.start()
        await third.stop()
        services = Services(config, ctx, transport, REGISTRY, datetime.now(UTC), canaries=third)
        parsed = REGISTRY.parse("!canary history outlook")
        assert isinstance(parsed, Invocation)
        history = await parsed.command.handler(Call(incoming, parsed.command, parsed.args, services))
        assert history is not None and token in history.plain and "missing-accepted" in history.plain
        assert len(transport.posted) == 1
        store.close()
    finally:
        await ctx.aclose()


def _with_secret(config: Any, tmp_path: Path, where: str) -> Any:
    """The config with one secret (the seed's IMAP password, or the submission password) now unreadable."""
    from dataclasses import replace

    from bot.config.credentials import optional_credential
    from bot.config.reader import Secret

    missing = Secret(f"canary.{where}.password", file=str(tmp_path / "no-such-secret"))
    canary = config.canary
    if where == "seed[0].imap":
        seed = canary.seeds[0]
        return replace(
            config, canary=replace(canary, seeds=(replace(seed, imap=replace(seed.imap, password=missing)),))
        )
    submission = replace(canary.submission, password=optional_credential(missing))
    return replace(config, canary=replace(canary, submission=submission, submission_password=missing))


async def test_a_canary_step_that_cannot_run_is_an_unknown_finding_with_its_code(
    mta_lab: MtaLab, tmp_path: Path
) -> None:
    import asyncio

    from bot.monitor.canary import PENDING, CanaryRunner
    from bot.monitor.core import Monitor
    from bot.monitor.store import Store
    from checks.context import CheckContext
    from checks.dns.resolver import Resolver

    config, _ = _bot_config(mta_lab, tmp_path)
    config = _with_secret(config, tmp_path, "seed[0].imap")
    ctx = CheckContext(resolver=Resolver())
    store = Store(tmp_path / "monitor.json")
    runner = CanaryRunner(config, ctx, Monitor(config, store, RecordingTransport(), ctx, {}))
    try:
        sent = await runner.launch("outlook")
        assert isinstance(sent, Canary) and sent.submitted
        key = "drop.test|canary|outlook"
        for _ in range(200):
            if store.get_state(key):
                break
            await asyncio.sleep(0.05)
        state = store.get_state(key)
        assert state is not None and state.last_status == "unknown", state
        assert "canary.seed[0].imap.password_file" in state.unknown_summary
        assert sent.token in store.get_meta(PENDING)  # looked for again after the next start
    finally:
        await runner.stop()
        store.close()
        await ctx.aclose()


async def test_a_canary_that_cannot_be_sent_says_why_in_the_reply(mta_lab: MtaLab, tmp_path: Path) -> None:
    from bot.commands.catalog import REGISTRY
    from bot.commands.registry import Call, Invocation, Services
    from bot.monitor.canary import PENDING, CanaryRunner
    from bot.monitor.core import Monitor
    from bot.monitor.store import Store
    from bot.transports.base import Incoming
    from checks.context import CheckContext
    from checks.dns.resolver import Resolver

    config, _ = _bot_config(mta_lab, tmp_path)
    config = _with_secret(config, tmp_path, "submission")
    ctx = CheckContext(resolver=Resolver())
    store = Store(tmp_path / "monitor.json")
    transport = RecordingTransport()
    runner = CanaryRunner(config, ctx, Monitor(config, store, transport, ctx, {}))
    services = Services(config, ctx, transport, REGISTRY, datetime.now(UTC), canaries=runner)
    try:
        parsed = REGISTRY.parse("!canary outlook")
        assert isinstance(parsed, Invocation)
        incoming = Incoming("!room:localhost", "@admin:localhost", "!canary outlook", "$command")
        answer = await parsed.command.handler(Call(incoming, parsed.command, parsed.args, services))
        assert answer is not None and answer.plain.startswith("outlook: not sent: could not check:")
        assert "canary.submission.password_file" in answer.plain
        state = store.get_state("drop.test|canary|outlook")
        assert state is not None and state.last_status == "unknown"
        assert not store.get_meta(PENDING)
    finally:
        await runner.stop()
        store.close()
        await ctx.aclose()


def _sent(name: str, at: datetime) -> Canary:
    return Canary(name, "rbfeed", "<rbfeed@x>", f"s@{name}.com", "me@x", at, at + DEADLINE, submitted=True)


def _bounce_of(raw: bytes) -> Any:
    bounce = read_bounce(raw, "rbfeed")
    assert bounce is not None
    return bounce


def test_a_text_bounce_without_a_report_is_a_failure_and_the_canary_bounced() -> None:
    qmail = (
        b"From: MAILER-DAEMON@mx.example.org\r\nSubject: failure notice\r\n\r\n"
        b"Hi. This is the qmail-send program at mx.example.org.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        b"<seed@outlook.com>:\r\n52.101.8.3 does not like recipient.\r\n"
        b"Remote host said: 550 5.7.606 Access denied, banned sending IP [192.0.2.1].\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\nSubject: Delivery check rbfeed\r\n"
    )
    bounce = _bounce_of(qmail)
    assert (bounce.action, bounce.status, bounce.reply_code) == ("failed", "5.7.606", "550")
    now = datetime.now(UTC)
    canary = _sent("outlook", now)
    verdict = classify(canary, Placement(bounce=bounce), None, now)
    assert verdict.kind == "bounced" and verdict.explanation is not None
    assert verdict.explanation.entry_id == "microsoft365.banned-ip"


def test_an_enhanced_code_alone_and_a_delay_notice() -> None:
    gmx = (
        b"From: Mail Delivery System <mailer-daemon@gmx.net>\r\nSubject: Mail delivery failed\r\n\r\n"
        b"This message was created automatically by mail delivery software.\r\n\r\n"
        b"A message that you sent could not be delivered to one or more of\r\nits recipients.\r\n\r\n"
        b"  seed@gmx.de\r\n    5.2.2 ... Mailbox Full\r\n\r\n--- The header of the original message ---\r\nrbfeed\r\n"
    )
    bounce = _bounce_of(gmx)
    assert (bounce.action, bounce.status, bounce.reply_code) == ("failed", "5.2.2", None)
    delay = (
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        b"Subject: Delivery Status Notification (Delay)\r\n\r\n"
        b"Delivery to the following recipient has been delayed:\r\n\r\n     seed@example.net\r\n\r\n"
        b"Message will be retried for 2 more day(s)\r\n\r\nThe error that the other server returned was:\r\n"
        b"451 4.3.0 Mail server temporarily rejected message.\r\n\r\n----- Original message -----\r\nrbfeed\r\n"
    )
    bounce = _bounce_of(delay)
    assert (bounce.action, bounce.status, bounce.reply_code) == ("delayed", "4.3.0", "451")


def _report(recipient_block: str, original: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "Subject: Undelivered Mail Returned to Sender\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n\r\n--B\r\n"
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        f"{recipient_block}\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--B--\r\n"
    ).encode()


def test_postfix_reply_code_mid_text_and_a_nested_report_does_not_win() -> None:
    postfix = _report(
        "Final-Recipient: rfc822; seed@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: X-Postfix; host mx.example.net[192.0.2.7] said: 550 5.1.1\r\n"
        "    <seed@example.net>: Recipient address rejected: User unknown (in reply to RCPT TO command)\r\n",
        "Subject: Delivery check rbfeed\r\n\r\nhello\r\n",
    )
    bounce = _bounce_of(postfix)
    assert (bounce.action, bounce.status, bounce.reply_code) == ("failed", "5.1.1", "550")
    assert bounce.diagnostic is not None and bounce.diagnostic.startswith("host mx.example.net[192.0.2.7] said: 550")
    nested = _report(
        "Final-Recipient: rfc822; seed@yahoo.com\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        "Diagnostic-Code: smtp; 554 delivery error: dd This user doesn't have a yahoo.com account\r\n",
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="C"\r\n\r\n'
        "--C\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example\r\n\r\n"
        "Final-Recipient: rfc822; other@example.com\r\nAction: delayed\r\nStatus: 5.3.5\r\n"
        "Diagnostic-Code: smtp; 553 5.3.5 system config error\r\n\r\n--C--\r\nrbfeed\r\n",
    )
    bounce = _bounce_of(nested)
    assert (bounce.action, bounce.status, bounce.reply_code) == ("failed", "5.0.0", "554")


def test_a_delay_notice_is_pending_then_deferred_never_a_bounce() -> None:
    notice = (
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        b"Subject: Delivery Status Notification (Delay)\r\n\r\n"
        b"Delivery to the following recipient has been delayed:\r\n\r\n     seed@gmail.com\r\n\r\n"
        b"Message will be retried for 2 more day(s)\r\n\r\nThe error that the other server returned was:\r\n"
        b"421-4.7.28 Our system has detected an unusual rate of unsolicited mail. gsmtp\r\n\r\nrbfeed\r\n"
    )
    bounce = _bounce_of(notice)
    assert bounce.action == "delayed"
    sent = datetime.now(UTC)
    canary = _sent("gmail", sent)
    early = classify(canary, Placement(bounce=bounce), None, sent)
    assert early.kind == "pending"
    late = classify(canary, Placement(bounce=bounce), None, sent + DEADLINE * 2)
    assert late.kind == "deferred" and late.explanation is not None
    assert late.explanation.entry_id == "google.unusual-rate"


def test_an_expired_message_gives_the_remote_s_last_answer_not_our_verdict() -> None:
    ses = _report(
        "Final-Recipient: rfc822; seed@example.net\r\nAction: failed\r\nStatus: 4.4.7\r\n"
        "Diagnostic-Code: smtp; 554 4.4.7 Message expired: unable to deliver in 840 minutes.\r\n"
        "    <421 4.4.2 Connection timed out>\r\n",
        "Subject: Delivery check rbfeed\r\n\r\nhello\r\n",
    )
    bounce = _bounce_of(ses)
    assert (bounce.action, bounce.status, bounce.reply_code) == ("failed", "4.4.2", "421")


def test_verdicts_in_the_operators_language() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    now = datetime.now(UTC)
    failed = Canary("gmail", "rbx", "<rbx@e>", "s@gmail.com", "me@e", now, now, error="SMTPConnectError: refused")
    with use_language("es"):
        not_sent = classify(failed, None, None, now)
    assert not_sent.summary == "no enviado: SMTPConnectError: refused"
    assert not_sent.to_finding(now).evidence["token"] == "rbx"
    sent = Canary("gmail", "rby", "<rby@e>", "s@gmail.com", "me@e", now, now, submitted=True)
    arrived = Placement(folder="inbox", received_at=now + timedelta(seconds=9000))
    with use_language("es"):
        late = classify(sent, arrived, None, now)
    assert late.summary == "en la bandeja de entrada de s@gmail.com tras 2,5 h"  # the hours as Spanish writes them
    assert classify(sent, arrived, None, now).summary == "in the Inbox of s@gmail.com after 2.5 h"
