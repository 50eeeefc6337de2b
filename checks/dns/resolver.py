"""The one DNS resolver wrapper every check uses.

Why not `dns.asyncresolver` directly: it spends ~470 µs of CPU per query here (REFERENCE.md, "Performance
facts"), and a blocklist sweep is thousands of queries, most of them NXDOMAIN. This wrapper keeps one UDP
socket per nameserver and event loop, reuses each query's prepared wire form with only the id changed, and
reads negative answers from the 12-byte header plus the SOA in the authority section, without building a
message object. Correctness is kept: an answer must match the id *and* the question, TC is retried over
TCP, and every way a query can end is a distinct `Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import itertools
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from checks.dns._resolution import _Resolution, _Step, _steps
from checks.dns._transport import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from checks.dns._transport import _Limiter, _tcp_exchange, _UdpClient
from checks.dns._wire import _interpret, _parse_query, _prepare, _Prepared
from checks.dns.types import DnsAnswer, Nameserver, Outcome, Try, _system_nameservers, parse_nameserver
from checks.i18n import N_

__all__ = [
    "DnsAnswer",
    "Nameserver",
    "Outcome",
    "Resolver",
    "Try",
    "parse_nameserver",
    "reverse_pointer",
    "run_deadline",
]

DEFAULT_TIMEOUT = 5.0
MAX_CACHE_TTL = 300
MAX_CACHE_ENTRIES = 10_000


def reverse_pointer(address: str) -> str:
    """The reversed labels of an IP, without `in-addr.arpa`/`ip6.arpa` (IPv6 by nibble, RFC 5782); ValueError.

    The standard library's, at a sixth of dns.reversename's cost: a sweep asks it twice per address. A plain
    dotted quad is reversed as text: ipaddress parses each octet in Python (~20 µs an address).
    """
    octets = address.split(".")
    if len(octets) == 4 and all(
        o.isascii() and o.isdigit() and len(o) <= 3 and (o == "0" or o[0] != "0") and int(o) < 256 for o in octets
    ):
        return ".".join(reversed(octets))
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped  # as dns.reversename does: ::ffff:a.b.c.d is the IPv4 address
    name = parsed.reverse_pointer
    return name.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")


class _Query:
    """One query on its way: it sends the tries its `_Resolution` decides, by callbacks (no task but for TCP).

    It waits in the resolver's `_Limiter` for a slot before each try; a try's wait counts from its own send,
    never from the queueing. A run deadline (`run_deadline`) ends it as `not sent` if it is still queued then.
    """

    __slots__ = ("_resolution", "clients", "deadline", "future", "key", "limiter", "loop", "prepared", "rdtype",
                 "resolver", "sent_at", "step")  # fmt: skip

    def __init__(
        self,
        resolver: Resolver,
        state: _LoopState,
        key: tuple[str, int],
        future: asyncio.Future[DnsAnswer],
        prepared: _Prepared,
        rdtype: str,
        deadline: float | None,
    ) -> None:
        self.resolver = resolver
        self.loop = state.loop
        self.limiter = state.limiter
        self.clients = state.clients
        self.key = key
        self.future = future
        self.prepared = prepared
        self.deadline = deadline
        self.rdtype = rdtype
        self._resolution: _Resolution | None = None
        self.step = resolver._steps[0][0]  # what `_Resolution.first()` says, without making one
        self.sent_at = 0.0

    def start(self) -> bool:
        """Send the current step (the caller holds a slot for it); False when nothing went out."""
        resolver = self.resolver
        if self.future.done():  # cancelled while it waited for a slot
            resolver._forget(self.key, self.future)
            return False
        now = self.loop.time()
        if self.deadline is not None and now >= self.deadline:
            resolver._finish(self.key, self.future, self.resolution.result())
            return False
        self.sent_at = now
        resolver.sent += 1
        step = self.step
        if step.tcp:
            self._start_tcp(step)
            return True
        try:
            client = self.clients.get(step.server) or resolver._new_client(self.loop, step.server)
            client.start(self.prepared, step.wait, self.on_wire)
        except OSError as error:
            self.resolution.record(step, self._failure(Outcome.ERROR, str(error)), 0.0)
            self.advance()
            return False
        return True

    @property
    def resolution(self) -> _Resolution:
        """The query's decisions, made when a first try did not simply answer (most queries never need it)."""
        if self._resolution is None:
            self._resolution = _Resolution(self.key[0], self.rdtype, self.resolver._steps)
        return self._resolution

    def expire(self) -> None:
        self.resolver._finish(self.key, self.future, self.resolution.result())

    def on_wire(self, wire: bytes | OSError) -> None:
        self.limiter.release()
        future, key = self.future, self.key
        if future.done():
            self.resolver._forget(key, future)
            return
        step = self.step
        elapsed = self.loop.time() - self.sent_at
        if isinstance(wire, TimeoutError):
            answer: DnsAnswer | None = self._failure(Outcome.TIMEOUT)
        elif isinstance(wire, OSError):
            answer = self._failure(Outcome.ERROR, str(wire))
        elif wire[2] & 0x02:  # TC: the answer did not fit, ask again over TCP
            answer = None
        else:
            try:
                answer = _interpret(wire, key[0], self.rdtype, key[1], step.address, via_tcp=False)
            except Exception as error:  # a bug, not a DNS outcome: the asker sees it, as `query` always did
                self.resolver._fail(key, future, error)
                return
            if not answer.failed and self._resolution is None:
                self.resolver._finish(key, future, answer)  # the common case: one try, answered
                return
        self.resolution.record(step, answer, elapsed)
        self.advance()

    def advance(self) -> None:
        """Queue the next try (ahead of new queries: this one has waited already), or finish."""
        deadline_passed = self.deadline is not None and self.loop.time() >= self.deadline
        step = self.resolution.next(deadline_passed)
        if step is None:
            self.resolver._finish(self.key, self.future, self.resolution.result())
            return
        self.step = step
        self.limiter.start(self, urgent=True)

    def _failure(self, outcome: str, detail: str = "") -> DnsAnswer:
        step = self.step
        return DnsAnswer(self.key[0], self.rdtype, outcome, server=step.address, via_tcp=step.tcp,
                         detail=detail)  # fmt: skip

    def _start_tcp(self, step: _Step) -> None:
        task = self.loop.create_task(asyncio.wait_for(_tcp_exchange(step.server, self.prepared), step.wait))
        self.resolver._tasks.add(task)
        task.add_done_callback(self._tcp_done)
        self.future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)

    def _tcp_done(self, task: asyncio.Task[bytes]) -> None:
        self.resolver._tasks.discard(task)
        self.limiter.release()
        if self.future.done() or task.cancelled():
            self.resolver._forget(self.key, self.future)
            return
        elapsed = self.loop.time() - self.sent_at
        error = task.exception()
        if isinstance(error, TimeoutError):
            answer = self._failure(Outcome.TIMEOUT)
        elif isinstance(error, (OSError, asyncio.IncompleteReadError, ValueError)):
            answer = self._failure(Outcome.ERROR, f"TCP retry after truncation failed: {error or type(error).__name__}")
        elif error is not None:
            self.resolver._fail(self.key, self.future, error)
            return
        elif (wire := task.result())[2] & 0x02 and not int.from_bytes(wire[6:8], "big"):
            # TC again over TCP, and nothing in it: read as NODATA it would say "no such record", a lie.
            answer = self._failure(Outcome.ERROR, N_("truncated even over TCP, with no answer"))
        else:
            key, server = self.key, self.step.address
            try:
                answer = _interpret(wire, key[0], self.rdtype, key[1], server, via_tcp=True)
            except Exception as bug:  # not a DNS outcome: the asker sees it, as on the UDP path
                self.resolver._fail(key, self.future, bug)
                return
        self.resolution.record(self.step, answer, elapsed)
        self.advance()


