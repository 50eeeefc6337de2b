"""The UDP and TCP transport of checks.dns.resolver, and the process-wide limit on queries in flight."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import weakref
from collections import deque
from collections.abc import Callable
from typing import ClassVar

from checks.dns._wire import _HEADER, _Prepared
from checks.dns.types import Nameserver

DEFAULT_CONCURRENCY = 200
UDP_RECEIVE_BUFFER = 1 << 20


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
    if answer[:2] != wire[:2] or answer[_HEADER : _HEADER + len(prepared.question)].lower() != prepared.question:
        raise ValueError("TCP answer does not match the question")
    return answer
