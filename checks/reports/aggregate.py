"""DMARC aggregate reports: RFC 7489 appendix C, RFC 9990 (DMARCbis) and the old draft schema, parsed safely.

defusedxml refuses entity declarations and external references (billion laughs, XXE); the caller has
capped the size. A report that cannot be trusted (bad XML, no policy, an unknown namespace, a count that is
not a number) is a `ReportError`. One that can be read but breaks the schema in a harmless way (an
upper-cased `Pass`, a range over 24 hours, bytes that are not UTF-8) is returned with warnings.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from xml.etree.ElementTree import XML, Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from checks.i18n import _
from checks.reports.model import MAX_RANGE, AuthResult, DmarcRecord, DmarcReport, PublishedPolicy

__all__ = ["NAMESPACES", "ReportError", "parse_aggregate"]

# The namespaces reporters put on <feedback>: none (RFC 7489, most reporters), DMARCbis, and the draft's.
NAMESPACES = {
    "": "rfc7489",
    "urn:ietf:params:xml:ns:dmarc-2.0": "rfc9990",
    "http://dmarc.org/dmarc-xml/0.1": "draft",
}
DISPOSITIONS = frozenset({"none", "quarantine", "reject", "pass"})  # RFC 9990 adds "pass"
ALIGNED = frozenset({"pass", "fail"})
DKIM_RESULTS = frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"})
SPF_RESULTS = frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"})
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


class ReportError(ValueError):
    """Raised when a document is not a report that can be counted; the message says why, for the operator."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


class _Reader:
    """Element lookups in the document's namespace, and the warnings gathered on the way."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"{{{namespace}}}" if namespace else ""
        self.steps: dict[str, tuple[str, ...]] = {}
        self.warnings: list[str] = []
        self.upper: set[str] = set()
        self.odd: set[str] = set()
        self.seen: dict[tuple[str, str, str | None, str, str], AuthResult] = {}

    def find(self, element: Element, name: str) -> Element | None:
        """The element at a child path ("row/source_ip"), one step at a time: a plain tag keeps
        ElementTree's C fast path, where a path with "/" would go through ElementPath."""
        steps = self.steps.get(name)
        if steps is None:
            steps = self.steps[name] = tuple(self.prefix + step for step in name.split("/"))
        node = element
        for step in steps:
            found = node.find(step)
            if found is None:
                return None
            node = found
        return node

    def text(self, element: Element, name: str) -> str:
        node = self.find(element, name)
        return (node.text or "").strip() if node is not None else ""

    def all(self, element: Element, name: str) -> list[Element]:
        parent, _slash, last = name.rpartition("/")
        node = self.find(element, parent) if parent else element
        return node.findall(self.prefix + last) if node is not None else []


def _decode(data: bytes) -> tuple[str | bytes, list[str]]:
    """The document as text when it is declared (or assumed) UTF-8, with bad bytes replaced and warned about."""
    declared = _DECLARED.match(data)
    encoding = declared[1].decode().lower() if declared else "utf-8"
    if encoding not in ("utf-8", "utf8"):
        return data, []  # expat knows latin-1, us-ascii, utf-16
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as error:
        said = _("not valid UTF-8 at byte {offset} ({byte}): replaced with U+FFFD")
        shown = said.format(offset=error.start, byte=repr(data[error.start : error.start + 1]))
        return data.decode("utf-8-sig", "replace"), [shown]


def _root(data: bytes) -> tuple[Element, list[str]]:
    if not data.strip():
        raise ReportError(_("empty file"), "empty")
    text, warnings = _decode(data)
    # A document with no DTD cannot declare entities: it goes to the C parser, five times faster than
    # defusedxml's pure-Python one. Anything with a DTD (never seen in a real report) goes to defusedxml.
    plain = isinstance(text, str) and "<!DOCTYPE" not in text and "<!ENTITY" not in text
    try:
        return (XML(text) if plain else fromstring(text)), warnings
    except ParseError as error:
        inner = _feedback_inside(text)
        if inner is None:
            raise ReportError(_("not valid XML: {error}").format(error=error), "xml") from None
        return inner, [
            *warnings,
            _("not valid XML ({error}); read the <feedback> element inside it").format(error=error),
        ]
    except DefusedXmlException as error:
        said = _("refused XML ({kind}): entities are not allowed").format(kind=type(error).__name__)
        raise ReportError(said, "xml") from None


def _feedback_inside(text: str | bytes) -> Element | None:
    """The <feedback> element of a document wrapped in something broken (IKEA's reports open an
    <xs:schema> they never close), or None when that does not parse either."""
    start, end = (b"<feedback", b"</feedback>") if isinstance(text, bytes) else ("<feedback", "</feedback>")
    first, last = text.find(start), text.rfind(end)  # type: ignore[arg-type]
    if first <= 0 or last < first:
        return None
    try:
        element: Element = fromstring(text[first : last + len(end)])
    except (ParseError, DefusedXmlException):
        return None
    return element


