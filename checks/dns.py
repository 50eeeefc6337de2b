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
import ipaddress
import random
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from ._errors import DnsFailed

__all__ = [
    "DnsAnswer",
    "Nameserver",
    "Outcome",
    "Resolver",
    "parse_nameserver",
    "reverse_pointer",
]

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONCURRENCY = 200
EDNS_PAYLOAD = 1232
UDP_RECEIVE_BUFFER = 1 << 20
MAX_CACHE_TTL = 300
MAX_CACHE_ENTRIES = 10_000
_SOA = 6
_HEADER = 12


class Outcome:
    """How a query ended. Plain string constants, so evidence stays JSON-ready."""

    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    ERROR = "error"

    FAILURES = frozenset({SERVFAIL, REFUSED, TIMEOUT, ERROR})


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


def reverse_pointer(address: str) -> str:
    """The reversed labels of an IP, without `in-addr.arpa`/`ip6.arpa` (IPv6 by nibble, RFC 5782)."""
    name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    for suffix in (".in-addr.arpa", ".ip6.arpa"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


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
        """A short human phrase for the outcome: 'SERVFAIL from 127.0.0.1:53'."""
        words = {
            Outcome.ANSWER: "answered",
            Outcome.NXDOMAIN: "no such name (NXDOMAIN)",
            Outcome.NODATA: f"no {self.rdtype} record",
            Outcome.SERVFAIL: "SERVFAIL",
            Outcome.REFUSED: "REFUSED",
            Outcome.TIMEOUT: "timed out",
            Outcome.ERROR: "error",
        }[self.outcome]
        if self.detail:
            words = f"{words}: {self.detail}"
        return f"{words} from {self.server}" if self.server and self.failed else words

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.rdtype, "outcome": self.outcome}
        if self.records:
            data["records"] = list(self.records)
        if self.server:
            data["server"] = self.server
        if self.detail:
            data["detail"] = self.detail
        return data


_Done = Callable[[bytes | OSError], None]


class _Exchange:
    """One UDP query on the wire: the question its answer must repeat, who to tell, and its timer."""

    __slots__ = ("done", "question", "timer")

    def __init__(self, question: bytes, done: _Done) -> None:
        self.question = question
        self.done = done
        self.timer: asyncio.TimerHandle | None = None


