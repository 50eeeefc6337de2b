"""checks.traffic: the one line parser, provider families, the tally, the follower across rotations, pflogsumm."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import date
from pathlib import Path

import pytest

from checks.errors import CatalogError
from checks.traffic.follow import LogGone, Position, iter_lines, read_new
from checks.traffic.lines import Delivery, Expiry, parse_line, redact
from checks.traffic.providers import load_families
from checks.traffic.tally import Tally
from tests.fixtures.maillog import pflogsumm_counts, synthetic_log

DATA = Path(__file__).parent / "data" / "maillog"
TODAY = date(2026, 12, 1)
S3150 = (
    "550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please contact your Internet service provider"
    " since part of their network is on our block list (S3150)."
)


def _tally() -> Tally:
    return Tally(load_families(smarthosts=["smtp.relay.example"]), TODAY)


def _smtp(qid: str, rcpt: str, relay: str, status: str, detail: str, dsn: str = "2.0.0", stamp: str = "") -> str:
    stamp = stamp or "Nov 30 10:00:01"
    return (
        f"{stamp} mail postfix/smtp[813]: {qid}: to=<{rcpt}>, relay={relay}, delay=4.1, delays=0.1/0/1.9/2.1,"
        f" dsn={dsn}, status={status} ({detail})"
    )


def test_real_postfix_excerpt_counts_its_deliveries_and_skips_nothing() -> None:
    tally = _tally()
    tally.feed_all(iter_lines(DATA / "postfix_exporter.log"))
    by = {s.provider: s for s in tally.summaries(include_local=True)}
    assert by["google"].sent == 1 and by["google"].accepted == 1
    assert by["other"].sent == 1  # mail.telia.com
    assert tally.domains["example.com"]["sent"] == 1
    assert sum(tally.skipped.values()) == 0
    assert tally.lines == 53


def test_real_inbound_noise_counts_nothing_and_skips_the_comments() -> None:
    tally = _tally()
    tally.feed_all(iter_lines(DATA / "fail2ban_postfix.log"))
    assert tally.providers == {} and tally.domains == {}
    # fail2ban's 13 comment lines and 7 blank lines are garbage; the 11 smtpd lines are MTA noise.
    assert dict(tally.skipped) == {"garbage": 20}
    assert tally.lines == 31


def test_real_opensmtpd_excerpt_tells_the_filter_hop_from_the_remote() -> None:
    tally = _tally()
    tally.feed_all(iter_lines(DATA / "opensmtpd_poolp.log"))
    by = {s.provider: s for s in tally.summaries(include_local=True)}
    assert by["google"].sent == 1  # relay="173.194.76.27 (ws-in-f27.1e100.net)"
    assert by["local"].sent == 2  # the mda delivery and the hop to the filter on 127.0.0.1
    parsed = parse_line((DATA / "opensmtpd_poolp.log").read_text().splitlines()[-2])
    assert isinstance(parsed, Delivery)
    assert parsed.relay_ip == "173.194.76.27" and parsed.relay_host == "ws-in-f27.1e100.net"
    assert parsed.reply is not None and parsed.reply.endswith("gsmtp") and parsed.dsn == "2.0.0"


def test_postfix_fields_ipv6_relay_orig_to_and_conn_use() -> None:
    line = (
        "2026-11-30T10:00:01.123456+01:00 mail postfix/smtp[99]: 4F1AB2C3D: to=<a@comcast.net>,"
        " orig_to=<b@example.org>, relay=mx2.comcast.net[2001:558:fe21:2a::6]:25, conn_use=2, delay=0.9,"
        " delays=0.1/0/0.4/0.4, dsn=2.0.0,"
        " status=sent (250 2.0.0 tS9Ft9jO mail accepted for delivery)"
    )
    parsed = parse_line(line)
    assert isinstance(parsed, Delivery)
    assert parsed.relay_host == "mx2.comcast.net" and parsed.relay_ip == "2001:558:fe21:2a::6"
    assert parsed.domain == "comcast.net" and parsed.remote_accepted
    assert load_families().route(parsed).provider == "comcast"


def test_banner_refusals_instances_and_transport_names() -> None:
    refused = (
        "Jul 16 14:21:05 desktop postfix/smtp[8810]: 7233: to=<j@verizon.net>,"
        " relay=relay.verizon.net[206.46.232.11]:25,"
        " delay=0.1, delays=0.01/0/0.09/0, dsn=4.0.0, status=deferred (host relay.verizon.net[206.46.232.11] refused"
        " to talk to me: 571 Email from 192.0.2.25 is currently blocked by Verizon Online's anti-spam system.)"
    )
    parsed = parse_line(refused)
    assert isinstance(parsed, Delivery) and parsed.reply is not None and parsed.reply.startswith("571 Email from")
    for prog in ("postfix-192.0.2.50/smtp", "postfix/polite/smtp", "postfix-out/relay/smtp"):
        line = (
            f"2026-06-14T18:08:39.620674-03:00 mx3 {prog}[107825]: 4gdgQw15: to=<a@gmail.com>,"
            " relay=alt1.gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=12736, delays=802/11925/7/1.7,"
            " dsn=4.7.23, status=deferred (host alt1.gmail-smtp-in.l.google.com[142.250.1.27] said: 421 4.7.23 later)"
        )
        found = parse_line(line)
        assert isinstance(found, Delivery) and found.status == "deferred", prog
    tally = _tally()
    tally.feed(line)
    assert tally.days[("2026-06-14", "google")]["deferred"] == 1  # 18:08 at -03:00 is 21:08 UTC, the same day


def test_microsoft_consumer_and_365_are_different_families() -> None:
    families = load_families()
    assert families.provider_of("outlook-com.olc.protection.outlook.com", "outlook.com").provider == (
        "microsoft-consumer"
    )
    assert families.provider_of("contoso-com.mail.protection.outlook.com", "contoso.com").provider == "microsoft365"
    # OpenSMTPD logs the MX's PTR name, which both share: the recipient domain decides.
    ptr = "mail-am6eur05on2063.inbound.protection.outlook.com"
    assert families.provider_of(ptr, "hotmail.de").provider == "microsoft-consumer"
    assert families.provider_of(ptr, "contoso.com").provider == "microsoft365"
    assert families.provider_of("mta7.am0.yahoodns.net", "aol.com").provider == "yahoo"
    assert families.provider_of("mx00.emig.gmx.net", "web.de").provider == "gmx"
    assert families.provider_of("mx01.mail.icloud.com", "me.com").provider == "apple"
    assert families.provider_of("smtp-in.orange.fr", "wanadoo.fr").provider == "orange"
    assert families.provider_of("mx1.free.fr", "free.fr").provider == "free"
    assert families.provider_of("", "gmail.com").provider == "google"  # relay=none: the domain decides
    assert families.provider_of("mail.example.net", "example.net").provider == "other"


def test_dmarc_reporters_name_the_family() -> None:
    families = load_families()
    assert families.reporter("Outlook.com") == "microsoft-consumer"
    assert families.reporter("Enterprise Outlook", "microsoft.com") == "microsoft365"
    assert families.reporter("google.com") == "google"
    assert families.reporter("Yahoo", "yahooinc.com") == "yahoo"
    assert families.reporter("WEB.DE", "web.de") == "gmx"  # no reporters entry: its domain decides
    assert families.reporter("Mail.Example", "example.net") is None


def test_config_families_extend_and_replace() -> None:
    extra = [{"key": "posteo", "name": "Posteo", "relays": ["*.posteo.de"], "domains": ["posteo.de"]}]
    families = load_families(extra)
    assert families.provider_of("mx01.posteo.de", "posteo.de").provider == "posteo"
    with pytest.raises(CatalogError, match="relays"):
        load_families([{"key": "bad", "name": "Bad", "relays": ["not a host"]}])
    with pytest.raises(CatalogError, match="key"):
        load_families([{"key": "other", "name": "x", "relays": ["a.example"]}])


def test_local_smarthost_and_filter_hops_are_not_providers() -> None:
    tally = _tally()
    tally.feed(_smtp("A1", "x@gmail.com", "smtp.relay.example[198.51.100.9]:587", "sent", "250 2.0.0 Ok"))
    tally.feed(_smtp("A2", "x@gmail.com", "127.0.0.1[127.0.0.1]:10024", "sent", "250 2.0.0 Ok: queued as B2"))
    tally.feed(
        "Nov 30 10:00:01 mail postfix/lmtp[5]: A3: to=<me@example.org>, relay=mail.example.org[private/dovecot-lmtp],"
        " delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 <me@example.org> Saved)"
    )
    tally.feed(
        "Nov 30 10:00:01 mail postfix/local[5]: A4: to=<root@mail.example.org>, orig_to=<root>, relay=local,"
        " delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)"
    )
    by = {s.provider: s for s in tally.summaries(include_local=True)}
    assert by["smarthost"].sent == 1
    assert by["local"].sent == 3
    assert "google" not in by


def test_multi_recipient_deferrals_then_qmgr_expiry() -> None:
    tally = _tally()
    gmail = "gmail-smtp-in.l.google.com[142.250.102.27]:25"
    said = f"host {gmail[:-3]} said: 421-4.7.28 Gmail has detected an unusual rate of unsolicited mail - gsmtp"
    tally.feed(_smtp("Q1", "a@gmail.com", gmail, "deferred", said, "4.7.28"))
    tally.feed(_smtp("Q1", "b@gmail.com", gmail, "deferred", said, "4.7.28"))
    tally.feed(_smtp("Q1", "a@gmail.com", gmail, "deferred", said, "4.7.28"))  # a retry of the same recipient
    tally.feed(_smtp("Q1", "c@yahoo.com", "mta5.am0.yahoodns.net[67.195.204.72]:25", "sent", "250 ok dirdel"))
    tally.feed(_smtp("Q1", "b@gmail.com", gmail, "sent", "250 2.0.0 OK 17 - gsmtp"))
    outcomes = tally.feed("Nov 30 15:00:00 mail postfix/qmgr[3]: Q1: from=<me@example.org>, status=expired, returned")
    assert [o.status for o in outcomes] == ["expired"]
    assert isinstance(parse_line("Nov 30 15:00:00 mail postfix/qmgr[3]: Q1: from=<>, status=expired, returned"), Expiry)
    google = next(s for s in tally.summaries() if s.provider == "google")
    assert (google.sent, google.deferred, google.expired) == (1, 3, 1)
    assert google.replies[0].code == "421 4.7.28" and google.replies[0].block
    assert "unusual rate" in google.replies[0].explanation
    assert tally.days[("2026-11-30", "google")]["expired"] == 1


def test_per_recipient_expired_line_and_relay_none() -> None:
    tally = _tally()
    line = (
        "Nov 28 05:00:02 mail postfix/smtp[2]: CD34: to=<seed@outlook.com>, relay=none, delay=432000,"
        " delays=432000/0/30/0, dsn=4.4.1, status=expired, returned to sender (connect to mx[52.101.68.2]:25:"
        " Connection timed out)"
    )
    (outcome,) = tally.feed(line)
    assert outcome.status == "expired" and outcome.provider == "microsoft-consumer"
    assert outcome.code == "connect timeout"


def test_block_reply_is_explained_and_lines_are_redacted() -> None:
    tally = _tally()
    relay = "outlook-com.olc.protection.outlook.com[52.101.68.2]:25"
    said = f"host outlook-com.olc.protection.outlook.com[52.101.68.2] said: {S3150} (in reply to MAIL FROM command)"
    (outcome,) = tally.feed(_smtp("B1", "jane.doe@outlook.com", relay, "bounced", said, "5.7.1"))
    assert outcome.block and outcome.explanation is not None
    assert outcome.explanation.entry_id == "microsoft.s3150"
    assert "olcsupport.office.com" in outcome.explanation.contact_url
    assert "jane.doe" not in outcome.line and "…@outlook.com" in outcome.line
    state = json.dumps(tally.to_json())
    assert "jane.doe" not in state and "@outlook.com" in state


def test_opensmtpd_tempfail_permfail_and_expiry() -> None:
    def line(result: str, stat: str) -> str:
        return (
            "Jul  6 06:01:48 ams-1 smtpd[75295]: 5df87c9ffd0e785d mta delivery evpid=f6e94209918f7e7b"
            f' from=<g@poolp.org> to=<x@yahoo.com> rcpt=<-> source="212.83.129.132"'
            f' relay="67.195.204.72 (mta5.am0.yahoodns.net)" delay=2s result="{result}" stat="{stat}"'
        )

    tally = _tally()
    tally.feed(line("TempFail", "421 4.7.0 [TS03] All messages from 212.83.129.132 will be permanently deferred"))
    tally.feed(line("PermFail", "554 5.7.9 Message not accepted for policy reasons"))
    tally.feed(line("PermFail", "Envelope expired"))
    yahoo = next(s for s in tally.summaries() if s.provider == "yahoo")
    assert (yahoo.deferred, yahoo.bounced, yahoo.expired) == (1, 1, 1)
    codes = {reply.code: reply for reply in yahoo.replies}
    assert codes["421 4.7.0 TS03"].block


def test_garbage_other_daemons_and_non_utf8_are_skipped_and_counted() -> None:
    tally = _tally()
    tally.feed_bytes(b"\x00\x01 garbage")
    tally.feed_bytes(b"Nov 30 10:00:01 mail dovecot: imap-login: Login: user=<me@example.org>")
    tally.feed_bytes(b"Nov 30 10:00:01 mail postfix/smtp[1]: Q9: to=<\xe9@gmail.com>, relay=x, status=sent")
    tally.feed_bytes(b"Nov 30 10:00:01 mail postfix/postscreen[9]: CONNECT from [203.0.113.5]:4711 to [192.0.2.25]:25")
    tally.skip_partial()
    assert dict(tally.skipped) == {"garbage": 1, "other-daemon": 1, "non-utf8": 1, "partial": 1}
    assert tally.lines == 5


def test_state_round_trip() -> None:
    tally = _tally()
    gmail = "gmail-smtp-in.l.google.com[142.250.102.27]:25"
    tally.feed(_smtp("Q1", "a@gmail.com", gmail, "deferred", "host x said: 421 4.7.0 try later", "4.7.0"))
    again = _tally()
    again.load_json(json.loads(json.dumps(tally.to_json())))
    again.feed(_smtp("Q1", "a@gmail.com", gmail, "deferred", "host x said: 421 4.7.0 try later", "4.7.0"))
    again.feed("Nov 30 15:00:00 mail postfix/qmgr[3]: Q1: from=<me@example.org>, status=expired, returned to sender")
    google = next(s for s in again.summaries() if s.provider == "google")
    # The restart did not make the one pending recipient two.
    assert (google.deferred, google.expired) == (2, 1)


def test_redact_keeps_domains() -> None:
    assert redact("to=<jane.doe+x@Example.ORG>, said: <bob@gmail.com> unknown") == (
        "to=<…@example.org>, said: <…@gmail.com> unknown"
    )


# -- the follower --------------------------------------------------------------------------------------------


def _write(path: Path, *lines: str, mode: str = "a") -> None:
    with path.open(mode) as handle:
        handle.write("".join(line + "\n" for line in lines))


def _follow(path: Path, position: Position | None) -> tuple[list[str], Position, str, int]:
    chunk = read_new(path, position)
    return [raw.decode() for raw in chunk.lines], chunk.position, chunk.rotation, chunk.partial


def test_follow_appends_then_rename_rotation(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    _write(log, "one", "two")
    lines, position, _, _ = _follow(log, None)
    assert lines == ["one", "two"]
    with log.open("a") as handle:
        handle.write("three\nfou")  # a line the MTA is still writing
    lines, position, _, _ = _follow(log, position)
    assert lines == ["three"]
    with log.open("a") as handle:
        handle.write("r\nfive\n")
    os.rename(log, tmp_path / "mail.log.1")
    _write(log, "six")
    lines, position, rotation, _ = _follow(log, position)
    assert (lines, rotation) == (["four", "five", "six"], "renamed")
    assert _follow(log, position)[0] == []


def test_follow_finds_the_gzipped_copy_and_counts_a_cut_off_line(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    _write(log, "first line of yesterday", "two")
    _, position, _, _ = _follow(log, None)
    with log.open("a") as handle:
        handle.write("three\nnever finished")
    with log.open("rb") as src, gzip.open(tmp_path / "mail.log-20261130.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    log.unlink()
    _write(log, "today")
    lines, _, rotation, partial = _follow(log, position)
    # The new file may get the old inode back (tmpfs does): either way the rest comes from the copy.
    assert (lines, partial) == (["three", "today"], 1) and rotation in ("renamed", "truncated")


def test_follow_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    _write(log, "alpha", "beta")
    _, position, _, _ = _follow(log, None)
    _write(log, "gamma")
    shutil.copy(log, tmp_path / "mail.log.1")
    with log.open("r+") as handle:
        handle.truncate(0)
    _write(log, "delta")
    lines, _, rotation, _ = _follow(log, position)
    assert (lines, rotation) == (["gamma", "delta"], "truncated")


def test_a_missing_log_is_log_gone(tmp_path: Path) -> None:
    with pytest.raises(LogGone, match="no MTA log at"):
        read_new(tmp_path / "nowhere.log", None)


def test_follow_a_replaced_file_without_its_copy_is_lost_not_double_read(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    _write(log, "old one", "old two")
    _, position, _, _ = _follow(log, None)
    log.unlink()
    _write(log, "new one")
    lines, _, rotation, _ = _follow(log, position)
    assert (lines, rotation) == (["new one"], "lost")


# -- against pflogsumm ---------------------------------------------------------------------------------------


def test_counts_agree_with_pflogsumm(tmp_path: Path) -> None:
    if shutil.which("pflogsumm") is None and not Path("/usr/sbin/pflogsumm").exists():
        if os.environ.get("CI"):
            pytest.fail("pflogsumm is missing: .ci/install-servers.sh installs it")
        pytest.skip("pflogsumm is not installed")
    log = synthetic_log(tmp_path / "mail.log", 6000)
    real = DATA / "postfix_exporter.log"
    theirs = pflogsumm_counts([log, real])
    tally = _tally()
    for path in (log, real):
        tally.feed_all(iter_lines(path))
    mine = {d: (c["sent"], c["deferred"]) for d, c in tally.domains.items() if c["sent"] or c["deferred"]}
    assert mine == theirs.domains
    assert sum(c["bounced"] for c in tally.domains.values()) == theirs.bounced > 0
    assert sum(c["deferred"] for c in tally.domains.values()) == theirs.deferrals > 0
    assert tally.skipped["non-utf8"] == 1 and tally.skipped["garbage"] > 0
