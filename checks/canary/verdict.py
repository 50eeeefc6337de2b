"""Join the evidence about canaries into verdicts: one per canary, and one per provider with SNDS.

`classify` is pure: a sent `Canary`, where it was found (`Placement`), what the MTA log says (`Trace`, or the
`LogUnavailable` saying why nothing is known) and the time give a `CanaryVerdict` with its quoted evidence.
`settle` and `run_canary` do the I/O around it. `provider_finding` combines recent verdicts with SNDS findings.

`drop_join` is the silent-drop join: per provider and day, the messages the MTA log says the provider accepted
with 250, the messages the provider's own DMARC aggregate report counts from our IPs (any `DmarcCounts`), and
the canary verdicts, side by side, with a confidence that drops, naming the missing source, when one is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from statistics import median
from typing import Any, Protocol

from checks.canary.maillog import LogUnavailable, Trace, follow
from checks.canary.ndr import Explanation, explain, load_contacts, provider_family
from checks.canary.probe import Canary, CanarySettings, Placement, poll, send
from checks.context import CheckContext
from checks.i18n import N_, _, ngettext, number
from checks.model import Finding, Status

__all__ = [
    "KINDS",
    "CanaryVerdict",
    "DmarcCounts",
    "DropJoin",
    "classify",
    "drop_join",
    "provider_finding",
    "run_canary",
    "settle",
]

KINDS = (
    "inbox", "junk", "bounced", "deferred", "not-sent", "pending", "missing-accepted", "missing-unknown", "unreadable",
)  # fmt: skip
_STATUS = {
    "inbox": Status.OK, "junk": Status.WARN, "bounced": Status.FAIL, "deferred": Status.WARN,
    "not-sent": Status.FAIL, "pending": Status.UNKNOWN, "missing-accepted": Status.FAIL,
    "missing-unknown": Status.WARN, "unreadable": Status.UNKNOWN,
}  # fmt: skip
_CONTACT = {
    "microsoft": "outlook-form",
    "google": "google-postmaster",
    "yahoo": "yahoo-senders",
    "gmx": "gmx-postmaster",
}


@dataclass(frozen=True)
class CanaryVerdict:
    """What happened to one canary, with the lines it rests on."""

    canary: Canary
    kind: str
    summary: str
    lines: tuple[str, ...] = ()
    explanation: Explanation | None = None
    latency: float | None = None
    advice: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return _STATUS[self.kind]

    @property
    def final(self) -> bool:
        """False while the canary is pending (its verdict may still change)."""
        return self.kind != "pending"

    def to_finding(self, now: datetime | None = None) -> Finding:
        """The verdict as a Finding (check 'canary', subject the canary's name)."""
        evidence: dict[str, Any] = {
            "token": self.canary.token,
            "message_id": self.canary.message_id,
            "seed": self.canary.seed,
            "sent_at": self.canary.sent_at.isoformat(timespec="seconds"),
            "lines": list(self.lines),
            **self.extra,
        }
        if self.latency is not None:
            evidence["latency_seconds"] = round(self.latency, 1)
        if self.explanation is not None:
            evidence["explanation"] = self.explanation.line()
        observed = now or datetime.now(UTC)
        return Finding(
            "canary",
            self.canary.name,
            self.status,
            self.summary,
            evidence,
            self.advice,
            f"canary-{self.kind}",
            observed,
        )


def _with_reply(canary: Canary, kind: str, summary: str, lines: list[str], reply: str | None) -> CanaryVerdict:
    explanation = explain(reply, canary.name) if reply else None
    advice = explanation.said() if explanation else ""
    if explanation is not None and explanation.matched not in summary:
        summary = f"{summary} [{explanation.matched}]"
    return CanaryVerdict(canary, kind, summary, tuple(lines), explanation, advice=advice)


def _found(canary: Canary, placement: Placement, now: datetime) -> CanaryVerdict:
    arrived = placement.received_at or now
    latency = max(0.0, (arrived - canary.sent_at).total_seconds())
    verdict = placement.verdict
    lines = list(verdict.lines) if verdict else []
    if placement.folder == "inbox":
        return CanaryVerdict(
            canary,
            "inbox",
            _("in the Inbox of {seed} after {latency}").format(seed=canary.seed, latency=_duration(latency)),
            tuple(lines),
            latency=latency,
        )
    reasons = []
    if verdict is not None:
        if verdict.scl is not None:
            reasons.append(f"SCL {verdict.scl}")
        for method in ("spf", "dkim", "dmarc", "compauth"):
            if method in verdict.results and verdict.results[method] != "pass":
                reasons.append(f"{method}={verdict.results[method]}")
        if verdict.compauth_reason:
            reasons.append(_("compauth reason {reason}").format(reason=verdict.compauth_reason))
    why = f" ({', '.join(reasons)})" if reasons else ""
    advice = _(
        "The receiver accepted it but filed it as spam: fix any failing authentication first; "
        "with all pass, it is reputation (check SNDS / Postmaster Tools)."
    )
    summary = _("in the Junk folder ({folder}) of {seed}{why}").format(
        folder=placement.folder_name, seed=canary.seed, why=why
    )
    return CanaryVerdict(canary, "junk", summary, tuple(lines), latency=latency, advice=advice)


def _from_log(canary: Canary, trace: Trace) -> CanaryVerdict | None:
    final = trace.final
    lines = list(trace.lines)
    if final is None:
        return None
    if final.status == "bounced":
        said = final.reply or final.detail
        return _with_reply(
            canary, "bounced", _("bounced by the remote: {reply}").format(reply=_short(said)), lines, said
        )
    if final.status == "deferred":
        said = final.reply or final.detail
        return _with_reply(
            canary, "deferred", _("our MTA is still retrying: {reply}").format(reply=_short(said)), lines, said
        )
    return None


def _missing(canary: Canary, trace: Trace | LogUnavailable | None) -> CanaryVerdict:
    seed = canary.seed
    if canary.send_via == "direct" and canary.reply:
        trace = Trace("direct", (), (), (f"remote reply to DATA: {canary.reply}",))
        accepted = canary.reply.startswith("2")
    elif isinstance(trace, Trace):
        accepted = trace.final is not None and trace.final.remote_accepted
    else:
        reason = str(trace) if trace is not None else _("no MTA log configured")
        summary = _(
            "not in the Inbox or Junk of {seed} after the deadline; acceptance unknown (evidence missing: {reason})"
        ).format(seed=seed, reason=reason)
        advice = _(
            "Give repbot read access to the MTA log (a path or a journalctl command) to tell a drop from a bounce."
        )
        return CanaryVerdict(canary, "missing-unknown", summary, (f"submission: {canary.reply}",), advice=advice)
    if accepted:
        reply = (trace.final.reply if trace.final else None) or canary.reply or ""
        summary = _(
            "accepted by the remote with {code} and in neither Inbox nor Junk of {seed}: suspected silent drop"
        ).format(code=reply[:3], seed=seed)
        contact = load_contacts()[_CONTACT.get(provider_family(canary.name) or "", "outlook-form")]
        advice = _("Ask for mitigation at {contact} <{url}>, quoting the accepted reply and the token.").format(
            contact=_(contact.name), url=contact.url
        )
        return CanaryVerdict(canary, "missing-accepted", summary, trace.lines, advice=advice)
    summary = _("our MTA never reached {seed}'s provider: the log shows no delivery attempt for this message").format(
        seed=seed
    )
    return CanaryVerdict(canary, "not-sent", summary, (*trace.lines, f"submission: {canary.reply}"))


def classify(
    canary: Canary, placement: Placement | None, trace: Trace | LogUnavailable | None, now: datetime
) -> CanaryVerdict:
    """The verdict for one canary at time `now`; pure."""
    if not canary.submitted:
        said = canary.reply or canary.error or "no reply"
        reason = _(canary.error) if canary.error else canary.reply or _("no reply")
        summary = _("not sent: {reason}").format(reason=_short(reason))
        return _with_reply(canary, "not-sent", summary, [f"submission: {said}"], canary.reply)
    if placement is not None and placement.folder:
        return _found(canary, placement, now)
    if placement is not None and placement.bounce is not None and placement.bounce.action == "failed":
        bounce = placement.bounce
        said = bounce.diagnostic or bounce.status or _("a bounce")
        return _with_reply(
            canary, "bounced", _("bounced: {reply}").format(reply=_short(said)), list(bounce.lines), said
        )
    logged = _from_log(canary, trace) if isinstance(trace, Trace) else None
    if logged is not None and logged.kind == "bounced":
        return logged
    delayed = placement.bounce if placement is not None and placement.bounce else None
    if now < canary.deadline_at:
        lines = logged.lines if logged else delayed.lines if delayed else ()
        summary = _("pending: not found yet, checking until {time} UTC").format(time=f"{canary.deadline_at:%H:%M}")
        return CanaryVerdict(canary, "pending", summary, lines)
    if placement is not None and placement.error:
        return CanaryVerdict(
            canary, "unreadable", _("cannot read the seed mailbox: {error}").format(error=placement.error), ()
        )
    if logged is not None:
        return logged
    if delayed is not None and delayed.action == "delayed":
        # A delay notice and no copy by the deadline: the remote is deferring it, whatever the log says.
        said = delayed.diagnostic or delayed.status or _("a delay notice")
        return _with_reply(
            canary,
            "deferred",
            _("delayed by the remote: {reply}").format(reply=_short(said)),
            list(delayed.lines),
            said,
        )
    return _missing(canary, trace)


async def settle(settings: CanarySettings, canary: Canary, placement: Placement, now: datetime) -> CanaryVerdict:
    """Read the MTA log (when it can matter) and classify."""
    trace: Trace | LogUnavailable | None = None
    if canary.submitted and not placement.folder and canary.send_via == "submission":
        trace = await follow(settings.log, canary.message_id, canary.seed, canary.queue_id)
    return classify(canary, placement, trace, now)


async def run_canary(
    settings: CanarySettings,
    ctx: CheckContext | None = None,
    clock: Callable[[], datetime] | None = None,
    on_sent: Callable[[Canary], Any] | None = None,
) -> CanaryVerdict:
    """Send one canary, wait for it (poll until found or the deadline) and return its verdict."""
    now = clock or (lambda: datetime.now(UTC))
    canary = await send(settings, ctx, now)
    if on_sent is not None:
        on_sent(canary)
    if not canary.submitted:
        return classify(canary, None, None, now())
    placement = await poll(settings, canary, now)
    return await settle(settings, canary, placement, now())


def provider_finding(
    name: str, verdicts: Sequence[CanaryVerdict], snds: Sequence[Finding] = (), join: DropJoin | None = None
) -> Finding:
    """One provider's diagnosis from its recent verdicts (oldest first), SNDS findings and the silent-drop join."""
    finding = _provider_finding(name, verdicts, snds)
    if join is None:
        return finding
    evidence = {**finding.evidence, "join": join.to_json()}
    summary = f"{finding.summary}. {join.summary}"
    status = finding.status
    if join.suspected and join.confidence in ("high", "medium") and status.severity < Status.FAIL.severity:
        status = Status.FAIL if join.confidence == "high" else Status.WARN
    return Finding(finding.check, finding.subject, status, summary, evidence, finding.advice, finding.code)


def _provider_finding(name: str, verdicts: Sequence[CanaryVerdict], snds: Sequence[Finding]) -> Finding:
    done = [v for v in verdicts if v.final]
    family = provider_family(name)
    snds_bad = [f for f in snds if f.check == "snds" and f.status in (Status.WARN, Status.FAIL)]
    snds_lines = [f"SNDS {f.subject}: {f.summary}" for f in snds_bad] if family == "microsoft" else []
    evidence: dict[str, Any] = {"canaries": [f"{v.canary.token} {v.kind}" for v in done], "snds": snds_lines}
    if not done:
        summary = _("no finished canary to {name} yet").format(name=name)
        return Finding("canary", name, Status.UNKNOWN, summary, evidence, code="provider-none")
    n = len(done)
    dropped = [v for v in done if v.kind == "missing-accepted"]
    snds_text = ("; " + "; ".join(snds_lines)) if snds_lines else ""
    if dropped:
        evidence["accepted"] = [line for v in dropped for line in v.lines if "250" in line][:5]
        likely = len(dropped) == n or bool(snds_lines and len(dropped) * 2 >= n)
        summary = _dropped_summary(likely, n).format(dropped=len(dropped), count=n, name=name, snds=snds_text)
        status = Status.FAIL if likely else Status.WARN
        return Finding("canary", name, status, summary, evidence, dropped[-1].advice, "provider-drop")
    latest = done[-1]
    inbox = sum(1 for v in done if v.kind == "inbox")
    if latest.kind == "inbox" and not snds_lines:
        latencies = [v.latency for v in done if v.kind == "inbox" and v.latency is not None]
        typical = _(", typically after {latency}").format(latency=_duration(median(latencies))) if latencies else ""
        summary = ngettext(
            "{inbox} of the last {count} canary to {name} reached the Inbox{typical}",
            "{inbox} of the last {count} canaries to {name} reached the Inbox{typical}",
            n,
        ).format(inbox=inbox, count=n, name=name, typical=typical)
        return Finding("canary", name, Status.OK, summary, evidence, code="provider-inbox")
    summary = ngettext(
        "last canary to {name}: {summary} ({inbox} of the last {count} in the Inbox){snds}",
        "last canary to {name}: {summary} ({inbox} of the last {count} in the Inbox){snds}",
        n,
    ).format(name=name, summary=latest.summary, inbox=inbox, count=n, snds=snds_text)
    status = latest.status if latest.status is not Status.OK else Status.WARN
    return Finding("canary", name, status, summary, evidence, latest.advice, f"provider-{latest.kind}")


def _dropped_summary(likely: bool, count: int) -> str:
    """The sentence for canaries accepted and never delivered: a likely silent block, or only a possible one."""
    if likely:
        return ngettext(
            "{dropped} of the last {count} canary to {name} accepted with 250 and never delivered{snds}; "
            "likely silent block",
            "{dropped} of the last {count} canaries to {name} accepted with 250 and never delivered{snds}; "
            "likely silent block",
            count,
        )
    return ngettext(
        "{dropped} of the last {count} canary to {name} accepted with 250 and never delivered{snds}; possible",
        "{dropped} of the last {count} canaries to {name} accepted with 250 and never delivered{snds}; possible",
        count,
    )


class DmarcCounts(Protocol):
    """What the DMARC aggregate reports say: messages a provider counted from one source IP on one day.

    None means no report from that provider covers that day (a report that counts 0 is 0).
    """

    def dmarc_count(self, provider: str, day: date, source_ip: str) -> int | None: ...


CONFIDENCE = ("none", "low", "medium", "high")
_SUSPECTED = {
    "low": N_("suspected silent drop, low confidence"),
    "medium": N_("suspected silent drop, medium confidence"),
    "high": N_("suspected silent drop, high confidence"),
}
# The sources' names stay English in `missing` (JSON); the summary says them translated.
_MTA_LOG, _DMARC_REPORT, _CANARIES = N_("the MTA log"), N_("the DMARC aggregate report"), N_("canaries")
# A provider's report may lag or round; fewer than this share of the accepted messages is a shortfall.
SHORTFALL = 0.8


@dataclass(frozen=True)
class DropJoin:
    """The three counts for one provider and day, and what they suggest."""

    provider: str
    day: date
    ips: tuple[str, ...]
    accepted: int | None  # 250s in the MTA log; None: no log followed
    dmarc: int | None  # the provider's DMARC report, summed over our IPs; None: no report
    canaries: int  # finished canaries to this provider that day
    canaries_dropped: int  # of those, accepted with 250 and found in neither Inbox nor Junk
    suspected: bool
    confidence: str  # none | low | medium | high
    missing: tuple[str, ...]
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "day": self.day.isoformat(), "ips": list(self.ips), "accepted": self.accepted,
            "dmarc": self.dmarc, "canaries": self.canaries, "canaries_dropped": self.canaries_dropped,
            "suspected": self.suspected, "confidence": self.confidence, "missing": list(self.missing),
        }  # fmt: skip


