"""`!ticket PROVIDER [IP]`: a ready-to-paste delisting request, posted as a text file and as text.

The facts are gathered by `bot.ticket`, the words are `checks.ticket.ticket_text`'s.
"""

from __future__ import annotations

from bot.commands.registry import Argument, Call, command, ip_arg
from bot.config.loader import Config
from bot.i18n import N_, _
from bot.render import Rendered, plain_and_html, pre
from bot.ticket import desk_note, gather
from bot.transports.base import DeliveryError
from checks.ticket import parse_provider, ticket_text

__all__ = ["default_ip", "ticket_command", "ticket_filename"]


def default_ip(config: Config) -> str | None:
    """The IP a request is about when none is given: the first monitored one."""
    ips = config.monitor.ips or (config.snds.ips if config.snds else ())
    return ips[0] if ips else None


def ticket_filename(provider: str, ip: str) -> str:
    return f"repbot-ticket-{provider}-{ip.replace(':', '-')}.txt"


@command(
    "ticket",
    help=N_("a ready-to-paste delisting request with the dated evidence, as text and a file, for one provider"),
    args=[Argument("provider", parse_provider), Argument("ip", ip_arg, required=False)],
    costly=True,
)
async def ticket_command(call: Call) -> Rendered:
    config, provider = call.services.config, call.args["provider"]
    ip = call.args.get("ip") or default_ip(config)
    if ip is None:
        return plain_and_html(_("which IP? Give it (!ticket microsoft 192.0.2.25), or list it in [monitor] ips"))
    store = call.services.monitor.store if call.services.monitor is not None else None
    text = ticket_text(await gather(config, call.services.ctx, provider, ip, store))
    txn_id = f"ticket-{call.incoming.event_id}" if call.incoming.event_id else None
    try:
        await call.services.transport.send_file(
            call.incoming.room,
            text.encode("utf-8"),
            filename=ticket_filename(provider, ip),
            mimetype="text/plain",
            body=_("repbot delisting request: {provider} {ip}").format(provider=provider, ip=ip),
            reply_to=call.incoming,
            txn_id=txn_id,
        )
    except DeliveryError as error:
        text += "\n" + _("(the file could not be attached: {error})").format(error=error)
    note = desk_note()
    return pre(f"{note}\n{text}" if note else text)
