"""The monitor in the room: it runs while the bot runs, and answers !status, !history, !mute, !unmute, !run."""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bot.commands.core import REGISTRY, Argument, Call, Services, command, target_arg
from bot.durations import format_duration, parse_duration
from bot.monitor.core import Monitor
from bot.monitor.state import AlertState, DeadLetter, HistoryEntry
from bot.monitor.store import Store
from bot.render import MARKS, Rendered, plain_and_html
from checks import Status

__all__ = ["STATE_FILE", "history_text", "monitor_lifespan", "status_text"]

STATE_FILE = "monitor.json"
HISTORY_LINES = 25
DEAD_LINES = 5
NO_RESULTS = "no results yet: the first scheduled run has not finished (try !run)"
_PROBLEMS = (Status.WARN.value, Status.FAIL.value)


@REGISTRY.lifespan
@contextlib.asynccontextmanager
async def monitor_lifespan(services: Services) -> AsyncIterator[None]:
    """Open the store, start the monitor (outbox, schedules, digest) and stop it when the bot stops."""
    store = Store(Path(services.config.state_dir) / STATE_FILE)
    monitor = Monitor(services.config, store, services.transport, services.ctx)
    services.extra["monitor"] = monitor
    await monitor.start()
    try:
        yield
    finally:
        await monitor.stop()
        store.close()


def _monitor(call: Call) -> Monitor:
    monitor = call.services.extra.get("monitor")
    if not isinstance(monitor, Monitor):
        raise LookupError("the monitor is not running")
    return monitor


def _pre(text: str) -> Rendered:
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


def status_text(
    states: Sequence[AlertState], mutes: Mapping[str, str], now: datetime, dead: Sequence[DeadLetter] = ()
) -> str:
    """The stored state: a line per target with its worst status, a line per problem or blind check."""
    lines = _target_lines(states, now) if states else [NO_RESULTS]
    for what, until in sorted(mutes.items()):
        lines.append(f"muted: {what} until {until[:16].replace('T', ' ')} UTC")
    if dead:
        lines.append(f"undelivered: {len(dead)} message(s) refused by their room (newest last):")
        for letter in dead[-DEAD_LINES:]:
            first = letter.item.plain.split("\n", 1)[0][:60] or letter.item.kind
            lines.append(f"    {letter.at[:16].replace('T', ' ')} {letter.room}: {letter.short_reason} — {first}")
    return "\n".join(lines)


def _target_lines(states: Sequence[AlertState], now: datetime) -> list[str]:
    by_target: dict[str, list[AlertState]] = {}
    for state in states:
        by_target.setdefault(state.target, []).append(state)
    lines: list[str] = []
    for target, group in sorted(by_target.items()):
        known = [Status(s.status) for s in group if s.status]
        blind = [s for s in group if s.last_status == Status.UNKNOWN.value]
        worst = max(known, key=lambda status: status.severity, default=Status.UNKNOWN)
        seen = max(s.last_seen for s in group)
        ago = format_duration(now - datetime.fromisoformat(seen)) if seen else "?"
        lines.append(f"{MARKS[worst]} {target}: {worst.value}, {len(group)} checks, last run {ago} ago")
        for state in sorted(group, key=lambda s: (s.check, s.subject)):
            if state.status in _PROBLEMS:
                since = format_duration(now - datetime.fromisoformat(state.since)) if state.since else "?"
                mark = MARKS[Status(state.status)]
                lines.append(f"    {mark} {state.check} {state.subject} for {since}: {state.summary}")
        for state in blind:
            lines.append(f"    ? {state.check} {state.subject}: {state.unknown_summary or 'unknown'}")
    return lines


def history_text(entries: Sequence[HistoryEntry], target: str, check: str | None) -> str:
    """The changes of one target (and check), newest last, at most HISTORY_LINES."""
    what = f"{target} {check}" if check else target
    if not entries:
        return f"no changes recorded for {what}"
    lines = [f"changes for {what} ({len(entries)}):"]
    for entry in entries[-HISTORY_LINES:]:
        lasted = f" after {format_duration(entry.lasted)}" if entry.lasted else ""
        muted = " (muted)" if entry.muted else ""
        stamp = entry.at[:16].replace("T", " ")
        line = f"{stamp} {entry.kind}{lasted} {entry.check} {entry.subject}: {entry.summary}{muted}"
        lines.append(line)
    return "\n".join(lines)


@command("status", help="the monitor's current state of every IP and domain, from the store", replace=True)
async def status(call: Call) -> Rendered:
    monitor = _monitor(call)
    now = monitor.clock()
    store = monitor.store
    return _pre(status_text(store.states(), store.mutes(now.isoformat()), now, store.dead_letters()))


@command(
    "history",
    help="the changes seen for a target over time, optionally for one check",
    args=[Argument("target", target_arg), Argument("check", str, required=False)],
)
async def history(call: Call) -> Rendered:
    target, check = call.args["target"], call.args.get("check")
    entries = _monitor(call).store.history(target=target, check=check)
    return _pre(history_text(entries, target, check))


@command(
    "mute",
    help="keep alerts about a check, target or zone out of the room for a while (still recorded)",
    args=[Argument("what", str.lower), Argument("duration", parse_duration)],
)
async def mute(call: Call) -> Rendered:
    monitor = _monitor(call)
    until = monitor.clock().astimezone(UTC) + call.args["duration"]
    with monitor.store.batch():
        monitor.store.mute(call.args["what"], until.isoformat())
    shown = until.strftime("%Y-%m-%d %H:%M UTC")
    return plain_and_html(f"muted {call.args['what']} until {shown}: its alerts are recorded, not posted")


@command("unmute", help="post alerts about a check, target or zone again", args=[Argument("what", str.lower)])
async def unmute(call: Call) -> Rendered:
    monitor = _monitor(call)
    with monitor.store.batch():
        removed = monitor.store.unmute(call.args["what"])
    return plain_and_html(f"unmuted {call.args['what']}" if removed else f"{call.args['what']} was not muted")


@command(
    "run",
    help="run a monitor job now (blocklists, domains, tls, ...), or all of them",
    args=[Argument("family", str.lower, required=False)],
    costly=True,
)
async def run(call: Call) -> Rendered:
    monitor = _monitor(call)
    wanted = call.args.get("family")
    if wanted is not None and wanted not in monitor.families:
        known = ", ".join(sorted(monitor.families)) or "none configured"
        return plain_and_html(f"no job {wanted!r}; the jobs are: {known}")
    names = [wanted] if wanted else sorted(monitor.families)
    if not names:
        return plain_and_html("nothing is monitored: add ips or domains under [monitor]")
    parts = []
    for name in names:
        events = await monitor.run_family(name)
        parts.append(f"{name}: {len(events)} change(s)" if events else f"{name}: no change")
    suffix = " (alerts go to the alert rooms)" if any("change(s)" in part for part in parts) else ""
    return plain_and_html("ran " + "; ".join(parts) + suffix)
