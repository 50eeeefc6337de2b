"""Target parsing and the Finding/Report model."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks import Finding, Report, Status, Target, TargetError, TargetKind, parse_target, worst_status


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("203.0.113.5", TargetKind.IPV4, "203.0.113.5"),
        ("2001:DB8::1", TargetKind.IPV6, "2001:db8::1"),
        ("[2001:db8::1]", TargetKind.IPV6, "2001:db8::1"),
        ("::ffff:192.0.2.1", TargetKind.IPV4, "192.0.2.1"),
        ("Example.ORG.", TargetKind.DOMAIN, "example.org"),
        ("  mail.example.org  ", TargetKind.DOMAIN, "mail.example.org"),
        ("bücher.de", TargetKind.DOMAIN, "xn--bcher-kva.de"),
        ("XN--BCHER-KVA.de", TargetKind.DOMAIN, "xn--bcher-kva.de"),
        ("faß.de", TargetKind.DOMAIN, "xn--fa-hia.de"),  # IDNA 2008 keeps ß; IDNA 2003 would give fass.de
    ],
)
def test_valid_targets_are_normalised(text: str, kind: TargetKind, value: str) -> None:
    target = parse_target(text)
    assert (target.kind, target.value) == (kind, value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("999.1.1.1", "not a valid IPv4"),
        ("1.2.3", "last label is a number"),
        ("-x", "single label"),
        ("a..b", "empty label"),
        (".example.org", "empty label"),
        ("a" * 300, "too long"),
        ("a." + "b" * 64 + ".org", "label of 64"),
        (".".join(["abcdefghi"] * 26), "too long"),
        ("exa mple.com", "not allowed"),
        ("under_score.example", "not allowed"),
        ("-lead.example.org", "hyphen"),
        ("", "empty"),
        ("2001:db8::zz", "IPv6"),
        ("xn--zz.example", "internationalised"),
        ("fe80::1%eth0", "zone id"),
        ("[fe80::1%25]", "zone id"),
        ("1.2.3.4%eth0", "not allowed"),
    ],
)
def test_invalid_targets_say_why(text: str, reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        parse_target(text)


@given(st.ip_addresses())
def test_every_ip_round_trips(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    target = parse_target(str(address))
    assert target.is_ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        assert target.value == str(address.ipv4_mapped)
    else:
        assert ipaddress.ip_address(target.value) == address


LABEL = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=63)


@given(st.lists(LABEL, min_size=1, max_size=4), st.sampled_from(["org", "example", "de"]))
def test_ascii_domains_are_lowercased_and_stable(labels: list[str], tld: str) -> None:
    text = ".".join([*labels, tld])
    if len(text) > 253:
        with pytest.raises(TargetError):
            parse_target(text)
        return
    target = parse_target(text + ".")
    assert target.kind is TargetKind.DOMAIN
    assert target.value == text.lower()
    assert parse_target(target.value) == target  # normalising twice changes nothing


@given(st.text(max_size=300))
def test_any_text_is_a_target_or_a_clear_error(text: str) -> None:
    try:
        target = parse_target(text)
    except TargetError as error:
        assert str(error)
        assert "\n" not in str(error)
    else:
        assert target.value == target.value.strip().lower()
        if not target.is_ip:
            assert len(target.value) <= 253
            assert all(0 < len(label) <= 63 for label in target.value.split("."))


def _finding(status: Status) -> Finding:
    return Finding("dnsbl", "zone.example", status, "summary")


@pytest.mark.parametrize(
    ("statuses", "worst"),
    [
        ([Status.OK, Status.UNKNOWN], Status.UNKNOWN),
        ([Status.UNKNOWN, Status.WARN], Status.WARN),
        ([Status.WARN, Status.FAIL, Status.OK], Status.FAIL),
        ([Status.OK, Status.OK], Status.OK),
        ([], Status.UNKNOWN),
    ],
)
def test_report_status_is_the_worst_and_unknown_never_ok(statuses: list[Status], worst: Status) -> None:
    report = Report(Target(TargetKind.DOMAIN, "example.org"), tuple(_finding(s) for s in statuses))
    assert report.status is worst
    assert worst_status(statuses) is worst


def test_report_json_shape() -> None:
    finding = Finding("dnsbl", "zen.example", Status.FAIL, "listed", {"answers": ["127.0.0.2"], "txt": []}, "delist")
    data = Report(parse_target("192.0.2.1"), (finding,)).to_json()
    assert data["kind"] == "ip"
    assert data["status"] == "fail"
    assert data["findings"][0]["evidence"] == {"answers": ["127.0.0.2"], "txt": []}
    assert set(data["findings"][0]) >= {"check", "subject", "status", "summary", "evidence", "advice"}


def test_exit_codes_follow_nagios() -> None:
    assert [s.exit_code for s in (Status.OK, Status.WARN, Status.FAIL, Status.UNKNOWN)] == [0, 1, 2, 3]
