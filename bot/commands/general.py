"""`!ping`, `!help`, `!check`, `!spf` and `!lists`: the questions anyone asks of the check library."""

from __future__ import annotations

from dataclasses import replace

from bot.commands.registry import Argument, Call, command, domain_arg, ip_arg, target_arg
from bot.render import Rendered, lists_text, matrix_report, plain_and_html, pre, spf_text
from checks import parse_target

__all__ = ["check", "help_command", "lists_command", "ping", "spf_command"]


@command("ping", help="say pong (is the bot alive?)")
async def ping(call: Call) -> Rendered:
    return plain_and_html("pong")


@command("help", help="this list, or the usage of one command", args=[Argument("command", required=False)])
async def help_command(call: Call) -> Rendered:
    return call.services.registry.help(call.args.get("command"))


@command(
    "check",
    help="check an IP or a domain now: blocklists, DNS records, TLS",
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
    help="evaluate SPF for a sending IP, as a receiver would",
    args=[Argument("domain", domain_arg), Argument("ip", ip_arg)],
)
async def spf_command(call: Call) -> Rendered:
    from checks.runner import resolver_health
    from checks.spf import evaluator as spf

    domain, ip = call.args["domain"], call.args["ip"]
    health = await resolver_health(call.services.ctx)
    if not health.honest:
        return plain_and_html(f"? cannot check SPF for {domain}: {health.problem()}")
    result = await spf.check_host(ip, domain, f"postmaster@{domain}", resolver=call.services.ctx.resolver)
    return pre(spf_text(domain, ip, result))


@command("lists", help="every blocklist zone with its live health", costly=True)
async def lists_command(call: Call) -> Rendered:
    from checks.dnsbl import lookup as dnsbl

    return pre(lists_text(await dnsbl.zone_health(call.services.ctx)))
