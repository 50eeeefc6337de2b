"""DMARC aggregate and TLS-RPT parsing against real reports (tests/data/reports/SOURCES.md) and broken ones."""

from __future__ import annotations

import gzip
import io
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from checks.model import Finding
from checks.reports import DmarcReport, Limits, TlsReport, read_bytes, read_paths
from checks.reports.store import ReportStore

DATA = Path(__file__).parent / "data" / "reports"
SAMPLES = DATA / "parsedmarc" / "samples"
AGG = SAMPLES / "aggregate"
OURS = DATA / "ours"


def _one(path: Path) -> DmarcReport | TlsReport:
    extracted = read_bytes(path.read_bytes(), str(path))
    assert len(extracted.reports) == 1, extracted.problems
    return extracted.reports[0]


def _utc(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


# file, provider, reporter, report id, policy domain, begin, end, records, messages
DMARC_EXPECTED = [
    ("protection.outlook.com!example.com!1711756800!1711843200.xml", "microsoft", "Outlook.com",
     "cfeafefe4129445e8c81018bd9177197", "example.com", 1711756800, 1711843200, 1, 1),
    ("Report_domain-_borschow.com_Submitter-_google.com_Report-ID-_949348866075514174.eml", "google", "google.com",
     "949348866075514174", "borschow.com", 1549929600, 1550015999, 1, 1),
    ("twilight.eml", "google", "google.com", "1627703331531660819", "twlnet.com", 1549756800, 1549843199, 1, 1),
    ("fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz", "fastmail", "FastMail Pty Ltd",
     "102675056", "indemed.com", 1516060800, 1516147199, 1, 1),
    ("mimecast-weird-gzip.eml", "mimecast", "Mimecast",
     "157a5fe30ec76f4bc0d8bccfc96c118a167a1280fee7c7465af5115e73082e5e", "ab.id.au", 1693353600, 1693439999, 1, 1),
    ("estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip", "xyz corporation",
     "XYZ Corporation", "2940", "example.com", 1536853302, 1536939702, 1, 1),
    ("!large-example.com!1711897200!1711983600.xml", "accurateplastics.com", "accurateplastics.com",
     "example.com:1711897200", "example.com", 1711897200, 1711983600, 2286, 2286),
    ("old_draft_from_wiki.xml", "acme.com", "acme.com", "9391651994964116463", "example.com",
     1335571200, 1335657599, 1, 2),
    ("rfc9990-example.net!example.com!1700000000!1700086399.xml", "example.net", "example.net",
     "dmarcbis-test-report-001", "example.com", 1700000000, 1700086399, 2, 7),
    ("rfc9990-sample.xml", "sample reporter", "Sample Reporter", "3v98abbp8ya9n3va8yr8oa3ya", "example.com",
     302832000, 302918399, 1, 123),
    ("usssa.com!example.com!1538784000!1538870399.xml", "usssa.com", "usssa.com", None, "example.com",
     1538784000, 1538870399, 2, 2),
    ("empty_reason.xml", "example.org", "example.org", "20240125141224705995", "example.com",
     1706159544, 1706185733, 1, 2),
]  # fmt: skip


@pytest.mark.parametrize("row", DMARC_EXPECTED, ids=[row[0][:40] for row in DMARC_EXPECTED])
def test_real_aggregate_reports(row: tuple[object, ...]) -> None:
    name, provider, reporter, report_id, domain, begin, end, records, messages = row
    report = _one(AGG / str(name))
    assert isinstance(report, DmarcReport)
    assert (report.provider, report.reporter, report.policy_domain) == (provider, reporter, domain)
    if report_id is not None:
        assert report.report_id == report_id
    assert (report.begin, report.end) == (_utc(int(begin)), _utc(int(end)))  # type: ignore[call-overload]
    assert (len(report.records), report.messages) == (records, messages)


def test_outlook_record_and_json_shape() -> None:
    report = _one(AGG / "protection.outlook.com!example.com!1711756800!1711843200.xml")
    data = report.to_json()
    assert (data["kind"], data["begin"], data["end"]) == ("dmarc", "2024-03-30T00:00:00Z", "2024-03-31T00:00:00Z")
    record = data["records"][0]
    assert {k: record[k] for k in ("source_ip", "count", "disposition", "dkim", "spf", "header_from")} == {
        "source_ip": "100.24.188.149", "count": 1, "disposition": "none", "dkim": "fail", "spf": "fail",
        "header_from": "example.com",
    }  # fmt: skip
    assert record["auth_results"]["spf"] == [{"domain": "example.com", "scope": "mfrom", "result": "fail"}]


def test_rfc9990_fields() -> None:
    report = _one(AGG / "rfc9990-sample.xml")
    assert isinstance(report, DmarcReport)
    assert report.schema == "rfc9990" and report.generator == "Example DMARC Aggregate Reporter v1.2"
    policy = report.policy
    assert (policy.p, policy.sp, policy.np, policy.testing, policy.discovery_method) == (
        "quarantine", "none", "none", "n", "treewalk",
    )  # fmt: skip
    assert policy.pct is None
    assert report.records[0].disposition == "pass" and report.records[0].dkim_results[0].selector == "abc123"
    bis = _one(AGG / "rfc9990-example.net!example.com!1700000000!1700086399.xml")
    assert isinstance(bis, DmarcReport) and bis.schema == "rfc9990" and bis.policy.np == "reject"
    assert [r.disposition for r in bis.records] == ["none", "reject"]
    assert bis.records[1].reasons == ("other: sender not authorized",)


def test_old_draft_and_the_three_wrappings_of_one_report() -> None:
    draft = _one(AGG / "old_draft_from_wiki.xml")
    assert isinstance(draft, DmarcReport) and draft.schema == "draft"
    same = [_one(SAMPLES / "extract_report" / n) for n in ("nice-input.xml", "nice-input.xml.gz", "nice-input.xml.zip")]
    assert all(isinstance(r, DmarcReport) for r in same)
    dmarc = [r for r in same if isinstance(r, DmarcReport)]
    assert {(r.report_id, len(r.records), r.messages) for r in dmarc} == {("11038226378739404135", 20, 3047)}


TLS_EXPECTED = [
    ("rfc8460.json", "Company-X", "company-y.example", "sts", 5326, 303,
     [("certificate-expired", "mx1.mail.company-y.example", 100),
      ("starttls-not-supported", "mx2.mail.company-y.example", 200),
      ("validation-failure", "mx-backup.mail.company-y.example", 3)]),
    ("mail.ru.json", "Mail.ru", "example.com", "sts", 0, 1,
     [("sts-policy-fetch-error", "", 1), ("sts-policy-fetch-error", "", 1)]),
    ("smtp_tls.json", "Example Inc.", "example.com", "sts", 0, 3,
     [("validation-failure", "example.com", 2), ("validation-failure", "example.com", 1)]),
    ("google.com_smtp_tls_report.eml", "Google Inc.", "cardinalhealth.ca", "no-policy-found", 48, 0, []),
]  # fmt: skip


@pytest.mark.parametrize("row", TLS_EXPECTED, ids=[row[0] for row in TLS_EXPECTED])
def test_real_tls_reports(row: tuple[object, ...]) -> None:
    name, reporter, domain, kind, ok, failed, failures = row
    report = _one(SAMPLES / "smtp_tls" / str(name))
    assert isinstance(report, TlsReport) and report.reporter == reporter
    policy = report.policies[0]
    assert (policy.policy_domain, policy.policy_type, policy.successful, policy.failed) == (domain, kind, ok, failed)
    assert [(f.result_type, f.receiving_mx_hostname, f.count) for f in policy.failures] == failures
    shape = report.to_json()["policies"][0]
    assert set(shape) >= {"policy_type", "policy_domain", "successful", "failed", "failures"}


def test_yahoo_shaped_report() -> None:
    report = _one(OURS / "yahoo.com!example.org!1764547200!1764633599.xml")
    assert isinstance(report, DmarcReport) and report.provider == "yahoo"
    assert [(r.source_ip, r.count, r.disposition, r.passed) for r in report.records] == [
        ("192.0.2.25", 40, "none", True), ("203.0.113.66", 12, "quarantine", False),
    ]  # fmt: skip


# file, severity, words in the error; each a problem, never an exception
BROKEN = [
    (SAMPLES / "empty.xml", "error", "empty file"),
    (AGG / "invalid_xml.xml", "error", "not valid XML"),
    (AGG / "invalid_utf_8.xml", "warning", "not valid UTF-8 at byte 706"),
    (SAMPLES / "aggregate_invalid" / "report_with_upper_cased_pass.xml", "warning", "upper-cased values (None, Pass)"),
    (SAMPLES / "aggregate_invalid" / "report_with_upper_cased_pass.xml", "warning", "covers 97 hours"),
    (AGG / "ikea.com!example.de!1538690400!1538776800.xml", "warning", "read the <feedback> element"),
    (OURS / "no_policy.xml", "error", "no <policy_published>"),
    (OURS / "unknown_namespace.xml", "error", "unknown namespace 'urn:example:not-dmarc'"),
    (OURS / "bad_count.xml", "error", "count 'many' is not a whole number"),
    (OURS / "backwards_range.xml", "error", "before it begins"),
    (OURS / "billion_laughs.xml", "error", "entities are not allowed"),
    (OURS / "tlsrpt_negative_count.json", "error", "total-successful-session-count '-4' is not a count"),
    (OURS / "tlsrpt_truncated.json", "error", "not valid JSON"),
]


@pytest.mark.parametrize("path, severity, words", BROKEN, ids=[f"{p.name[:30]}-{w[:12]}" for p, _, w in BROKEN])
def test_broken_reports_are_problems(path: Path, severity: str, words: str) -> None:
    extracted = read_bytes(path.read_bytes(), str(path))
    matching = [p for p in extracted.problems if words in p.error]
    assert matching, extracted.problems
    assert matching[0].severity == severity and matching[0].source == str(path)
    assert len(extracted.reports) == (1 if severity == "warning" else 0)


def test_upper_cased_values_are_read_in_lower_case() -> None:
    report = _one(SAMPLES / "aggregate_invalid" / "report_with_upper_cased_pass.xml")
    assert isinstance(report, DmarcReport)
    assert (report.records[0].disposition, report.records[0].dkim, report.records[0].passed) == ("none", "pass", True)


def test_bombs_and_caps() -> None:
    limits = Limits(max_bytes=200_000, max_records=1000)
    gz_bomb = gzip.compress(b"<" + b" " * 5_000_000)
    assert "larger than 200000 bytes once decompressed" in read_bytes(gz_bomb, "g", limits).problems[0].error
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.xml", b" " * 5_000_000)
    assert read_bytes(buffer.getvalue(), "z", limits).problems[0].code == "too-large"
    big = (AGG / "!large-example.com!1711897200!1711983600.xml").read_bytes()
    problem = read_bytes(big, "big", Limits(max_records=1000)).problems[0]
    assert problem.code == "too-many-records" and "2286 records" in problem.error
    assert read_bytes(gzip.compress(big)[:-20], "cut", Limits()).problems[0].code == "gzip"


def test_a_failure_report_is_noted_not_counted() -> None:
    path = SAMPLES / "failure" / "dmarc_ruf_report_linkedin.eml"
    extracted = read_bytes(path.read_bytes(), str(path))
    assert extracted.reports == ()
    assert [(p.severity, p.code) for p in extracted.problems] == [("warning", "failure-report")]


def test_a_message_without_a_report_is_a_problem() -> None:
    raw = b"From: someone@example.net\r\nSubject: hello\r\nContent-Type: text/plain\r\n\r\njust words\r\n"
    problems = read_bytes(raw, "m", Limits()).problems
    assert problems[0].code == "empty" and "hello" in problems[0].error


def test_a_whole_folder_streams_with_every_file_accounted_for(tmp_path: Path) -> None:
    results = list(read_paths([SAMPLES, OURS]))
    files = [p for p in (*SAMPLES.rglob("*"), *OURS.rglob("*")) if p.is_file()]
    assert len(results) == len(files)
    assert all(r.reports or r.problems for r in results)  # nothing silently dropped


def test_store_is_idempotent_and_answers_counts(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "reports.sqlite3")
    outlook = _one(AGG / "protection.outlook.com!example.com!1711756800!1711843200.xml")
    yahoo = _one(OURS / "yahoo.com!example.org!1764547200!1764633599.xml")
    assert store.add(outlook) and store.add(yahoo)
    assert not store.add(outlook) and not store.add(_one(OURS / "yahoo.com!example.org!1764547200!1764633599.xml"))
    day = yahoo.day
    counts = store.counts("yahoo", day)
    assert (counts.messages, counts.dmarc_pass, counts.dmarc_fail, counts.quarantined, counts.reports) == (
        52,
        40,
        12,
        12,
        1,
    )
    assert store.counts("yahoo", day, "192.0.2.25").messages == 40
    assert store.counts("microsoft", date(2024, 3, 30)).messages == 1
    assert store.counts("google", day).messages == 0
    store.close()
    again = ReportStore(tmp_path / "reports.sqlite3")  # a restart: the file is the truth
    assert again.report_count() == 2 and again.has("Yahoo", "1764610326.531297")


def test_inline_reports_in_a_message_body() -> None:
    xml = (OURS / "yahoo.com!example.org!1764547200!1764633599.xml").read_bytes()
    tls = (SAMPLES / "smtp_tls" / "rfc8460.json").read_bytes()
    for kind, body in (("text/xml", xml), ("text/plain", tls)):
        raw = f"From: r@example.net\r\nSubject: report\r\nContent-Type: {kind}\r\n\r\n".encode() + body
        extracted = read_bytes(raw, "inline", Limits())
        assert len(extracted.reports) == 1 and not extracted.problems, extracted.problems


def test_sources_that_cannot_be_checked_are_unknown_not_spoofers() -> None:
    from checks.model import Status
    from checks.reports.findings import source_findings
    from checks.reports.sources import SourceVerdict
    from checks.reports.store import DmarcRow

    day = date(2026, 11, 30)
    now = datetime(2026, 12, 1, tzinfo=UTC)

    def row(ip: str, count: int) -> DmarcRow:
        return DmarcRow(
            "google", "google.com", "r1", "example.org", day, ip, "example.org", "reject", "fail", "fail", count
        )

    blind = {"198.51.100.9": SourceVerdict("198.51.100.9", False, "SPF of example.org: temperror", decided=False)}
    [unknown] = source_findings([row("198.51.100.9", 5)], blind, ["example.org"], 7, now)
    assert unknown.status is Status.UNKNOWN and "cannot tell whether 1 sources" in unknown.summary
    spoofer = {"203.0.113.66": SourceVerdict("203.0.113.66", False, "not in your IPs, MX, helo hosts or SPF")}
    [warn] = source_findings([row("198.51.100.9", 5), row("203.0.113.66", 42)], {**blind, **spoofer}, [], 7, now)
    assert warn.status is Status.WARN and warn.summary.startswith("1 unknown sources sent 42 messages")
    assert "1 more could not be checked (SPF of example.org: temperror)" in warn.summary


def test_a_byte_order_mark_and_a_one_line_document() -> None:
    xml = (AGG / "protection.outlook.com!example.com!1711756800!1711843200.xml").read_bytes()
    one_line = b"\xef\xbb\xbf" + b" ".join(xml.split())
    extracted = read_bytes(one_line, "bom")
    assert len(extracted.reports) == 1 and not extracted.problems, extracted.problems


# -- the findings in the operator's language ---------------------------------------------------------------


def _stored_samples(tmp_path: Path) -> ReportStore:
    """The real 2,286-record report, RFC 9990's example, Outlook's and RFC 8460's TLS report."""
    store = ReportStore(tmp_path / "reports.sqlite3")
    names = [
        "!large-example.com!1711897200!1711983600.xml",
        "rfc9990-example.net!example.com!1700000000!1700086399.xml",
        "protection.outlook.com!example.com!1711756800!1711843200.xml",
    ]
    for path in [*(AGG / name for name in names), SAMPLES / "smtp_tls" / "rfc8460.json"]:
        assert store.add(_one(path))
    return store


NOW_SAMPLES = datetime(2024, 4, 3, 6, 0, tzinfo=UTC)  # two days after the large report's day


def _sample_findings(store: ReportStore, ours: set[str]) -> list[Finding]:
    from checks.reports import findings as judge
    from checks.reports.sources import SourceVerdict

    limits = judge.Thresholds()
    since = date(2016, 1, 1)  # back to RFC 8460's example: every sample is in the window
    rows, tls = store.dmarc_rows(since), store.tls_rows(since)
    verdicts = {r.source_ip: SourceVerdict(r.source_ip, r.source_ip in ours, "en [monitor] ips") for r in rows}
    days = {("example.com", "google"): [date(2024, 3, d) for d in (20, 21, 22, 23)]}  # daily, then silent
    fastmail = [date(2024, 3, 31), date(2024, 4, 1), date(2024, 4, 2)]  # daily still
    domains = ["example.com", "company-y.example"]
    return [
        *judge.source_findings(rows, verdicts, domains, limits.window_days, NOW_SAMPLES),
        *judge.alignment_findings(rows, verdicts, limits, NOW_SAMPLES, [("example.com", "yahoo")]),
        *judge.quiet_findings({**days, ("example.com", "fastmail"): fastmail}, limits, NOW_SAMPLES),
        *judge.tls_findings(tls, domains, limits, NOW_SAMPLES),
        *judge.problem_findings(store.problems(datetime(2024, 1, 1, tzinfo=UTC)), limits.window_days, NOW_SAMPLES),
    ]


def test_report_findings_in_spanish_with_spanish_numbers(tmp_path: Path) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language
    from tests.helpers import NBSP, english_words

    store = _stored_samples(tmp_path)
    with use_language("es"):  # a broken file, read as the monitor reads its mailbox: in the alerts' language
        broken = read_bytes((AGG / "invalid_xml.xml").read_bytes(), "INBOX UID 7")
    store.add_problem(broken.problems[0], "k", NOW_SAMPLES)
    large = {f"12.20.121.{n}" for n in range(1, 200)}  # a share of the large report's senders are ours
    english = _sample_findings(store, large)
    with use_language("es"):
        spanish = _sample_findings(store, large)
    store.close()
    said = {(f.check, f.subject, f.evidence.get("domain")): f for f in spanish}
    sources = said[("dmarc-sources", "unknown senders", "example.com")]
    assert sources.summary.startswith(
        "2.090 orígenes desconocidos enviaron 2.095 mensajes como example.com en 7 días: "
    )
    assert "203.0.113.10 (2 según example.net: 2 rechazados, ninguno pasó DMARC)" in sources.summary
    assert sources.summary.endswith("; 2.085 más")
    assert sources.advice.startswith("Si un origen es un servicio que usas, autorízalo")
    large_reporter = said[("dmarc-reports", "accurateplastics.com", "example.com")]
    assert large_reporter.summary == (
        "accurateplastics.com contó 199 mensajes de tus IP como example.com en 7 días; más del 2 % falla: "
        "DMARC 199 (100,0 %), SPF 199 (100,0 %), DKIM 199 (100,0 %)"
    )
    assert said[("dmarc-reports", "yahoo", "example.com")].summary == (
        "yahoo no contó correo de tus IP como example.com en 7 días"
    )
    quiet = said[("dmarc-reporter", "google for example.com", "example.com")]
    assert quiet.summary == (
        "google envió a diario los informes DMARC de example.com hasta el 2024-03-23 y ninguno desde hace 10 días"
    )
    tls = said[("tlsrpt-reports", "sessions", "company-y.example")]
    assert tls.summary.startswith(
        "informes TLS: 303 de 5.629 sesiones hacia company-y.example con fallo (5,4 %) en 7 días: "
    )
    assert "mx2.mail.company-y.example: starttls-not-supported 200" in tls.summary
    assert "certificate-expired: el certificado del MX ha caducado: renuévalo y recarga el MTA." in tls.advice
    unreadable = said[("reports", "unreadable reports", None)]
    assert unreadable.summary == (  # the parser's own words after "XML no válido:" are Python's expat's
        "1 informe no se pudo leer en 7 días; el más reciente: INBOX UID 7: "
        "XML no válido: not well-formed (invalid token): line 5, column 17"
    )
    for finding, mine in zip(spanish, english, strict=True):
        assert not english_words(f"{finding.summary} {finding.advice}"), (finding.summary, finding.advice)
        assert (finding.code, finding.status, finding.evidence) == (mine.code, mine.status, mine.evidence)
    by_code = {f.code: f for f in english}
    # The bot's English groups thousands as English does (Babel); the library alone keeps "2089" (test_i18n).
    assert by_code["unknown-senders"].summary.startswith("2,090 unknown sources sent 2,095 messages as example.com")
    assert "(100.0 %)" in by_code["dmarc-fail"].summary and NBSP not in by_code["dmarc-fail"].summary


@pytest.mark.parametrize(("path", "severity", "words"), BROKEN, ids=[f"{p.name[:30]}-{w[:12]}" for p, _, w in BROKEN])
def test_broken_reports_are_problems_in_the_operators_language(path: Path, severity: str, words: str) -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language
    from tests.helpers import english_words

    english = read_bytes(path.read_bytes(), str(path)).problems
    with use_language("es"):
        spanish = read_bytes(path.read_bytes(), str(path)).problems
    assert [(p.severity, p.code) for p in spanish] == [(p.severity, p.code) for p in english]
    for problem, mine in zip(spanish, english, strict=True):
        assert problem.error != mine.error and not english_words(problem.error), problem.error
    assert any(words in p.error for p in english)  # the English stays what the test above reads


def test_problem_words_in_spanish() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    raw = b"From: someone@example.net\r\nSubject: hello\r\nContent-Type: text/plain\r\n\r\njust words\r\n"
    with use_language("es"):
        empty = read_bytes(raw, "m", Limits()).problems[0].error
        count = read_bytes((OURS / "bad_count.xml").read_bytes(), "b").problems[0].error
        tls = read_bytes((OURS / "tlsrpt_negative_count.json").read_bytes(), "t").problems[0].error
        big = read_bytes(gzip.compress(b"<" + b" " * 300_000), "g", Limits(max_bytes=200_000)).problems[0].error
    assert empty == "un mensaje sin ningún informe adjunto (asunto 'hello')"
    assert count == "registro 1: count 'many' no es un número entero"
    assert tls == "policies[0] total-successful-session-count '-4' no es un recuento"
    assert big == "mayor de 200000 bytes una vez descomprimido"  # a cap is a detail: no thousands separator