def _timestamp(reader: _Reader, meta: Element, name: str) -> datetime:
    text = reader.text(meta, f"date_range/{name}")
    try:
        return datetime.fromtimestamp(int(float(text)), UTC)
    except (ValueError, OverflowError, OSError):
        said = _("date_range {name} {value} is not a Unix time").format(name=name, value=repr(text[:30]))
        raise ReportError(said, "date") from None


def _policy(reader: _Reader, root: Element) -> PublishedPolicy:
    published = reader.find(root, "policy_published")
    if published is None:
        raise ReportError(_("no <policy_published>: the report does not say which DMARC policy it applied"), "policy")
    domain = reader.text(published, "domain").lower().rstrip(".")
    if not domain:
        raise ReportError(_("<policy_published> names no domain"), "policy")
    p = reader.text(published, "p").lower()
    if not p:
        reader.warnings.append(_("<policy_published> has no <p>: the policy the reporter found is not known"))
    pct_text = reader.text(published, "pct")
    pct = int(pct_text) if pct_text.isdigit() else None
    field: Callable[[str], str] = lambda name: reader.text(published, name).lower()  # noqa: E731
    return PublishedPolicy(
        domain, p, field("sp"), field("np"), field("adkim"), field("aspf"), pct,
        field("testing"), field("discovery_method"), reader.text(published, "fo"),
    )  # fmt: skip


AUTH_KINDS = frozenset({"dkim", "spf"})
AUTH_FIELDS = frozenset({"domain", "selector", "result", "scope", "human_result"})


def _word(reader: _Reader, value: str | None, name: str, known: frozenset[str]) -> str:
    """An enumerated value in lower case; an upper-cased or unknown one is remembered for a warning."""
    if value in known:
        return str(value)  # the usual case, checked first: it is most of the work
    value = (value or "").strip()
    lower = value.lower()
    if lower != value:
        reader.upper.add(value)
    if lower and lower not in known:
        reader.odd.add(f"{name}={value}")
    return lower


