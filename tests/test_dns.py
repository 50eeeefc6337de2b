"""checks.dns.resolver against a real local DNS server: every outcome, TC -> TCP, the TTL cache, answer matching."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest

from checks.dns import _transport
from checks.dns._resolution import _Resolution as Resolution
from checks.dns._resolution import _steps as steps
from checks.dns._wire import _parse_query, _prepare
from checks.dns.resolver import DnsAnswer, Nameserver, Outcome, Resolver, parse_nameserver
from tests.fixtures.dnsserver import DnsServer


def resolver_for(server: DnsServer, timeout: float = 2.0, **kwargs: object) -> Resolver:
    return Resolver([server.address], timeout=timeout, **kwargs)  # type: ignore[arg-type]


async def test_answer(dns_server: DnsServer) -> None:
    dns_server.add("host.example.test", "A", "192.0.2.7", ttl=120)
    answer = await resolver_for(dns_server).query("host.example.test", "A")
    assert answer.outcome == Outcome.ANSWER and answer.ok
    assert answer.records == ("192.0.2.7",)
    assert answer.ttl == 120
    assert answer.server == dns_server.address


async def test_nxdomain_and_nodata_are_distinct(dns_server: DnsServer) -> None:
    dns_server.add("host.example.test", "A", "192.0.2.7")
    resolver = resolver_for(dns_server)
    missing = await resolver.query("nope.example.test", "A")
    nodata = await resolver.query("host.example.test", "TXT")
    assert missing.outcome == Outcome.NXDOMAIN and missing.missing and not missing.failed
    assert nodata.outcome == Outcome.NODATA and nodata.missing
    assert missing.ttl > 0  # negative TTL read from the SOA in the authority section


@pytest.mark.parametrize(("behaviour", "outcome"), [("servfail", Outcome.SERVFAIL), ("refused", Outcome.REFUSED)])
async def test_failures(dns_server: DnsServer, behaviour: str, outcome: str) -> None:
    dns_server.set_behaviour("bad.example.test", behaviour)
    answer = await resolver_for(dns_server).query("bad.example.test", "A")
    assert answer.outcome == outcome and answer.failed and not answer.missing


async def test_timeout(dns_server: DnsServer) -> None:
    dns_server.set_behaviour("slow.example.test", "timeout")
    answer = await resolver_for(dns_server, timeout=0.4).query("slow.example.test", "A")
    assert answer.outcome == Outcome.TIMEOUT and answer.failed


async def test_network_error_is_error_or_timeout() -> None:
    # Nothing listens on this port: ICMP unreachable gives an error, or nothing at all a timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answer = await Resolver([f"127.0.0.1:{port}"], timeout=0.4).query("x.example.test", "A")
    assert answer.outcome in (Outcome.ERROR, Outcome.TIMEOUT)


async def test_invalid_name_is_error() -> None:
    answer = await Resolver(["127.0.0.1:9"], timeout=0.2).query("a..b", "A")
    assert answer.outcome == Outcome.ERROR and "invalid query" in answer.detail


async def test_truncated_answer_is_retried_over_tcp(dns_server: DnsServer) -> None:
    dns_server.add("big.example.test", "TXT", "x" * 200)
    dns_server.set_behaviour("big.example.test", "truncate")
    answer = await resolver_for(dns_server).query("big.example.test", "TXT")
    assert answer.ok and answer.via_tcp
    assert answer.texts() == ["x" * 200]
    assert dns_server.count("big.example.test", transport="tcp") == 1


async def test_ttl_cache(dns_server: DnsServer) -> None:
    dns_server.add("cached.example.test", "A", "192.0.2.1", ttl=60)
    dns_server.add("uncached.example.test", "A", "192.0.2.2", ttl=0)
    resolver = resolver_for(dns_server)
    for _ in range(3):
        assert (await resolver.query("cached.example.test")).records == ("192.0.2.1",)
        assert (await resolver.query("uncached.example.test")).records == ("192.0.2.2",)
    assert dns_server.count("cached.example.test") == 1
    assert dns_server.count("uncached.example.test") == 3
    assert resolver.cache_hits == 2


async def test_a_full_cache_forgets_its_oldest_entries_and_keeps_the_newest(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import checks.dns.resolver as resolver_module

    monkeypatch.setattr(resolver_module, "MAX_CACHE_ENTRIES", 8)
    for i in range(12):
        dns_server.add(f"n{i}.example.test", "A", "192.0.2.1", ttl=60)
    resolver = resolver_for(dns_server)
    for i in range(12):
        await resolver.query(f"n{i}.example.test")
    assert len(resolver._cache) <= 8
    dns_server.reset_counters()
    await resolver.query("n11.example.test")  # the newest is still cached
    await resolver.query("n0.example.test")  # the oldest was forgotten: asked again
    assert (dns_server.count("n11.example.test"), dns_server.count("n0.example.test")) == (0, 1)


async def test_failures_are_not_cached(dns_server: DnsServer) -> None:
    dns_server.set_behaviour("flaky.example.test", "servfail")
    resolver = resolver_for(dns_server)
    assert (await resolver.query("flaky.example.test")).outcome == Outcome.SERVFAIL
    dns_server.set_behaviour("flaky.example.test", None)
    dns_server.add("flaky.example.test", "A", "192.0.2.3")
    assert (await resolver.query("flaky.example.test")).ok


async def test_concurrent_identical_queries_are_sent_once(dns_server: DnsServer) -> None:
    dns_server.add("same.example.test", "A", "192.0.2.4")
    dns_server.delay = 0.05
    resolver = resolver_for(dns_server, cache=False)
    answers = await asyncio.gather(*(resolver.query("same.example.test") for _ in range(5)))
    assert {a.records for a in answers} == {("192.0.2.4",)}
    assert dns_server.count("same.example.test") == 1


async def test_cancelled_owner_does_not_cancel_joiners(dns_server: DnsServer) -> None:
    dns_server.add("shared.example.test", "A", "192.0.2.5")
    dns_server.delay = 0.2
    resolver = resolver_for(dns_server, cache=False)
    owner = asyncio.ensure_future(resolver.query("shared.example.test"))
    await asyncio.sleep(0.01)
    joiner = asyncio.ensure_future(resolver.query("shared.example.test"))
    await asyncio.sleep(0.01)
    owner.cancel()
    answer = await joiner
    assert answer.ok and answer.records == ("192.0.2.5",)


async def test_names_are_absolute(dns_server: DnsServer) -> None:
    dns_server.add("plain.example.test", "A", "192.0.2.6")
    resolver = resolver_for(dns_server)
    relative = await resolver.query("plain.example.test", "A")
    absolute = await resolver.query("PLAIN.Example.TEST.", "A")
    assert relative.name == absolute.name == "plain.example.test."
    assert dns_server.queries[0][0] == "plain.example.test"  # no search domain appended


def test_query_wire_matches_dnspython() -> None:
    parsed = _parse_query("5.113.0.203.zen.spamhaus.org", "A")
    assert not isinstance(parsed, str)
    text, wire_name, type_code = parsed
    assert text == "5.113.0.203.zen.spamhaus.org."
    message = dns.message.from_wire(b"\x12\x34" + _prepare(wire_name, type_code).body)
    assert message.question[0].name.to_text() == text
    assert message.edns == 0 and message.payload == 1232
    assert _parse_query("münchen.example", "A")[0] == "xn--mnchen-3ya.example."


class _Spoofer:
    """A UDP server that first answers for another question with the query's id, then answers correctly."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        wire, addr = self.sock.recvfrom(4096)
        query = dns.message.from_wire(wire)
        wrong = dns.message.make_query("other.example.test", "A")
        wrong.id = query.id
        spoof = dns.message.make_response(wrong)
        spoof.answer.append(dns.rrset.from_text("other.example.test.", 60, "IN", "A", "203.0.113.66"))
        self.sock.sendto(spoof.to_wire(), addr)
        real = dns.message.make_response(query)
        real.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.9"))
        self.sock.sendto(real.to_wire(), addr)

    def close(self) -> None:
        self.thread.join(2)
        self.sock.close()


