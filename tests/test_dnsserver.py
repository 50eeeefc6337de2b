"""The local DNS server fixture, checked with dnspython's own stub queries over UDP and TCP."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.shared import RFC7208_SUITE

CONFORMANCE = RFC7208_SUITE


def ask(
    server: DnsServer, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 2.0, **kw: object
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=timeout)


def texts(response: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in response.answer for rr in rrset]


def test_a_answer_echoes_question_id_and_flags(dns_server: DnsServer) -> None:
    dns_server.add("mx1.example.test", "A", "192.0.2.1")
    query = dns.message.make_query("MX1.Example.test", "A")
    response = dns.query.udp(query, dns_server.host, port=dns_server.port, timeout=2)
    assert response.id == query.id
    assert response.question == query.question
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.RD and response.flags & dns.flags.RA
    assert texts(response) == ["192.0.2.1"]
    assert dns_server.queries == [("mx1.example.test", "A", "udp")]


def test_rd_is_copied_not_invented(dns_server: DnsServer) -> None:
    query = dns.message.make_query("a.example.test", "A")
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, dns_server.host, port=dns_server.port, timeout=2)
    assert not response.flags & dns.flags.RD


def test_txt_keeps_strings_separate(dns_server: DnsServer) -> None:
    dns_server.add("multi.example.test", "TXT", '"v=spf1 ip4:192.0.2.0/24" " -all"')
    dns_server.add("plain.example.test", "TXT", "v=spf1 -all")
    (rrset,) = ask(dns_server, "multi.example.test", "TXT").answer
    assert rrset[0].strings == (b"v=spf1 ip4:192.0.2.0/24", b" -all")
    (rrset,) = ask(dns_server, "plain.example.test", "TXT").answer
    assert rrset[0].strings == (b"v=spf1 -all",)


def test_nxdomain_and_nodata_carry_a_soa(dns_server: DnsServer) -> None:
    dns_server.add("host.sub.example.test", "A", "192.0.2.1")
    missing = ask(dns_server, "nothere.example.test")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    nodata = ask(dns_server, "host.sub.example.test", "AAAA")
    empty_non_terminal = ask(dns_server, "sub.example.test")
    for response in (missing, nodata, empty_non_terminal):
        assert not response.answer
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa[0].minimum == 60
    assert nodata.rcode() == dns.rcode.NOERROR
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize(("behaviour", "rcode"), [("servfail", dns.rcode.SERVFAIL), ("refused", dns.rcode.REFUSED)])
def test_error_behaviours(dns_server: DnsServer, behaviour: str, rcode: dns.rcode.Rcode) -> None:
    dns_server.add("bl.example.test", "A", "127.0.0.2")
    dns_server.set_behaviour("bl.example.test", behaviour)
    for tcp in (False, True):
        response = ask(dns_server, "bl.example.test", tcp=tcp)
        assert response.rcode() == rcode and not response.answer
    dns_server.set_behaviour("bl.example.test", None)
    assert texts(ask(dns_server, "bl.example.test")) == ["127.0.0.2"]


def test_timeout_never_answers_on_either_transport(dns_server: DnsServer) -> None:
    dns_server.set_behaviour("*.dead.test", "timeout")
    for tcp in (False, True):
        with pytest.raises(dns.exception.Timeout):
            ask(dns_server, "2.0.0.127.dead.test", tcp=tcp, timeout=0.3)
    assert ask(dns_server, "dead.test").rcode() == dns.rcode.NXDOMAIN
    assert dns_server.count("2.0.0.127.dead.test") == 2


def test_truncate_behaviour_then_tcp(dns_server: DnsServer) -> None:
    dns_server.add("big.example.test", "A", "192.0.2.1")
    dns_server.set_behaviour("big.example.test", "truncate")
    udp = ask(dns_server, "big.example.test")
    assert udp.flags & dns.flags.TC and not udp.answer
    assert texts(ask(dns_server, "big.example.test", tcp=True)) == ["192.0.2.1"]


def test_oversized_answer_truncates_by_payload_size(dns_server: DnsServer) -> None:
    for i in range(40):
        dns_server.add("fat.example.test", "TXT", f'"record {i:02d} {"x" * 40}"')
    plain = ask(dns_server, "fat.example.test", "TXT")
    assert plain.flags & dns.flags.TC and not plain.answer
    big_edns = ask(dns_server, "fat.example.test", "TXT", use_edns=0, payload=4096)
    assert not big_edns.flags & dns.flags.TC and len(big_edns.answer[0]) == 40
    assert big_edns.edns == 0 and big_edns.payload == 4096
    response, used_tcp = dns.query.udp_with_fallback(
        dns.message.make_query("fat.example.test", "TXT"), dns_server.host, port=dns_server.port, timeout=2
    )
    assert used_tcp and len(response.answer[0]) == 40
    assert dns_server.count("fat.example.test", transport="tcp") == 1


def test_wildcard_answers_below_but_not_at_the_parent(dns_server: DnsServer) -> None:
    dns_server.add("*.dead.test", "A", "127.0.0.2")
    dns_server.add("real.dead.test", "TXT", "here")
    response = ask(dns_server, "4.3.2.1.dead.test")
    assert texts(response) == ["127.0.0.2"]
    assert response.answer[0].name == dns.name.from_text("4.3.2.1.dead.test")
    assert ask(dns_server, "real.dead.test").answer == []  # an existing name is not wildcarded
    assert ask(dns_server, "dead.test").answer == []


def test_cname_chain_is_followed(dns_server: DnsServer) -> None:
    dns_server.add("www.example.test", "CNAME", "edge.example.test.")
    dns_server.add("edge.example.test", "CNAME", "host.cdn.test.")
    dns_server.add("host.cdn.test", "A", "192.0.2.7")
    response = ask(dns_server, "www.example.test")
    assert [(r.name.to_text(), r.rdtype) for r in response.answer] == [
        ("www.example.test.", dns.rdatatype.CNAME),
        ("edge.example.test.", dns.rdatatype.CNAME),
        ("host.cdn.test.", dns.rdatatype.A),
    ]
    dns_server.add("loop.example.test", "CNAME", "loop.example.test.")
    assert ask(dns_server, "loop.example.test").rcode() == dns.rcode.SERVFAIL
    dns_server.add("dangling.example.test", "CNAME", "gone.example.test.")
    dangling = ask(dns_server, "dangling.example.test")
    assert dangling.rcode() == dns.rcode.NXDOMAIN and len(dangling.answer) == 1


def test_ad_bit_for_authenticated_suffixes(dns_server: DnsServer) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.other.test", "TXT", "v=DMARC1; p=none")
    dns_server.set_authenticated("example.test")
    assert ask(dns_server, "_dmarc.example.test", "TXT").flags & dns.flags.AD
    assert not ask(dns_server, "_dmarc.other.test", "TXT").flags & dns.flags.AD


async def test_delay_does_not_serialise(dns_server: DnsServer) -> None:
    dns_server.delay = 0.2
    dns_server.add("slow.example.test", "A", "192.0.2.9")

    async def one(i: int) -> dns.message.Message:
        query = dns.message.make_query(f"n{i}.example.test" if i % 2 else "slow.example.test", "A")
        return await dns.asyncquery.udp(query, dns_server.host, port=dns_server.port, timeout=2)

    started = time.monotonic()
    responses = await asyncio.gather(*(one(i) for i in range(50)))
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.6
    assert sum(r.rcode() == dns.rcode.NXDOMAIN for r in responses) == 25


def test_runtime_mutation(dns_server: DnsServer) -> None:
    assert ask(dns_server, "2.0.0.127.zen.example.test").rcode() == dns.rcode.NXDOMAIN
    dns_server.add("2.0.0.127.zen.example.test", "A", "127.0.0.2")
    dns_server.add("2.0.0.127.zen.example.test", "TXT", "listed")
    assert texts(ask(dns_server, "2.0.0.127.zen.example.test")) == ["127.0.0.2"]
    dns_server.remove("2.0.0.127.zen.example.test", "A")
    assert ask(dns_server, "2.0.0.127.zen.example.test").rcode() == dns.rcode.NOERROR
    dns_server.remove("2.0.0.127.zen.example.test")
    assert ask(dns_server, "2.0.0.127.zen.example.test").rcode() == dns.rcode.NXDOMAIN
    dns_server.add("x.example.test", "A", "192.0.2.1")
    dns_server.clear()
    assert ask(dns_server, "x.example.test").rcode() == dns.rcode.NXDOMAIN
    assert len(dns_server.queries) == 5
    dns_server.reset_counters()
    assert dns_server.queries == []


def test_malformed_packets_do_not_kill_the_server(dns_server: DnsServer) -> None:
    dns_server.add("ok.example.test", "A", "192.0.2.1")
    query = dns.message.make_query("ok.example.test", "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        sock.sendto(b"\x12\x34\x01", (dns_server.host, dns_server.port))  # shorter than a header: ignored
        sock.sendto(query[:14], (dns_server.host, dns_server.port))  # cut in the question: FORMERR
        reply = sock.recv(512)
    assert reply[:2] == query[:2] and reply[3] & 0x0F == dns.rcode.FORMERR
    with socket.create_connection((dns_server.host, dns_server.port), timeout=1) as conn:
        conn.sendall(b"\x00\x03abc")  # a framed but unparsable message on TCP
        conn.sendall(len(query).to_bytes(2, "big") + query)
        conn.recv(2048)
    assert texts(ask(dns_server, "ok.example.test")) == ["192.0.2.1"]


def test_load_openspf_zonedata(dns_server: DnsServer) -> None:
    dns_server.load(
        {
            "example.net": ["TIMEOUT"],
            "spftimeout.example.net": [{"TXT": "v=spf1 -all"}, "TIMEOUT"],
            "spfonly.example.net": [{"SPF": "v=spf1 -all"}, {"TXT": "NONE"}],
            "auto.example.net": [{"SPF": "v=spf1 mx"}, {"MX": [0, "mail.example.net"]}],
            "split.example.net": [{"TXT": ["v=spf1 ip4:", "192.0.2.5 -all"]}, {"SPF": []}],
            "hosed.example.net": [{"SPF": "v=spf1 a:\xef\xbb\xbfgarbage.example.net -all"}],
            "macro%percent  space%20url-space.example.net": [{"A": "192.0.2.1"}],
            "1.2.0.192.in-addr.arpa": [{"PTR": "mail.example.net"}, {"PTR": "Other.example.net."}],
        }
    )
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, "example.net", "TXT", timeout=0.3)
    assert texts(ask(dns_server, "spftimeout.example.net", "TXT")) == ['"v=spf1 -all"']
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, "spftimeout.example.net", "SPF", timeout=0.3)
    assert ask(dns_server, "spfonly.example.net", "TXT").answer == []
    assert texts(ask(dns_server, "auto.example.net", "TXT")) == ['"v=spf1 mx"']
    assert texts(ask(dns_server, "auto.example.net", "MX")) == ["0 mail.example.net."]
    (txt,) = ask(dns_server, "split.example.net", "TXT").answer
    assert txt[0].strings == (b"v=spf1 ip4:", b"192.0.2.5 -all")
    (spf,) = ask(dns_server, "split.example.net", "SPF").answer
    assert spf[0].strings == (b"",)  # "no strings" is illegal on the wire; one empty string stands in
    (hosed,) = ask(dns_server, "hosed.example.net", "TXT").answer
    assert hosed[0].strings == ("v=spf1 a:\xef\xbb\xbfgarbage.example.net -all".encode(),)
    weird = dns.name.Name([b"macro%percent  space%20url-space", b"example", b"net", b""])
    response = dns.query.udp(dns.message.make_query(weird, "A"), dns_server.host, port=dns_server.port, timeout=2)
    assert texts(response) == ["192.0.2.1"]
    assert texts(ask(dns_server, "1.2.0.192.in-addr.arpa", "PTR")) == ["mail.example.net.", "Other.example.net."]


def test_load_the_whole_conformance_suite(dns_server: DnsServer) -> None:
    import yaml

    assert CONFORMANCE.exists(), f"the RFC 7208 suite is missing at {CONFORMANCE}"
    answered = 0
    for document in yaml.safe_load_all(CONFORMANCE.read_text(encoding="utf-8")):
        dns_server.clear()
        dns_server.load(document["zonedata"])
        for name in document["zonedata"]:
            qname = dns.name.Name([label.encode() for label in name.rstrip(".").split(".")] + [b""])
            query = dns.message.make_query(qname, "TXT")
            try:
                dns.query.udp(query, dns_server.host, port=dns_server.port, timeout=0.1)
            except dns.exception.Timeout:
                continue
            answered += 1
    assert answered > 200
    dns_server.add("alive.example.test", "A", "192.0.2.1")
    assert texts(ask(dns_server, "alive.example.test")) == ["192.0.2.1"]


def test_tcp_pipelining_and_same_port(dns_server: DnsServer) -> None:
    dns_server.add("p.example.test", "A", "192.0.2.1")
    queries = [dns.message.make_query("p.example.test", "A") for _ in range(3)]
    with socket.create_connection((dns_server.host, dns_server.port), timeout=2) as conn:
        conn.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries)))
        ids = set()
        for _ in queries:
            response, _ = dns.query.receive_tcp(conn, time.time() + 2)
            ids.add(response.id)
    assert ids == {q.id for q in queries}


def test_command_line_server(tmp_path: Path) -> None:
    zone = tmp_path / "zone.json"
    zone.write_text(
        json.dumps(
            {
                "records": [["2.0.0.127.bl.example.test", "A", "127.0.0.2"], ["t.example.test", "TXT", "hi", 60]],
                "behaviours": {"*.down.test": "servfail"},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.dnsserver", "--port", "0", "--zone", str(zone)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        ready, address = proc.stdout.readline().split()
        assert ready == "READY"
        host, port = address.rsplit(":", 1)
        server = DnsServer(host, int(port))  # not started: only its address is used
        assert texts(ask(server, "2.0.0.127.bl.example.test")) == ["127.0.0.2"]
        assert ask(server, "t.example.test", "TXT").answer[0].ttl == 60
        assert ask(server, "x.down.test", tcp=True).rcode() == dns.rcode.SERVFAIL
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


def test_start_stop_lifecycle() -> None:
    server = DnsServer()
    assert server.port == 0
    with server:
        assert server.port != 0 and server.address == f"127.0.0.1:{server.port}"
        port = server.port
    with pytest.raises(RuntimeError):
        server.start()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # both sockets were released


def test_session_fixture_is_shared(dns_server_session: DnsServer) -> None:
    dns_server_session.clear()
    dns_server_session.add("s.example.test", "A", "192.0.2.3")
    assert texts(ask(dns_server_session, "s.example.test")) == ["192.0.2.3"]
    dns_server_session.clear()
