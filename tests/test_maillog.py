"""checks.canary.maillog: Postfix and OpenSMTPD lines, rotated and compressed files, journal exports and commands."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

from checks.canary.maillog import LogSource, LogUnavailable, detect_format, follow, queue_id_from_reply, read_log, trace

MID = "<repbot-canary-7f3a9c@example.org>"
SEED = "seed@outlook.com"
MS_250 = (
    "250 2.6.0 <repbot-canary-7f3a9c@example.org> [InternalId=1176821404242, Hostname=AM9P195MB1234.EURP195.PROD."
    "OUTLOOK.COM] 5123 bytes in 0.201, 24.812 KB/sec Queued mail for delivery -> 250 2.1.5"
)
S3150 = (
    "550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please contact your Internet service provider"
    " since part of their network is on our block list (S3150)."
)

POSTFIX = [
    "Nov 28 04:00:01 mail postfix/submission/smtpd[811]: 4F1AB2C3D: client=laptop[192.0.2.7], sasl_username=me",
    f"Nov 28 04:00:01 mail postfix/cleanup[812]: 4F1AB2C3D: message-id={MID}",
    "Nov 28 04:00:01 mail postfix/qmgr[300]: 4F1AB2C3D: from=<me@example.org>, size=1234, nrcpt=1 (queue active)",
    "Nov 28 04:00:02 mail postfix/cleanup[812]: 9AA11BB22: message-id=<other@example.org>",
    f"Nov 28 04:00:03 mail postfix/smtp[813]: 4F1AB2C3D: to=<{SEED}>, relay=outlook-com.olc.protection.outlook.com"
    "[52.101.68.2]:25, delay=4.1, delays=0.1/0/1.9/2.1, dsn=4.7.650, status=deferred (host outlook-com.olc.protection"
    ".outlook.com[52.101.68.2] said: 451 4.7.650 The mail server [192.0.2.25] has been temporarily rate limited due to"
    " IP reputation. (S775) (in reply to MAIL FROM command))",
    f"Nov 28 04:10:03 mail postfix/smtp[813]: 4F1AB2C3D: to=<{SEED}>, relay=outlook-com.olc.protection.outlook.com"
    f"[52.101.68.2]:25, delay=604, delays=600/0/1.9/2.1, dsn=2.6.0, status=sent ({MS_250})",
    "Nov 28 04:10:03 mail postfix/qmgr[300]: 4F1AB2C3D: removed",
]


def test_postfix_deferred_then_sent_quotes_the_remote() -> None:
    found = trace(POSTFIX, MID, SEED)
    assert found.format == "postfix"
    assert found.queue_ids == ("4F1AB2C3D",)
    assert [a.status for a in found.attempts] == ["deferred", "sent"]
    assert found.attempts[0].reply is not None and found.attempts[0].reply.startswith("451 4.7.650")
    assert found.attempts[0].reply.endswith("(S775)")
    final = found.final
    assert final is not None and final.remote_accepted and final.reply == MS_250
    assert "Queued mail for delivery" in final.reply
    assert final.relay.startswith("outlook-com.olc.protection.outlook.com")
    assert found.status == "sent"
    assert any("message-id=" in line for line in found.lines)


def test_postfix_bounce_and_expiry() -> None:
    lines = [
        f"Nov 28 05:00:01 mail postfix/cleanup[1]: AB12: message-id={MID}",
        f"Nov 28 05:00:02 mail postfix/smtp[2]: AB12: to=<{SEED}>, relay=mx[52.101.68.2]:25, delay=1, delays=0/0/0/1,"
        f" dsn=5.7.1, status=bounced (host mx[52.101.68.2] said: {S3150} (in reply to MAIL FROM command))",
    ]
    found = trace(lines, MID, SEED)
    assert found.status == "bounced"
    assert found.final is not None and found.final.reply == S3150
    expired = [
        f"Nov 28 05:00:01 mail postfix/cleanup[1]: CD34: message-id={MID}",
        f"Nov 28 05:00:02 mail postfix/smtp[2]: CD34: to=<{SEED}>, relay=none, delay=432000, delays=432000/0/30/0,"
        " dsn=4.4.1, status=expired, returned to sender (connect to mx[52.101.68.2]:25: Connection timed out)",
    ]
    gone = trace(expired, MID, SEED)
    assert gone.status == "bounced"
    assert gone.final is not None and gone.final.reply is None and "timed out" in gone.final.detail


def test_postfix_content_filter_requeue_is_followed_by_message_id() -> None:
    lines = [
        f"Nov 28 04:00:01 mail postfix/cleanup[1]: AAA1: message-id={MID}",
        "Nov 28 04:00:02 mail postfix/smtp[2]: AAA1: to=<seed@outlook.com>, relay=127.0.0.1[127.0.0.1]:10024,"
        " delay=1, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as BBB2)",
        f"Nov 28 04:00:02 mail postfix/cleanup[3]: BBB2: message-id={MID}",
        f"Nov 28 04:00:03 mail postfix/smtp[4]: BBB2: to=<{SEED}>, relay=mx[52.101.68.2]:25, delay=1, dsn=2.6.0,"
        f" status=sent ({MS_250})",
    ]
    found = trace(lines, MID, SEED)
    assert found.queue_ids == ("AAA1", "BBB2")
    assert found.final is not None and found.final.reply == MS_250


def test_other_recipients_and_messages_are_ignored() -> None:
    assert trace(POSTFIX, MID, "someone@else.example").status == "unseen"
    assert trace(POSTFIX, "<nope@example.org>", SEED).attempts == ()


OPENSMTPD = [
    "Nov 28 04:00:01 mail smtpd[555]: 8d3f1a2b6c7d8e9f smtp message msgid=1a2b3c4d size=1234 nrcpt=1 proto=ESMTP",
    "Nov 28 04:00:02 mail smtpd[555]: 9e0a1b2c3d4e5f60 mta delivery evpid=1a2b3c4d00000001 from=<me@example.org>"
    f' to=<{SEED}> rcpt=<-> source="192.0.2.25" relay="52.101.68.2 (outlook-com.olc.protection.outlook.com)"'
    ' delay=1s result="TempFail" stat="451 4.7.651 The mail server [192.0.2.25] has been temporarily rate limited"',
    "Nov 28 04:05:02 mail smtpd[555]: 9e0a1b2c3d4e5f60 mta delivery evpid=1a2b3c4d00000001 from=<me@example.org>"
    f' to=<{SEED}> rcpt=<-> source="192.0.2.25" relay="52.101.68.2 (outlook-com.olc.protection.outlook.com)"'
    f' delay=5m1s result="Ok" stat="{MS_250}"',
    "Nov 28 04:05:03 mail smtpd[555]: 9e0a1b2c3d4e5f61 mta delivery evpid=77777777000000aa from=<me@example.org>"
    f' to=<{SEED}> rcpt=<-> source="192.0.2.25" relay="x" delay=1s result="PermFail" stat="550 5.1.1 nope"',
]


def test_opensmtpd_by_queue_id_and_by_echoed_message_id() -> None:
    assert detect_format(OPENSMTPD) == "opensmtpd"
    by_msgid = trace(OPENSMTPD, MID, SEED, queue_id="1a2b3c4d")
    assert [a.status for a in by_msgid.attempts] == ["deferred", "sent"]
    assert by_msgid.final is not None and by_msgid.final.reply == MS_250 and by_msgid.final.remote_accepted
    # Without the queue id, Microsoft's 250 (which echoes the Message-ID) still finds the message.
    by_echo = trace(OPENSMTPD, MID, SEED)
    assert by_echo.status == "sent"
    assert by_echo.queue_ids == ("1a2b3c4d",)
    bounced = trace(OPENSMTPD, "<x@y>", SEED, queue_id="77777777")
    assert bounced.status == "bounced" and bounced.final is not None and bounced.final.reply == "550 5.1.1 nope"


def test_queue_id_from_submission_replies() -> None:
    assert queue_id_from_reply("250 2.0.0 Ok: queued as 4F1AB2C3D") == "4F1AB2C3D"
    assert queue_id_from_reply("250 2.0.0 1a2b3c4d Message accepted for delivery") == "1a2b3c4d"
    assert queue_id_from_reply("250 OK") is None


async def test_rotated_and_compressed_files_are_read_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    with gzip.open(tmp_path / "mail.log.2.gz", "wt") as old:
        old.write("\n".join(POSTFIX[:3]) + "\n")
    (tmp_path / "mail.log.1").write_text("\n".join(POSTFIX[3:5]) + "\n")
    log.write_text("\n".join(POSTFIX[5:]) + "\n")
    lines = await read_log(LogSource(path=str(log)))
    assert lines == POSTFIX
    found = await follow(LogSource(path=str(log), format="postfix"), MID, SEED)
    assert not isinstance(found, LogUnavailable)
    assert found.status == "sent"


async def test_journalctl_short_export_and_command(tmp_path: Path) -> None:
    export = tmp_path / "journal.txt"
    export.write_text("-- Logs begin at Sat 2026-11-28 00:00:01 UTC. --\n" + "\n".join(OPENSMTPD) + "\n")
    found = await follow(LogSource(path=str(export)), MID, SEED, "1a2b3c4d")
    assert not isinstance(found, LogUnavailable) and found.status == "sent"
    command = LogSource(command=[sys.executable, "-c", f"print(open({str(export)!r}).read())"])
    by_command = await follow(command, MID, SEED, "1a2b3c4d")
    assert not isinstance(by_command, LogUnavailable) and by_command.status == "sent"


async def test_no_log_access_says_why(tmp_path: Path) -> None:
    for source, words in [
        (None, "no MTA log configured"),
        (LogSource(path=str(tmp_path / "absent.log")), "no MTA log at"),
        (LogSource(command=["/nonexistent/journalctl"]), "cannot run"),
        (LogSource(command=[sys.executable, "-c", "import sys; sys.exit('Permission denied')"]), "Permission denied"),
    ]:
        result = await follow(source, MID, SEED)
        assert isinstance(result, LogUnavailable)
        assert words in str(result)
    unreadable = tmp_path / "locked.log"
    unreadable.write_text("x\n")
    unreadable.chmod(0)
    if not Path("/proc/self").exists() or __import__("os").geteuid() != 0:
        with pytest.raises(LogUnavailable):
            await read_log(LogSource(path=str(unreadable)))


def test_bad_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        LogSource(path="/x", format="exim")
