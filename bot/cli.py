"""The `repbot` command.

Exit codes follow the Nagios plugin convention (0 ok, 1 warn, 2 fail, 3 unknown), so `repbot check` drops
into Nagios, Icinga or cron. Bad input is one line on stderr and exit 3, never a traceback. A reader that
goes away (`repbot check … | head -1`) ends the command quietly with 141, the status of a Unix tool
killed by SIGPIPE. Heavy imports
(the Matrix stack, httpx) happen inside the subcommand that needs them, so `repbot check` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TextIO

import bot.context  # noqa: F401  # every command, not only those that build a context: the check library's words
from bot.config.loader import Config, ConfigError, SecretError, insecure_secrets_problem, load_config
from bot.i18n import _, environment_language, number, use_language
from bot.secrets import mask
from checks import CheckError, Report, Status, Target, TargetError, parse_nameserver, parse_target

__all__ = ["main"]

EXIT_UNKNOWN = 3
# `repbot run` cannot start with this configuration: packaging/repbot.service does not restart on it
# (RestartPreventExitStatus), and bot.runtime.EXIT_FATAL is the same number.
EXIT_CONFIG = 1
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
# `repbot spf` asks "may this IP send for this domain?": anything short of pass needs the operator's eye.
SPF_EXIT_CODES = {"pass": 0, "neutral": 1, "softfail": 1, "none": 2, "fail": 2, "permerror": 2, "temperror": 3}
log = logging.getLogger("repbot")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_UNKNOWN, _("{prog}: {message} (see {prog} --help)").format(prog=self.prog, message=message) + "\n"
        )


def _nameserver_arg(text: str) -> str:
    try:
        return str(parse_nameserver(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_("{text!r} is not a number").format(text=text)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(_("must be more than 0"))
    return value


def _add_dns_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nameserver",
        action="append",
        default=[],
        type=_nameserver_arg,
        metavar="HOST[:PORT]",
        help=_("DNS server to ask (repeatable; IPv6 as [ADDR]:PORT); default: the config's, else the system's"),
    )
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help=_("DNS timeout (default 5)"))
    parser.add_argument("-c", "--config", metavar="FILE", help=_("configuration file"))
    parser.add_argument("--json", action="store_true", help=_("print JSON instead of a table"))
    parser.add_argument("--pretty", action="store_true", help=_("with --json: indent the JSON for reading"))


class _VersionAction(argparse.Action):
    """--version, reading the installed version only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=_("show the version and exit"))

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from bot import __version__

        print(f"repbot {__version__}")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    """The `repbot` parser, its help worded in the active language (build it inside `use_language`)."""
    from bot.argparse_words import speak

    speak()
    # No abbreviations: `repbot traffic --log` must not be taken for the global --log-level.
    parser = _Parser(
        prog="repbot",
        description=_("Watch a mail server's reputation and say when mail stops arriving."),
        allow_abbrev=False,
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help=_("json: one object per line"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = commands.add_parser("check", help=_("check IPs and domains now"))
    check.add_argument("targets", nargs="+", metavar="TARGET", help=_("an IPv4 or IPv6 address, or a domain"))
    check.add_argument("--selector", action="append", default=[], metavar="NAME", help=_("a DKIM selector to check"))
    check.add_argument("--only", action="append", default=[], metavar="CHECK",
                       help=_("run only this check (repeatable): dnsbl, ptr; spf, dkim, dmarc, mx, mx-tls, mta-sts, "
                              "tls-rpt, dnssec"))  # fmt: skip
    _add_dns_options(check)
    spf = commands.add_parser("spf", help=_("evaluate SPF for an IP, as a receiver would"))
    spf.add_argument("domain")
    spf.add_argument("--ip", required=True, help=_("the connecting IP address"))
    spf.add_argument("--sender", default="", metavar="ADDR", help=_("MAIL FROM (default postmaster@DOMAIN)"))
    spf.add_argument("--helo", default="", metavar="NAME", help=_("the HELO/EHLO name"))
    _add_dns_options(spf)
    ticket = commands.add_parser("ticket", help=_("a ready-to-paste delisting request with the dated evidence"))
    ticket.add_argument("provider", help=_("microsoft, outlook, m365, google or yahoo"))
    ticket.add_argument("ip", help=_("the sending IP the request is about"))
    ticket.add_argument("-o", "--output", metavar="FILE", help=_("also write the request to this file"))
    _add_dns_options(ticket)
    lists = commands.add_parser("lists", help=_("every blocklist zone with its live health"))
    _add_dns_options(lists)
    traffic = commands.add_parser("traffic", help=_("summarise MTA log files: outbound mail per provider, explained"))
    traffic.add_argument("--log", action="append", required=True, metavar="FILE",
                         help=_("a Postfix or OpenSMTPD log (repeatable, in order; .gz is read too)"))  # fmt: skip
    traffic.add_argument("--smarthost", action="append", default=[], metavar="HOST", help=_("your relay host"))
    traffic.add_argument("-c", "--config", metavar="FILE", help=_("configuration file ([traffic] families)"))
    traffic.add_argument("--json", action="store_true", help=_("print JSON instead of a table"))
    run = commands.add_parser("run", help=_("run the bot"))
    run.add_argument("-c", "--config", required=True, metavar="FILE")
    run.add_argument("--console", action="store_true", help=_("use this terminal as the room (no homeserver)"))
    identity = commands.add_parser(
        "identity", help=_("print the bot's cross-signing master key, to compare in Element")
    )
    identity.add_argument("-c", "--config", required=True, metavar="FILE")
    reports = commands.add_parser("reports", help=_("read DMARC aggregate and TLS-RPT reports from files and folders"))
    reports.add_argument("paths", nargs="+", metavar="PATH", help=_("a report (xml, json, gz, zip, eml) or a folder"))
    reports.add_argument("--json", action="store_true", help=_("print JSON: reports and problems"))
    reports.add_argument("-c", "--config", metavar="FILE", help=_("configuration file (its [state] dir for --record)"))
    reports.add_argument("--record", action="store_true", help=_("also store the reports, as the mailbox job does"))
    config = commands.add_parser("config", help=_("work with the configuration file"))
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    config_check = config_commands.add_parser("check", help=_("validate a configuration file"))
    config_check.add_argument("-c", "--config", required=True, metavar="FILE")
    config_commands.add_parser("example", help=_("print the example configuration, every key documented"))
    from bot.init import add_arguments

    add_arguments(commands.add_parser("init", help=_("write a first configuration (asks, or takes flags)")))
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
            note = _(" (last: {target})").format(target=last) if last else ""
            shown = _("checking… {done}/{total}").format(done=number(self.done), total=number(self.total))
            sys.stderr.write(f"\r{shown}{note}\033[K")
            sys.stderr.flush()

    def step(self, report: Report) -> None:
        self.done += 1
        self.show(report.target.value)

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


def _dumps(value: Any, pretty: bool) -> str:
    """JSON text: compact by the C encoder, or indented (the pure-Python encoder, for people reading it)."""
    if pretty:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _JsonStream:
    """`repbot check --json`: each target written once it and those before it are done, in the order given.

    `{"targets":[...],"zones":{...}}`, one target a line (compact). A blocklist zone's delisting URL is written
    once in `zones` (by the findings' subject) rather than in each of its thousands of `ok` findings; findings
    that need action (not `ok`) keep theirs in `evidence.delist` too, beside their advice.
    """

    def __init__(self, targets: Sequence[Target], pretty: bool, out: TextIO) -> None:
        self.order = {id(target): index for index, target in enumerate(targets)}
        self.done: dict[int, Report] = {}
        self.next = 0
        self.pretty = pretty
        self.out = out
        self.zones: dict[str, dict[str, str]] = {}
        out.write('{\n  "targets": [' if pretty else '{"targets":[')

    def add(self, report: Report) -> None:
        self.done[self.order[id(report.target)]] = report
        while self.next in self.done:
            self._write(self.done.pop(self.next))
            self.next += 1

    def _write(self, report: Report) -> None:
        data = report.to_json()
        for finding in data["findings"]:
            delist = finding["evidence"].get("delist")
            if delist is not None:
                self.zones.setdefault(finding["subject"], {"delist": delist})
                if finding["status"] == Status.OK.value:
                    del finding["evidence"]["delist"]
        text = mask(self._nested(data, 2))
        self.out.write(("\n" if self.next == 0 else ",\n") + ("    " if self.pretty else "") + text)

    def _nested(self, value: Any, depth: int) -> str:
        """`value` as JSON `depth` levels inside the document (its lines indented to match when pretty)."""
        text = _dumps(value, self.pretty)
        return text.replace("\n", "\n" + "  " * depth) if self.pretty else text

    def close(self) -> None:
        zones = self._nested(self.zones, 1)
        self.out.write(f'\n  ],\n  "zones": {zones}\n}}\n' if self.pretty else f'\n],"zones":{zones}}}\n')
        self.out.flush()


async def _check(args: argparse.Namespace, config: Config) -> int:
    from bot.context import build_context
    from checks.runner import check_targets

    targets = _targets(args.targets)
    only = _only_checks(args.only, targets)
    if not all(target.is_ip for target in targets) and (not only or "mta-sts" in only):
        # The MTA-STS fetch needs httpx; imported on the loop, its ~0.2 s would hold back every other query.
        import httpx  # noqa: F401
    selectors = {t.value: args.selector for t in targets if not t.is_ip and args.selector}
    ctx = build_context(config, nameservers=args.nameserver, timeout=args.timeout, extra_selectors=selectors)
    progress = _Progress(len(targets))
    stream = _JsonStream(targets, args.pretty, sys.stdout) if args.json else None

    def done(report: Report) -> None:
        progress.step(report)
        if stream is not None:
            stream.add(report)

    try:
        reports = await check_targets(targets, ctx, on_done=done, only=only)
    finally:
        progress.clear()
        await ctx.aclose()
    if stream is not None:
        stream.close()
    else:
        from bot.render import text_report

        print(mask("\n\n".join(text_report(report) for report in reports)))
    worst = max((report.status for report in reports), key=lambda status: status.severity)
    return worst.exit_code


def _only_checks(names: Sequence[str], targets: Sequence[Target]) -> frozenset[str]:
    """`--only`'s check names, each known and each target left with a check; TargetError otherwise."""
    from checks.runner import domain_checks, ip_checks, target_checks

    only = frozenset(names)
    if not only:
        return only
    # The domain checks' modules are imported only when a domain is checked, or a name is not an IP check.
    known = {name for name, _ in ip_checks()}
    if not only <= known or not all(target.is_ip for target in targets):
        known |= {name for name, _ in domain_checks()}
    unknown = sorted(only - known)
    if unknown:
        raise TargetError(_("--only {names}: no such check (the checks: {known})").format(
            names=", ".join(unknown), known=", ".join(sorted(known))))  # fmt: skip
    for target in targets:
        if not target_checks(target, only):
            kind = _("an IP address") if target.is_ip else _("a domain")
            raise TargetError(_("--only {names} runs no check of {target} ({kind})").format(
                names=", ".join(sorted(only)), target=target.value, kind=kind))  # fmt: skip
    return only


async def _spf(args: argparse.Namespace, config: Config) -> int:
    from bot.context import build_context
    from bot.render import spf_text
    from checks.spf import evaluator as spf

    ip = parse_target(args.ip)
    name = _spf_domain(args.domain)
    if not ip.is_ip:
        raise TargetError(_("give a domain, then --ip with an IP address"))
    from checks.runner import resolver_health

    ctx = build_context(config, nameservers=args.nameserver, timeout=args.timeout)
    sender = args.sender or f"postmaster@{name}"
    try:
        health = await resolver_health(ctx)
        if not health.honest:
            # "none" from a resolver that lies would be a verdict resting on the lie.
            problem = _("cannot check: {problem}").format(problem=health.problem())
            print(
                _dumps({"error": problem, "resolver": health.resolver}, args.pretty)
                if args.json
                else f"repbot: {problem}"
            )
            return EXIT_UNKNOWN
        result = await spf.check_host(ip.value, name, sender, resolver=ctx.resolver, helo=args.helo)
    finally:
        await ctx.aclose()
    print(mask(_dumps(result.to_json(), args.pretty) if args.json else spf_text(name, ip.value, result)))
    return SPF_EXIT_CODES.get(result.result, EXIT_UNKNOWN)


def _spf_domain(text: str) -> str:
    """The domain to evaluate: normalised when valid; as given when malformed, since a receiver evaluates a
    64-character label, an empty label, a domain literal or a single-label HELO to `none` (RFC 7208 §4.3).
    A bare IP address is the operator's slip (the arguments swapped), so it stays a usage error."""
    try:
        target = parse_target(text)
    except TargetError:
        return text.strip()
    if target.is_ip and not text.strip().startswith("["):
        raise TargetError(_("give a domain, then --ip with an IP address"))
    return text.strip() if target.is_ip else target.value


async def _lists(args: argparse.Namespace, config: Config) -> int:
    from bot.context import build_context
    from bot.render import lists_text
    from checks.dnsbl import lookup as dnsbl

    ctx = build_context(config, nameservers=args.nameserver, timeout=args.timeout)
    try:
        health = await dnsbl.zone_health(ctx)
    finally:
        await ctx.aclose()
    print(mask(_dumps([zone.to_json() for zone in health], args.pretty) if args.json else lists_text(health)))
    return Status.OK.exit_code


def example_config() -> str:
    """config.example.toml as shipped inside the package (the wheel has it as bot/config.example.toml)."""
    from importlib import resources

    return resources.files("bot").joinpath("config.example.toml").read_text(encoding="utf-8")


def _traffic(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from bot.commands.traffic import summary_json, summary_text
    from bot.config.traffic import TrafficConfig, traffic_config, traffic_families
    from checks.traffic.follow import LogGone, iter_lines
    from checks.traffic.tally import Tally

    section = traffic_config(_load(args.config)) or TrafficConfig()
    smarthosts = (*section.smarthosts, *(host.lower() for host in args.smarthost))
    tally = Tally(traffic_families(TrafficConfig(smarthosts=smarthosts, families=section.families)),
                  datetime.now(UTC).date())  # fmt: skip
    try:
        for name in args.log:
            tally.feed_all(iter_lines(Path(name)), collect=False)
    except LogGone as error:
        return _fail(error.said())
    if args.json:
        print(summary_json(tally))
    else:
        title = _("outbound mail in {source}:").format(source=", ".join(args.log))
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
    # What stops the start is said in the terminal's language; once running, each room is spoken to in its own.
    with use_language(environment_language()):
        try:
            config = load_config(args.config)
        except (ConfigError, SecretError) as error:
            _fail(str(error))
            return EXIT_CONFIG
        problem = insecure_secrets_problem(config)
        if problem:
            _fail(problem)
            return EXIT_CONFIG
    from bot.runtime import run_bot
    from bot.secrets import register

    register(*(secret.inline for secret in config.secrets()))

    return run_bot(config, console=args.console)


async def _ticket(args: argparse.Namespace, config: Config) -> int:
    from pathlib import Path

    from bot.context import build_context
    from bot.monitor.core import STATE_FILE
    from bot.monitor.store import Store
    from bot.ticket import desk_note, gather
    from checks.ticket import choose_form, parse_provider, ticket_text

    try:
        provider = parse_provider(args.provider)
    except ValueError as error:
        return _fail(str(error))
    ip = parse_target(args.ip)
    if not ip.is_ip:
        raise TargetError(_("{ip!r} is not an IP address").format(ip=args.ip))
    path = Path(config.state_dir) / STATE_FILE
    store = Store(path) if path.exists() else None
    ctx = build_context(config, nameservers=args.nameserver, timeout=args.timeout)
    try:
        facts = await gather(config, ctx, provider, ip.value, store)
    finally:
        await ctx.aclose()
        if store is not None:
            store.close()
    text = ticket_text(facts)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        form, note = choose_form(facts.provider, facts.rejections)
        print(_dumps({"provider": provider, "ip": ip.value, "form": form.url, "note": note, "text": text}, pretty=True))
    else:
        if note := desk_note():
            print(note, file=sys.stderr)  # stdout stays the request, as -o writes it
        print(text, end="")
    return Status.OK.exit_code


ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]]] = {
    "check": _check,
    "spf": _spf,
    "lists": _lists,
    "ticket": _ticket,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code, command = _main(argv)
        sys.stdout.flush()  # the last block of output is written here, where a closed pipe is still caught
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    # Not under a profiler or a tracer (cProfile, coverage): they write their results at a normal exit.
    if argv is None and command == "check" and sys.getprofile() is None and sys.gettrace() is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """End the process without tearing down its heap: `repbot check`'s output is written and flushed.

    A sweep leaves a large heap (a /24: every finding, answer and task), and the interpreter's orderly teardown
    of it took 40-80 ms of wall time after the last line was written (bench/dnsbl_sweep.py), which whoever
    runs the command waits for. Only for the process's own command line: a caller of main(argv) gets a return.
    """
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _silence_stdout() -> None:
    # Python flushes stdout once more at exit; pointing it at /dev/null keeps that flush from printing
    # "Exception ignored ... BrokenPipeError" after we have already decided to end quietly.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (a test's StringIO): nothing will flush into a closed pipe
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> tuple[int, str | None]:
    """The exit code, and the command that ran."""
    with use_language(environment_language()):  # --help, usage and argument errors, before --json is known
        parser = build_parser()
        args = parser.parse_args(argv)
    from bot.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    # The CLI's text speaks the environment's language; JSON never is translated, and `run` speaks each room's.
    speaks = "en" if getattr(args, "json", False) or args.command == "run" else environment_language()
    with use_language(speaks):
        return _dispatch(parser, args), args.command


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:
        parser.print_help()
        return EXIT_UNKNOWN
    try:
        if args.command == "config":
            if args.config_command == "example":
                print(example_config(), end="")
                return 0
            if args.config_command != "check":
                parser.parse_args(["config", "--help"])
            return _config_check(args)
        if args.command == "run":
            return _run(args)
        if args.command == "identity":
            from bot.transports.identity import identity_report

            config = load_config(args.config)
            code, text = identity_report(config.matrix, config.state_dir, config.source)
            print(text)
            return code
        if args.command == "reports":
            from bot.commands.reports import reports_cli

            return reports_cli(args, _load(args.config))
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
        return _fail(_("interrupted"))


if __name__ == "__main__":
    sys.exit(main())
