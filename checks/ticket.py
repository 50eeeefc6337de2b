"""The evidence pack for a delisting request: which form to use, and a ready-to-paste text of dated facts.

Delisting desks refuse requests that lack the facts they check (the IP and its PTR, the exact refusal, volume,
complaints, authentication). `TicketFacts` holds what is known, each `Fact` with the day it was seen; a section
nobody could fill is a `Missing` with the reason, printed as "not available", never guessed. `ticket_text` is
pure: facts in, text out. Gathering the facts (DNS, SNDS, the canary history, the complaint journal) is the bot's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

__all__ = [
    "PROVIDERS",
    "AuthPassRates",
    "DailyVolume",
    "Fact",
    "Form",
    "Missing",
    "TicketFacts",
    "choose_form",
    "parse_provider",
    "ticket_text",
]

# What an operator may type, to the provider it means. "microsoft" is decided by the evidence (choose_form).
PROVIDERS = {
    "microsoft": "microsoft",
    "outlook": "outlook",
    "hotmail": "outlook",
    "live": "outlook",
    "m365": "m365",
    "office365": "m365",
    "exchange": "m365",
    "google": "google",
    "gmail": "google",
    "yahoo": "yahoo",
    "aol": "yahoo",
}
FAMILY = {"microsoft": "microsoft", "outlook": "microsoft", "m365": "microsoft", "google": "google", "yahoo": "yahoo"}
_M365_BAN = re.compile(r"\b5\.7\.6(0[6-9]|[1-4][0-9])\b")


@dataclass(frozen=True)
class Form:
    """Where the request goes."""

    provider: str
    name: str
    url: str
    scope: str


FORMS = {
    "outlook": Form(
        "Outlook.com",
        "the Outlook.com sender support form",
        "https://olcsupport.office.com/",
        "for mail to outlook.com, hotmail.com, live.com and msn.com addresses (S3140/S3150 blocks, SNDS blocks)",
    ),
    "m365": Form(
        "Microsoft 365",
        "the Microsoft 365 delist portal",
        "https://sender.office.com/",
        "for 550 5.7.606-5.7.649 (banned sending IP) from Microsoft 365 servers (*.mail.protection.outlook.com); "
        "it does not cover Outlook.com consumer blocks",
    ),
    "google": Form(
        "Gmail",
        "Google's sender contact form (Gmail delivery problems)",
        "https://support.google.com/mail/contact/msgdelivery",
        "after you checked Postmaster Tools and the sender guidelines",
    ),
    "yahoo": Form(
        "Yahoo",
        "Yahoo's sender support request form",
        "https://senders.yahooinc.com/contact",
        "for Yahoo and AOL mailboxes",
    ),
}


@dataclass(frozen=True)
class Fact:
    """One thing repbot saw, as it goes in the request, with when and where."""

    text: str
    as_of: datetime | date | None = None
    source: str = ""


@dataclass(frozen=True)
class Missing:
    """A section with no facts, and why (shown as "not available: why")."""

    reason: str


@dataclass(frozen=True)
class AuthPassRates:
    """DMARC, SPF and DKIM pass rates from one receiver's aggregate reports (issue 14's report reader)."""

    reporter: str
    first_day: date
    last_day: date
    messages: int
    dmarc: float
    spf: float
    dkim: float


@dataclass(frozen=True)
class DailyVolume:
    """One day of mail to one provider, from the MTA log (issue 15's traffic watcher)."""

    day: date
    provider: str
    delivered: int
    deferred: int = 0
    bounced: int = 0


Section = tuple[Fact, ...] | Missing


@dataclass(frozen=True)
class TicketFacts:
    """Everything the request states; every section a Missing until someone fills it."""

    provider: str  # a PROVIDERS value
    ip: str
    domains: tuple[str, ...]
    generated_at: datetime
    ptr: Section = Missing("not looked up")
    helo: Section = Missing("not known")
    rejections: Section = Missing("no refusal recorded")
    silent_drops: Section = Missing("no test message recorded")
    snds: Section = Missing("not configured")
    complaints: Section = Missing("no feedback loop configured")
    auth_rates: tuple[AuthPassRates, ...] | Missing = Missing("not gathered")
    volume: tuple[DailyVolume, ...] | Missing = Missing("not gathered")
    blocklists: Section = Missing("not checked")
    auth_setup: Section = Missing("not checked")


def parse_provider(text: str) -> str:
    """The provider a word names; raises ValueError listing the words it knows."""
    found = PROVIDERS.get(text.strip().lower())
    if found is None:
        raise ValueError(f"{text[:20]!r} is not a provider: give one of {', '.join(sorted(PROVIDERS))}")
    return found


def choose_form(provider: str, rejections: Section = ()) -> tuple[Form, str]:
    """The form for this provider and evidence, and a note when the evidence does not settle it."""
    if provider != "microsoft":
        return FORMS[provider], ""
    lines = [fact.text for fact in rejections] if isinstance(rejections, tuple) else []
    if any(_M365_BAN.search(line) for line in lines):
        return FORMS["m365"], "chosen because a refusal carries 5.7.606-5.7.649 (Microsoft 365 banned sending IP)"
    note = (
        "chosen as no refusal carries 5.7.606-5.7.649; if Microsoft 365 servers refuse you with one of those, "
        f"use {FORMS['m365'].name} instead: {FORMS['m365'].url}"
    )
    return FORMS["outlook"], note


def _when(value: datetime | date | None) -> str:
    if value is None:
        return "undated"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M} UTC"
    return value.isoformat()


