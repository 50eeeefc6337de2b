"""checks.canary.ndr: real replies explained, and a meta-test of ndr.toml's conventions."""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import pytest

from checks.canary.ndr import explain, load_table, parse_entry, parse_reply, parse_table, provider_family
from checks.errors import CatalogError

S3150 = (
    "550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please contact your Internet service "
    "provider since part of their network is on our block list (S3150). You can also refer your provider to "
    "http://mail.live.com/mail/troubleshooting.aspx#errors. [AM4PEPF00027A6C.eurprd04.prod.outlook.com]"
)

CASES = [
    (S3150, None, "microsoft.s3150", "S3150", "olcsupport.office.com"),
    ("550 5.7.1 ... part of their network is on our block list (S3140)", None, "microsoft.s3140", "S3140", "olc"),
    (
        "451 4.7.650 The mail server [192.0.2.25] has been temporarily rate limited due to IP reputation. "
        "For e-mail delivery information, see https://postmaster.live.com (S775) [Name=Protocol Filter Agent]",
        None,
        "microsoft.s775",
        "S775",
        "olcsupport",
    ),
    (
        "451 4.7.651 The mail server [192.0.2.25] has been temporarily rate limited due to IP reputation.",
        None,
        "microsoft365.rate-limited",
        "4.7.651",
        "olcsupport",
    ),
    ("550 5.7.511 Access denied, banned sender[192.0.2.25]", None, "microsoft365.banned-sender", "5.7.511", "mailto:"),
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.25]", None, "microsoft365.banned-ip", "5.7.606", "sender."),
    ("550 5.7.649 Access denied, banned sending IP [192.0.2.25]", None, "microsoft365.banned-ip", "5.7.649", "sender."),
    ("550 5.7.509 Access denied, sending domain example.org does not pass DMARC", None, "microsoft365.dmarc-reject",
     "5.7.509", ""),
    ("550 5.7.25 The sending IPv6 address [2001:db8::25] must have a reverse DNS record", "outlook",
     "microsoft365.ipv6-no-ptr", "5.7.25", ""),
    # A code several providers use is not blamed on Microsoft without the host or the hint saying so.
    ("550 5.7.25 Reverse DNS validation failed", None, "generic.no-ptr", "5.7.25", ""),
    ("550 5.7.25 Reverse DNS validation failed", "mx.example.net", "generic.no-ptr", "5.7.25", ""),
    ("550-5.7.25 [192.0.2.1] The IP address sending this message does not have a PTR record setup. gsmtp",
     None, "google.no-ptr", "5.7.25", ""),
    ("550 5.7.515 Access denied, sending domain example.org does not meet the required authentication level.",
     None, "microsoft.auth-level", "5.7.515", ""),
    ("451 4.7.651 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. (S3114)",
     None, "microsoft.s775", "S3114", "olcsupport"),
    ("550-5.7.40 This mail has been blocked because the sender is unauthenticated. DMARC record missing. gsmtp",
     None, "google.no-dmarc", "5.7.40", ""),
    ("421-4.7.31 Gmail requires all bulk senders to have a DMARC record. gsmtp", None, "google.no-dmarc", "4.7.31",
     ""),
    ("421-4.7.29 Your email has been rate limited because this message wasn't sent over a TLS connection. gsmtp",
     None, "google.tls-required", "4.7.29", ""),
    ("550-5.7.1 Unauthenticated email from example.org is not accepted due to domain's DMARC policy. gsmtp",
     None, "google.dmarc-policy", "5.7.1", ""),
    ("550-5.7.1 [192.0.2.1] This message is not RFC 5322 compliant. There are multiple From headers. gsmtp",
     None, "google.not-rfc5322", "5.7.1", ""),
    ("550-5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited mail. gsmtp",
     None, "google.low-reputation", "5.7.1", "support.google.com"),
    ("550 5.7.26 Unauthenticated mail is prohibited", "yahoo", "generic.unauthenticated", "5.7.26", ""),
    ("450 4.7.26 Access denied, a message sent over IPv6 must pass either SPF or DKIM validation. outlook.com",
     None, "microsoft365.ipv6-unauthenticated", "4.7.26", ""),
    ("451 4.7.500 Server busy. Please try again later from [192.0.2.25]. (S77714)", None, "microsoft365.busy",
     "4.7.500", "snds"),
    ("421-4.7.28 Gmail has detected an unusual rate of unsolicited mail. q5si gsmtp", None, "google.unusual-rate",
     "4.7.28", "google"),
    ("421-4.7.0 This message is suspicious due to the very low reputation of the sending IP address. gsmtp", None,
     "google.low-reputation", "4.7.0", "google"),
    ("550-5.7.1 Our system has detected that this message is likely unsolicited mail. x12si gsmtp", None,
     "google.low-reputation", "5.7.1", "google"),
    ("550-5.7.26 This mail has been blocked because the sender is unauthenticated. gsmtp", None,
     "google.unauthenticated", "5.7.26", ""),
    ("421-4.7.26 This mail has been rate limited because it is unauthenticated. gsmtp", None,
     "google.unauthenticated", "4.7.26", ""),
    ("550-5.7.27 Your email has been blocked because SPF did not pass.", "gmail", "google.spf-required", "5.7.27", ""),
    ("421-4.7.27 SPF authentication failed", None, "google.spf-required", "4.7.27", ""),
    ("550 4.7.30 DKIM required", None, "google.dkim-required", "4.7.30", ""),
    ("550-5.7.32 From: header isn't aligned", None, "google.from-not-aligned", "5.7.32", ""),
    ("421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected volume or user complaints",
     None, "yahoo.tss04", "[TSS04]", "yahooinc"),
    ("553 5.7.2 [TSS09] All messages from 192.0.2.25 will be permanently deferred; Retrying will NOT succeed.",
     None, "yahoo.tss09", "[TSS09]", "yahooinc"),
    ("554 Message not allowed - [PH01] Email not accepted for policy reasons.", None, "yahoo.ph01", "[PH01]", "yahoo"),
    ("554 5.7.9 Message not accepted for policy reasons. See https://senders.yahooinc.com/error-codes", None,
     "yahoo.policy", "5.7.9", "yahoo"),
    ("553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.25, because the ip is in Spamhaus's list",
     None, "yahoo.bl21", "[BL21]", "spamhaus"),
    (
        "554-gmx.net (mxgmx104) Nemesis ESMTP Service not available\n554-No SMTP service\n"
        "554-IP address is block listed.\n554 For explanation visit https://postmaster.gmx.net/en/case?c=r0201",
        None,
        "gmx.ip-blocklisted",
        "IP address is block listed",
        "gmx",
    ),
    ("421-web.de (mxweb112) Nemesis ESMTP Service not available\n421-Reject due to policy restrictions.", None,
     "gmx.policy", "Reject due to policy restrictions", "gmx"),
    ("554-Bad DNS PTR resource record.\n554 For explanation visit https://postmaster.web.de/", None, "gmx.bad-ptr",
     "Bad DNS PTR resource record", ""),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "provider", "entry_id", "matched", "url_part"), CASES)
