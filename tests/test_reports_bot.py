"""The reports end to end: the Dovecot mailbox, the store, the monitor's alerts, `!dmarc`, `!tlsrpt`, the CLI.

Reports are built here in the shape of the real ones (tests/test_reports.py reads those) so that their days
follow the test clock; the local DNS server answers for example.org's MX, helo host and SPF.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import re
import secrets
import zipfile
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

import bot.commands.reports  # noqa: F401  (registers !dmarc, !tlsrpt and the reports family)
from bot.cli import main
from bot.config.loader import Config, parse_config
from checks import CheckContext, Resolver
from checks.mailbox import Mailbox
from checks.reports import ReportProblem
from checks.reports.collect import ReportsSettings, collect
from checks.reports.model import Report
from checks.reports.store import ReportStore
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.dovecot import DovecotServer
from tests.helpers import Clock
from tests.test_provider_commands import World, ask

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OURS, HELO_IP, MX_IP, SPF_IP, SPOOFER = "192.0.2.25", "192.0.2.26", "192.0.2.27", "198.51.100.9", "203.0.113.66"
SAMPLES = Path(__file__).parent / "data" / "reports" / "parsedmarc" / "samples"

Row = tuple[str, int, str, str, str]  # source ip, count, disposition, dkim, spf


def aggregate(
    org: str, email: str, report_id: str, day: int, rows: Sequence[Row], domain: str = "example.org"
) -> bytes:
    """A report of `day` days before NOW's date, shaped like Google's and Yahoo's."""
    begin = int(datetime.combine((NOW - timedelta(days=day)).date(), datetime.min.time(), UTC).timestamp())
    records = "".join(
        f"<record><row><source_ip>{ip}</source_ip><count>{n}</count><policy_evaluated><disposition>{disp}"
        f"</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated></row><identifiers>"
        f"<header_from>{domain}</header_from></identifiers><auth_results><spf><domain>{domain}</domain>"
        f"<result>{spf}</result></spf></auth_results></record>"
        for ip, n, disp, dkim, spf in rows
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8" ?><feedback><version>1.0</version><report_metadata>'
        f"<org_name>{org}</org_name><email>{email}</email><report_id>{report_id}</report_id><date_range>"
        f"<begin>{begin}</begin><end>{begin + 86399}</end></date_range></report_metadata><policy_published>"
        f"<domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p><sp>quarantine</sp>"
        f"<pct>100</pct></policy_published>{records}</feedback>"
    ).encode()


def tls_report(day: int, failures: int) -> bytes:
    start = (NOW - timedelta(days=day)).date().isoformat()
    details = [
        {
            "result-type": "certificate-expired",
            "receiving-mx-hostname": "mx.example.org",
            "failed-session-count": failures,
        }
    ]
    return json.dumps(
        {
            "organization-name": "Google Inc.",
            "date-range": {"start-datetime": f"{start}T00:00:00Z", "end-datetime": f"{start}T23:59:59Z"},
            "contact-info": "smtp-tls-reporting@google.com",
            "report-id": f"{start}T00:00:00Z_example.org@google.com",
            "policies": [
                {
                    "policy": {"policy-type": "sts", "policy-domain": "example.org"},
                    "summary": {"total-successful-session-count": 90, "total-failure-session-count": failures},
                    "failure-details": details if failures else [],
                }
            ],
        }
    ).encode()


def message(sender: str, subject: str, name: str, payload: bytes, kind: str = "zip") -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, "dmarc@example.org", subject
    mail.set_content(f"This is an aggregate report: {subject}")
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, payload)
        mail.add_attachment(buffer.getvalue(), "application", "zip", filename=name + ".zip")
    elif kind == "gzip":
        mail.add_attachment(gzip.compress(payload), "application", "gzip", filename=name + ".gz")
    else:
        mail.add_attachment(gzip.compress(payload), "application", "tlsrpt+gzip", filename=name + ".gz")
    return mail.as_bytes()


def google(day: int, rows: Sequence[Row]) -> bytes:
    rid = f"g{day}-{abs(hash(tuple(rows))) % 10**8}"
    xml = aggregate("google.com", "noreply-dmarc-support@google.com", rid, day, rows)
    return message(
        "noreply-dmarc-support@google.com", f"Report domain: example.org Report-ID: {rid}", f"g{day}.xml", xml
    )


def yahoo(day: int, rows: Sequence[Row]) -> bytes:
    xml = aggregate("Yahoo", "dmarchelp@yahooinc.com", f"y{day}.{len(rows)}", day, rows)
    return message(
        "dmarchelp@yahooinc.com", "Report Domain: example.org Submitter: yahoo.com", f"y{day}.xml", xml, "gzip"
    )