def _section(title: str, section: Section) -> list[str]:
    if isinstance(section, Missing):
        return [f"{title}: not available ({section.reason})"]
    if not section:
        return [f"{title}: none"]
    lines = [f"{title}:"]
    for fact in section:
        source = f", {fact.source}" if fact.source else ""
        lines.append(f"  - [{_when(fact.as_of)}{source}] {fact.text}")
    return lines


def _rates(rates: tuple[AuthPassRates, ...] | Missing) -> list[str]:
    title = "Authentication pass rates in your DMARC aggregate reports"
    if isinstance(rates, Missing):
        return [f"{title}: not available ({rates.reason})"]
    lines = [f"{title}:"] if rates else [f"{title}: none received"]
    for r in rates:
        lines.append(
            f"  - [{r.first_day} to {r.last_day}, {r.reporter}] {r.messages} messages: DMARC {r.dmarc:.1%}, "
            f"SPF {r.spf:.1%}, DKIM {r.dkim:.1%}"
        )
    return lines


def _volume(volume: tuple[DailyVolume, ...] | Missing, provider: str) -> list[str]:
    title = f"Daily volume to {provider} (our MTA log)"
    if isinstance(volume, Missing):
        return [f"{title}: not available ({volume.reason})"]
    lines = [f"{title}:"] if volume else [f"{title}: no mail in the period"]
    for v in sorted(volume, key=lambda item: item.day):
        lines.append(f"  - [{v.day}] {v.delivered} delivered, {v.deferred} deferred, {v.bounced} bounced")
    return lines


def _opening(facts: TicketFacts, form: Form) -> list[str]:
    domains = ", ".join(facts.domains) or "our domain"
    refused = isinstance(facts.rejections, tuple) and bool(facts.rejections)
    dropped = isinstance(facts.silent_drops, tuple) and bool(facts.silent_drops)
    if refused:
        problem = f"{form.provider} refuses mail from this address"
    elif dropped:
        problem = f"{form.provider} accepts mail from this address (250) but it does not reach the mailbox"
    else:
        problem = f"we ask {form.provider} to review the reputation of this address"
    return [
        "Hello,",
        "",
        f"We operate the mail server at {facts.ip}, which sends the mail of {domains}. {problem[0].upper()}"
        f"{problem[1:]}. We ask you to review the address and, if it meets your requirements, to lift the block.",
        "The facts below come from our monitoring; each is dated. Where a fact is not available, we say so.",
    ]


def ticket_text(facts: TicketFacts, sender: str = "") -> str:
    """The request: where to send it, then the text to paste (an opening, the dated facts, a closing)."""
    form, note = choose_form(facts.provider, facts.rejections)
    head = [
        f"Delisting request for {facts.ip} ({form.provider}), prepared {_when(facts.generated_at)}",
        f"Send it with {form.name}: {form.url}",
        f"({form.scope}{'; ' + note if note else ''})",
        "",
        "----- text to paste -----",
    ]
    body = [
        *_opening(facts, form),
        "",
        f"Sending IP: {facts.ip}",
        *_section("Reverse DNS (PTR)", facts.ptr),
        *_section("HELO name", facts.helo),
        *_section("Refusals by your servers (exact replies)", facts.rejections),
        *_section("Test messages accepted with 250 and then missing", facts.silent_drops),
        *(_section("SNDS", facts.snds) if FAMILY[facts.provider] == "microsoft" else []),
        *_section("Complaints (feedback loop reports)", facts.complaints),
        *_rates(facts.auth_rates),
        *_volume(facts.volume, form.provider),
        *_section("Blocklists", facts.blocklists),
        *_section("Authentication set-up", facts.auth_setup),
        "",
        "Thank you for your time.",
        *([sender] if sender else []),
    ]
    return "\n".join([*head, *body, "----- end -----", ""])