def test_explain(reply: str, provider: str | None, entry_id: str, matched: str, url_part: str) -> None:
    explanation = explain(reply, provider)
    assert explanation is not None
    assert (explanation.entry_id, explanation.matched) == (entry_id, matched)
    assert url_part in explanation.contact_url
    assert explanation.meaning in explanation.line()


def test_temporary_follows_the_reply_class() -> None:
    deferred = explain("421-4.7.0 very low reputation gsmtp")
    bounced = explain("550-5.7.1 very low reputation gsmtp")
    assert deferred is not None and deferred.temporary
    assert bounced is not None and not bounced.temporary


def test_ambiguous_codes_need_the_provider() -> None:
    # 5.7.1 alone says nothing; with the provider known it does.
    assert explain("550 5.7.1 Message rejected") is None
    explained = explain("550 5.7.1 Message rejected", "gmail")
    assert explained is not None and explained.entry_id == "google.low-reputation"
    # 4.7.26 means different things at Microsoft and at Gmail.
    ms = explain("450 4.7.26 must pass either SPF or DKIM", "outlook")
    assert ms is not None and ms.entry_id == "microsoft365.ipv6-unauthenticated"


def test_no_explanation_for_unrelated_replies() -> None:
    assert explain("250 2.0.0 Ok: queued as 4F1") is None
    assert explain("") is None
    assert explain("550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown") is None


