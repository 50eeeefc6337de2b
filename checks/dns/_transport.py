"""The UDP and TCP transport of checks.dns.resolver, and each resolver's limit on queries in flight."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import random
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol

from checks.dns._wire import _HEADER, _Prepared
from checks.dns.types import Nameserver

DEFAULT_CONCURRENCY = 200
# Each UDP socket (a kernel-chosen random source port) serves this many queries, then a fresh one takes over.
# 1 (a port per query, as dnspython) cost 135 µs of CPU per query in bench/dnsbl_sweep.py against 90 µs at 3
# and 72 µs for one socket per server; 3 still gives 1,000 queries about 333 distinct ports.
QUERIES_PER_PORT = 3
# A nameserver on a loopback address (a local unbound, the setup the README recommends) has no network path an
# off-path spoofer could send on: only code on this host can answer for it, and such code needs no spoofing.
# Its port is not rotated every few queries (a /22 sweep: 13 µs of CPU a query less, mostly system time),
# only now and then, so a long-running bot still moves on from one port.
LOOPBACK_QUERIES_PER_PORT = 10_000
# Answers read per wake-up of a nameserver's ports. Each answer completes a query and sends the next one (~30 µs):
# a burst of answers that piled up while the loop was busy, all read in one callback, kept it 80 ms (the soak).
READS_PER_TURN = 256
SWEEPS_PER_SECOND = 4


_Done = Callable[[bytes | OSError], None]


class _Watcher(Protocol):
    """Tells a port when its socket has datagrams to read."""

    def watch(self, port: _UdpPort) -> None: ...

    def unwatch(self, port: _UdpPort) -> None:
        """Before the port's socket closes."""

    def close(self) -> None: ...


class _LoopWatcher:
    """Each port's socket watched by the event loop itself (add_reader): where there is no epoll."""

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def watch(self, port: _UdpPort) -> None:
        self.loop.add_reader(port.fd, port.read_ready)

    def unwatch(self, port: _UdpPort) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(port.fd)

    def close(self) -> None:
        pass


class _EpollWatcher:
    """The ports of one nameserver in an epoll set of their own, which the event loop watches as one fd.

    A port lives for three queries, so a sweep opens a socket every third query: registering each with the
    loop's selector (a SelectorKey, a Handle, two epoll_ctl calls) and running one callback per readable port
    cost more than the sends. Here a port costs one epoll_ctl (closing the socket removes it from the set),
    and one loop wake-up reads every port that has answers.
    """

    __slots__ = ("epoll", "loop", "ports")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.ports: dict[int, _UdpPort] = {}
        loop.add_reader(self.epoll.fileno(), self._ready)

    def watch(self, port: _UdpPort) -> None:
        self.epoll.register(port.fd, select.EPOLLIN)
        self.ports[port.fd] = port

    def unwatch(self, port: _UdpPort) -> None:
        self.ports.pop(port.fd, None)

    def _ready(self) -> None:
        ports = self.ports
        budget = READS_PER_TURN
        for fd, _events in self.epoll.poll(0):
            port = ports.get(fd)
            if port is not None and budget > 0:
                budget = port.read_ready(budget)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        self.ports.clear()


def _watcher(loop: asyncio.AbstractEventLoop) -> _Watcher:
    return _EpollWatcher(loop) if hasattr(select, "epoll") else _LoopWatcher(loop)


class _Exchange:
    """One UDP query on the wire: the question its answer must repeat, who to tell, and when it expires."""

    __slots__ = ("deadline", "done", "question")

    def __init__(self, question: bytes, done: _Done, deadline: float) -> None:
        self.question = question
        self.done = done
        self.deadline = deadline


