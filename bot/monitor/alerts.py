"""Change detection with hysteresis, and the words of alerts. No I/O: state in, events out.

Each (target, check, subject) has a state document. A new status (or a new significant evidence, such
as a listing's reason) is a *candidate* until it has been seen `confirm` runs in a row; then it is
confirmed and becomes an Event. `unknown` is never a candidate: it neither confirms nor resets, and
only a run of unknowns longer than `unknown_after` speaks, once, as "cannot check", then "checking again".

Checks in `AlertRules.on_sight` read a record (a provider's published data, the complaint journal) rather than
probe the network: a reading is as sure the first time as the second, so it is confirmed on sight.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bot.durations import format_duration
from bot.i18n import _, ngettext, number, timestamp
from bot.monitor.state import AlertState, HistoryEntry, json_table, json_text
from bot.render import MARKS, Rendered, event_kind, status_name
from checks import Finding, Status

__all__ = [
    "AlertRules", "Event", "observe", "one_per_state", "render_events", "run_stamp", "seen_unchanged",
    "significant_evidence", "state_key",
]  # fmt: skip

CERT_WARN_DAYS = 21
# Evidence keys whose change inside one status is worth a message; days_left is reduced to a threshold bucket.
SIGNIFICANT_KEYS = (
    "answers",
    "reason",
    "codes",
    "return_codes",
    "txt",
    "key_fingerprint",
    "fingerprint",
    "policy_hash",
    "policy_id",
    "days_left",
    "newest",  # complaints: the newest recorded complaint of a domain; it changes when a new one arrives
    "reputation",  # postmaster: HIGH -> MEDIUM is a drop worth saying, though both are ok
    "failing",  # spf: the sending IPs that do not pass; another IP failing is news inside the same fail
    "problems",  # findings joined into one state (one_per_state): another of them going wrong is news
)
# Records, not probes: SNDS and Postmaster publish a day's data, complaints come from the durable journal,
# traffic reads the MTA's own log (a block reply in it is as sure the first time as the second).
ON_SIGHT = frozenset({"snds", "postmaster", "complaints", "traffic"})
_PROBLEM = (Status.WARN.value, Status.FAIL.value)
ALERT_LINES = 30  # events an alert lists one by one; a run with more says a line per kind of change
ALERT_GROUPS = 20  # groups a grouped alert shows per kind of event, largest first
_BY_SUBJECT = frozenset({"dnsbl"})  # checks whose changes are grouped by subject too (the blocklist zone)
T = TypeVar("T")


@dataclass(frozen=True)
class AlertRules:
    """How sure the monitor must be before it speaks."""

    confirm: int = 2
    immediate_new_listing: bool = True
    unknown_after: timedelta = timedelta(hours=2)
    cert_warn_days: int = CERT_WARN_DAYS
    on_sight: frozenset[str] = ON_SIGHT


@dataclass(frozen=True)
class Event:
    """One thing worth telling; kind: problem, resolved, changed, evidence, cannot-check, checking-again."""

    kind: str
    target: str
    check: str
    subject: str
    status: str
    summary: str
    old_status: str | None = None
    lasted: timedelta | None = None
    since: str | None = None
    advice: str = ""
    detail: str = ""
    at: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    code: str = ""  # the finding's code: what groups a run's thousands of changes (render_events)

    def history_entry(self, *, muted: bool) -> HistoryEntry:
        """What the history keeps of this event."""
        lasted = self.lasted.total_seconds() if self.lasted is not None else None
        return HistoryEntry(
            self.at, self.kind, self.target, self.check, self.subject, self.status, self.summary,
            self.old_status, self.since, self.detail, lasted, muted,
        )  # fmt: skip


def state_key(target: str, finding: Finding) -> str:
    return f"{target}|{finding.check}|{finding.subject}"


def one_per_state(findings: Sequence[Finding]) -> Sequence[Finding]:
    """The findings, those that share a check and a subject joined into one: a state keeps one finding.

    SPF says several things of one domain (the record, its lookups, its `all`), DMARC two (the record, the
    alignment), all under the domain's name. Kept apart, each overwrote the other's state in the same run, so
    its candidate changed at every run and a problem among them was never confirmed, never said. Joined, the
    state's status is the worst of theirs, and another of them going wrong is news (`problems`).
    """
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.check, finding.subject), []).append(finding)
    if len(groups) == len(findings):
        return findings
    return [group[0] if len(group) == 1 else _joined(group) for group in groups.values()]


def _joined(group: Sequence[Finding]) -> Finding:
    worst = max(group, key=lambda finding: finding.status.severity)  # the first of the worst
    wrong = [finding for finding in group if finding.status is not Status.OK]
    if not wrong:
        return group[0]  # all well: the first (the record) says it
    evidence: dict[str, Any] = {}
    for finding in wrong:
        evidence.update(finding.evidence)
    evidence["problems"] = [finding.code for finding in wrong]
    summary = "; ".join(dict.fromkeys(finding.summary for finding in wrong))
    advice = " ".join(dict.fromkeys(finding.advice for finding in wrong if finding.advice))
    return dataclasses.replace(worst, summary=summary, evidence=evidence, advice=advice)


def significant_evidence(evidence: Mapping[str, Any], rules: AlertRules) -> dict[str, Any]:
    """The part of the evidence whose change inside the same status is news."""
    kept: dict[str, Any] = {}
    if not evidence:
        return kept
    for name in SIGNIFICANT_KEYS:
        if name not in evidence:
            continue
        value = evidence[name]
        if name == "days_left" and isinstance(value, int | float):
            value = "soon" if value < rules.cert_warn_days else "later"
        kept[name] = value
    return kept


def _signature(status: str, code: str, evidence: Mapping[str, Any]) -> str:
    if not evidence:
        return _plain_signature(status, code)  # most findings: the same few strings, run after run
    # Shared: a /20's 73k clean listings have the same few signatures, each state would hold its own copy.
    return sys.intern(json.dumps([status, code, evidence], sort_keys=True, default=str))


@functools.lru_cache(maxsize=256)
def _plain_signature(status: str, code: str) -> str:
    return json.dumps([status, code, {}], sort_keys=True)


@functools.lru_cache(maxsize=8)
def run_stamp(now: datetime) -> str:
    """now.isoformat(), once per run rather than once per finding: a run's states share one last_seen."""
    return now.isoformat()