def _address(text: str) -> str | None:
    """The canonical text of an IP address (inet_pton is strict and fast), or None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except OSError:
            continue
    return None


def _walk(reader: _Reader, record: Element) -> tuple[dict[str, str], list[tuple[str, dict[str, str]]], list[str]]:
    """One pass over a record's elements, in document order: its leaf fields by name, its auth results
    (<dkim>/<spf> elements with children), and its reasons. Every field name inside a record is unique
    except those of auth results, which follow their own <dkim> or <spf> container."""
    cut = len(reader.prefix)
    fields: dict[str, str] = {}
    auths: list[tuple[str, dict[str, str]]] = []
    reasons: list[str] = []
    current: dict[str, str] | None = None
    for element in record.iter():
        tag = element.tag[cut:] if cut else element.tag
        text = element.text or ""  # stripped where used: most values have no spaces, containers have only spaces
        if tag in AUTH_KINDS and len(element):
            current = {}
            auths.append((tag, current))
        elif current is not None and tag in AUTH_FIELDS:
            current[tag] = text
        elif tag in ("type", "comment"):
            reasons.append(f"{tag}={text.strip()}") if text.strip() else None
        else:
            fields[tag] = text
    return fields, auths, reasons


def _auth(
    reader: _Reader, auths: list[tuple[str, dict[str, str]]]
) -> tuple[tuple[AuthResult, ...], tuple[AuthResult, ...]]:
    """The DKIM and the SPF results; equal ones share one frozen value (a big report repeats a few)."""
    dkim: list[AuthResult] = []
    spf: list[AuthResult] = []
    for kind, found in auths:
        key = (kind, found.get("domain", ""), found.get("result"), found.get("selector", ""), found.get("scope", ""))
        result = reader.seen.get(key)
        if result is None:
            known = DKIM_RESULTS if kind == "dkim" else SPF_RESULTS
            result = reader.seen[key] = AuthResult(
                key[1].strip().lower(), _word(reader, key[2], "result", known), key[3].strip(), key[4].strip().lower()
            )
        (dkim if kind == "dkim" else spf).append(result)
    return tuple(dkim), tuple(spf)


def _record(reader: _Reader, record: Element, number: int) -> DmarcRecord:
    fields, auths, reasons = _walk(reader, record)
    if "row" not in fields or "policy_evaluated" not in fields:
        raise ReportError(_("record {number} has no <row> with a <policy_evaluated>").format(number=number), "record")
    ip_text = fields.get("source_ip", "").strip()
    ip = _address(ip_text)
    if ip is None:
        said = _("record {number}: source_ip {value} is not an IP address")
        raise ReportError(said.format(number=number, value=repr(ip_text[:50])), "record")
    count_text = fields.get("count", "").strip()
    if not count_text.isdigit():
        said = _("record {number}: count {value} is not a whole number")
        raise ReportError(said.format(number=number, value=repr(count_text[:30])), "record")
    dkim_results, spf_results = _auth(reader, auths) if auths else ((), ())
    return DmarcRecord(
        source_ip=ip,
        count=int(count_text),
        disposition=_word(reader, fields.get("disposition"), "disposition", DISPOSITIONS),
        dkim=_word(reader, fields.get("dkim"), "dkim", ALIGNED),
        spf=_word(reader, fields.get("spf"), "spf", ALIGNED),
        header_from=fields.get("header_from", "").strip().lower(),
        envelope_from=fields.get("envelope_from", "").strip().lower(),
        envelope_to=fields.get("envelope_to", "").strip().lower(),
        reasons=_reason_texts(reasons) if reasons else (),
        dkim_results=dkim_results,
        spf_results=spf_results,
    )


def _reason_texts(parts: list[str]) -> tuple[str, ...]:
    """`type=other`, `comment=...` pairs as "other: sender not authorized" (a comment may come alone)."""
    found: list[str] = []
    for part in parts:
        name, _eq, text = part.partition("=")
        if name == "comment" and found and found[-1].endswith(":"):
            found[-1] = f"{found[-1]} {text}"
        else:
            found.append(f"{text}:" if name == "type" else text)
    return tuple(text.rstrip(":") for text in found)


def _schema(reader: _Reader, root: Element, namespace: str) -> str:
    if NAMESPACES[namespace] != "rfc7489":
        return NAMESPACES[namespace]
    version = reader.text(root, "version")
    if version.startswith("2"):
        return "rfc9990"
    return "rfc7489" if version else "draft"


def parse_aggregate(data: bytes, source: str = "", max_records: int = 200_000) -> tuple[DmarcReport, list[str]]:
    """The report in `data` and its warnings; raises ReportError when it cannot be counted."""
    root, warnings = _root(data)
    namespace, _brace, name = root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    if name != "feedback":
        said = _("not a DMARC aggregate report: the root element is <{name}>, not <feedback>")
        raise ReportError(said.format(name=name[:40]), "root")
    if namespace not in NAMESPACES:
        said = _("unknown namespace {namespace}: not a DMARC report schema repbot knows")
        raise ReportError(said.format(namespace=repr(namespace[:80])), "namespace")
    reader = _Reader(namespace)
    reader.warnings.extend(warnings)
    meta = reader.find(root, "report_metadata")
    if meta is None:
        raise ReportError(_("no <report_metadata>"), "metadata")
    report_id = reader.text(meta, "report_id")
    contact = reader.text(meta, "email")
    reporter = reader.text(meta, "org_name") or contact.rpartition("@")[2].strip(" >")
    if not report_id or not reporter:
        raise ReportError(_("<report_metadata> lacks report_id, or both org_name and email"), "metadata")
    begin, end = _timestamp(reader, meta, "begin"), _timestamp(reader, meta, "end")
    if end < begin:
        said = _("date_range ends ({end}) before it begins ({begin})")
        raise ReportError(said.format(end=f"{end:%Y-%m-%d %H:%M}", begin=f"{begin:%Y-%m-%d %H:%M}"), "date")
    if end - begin > MAX_RANGE:
        hours = (end - begin).total_seconds() / 3600
        said = _("date range covers {hours} hours (RFC 7489 §7.2: at most 24); counted on one day")
        reader.warnings.append(said.format(hours=f"{hours:.0f}"))
    policy = _policy(reader, root)
    elements = reader.all(root, "record")
    if len(elements) > max_records:
        said = _("{count} records, more than the cap of {cap}").format(count=len(elements), cap=max_records)
        raise ReportError(said, "too-many-records")
    records = tuple(_record(reader, element, number) for number, element in enumerate(elements, 1))
    if reader.upper:
        shown = ", ".join(sorted(reader.upper)[:4])
        reader.warnings.append(
            _("upper-cased values ({shown}); the schema's values are lower case: read as such").format(shown=shown)
        )
    if reader.odd:
        reader.warnings.append(
            _("values outside the schema: {values}").format(values=", ".join(sorted(reader.odd)[:4]))
        )
    schema = _schema(reader, root, namespace)
    generator = reader.text(meta, "generator")
    report = DmarcReport(reporter, contact, report_id, begin, end, policy, records, schema, generator, source)
    return report, reader.warnings
