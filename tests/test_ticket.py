"""`!ticket` and `repbot ticket`: the evidence pack for a delisting request.

The pure text (`checks.ticket`) from hand-made facts; then a whole pack from a test world: the local DNS server
(PTR, SPF, DMARC, blocklists), the local SNDS (a RED IP with trap hits, blocked), canaries in the state (a real
S3150 bounce, a 250-then-missing message) and complaints in the journal.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from bot.app import Bot, Permissions, RateLimiter
from bot.cli import main
from bot.commands.catalog import REGISTRY
from bot.commands.registry import Services
from bot.config.loader import Config, parse_config
from bot.monitor.canary import HISTORY, _verdict_json
from bot.monitor.core import STATE_FILE, Monitor
from bot.monitor.providers import JOURNAL_FILE
from bot.monitor.store import Store
from bot.transports.base import Transport
from checks import CheckContext, Resolver
from checks.canary.probe import Canary
from checks.canary.verdict import CanaryVerdict
from checks.providers import feedback
from checks.providers._feedback_parse import Complaint
from checks.ticket import AuthPassRates, DailyVolume, Fact, Missing, TicketFacts, choose_form, ticket_text
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.http_providers import ProviderServer
from tests.helpers import Clock, RecordingTransport
from tests.test_commands import ADMIN, said
from tests.test_dkim import rsa_key, split_txt
from tests.test_dnsbl import publish_test_points

NOW = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)
IP = "192.0.2.11"  # RED with 41 trap hits on 2026-07-03, and blocked, in the local SNDS
DOMAIN = "example.org"
S3150 = (
    "Jul  3 10:00:02 mail postfix/smtp[1234]: 4F1A2B3C4D: to=<seed@outlook.com>, "
    "relay=outlook-com.olc.protection.outlook.com[52.101.0.1]:25, delay=1.2, dsn=5.7.1, status=bounced "
    "(host outlook-com.olc.protection.outlook.com[52.101.0.1] said: 550 5.7.1 Unfortunately, messages from "
    "[192.0.2.11] weren't sent. Please contact your Internet service provider since part of their network is on "
    "our block list (S3150). (in reply to MAIL FROM command))"
)
ACCEPTED = (
    "Jul  2 09:00:05 mail postfix/smtp[1200]: 9A8B7C6D5E: to=<seed@outlook.com>, "
    "relay=outlook-com.olc.protection.outlook.com[52.101.0.1]:25, dsn=2.6.0, status=sent "
    "(250 2.6.0 <c2@example.org> [InternalId=1] Queued mail for delivery)"
)


# -- the text ---------------------------------------------------------------------------------------------------


def test_forms_follow_the_provider_and_the_evidence() -> None:
    ban = (Fact("550 5.7.606 Access denied, banned sending IP [192.0.2.11]"),)
    assert choose_form("microsoft", ban)[0].url == "https://sender.office.com/"
    consumer, note = choose_form("microsoft", (Fact("550 5.7.1 ... (S3150)"),))
    assert consumer.url == "https://olcsupport.office.com/" and "sender.office.com" in note
    assert choose_form("m365")[0].name == "the Microsoft 365 delist portal"
    assert "support.google.com" in choose_form("google")[0].url
    assert "senders.yahooinc.com" in choose_form("yahoo")[0].url


def test_every_fact_is_dated_and_missing_ones_are_marked() -> None:
    facts = TicketFacts(
        "outlook",
        IP,
        (DOMAIN,),
        NOW,
        ptr=(Fact("192.0.2.11 has PTR mail.example.org, which resolves back", NOW, "DNS"),),
        rejections=(Fact("550 5.7.1 ... (S3150)", NOW - timedelta(days=1), "canary"),),
        auth_rates=(AuthPassRates("Outlook.com", date(2026, 7, 1), date(2026, 7, 2), 120, 1.0, 0.99, 1.0),),
        volume=(DailyVolume(date(2026, 7, 2), "outlook", 130, 2, 1),),
    )
    text = ticket_text(facts, sender="postmaster@example.org")
    assert "Send it with the Outlook.com sender support form: https://olcsupport.office.com/" in text
    assert "  - [2026-07-04 12:00 UTC, DNS] 192.0.2.11 has PTR mail.example.org" in text
    assert "  - [2026-07-03 12:00 UTC, canary] 550 5.7.1 ... (S3150)" in text
    assert "[2026-07-01 to 2026-07-02, Outlook.com] 120 messages: DMARC 100.0%, SPF 99.0%, DKIM 100.0%" in text
    assert "  - [2026-07-02] 130 delivered, 2 deferred, 1 bounced" in text
    assert "SNDS: not available (not configured)" in text
    assert "HELO name: not available" in text and text.rstrip().endswith("----- end -----")
    bare = ticket_text(TicketFacts("google", IP, (), NOW))
    assert "DMARC aggregate reports: not available (not gathered)" in bare
    assert "(our MTA log): not available (not gathered)" in bare
    assert "SNDS" not in bare  # Microsoft's alone


# -- a whole pack from a test world --------------------------------------------------------------------------------


@pytest.fixture
async def ctx(dns_server: DnsServer) -> AsyncIterator[CheckContext]:
    dns_server.add("11.2.0.192.in-addr.arpa", "PTR", "mail.example.org.")
    dns_server.add("mail.example.org", "A", IP)
    dns_server.add(DOMAIN, "TXT", '"v=spf1 ip4:192.0.2.11 -all"')
    dns_server.add(f"_dmarc.{DOMAIN}", "TXT", '"v=DMARC1; p=reject; rua=mailto:dmarc@example.org"')
    dns_server.add(f"s1._domainkey.{DOMAIN}", "TXT", split_txt(f"v=DKIM1; k=rsa; p={rsa_key(2048)}"))
    publish_test_points(dns_server)
    dns_server.add("11.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    resolver = Resolver([dns_server.address], timeout=1.0)
    context = CheckContext(resolver, timeout=1.0, clock=Clock(NOW), dkim_selectors={DOMAIN: ("s1",)})
    yield context
    await context.aclose()


def _canary(token: str, sent: datetime, reply: str) -> Canary:
    return Canary(
        "outlook", token, f"<{token}@example.org>", "seed@outlook.com", "canary@example.org", sent,
        sent + timedelta(hours=1), submitted=True, reply=reply,
    )  # fmt: skip


def world(tmp_path: Path, providers: ProviderServer) -> Config:
    config = parse_config(
        {
            "monitor": {"ips": [IP], "domains": [DOMAIN], "helo_names": ["mail.example.org", "old.example.org"]},
            "snds": {"key": "good", "legacy_base": providers.snds_legacy, "days": 1},
            "feedback": {"host": "imap.example.org", "user": "fbl", "password": "x"},
            "state": {"dir": str(tmp_path)},
        }
    )
    store = Store(tmp_path / STATE_FILE)
    bounced = CanaryVerdict(_canary("c1", NOW - timedelta(days=1, hours=2), "250 2.0.0 Ok: queued"), "bounced",
                            "bounced by the remote: 550 5.7.1 Unfortunately ... (S3150)", (S3150,))  # fmt: skip
    dropped = CanaryVerdict(_canary("c2", NOW - timedelta(days=2, hours=3), "250 2.0.0 Ok: queued"),
                            "missing-accepted", "accepted by the remote with 250 and in neither Inbox nor Junk",
                            (ACCEPTED,))  # fmt: skip
    history = [_verdict_json(dropped, NOW - timedelta(days=2)), _verdict_json(bounced, NOW - timedelta(days=1))]
    store.set_meta(HISTORY, {"outlook": history})
    store.close()
    return config


async def _complaints(tmp_path: Path) -> None:
    journal = feedback.JsonlJournal(tmp_path / JOURNAL_FILE)
    for n in range(3):
        await journal.record(
            Complaint(
                f"r{n}",
                "Microsoft JMRP",
                "abuse",
                "header-only",
                NOW - timedelta(days=1, hours=n),
                DOMAIN,
                IP,
                f"<m{n}@example.org>",
                "Newsletter",
                "",
                "message-id",
            )
        )


async def test_ticket_pack_from_a_world(providers: ProviderServer, ctx: CheckContext, tmp_path: Path) -> None:
    config = world(tmp_path, providers)
    await _complaints(tmp_path)
    transport = RecordingTransport()
    store = Store(tmp_path / STATE_FILE)
    monitor = Monitor(config, store, cast(Transport, transport), ctx, {}, clock=ctx.clock)
    services = Services(config, ctx, cast(Transport, transport), REGISTRY, NOW, monitor=monitor)
    bot = Bot(services, Permissions((ADMIN,)), RateLimiter(None), REGISTRY)
    await bot.handle(said(ADMIN, f"!ticket microsoft {IP}", event_id="$t1"))
    store.close()
    [(_room, filename, mimetype, data)] = transport.files
    assert (filename, mimetype) == (f"repbot-ticket-microsoft-{IP}.txt", "text/plain")
    text = data.decode()
    assert transport.replies[-1] == text  # the same pack, as text too
    assert "Send it with the Outlook.com sender support form: https://olcsupport.office.com/" in text
    assert "Outlook.com refuses mail from this address" in text
    assert "Reverse DNS (PTR):\n  - [2026-07-04 12:00 UTC, DNS] PTR mail.example.org, forward-confirmed" in text
    assert f"[2026-07-03 12:00 UTC, canary to seed@outlook.com] {S3150}" in text  # the exact line
    assert "message <c2@example.org> (token c2) sent 2026-07-02T09:00:00+00:00 to seed@outlook.com" in text
    assert f"log: {ACCEPTED}" in text
    assert "[2026-07-03, SNDS] 192.0.2.11 on 2026-07-03: RED" in text and "41 trap hits" in text
    assert "Microsoft blocks 192.0.2.11: Blocked due to user complaints" in text
    assert "HELO name:\n  - [2026-07-04 12:00 UTC, DNS] mail.example.org (configured in [monitor] helo_names) " in text
    assert "resolves to 192.0.2.11" in text and "old.example.org (configured in [monitor] helo_names) does not" in text
    assert "  - [2026-07-03, SNDS] mail.example.org (the sample HELO SNDS recorded)" in text
    assert "[2026-07-03, feedback loop] 3 complaints about mail from example.org" in text
    assert "[2026-07-04 12:00 UTC, DNS] listed in Spamhaus ZEN" in text and "other blocklists checked" in text
    assert "could not be checked" not in text
    assert "example.org spf: SPF record: v=spf1 ip4:192.0.2.11 -all" in text
    assert "example.org dkim:" in text and "2048" in text and "s1" in text
    assert "example.org dmarc: DMARC policy reject" in text and "example.org mta-sts:" in text
    assert "not available (no [reports] mailbox is configured (see docs/reports.md))" in text
    assert "x" not in [line for line in text.splitlines() if "password" in line]  # no secret anywhere
    assert "good" not in text


async def test_a_spanish_room_gets_the_request_in_english_and_says_why(
    providers: ProviderServer, ctx: CheckContext, dns_server: DnsServer, tmp_path: Path
) -> None:
    dns_server.set_behaviour("old.example.org", "servfail")  # a DNS outcome inside the request
    config = replace(world(tmp_path, providers), language="es")
    transport = RecordingTransport()
    services = Services(config, ctx, cast(Transport, transport), REGISTRY, NOW)
    bot = Bot(services, Permissions((ADMIN,)), RateLimiter(None), REGISTRY)
    await bot.handle(said(ADMIN, f"!ticket microsoft {IP}", event_id="$t4"))
    [(_room, _name, _type, data)] = transport.files
    text, reply = data.decode(), transport.replies[-1]
    assert reply.startswith("La solicitud queda en inglés: es para el equipo de soporte") and text in reply
    assert "old.example.org (configured in [monitor] helo_names) could not be resolved (SERVFAIL from" in text
    assert "[2026-07-04 12:00 UTC, DNS] listed in Spamhaus ZEN" in text and "example.org dmarc: DMARC policy" in text
    for spanish in ("desde", "en la lista de bloqueo", "política", "registro"):
        assert spanish not in text, spanish


async def test_ticket_needs_a_provider_and_an_ip(providers: ProviderServer, ctx: CheckContext, tmp_path: Path) -> None:
    transport = RecordingTransport()
    services = Services(parse_config({}), ctx, cast(Transport, transport), REGISTRY, NOW)
    bot = Bot(services, Permissions((ADMIN,)), RateLimiter(None), REGISTRY)
    await bot.handle(said(ADMIN, "!ticket hotmai1 192.0.2.1", event_id="$t2"))
    await bot.handle(said(ADMIN, "!ticket yahoo", event_id="$t3"))
    assert "is not a provider" in transport.replies[0]
    assert "which IP?" in transport.replies[1] and not transport.files


def test_cli_ticket(
    providers: ProviderServer, dns_server: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "repbot.toml"
    config.write_text(f'[monitor]\nips = ["{IP}"]\n[state]\ndir = "{tmp_path}"\n', encoding="utf-8")
    out = tmp_path / "ticket.txt"
    argv = ["ticket", "google", IP, "-c", str(config), "--nameserver", dns_server.address, "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "Google's sender contact form" in printed
    assert "Refusals by your servers (exact replies): not available (no state directory with canary results)" in printed
    assert main([*argv[:-2], "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["form"], answer["text"]) == ("https://support.google.com/mail/contact/msgdelivery", printed)


_AGGREGATE = f"""<?xml version="1.0"?>
<feedback>
  <report_metadata><org_name>Outlook.com</org_name><email>dmarcreport@microsoft.com</email>
    <report_id>r-2026-07-03</report_id>
    <date_range><begin>1783036800</begin><end>1783123199</end></date_range></report_metadata>
  <policy_published><domain>{DOMAIN}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p></policy_published>
  <record><row><source_ip>{IP}</source_ip><count>30</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>{DOMAIN}</header_from></identifiers>
    <auth_results><dkim><domain>{DOMAIN}</domain><result>pass</result></dkim>
      <spf><domain>{DOMAIN}</domain><result>pass</result></spf></auth_results></record>
  <record><row><source_ip>{IP}</source_ip><count>10</count>
      <policy_evaluated><disposition>none</disposition><dkim>fail</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>{DOMAIN}</header_from></identifiers>
    <auth_results><dkim><domain>{DOMAIN}</domain><result>fail</result></dkim>
      <spf><domain>{DOMAIN}</domain><result>pass</result></spf></auth_results></record>