def _dmarc_total(source: DmarcCounts | None, provider: str, day: date, ips: Sequence[str]) -> int | None:
    if source is None or not ips:
        return None
    counts = [source.dmarc_count(provider, day, ip) for ip in ips]
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def drop_join(
    provider: str,
    name: str,
    day: date,
    accepted: int | None,
    dmarc: DmarcCounts | None,
    ips: Sequence[str],
    verdicts: Sequence[CanaryVerdict],
) -> DropJoin:
    """Join the MTA's acceptances, the provider's DMARC count and the canaries for one provider and day; pure."""
    reported = _dmarc_total(dmarc, provider, day, ips)
    done = [v for v in verdicts if v.final and v.canary.sent_at.astimezone(UTC).date() == day]
    dropped = sum(1 for v in done if v.kind == "missing-accepted")
    missing = tuple(
        what for what, absent in (
            (_MTA_LOG, accepted is None), (_DMARC_REPORT, reported is None), (_CANARIES, not done)
        ) if absent
    )  # fmt: skip
    shortfall = accepted is not None and reported is not None and accepted > 0 and reported < accepted * SHORTFALL
    signals = int(shortfall) + int(dropped > 0)
    suspected = signals > 0
    # Every signal the present sources can give, from all three sources, is high; each missing source lowers it
    # one step, and so does each present source that contradicts (a full DMARC count, canaries that arrived).
    possible = int(accepted is not None and reported is not None) + int(bool(done))
    confidence = CONFIDENCE[max(1, 3 - len(missing) - (possible - signals))] if suspected else "none"
    facts = _join_sentences(name, day, ips, accepted, reported, len(done), dropped)
    verdict = _(_SUSPECTED[confidence]) if suspected else _("No sign of a silent drop")
    if not facts:
        verdict = _("nothing to join for {name} on {day}").format(name=name, day=day.isoformat())
    summary = (". ".join(facts) + (": " if suspected else ". ") if facts else "") + verdict + "."
    if missing:
        sources = ", ".join(_(what) for what in missing)
        lowered = _("Missing: {sources} (confidence lowered).") if suspected else _("Missing: {sources}.")
        summary += " " + lowered.format(sources=sources)
    return DropJoin(
        provider, day, tuple(ips), accepted, reported, len(done), dropped, suspected, confidence, missing, summary
    )