def _new_state(key: str, target: str, finding: Finding) -> dict[str, Any]:
    return AlertState(key, target, finding.check, finding.subject).to_json()


def observe(
    state: AlertState | None, target: str, finding: Finding, now: datetime, rules: AlertRules
) -> tuple[AlertState, list[Event]]:
    """The updated state for one finding, and the events it confirms (usually none)."""
    if state is not None and seen_unchanged(state, finding, rules):
        return state.seen_again(run_stamp(now), finding.status.value), []
    key = state_key(target, finding)
    # One working copy per finding; the stored AlertState is never changed in place.
    work = state.to_json() if state is not None else _new_state(key, target, finding)
    events = _observe(work, finding, now, rules)
    return AlertState(**work), events


def seen_unchanged(state: AlertState, finding: Finding, rules: AlertRules) -> bool:
    """The same confirmed finding as last time, word for word: only last_seen moves (most findings, most runs)."""
    if finding.status is Status.UNKNOWN or state.unknown_since is not None or state.candidate is not None:
        return False
    significant = significant_evidence(finding.evidence, rules)
    return (
        state.signature == _signature(finding.status.value, finding.code, significant)
        and state.summary == finding.summary
        and state.advice == finding.advice
        and state.evidence_json == json_text(finding.evidence)
    )


