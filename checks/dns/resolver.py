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
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import dns.reversename

from checks.dns._transport import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from checks.dns._transport import _Limits, _tcp_exchange, _UdpClient
from checks.dns._wire import _interpret, _parse_query, _prepare, _Prepared
from checks.dns.types import DnsAnswer, Nameserver, Outcome, _system_nameservers, parse_nameserver

__all__ = [
    "DnsAnswer",
    "Nameserver",
    "Outcome",
    "Resolver",
    "parse_nameserver",
    "reverse_pointer",
]

DEFAULT_TIMEOUT = 5.0
MAX_CACHE_TTL = 300
MAX_CACHE_ENTRIES = 10_000


def reverse_pointer(address: str) -> str:
    """The reversed labels of an IP, without `in-addr.arpa`/`ip6.arpa` (IPv6 by nibble, RFC 5782)."""
    name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    for suffix in (".in-addr.arpa", ".ip6.arpa"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class _Query:
    """The first UDP try of one query, run by callbacks (no task): most queries end here.

    Anything but a usable answer (a timeout, SERVFAIL, REFUSED, an error, TC) hands the query to
    `Resolver._resolve`, a task, which retries, tries the other nameservers and asks over TCP exactly as before.
    """

    __slots__ = ("deadline", "future", "key", "limiter", "loop", "prepared", "rdtype", "resolver", "wait")

    def __init__(
        self,
        resolver: Resolver,
        loop: asyncio.AbstractEventLoop,
        key: tuple[str, int],
        future: asyncio.Future[DnsAnswer],
        prepared: _Prepared,
        rdtype: str,
        deadline: float,
    ) -> None:
        self.resolver = resolver
        self.loop = loop
        self.key = key
        self.future = future
        self.prepared = prepared
        self.rdtype = rdtype
        self.deadline = deadline
        self.limiter = _Limits.get(loop)
        self.wait = 0.0

    def start(self) -> bool:
        """Send the query (the caller holds a slot for it); False when it did not go out."""
        resolver = self.resolver
        if self.future.done():  # cancelled while it waited for a slot
            resolver._forget(self.key, self.future)
            return False
        server = resolver.nameservers[0]
        remaining = self.deadline - self.loop.time()
        if remaining <= 0:
            resolver._finish(self.key, self.future, DnsAnswer(self.key[0], self.rdtype, Outcome.TIMEOUT,
                                                              server=str(server)))  # fmt: skip
            return False
        self.wait = min(resolver.timeout / (2 * len(resolver.nameservers)), remaining)
        resolver.sent += 1
        try:
            resolver._client(self.loop, server).start(self.prepared, self.wait, self.on_wire)
        except OSError as error:
            self.go_slow(DnsAnswer(self.key[0], self.rdtype, Outcome.ERROR, server=str(server), detail=str(error)))
            return False
        return True

    def on_wire(self, wire: bytes | OSError) -> None:
        self.limiter.release()
        future, key, rdtype = self.future, self.key, self.rdtype
        if future.done():
            self.resolver._forget(key, future)
            return
        server = self.resolver.nameservers[0]
        if isinstance(wire, TimeoutError):
            self.go_slow(DnsAnswer(key[0], rdtype, Outcome.TIMEOUT, server=str(server)))
        elif isinstance(wire, OSError):
            self.go_slow(DnsAnswer(key[0], rdtype, Outcome.ERROR, server=str(server), detail=str(wire)))
        elif wire[2] & 0x02:  # TC: the answer did not fit, ask again over TCP
            self.go_slow(None)
        else:
            try:
                answer = _interpret(wire, key[0], rdtype, key[1], str(server), via_tcp=False)
            except Exception as error:  # a bug, not a DNS outcome: the asker sees it, as `query` always did
                self.resolver._fail(key, future, error)
                return
            if answer.failed:
                self.go_slow(answer)
            else:
                self.resolver._finish(key, self.future, answer)

    def go_slow(self, first: DnsAnswer | None) -> None:
        """Continue in a task: `first` is the first try's failed answer, or None when it was truncated."""
        resolver, future = self.resolver, self.future
        coro = resolver._resolve(self.prepared, self.key, self.rdtype, self.deadline, first, self.wait)
        task = self.loop.create_task(coro)
        resolver._tasks.add(task)

        def settle(done: asyncio.Task[DnsAnswer]) -> None:
            resolver._tasks.discard(done)
            if done.cancelled():
                resolver._forget(self.key, future)
                future.cancel()
            elif (error := done.exception()) is not None:
                resolver._fail(self.key, future, error)
            else:
                resolver._finish(self.key, future, done.result())

        task.add_done_callback(settle)
        future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)