def test_ip_addresses_are_not_enhanced_codes() -> None:
    codes = parse_reply("550 rejected [5.7.606.12] and 40.92.5.7 and 4.7.650")
    assert codes.enhanced == ("4.7.650",)
    assert parse_reply("451 4.7.650 ... (S775)").s_codes == ("S775",)
    assert parse_reply("250 2.6.0 <a@b> [Hostname=AM0PR.eurprd.prod.outlook.com] Queued").provider == "microsoft"


def test_provider_family() -> None:
    assert provider_family("outlook") == "microsoft"
    assert provider_family("hotmail.com") == "microsoft"
    assert provider_family("Gmail") == "google"
    assert provider_family("web.de") == "gmx"
    assert provider_family("fastmail") is None
    assert provider_family(None) is None


# --- meta-test: the data file's conventions ----------------------------------------------------------

BRIEF_CODES = {
    "S3140", "S3150", "5.7.511", "5.7.606", "5.7.649", "4.7.650", "4.7.651", "5.7.509", "5.7.25", "4.7.26",
    "4.7.500", "4.7.28", "4.7.0", "5.7.1", "5.7.26", "4.7.27", "4.7.30", "4.7.32", "TSS04", "TSS09", "PH01", "5.7.9",
    "5.7.515", "S3114", "5.7.40", "4.7.31", "5.7.29",
}  # fmt: skip


def _raw() -> dict[str, object]:
    return tomllib.loads(resources.files("checks.canary").joinpath("ndr.toml").read_text(encoding="utf-8"))


def test_data_file_conventions() -> None:
    entries = load_table()
    raw = _raw()
    contacts = raw["contacts"]
    assert isinstance(contacts, dict)
    used = {entry.contact.key for entry in entries}
    assert used == set(contacts), "every contact is used, and only declared contacts are"
    for entry in entries:
        assert re.fullmatch(r"[a-z0-9]+\.[a-z0-9-]+", entry.id), entry.id
        assert entry.id.split(".")[0] == entry.provider, entry.id
        assert entry.meaning.endswith(".") and entry.action.endswith("."), entry.id
        assert entry.meaning[0].isupper() and entry.action[0].isupper(), entry.id
        if entry.kind == "enhanced":
            classes = {item[0] for item in entry.match}
            if classes == {"4"}:
                assert entry.temporary, f"{entry.id}: 4.x.x codes are deferrals"
        if entry.contact.url == "":
            assert entry.contact.key == "own-dns", entry.id
    covered = " ".join(" ".join(entry.match) for entry in entries)
    for code in BRIEF_CODES:
        assert code in covered, f"{code} is not explained"


def test_microsoft_consumer_blocks_never_point_at_sender_office() -> None:
    for entry in load_table():
        if entry.provider == "microsoft":
            assert "sender.office.com" not in entry.contact.url, entry.id


def test_bad_entries_are_refused_with_the_field() -> None:
    contacts = {"c": {"name": "C", "url": "https://c.example/"}}
    good = {
        "id": "google.x", "provider": "google", "kind": "enhanced", "match": ["5.7.1"], "temporary": False,
        "meaning": "M.", "action": "A.", "contact": "c",
    }  # fmt: skip
    parse_table({"contacts": contacts, "codes": [good]})
    for field, value in [("kind", "regex"), ("match", ["5.7"]), ("contact", "nope"), ("provider", "aol"),
                         ("temporary", "no"), ("colour", "red")]:  # fmt: skip
        with pytest.raises(CatalogError) as info:
            parse_table({"contacts": contacts, "codes": [{**good, field: value}]})
        assert info.value.field == field
    with pytest.raises(CatalogError):
        parse_table({"contacts": contacts, "codes": [good, good]})
    with pytest.raises(CatalogError):
        parse_table({"contacts": {"c": {"name": "C", "url": "http://insecure"}}, "codes": [good]})
    assert parse_entry(good, parse_table.__globals__["_parse_contacts"](contacts)).unique is False


def test_said_is_the_line_in_the_operators_language_and_line_stays_english() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    explanation = explain("550 5.7.1 Unfortunately, messages from [203.0.113.5] weren't sent. (S3150)")
    assert explanation is not None
    english = explanation.line()
    assert explanation.said() == english  # no language active: the same English sentence
    with use_language("es"):
        said = explanation.said()
        assert explanation.line() == english  # what goes into evidence and JSON
    assert said.startswith("Outlook.com rechaza el correo de tu IP") and " Dónde: el formulario de soporte" in said
    assert said.endswith("<https://olcsupport.office.com/>.")
