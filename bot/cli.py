"""The `repbot` command.

Exit codes follow the Nagios plugin convention (0 ok, 1 warn, 2 fail, 3 unknown), so `repbot check` drops
into Nagios, Icinga or cron. Bad input is one line on stderr and exit 3, never a traceback. Heavy imports
(the Matrix stack, httpx) happen inside the subcommand that needs them, so `repbot check` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from bot.config.loader import Config, ConfigError, SecretError, insecure_secrets_problem, load_config
from checks import CheckError, Report, Status, Target, TargetError, parse_nameserver, parse_target

__all__ = ["main"]

EXIT_UNKNOWN = 3
# `repbot spf` asks "may this IP send for this domain?": anything short of pass needs the operator's eye.
SPF_EXIT_CODES = {"pass": 0, "neutral": 1, "softfail": 1, "none": 2, "fail": 2, "permerror": 2, "temperror": 3}
log = logging.getLogger("repbot")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_UNKNOWN, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _nameserver_arg(text: str) -> str:
    try:
        return str(parse_nameserver(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _add_dns_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nameserver",
        action="append",
        default=[],
        type=_nameserver_arg,
        metavar="HOST[:PORT]",
        help="DNS server to ask (repeatable; IPv6 as [ADDR]:PORT); default: the config's, else the system's",
    )
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="DNS timeout (default 5)")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


class _VersionAction(argparse.Action):
    """--version, reading the installed version only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from bot import __version__

        print(f"repbot {__version__}")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `repbot traffic --log` must not be taken for the global --log-level.
    parser = _Parser(
        prog="repbot",
        description="Watch a mail server's reputation and say when mail stops arriving.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help="json: one object per line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = commands.add_parser("check", help="check IPs and domains now")
    check.add_argument("targets", nargs="+", metavar="TARGET", help="an IPv4 or IPv6 address, or a domain")
    check.add_argument("--selector", action="append", default=[], metavar="NAME", help="a DKIM selector to check")
    _add_dns_options(check)
    spf = commands.add_parser("spf", help="evaluate SPF for an IP, as a receiver would")
    spf.add_argument("domain")
    spf.add_argument("--ip", required=True, help="the connecting IP address")
    spf.add_argument("--sender", default="", metavar="ADDR", help="MAIL FROM (default postmaster@DOMAIN)")
    spf.add_argument("--helo", default="", metavar="NAME", help="the HELO/EHLO name")
    _add_dns_options(spf)
    lists = commands.add_parser("lists", help="every blocklist zone with its live health")
    _add_dns_options(lists)
    traffic = commands.add_parser("traffic", help="summarise MTA log files: outbound mail per provider, explained")
    traffic.add_argument("--log", action="append", required=True, metavar="FILE", help="a Postfix or OpenSMTPD "
                         "log (repeatable, in order; .gz is read too)")  # fmt: skip
    traffic.add_argument("--smarthost", action="append", default=[], metavar="HOST", help="your relay host")
    traffic.add_argument("-c", "--config", metavar="FILE", help="configuration file ([traffic] families)")
    traffic.add_argument("--json", action="store_true", help="print JSON instead of a table")
    run = commands.add_parser("run", help="run the bot")
    run.add_argument("-c", "--config", required=True, metavar="FILE")
    run.add_argument("--console", action="store_true", help="use this terminal as the room (no homeserver)")
    config = commands.add_parser("config", help="work with the configuration file")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    config_check = config_commands.add_parser("check", help="validate a configuration file")
    config_check.add_argument("-c", "--config", required=True, metavar="FILE")
    from bot.init import add_arguments

    add_arguments(commands.add_parser("init", help="write a first configuration (asks, or takes flags)"))
    return parser


def _fail(message: str) -> int:
    print(f"repbot: {message}", file=sys.stderr)
    return EXIT_UNKNOWN


def _load(path: str | None) -> Config:
    return load_config(path) if path else Config()


def _targets(texts: Sequence[str]) -> list[Target]:
    return [parse_target(text) for text in texts]


class _Progress:
    """A one-line progress note on stderr, only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.enabled = sys.stderr.isatty()
        self.show("")

    def show(self, last: str) -> None:
        if self.enabled:
            note = f" (last: {last})" if last else ""
            sys.stderr.write(f"\rchecking… {self.done}/{self.total}{note}\033[K")
            sys.stderr.flush()

    def step(self, report: Report) -> None:
        self.done += 1
        self.show(report.target.value)

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


async def _check(args: argparse.Namespace, config: Config) -> int:
    from bot.context import build_context
    from bot.render import json_reports, text_report
    from checks.runner import check_targets

    targets = _targets(args.targets)
    selectors = {t.value: args.selector for t in targets if not t.is_ip and args.selector}
    ctx = build_context(config, nameservers=args.nameserver, timeout=args.timeout, extra_selectors=selectors)
    progress = _Progress(len(targets))
    try:
        reports = await check_targets(targets, ctx, on_done=progress.step)
    finally:
        progress.clear()
        await ctx.aclose()
    print(json_reports(reports) if args.json else "\n\n".join(text_report(report) for report in reports))
    worst = max((report.status for report in reports), key=lambda status: status.severity)
    return worst.exit_code


async def _spf(args: argparse.Namespace, config: Config) -> int:
    from bot.context import build_context
    from bot.render import json_value, spf_text
    from checks.spf import evaluator as spf

    domain = parse_target(args.domain)
    ip = parse_target(args.ip)
    if domain.is_ip or not ip.is_ip:
        raise TargetError("give a domain, then --ip with an IP address")
    ctx = build_context(config, nameservers=args.nameserver, timeout=args.timeout)
    sender = args.sender or f"postmaster@{domain.value}"
    try:
        result = await spf.check_host(ip.value, domain.value, sender, resolver=ctx.resolver, helo=args.helo)
    finally:
        await ctx.aclose()
    print(json_value(result.to_json()) if args.json else spf_text(domain.value, ip.value, result))
    return SPF_EXIT_CODES.get(result.result, EXIT_UNKNOWN)


async def _lists(args: argparse.Namespace, config: Config) -> int:
    from bot.context import build_context
    from bot.render import json_value, lists_text
    from checks.dnsbl import lookup as dnsbl

    ctx = build_context(config, nameservers=args.nameserver, timeout=args.timeout)
    try:
        health = await dnsbl.zone_health(ctx)
    finally:
        await ctx.aclose()
    print(json_value([zone.to_json() for zone in health]) if args.json else lists_text(health))
    return Status.OK.exit_code


def _traffic(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from bot.commands.traffic import summary_json, summary_text
    from bot.config.traffic import TrafficConfig, traffic_config, traffic_families
    from checks.traffic.follow import iter_lines
    from checks.traffic.tally import Tally

    section = traffic_config(_load(args.config)) or TrafficConfig()
    smarthosts = (*section.smarthosts, *(host.lower() for host in args.smarthost))
    tally = Tally(traffic_families(TrafficConfig(smarthosts=smarthosts, families=section.families)),
                  datetime.now(UTC).date())  # fmt: skip
    for name in args.log:
        tally.feed_all(iter_lines(Path(name)), collect=False)
    if args.json:
        print(summary_json(tally))
    else:
        title = f"outbound mail in {', '.join(args.log)}:"
        print(summary_text(tally.summaries(include_local=True), tally.lines, dict(tally.skipped), title))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problem = insecure_secrets_problem(config)
    if problem:
        print(f"{args.config}: {problem}")
        return 1
    print(f"{args.config}: ok")
    return 0


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problem = insecure_secrets_problem(config)
    if problem:
        return _fail(problem)
    from bot.logs import redact
    from bot.runtime import run_bot

    redact(*(secret.inline for secret in config.secrets()))

    return run_bot(config, console=args.console)


ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]]] = {
    "check": _check,
    "spf": _spf,
    "lists": _lists,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from bot.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    if args.command is None:
        parser.print_help()
        return EXIT_UNKNOWN
    try:
        if args.command == "config":
            if args.config_command != "check":
                parser.parse_args(["config", "--help"])
            return _config_check(args)
        if args.command == "run":
            return _run(args)
        if args.command == "traffic":
            return _traffic(args)
        if args.command == "init":
            from bot.init import run_init

            return run_init(args)
        coroutine = ASYNC_COMMANDS[args.command](args, _load(args.config))
        return asyncio.run(coroutine)
    except ConfigError as error:
        if args.command == "config":
            print(error)
            return 1
        return _fail(str(error))
    except (CheckError, SecretError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
