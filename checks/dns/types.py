"""The values of checks.dns.resolver: how a query ended, its answer, and the nameserver it went to."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.rdata

from checks.errors import DnsFailed
from checks.i18n import N_, _

__all__ = ["DnsAnswer", "Nameserver", "Outcome", "Try", "parse_nameserver"]


class Outcome:
    """How a query ended. Plain string constants, so evidence stays JSON-ready."""

    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    ERROR = "error"
    # Never sent: it waited behind the in-flight limit until the run's deadline. Not the server's fault.
    NOT_SENT = "not-sent"

    FAILURES = frozenset({SERVFAIL, REFUSED, TIMEOUT, ERROR, NOT_SENT})


@dataclass(frozen=True)
class Nameserver:
    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_nameserver(text: str) -> Nameserver:
    """A Nameserver from `HOST`, `HOST:PORT`, `IPV6` or `[IPV6]:PORT`; raises ValueError."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
        if rest:
            port = _parse_port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _parse_port(port_text, text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: a nameserver must be an IP address, optionally with :PORT") from None
    return Nameserver(address.compressed, port)


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r}: the port must be a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True, slots=True)
class Try:
    """One try of a query: the server asked, over which transport, how it ended, and after how long (s)."""

    server: str
    transport: str  # "udp" | "tcp"
    outcome: str  # an Outcome, or "truncated" (asked again over TCP)
    elapsed: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"server": self.server, "transport": self.transport, "outcome": self.outcome,
                                "elapsed": self.elapsed}  # fmt: skip
        if self.detail:
            data["detail"] = self.detail
        return data


@dataclass(frozen=True)
class DnsAnswer:
    """The result of one query: its outcome, the records of the asked type, and where it came from."""

    name: str
    rdtype: str
    outcome: str
    records: tuple[str, ...] = ()
    ttl: int = 0
    authenticated: bool = False
    server: str = ""
    via_tcp: bool = False
    detail: str = ""
    cnames: tuple[str, ...] = ()
    rdata: tuple[dns.rdata.Rdata, ...] = field(default=(), compare=False, repr=False)
    # Every try, when there was more than one or the query failed (one try that answered: `server` says it).
    trace: tuple[Try, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def _negative(cls, name: str, rdtype: str, outcome: str, ttl: int, authenticated: bool, server: str,
                  via_tcp: bool) -> DnsAnswer:  # fmt: skip
        """The same value as the constructor gives, for the most common answer (NXDOMAIN, NODATA), ~4x cheaper.

        A frozen dataclass's __init__ sets each of its 12 fields through object.__setattr__ (4.6 µs); a sweep
        makes one answer per query. The fields go into the instance dict at once instead.
        """
        answer = object.__new__(cls)
        vars(answer).update(_EMPTY_FIELDS, name=name, rdtype=rdtype, outcome=outcome, ttl=ttl,
                            authenticated=authenticated, server=server, via_tcp=via_tcp)  # fmt: skip
        return answer

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.ANSWER

    @property
    def failed(self) -> bool:
        """True when nobody could say whether the record exists (SERVFAIL, REFUSED, timeout, error)."""
        return self.outcome in Outcome.FAILURES

    @property
    def missing(self) -> bool:
        """True when the name or the record type authoritatively does not exist."""
        return self.outcome in (Outcome.NXDOMAIN, Outcome.NODATA)

    def texts(self) -> list[str]:
        """TXT records with their strings joined (RFC 7208 §3.3), decoded leniently."""
        return [b"".join(rd.strings).decode("utf-8", "replace") for rd in self.rdata if hasattr(rd, "strings")]

    def raise_for_failure(self) -> DnsAnswer:
        """This answer, or DnsFailed when the outcome is a failure."""
        if self.failed:
            raise DnsFailed(self.name, self.rdtype, self.describe(), self.server)
        return self

    def describe(self) -> str:
        """A short human phrase for the outcome: 'SERVFAIL from 127.0.0.1:53' (English: evidence and logs keep it)."""
        return self._phrase(str)

    def said(self) -> str:
        """`describe()` in the active language, for a finding's summary."""
        return self._phrase(_)

    def _phrase(self, say: Callable[[str], str]) -> str:
        words = say(_OUTCOME_WORDS[self.outcome]).format(rdtype=self.rdtype)
        if self.detail:  # the resolver's own details are in the catalog; a system's error text passes unchanged
            words = f"{words}: {say(self.detail)}"
        if not (self.server and self.failed):
            return words
        return say(N_("{words} from {server}")).format(words=words, server=self.server)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.rdtype, "outcome": self.outcome}
        if self.records:
            data["records"] = list(self.records)
        if self.server:
            data["server"] = self.server
        if self.detail:
            data["detail"] = self.detail
        if self.trace:
            data["trace"] = [step.to_json() for step in self.trace]
        return data


# Marked for the catalog; DnsAnswer._phrase words them in English or in the active language.
_OUTCOME_WORDS = {
    Outcome.ANSWER: N_("answered"),
    Outcome.NXDOMAIN: N_("no such name (NXDOMAIN)"),
    Outcome.NODATA: N_("no {rdtype} record"),
    Outcome.SERVFAIL: N_("SERVFAIL"),
    Outcome.REFUSED: N_("REFUSED"),
    Outcome.TIMEOUT: N_("timed out"),
    Outcome.ERROR: N_("error"),
    Outcome.NOT_SENT: N_("not sent"),
}

_EMPTY_FIELDS: dict[str, Any] = {"records": (), "detail": "", "cnames": (), "rdata": (), "trace": ()}


def _system_nameservers(path: str = "/etc/resolv.conf") -> tuple[Nameserver, ...]:
    """The `nameserver` lines of resolv.conf (dns.resolver would cost ~100 ms of imports at start-up)."""
    servers: list[Nameserver] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    with contextlib.suppress(ValueError):
                        servers.append(Nameserver(ipaddress.ip_address(fields[1].split("%")[0]).compressed))
    except OSError:
        pass
    return tuple(servers) or (Nameserver("127.0.0.1"),)