def _join_sentences(
    name: str, day: date, ips: Sequence[str], accepted: int | None, reported: int | None, done: int, dropped: int
) -> list[str]:
    shown = day.isoformat()
    parts = []
    if accepted is not None and ips:
        parts.append(
            ngettext(
                "{name} accepted {count} message from {ips} on {day}",
                "{name} accepted {count} messages from {ips} on {day}",
                accepted,
            ).format(name=name, count=accepted, ips=", ".join(ips), day=shown)
        )
    elif accepted is not None:
        parts.append(
            ngettext(
                "{name} accepted {count} message on {day}", "{name} accepted {count} messages on {day}", accepted
            ).format(name=name, count=accepted, day=shown)
        )
    if reported is not None:
        parts.append(_("Its DMARC report counts {count}").format(count=reported))
    if done:
        # The English has always said "1 of 1 canaries"; ngettext lets Spanish tell one from many.
        parts.append(
            ngettext(
                "{dropped} of {count} canaries missing after acceptance",
                "{dropped} of {count} canaries missing after acceptance",
                done,
            ).format(dropped=dropped, count=done)
        )
    return parts


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{number(seconds, 0)} s"
    if seconds < 7200:
        return f"{number(seconds / 60, 0)} min"
    return f"{number(seconds / 3600, 1)} h"  # "2,5 h" in Spanish