async def test_answer_for_another_question_is_ignored() -> None:
    spoofer = _Spoofer()
    try:
        answer = await Resolver([f"127.0.0.1:{spoofer.port}"], timeout=2).query("real.example.test", "A")
    finally:
        spoofer.close()
    assert answer.ok and answer.records == ("192.0.2.9",)


def test_answer_helpers() -> None:
    answer = DnsAnswer("x.test.", "A", Outcome.SERVFAIL, server="127.0.0.1:53")
    assert answer.describe() == "SERVFAIL from 127.0.0.1:53"
    with pytest.raises(Exception, match="SERVFAIL"):
        answer.raise_for_failure()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", Nameserver("127.0.0.1", 53)),
        ("127.0.0.1:5353", Nameserver("127.0.0.1", 5353)),
        ("::1", Nameserver("::1", 53)),
        ("[::1]:5353", Nameserver("::1", 5353)),
        ("[2001:DB8::1]", Nameserver("2001:db8::1", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: Nameserver) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:0", "127.0.0.1:99999", "[::1", "[::1]x", "1.2.3.4:dns"])
def test_parse_nameserver_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)


def test_nameserver_str() -> None:
    assert str(Nameserver("::1", 5353)) == "[::1]:5353"
    assert str(Nameserver("127.0.0.1")) == "127.0.0.1:53"


def test_system_nameservers_come_from_resolv_conf(tmp_path: Path) -> None:
    from checks.dns.types import Nameserver, _system_nameservers

    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver bogus\n")
    assert _system_nameservers(str(conf)) == (Nameserver("192.0.2.53"), Nameserver("fe80::1"))
    assert _system_nameservers(str(tmp_path / "missing")) == (Nameserver("127.0.0.1"),)


async def test_queries_beyond_the_limit_wait_for_a_slot(dns_server: DnsServer) -> None:
    for i in range(12):
        dns_server.add(f"n{i}.limit.example.test", "A", f"192.0.2.{i + 1}")
    dns_server.delay = 0.02
    resolver = resolver_for(dns_server, cache=False, concurrency=3)
    started = [resolver.submit(f"n{i}.limit.example.test") for i in range(12)]
    assert resolver.in_flight() == (3, 9)
    abandoned = started[5]
    assert isinstance(abandoned, asyncio.Future)
    abandoned.cancel()  # cancelled while queued: it must never be sent, and must not keep a slot
    answers = [await s if isinstance(s, asyncio.Future) else s for i, s in enumerate(started) if i != 5]
    assert [a.records for a in answers] == [(f"192.0.2.{i + 1}",) for i in range(12) if i != 5]
    assert dns_server.count("n5.limit.example.test") == 0
    assert resolver.in_flight() == (0, 0)


async def test_timeout_then_retry_through_the_slow_path(dns_server: DnsServer) -> None:
    dns_server.add("late.example.test", "A", "192.0.2.8")
    dns_server.set_behaviour("late.example.test", "timeout")
    resolver = resolver_for(dns_server, timeout=0.4, cache=False)
    answer = await resolver.query("late.example.test")
    assert answer.outcome == Outcome.TIMEOUT
    assert resolver.sent == 2  # the first try by callbacks, the second by the retry task


@pytest.mark.parametrize(("rdtype", "value"), [("HTTPS", '1 . alpn="h2"'), ("TYPE90", r"\# 2 abcd")])
async def test_types_above_64_match_their_answer(dns_server: DnsServer, rdtype: str, value: str) -> None:
    # The question's type bytes must be compared as they are: lower-casing 65-90 turned them into 97-122.
    dns_server.add("svc.example.test", rdtype, value)
    dns_server.add("svc.example.test", "A", "192.0.2.10")
    resolver = resolver_for(dns_server, timeout=1.0, cache=False)
    answer = await resolver.query("svc.example.test", rdtype)
    assert answer.outcome == Outcome.ANSWER and len(answer.records) == 1
    nodata = await resolver.query("svc.example.test", "TYPE66")
    assert nodata.outcome == Outcome.NODATA
    assert resolver.sent == 2  # each answered at its first try, no retry


async def test_concurrency_is_per_resolver(dns_server: DnsServer) -> None:
    dns_server.add("c.example.test", "A", "192.0.2.11")
    dns_server.delay = 0.05
    narrow = resolver_for(dns_server, cache=False, concurrency=2)
    wide = resolver_for(dns_server, cache=False, concurrency=5)
    pending = [narrow.submit(f"n{i}.c.example.test") for i in range(8)]
    pending += [wide.submit(f"w{i}.c.example.test") for i in range(8)]
    assert narrow.in_flight() == (2, 6)
    assert wide.in_flight() == (5, 3)  # the second Resolver's limit is its own, not the first one's
    answers = [await p if isinstance(p, asyncio.Future) else p for p in pending]
    assert all(a.outcome == Outcome.NXDOMAIN for a in answers)
    with pytest.raises(ValueError):
        Resolver(["127.0.0.1:53"], concurrency=0)


async def test_a_remote_nameserver_gets_a_fresh_source_port_every_few_queries(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fixture listens on loopback; the policy for any other address is what this sweep must see.
    monkeypatch.setattr(_transport, "queries_per_port", lambda host: _transport.QUERIES_PER_PORT)
    resolver = resolver_for(dns_server, cache=False)
    answers = await resolver.query_many(f"{i}.sweep.example.test" for i in range(1000))
    assert all(a.outcome == Outcome.NXDOMAIN for a in answers)
    assert len(dns_server.udp_ports) >= 1000  # more if a loaded machine made some retry
    assert len(set(dns_server.udp_ports)) >= 256, "an off-path spoofer must guess the port as well as the id"


async def test_a_loopback_nameserver_keeps_its_port(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server, cache=False)
    answers = await resolver.query_many(f"{i}.sweep.example.test" for i in range(1000))
    assert all(a.outcome == Outcome.NXDOMAIN for a in answers)
    assert len(set(dns_server.udp_ports)) == 1  # nobody off this host can send on loopback


@pytest.mark.parametrize(
    ("host", "per_port"),
    [("127.0.0.1", _transport.LOOPBACK_QUERIES_PER_PORT), ("127.53.0.9", _transport.LOOPBACK_QUERIES_PER_PORT),
     ("::1", _transport.LOOPBACK_QUERIES_PER_PORT), ("192.0.2.53", _transport.QUERIES_PER_PORT),
     ("fe80::1%eth0", _transport.QUERIES_PER_PORT),
     ("2001:db8::53", _transport.QUERIES_PER_PORT), ("resolver.example", _transport.QUERIES_PER_PORT)],
)  # fmt: skip
def test_only_loopback_addresses_keep_a_port(host: str, per_port: int) -> None:
    assert _transport.queries_per_port(host) == per_port


@pytest.mark.parametrize("watcher", ["epoll", "loop"])
async def test_every_port_is_read_and_closed_with_either_watcher(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, watcher: str
) -> None:
    # The event loop's own add_reader serves where select.epoll does not exist (macOS, the BSDs).
    if watcher == "loop":
        monkeypatch.setattr(_transport, "_watcher", _transport._LoopWatcher)
    dns_server.add("listed.example.test", "A", "127.0.0.2")
    resolver = resolver_for(dns_server, cache=False)
    names = [f"{i}.sweep.example.test" if i % 10 else "listed.example.test" for i in range(300)]
    answers = await resolver.query_many(names)
    assert [a.outcome for a in answers] == [Outcome.NXDOMAIN if i % 10 else Outcome.ANSWER for i in range(300)]
    client = next(iter(resolver._state(asyncio.get_running_loop()).clients.values()))
    assert isinstance(client.watcher, _transport._LoopWatcher if watcher == "loop" else _transport._EpollWatcher)
    assert len(client.open) <= 1  # every retired port closed once its answers were in
    resolver.close()
    assert not client.open and client.watcher is None


@pytest.mark.parametrize("watcher", ["epoll", "loop"])
async def test_answers_past_a_wake_ups_budget_are_read_at_the_next(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, watcher: str
) -> None:
    # Two answers a wake-up: the rest stay in the socket (still readable), and each later turn reads two more.
    monkeypatch.setattr(_transport, "READS_PER_TURN", 2)
    if watcher == "loop":
        monkeypatch.setattr(_transport, "_watcher", _transport._LoopWatcher)
    dns_server.add("listed.example.test", "A", "127.0.0.2")
    resolver = resolver_for(dns_server, cache=False)
    names = [f"{i}.sweep.example.test" if i % 10 else "listed.example.test" for i in range(300)]
    answers = await resolver.query_many(names)
    assert [a.outcome for a in answers] == [Outcome.NXDOMAIN if i % 10 else Outcome.ANSWER for i in range(300)]
    resolver.close()


async def test_trace_keeps_every_try_with_its_server_and_outcome(dns_server: DnsServer) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers: a timeout, not ICMP
    silent.bind(("127.0.0.1", 0))
    try:
        dns_server.set_behaviour("t.example.test", "servfail")
        silent_address = f"127.0.0.1:{silent.getsockname()[1]}"
        resolver = Resolver([dns_server.address, silent_address], timeout=0.4, cache=False)
        answer = await resolver.query("t.example.test")
    finally:
        silent.close()
    tries = [(t.server, t.transport, t.outcome) for t in answer.trace]
    assert tries == [
        (dns_server.address, "udp", Outcome.SERVFAIL),  # SERVFAIL drops the server for this query
        (silent_address, "udp", Outcome.TIMEOUT),
        (silent_address, "udp", Outcome.TIMEOUT),  # a timeout keeps it for the second round
    ]
    assert answer.outcome == Outcome.TIMEOUT and answer.server == silent_address
    assert all(t.elapsed >= 0.09 for t in answer.trace[1:])  # each try waited 0.4 / (2 x 2) s from its send
    assert answer.to_json()["trace"][0] == {
        "server": dns_server.address, "transport": "udp", "outcome": "servfail",
        "elapsed": answer.trace[0].elapsed,
    }  # fmt: skip


async def test_truncation_is_in_the_trace(dns_server: DnsServer) -> None:
    dns_server.add("big2.example.test", "TXT", "y" * 300)
    dns_server.set_behaviour("big2.example.test", "truncate")
    answer = await resolver_for(dns_server).query("big2.example.test", "TXT")
    assert answer.ok and [(t.transport, t.outcome) for t in answer.trace] == [("udp", "truncated"), ("tcp", "answer")]


async def test_a_queue_deeper_than_the_limit_is_answered_not_timed_out(dns_server: DnsServer) -> None:
    # 40 queries, 4 in flight, 100 ms per answer: the last is sent after ~1 s, later than the 0.8 s timeout.
    # Its timeout counts from its send, so it is answered; nothing that waited in the queue times out.
    dns_server.delay = 0.1
    resolver = resolver_for(dns_server, timeout=0.8, cache=False, concurrency=4)
    started = asyncio.get_running_loop().time()
    answers = await resolver.query_many(f"{i}.deep.example.test" for i in range(40))
    assert asyncio.get_running_loop().time() - started > 0.8  # the queue outlasted the timeout
    assert [a.outcome for a in answers] == [Outcome.NXDOMAIN] * 40
    assert dns_server.count() >= 40


async def test_queries_queued_past_the_run_deadline_are_not_sent_not_timeouts(dns_server: DnsServer) -> None:
    from checks.dns.resolver import run_deadline

    dns_server.delay = 0.1
    resolver = resolver_for(dns_server, timeout=2.0, cache=False, concurrency=4)
    with run_deadline(0.25):
        started = [resolver.submit(f"{i}.late.example.test") for i in range(40)]
    answers = [await s if isinstance(s, asyncio.Future) else s for s in started]
    outcomes = [a.outcome for a in answers]
    assert Outcome.TIMEOUT not in outcomes
    answered = outcomes.count(Outcome.NXDOMAIN)
    assert 4 <= answered < 40 and outcomes == [Outcome.NXDOMAIN] * answered + [Outcome.NOT_SENT] * (40 - answered)
    assert dns_server.count() == answered  # the others really never left the queue
    unsent = answers[-1]
    assert unsent.failed and unsent.describe() == "not sent: the run's deadline passed"
    assert resolver.in_flight() == (0, 0)


# The decisions alone, without sockets: checks.dns._resolution.


def _plan(servers: int = 2, timeout: float = 4.0) -> tuple[Resolution, list[Nameserver]]:
    nameservers = [Nameserver(f"192.0.2.{i + 1}") for i in range(servers)]
    return Resolution("q.test.", "A", steps(tuple(nameservers), timeout)), nameservers


def _got(outcome: str, server: Nameserver) -> DnsAnswer:
    return DnsAnswer("q.test.", "A", outcome, server=str(server))


def test_resolution_timeouts_go_round_the_servers_twice() -> None:
    plan, (one, two) = _plan()
    step: Any = plan.first()
    order = []
    while step is not None:
        order.append((step.server, step.tcp, step.wait))
        plan.record(step, _got(Outcome.TIMEOUT, step.server), step.wait)
        step = plan.next()
    assert order == [(one, False, 1.0), (two, False, 1.0), (one, False, 1.0), (two, False, 1.0)]
    result = plan.result()
    assert result.outcome == Outcome.TIMEOUT and len(result.trace) == 4


def test_resolution_servfail_and_refused_drop_a_server_for_the_query() -> None:
    plan, (one, two) = _plan()
    plan.record(plan.first(), _got(Outcome.SERVFAIL, one), 0.01)
    step = plan.next()
    assert step is not None and step.server == two
    plan.record(step, _got(Outcome.TIMEOUT, two), 1.0)
    step = plan.next()
    assert step is not None and step.server == two  # round two skips the dropped server
    plan.record(step, _got(Outcome.REFUSED, two), 0.01)
    assert plan.next() is None
    assert [t.outcome for t in plan.result().trace] == [Outcome.SERVFAIL, Outcome.TIMEOUT, Outcome.REFUSED]


def test_resolution_truncated_goes_to_tcp_on_the_same_server() -> None:
    plan, (one, _two) = _plan()
    plan.record(plan.first(), None, 0.01)
    step = plan.next()
    assert step is not None and step.tcp and step.server == one
    plan.record(step, _got(Outcome.ANSWER, one), 0.02)
    assert plan.next() is None
    assert [(t.transport, t.outcome) for t in plan.result().trace] == [("udp", "truncated"), ("tcp", "answer")]


def test_resolution_first_answer_wins_and_needs_no_trace() -> None:
    plan, (one, _two) = _plan()
    plan.record(plan.first(), _got(Outcome.NXDOMAIN, one), 0.01)
    assert plan.next() is None
    assert plan.result().outcome == Outcome.NXDOMAIN and plan.result().trace == ()


def test_resolution_deadline_stops_new_tries() -> None:
    plan, (one, _two) = _plan()
    assert plan.result().outcome == Outcome.NOT_SENT  # nothing sent yet
    plan.record(plan.first(), _got(Outcome.TIMEOUT, one), 1.0)
    assert plan.next(deadline_passed=True) is None
    assert plan.result().outcome == Outcome.TIMEOUT  # it was sent: a real timeout, with its trace


def _in_fresh_python(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def test_importing_the_resolver_loads_no_importlib_metadata() -> None:
    # dnspython probes idna's version when dns.name is imported; through importlib.metadata that is ~35 ms.
    code = (
        "import sys, checks.dns.resolver, dns.name, dns._features as f\n"
        "print('email.message' in sys.modules, 'zipfile' in sys.modules, f.have('idna'))"
    )
    assert _in_fresh_python(code) == "False False " + _in_fresh_python(
        "import dns._features as f; print(f.have('idna'))"
    )


def test_importlib_metadata_still_works_after_the_resolver() -> None:
    probe = (
        "import dns._features as f\n"
        "from importlib.metadata import version\n"
        "import importlib.metadata as m\n"
        "print(version('dnspython') == m.version('dnspython'), f.have('dnssec'), f.have('doh'), f.have('trio'))"
    )
    assert _in_fresh_python("import checks.dns.resolver\n" + probe) == _in_fresh_python(probe)


async def test_a_answers_read_off_the_wire_match_dnspython(dns_server: DnsServer) -> None:
    dns_server.add("two.example.test", "A", "127.0.0.2", ttl=90)
    dns_server.add("two.example.test", "A", "127.0.0.4", ttl=90)
    dns_server.add("alias.example.test", "CNAME", "two.example.test.")
    resolver = resolver_for(dns_server, cache=False)
    plain = await resolver.query("two.example.test")
    assert sorted(plain.records) == ["127.0.0.2", "127.0.0.4"] and plain.ttl == 90
    assert sorted(rd.to_text() for rd in plain.rdata) == ["127.0.0.2", "127.0.0.4"]
    aliased = await resolver.query("alias.example.test")  # a CNAME in the answer: dnspython parses it
    assert sorted(aliased.records) == ["127.0.0.2", "127.0.0.4"] and aliased.cnames == ("two.example.test.",)


def test_a_answer_reader_leaves_anything_unusual_to_dnspython() -> None:
    from checks.dns._wire import _plain_a_answer

    query = dns.message.make_query("x.example.test", "A")
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("x.example.test.", 30, "IN", "A", "127.0.0.2"))
    wire = response.to_wire()
    assert _plain_a_answer(wire, 1) == (("127.0.0.2",), 30)
    assert _plain_a_answer(wire[:-2], 1) is None  # cut short
    assert _plain_a_answer(wire, 2) is None  # claims a record that is not there
    response.answer[0] = dns.rrset.from_text("x.example.test.", 30, "IN", "TXT", '"v"')
    assert _plain_a_answer(response.to_wire(), 1) is None  # not an A record


@pytest.mark.parametrize("address", ["203.0.113.5", "2001:db8::1", "::ffff:127.0.0.1", "fe80::1:2"])
def test_reverse_pointer_matches_dnspython(address: str) -> None:
    import dns.reversename

    from checks.dns.resolver import reverse_pointer

    expected = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    assert reverse_pointer(address) == expected.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")


@pytest.mark.parametrize(
    "text", ["0.0.0.0", "255.255.255.255", "01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", "\u0661.2.3.4", "1..3.4",
             " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4", "1.2.3.0004", "1.2.3.-4", ""],
)  # fmt: skip
def test_reverse_pointer_takes_and_refuses_what_ipaddress_does(text: str) -> None:
    import ipaddress

    from checks.dns.resolver import reverse_pointer

    try:
        expected = ipaddress.ip_address(text).reverse_pointer.removesuffix(".in-addr.arpa")
    except ValueError:
        with pytest.raises(ValueError):
            reverse_pointer(text)
        return
    assert reverse_pointer(text) == expected


def test_the_cheap_negative_answer_is_the_same_value() -> None:
    from dataclasses import fields

    made = DnsAnswer("x.test.", "A", Outcome.NXDOMAIN, ttl=60, authenticated=True, server="s:53", via_tcp=False)
    cheap = DnsAnswer._negative("x.test.", "A", Outcome.NXDOMAIN, 60, True, "s:53", False)
    assert cheap == made and repr(cheap) == repr(made) and hash(cheap) == hash(made)
    assert set(vars(cheap)) == {f.name for f in fields(DnsAnswer)}  # every field, none forgotten
    with pytest.raises(AttributeError):
        cheap.ttl = 0  # type: ignore[misc]  # still frozen


def test_said_is_describe_in_the_operators_language() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    failed = DnsAnswer("x.test.", "A", Outcome.SERVFAIL, server="127.0.0.1:53")
    empty = DnsAnswer("x.test.", "MX", Outcome.NODATA)
    timed_out = DnsAnswer("x.test.", "TXT", Outcome.TIMEOUT, server="127.0.0.1:53")
    assert failed.said() == failed.describe() == "SERVFAIL from 127.0.0.1:53"
    with use_language("es"):
        assert failed.said() == "SERVFAIL desde 127.0.0.1:53"
        assert empty.said() == "sin registro MX"
        assert timed_out.said() == "tiempo agotado desde 127.0.0.1:53"
        assert empty.describe() == "no MX record"  # evidence and logs keep the English