@dataclass(frozen=True)
class _LoopState:
    """What a resolver keeps per event loop (asyncio handles are loop-bound): its limit and UDP clients."""

    loop: asyncio.AbstractEventLoop
    limiter: _Limiter
    clients: dict[Nameserver, _UdpClient] = field(default_factory=dict)


_RUN_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("repbot_dns_run_deadline", default=None)


@contextlib.contextmanager
def run_deadline(seconds: float) -> Iterator[float]:
    """Within this block (and tasks it starts), a query still queued `seconds` from now ends `not sent`.

    A query whose try is on the wire then keeps its try's own wait, and starts no new one. Nested deadlines
    keep the earlier. Yields the deadline (loop time). Needs a running event loop.
    """
    deadline = asyncio.get_running_loop().time() + seconds
    outer = _RUN_DEADLINE.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _RUN_DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _RUN_DEADLINE.reset(token)


class Resolver:
    """An async stub resolver: absolute names only, distinct outcomes, a small TTL cache.

    Queries never raise for DNS outcomes; a failure is an answer whose `failed` is true. `concurrency` caps
    this resolver's queries on the wire at once (per event loop).
    """

    def __init__(
        self,
        nameservers: Sequence[Nameserver | str] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int | None = None,
        cache: bool = True,
    ) -> None:
        servers = [parse_nameserver(ns) if isinstance(ns, str) else ns for ns in nameservers]
        self.nameservers: tuple[Nameserver, ...] = tuple(servers) or _system_nameservers()
        self.timeout = timeout
        self.concurrency = DEFAULT_CONCURRENCY if concurrency is None else concurrency
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._steps = _steps(self.nameservers, timeout)
        self._cache_enabled = cache
        self._cache: dict[tuple[str, int], tuple[float, DnsAnswer]] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future[DnsAnswer]] = {}
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._last: _LoopState | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.sent = 0
        self.cache_hits = 0

    def __repr__(self) -> str:
        servers = ", ".join(str(ns) for ns in self.nameservers)
        return f"<Resolver [{servers}] timeout={self.timeout}>"

    async def query(self, name: str, rdtype: str = "A") -> DnsAnswer:
        """Ask for `rdtype` records at `name` (made absolute); never raises for DNS outcomes."""
        started = self.submit(name, rdtype)
        if isinstance(started, DnsAnswer):
            return started
        return await started

    def submit(self, name: str, rdtype: str = "A", *, urgent: bool = False) -> DnsAnswer | asyncio.Future[DnsAnswer]:
        """Start a query without a task: the answer at once (cache, invalid name), or a future for it.

        Many queries can be started and then awaited one by one; cancelling the future abandons the query
        (like cancelling `query`). `urgent` puts it ahead of queries waiting for the concurrency limit.
        """
        parsed = _parse_query(name, rdtype)
        if isinstance(parsed, str):
            return DnsAnswer(name, rdtype, Outcome.ERROR, detail=f"invalid query: {parsed}")
        text_name, wire_name, type_code = parsed
        key = (text_name, type_code)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > time.monotonic():
                self.cache_hits += 1
                return cached[1]
            del self._cache[key]
        loop = asyncio.get_running_loop()
        running = self._inflight.get(key)
        if running is not None and not running.cancelled():
            return self._join(loop, running, name, rdtype)
        future: asyncio.Future[DnsAnswer] = loop.create_future()
        self._inflight[key] = future
        if not self.nameservers:
            unasked = DnsAnswer(text_name, rdtype, Outcome.ERROR, detail=N_("no nameserver configured"))
            self._finish(key, future, unasked)
            return future
        state = self._state(loop)
        query = _Query(self, state, key, future, _prepare(wire_name, type_code), rdtype.upper(), _RUN_DEADLINE.get())
        state.limiter.start(query, urgent)
        return future

    def _join(
        self, loop: asyncio.AbstractEventLoop, running: asyncio.Future[DnsAnswer], name: str, rdtype: str
    ) -> asyncio.Future[DnsAnswer]:
        """A future of our own for a query another caller started: its cancellation touches only us."""
        mine: asyncio.Future[DnsAnswer] = loop.create_future()

        def relay(shared: asyncio.Future[DnsAnswer]) -> None:
            if mine.done():
                return
            if not shared.cancelled():
                error = shared.exception()
                if error is not None:
                    mine.set_exception(error)
                else:
                    mine.set_result(shared.result())
                return
            # The query's owner was cancelled (its caller's deadline), not us: ask on our own account.
            again = self.submit(name, rdtype)
            if isinstance(again, DnsAnswer):
                mine.set_result(again)
                return
            again.add_done_callback(relay_again)
            mine.add_done_callback(lambda m: again.cancel() if m.cancelled() else None)

        def relay_again(again: asyncio.Future[DnsAnswer]) -> None:
            if not mine.done():
                relay(again)

        running.add_done_callback(relay)
        return mine

    def _finish(self, key: tuple[str, int], future: asyncio.Future[DnsAnswer], answer: DnsAnswer) -> None:
        self._forget(key, future)
        if not future.done():
            future.set_result(answer)
            self._remember(key, answer)

    def _fail(self, key: tuple[str, int], future: asyncio.Future[DnsAnswer], error: BaseException) -> None:
        self._forget(key, future)
        if not future.done():
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must log it

    def _forget(self, key: tuple[str, int], future: asyncio.Future[DnsAnswer]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]

    async def query_many(self, names: Iterable[str], rdtype: str = "A") -> list[DnsAnswer]:
        """Answers for several names, asked concurrently, in the same order."""
        started = [self.submit(name, rdtype) for name in names]
        try:
            return [answer if isinstance(answer, DnsAnswer) else await answer for answer in started]
        finally:
            for answer in started:
                if not isinstance(answer, DnsAnswer):
                    answer.cancel()

    def _remember(self, key: tuple[str, int], answer: DnsAnswer) -> None:
        if not self._cache_enabled or answer.failed or answer.ttl <= 0:
            return
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            # The oldest quarter at once: evicting one entry per answer made `next(iter(cache))` skip the
            # deleted slots at the front of the dict each time (7 µs an answer in a /20 sweep).
            for old in list(itertools.islice(self._cache, MAX_CACHE_ENTRIES // 4)):
                del self._cache[old]
        self._cache[key] = (time.monotonic() + min(answer.ttl, MAX_CACHE_TTL), answer)

    def clear_cache(self) -> None:
        self._cache.clear()

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        last = self._last
        if last is not None and last.loop is loop:
            return last  # the usual case, without the weak dictionary's lookup
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(loop, _Limiter(loop, self.concurrency))
        self._last = state
        return state

    def _new_client(self, loop: asyncio.AbstractEventLoop, server: Nameserver) -> _UdpClient:
        client = self._state(loop).clients[server] = _UdpClient(loop, server)
        return client

    def in_flight(self) -> tuple[int, int]:
        """(queries on the wire, queries waiting for a slot) in the running event loop."""
        state = self._state(asyncio.get_running_loop())
        return state.limiter.active, len(state.limiter.waiting)

    def close(self) -> None:
        """Close the sockets of every event loop."""
        for state in self._loops.values():
            for client in state.clients.values():
                client.close()
            state.clients.clear()
        self._last = None