</feedback>
"""


async def test_the_pack_states_the_providers_own_counts_and_the_daily_volume(tmp_path: Path) -> None:
    from bot.config.reports import store_path
    from bot.config.traffic import traffic_families
    from bot.monitor.traffic import TrafficFollower
    from bot.ticket import _auth_rates, _volume
    from checks.reports.aggregate import parse_aggregate
    from checks.reports.store import ReportStore

    log = tmp_path / "mail.log"
    sent = "250 2.6.0 <x@example.org> [InternalId=1, Hostname=AM9.eurprd.prod.outlook.com] Queued mail for delivery"
    relay = "outlook-com.olc.protection.outlook.com[52.101.68.2]:25"
    log.write_text(
        "".join(
            f"2026-07-03T10:00:0{n}.000000+00:00 mail postfix/smtp[813]: Q{n}: to=<u{n}@outlook.com>, relay={relay},"
            f" delay=1, delays=0.1/0/0.5/0.4, dsn=2.6.0, status=sent ({sent})\n"
            for n in range(3)
        ),
        encoding="utf-8",
    )
    config = parse_config(
        {
            "monitor": {"ips": [IP], "domains": [DOMAIN]},
            "reports": {"host": "imap.example.org", "user": "dmarc", "password": "secret-pw"},
            "traffic": {"path": str(log), "start": "beginning"},
            "state": {"dir": str(tmp_path)},
        }
    )
    assert config.traffic is not None
    report, _ = parse_aggregate(_AGGREGATE.encode(), "outlook.xml")
    store = ReportStore(store_path(config))
    store.add_many([report])
    store.close()
    follower = TrafficFollower(config.traffic, traffic_families(config.traffic), config.state_dir, None, lambda: NOW)
    await follower.poll()
    [rates] = _auth_rates(config, IP, "microsoft", NOW)  # type: ignore[misc]
    assert (rates.reporter, rates.messages, rates.dmarc, rates.spf, rates.dkim) == ("outlook.com", 40, 1.0, 1.0, 0.75)
    [day] = _volume(config, "microsoft", NOW)  # type: ignore[misc]
    assert (day.day.isoformat(), day.delivered, day.deferred, day.bounced) == ("2026-07-03", 3, 0, 0)
    text = ticket_text(replace(TicketFacts("microsoft", IP, (DOMAIN,), NOW), auth_rates=(rates,), volume=(day,)))
    assert "[2026-07-03 to 2026-07-03, outlook.com] 40 messages: DMARC 100.0%, SPF 100.0%, DKIM 75.0%" in text
    assert _auth_rates(replace(config, reports=None), IP, "microsoft", NOW) == Missing(
        "no [reports] mailbox is configured (see docs/reports.md)"
    )
