"""The monitor in the room: !status, !history, !mute, !unmute, !run (the monitor itself is `bot.monitor.core`)."""

from __future__ import annotations

from datetime import UTC
from difflib import get_close_matches

from bot.commands.registry import Argument, Call, _echo, command, target_arg
from bot.durations import parse_duration
from bot.i18n import N_, _, ngettext, number
from bot.monitor.core import Monitor
from bot.pacing import paced
from bot.render import Rendered, history_text, plain_and_html, pre, status_pieces
from bot.transports.identity import identity_line

__all__ = ["history", "mute", "run", "status", "unmute"]


def _monitor(call: Call) -> Monitor:
    monitor = call.services.monitor
    if monitor is None:
        raise LookupError(_("the monitor is not running"))
    return monitor


def mutable_names(monitor: Monitor) -> set[str]:
    """Every name a mute can match: the targets, the check ids, the blocklist zones, what the store has seen."""
    from checks.dnsbl.catalog import load_catalog
    from checks.runner import domain_checks, ip_checks
    from checks.smtp.starttls import DANE

    config = monitor.config
    names = {*config.monitor.ips, *config.monitor.domains, *monitor.families, DANE}
    names |= {name for name, _check in (*domain_checks(), *ip_checks())}
    names |= {zone.name for zone in load_catalog(monitor.ctx.dnsbl).zones}
    for state in monitor.store.states():
        names.update((state.target, state.check, state.subject))
    return {name.lower() for name in names if name}


@command("status", help=N_("the monitor's current state of every IP and domain, from the store"))
async def status(call: Call) -> Rendered:
    monitor = _monitor(call)
    now = monitor.clock()
    store = monitor.store
    states, mutes, dead = store.states(), store.mutes(now.isoformat()), store.dead_letters()
    # Pure work on a snapshot, in slices on the event loop: 73k states (a /20 on every blocklist) take 0.3-0.4 s
    # to word, and in a thread they kept the loop from the GIL (bot.pacing).
    pieces = status_pieces(states, mutes, now, monitor.rules.confirm, dead)
    text = "\n".join([line async for piece in paced(pieces) for line in piece])
    identity = identity_line(call.services.transport)
    return pre(f"{text}\n{identity}" if identity else text)


@command(
    "history",
    help=N_("the changes seen for a target over time, optionally for one check"),
    args=[Argument("target", target_arg), Argument("check", str, required=False)],
)
async def history(call: Call) -> Rendered:
    target, check = call.args["target"], call.args.get("check")
    entries = _monitor(call).store.history(target=target, check=check)
    return pre(history_text(entries, target, check))


@command(
    "mute",
    help=N_("keep alerts about a check, target or zone out of the room for a while (still recorded)"),
    args=[Argument("what", str.lower), Argument("duration", parse_duration)],
)
async def mute(call: Call) -> Rendered:
    monitor = _monitor(call)
    what = call.args["what"]
    known = mutable_names(monitor)
    if what not in known:
        # A typo would mute nothing and say nothing: refuse it, with the names it was probably meant to be.
        near = get_close_matches(what, sorted(known), n=3, cutoff=0.6)
        hint = _("; did you mean {names}?").format(names=", ".join(near)) if near else _("; see !status for the names")
        text = _("{what} matches no target, check or zone, so nothing was muted").format(what=_echo(what))
        return plain_and_html(text + hint)
    until = monitor.clock().astimezone(UTC) + call.args["duration"]
    with monitor.store.batch():
        monitor.store.mute(call.args["what"], until.isoformat())
    shown = until.strftime("%Y-%m-%d %H:%M UTC")
    text = _("muted {what} until {time}: its alerts are recorded, not posted")
    return plain_and_html(text.format(what=call.args["what"], time=shown))


@command("unmute", help=N_("post alerts about a check, target or zone again"), args=[Argument("what", str.lower)])
async def unmute(call: Call) -> Rendered:
    monitor = _monitor(call)
    with monitor.store.batch():
        removed = monitor.store.unmute(call.args["what"])
    text = _("unmuted {what}") if removed else _("{what} was not muted")
    return plain_and_html(text.format(what=call.args["what"]))


@command(
    "run",
    help=N_("run a monitor job now (blocklists, domains, tls, ...), or all of them"),
    args=[Argument("family", str.lower, required=False)],
    costly=True,
)
async def run(call: Call) -> Rendered:
    monitor = _monitor(call)
    wanted = call.args.get("family")
    if wanted is not None and wanted not in monitor.families:
        known = ", ".join(sorted(monitor.families)) or _("none configured")
        return plain_and_html(_("no job {job!r}; the jobs are: {jobs}").format(job=wanted, jobs=known))
    names = [wanted] if wanted else sorted(monitor.families)
    if not names:
        return plain_and_html(_("nothing is monitored: add ips or domains under [monitor]"))
    parts, changed = [], False
    for name in names:
        events = await monitor.run_family(name)
        changed = changed or bool(events)
        counted = ngettext("{count} change(s)", "{count} change(s)", len(events)).format(count=number(len(events)))
        parts.append(f"{name}: {counted}" if events else f"{name}: " + _("no change"))
    suffix = " " + _("(alerts go to the alert rooms)") if changed else ""
    return plain_and_html(_("ran {jobs}").format(jobs="; ".join(parts)) + suffix)