class Resolver:
    """An async stub resolver: absolute names only, distinct outcomes, a small TTL cache.

    Queries never raise for DNS outcomes; a failure is an answer whose `failed` is true.
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
        if concurrency is not None:
            _Limits.size = concurrency
        self._cache_enabled = cache
        self._cache: dict[tuple[str, int], tuple[float, DnsAnswer]] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future[DnsAnswer]] = {}
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Nameserver, _UdpClient]] = (
            weakref.WeakKeyDictionary()
        )
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
            self._finish(key, future, DnsAnswer(text_name, rdtype, Outcome.ERROR, detail="no nameserver configured"))
            return future
        prepared = _prepare(wire_name, type_code)
        query = _Query(self, loop, key, future, prepared, rdtype.upper(), loop.time() + self.timeout)
        query.limiter.start(query.start, urgent)
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
            del self._cache[next(iter(self._cache))]
        self._cache[key] = (time.monotonic() + min(answer.ttl, MAX_CACHE_TTL), answer)

    def clear_cache(self) -> None:
        self._cache.clear()

    async def _resolve(
        self,
        prepared: _Prepared,
        key: tuple[str, int],
        rdtype: str,
        deadline: float,
        first: DnsAnswer | None,
        first_wait: float,
    ) -> DnsAnswer:
        """The rest of a query after its first UDP try: `first` failed, or (None) was truncated."""
        loop = asyncio.get_running_loop()
        text_name, type_code = key
        servers = list(self.nameservers)
        # Each server gets two chances against lost datagrams; SERVFAIL/REFUSED drop it for this query.
        per_try = self.timeout / (2 * len(servers))
        last: DnsAnswer | None = None
        first_done = False  # the first try went to servers[0]; its answer is `first`, or TCP is next
        for _round in range(2):
            for server in list(servers):
                if not first_done:
                    first_done = True
                    answer = first if first is not None else await self._tcp(server, prepared, key, rdtype, first_wait)
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    answer = await self._ask(server, prepared, text_name, type_code, rdtype, min(per_try, remaining))
                if not answer.failed:
                    return answer
                last = answer
                if answer.outcome != Outcome.TIMEOUT:
                    servers.remove(server)
            if not servers:
                break
        assert last is not None
        return last

    async def _ask(
        self, server: Nameserver, prepared: _Prepared, text_name: str, type_code: int, rdtype: str, wait: float
    ) -> DnsAnswer:
        try:
            wire = await self._udp_exchange(server, prepared, wait)
        except TimeoutError:
            return DnsAnswer(text_name, rdtype, Outcome.TIMEOUT, server=str(server))
        except OSError as error:
            return DnsAnswer(text_name, rdtype, Outcome.ERROR, server=str(server), detail=str(error))
        if wire[2] & 0x02:  # TC: the answer did not fit, ask again over TCP
            return await self._tcp(server, prepared, (text_name, type_code), rdtype, wait)
        return _interpret(wire, text_name, rdtype, type_code, str(server), via_tcp=False)

    async def _tcp(
        self, server: Nameserver, prepared: _Prepared, key: tuple[str, int], rdtype: str, wait: float
    ) -> DnsAnswer:
        """The query again over TCP, after a truncated UDP answer."""
        text_name, type_code = key
        limiter = _Limits.get(asyncio.get_running_loop())
        await limiter.acquire()
        try:
            wire = await asyncio.wait_for(_tcp_exchange(server, prepared), wait)
        except TimeoutError:
            return DnsAnswer(text_name, rdtype, Outcome.TIMEOUT, server=str(server), via_tcp=True)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            detail = f"TCP retry after truncation failed: {error or type(error).__name__}"
            return DnsAnswer(text_name, rdtype, Outcome.ERROR, server=str(server), via_tcp=True, detail=detail)
        finally:
            limiter.release()
        if wire[2] & 0x02 and not int.from_bytes(wire[6:8], "big"):
            # TC again over TCP, and nothing in it: read as NODATA it would say "no such record", a lie.
            detail = "truncated even over TCP, with no answer"
            return DnsAnswer(text_name, rdtype, Outcome.ERROR, server=str(server), via_tcp=True, detail=detail)
        return _interpret(wire, text_name, rdtype, type_code, str(server), via_tcp=True)

    async def _udp_exchange(self, server: Nameserver, prepared: _Prepared, wait: float) -> bytes:
        loop = asyncio.get_running_loop()
        limiter = _Limits.get(loop)
        await limiter.acquire()
        try:
            client = self._client(loop, server)
            self.sent += 1
            future: asyncio.Future[bytes | OSError] = loop.create_future()
            query_id = client.start(prepared, wait, lambda wire: None if future.done() else future.set_result(wire))
            try:
                wire = await future
            finally:
                client.forget(query_id)
        finally:
            limiter.release()
        if isinstance(wire, OSError):
            raise wire
        return wire

    def _client(self, loop: asyncio.AbstractEventLoop, server: Nameserver) -> _UdpClient:
        clients = self._clients.get(loop)
        if clients is None:
            clients = self._clients[loop] = {}
        client = clients.get(server)
        if client is None or client.closed:
            client = _UdpClient(loop, server)
            clients[server] = client
        return client

    def close(self) -> None:
        """Close the sockets of every event loop."""
        for clients in self._clients.values():
            for client in clients.values():
                client.close()
        self._clients.clear()