class _UdpPort:
    """One UDP socket connected to one nameserver: a fresh, kernel-chosen random source port.

    It serves at most `limit` queries (`queries_per_port`), then is retired and closes once its last answer
    is in: an off-path spoofer must then guess the port as well as the 16-bit id, as with resolvers that
    randomise the port per query (RFC 5452 §9.2). Answers are matched to queries by id and question. Its watcher calls
    `read_ready`, which drains every waiting datagram, and each query is a callback, not a future awaited by
    a task: an answer (or a TimeoutError, or the socket's OSError) goes straight to its sender. One timer per
    port, for its earliest deadline, not one per query: asyncio's timer heap compares in Python.
    """

    __slots__ = ("closed", "fd", "limit", "loop", "open", "pending", "retired", "sock", "timer", "timer_at", "uses",
                 "watcher")  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: Nameserver,
        open_ports: set[_UdpPort],
        watcher: _Watcher,
        limit: int = QUERIES_PER_PORT,
    ) -> None:
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        # The C socket type, without socket.socket's Python wrapper (this code needs none of its extras), and
        # non-blocking from its creation: one system call fewer per port than setblocking(False).
        self.sock = socket.SocketType(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            self.sock.connect((server.host, server.port))
        except OSError:
            self.sock.close()
            raise
        self.loop = loop
        self.pending: dict[int, _Exchange] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.uses = 0
        self.limit = limit
        self.retired = False
        self.closed = False
        self.fd = self.sock.fileno()
        self.watcher = watcher
        watcher.watch(self)
        self.open = open_ports  # the client's set of open ports, so that closing the resolver closes them all
        open_ports.add(self)

    def start(self, prepared: _Prepared, wait: float, done: _Done) -> int:
        """Send one query; `done` gets the matching answer, TimeoutError after `wait`, or an OSError.

        A failed send raises here and `done` is never called. Returns the query id (for `forget`).
        """
        query_id = self.new_id()
        self.sock.send(query_id.to_bytes(2, "big") + prepared.body)
        deadline = self.loop.time() + wait
        self.pending[query_id] = _Exchange(prepared.question, done, deadline)
        if self.timer is None or deadline < self.timer_at:
            self._set_timer(deadline)
        self.uses += 1
        if self.uses >= self.limit:
            self.retired = True
        return query_id

    def forget(self, query_id: int) -> None:
        """Stop waiting for a query whose asker has gone (cancelled): its callback is never called."""
        self.pending.pop(query_id, None)
        self._close_if_spent()

    def _set_timer(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._expire)
        self.timer_at = when

    def _expire(self) -> None:
        self.timer = None
        # asyncio may run a timer up to its clock resolution early; a millisecond covers it.
        now = self.loop.time() + 0.001
        due = [(query_id, entry) for query_id, entry in self.pending.items() if entry.deadline <= now]
        for query_id, _entry in due:
            del self.pending[query_id]
        if self.pending:
            self._set_timer(min(entry.deadline for entry in self.pending.values()))
        self._close_if_spent()
        for _query_id, entry in due:
            entry.done(TimeoutError())

    def read_ready(self, budget: int | None = None) -> int:
        """Read at most `budget` waiting datagrams (READS_PER_TURN); the budget left. The socket stays readable
        for the rest: the next turn of the event loop reads them, after the callbacks that waited meanwhile."""
        recv = self.sock.recv
        pending = self.pending
        left = READS_PER_TURN if budget is None else budget
        while left > 0 and not self.closed:
            try:
                data = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                # ICMP port unreachable applies to the whole server, so every query to it has failed.
                self._fail_all(error)
                break
            left -= 1
            if len(data) < _HEADER:
                continue
            query_id = int.from_bytes(data[:2], "big")
            entry = pending.get(query_id)
            # A late or spoofed answer for another question must not complete this query. Only the name is
            # compared without case (0x20 mixing); the type and class bytes must match exactly.
            if entry is None or not _same_question(data, entry.question):
                continue
            del pending[query_id]
            self._close_if_spent()
            entry.done(data)
        return left

    def _close_if_spent(self) -> None:
        if not self.pending and self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.retired and not self.pending:
            self.close()

    def _fail_all(self, error: OSError) -> None:
        entries = list(self.pending.values())
        self.pending.clear()
        self.retired = True
        self._close_if_spent()
        for entry in entries:
            entry.done(error)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.retired = True
        self.open.discard(self)
        self.watcher.unwatch(self)
        self.sock.close()
        self._fail_all(ConnectionError("socket closed"))

    def new_id(self) -> int:
        while True:
            query_id = random.getrandbits(16)
            if query_id not in self.pending:
                return query_id


class _UdpClient:
    """The UDP side of one nameserver for one resolver and event loop: hands each query a port, rotating them."""

    __slots__ = ("current", "loop", "open", "per_port", "server", "watcher")

    def __init__(self, loop: asyncio.AbstractEventLoop, server: Nameserver, per_port: int | None = None) -> None:
        self.loop = loop
        self.server = server
        self.per_port = queries_per_port(server.host) if per_port is None else per_port
        self.current: _UdpPort | None = None
        self.open: set[_UdpPort] = set()
        self.watcher: _Watcher | None = None

    def start(self, prepared: _Prepared, wait: float, done: _Done) -> tuple[_UdpPort, int]:
        """Send one query on the current port (a new one when it is retired); raises OSError."""
        port = self.current
        if port is None or port.retired:
            if self.watcher is None:
                self.watcher = _watcher(self.loop)
            port = self.current = _UdpPort(self.loop, self.server, self.open, self.watcher, self.per_port)
        return port, port.start(prepared, wait, done)

    def close(self) -> None:
        for port in list(self.open):
            port.close()
        self.current = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None


def queries_per_port(host: str) -> int:
    """How many queries one source port serves for a nameserver at `host` (an address; a zone index is ignored)."""
    try:
        loopback = ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        loopback = False
    return LOOPBACK_QUERIES_PER_PORT if loopback else QUERIES_PER_PORT


def _same_question(data: bytes, question: bytes) -> bool:
    """The answer's question section is `question` (stored lower-case): the name without case, the rest exactly."""
    end = _HEADER + len(question)
    return data[_HEADER : end - 4].lower() == question[:-4] and data[end - 4 : end] == question[-4:]


class _Waiter(Protocol):
    """A query waiting for a slot: `start` (holding the slot) returns False when nothing went out."""

    deadline: float | None

    def start(self) -> bool: ...

    def expire(self) -> None:
        """The run's deadline passed while it waited: end it without sending (it holds no slot)."""


class _Limiter:
    """The limit on one resolver's queries on the wire, for one event loop.

    A counter and a queue of waiters instead of an asyncio.Semaphore: below the limit a query is sent at once,
    with no future and no wake-up; at the limit it waits in the queue and is started, already holding the
    freed slot, when another query ends. Urgent waiters (zone health probes that many checks wait for, and
    retries of queries already under way) go to the front. Waiters with a run deadline are swept out of the
    queue when it passes, so a never-sent query ends on time as `not sent`.
    """

    __slots__ = ("active", "loop", "size", "timers", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = size
        self.active = 0
        self.waiting: deque[_Waiter] = deque()
        self.timers: dict[float, asyncio.TimerHandle] = {}

    def start(self, waiter: _Waiter, urgent: bool = False) -> None:
        if self.active < self.size and not self.waiting:
            self.active += 1
            if not waiter.start():
                self.release()
            return
        if urgent:
            self.waiting.appendleft(waiter)
        else:
            self.waiting.append(waiter)
        deadline = waiter.deadline
        if deadline is not None:
            # Every check has its own deadline; one sweep per quarter second serves them all, each a scan of
            # the queue. A query is then ended up to 0.25 s after its deadline (never sent before it).
            sweep_at = math.ceil(deadline * SWEEPS_PER_SECOND) / SWEEPS_PER_SECOND
            if sweep_at not in self.timers:
                self.timers[sweep_at] = self.loop.call_at(sweep_at, self._sweep, sweep_at)

    def release(self) -> None:
        waiting = self.waiting
        while waiting:
            if waiting.popleft().start():
                return  # the slot passed to the next query
        self.active -= 1

    def _sweep(self, deadline: float) -> None:
        del self.timers[deadline]
        expired = [waiter for waiter in self.waiting if waiter.deadline is not None and waiter.deadline <= deadline]
        if not expired:
            return
        gone = set(map(id, expired))
        self.waiting = deque(waiter for waiter in self.waiting if id(waiter) not in gone)
        for waiter in expired:
            waiter.expire()


async def _tcp_exchange(server: Nameserver, prepared: _Prepared) -> bytes:
    """One query over TCP: the answer's wire form; raises OSError, IncompleteReadError or ValueError (no match)."""
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
    if answer[:2] != wire[:2] or not _same_question(answer, prepared.question):
        raise ValueError("TCP answer does not match the question")
    return answer
