"""`!timeline [TARGET] [days]`: the reputation timeline picture, posted as an image in the room."""

from __future__ import annotations

from datetime import timedelta

from bot.commands.registry import Argument, Call, command, days_arg, target_arg
from bot.i18n import N_, _, ngettext
from bot.render import Rendered, plain_and_html
from bot.timeline import timeline_png
from bot.transports.base import DeliveryError

__all__ = ["DEFAULT_DAYS", "MAX_DAYS", "timeline"]

DEFAULT_DAYS = 30
MAX_DAYS = 365


def _target_or_days(text: str) -> str | int:
    """`!timeline 14` means 14 days of everything; anything else must be a target."""
    return days_arg(MAX_DAYS)(text) if text.isdigit() else target_arg(text)


@command(
    "timeline",
    help=N_("a picture of the last days (default 30): a row per blocklist, SNDS, complaints and canary"),
    args=[
        Argument("target", _target_or_days, required=False),
        Argument("days", days_arg(MAX_DAYS), required=False),
    ],
)
async def timeline(call: Call) -> Rendered | None:
    monitor = call.services.monitor
    if monitor is None:
        return plain_and_html(_("the monitor is not running: no history to draw"))
    first = call.args.get("target")
    target = first if isinstance(first, str) else None
    days = call.args.get("days") or (first if isinstance(first, int) else DEFAULT_DAYS)
    now = monitor.clock()
    since = (now - timedelta(days=days + 1)).isoformat()
    history = [e for e in monitor.store.history(since=since) if target is None or e.target == target]
    png = timeline_png(history, monitor.store.states(), now=now, days=days, target=target)
    if png is None:
        what = target or _("any target")
        return plain_and_html(
            _("nothing recorded for {what} yet: the first scheduled run has not finished (try !run)").format(what=what)
        )
    body = ngettext(
        "repbot timeline: {what}, last {days} day", "repbot timeline: {what}, last {days} days", days
    ).format(what=target or _("reputation"), days=days)
    txn_id = f"timeline-{call.incoming.event_id}" if call.incoming.event_id else None
    try:
        await call.services.transport.send_image(
            call.incoming.room, png, body=body, reply_to=call.incoming, txn_id=txn_id
        )
    except DeliveryError as error:
        return plain_and_html(_("the picture could not be posted: {error}").format(error=error))
    return None