def _observe(state: dict[str, Any], finding: Finding, now: datetime, rules: AlertRules) -> list[Event]:
    stamp = run_stamp(now)
    state["last_seen"] = stamp
    state["last_status"] = finding.status.value
    if finding.status is Status.UNKNOWN:
        return _observe_unknown(state, finding, now, rules)
    events: list[Event] = []
    if state["unknown_alerted"]:
        lasted = now - datetime.fromisoformat(state["unknown_since"])
        events.append(_event("checking-again", state, finding, stamp, lasted=lasted))
    state.update(unknown_since=None, unknown_alerted=False)
    significant = significant_evidence(finding.evidence, rules)
    signature = _signature(finding.status.value, finding.code, significant)
    summary, advice = sys.intern(finding.summary), sys.intern(finding.advice)  # shared by the states that say it
    if signature == state["signature"]:
        state.update(candidate=None, candidate_count=0, candidate_since=None, summary=summary)
        state.update(advice=advice, evidence_json=json_text(finding.evidence))
        return events
    if state["candidate"] == signature:
        state["candidate_count"] += 1
    else:
        state.update(candidate=signature, candidate_count=1, candidate_since=stamp)
    state["candidate_summary"] = summary  # !status shows what waits for confirmation
    if state["candidate_count"] < _needed(state, finding, rules):
        return events
    event = _confirmed(state, finding, significant, stamp)
    state.update(status=finding.status.value, signature=signature, since=state["candidate_since"])
    state.update(candidate=None, candidate_count=0, candidate_since=None, summary=summary)
    state.update(advice=advice, evidence_json=json_text(finding.evidence), significant_json=json_text(significant))
    if event is not None:
        events.append(event)
    return events


def _observe_unknown(state: dict[str, Any], finding: Finding, now: datetime, rules: AlertRules) -> list[Event]:
    if state["unknown_since"] is None:
        state["unknown_since"] = now.isoformat()
    state["unknown_summary"] = finding.summary
    since = datetime.fromisoformat(state["unknown_since"])
    if state["unknown_alerted"] or now - since < rules.unknown_after:
        return []
    state["unknown_alerted"] = True
    return [_event("cannot-check", state, finding, now.isoformat(), since=state["unknown_since"])]


def _needed(state: dict[str, Any], finding: Finding, rules: AlertRules) -> int:
    old = state["status"]
    new_problem = finding.status.value in _PROBLEM and old not in _PROBLEM
    if rules.immediate_new_listing and new_problem and finding.check == "dnsbl":
        return 1
    if finding.check in rules.on_sight:
        return 1
    return max(1, rules.confirm)


def _confirmed(state: dict[str, Any], finding: Finding, significant: dict[str, Any], stamp: str) -> Event | None:
    old, new = state["status"], finding.status.value
    started = state["candidate_since"]
    if old is None:
        # The first confirmed state is the baseline: only a problem is news.
        return _event("problem", state, finding, stamp, since=started) if new in _PROBLEM else None
    if old == new:
        # Both as JSON reads them: a tuple in a fresh finding is the list the stored text holds.
        detail = _evidence_detail(json_table(state["significant_json"]), json_table(json_text(significant)))
        if not detail and new not in _PROBLEM:
            return None  # an ok finding whose wording changed is no news
        return _event("evidence", state, finding, stamp, detail=detail or "details changed", since=state["since"])
    lasted = datetime.fromisoformat(started) - datetime.fromisoformat(state["since"])
    if new == Status.OK.value:
        return _event("resolved", state, finding, stamp, lasted=lasted, old_status=old)
    kind = "problem" if old not in _PROBLEM else "changed"
    return _event(kind, state, finding, stamp, old_status=old, since=started)


