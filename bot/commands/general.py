"""`!ping`, `!help`, `!check`, `!spf` and `!lists`: the questions anyone asks of the check library."""

from __future__ import annotations

from dataclasses import replace

from bot.commands.registry import Argument, Call, command, domain_arg, ip_arg, target_arg
from bot.i18n import LANGUAGES, N_, _, language_name, parse_language, use_language
from bot.language import room_language, set_room_language
from bot.render import Rendered, lists_text, matrix_report, plain_and_html, pre, spf_text
from checks import parse_target

__all__ = ["check", "help_command", "language_command", "lists_command", "ping", "spf_command"]


@command("ping", help=N_("say pong (is the bot alive?)"))
async def ping(call: Call) -> Rendered:
    return plain_and_html(_("pong"))


@command("help", help=N_("this list, or the usage of one command"), args=[Argument("command", required=False)])
async def help_command(call: Call) -> Rendered:
    return call.services.registry.help(call.args.get("command"))


@command(
    "check",
    help=N_("check an IP or a domain now: blocklists, DNS records, TLS"),
    args=[Argument("target", target_arg), Argument("selector", str, option=True, metavar="S")],
    costly=True,
)
async def check(call: Call) -> Rendered:
    from checks.runner import check_target

    target = parse_target(call.args["target"])
    ctx = call.services.ctx
    selector = call.args.get("selector")
    if selector and not target.is_ip:
        known = ctx.dkim_selectors.get(target.value, ())
        ctx = replace(ctx, dkim_selectors={**ctx.dkim_selectors, target.value: (*known, selector)})
    return matrix_report([await check_target(target, ctx)])


@command(
    "spf",
    help=N_("evaluate SPF for a sending IP, as a receiver would"),
    args=[Argument("domain", domain_arg), Argument("ip", ip_arg)],
)
async def spf_command(call: Call) -> Rendered:
    from checks.runner import resolver_health
    from checks.spf import evaluator as spf

    domain, ip = call.args["domain"], call.args["ip"]
    health = await resolver_health(call.services.ctx)
    if not health.honest:
        return plain_and_html(
            _("? cannot check SPF for {domain}: {problem}").format(domain=domain, problem=health.problem())
        )
    result = await spf.check_host(ip, domain, f"postmaster@{domain}", resolver=call.services.ctx.resolver)
    return pre(spf_text(domain, ip, result))


@command("lists", help=N_("every blocklist zone with its live health"), costly=True)
async def lists_command(call: Call) -> Rendered:
    from checks.dnsbl import lookup as dnsbl

    return pre(lists_text(await dnsbl.zone_health(call.services.ctx)))


@command(
    "language",
    help=N_("the language I speak in this room (en, es...); without an argument, the current one"),
    args=[Argument("language", parse_language, required=False)],
)
async def language_command(call: Call) -> Rendered:
    services, room = call.services, call.incoming.room
    chosen: str | None = call.args.get("language")
    if chosen is None:
        current = room_language(services.config, services.monitor, room)
        return plain_and_html(
            _("this room speaks {language} (available: {languages})").format(
                language=language_name(current), languages=", ".join(LANGUAGES)
            )
        )
    if services.monitor is None:
        return plain_and_html(_("no state to keep the choice in: set [bot] language in the configuration"))
    set_room_language(services.monitor, room, chosen)
    with use_language(chosen):  # the confirmation is the first sentence in the new language
        return plain_and_html(_("from now on I speak {language} in this room").format(language=language_name(chosen)))
