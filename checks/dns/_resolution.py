"""The decisions of one query, without I/O: which server next, when to retry, when TCP, when to give up.

Like dnspython's `_Resolution`, this class only decides; `checks.dns.resolver` sends what it says and reports
back what happened. It keeps the per-try trace the final answer carries as evidence.

The rules: every server gets `ROUNDS` tries over UDP, in order, each waiting `timeout / (ROUNDS * servers)`
from its own send; a timeout keeps the server for the next round, SERVFAIL, REFUSED or an error drop it for
this query; a truncated answer is asked again over TCP of the same server at once; the first usable answer
ends the query. Once the run's deadline has passed no new try starts: a query that never sent one is
`not sent`, one that did ends with its last try's failure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from checks.dns.types import DnsAnswer, Nameserver, Outcome, Try
from checks.i18n import N_

ROUNDS = 2


@dataclass(frozen=True, slots=True)
class _Step:
    """One try to send: to which server, over which transport, waiting how long for the answer."""

    server: Nameserver
    tcp: bool
    wait: float
    address: str  # str(server), made once: every answer names its server


def _steps(servers: tuple[Nameserver, ...], timeout: float) -> tuple[tuple[_Step, ...], tuple[_Step, ...]]:
    """The UDP and the TCP step of each server, made once per resolver (a query only picks among them)."""
    wait = timeout / (ROUNDS * len(servers))
    udp = tuple(_Step(server, False, wait, str(server)) for server in servers)
    return udp, tuple(_Step(server, True, wait, str(server)) for server in servers)


class _Resolution:
    """The state of one query's tries; `first()` then, after each try, `record()` and `next()`."""

    __slots__ = ("answer", "dropped", "index", "last", "name", "rdtype", "round", "tcp", "trace", "truncated", "udp")

    def __init__(self, name: str, rdtype: str, steps: tuple[tuple[_Step, ...], tuple[_Step, ...]]) -> None:
        self.name = name
        self.rdtype = rdtype
        self.udp, self.tcp = steps
        self.index = 0  # the server of the last step handed out
        self.round = 0
        # Made on the first recorded try: most queries end at their first answer without one.
        self.dropped: set[int] | None = None
        self.trace: list[Try] | None = None
        self.answer: DnsAnswer | None = None  # a usable answer: the query is done
        self.last: DnsAnswer | None = None  # the latest failed answer
        self.truncated = False

    def first(self) -> _Step:
        return self.udp[0]

    def record(self, step: _Step, answer: DnsAnswer | None, elapsed: float) -> None:
        """What one try got: an answer (usable or failed), or None when its UDP answer was truncated."""
        outcome = "truncated" if answer is None else answer.outcome
        detail = "" if answer is None else answer.detail
        transport = "tcp" if step.tcp else "udp"
        if self.trace is None:
            self.trace, self.dropped = [], set()
        self.trace.append(Try(step.address, transport, outcome, round(elapsed, 4), detail))
        if answer is None:
            self.truncated = True
            return
        self.truncated = False
        if not answer.failed:
            self.answer = answer
            return
        self.last = answer
        if answer.outcome != Outcome.TIMEOUT and self.dropped is not None:
            self.dropped.add(self.index)  # `step` is always the one `next` handed out last

    def next(self, deadline_passed: bool = False) -> _Step | None:
        """The next try, or None when the query is over (answered, out of tries, or out of time)."""
        if self.answer is not None or deadline_passed:
            return None
        if self.truncated:
            return self.tcp[self.index]
        count = len(self.udp)
        dropped = self.dropped or set()
        while True:
            self.index += 1
            if self.index == count:
                self.index = 0
                self.round += 1
            if self.round == ROUNDS or len(dropped) == count:
                return None
            if self.index not in dropped:
                return self.udp[self.index]

    def result(self) -> DnsAnswer:
        """The query's answer with its trace: the usable answer, else the last failure, else `not sent`."""
        trace = tuple(self.trace or ())
        if self.answer is not None:
            # One try that answered needs no trace: `server` says who answered (as dnspython keeps one for errors).
            return replace(self.answer, trace=trace) if len(trace) > 1 else self.answer
        if self.last is not None:
            return replace(self.last, trace=trace)
        if trace:  # only truncated answers, then the run's deadline
            server = trace[-1].server
            detail = N_("truncated over UDP; TCP not tried before the run's deadline")
            return DnsAnswer(self.name, self.rdtype, Outcome.ERROR, server=server, detail=detail, trace=trace)
        return DnsAnswer(self.name, self.rdtype, Outcome.NOT_SENT, detail=N_("the run's deadline passed"))
