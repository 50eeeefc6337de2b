"""The DNS wire form, without dnspython on the common path: query building, answer interpretation, negative TTL.

A query's wire form is prepared once and reused with only the id changed; negative answers are read from the
12-byte header plus the SOA in the authority section, without building a message object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A

from checks.dns.types import DnsAnswer, Outcome

if TYPE_CHECKING:
    import dns.message

EDNS_PAYLOAD = 1232
_SOA = 6
_A = 1
_A_IN = b"\x00\x01\x00\x01"  # type A, class IN
_HEADER = 12
# The rcodes as plain ints: dns.rcode's are enum members, slower to look up and compare per answer.
_NOERROR, _SERVFAIL, _NXDOMAIN, _REFUSED = (int(code) for code in (dns.rcode.NOERROR, dns.rcode.SERVFAIL,
                                                                   dns.rcode.NXDOMAIN, dns.rcode.REFUSED))  # fmt: skip
_LENGTH_BYTE = [bytes((size,)) for size in range(64)]


class _Prepared(NamedTuple):
    """A query's wire form after the 2-byte id, and its question section (name lower-cased) to match answers.

    A NamedTuple, not a frozen dataclass: one is made per query, and a dataclass's frozen __init__ costs more.
    """

    body: bytes
    question: bytes


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
    labels = text.encode("ascii").split(b".")
    labels.pop()  # the empty label after the final dot
    sizes = list(map(len, labels))
    if not labels or min(sizes) == 0 or max(sizes) > 63:
        return None
    wire = b"".join([_LENGTH_BYTE[size] + label for size, label in zip(sizes, labels, strict=True)]) + b"\x00"
    return (text, wire) if len(wire) <= 255 else None


def _prepare(wire_name: bytes, type_code: int) -> _Prepared:
    question = wire_name + type_code.to_bytes(2, "big") + _CLASS_IN
    return _Prepared(_QUERY_HEADER + question + _OPT, question)


def _interpret(wire: bytes, name: str, rdtype: str, type_code: int, server: str, via_tcp: bool) -> DnsAnswer:
    rcode = wire[3] & 0x0F
    authenticated = bool(wire[3] & 0x20)
    answer_count = int.from_bytes(wire[6:8], "big")
    if rcode in (_NXDOMAIN, _NOERROR) and answer_count == 0:
        outcome = Outcome.NXDOMAIN if rcode == _NXDOMAIN else Outcome.NODATA
        ttl = _negative_ttl(wire)
        return DnsAnswer._negative(name, rdtype, outcome, ttl, authenticated, server, via_tcp)
    if rcode == _SERVFAIL:
        return DnsAnswer(name, rdtype, Outcome.SERVFAIL, server=server, via_tcp=via_tcp)
    if rcode == _REFUSED:
        return DnsAnswer(name, rdtype, Outcome.REFUSED, server=server, via_tcp=via_tcp)
    if rcode not in (_NOERROR, _NXDOMAIN):
        detail = f"rcode {dns.rcode.to_text(dns.rcode.Rcode.make(rcode))}"
        return DnsAnswer(name, rdtype, Outcome.ERROR, server=server, via_tcp=via_tcp, detail=detail)
    fast = _plain_a_answer(wire, answer_count) if type_code == _A and rcode == _NOERROR else None
    if fast is not None:
        records, ttl = fast
        rdata = tuple(dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, record) for record in records)  # type: ignore[no-untyped-call]
        return DnsAnswer(name, rdtype, Outcome.ANSWER, records=records, ttl=ttl, authenticated=authenticated,
                         server=server, via_tcp=via_tcp, rdata=rdata)  # fmt: skip
    # Imported on the first answer that is more than plain A records or a negative one (~10 ms at start).
    from dns.message import from_wire

    try:
        message = from_wire(wire, ignore_trailing=True)
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


def _plain_a_answer(wire: bytes, count: int) -> tuple[tuple[str, ...], int] | None:
    """(addresses, TTL) of an answer section of IN A records only (a blocklist's listing), read off the wire.

    Anything else (a CNAME, another type, a bad length, a short message) is None: dnspython parses it.
    Addresses keep their order, without repeats, as dnspython's rrset does.
    """
    try:
        offset = _skip_name(wire, _HEADER) + 4
        addresses: dict[str, None] = {}
        ttl: int | None = None
        for _ in range(count):
            offset = _skip_name(wire, offset)
            if wire[offset : offset + 4] != _A_IN or wire[offset + 8 : offset + 10] != b"\x00\x04":
                return None
            record_ttl = int.from_bytes(wire[offset + 4 : offset + 8], "big")
            ttl = record_ttl if ttl is None else min(ttl, record_ttl)
            address = wire[offset + 10 : offset + 14]
            if len(address) != 4:
                return None
            addresses["%d.%d.%d.%d" % tuple(address)] = None  # noqa: UP031  (the fastest way here)
            offset += 14
    except IndexError:
        return None
    return (tuple(addresses), ttl) if ttl is not None else None


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
