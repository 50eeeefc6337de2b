"""`repbot init`: a first configuration, asked for interactively or given as flags, written with mode 0600.

Every answer is checked as it is given (a question is asked again after a bad answer; a bad flag is an
error), the file is created 0600 from the start (never chmod-ed after, so no other user can open it in
between), an existing file is kept unless `--force`, and the result goes through `config check`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from bot.config.loader import ConfigError, insecure_secrets_problem, load_config
from bot.i18n import _
from checks import TargetError, parse_domain, parse_target

# Where systemd's LoadCredential puts the service's secrets; such files exist only while it runs.
CREDENTIALS_DIR = "/run/credentials/"

__all__ = ["InitError", "add_arguments", "render_config", "run_init", "write_private"]


class InitError(Exception):
    """Raised when an answer is missing or wrong in a non-interactive run, or the file cannot be written."""


@dataclass
class Answers:
    """What the configuration needs to know; the password as exactly one of inline, file or command."""

    console: bool = False
    homeserver: str = ""
    user_id: str = ""
    password: str = ""
    password_file: str = ""
    password_command: str = ""
    admins: list[str] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    state_dir: str = "./state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="repbot.toml", metavar="FILE", help=_("where to write the config"))
    parser.add_argument("--force", action="store_true", help=_("overwrite an existing file"))
    parser.add_argument("--non-interactive", action="store_true", help=_("never ask: missing answers are errors"))
    parser.add_argument("--console", action="store_true", help=_("no homeserver: the terminal is the room"))
    parser.add_argument("--homeserver", default="", metavar="URL", help=_("e.g. https://matrix.example.org"))
    parser.add_argument("--user-id", default="", metavar="ID", help=_("the bot's account, e.g. @repbot:example.org"))
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password-file", default="", metavar="FILE", help=_("file holding the bot's password"))
    secret.add_argument("--password-command", default="", metavar="CMD", help=_("command printing the password"))
    parser.add_argument("--admin", action="append", default=[], metavar="ID", help=_("who may command the bot"))
    parser.add_argument("--room", action="append", default=[], metavar="ROOM", help=_("room to join and alert in"))
    parser.add_argument("--ip", action="append", default=[], metavar="IP", help=_("an IP your mail leaves from"))
    parser.add_argument("--domain", action="append", default=[], metavar="DOMAIN", help=_("a domain you send for"))
    parser.add_argument("--state-dir", default="./state", metavar="DIR", help=_("where the bot keeps its state"))


# -- checking answers -----------------------------------------------------------------------------------


def _homeserver(text: str) -> str:
    if not text.startswith(("https://", "http://")):
        raise ValueError(_("give the homeserver's URL, such as https://matrix.example.org"))
    return text.rstrip("/")


def _user_id(text: str) -> str:
    if not text.startswith("@") or ":" not in text:
        raise ValueError(_("{text!r} is not a Matrix user id such as @repbot:example.org").format(text=text))
    return text


def _room(text: str) -> str:
    if not text.startswith(("!", "#")) or ":" not in text:
        raise ValueError(
            _("{text!r} is not a room id (!abc:example.org) or alias (#mail:example.org)").format(text=text)
        )
    return text


def _ip(text: str) -> str:
    target = parse_target(text)
    if not target.is_ip:
        raise ValueError(_("{ip!r} is not an IP address").format(ip=text))
    return target.value


def _each(check: Callable[[str], str]) -> Callable[[Sequence[str]], list[str]]:
    def all_of(values: Sequence[str]) -> list[str]:
        return [check(value) for word in values for value in word.replace(",", " ").split()]

    return all_of


# -- asking ---------------------------------------------------------------------------------------------


class Asker:
    """Asks on stdin/stdout until an answer passes its check; EOF is an InitError."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout

    def line(self, question: str, secret: bool = False) -> str:
        if secret and self.stdin.isatty():
            return getpass.getpass(question)
        self.stdout.write(question)
        self.stdout.flush()
        answer = self.stdin.readline()
        if not answer:
            raise InitError(_("no answer to: {question}").format(question=question.strip()))
        return answer.strip()

    def ask(self, question: str, check: Callable[[str], str], *, empty_ok: bool = False) -> str:
        while True:
            answer = self.line(question)
            if not answer and empty_ok:
                return ""
            try:
                return check(answer)
            except (ValueError, TargetError) as error:
                self.stdout.write(f"  {error}\n")

    def ask_many(self, question: str, check: Callable[[str], str], *, empty_ok: bool = True) -> list[str]:
        while True:
            try:
                values = _each(check)([self.line(question)])
            except (ValueError, TargetError) as error:
                self.stdout.write(f"  {error}\n")
                continue
            if values or empty_ok:
                return values
            self.stdout.write("  " + _("give at least one") + "\n")


def _from_flags(args: argparse.Namespace) -> Answers:
    try:
        return Answers(
            console=args.console,
            homeserver=_homeserver(args.homeserver) if args.homeserver else "",
            user_id=_user_id(args.user_id) if args.user_id else "",
            password_file=args.password_file,
            password_command=args.password_command,
            admins=_each(_user_id)(args.admin),
            rooms=_each(_room)(args.room),
            ips=_each(_ip)(args.ip),
            domains=_each(parse_domain)(args.domain),
            state_dir=args.state_dir,
        )
    except (ValueError, TargetError) as error:
        raise InitError(str(error)) from None