MIXED: list[Row] = [
    (OURS, 300, "none", "pass", "pass"),
    (HELO_IP, 20, "none", "pass", "fail"),
    (MX_IP, 10, "none", "pass", "pass"),
    (SPF_IP, 5, "none", "fail", "pass"),
    (SPOOFER, 42, "reject", "fail", "fail"),
]


@pytest.fixture
def zone(dns_server: DnsServer) -> DnsServer:
    dns_server.add("example.org", "MX", "10 mx.example.org.")
    dns_server.add("mx.example.org", "A", MX_IP)
    dns_server.add("mail.example.org", "A", HELO_IP)
    dns_server.add("example.org", "TXT", '"v=spf1 ip4:198.51.100.0/24 -all"')
    return dns_server


@pytest.fixture
async def ctx(zone: DnsServer, dovecot: DovecotServer) -> AsyncIterator[CheckContext]:
    clock = Clock()
    clock.now = NOW
    resolver = Resolver([zone.address], timeout=1.0, cache=False)
    context = CheckContext(resolver=resolver, timeout=1.0, clock=clock, ssl_context=dovecot.ssl_context())
    yield context
    await context.aclose()


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> tuple[str, str]:
    user, password = f"rua{secrets.token_hex(4)}", secrets.token_urlsafe(10)
    dovecot.add_user(user, password)
    return user, password


def reports_config(tmp_path: Path, dovecot: DovecotServer, user: str, password: str, **extra: object) -> Config:
    section = {"host": dovecot.host, "port": dovecot.tls_port, "user": user, "password": password, "timeout": 5}
    monitor = {"ips": [OURS], "domains": ["example.org"], "helo_names": ["mail.example.org"]}
    data = {"monitor": monitor, "reports": {**section, **extra}, "state": {"dir": str(tmp_path / "state")}}
    return parse_config(data)


def world_of(config: Config, ctx: CheckContext) -> World:
    """The reports family in a monitor of its own, on the context's test clock."""
    clock = ctx.clock
    assert isinstance(clock, Clock)
    return World(config, ctx, clock, "reports")


def settings_of(config: Config, ctx: CheckContext) -> ReportsSettings:
    from bot.config.reports import reports_settings

    settings = reports_settings(config, ctx)
    assert settings is not None
    return settings


# -- the mailbox ------------------------------------------------------------------------------------------


