"""The SPF lint against a real local DNS server: findings, the include tree, and bad input that must not crash."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from checks.context import CheckContext
from checks.dns.resolver import Resolver
from checks.model import Finding, Status, parse_target
from checks.spf.evaluator import check_host
from checks.spf.lint import build_tree, check, render_tree
from tests.fixtures.dnsserver import DnsServer

DOMAIN = "example.org"


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer() as dns:
        yield dns


@pytest.fixture
async def resolver(server: DnsServer) -> AsyncIterator[Resolver]:
    resolver = Resolver([server.address], timeout=0.5, cache=False)
    yield resolver
    resolver.close()


async def lint(resolver: Resolver, *ips: str, domain: str = DOMAIN) -> list[Finding]:
    ctx = CheckContext(resolver, timeout=0.5, sending_ips=ips, helo_names=("mail.example.org",))
    return await check(parse_target(domain), ctx)


def by_code(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.code: finding for finding in findings}


def txt(server: DnsServer, name: str, text: str) -> None:
    server.add(name, "TXT", text)


async def test_missing_record_fails_with_a_starter_record(server: DnsServer, resolver: Resolver) -> None:
    server.add(DOMAIN, "A", "192.0.2.1")
    codes = by_code(await lint(resolver, "192.0.2.10"))
    assert codes["missing"].status is Status.FAIL
    assert "v=spf1 mx ip4:192.0.2.10 -all" in codes["missing"].advice
    assert codes["sending-ip-not-authorized"].status is Status.FAIL


async def test_good_record_is_ok_and_sending_ip_passes(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all")
    txt(server, "_spf.example.net", "v=spf1 ip6:2001:db8::/32 -all")
    findings = await lint(resolver, "192.0.2.10", "2001:db8::25")
    assert {f.status for f in findings} == {Status.OK}
    codes = by_code(findings)
    assert codes["lookups"].evidence["lookups"] == 1
    [passing] = [f for f in findings if f.code == "sending-ip-pass"]  # one finding for both IPs
    assert passing.summary == f"all 2 sending IPs pass SPF for {DOMAIN}" and passing.subject == "sending IPs"
    tree = codes["record"].evidence["tree"]
    assert tree["children"][0]["domain"] == "_spf.example.net"
    assert "include:_spf.example.net" in codes["record"].evidence["tree_text"]


async def test_sending_ip_not_authorized_gets_the_record_to_publish(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 ip4:192.0.2.0/24 ~all")
    finding = by_code(await lint(resolver, "198.51.100.7"))["sending-ip-not-authorized"]
    assert finding.status is Status.FAIL
    assert finding.evidence["result"] == "softfail"
    assert "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.7 ~all" in finding.advice


async def test_many_sending_ips_give_one_finding_per_domain_naming_the_failing_ones(
    server: DnsServer, resolver: Resolver
) -> None:
    # 256 monitored IPs (a /24) of which the record authorises the first 200: one finding, not 256.
    txt(server, DOMAIN, "v=spf1 ip4:192.0.2.0/25 ip4:192.0.2.128/26 ip4:192.0.2.192/29 -all")
    ips = [f"192.0.2.{host}" for host in range(256)]
    findings = await lint(resolver, *ips)
    [sending] = [f for f in findings if f.check == "spf" and f.subject == "sending IPs"]
    assert len(findings) == len({(f.check, f.subject, f.code) for f in findings})
    assert sending.status is Status.FAIL and sending.code == "sending-ip-not-authorized"
    failing = [f"192.0.2.{host}" for host in range(200, 256)]
    assert sending.evidence["failing"] == failing and sending.evidence["ips"] == 256
    assert sending.summary.startswith(f"56 of 256 sending IPs do not pass SPF for {DOMAIN} (fail): 192.0.2.200, ")
    assert sending.summary.endswith("192.0.2.209 and 46 more")
    assert sending.advice.startswith("Add ip4:192.0.2.200 ip4:192.0.2.201 ")


async def test_a_domains_own_sending_ips_are_the_ones_checked(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 ip4:192.0.2.1 -all")
    ctx = CheckContext(
        resolver,
        timeout=0.5,
        sending_ips=("192.0.2.1", "198.51.100.9"),  # the second sends for another domain only
        domain_sending_ips={DOMAIN: ("192.0.2.1",)},
    )
    [sending] = [f for f in await check(parse_target(DOMAIN), ctx) if f.subject == "sending IPs"]
    assert sending.status is Status.OK and sending.summary == f"192.0.2.1 passes SPF for {DOMAIN} (ip4:192.0.2.1)"


async def test_multiple_records(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 -all")
    txt(server, DOMAIN, "v=spf1 mx -all")
    codes = by_code(await lint(resolver, "192.0.2.1"))
    assert codes["multiple-records"].status is Status.FAIL
    assert codes["sending-ip-not-authorized"].evidence["result"] == "permerror"


async def test_plus_all_neutral_all_and_ptr(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 ptr include:open.example.net ?all")
    txt(server, "open.example.net", "v=spf1 +all")
    codes = by_code(await lint(resolver))
    assert codes["plus-all"].status is Status.FAIL and codes["plus-all"].subject == "open.example.net"
    assert codes["neutral-all"].status is Status.WARN
    assert codes["ptr"].status is Status.WARN


async def test_no_all(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 ip4:192.0.2.1")
    assert by_code(await lint(resolver))["no-all"].advice.endswith("v=spf1 ip4:192.0.2.1 -all")


async def test_two_hop_loop_is_found_and_repeat_include_is_not_a_loop(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 include:a.example.net include:c.example.net include:c.example.net -all")
    txt(server, "a.example.net", "v=spf1 include:b.example.net -all")
    txt(server, "b.example.net", "v=spf1 include:a.example.net -all")
    txt(server, "c.example.net", "v=spf1 ip4:192.0.2.1 -all")
    findings = await lint(resolver, "192.0.2.1")
    loops = [f for f in findings if f.code == "loop"]
    assert len(loops) == 1
    assert "a.example.net -> b.example.net -> a.example.net" in loops[0].summary
    assert "c.example.net" not in loops[0].summary
    assert by_code(findings)["sending-ip-not-authorized"].evidence["result"] == "permerror"


async def test_same_include_twice_is_fine(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 include:c.example.net include:c.example.net -all")
    txt(server, "c.example.net", "v=spf1 ip4:192.0.2.1 -all")
    findings = await lint(resolver, "192.0.2.1")
    assert "loop" not in by_code(findings)
    assert by_code(findings)["lookups"].evidence["lookups"] == 2


async def test_lookup_counts_per_branch_and_limits(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 a mx include:big.example.net -all")
    txt(server, "big.example.net", "v=spf1 a a a a a include:deep.example.net -all")
    txt(server, "deep.example.net", "v=spf1 exists:%{i}.bl.example.net -all")
    for name in (DOMAIN, "big.example.net"):
        server.add(name, "A", "192.0.2.1")
    server.add(DOMAIN, "MX", "10 mail.example.org.")
    tree = await build_tree(DOMAIN, resolver)
    assert tree.total_lookups == 10
    assert tree.children[0].total_lookups == 7
    assert tree.children[0].children[0].dynamic == ["%{i}.bl.example.net"]
    text = render_tree(tree)
    assert "include:big.example.net [7 lookups" in text and "include:deep.example.net [1 lookup," in text
    codes = by_code(await lint(resolver))
    assert codes["lookups-near-limit"].status is Status.WARN
    assert codes["lookups-near-limit"].evidence["per_include"] == {"include:big.example.net": 8}


async def test_void_lookups(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 a:gone1.example.org a:gone2.example.org mx:gone3.example.org -all")
    codes = by_code(await lint(resolver, "192.0.2.1"))
    assert codes["too-many-void-lookups"].status is Status.FAIL
    assert len(codes["too-many-void-lookups"].evidence["void_lookups"]) == 3
    assert codes["sending-ip-not-authorized"].evidence["result"] == "permerror"


async def test_syntax_error_and_include_without_record(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 include:nospf.example.net include:broken.example.net -all")
    txt(server, "nospf.example.net", "some other text")
    txt(server, "broken.example.net", "v=spf1 ip4:192.0.2.300 -all")
    codes = by_code(await lint(resolver))
    assert codes["include-none"].subject == "nospf.example.net"
    assert codes["syntax-error"].subject == "broken.example.net"


async def test_thirty_includes(server: DnsServer, resolver: Resolver) -> None:
    includes = " ".join(f"include:i{n}.example.net" for n in range(30))
    txt(server, DOMAIN, f"v=spf1 {includes} -all")
    for n in range(30):
        txt(server, f"i{n}.example.net", f"v=spf1 ip4:198.51.100.{n} -all")
    codes = by_code(await lint(resolver, "198.51.100.29"))
    assert codes["too-many-lookups"].evidence["lookups"] == 30
    assert codes["sending-ip-not-authorized"].evidence["result"] == "permerror"


async def test_split_255_character_strings(server: DnsServer, resolver: Resolver) -> None:
    ips = " ".join(f"ip4:198.51.{n}.0/24" for n in range(40))
    record = f"v=spf1 {ips} -all"
    assert len(record) > 600
    server.add(DOMAIN, "TXT", " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255)))
    findings = await lint(resolver, "198.51.39.7")
    codes = by_code(findings)
    assert codes["record"].evidence["record"] == record
    assert codes["sending-ip-pass"].status is Status.OK


@pytest.mark.parametrize(
    "garbage",
    [
        "v=spf1 \x00\x01 include:",
        "v=spf1 a:%{z} mx/99 ip4:1.2.3 ip6:zz:: redirect= exp=",
        "v=spf1 " + "include:" * 40,
        "v=spf1 %%%{ -all",
        "v=spf1 redirect=example.org",
        "v=SPF1 include:" + "a" * 300 + ".example.net -all",
        "v=spf1 exists:%{l}.%{o}.%{d}.%{i}.%{h}",
    ],
)
async def test_garbage_gives_findings_not_exceptions(server: DnsServer, resolver: Resolver, garbage: str) -> None:
    txt(server, DOMAIN, garbage)
    findings = await lint(resolver, "192.0.2.1", "not-an-ip")
    assert findings and all(f.check == "spf" for f in findings)
    assert not [query for query in server.queries if "%{" in query[0]]


async def test_dns_failure_is_unknown(server: DnsServer, resolver: Resolver) -> None:
    server.set_behaviour(DOMAIN, "servfail")
    codes = by_code(await lint(resolver, "192.0.2.1"))
    assert codes["dns-failed"].status is Status.UNKNOWN
    assert codes["sending-ip-unknown"].status is Status.UNKNOWN


async def test_check_host_json_and_trace(server: DnsServer, resolver: Resolver) -> None:
    txt(server, DOMAIN, "v=spf1 include:_spf.example.org -all")
    txt(server, "_spf.example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    result = await check_host("192.0.2.5", DOMAIN, f"alice@{DOMAIN}", resolver=resolver)
    data = result.to_json()
    assert list(data) == ["result", "explanation", "lookups", "void_lookups", "trace"]
    assert data["result"] == "pass" and data["lookups"] == 1 and data["void_lookups"] == 0
    assert "include:_spf.example.org -> pass" in data["trace"]
    assert any("ip4:192.0.2.0/24 matched" in step for step in data["trace"])


async def test_summaries_and_advice_in_the_operators_language(server: DnsServer, resolver: Resolver) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    txt(server, DOMAIN, "v=spf1 ptr include:open.example.net ?all")
    txt(server, "open.example.net", "v=spf1 +all")
    with use_language("es"):
        codes = by_code(await lint(resolver))
    plus = codes["plus-all"]
    assert (
        plus.summary
        == f"+all (alcanzado por include desde {DOMAIN}): cualquier servidor de internet puede enviar como {DOMAIN}"
    )
    assert plus.advice == "Sustituye +all por -all: v=spf1 -all"
    assert codes["lookups"].summary == "2 consultas DNS de las 10 permitidas"
    assert codes["lookups"].evidence["lookups"] == 2  # evidence keeps its values, not words