def _fill_in(answers: Answers, asker: Asker) -> None:
    """Ask for whatever the flags left out."""
    if not answers.console and not answers.homeserver:
        answers.homeserver = asker.ask(
            _("Homeserver URL (e.g. https://matrix.example.org; empty: use the terminal as the room): "),
            _homeserver,
            empty_ok=True,
        )
        answers.console = not answers.homeserver
    if not answers.console:
        if not answers.user_id:
            answers.user_id = asker.ask(_("The bot's Matrix account (e.g. @repbot:example.org): "), _user_id)
        if not (answers.password_file or answers.password_command):
            _ask_password(answers, asker)
        if not answers.admins:
            answers.admins = asker.ask_many(_("Your Matrix user id (the admin, e.g. @you:example.org): "), _user_id)
        if not answers.rooms:
            answers.rooms = asker.ask_many(_("Room for alerts (id or alias; empty: invite the bot later): "), _room)
    if not answers.ips and not answers.domains:
        answers.ips = asker.ask_many(_("IP addresses your mail leaves from (space-separated): "), _ip)
        answers.domains = asker.ask_many(_("Domains you send mail for (space-separated): "), parse_domain)


def _ask_password(answers: Answers, asker: Asker) -> None:
    question = _("The bot's password (stored in the 0600 file), or file:PATH, or command:CMD: ")
    while True:
        answer = asker.line(question, secret=True)
        kind, _colon, rest = answer.partition(":")
        if kind == "file" and rest:
            answers.password_file = rest.strip()
        elif kind == "command" and rest:
            answers.password_command = rest.strip()
        elif answer:
            answers.password = answer
        else:
            asker.stdout.write("  " + _("the bot needs a password to log in") + "\n")
            continue
        return


def _missing(answers: Answers) -> list[str]:
    missing = [] if answers.ips or answers.domains else [_("--ip or --domain")]
    if answers.console:
        return missing
    wanted = {
        "--homeserver": answers.homeserver,
        "--user-id": answers.user_id,
        _("--password-file or --password-command"): answers.password
        or answers.password_file
        or answers.password_command,
        "--admin": answers.admins,
    }
    return [flag for flag, value in wanted.items() if not value] + missing


def _missing_password_file(answers: Answers) -> str | None:
    """Why the password file would stop `repbot run`, or None (the file is only read at start, so check it now)."""
    if answers.console or not answers.password_file or answers.password_file.startswith(CREDENTIALS_DIR):
        return None
    secret = Path(answers.password_file)
    if not secret.is_file():
        return _("the password file {path} does not exist: create it (mode 0600) before repbot run").format(path=secret)
    if not os.access(secret, os.R_OK):
        return _("the password file {path} cannot be read by this user").format(path=secret)
    return None


# -- writing --------------------------------------------------------------------------------------------


def _toml(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def render_config(answers: Answers) -> str:
    """The configuration file's text."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        f"# repbot configuration, written by `repbot init` on {stamp}.",
        "# Every key is described in the example configuration: repbot config example > example.toml",
        "# Check this file with: repbot config check -c FILE",
        "",
        "[monitor]",
        f"ips = {_toml(answers.ips)}",
        f"domains = {_toml(answers.domains)}",
        "",
        "[state]",
        f"dir = {_toml(answers.state_dir)}",
    ]
    if not answers.console:
        secret = next(
            f"{key} = {_toml(value)}"
            for key, value in (
                ("password", answers.password),
                ("password_file", answers.password_file),
                ("password_command", answers.password_command),
            )
            if value
        )
        lines += ["", "[matrix]", f"homeserver = {_toml(answers.homeserver)}", f"user_id = {_toml(answers.user_id)}"]
        lines += [secret, f"admins = {_toml(answers.admins)}"]
        lines += [f"rooms = {_toml(answers.rooms)}", f"alert_rooms = {_toml(answers.rooms)}"]
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str, *, force: bool) -> None:
    """Create the file with mode 0600 (atomically replacing it only with `force`); raises InitError."""
    if path.exists() and not force:
        raise InitError(_("{path} exists: give --force to replace it").format(path=path))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if someone created the file meanwhile
            temporary.unlink()
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise InitError(_("cannot write {path}: {reason}").format(path=path, reason=error.strerror)) from None


def run_init(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """The `repbot init` subcommand; 0 when the written file passes the config check."""
    out = stdout or sys.stdout
    path = Path(args.output)
    try:
        if path.exists() and not args.force:
            raise InitError(_("{path} exists: give --force to replace it").format(path=path))
        answers = _from_flags(args)
        if not args.non_interactive:
            _fill_in(answers, Asker(stdin or sys.stdin, out))
        missing = _missing(answers)
        if missing:
            raise InitError(_("missing {flags}").format(flags=", ".join(missing)))
        write_private(path, render_config(answers), force=args.force)
    except InitError as error:
        print(f"repbot init: {error}", file=sys.stderr)
        return 3
    try:
        config = load_config(path)
    except ConfigError as error:
        print(error, file=out)
        return 1
    problem = insecure_secrets_problem(config) or _missing_password_file(answers)
    if problem:
        verdict = _("but {problem}").format(problem=problem)
    elif answers.password_file.startswith(CREDENTIALS_DIR) and not Path(answers.password_file).exists():
        # Not an error: systemd creates the file when the service starts (packaging/repbot.service).
        verdict = _("config check ok; {path} appears when the service starts (LoadCredential)").format(
            path=answers.password_file
        )
    else:
        verdict = _("config check ok")
    print(_("{path}: written (mode 0600), {verdict}").format(path=path, verdict=verdict), file=out)
    run = f"repbot run -c {path}" + (" --console" if answers.console else "")
    hint = "" if answers.console else "  " + _("(then invite the bot to a room from an admin account)")
    print(_("next: {command}").format(command=run) + hint, file=out)
    print(_("every key, documented: {command}").format(command="repbot config example"), file=out)
    return 1 if problem else 0