async def test_mailbox_records_then_marks_and_never_counts_twice(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    user, password = mailbox
    for raw in (google(1, MIXED), yahoo(1, MIXED[:1]), google(1, MIXED)):  # Google's sent twice
        dovecot.deliver(user, raw)
    dovecot.deliver(user, message("x@example.net", "broken", "bad.xml", b"<feedback><oops></feedback>"))
    dovecot.deliver(user, message("noreply-smtp-tls-reporting@google.com", "TLS", "t.json", tls_report(1, 3), "tls"))
    config = reports_config(tmp_path, dovecot, user, password)
    store = ReportStore(tmp_path / "r.sqlite3")
    first = await collect(settings_of(config, ctx), store)
    assert (len(first.new), first.repeated, first.messages) == (3, 1, 5)
    assert [p.code for p in first.problems] == ["xml"] and "UID 4 from x@example.net" in first.problems[0].source
    again = await collect(settings_of(config, ctx), store)
    assert (again.new, again.repeated, again.messages, again.problems) == ([], 0, 0, [])
    day = (NOW - timedelta(days=1)).date()
    assert store.counts("google", day).messages == 377 and store.counts("google", day, SPOOFER).rejected == 42
    assert store.counts("yahoo", day).messages == 300
    async with Mailbox(settings_of(config, ctx).mailbox) as box:
        await box.select("INBOX")
        assert await box.search("KEYWORD", "$RepbotReportProblem") == [4]  # the broken one, left for a look
        assert await box.unprocessed("$RepbotReport") == []


class _DiesAfter:
    """Records through the store, then hangs (as if killed) after the n-th new report."""

    def __init__(self, store: ReportStore, n: int) -> None:
        self.store, self.n, self.died = store, n, asyncio.Event()

    async def record(self, report: Report) -> bool:
        new = await self.store.record(report)
        if self.store.report_count() >= self.n:
            self.died.set()
            await asyncio.sleep(3600)
        return new

    async def record_problem(self, problem: ReportProblem, key: str) -> bool:
        return await self.store.record_problem(problem, key)


@pytest.mark.parametrize("mark", ["flag", "move"])
async def test_a_kill_mid_mailbox_loses_nothing_and_counts_nothing_twice(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path, mark: str
) -> None:
    user, password = mailbox
    for day in (1, 2, 3, 4):
        dovecot.deliver(user, google(day, MIXED))
    settings = settings_of(reports_config(tmp_path, dovecot, user, password, mark=mark), ctx)
    path = tmp_path / "r.sqlite3"
    dying = _DiesAfter(ReportStore(path), 2)
    task = asyncio.create_task(collect(settings, dying))
    await asyncio.wait_for(dying.died.wait(), 20)
    task.cancel()  # killed after storing the 2nd report, before marking its message
    with pytest.raises(asyncio.CancelledError):
        await task
    dying.store.close()
    restarted = ReportStore(path)
    result = await collect(settings, restarted)
    assert (len(result.new), result.repeated) == (2, 1)
    assert restarted.report_count() == 4
    assert sum(restarted.counts("google", (NOW - timedelta(days=d)).date()).messages for d in (1, 2, 3, 4)) == 4 * 377


# -- the monitor's alerts ---------------------------------------------------------------------------------


async def test_alerts_spoofing_failing_alignment_and_a_quiet_reporter(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    user, password = mailbox
    config = reports_config(tmp_path, dovecot, user, password, fail_percent=10.0, min_messages=20)
    world = world_of(config, ctx)
    world.clock.now = NOW
    for day in (6, 5, 4, 3):
        dovecot.deliver(user, google(day, MIXED[:4]))  # daily, all ours, all passing
    assert await world.run() == [] and await world.run() == []  # the baseline: all ok
    dovecot.deliver(user, yahoo(1, [(SPOOFER, 42, "quarantine", "fail", "fail"), (OURS, 100, "none", "fail", "fail")]))
    assert await world.run() == []  # a candidate: confirmation wants a second run
    [alert] = await world.run()
    assert "dmarc-sources example.org (unknown senders): warn (was ok) — 1 unknown sources sent 42 messages" in alert
    assert "203.0.113.66 (42 to yahoo: 42 quarantined, none passed DMARC)" in alert
    assert "dmarc-reports example.org (yahoo): fail" in alert and "DMARC 100 (100.0 %)" in alert
    assert await world.run() == []  # no news, no message
    world.clock.now += timedelta(days=2)  # Google's last report is for NOW - 3 days
    await world.run()
    [quiet] = await world.run()
    assert "dmarc-reporter example.org (google for example.org): warn (was ok)" in quiet
    assert re.search(r"google sent example.org.s DMARC reports daily until \S+ and none for \d days", quiet), quiet
    world.clock.now += timedelta(days=7)  # the window moves past the bad reports; Google reports again
    dovecot.deliver(user, google(-10, MIXED[:1]))
    await world.run()
    [resolved] = await world.run()
    assert "example.org: dmarc-sources unknown senders ok again" in resolved
    assert "example.org: dmarc-reporter google for example.org ok again" in resolved
    assert "example.org: dmarc-reports yahoo ok again" in resolved and "counted no mail from your IPs" in resolved


async def test_tls_failures_alert_with_the_fix(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    user, password = mailbox
    world = world_of(reports_config(tmp_path, dovecot, user, password), ctx)
    dovecot.deliver(user, message("noreply-smtp-tls-reporting@google.com", "TLS", "t.json", tls_report(2, 0), "tls"))
    assert await world.run() == [] and await world.run() == []
    dovecot.deliver(user, message("noreply-smtp-tls-reporting@google.com", "TLS", "t1.json", tls_report(1, 30), "tls"))
    await world.run()
    [alert] = await world.run()
    assert (
        "tlsrpt-reports example.org (sessions): warn (was ok)" in alert
        and "mx.example.org: certificate-expired 30" in alert
    )
    assert "renew it and reload the MTA" in alert


async def test_alerts_and_the_digest_in_the_operators_language(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    """A Spanish operator's 3 a.m.: spoofing, failing alignment, TLS failures and the digest line, in Spanish,
    with Spanish numbers; codes, reporter names and result types as they are."""
    from dataclasses import replace

    from tests.helpers import english_words

    user, password = mailbox
    config = reports_config(tmp_path, dovecot, user, password, fail_percent=10.0, min_messages=20)
    world = world_of(replace(config, language="es"), ctx)
    world.clock.now = NOW
    spoofed = [(SPOOFER, 1234, "quarantine", "fail", "fail"), (OURS, 100, "none", "fail", "fail")]
    dovecot.deliver(user, yahoo(1, spoofed))
    dovecot.deliver(user, message("noreply-smtp-tls-reporting@google.com", "TLS", "t.json", tls_report(1, 30), "tls"))
    assert await world.run() == []  # a candidate: confirmation wants a second run
    [alert] = await world.run()
    assert "1 origen desconocido envió 1.234 mensajes como example.org en 7 días" in alert
    assert "203.0.113.66 (1.234 según yahoo: 1.234 en cuarentena, ninguno pasó DMARC)" in alert
    assert "yahoo contó 100 mensajes de tus IP como example.org en 7 días; más del 10 % falla:" in alert
    assert "DMARC 100 (100,0 %)" in alert
    assert "informes TLS: 30 de 120 sesiones hacia example.org con fallo (25,0 %) en 7 días" in alert
    assert "certificate-expired: el certificado del MX ha caducado: renuévalo y recarga el MTA." in alert
    world.clock.now = NOW
    world.monitor.digest()
    await world.monitor.deliver()
    digest = world.transport.texts()[-1]
    day = (NOW - timedelta(days=1)).date()
    line = next(line for line in digest.splitlines() if line.startswith("informes DMARC"))
    assert line == (
        f"informes DMARC del {day}: 1 (yahoo) con 1.334 mensajes en total; el 0,0 % pasa DMARC; "
        "informes TLS: 30 de 120 sesiones con fallo"
    )
    for text in (alert, line):
        assert not english_words(text), english_words(text)


# -- the commands and the CLI -----------------------------------------------------------------------------


async def test_dmarc_and_tlsrpt_commands(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    user, password = mailbox
    config = reports_config(tmp_path, dovecot, user, password)
    [empty] = await ask(config, ctx, "!dmarc")
    assert "no DMARC aggregate reports in the last 7 days" in empty
    dovecot.deliver(user, google(1, MIXED))
    dovecot.deliver(user, message("noreply-smtp-tls-reporting@google.com", "TLS", "t.json", tls_report(1, 3), "tls"))
    await collect(settings_of(config, ctx), ReportStore(Path(config.state_dir) / "reports.sqlite3"))
    dmarc, tls, bad = await ask(config, ctx, "!dmarc 3", "!tlsrpt", "!dmarc lots")
    lines = dmarc.splitlines()
    assert lines[0] == "DMARC reports, last 3 days: 1 reports, 377 messages"
    assert lines[1] == "unknown sources (not yours)" and SPOOFER in lines[2] and "42 rejected/quarantined" in lines[2]
    assert lines[3] == "your sources"
    assert "(in [monitor] ips)" in lines[4] and "(helo host mail.example.org)" in dmarc
    assert "(MX mx.example.org)" in dmarc and "(SPF of example.org)" in dmarc
    assert "example.org: 90 sessions ok, 3 failed" in tls and "certificate-expired × 3" in tls
    assert "give a number of days" in bad


def test_cli_lists_problems_and_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reports", "--json", str(SAMPLES / "aggregate"), str(SAMPLES / "empty.xml")]) == 2
    data = json.loads(capsys.readouterr().out)
    by_file = {p["file"].rsplit("/", 1)[-1]: p for p in data["problems"]}
    assert by_file["empty.xml"]["error"] == "empty file" and by_file["invalid_xml.xml"]["severity"] == "error"
    outlook = next(r for r in data["reports"] if r["reporter"] == "Outlook.com")
    assert {k: outlook[k] for k in ("kind", "report_id", "policy_domain", "begin", "end")} == {
        "kind": "dmarc", "report_id": "cfeafefe4129445e8c81018bd9177197", "policy_domain": "example.com",
        "begin": "2024-03-30T00:00:00Z", "end": "2024-03-31T00:00:00Z",
    }  # fmt: skip
    assert main(["reports", str(SAMPLES / "smtp_tls" / "rfc8460.json")]) == 0
    assert "5,326 ok / 303 failed" in capsys.readouterr().out
    config = tmp_path / "repbot.toml"
    config.write_text(f'[state]\ndir = "{tmp_path}"\n')
    assert main(["reports", "--record", "-c", str(config), str(SAMPLES / "extract_report")]) == 0
    # nice-input three ways is one report; changed-input is the same id from another reporter (fred.com)
    assert "2 new reports stored" in capsys.readouterr().out


def test_cli_table_in_spanish(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "repbot.toml"
    config.write_text(f'[state]\ndir = "{tmp_path}"\n')
    tls, empty = SAMPLES / "smtp_tls" / "rfc8460.json", SAMPLES / "empty.xml"
    assert main(["reports", "--record", "-c", str(config), str(SAMPLES / "aggregate"), str(tls), str(empty)]) == 2
    out = capsys.readouterr().out
    assert "5.326 correctas / 303 fallidas" in out, out
    assert re.search(r"dmarc +\S+ +example\.com +2024-04-01  2\.286 mensajes \(2\.286 registros, 0 superaron", out)
    assert f"problema (error) {empty}: archivo vacío" in out  # the parser's diagnosis, in the reader's language
    assert re.search(r"\n\d+ informes nuevos guardados en ", out), out
    for english in (" messages (", " records", "passed DMARC", " ok / ", "problem (", "new reports stored"):
        assert english not in out, english


async def test_metrics_digest_and_timeline_row(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    from typing import cast

    from bot.metrics import StoreCollector
    from bot.timeline import timeline_rows
    from bot.transports.base import Transport

    user, password = mailbox
    world = world_of(reports_config(tmp_path, dovecot, user, password), ctx)
    dovecot.deliver(user, google(1, MIXED))
    dovecot.deliver(user, message("noreply-smtp-tls-reporting@google.com", "TLS", "t.json", tls_report(1, 3), "tls"))
    await world.run()
    await world.run()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in StoreCollector(world.monitor, cast(Transport, world.transport)).collect()
        for s in family.samples
    }
    spoofed = (("reporter", "google"), ("result", "fail"), ("source_ip", SPOOFER))
    assert samples[("repbot_dmarc_messages", spoofed)] == 42
    assert samples[("repbot_dmarc_messages", (("reporter", "google"), ("result", "pass"), ("source_ip", OURS)))] == 300
    assert samples[("repbot_tlsrpt_sessions", (("domain", "example.org"), ("result", "certificate-expired")))] == 3
    assert samples[("repbot_tlsrpt_sessions", (("domain", "example.org"), ("result", "successful")))] == 90
    world.clock.now = NOW
    world.monitor.digest()
    await world.monitor.deliver()
    digest = world.transport.texts()[-1]
    day = (NOW - timedelta(days=1)).date()
    assert f"DMARC reports for {day}: 1 (google) counted 377 messages, 88.9 % passing DMARC" in digest
    assert "TLS reports: 3 of 93 sessions failed" in digest
    rows = timeline_rows(world.monitor.store.history(), world.monitor.store.states(), now=world.clock.now, days=7)
    assert [(r.group, r.label) for r in rows if r.check == "dmarc-reports"] == [("DMARC reports", "google")]


async def test_xoauth2_from_a_token_command(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    user, _ = mailbox
    token = secrets.token_urlsafe(16)
    dovecot.add_token(token, user)
    section = {"host": dovecot.host, "port": dovecot.tls_port, "user": user, "token_command": f"echo {token}"}
    config = parse_config({"reports": section, "state": {"dir": str(tmp_path)}})
    dovecot.deliver(user, yahoo(1, MIXED[:2]))
    result = await collect(settings_of(config, ctx), ReportStore(tmp_path / "r.sqlite3"))
    assert len(result.new) == 1 and result.new[0].provider == "yahoo"


def test_reports_config_problems_name_their_keys() -> None:
    from bot.config.loader import ConfigError

    section = {"host": "imap.example.org", "user": "u", "fail_percent": 0, "quiet_days": 0, "mark": "delete"}
    with pytest.raises(ConfigError) as caught:
        parse_config({"reports": section})
    text = str(caught.value)
    assert "reports.password" in text and "reports.fail_percent" in text and "reports.quiet_days" in text
    assert "reports.mark" in text


async def test_a_refused_login_is_unknown_and_a_broken_report_is_announced(
    dovecot: DovecotServer, mailbox: tuple[str, str], ctx: CheckContext, tmp_path: Path
) -> None:
    user, password = mailbox
    wrong = world_of(reports_config(tmp_path / "a", dovecot, user, "not-the-password"), ctx)
    assert await wrong.run() == []  # unknown: nothing said before [alerts] unknown_after (2 h)
    [blind] = await wrong.run()  # 6 h later
    assert "cannot check reports 127.0.0.1 (reports mailbox) since" in blind and "refused the password" in blind
    assert "not-the-password" not in blind
    world = world_of(reports_config(tmp_path / "b", dovecot, user, password), ctx)
    assert await world.run() == [] and await world.run() == []
    dovecot.deliver(user, message("x@example.net", "broken", "bad.xml", b"<feedback><oops></feedback>"))
    await world.run()
    [alert] = await world.run()
    assert "reports 127.0.0.1 (unreadable reports): warn (was ok) — 1 reports could not be read in 7 days" in alert
    assert "from x@example.net" in alert and "not valid XML" in alert