class _UdpClient:
    """One connected UDP socket to one nameserver; answers are matched to queries by id and question.

    It reads with loop.add_reader and drains every waiting datagram per wake-up: asyncio's datagram transport
    reads one datagram per event-loop iteration, which costs a poll per answer in a blocklist sweep. Each query
    is a callback, not a future awaited by a task: an answer (or a TimeoutError, or the socket's OSError) is
    handed straight to whoever sent the query.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, server: Nameserver) -> None:
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        with contextlib.suppress(OSError):
            # Up to `concurrency` answers can arrive at once; the default buffer drops some of a burst.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        try:
            self.sock.connect((server.host, server.port))
        except OSError:
            self.sock.close()
            raise
        self.loop = loop
        self.server = str(server)
        self.pending: dict[int, _Exchange] = {}
        self.closed = False
        loop.add_reader(self.sock.fileno(), self._read_ready)

    def start(self, prepared: _Prepared, wait: float, done: _Done) -> int:
        """Send one query; `done` gets the matching answer, TimeoutError after `wait`, or an OSError.

        A failed send raises here and `done` is never called. Returns the query id (for `forget`).
        """
        query_id = self.new_id()
        self.sock.send(query_id.to_bytes(2, "big") + prepared.body)
        entry = _Exchange(prepared.question, done)
        entry.timer = self.loop.call_later(wait, self._expire, query_id, entry)
        self.pending[query_id] = entry
        return query_id

    def forget(self, query_id: int) -> None:
        """Stop waiting for a query whose asker has gone (cancelled): its callback is never called."""
        entry = self.pending.pop(query_id, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()

    def _expire(self, query_id: int, entry: _Exchange) -> None:
        if self.pending.get(query_id) is entry:
            del self.pending[query_id]
            entry.done(TimeoutError())

    def _read_ready(self) -> None:
        recv = self.sock.recv
        pending = self.pending
        while True:
            try:
                data = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # ICMP port unreachable applies to the whole server, so every query to it has failed.
                self._fail_all(error)
                return
            if len(data) < _HEADER:
                continue
            query_id = int.from_bytes(data[:2], "big")
            entry = pending.get(query_id)
            # A late or spoofed answer for another question must not complete this query.
            if entry is None or data[_HEADER : _HEADER + len(entry.question)].lower() != entry.question:
                continue
            del pending[query_id]
            if entry.timer is not None:
                entry.timer.cancel()
            entry.done(data)

    def _fail_all(self, error: OSError) -> None:
        entries = list(self.pending.values())
        self.pending.clear()
        for entry in entries:
            if entry.timer is not None:
                entry.timer.cancel()
            entry.done(error)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self._fail_all(ConnectionError("socket closed"))

    def new_id(self) -> int:
        while True:
            query_id = random.getrandbits(16)
            if query_id not in self.pending:
                return query_id


@dataclass(frozen=True)
class _Prepared:
    body: bytes  # the wire form after the 2-byte id
    question: bytes  # lower-cased question section, to match answers


class _Limiter:
    """The process-wide limit on queries on the wire, for one event loop.

    A counter and a queue of starters instead of an asyncio.Semaphore: below the limit a query is sent at once,
    with no future and no wake-up; at the limit its starter waits in the queue and is called, already holding
    the freed slot, when another query ends. A starter returns False when its query is gone (cancelled) so that
    the slot passes on. Urgent starters (zone health probes that many checks wait for) go to the front.
    """

    __slots__ = ("active", "size", "waiting")

    def __init__(self, size: int) -> None:
        self.size = size
        self.active = 0
        self.waiting: deque[Callable[[], bool]] = deque()

    def start(self, starter: Callable[[], bool], urgent: bool = False) -> None:
        if self.active < self.size and not self.waiting:
            self.active += 1
            if not starter():
                self.release()
        elif urgent:
            self.waiting.appendleft(starter)
        else:
            self.waiting.append(starter)

    def release(self) -> None:
        waiting = self.waiting
        while waiting:
            if waiting.popleft()():
                return  # the slot passed to the next query
        self.active -= 1

    async def acquire(self) -> None:
        """Wait for a slot (the slow paths: retries and TCP); the caller must call release()."""
        if self.active < self.size and not self.waiting:
            self.active += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def starter() -> bool:
            if granted.done():
                return False
            granted.set_result(None)
            return True

        self.waiting.append(starter)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # the slot arrived together with the cancellation
            raise


class _Limits:
    """One concurrency limit for the whole process, per event loop (asyncio primitives are loop-bound)."""

    size: ClassVar[int] = DEFAULT_CONCURRENCY
    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Limiter]] = weakref.WeakKeyDictionary()

    @classmethod
    def get(cls, loop: asyncio.AbstractEventLoop) -> _Limiter:
        limiter = cls._by_loop.get(loop)
        if limiter is None:
            limiter = cls._by_loop[loop] = _Limiter(cls.size)
        return limiter


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
            wire = await asyncio.wait_for(self._tcp_exchange(server, prepared), wait)
        except TimeoutError:
            return DnsAnswer(text_name, rdtype, Outcome.TIMEOUT, server=str(server), via_tcp=True)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            detail = f"TCP retry after truncation failed: {error or type(error).__name__}"
            return DnsAnswer(text_name, rdtype, Outcome.ERROR, server=str(server), via_tcp=True, detail=detail)
        finally:
            limiter.release()
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

    async def _tcp_exchange(self, server: Nameserver, prepared: _Prepared) -> bytes:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            query_id = random.getrandbits(16)
            wire = query_id.to_bytes(2, "big") + prepared.body
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            answer = await reader.readexactly(length)
        finally:
            writer.close()
        if answer[:2] != wire[:2] or answer[_HEADER : _HEADER + len(prepared.question)].lower() != prepared.question:
            raise ValueError("TCP answer does not match the question")
        return answer

    def close(self) -> None:
        """Close the sockets of every event loop."""
        for clients in self._clients.values():
            for client in clients.values():
                client.close()
        self._clients.clear()


# Flags RD and AD (RFC 6840 §5.7: ask a validating resolver to report AD); one question, one additional (the OPT).
_QUERY_HEADER = b"\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01"
_CLASS_IN = b"\x00\x01"
# The EDNS0 OPT record: root owner, type 41, our UDP payload size as its class, TTL 0, no options.
_OPT = b"\x00\x00\x29" + EDNS_PAYLOAD.to_bytes(2, "big") + b"\x00\x00\x00\x00\x00\x00"
_TYPE_CODES: dict[str, int] = {}


def _parse_query(name: str, rdtype: str) -> tuple[str, bytes, int] | str:
    """(lower-case absolute name, its wire form, type code) for a query, or the reason it is invalid."""
    type_code = _TYPE_CODES.get(rdtype)
    try:
        if type_code is None:
            type_code = _TYPE_CODES[rdtype] = int(dns.rdatatype.from_text(rdtype))
        fast = _fast_wire_name(name)
        if fast is not None:
            return fast[0], fast[1], type_code
        qname = dns.name.from_text(name)
    except (dns.exception.DNSException, ValueError) as error:
        return str(error)
    return qname.to_text().lower(), (qname.to_wire() or b"").lower(), type_code


def _fast_wire_name(name: str) -> tuple[str, bytes] | None:
    """The common case without dnspython: a plain ASCII name of valid labels; None for anything else."""
    if not name.isascii() or "\\" in name:
        return None
    text = name.lower() if name.endswith(".") else name.lower() + "."
    labels = text.encode("ascii").split(b".")[:-1]
    if not labels or not all(0 < len(label) < 64 for label in labels):
        return None
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    return (text, wire) if len(wire) <= 255 else None


def _prepare(wire_name: bytes, type_code: int) -> _Prepared:
    question = wire_name + type_code.to_bytes(2, "big") + _CLASS_IN
    return _Prepared(_QUERY_HEADER + question + _OPT, question)


def _interpret(wire: bytes, name: str, rdtype: str, type_code: int, server: str, via_tcp: bool) -> DnsAnswer:
    rcode = wire[3] & 0x0F
    authenticated = bool(wire[3] & 0x20)
    answer_count = int.from_bytes(wire[6:8], "big")
    if rcode in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR) and answer_count == 0:
        outcome = Outcome.NXDOMAIN if rcode == dns.rcode.NXDOMAIN else Outcome.NODATA
        ttl = _negative_ttl(wire)
        return DnsAnswer(name, rdtype, outcome, ttl=ttl, authenticated=authenticated, server=server, via_tcp=via_tcp)
    if rcode == dns.rcode.SERVFAIL:
        return DnsAnswer(name, rdtype, Outcome.SERVFAIL, server=server, via_tcp=via_tcp)
    if rcode == dns.rcode.REFUSED:
        return DnsAnswer(name, rdtype, Outcome.REFUSED, server=server, via_tcp=via_tcp)
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        detail = f"rcode {dns.rcode.to_text(dns.rcode.Rcode.make(rcode))}"
        return DnsAnswer(name, rdtype, Outcome.ERROR, server=server, via_tcp=via_tcp, detail=detail)
    try:
        message = dns.message.from_wire(wire, ignore_trailing=True)
    except dns.exception.DNSException as error:
        detail = f"malformed answer: {error}"
        return DnsAnswer(name, rdtype, Outcome.ERROR, server=server, via_tcp=via_tcp, detail=detail)
    return _from_message(message, name, rdtype, type_code, server, via_tcp, authenticated)


def _from_message(
    message: dns.message.Message,
    name: str,
    rdtype: str,
    type_code: int,
    server: str,
    via_tcp: bool,
    authenticated: bool,
) -> DnsAnswer:
    rdatas: list[dns.rdata.Rdata] = []
    cnames: list[str] = []
    ttl: int | None = None
    for rrset in message.answer:
        if rrset.rdclass != dns.rdataclass.IN:
            continue
        if rrset.rdtype == type_code:
            rdatas.extend(rrset)
            ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            cnames.extend(rd.target.to_text() for rd in rrset)
    if message.rcode() == dns.rcode.NXDOMAIN:
        outcome = Outcome.NXDOMAIN
    else:
        outcome = Outcome.ANSWER if rdatas else Outcome.NODATA
    return DnsAnswer(
        name,
        rdtype,
        outcome,
        records=tuple(rd.to_text() for rd in rdatas),
        ttl=ttl if ttl is not None else _negative_ttl(message.to_wire()),
        authenticated=authenticated,
        server=server,
        via_tcp=via_tcp,
        cnames=tuple(cnames),
        rdata=tuple(rdatas),
    )


def _negative_ttl(wire: bytes, default: int = 0) -> int:
    """RFC 2308 negative TTL, min(SOA TTL, SOA MINIMUM), read straight from the wire."""
    try:
        if int.from_bytes(wire[6:8], "big") != 0 or int.from_bytes(wire[8:10], "big") == 0:
            return default
        offset = _skip_name(wire, _HEADER) + 4  # the question: name, type, class
        offset = _skip_name(wire, offset)  # the first authority record's owner
        if int.from_bytes(wire[offset : offset + 2], "big") != _SOA:
            return default
        ttl = int.from_bytes(wire[offset + 4 : offset + 8], "big")
        end = offset + 10 + int.from_bytes(wire[offset + 8 : offset + 10], "big")
        return min(ttl, int.from_bytes(wire[end - 4 : end], "big"))
    except IndexError:
        return default


def _skip_name(wire: bytes, offset: int) -> int:
    while True:
        length = wire[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += length + 1


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