def _evidence_detail(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    parts: list[str] = []
    if "days_left" in new and old.get("days_left") != new["days_left"]:
        parts.append("certificate expiry is now near" if new["days_left"] == "soon" else "certificate renewed")
    if "policy_hash" in new and old.get("policy_hash") != new["policy_hash"]:
        same_id = old.get("policy_id") == new.get("policy_id")
        parts.append("policy changed but its id did not" if same_id else "policy and its id changed")
    if "key_fingerprint" in new and old.get("key_fingerprint") != new["key_fingerprint"]:
        parts.append("key replaced")
    if "newest" in new and old.get("newest") != new["newest"]:
        parts.append("more complaints")
    if "reputation" in new and old.get("reputation") != new["reputation"]:
        parts.append(f"reputation was {old.get('reputation') or '?'}, now {new['reputation']}")
    for name in ("answers", "reason", "codes", "return_codes", "txt", "fingerprint", "failing"):
        if name in new and old.get(name) != new[name]:
            parts.append(f"{name.replace('_', ' ')} was {_short(old.get(name))}, now {_short(new[name])}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _event(kind: str, state: dict[str, Any], finding: Finding, stamp: str, **fields: Any) -> Event:
    return Event(
        kind=kind,
        target=state["target"],
        check=finding.check,
        subject=finding.subject,
        status=finding.status.value,
        summary=finding.summary,
        advice=finding.advice,
        at=stamp,
        code=finding.code,
        **fields,
    )


# -- words ---------------------------------------------------------------------------------------------------


def _where(event: Event) -> str:
    subject = "" if event.subject == event.target else f" ({event.subject})"
    return f"{event.check} {event.target}{subject}"


def event_line(event: Event) -> str:
    """One line for one event: mark, what, how long."""
    if event.kind == "resolved":
        if event.check == "dnsbl":
            verb = _("delisted from {zone}").format(zone=event.subject)
        else:
            verb = _("{check} {subject} ok again").format(check=event.check, subject=event.subject)
        return f"{MARKS[Status.OK]} {event.target}: {verb}{_after(event.lasted)} — {event.summary}"
    if event.kind == "cannot-check":
        line = _("cannot check {what} since {time}").format(what=_where(event), time=_clock(event.since))
        return f"{MARKS[Status.UNKNOWN]} {line}: {event.summary}"
    if event.kind == "checking-again":
        line = _("checking {what} again").format(what=_where(event))
        return f"{MARKS[Status.OK]} {line}{_after(event.lasted)}"
    mark = MARKS[Status(event.status)]
    if event.kind == "evidence":
        return f"{mark} {_where(event)}: {event.detail} — {event.summary}"
    if event.check == "dnsbl" and event.kind == "problem":
        listing = _("new listing on {zone}").format(zone=event.subject)
        return f"{mark} {event.target}: {listing} — {event.summary}"
    status = status_name(Status(event.status))
    was = " " + _("(was {status})").format(status=status_name(Status(event.old_status))) if event.old_status else ""
    return f"{mark} {_where(event)}: {status}{was} — {event.summary}"


def _after(lasted: timedelta | None) -> str:
    return " " + _("after {duration}").format(duration=format_duration(lasted)) if lasted is not None else ""


def _clock(stamp: str | None) -> str:
    if not stamp:
        return "?"
    return timestamp(datetime.fromisoformat(stamp))


def render_events(events: Sequence[Event]) -> Rendered:
    """One message for the events of one run: a line each, advice under the problems; past ALERT_LINES events,
    a line per kind of change instead (5,496 lines, what the first problems of a /20 and 200 domains made,
    help nobody)."""
    head = "repbot: " + ngettext("{count} change", "{count} changes", len(events)).format(count=number(len(events)))
    if len(events) <= ALERT_LINES:
        said = [(event_line(event), _advice(event)) for event in events]
    else:
        said = [(_("grouped by kind: !status and !history TARGET have each one"), ""), *_grouped_lines(events)]
    lines: list[str] = [head]
    html_lines: list[str] = []
    for line, advice in said:
        lines.extend([line, f"    → {advice}"] if advice else [line])
        html_lines.append(html.escape(line) + (f"<br/><i>→ {html.escape(advice)}</i>" if advice else ""))
    return Rendered(plain="\n".join(lines), html=f"<b>{head}</b><br/>" + "<br/>".join(html_lines))


def _advice(event: Event) -> str:
    return event.advice if event.kind in ("problem", "changed", "evidence") and event.status in _PROBLEM else ""


def _grouped_lines(events: Sequence[Event]) -> list[tuple[str, str]]:
    """For each kind of event, in the order they came: a line (problem: 5,496 on 200 targets), then its groups."""
    kinds: dict[str, list[Event]] = {}
    for event in events:
        kinds.setdefault(event.kind, []).append(event)
    said: list[tuple[str, str]] = []
    for kind, of_kind in kinds.items():
        targets = len({event.target for event in of_kind})
        on = ngettext("on {count} targets", "on {count} targets", targets).format(count=number(targets))
        said.append((f"{event_kind(kind)}: {number(len(of_kind))} {on}", ""))
        for line, first in _grouped(of_kind, _event_group, event_line):
            said.append(("  " + line, _advice(first) if first is not None else ""))
    return said


def _event_group(event: Event) -> tuple[str, ...]:
    # A blocklist's name is the news ("listed on X"); elsewhere the subject is per target (mx.example.org).
    return event.check, event.code, event.status, event.subject if event.check in _BY_SUBJECT else ""


def _grouped(
    items: Sequence[T], key: Callable[[T], tuple[str, ...]], line: Callable[[T], str]
) -> list[tuple[str, T | None]]:
    """Items of one key together, the largest groups first (at most ALERT_GROUPS): each group's first item's line
    and how many more are like it, with that item; then how many did not fit, with None."""
    groups: dict[tuple[str, ...], list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    ordered = sorted(groups.values(), key=len, reverse=True)
    said: list[tuple[str, T | None]] = []
    for group in ordered[:ALERT_GROUPS]:
        more = " " + _("(and {count} more like it)").format(count=number(len(group) - 1)) if len(group) > 1 else ""
        said.append((line(group[0]) + more, group[0]))
    if len(ordered) > ALERT_GROUPS:
        rest, others = sum(map(len, ordered[ALERT_GROUPS:])), len(ordered) - ALERT_GROUPS
        said.append(
            (_("… and {count} more of {groups} other kinds").format(count=number(rest), groups=number(others)), None)
        )
    return said


def is_muted(event: Event, mutes: Iterable[str]) -> bool:
    """True when a mute names the event's check, target or subject."""
    names = {event.check, event.target, event.subject}
    return any(what in names for what in mutes)


def _wrong_line(state: AlertState, now: datetime) -> str:
    since = now - datetime.fromisoformat(state.since) if state.since else None
    lasting = " " + _("for {duration}").format(duration=format_duration(since)) if since is not None else ""
    return f"{MARKS[Status(state.status)]} {state.target} {state.check} {state.subject}{lasting}: {state.summary}"


def _wrong_lines(wrong: Sequence[AlertState], now: datetime) -> list[str]:
    """A line per problem; past ALERT_LINES of them, as an alert does, a line per group of one check and status."""
    if len(wrong) <= ALERT_LINES:
        return [_wrong_line(state, now) for state in wrong]
    return [line for line, _first in _grouped(wrong, _state_group, lambda state: _wrong_line(state, now))]


def _state_group(state: AlertState) -> tuple[str, ...]:
    return state.check, state.status or "", state.subject if state.check in _BY_SUBJECT else ""


def digest_message(
    states: Sequence[AlertState], changes: Sequence[HistoryEntry], now: datetime, extra: Sequence[str] = ()
) -> Rendered:
    """The daily digest: what is still wrong and what changed in 24 h (or one all-clear line), then `extra`."""
    wrong = [s for s in states if s.status in _PROBLEM]
    blind = [s for s in states if s.unknown_alerted]
    if not wrong and not blind and not changes:
        targets = len({s.target for s in states})
        checks = ngettext("{count} checks", "{count} checks", len(states)).format(count=number(len(states)))
        on = ngettext("on {count} targets", "on {count} targets", targets).format(count=number(targets))
        text = f"{MARKS[Status.OK]} " + _("repbot daily digest: all clear ({checks} {on}).").format(
            checks=checks, on=on
        )
        lines = [text, *extra]
        return Rendered("\n".join(lines), "<br/>".join(html.escape(line) for line in lines))
    problems = ngettext("{count} problem(s)", "{count} problem(s)", len(wrong)).format(count=number(len(wrong)))
    changed = ngettext("{count} change(s)", "{count} change(s)", len(changes)).format(count=number(len(changes)))
    lines = [_("repbot daily digest: {problems}, {changes} in 24 h").format(problems=problems, changes=changed)]
    lines.extend(_wrong_lines(sorted(wrong, key=lambda s: (s.target, s.check, s.subject)), now))
    for state in blind:
        what = f"{state.target} {state.check} {state.subject}"
        lines.append(f"{MARKS[Status.UNKNOWN]} " + _("cannot check {what}").format(what=what))
    if changes:
        lines.append(_("changes:"))
        for change in changes[-20:]:
            muted = " " + _("(muted)") if change.muted else ""
            kind = event_kind(change.kind)
            lines.append(f"  {change.at[:16]} {kind} {change.target} {change.subject}{muted}")
    lines.extend(extra)
    body = "\n".join(lines)
    return Rendered(body, "<br/>".join(html.escape(line) for line in lines))
