"""Complaint reports: RFC 5965, legacy JMRP and the 2026 header-only form, read from a real Dovecot mailbox."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from checks.mailbox import Mailbox, MailboxSettings
from checks.providers import feedback
from checks.providers.feedback import Complaint, FeedbackSettings, JsonlJournal, NotAReport
from tests.fixtures.dovecot import DovecotServer

NOW = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)
COMPLAINANTS = ("alice.complainer", "bob.victim", "carol.reader", "dave.anon")


def _original(to: str, subject: str, message_id: str | None, sender: str, return_path: str, **extra: str) -> Message:
    message = EmailMessage()
    message["Return-Path"] = return_path
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Thu, 02 Jul 2026 09:00:00 +0000"
    if message_id:
        message["Message-ID"] = message_id
    for name, value in extra.items():
        message[name.replace("_", "-")] = value
    message.set_content("Our newsletter.\n")
    return message


def _fields(**values: str) -> MIMEBase:
    part = MIMEBase("message", "feedback-report")
    part.set_payload("".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in values.items()))
    return part


def arf(reporter: str, fields: MIMEBase, original: Message, headers_only: bool = False) -> bytes:
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = reporter
    report["To"] = "fbl@example.org"
    report["Subject"] = "Abuse report"
    report["Date"] = "Fri, 03 Jul 2026 10:00:00 +0000"
    report["Message-ID"] = f"<{secrets.token_hex(8)}@reports.example>"
    report.attach(MIMEText("This is an email abuse report.\n"))
    report.attach(fields)
    if headers_only:
        head = "".join(f"{k}: {v}\r\n" for k, v in original.items())
        report.attach(MIMEText(head, "rfc822-headers"))
    else:
        report.attach(MIMEMessage(original))
    return report.as_bytes()


def rfc5965(day: str = "03") -> bytes:
    original = _original(
        "Alice <alice.complainer@yahoo.example>",
        "Your weekly news, Alice.Complainer@yahoo.example",
        f"<news-{day}@example.org>",
        "News <news@example.org>",
        "<bounce+tok123@example.org>",
    )
    fields = _fields(
        Feedback_Type="abuse",
        User_Agent="Yahoo!-Mail-Feedback/2.0",
        Version="1",
        Original_Mail_From="<bounce+tok123@example.org>",
        Original_Rcpt_To="<alice.complainer@yahoo.example>",
        Arrival_Date=f"Thu, {day} Jul 2026 08:00:00 +0000",
        Source_IP="192.0.2.10",
        Reported_Domain="example.org",
    )
    return arf("Yahoo FBL <feedback@yahoo.com>", fields, original)


def jmrp_2026(token: str | None = "c0ffee42", subject: str = "July offers") -> bytes:
    return_path = f"<bounce+{token}@example.org>" if token else "<bounce@example.org>"
    original = _original("redacted@anonymous.invalid", subject, None, "Shop <shop@example.org>", return_path)
    fields = _fields(Feedback_Type="abuse", User_Agent="Microsoft JMRP/2026", Version="1", Source_IP="192.0.2.11")
    return arf("JMRP <staff@hotmail.com>", fields, original, headers_only=True)


def jmrp_legacy() -> bytes:
    original = _original(
        "bob.victim@hotmail.com",
        "Deals for bob.victim",
        "<deal-7@example.net>",
        "Deals <deals@example.net>",
        "<bounce@example.net>",
        X_HmXmrOriginalRecipient="<bob.victim@hotmail.com>",
        X_sid_pra="deals@example.net",
    )
    report = MIMEMultipart("mixed")
    report["From"] = "staff@hotmail.com"
    report["Subject"] = "complaint about message from 192.0.2.10"
    report["Date"] = "Wed, 01 Jul 2026 10:00:00 +0000"
    report.attach(MIMEText("This is an email abuse report for an email message received from IP 192.0.2.10\n"))
    report.attach(MIMEMessage(original))
    return report.as_bytes()


def garbage() -> dict[str, bytes]:
    plain = EmailMessage()
    plain["From"] = "someone@example.com"
    plain["Subject"] = "hello"
    plain.set_content("Not a report at all.\n")
    whole = rfc5965("02")
    truncated = whole[: whole.rfind(b"--")]
    while truncated.count(b"--===") > 2:
        truncated = truncated[: truncated.rfind(b"--===")]
    big = MIMEMultipart("report", report_type="feedback-report")
    big["From"] = "feedback@yahoo.com"
    big.attach(MIMEText("report\n"))
    attachment = MIMEBase("application", "octet-stream")
    attachment.set_payload("A" * 400_000)
    big.attach(attachment)
    no_type = arf(
        "x@fbl.example",
        _fields(User_Agent="x", Version="1"),
        _original("a@b.example", "s", None, "n@example.org", "<b@example.org>"),
    )
    return {"plain": plain.as_bytes(), "truncated": truncated, "huge": big.as_bytes(), "no-type": no_type}


def assert_no_complainant(*texts: str) -> None:
    for text in texts:
        lowered = text.lower()
        for name in COMPLAINANTS:
            assert name not in lowered, f"{name!r} leaked into: {text[:300]}"


# -- parsing --------------------------------------------------------------------------------------------


def test_rfc5965_fields_attribution_and_scrubbing() -> None:
    c = feedback.parse_report(rfc5965(), now=NOW)
    assert (c.reporter, c.feedback_type, c.form) == ("Yahoo CFL", "abuse", "rfc5965")
    assert (c.sending_domain, c.source_ip, c.day.isoformat()) == ("example.org", "192.0.2.10", "2026-07-03")
    assert (c.attributed_by, c.message_id, c.token) == ("message-id", "<news-03@example.org>", "tok123")
    assert c.subject == "Your weekly news, [redacted]"
    assert_no_complainant(json.dumps(c.to_json()), feedback.complaint_line(c))


def test_2026_header_only_by_verp_then_subject() -> None:
    c = feedback.parse_report(jmrp_2026(), now=NOW)
    assert (c.reporter, c.form, c.attributed_by, c.token) == ("Microsoft JMRP", "header-only", "verp", "c0ffee42")
    assert (c.sending_domain, c.source_ip) == ("example.org", "192.0.2.11")
    bare = feedback.parse_report(jmrp_2026(token=None, subject="Summer sale"), now=NOW)
    assert (bare.attributed_by, bare.subject) == ("subject", "Summer sale")


def test_legacy_jmrp() -> None:
    c = feedback.parse_report(jmrp_legacy(), now=NOW)
    assert (c.reporter, c.form, c.sending_domain) == ("Microsoft JMRP", "jmrp-legacy", "example.net")
    assert c.source_ip == "192.0.2.10"  # only in the subject: "complaint about message from 192.0.2.10"
    assert (c.attributed_by, c.message_id) == ("message-id", "<deal-7@example.net>")
    assert c.subject == "Deals for [redacted]"
    assert_no_complainant(json.dumps(c.to_json()), feedback.complaint_line(c))
    stored = {k: v for k, v in c.to_json().items() if k != "reported_domain"}  # a journal line from before
    assert feedback.Complaint.from_json(stored) == c


def test_classic_verp_token_naming_the_recipient_is_dropped() -> None:
    raw = rfc5965().replace(b"bounce+tok123@", b"bounce+carol.reader=yahoo.example@")
    c = feedback.parse_report(raw, now=NOW)
    assert c.token == "" and c.attributed_by == "message-id"
    assert_no_complainant(json.dumps(c.to_json()))


@pytest.mark.parametrize(
    ("name", "reason"), [("plain", "not an ARF"), ("truncated", "truncated"), ("no-type", "Feedback-Type")]
)
def test_garbage_is_refused(name: str, reason: str) -> None:
    with pytest.raises(NotAReport, match=reason):
        feedback.parse_report(garbage()[name], now=NOW)


def test_counts_and_findings() -> None:
    complaints = [feedback.parse_report(r, now=NOW) for r in (rfc5965("02"), rfc5965("03"), jmrp_2026(), jmrp_legacy())]
    assert feedback.count_by(complaints, "domain") == {"example.org": 3, "example.net": 1}
    assert feedback.count_by(complaints, "day") == {"2026-07-02": 1, "2026-07-03": 2, "2026-07-01": 1}
    found = feedback.findings_for_complaints(complaints[:1], complaints, ["example.org", "quiet.example"], 7, NOW)
    by_subject = {f.subject: f for f in found}
    assert sorted(by_subject) == ["example.net", "example.org", "quiet.example"]  # one finding per domain
    org = by_subject["example.org"]
    assert org.summary.startswith("new complaint: Yahoo CFL: abuse complaint on 2026-07-02 about “Your weekly news")
    assert org.summary.endswith("; 3 in the last 7 days")
    assert {k: org.evidence[k] for k in ("count", "new")} == {"count": 3, "new": 1}
    assert org.evidence["newest"] == complaints[2].report_id[:12]  # the last recorded one
    assert by_subject["quiet.example"].code == "no-complaints"
    later = feedback.findings_for_complaints([], complaints, ["example.org"], 7, NOW)[1]
    assert (
        later.summary
        == "3 complaints about mail from example.org in the last 7 days; newest: Microsoft JMRP about “July offers”"
    )
    assert_no_complainant(*(json.dumps(f.to_json()) for f in found))


# -- against Dovecot ------------------------------------------------------------------------------------


def _settings(dovecot: DovecotServer, user: str, password: str, **extra: object) -> FeedbackSettings:
    box = MailboxSettings(
        dovecot.host,
        user,
        dovecot.tls_port,
        "tls",
        password=lambda: password,
        ssl_context=dovecot.ssl_context(),
        timeout=5,
    )
    return FeedbackSettings(box, max_bytes=200_000, **extra)  # type: ignore[arg-type]


def _fill(dovecot: DovecotServer) -> tuple[str, str, int]:
    user, password = f"fbl{secrets.token_hex(4)}", secrets.token_urlsafe(10)
    dovecot.add_user(user, password)
    reports = [rfc5965("02"), rfc5965("03"), jmrp_2026(), jmrp_2026(None, "Summer sale"), jmrp_legacy()]
    for raw in [*reports[:2], *garbage().values(), *reports[2:]]:
        dovecot.deliver(user, raw)
    return user, password, len(reports)


async def test_collect_counts_skips_and_never_twice(
    dovecot: DovecotServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user, password, expected = _fill(dovecot)
    journal = JsonlJournal(tmp_path / "complaints.jsonl")
    caplog.set_level(logging.DEBUG)
    first = await feedback.collect(_settings(dovecot, user, password), journal, NOW)
    assert (len(first.new), first.skipped, first.repeated) == (expected, 4, 0)
    skips = [r.getMessage() for r in caplog.records if "skipped UID" in r.getMessage()]
    assert len(skips) == 4 and any("too large" in s for s in skips)
    assert sorted(c.attributed_by for c in first.new) == ["message-id", "message-id", "message-id", "subject", "verp"]
    again = await feedback.collect(_settings(dovecot, user, password), journal, NOW)
    assert (again.new, again.skipped, again.repeated) == ([], 0, 0)
    recorded = JsonlJournal(journal.path).complaints()
    assert feedback.count_by(recorded, "domain") == {"example.org": 4, "example.net": 1}
    rendered = [feedback.complaint_line(c) for c in recorded]
    findings = feedback.findings_for_complaints(first.new, recorded, ["example.org"], 7, NOW)
    assert_no_complainant(
        journal.path.read_text(),
        *rendered,
        *(json.dumps(f.to_json()) for f in findings),
        *(r.getMessage() for r in caplog.records),
    )


class _DiesAfter:
    """A sink that records through the journal, then 'dies' (hangs until cancelled) after the n-th record."""

    def __init__(self, journal: JsonlJournal, n: int) -> None:
        self.journal, self.n, self.died = journal, n, asyncio.Event()

    async def record(self, complaint: Complaint) -> bool:
        recorded = await self.journal.record(complaint)
        if len(self.journal.seen) >= self.n:
            self.died.set()
            await asyncio.sleep(3600)
        return recorded


@pytest.mark.parametrize("mark", ["flag", "move"])
async def test_kill_mid_batch_then_restart(dovecot: DovecotServer, tmp_path: Path, mark: str) -> None:
    user, password, expected = _fill(dovecot)
    path = tmp_path / "complaints.jsonl"
    dying = _DiesAfter(JsonlJournal(path), 2)
    settings = _settings(dovecot, user, password, mark=mark)
    task = asyncio.create_task(feedback.collect(settings, dying, NOW))
    await asyncio.wait_for(dying.died.wait(), 20)
    task.cancel()  # killed after recording the 2nd complaint, before marking it
    with pytest.raises(asyncio.CancelledError):
        await task
    restarted = JsonlJournal(path)  # a new process: only the file survives
    assert len(restarted.seen) == 2
    result = await feedback.collect(settings, restarted, NOW)
    assert (len(result.new), result.repeated) == (expected - 2, 1)
    complaints = JsonlJournal(path).complaints()
    assert len(complaints) == expected and len({c.report_id for c in complaints}) == expected
    async with Mailbox(settings.mailbox) as box:
        await box.select("INBOX")
        assert await box.unprocessed(settings.keyword) == []
        if mark == "move":
            assert len(await box.search("ALL")) == 4  # only the garbage stays
            assert await box.select("Processed") == expected


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = JsonlJournal(path)
    asyncio.run(journal.record(feedback.parse_report(rfc5965(), now=NOW)))
    with path.open("a") as handle:
        handle.write('{"report_id": "abc", "rep')
    assert len(JsonlJournal(path).complaints()) == 1


def test_findings_in_the_operators_language() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    complaints = [feedback.parse_report(r, now=NOW) for r in (rfc5965("02"), rfc5965("03"), jmrp_2026(), jmrp_legacy())]
    with use_language("es"):
        found = feedback.findings_for_complaints(complaints[:1], complaints, ["example.org", "quiet.example"], 7, NOW)
        later = feedback.findings_for_complaints([], complaints, ["example.org"], 7, NOW)[1]
    by_subject = {f.subject: f for f in found}
    org = by_subject["example.org"]
    assert org.summary.startswith("nueva queja: Yahoo CFL: queja abuse del 2026-07-02 sobre «Your weekly news")
    assert org.summary.endswith("; 3 en los últimos 7 días")
    assert by_subject["quiet.example"].summary == "0 quejas sobre correo de quiet.example en los últimos 7 días"
    assert later.summary.startswith("3 quejas sobre correo de example.org en los últimos 7 días; la más reciente: ")
    assert org.advice.startswith("Busca la lista")
