"""The monitor in the room: it runs while the bot runs, and answers !status, !history, !mute, !unmute, !run."""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from bot.commands.core import REGISTRY, Argument, Call, Services, _echo, command, target_arg
from bot.durations import format_duration, parse_duration
from bot.monitor.core import Monitor
from bot.monitor.store import Store
from bot.render import MARKS, Rendered, plain_and_html
from checks import Status

__all__ = ["STATE_FILE", "history_text", "monitor_lifespan", "status_text"]

STATE_FILE = "monitor.json"
HISTORY_LINES = 25
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


def mutable_names(monitor: Monitor) -> set[str]:
    """Every name a mute can match: the targets, the check ids, the blocklist zones, what the store has seen."""
    from checks.dnsbl.catalog import load_catalog
    from checks.runner import domain_checks, ip_checks
    from checks.smtp.starttls import DANE

    config = monitor.config
    names = {*config.monitor.ips, *config.monitor.domains, *monitor.families, DANE}
    names |= {name for name, _ in (*domain_checks(), *ip_checks())}
    names |= {zone.name for zone in load_catalog(monitor.ctx.dnsbl).zones}
    for state in monitor.store.states():
        names.update(str(state.get(key, "")) for key in ("target", "check", "subject"))
    return {name.lower() for name in names if name}


def _pre(text: str) -> Rendered:
    return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")


def status_text(states: Sequence[Mapping[str, Any]], mutes: Mapping[str, str], now: datetime) -> str:
    """The stored state: a line per target with its worst status, a line per problem or blind check."""
    if not states:
        return "no results yet: the first scheduled run has not finished (try !run)"
    by_target: dict[str, list[Mapping[str, Any]]] = {}
    for state in states:
        by_target.setdefault(state["target"], []).append(state)
    lines: list[str] = []
    for target, group in sorted(by_target.items()):
        known = [Status(s["status"]) for s in group if s.get("status")]
        blind = [s for s in group if s.get("last_status") == Status.UNKNOWN.value]
        worst = max(known, key=lambda status: status.severity, default=Status.UNKNOWN)
        seen = max(str(s.get("last_seen", "")) for s in group)
        ago = format_duration(now - datetime.fromisoformat(seen)) if seen else "?"
        lines.append(f"{MARKS[worst]} {target}: {worst.value}, {len(group)} checks, last run {ago} ago")
        for state in sorted(group, key=lambda s: (s["check"], s["subject"])):
            if state.get("status") in _PROBLEMS:
                since = format_duration(now - datetime.fromisoformat(state["since"])) if state.get("since") else "?"
                mark = MARKS[Status(state["status"])]
                lines.append(f"    {mark} {state['check']} {state['subject']} for {since}: {state.get('summary', '')}")
        for state in blind:
            lines.append(f"    ? {state['check']} {state['subject']}: {state.get('unknown_summary', 'unknown')}")
    for what, until in sorted(mutes.items()):
        lines.append(f"muted: {what} until {until[:16].replace('T', ' ')} UTC")
    return "\n".join(lines)


def history_text(entries: Sequence[Mapping[str, Any]], target: str, check: str | None) -> str:
    """The changes of one target (and check), newest last, at most HISTORY_LINES."""
    what = f"{target} {check}" if check else target
    if not entries:
        return f"no changes recorded for {what}"
    lines = [f"changes for {what} ({len(entries)}):"]
    for entry in entries[-HISTORY_LINES:]:
        lasted = f" after {format_duration(entry['lasted'])}" if entry.get("lasted") else ""
        muted = " (muted)" if entry.get("muted") else ""
        stamp = str(entry["at"])[:16].replace("T", " ")
        line = f"{stamp} {entry['kind']}{lasted} {entry['check']} {entry['subject']}: {entry['summary']}{muted}"
        lines.append(line)
    return "\n".join(lines)


@command("status", help="the monitor's current state of every IP and domain, from the store", replace=True)
async def status(call: Call) -> Rendered:
    monitor = _monitor(call)
    now = monitor.clock()
    return _pre(status_text(monitor.store.states(), monitor.store.mutes(now.isoformat()), now))


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
    what = call.args["what"]
    known = mutable_names(monitor)
    if what not in known:
        # A typo would mute nothing and say nothing: refuse it, with the names it was probably meant to be.
        near = get_close_matches(what, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else "; see !status for the names"
        return plain_and_html(f"{_echo(what)} matches no target, check or zone, so nothing was muted{hint}")
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
