"""TLS-RPT (RFC 8460): the `_smtp._tls` record that says where senders report TLS failures."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.context import CheckContext
from checks.i18n import N_
from checks.messages import DNS_FAILED, Messages, emit
from checks.model import Finding, Status, Target

__all__ = ["MESSAGES", "TlsRptRecord", "check", "is_tlsrpt", "parse_tlsrpt"]

CHECK = "tls-rpt"
_PREFIX = re.compile(r"^\s*v=TLSRPTv1\s*(;|$)")
_MAILTO = re.compile(r"^mailto:[^@\s,;!]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$", re.IGNORECASE)
_HTTPS = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^\s,;]*)?$", re.IGNORECASE)
_EXTENSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")

_OK, _WARN, _FAIL = Status.OK, Status.WARN, Status.FAIL

#: code -> (status, summary, advice); the {fields} come from the finding's evidence.
MESSAGES: Messages = {
    "record": (_OK, N_("TLS-RPT reports go to {rua}"), ""),
    "missing": (
        _WARN,
        N_("no TLS-RPT record at {name}: nobody hears when senders cannot reach you over TLS"),
        N_('{name} TXT "v=TLSRPTv1; rua=mailto:tls-reports@{domain}"'),
    ),
    "dns-failed": DNS_FAILED,
    "multiple": (
        _FAIL,
        N_("{count} TLS-RPT records at {name}: senders ignore them all"),
        N_("keep exactly one at {name}"),
    ),
    "syntax": (_FAIL, N_("the TLS-RPT record at {name} is invalid: {errors}"), N_('{name} TXT "{suggested}"')),
}


@dataclass(frozen=True)
class TlsRptRecord:
    """A parsed TLS-RPT record: its rua URIs and what is wrong with it."""

    raw: str
    rua: tuple[str, ...]
    errors: tuple[str, ...] = ()


def is_tlsrpt(text: str) -> bool:
    """Whether a TXT string is a TLS-RPT record (starts with v=TLSRPTv1; the version is case-sensitive)."""
    return _PREFIX.match(text) is not None


def parse_tlsrpt(text: str) -> TlsRptRecord:
    """Parse a TLS-RPT record; never raises, problems go into `errors`."""
    errors: list[str] = []
    tags: dict[str, str] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _EXTENSION.match(name):
            errors.append(f"{part[:40]!r} is not a tag=value pair")
        elif name in tags:
            errors.append(f"tag {name} appears twice")
        else:
            tags[name] = value
    if next(iter(tags), None) != "v" or tags.get("v") != "TLSRPTv1":
        errors.append("the record must start with v=TLSRPTv1")
    uris = tuple(uri.strip() for uri in tags.get("rua", "").split(",") if uri.strip())
    if not uris:
        errors.append("rua= (where reports go) is missing or empty")
    for uri in uris:
        if not (_MAILTO.match(uri) or _HTTPS.match(uri)):
            errors.append(f"rua {uri[:60]!r} is neither mailto:address nor https://host/path")
    return TlsRptRecord(text, uris, tuple(errors))


def _emit(code: str, domain: str, evidence: Mapping[str, Any], said: Mapping[str, str] | None = None) -> Finding:
    return emit(CHECK, MESSAGES, code, domain, evidence, said=said)


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """One finding about the domain's TLS-RPT record."""
    domain = target.value
    name = f"_smtp._tls.{domain}"
    answer = await ctx.resolver.query(name, "TXT")
    evidence: dict[str, Any] = {"name": name, "domain": domain, "outcome": answer.describe()}
    if answer.failed:
        return [_emit("dns-failed", domain, evidence, {"outcome": answer.said()})]
    records = [text for text in answer.texts() if is_tlsrpt(text)]
    if not records:
        return [_emit("missing", domain, evidence | {"records": answer.texts()})]
    if len(records) > 1:
        return [_emit("multiple", domain, evidence | {"count": len(records), "records": records})]
    record = parse_tlsrpt(records[0])
    evidence |= {"record": record.raw, "rua": ", ".join(record.rua)}
    if record.errors:
        suggested = f"v=TLSRPTv1; rua=mailto:tls-reports@{domain}"
        return [_emit("syntax", domain, evidence | {"errors": "; ".join(record.errors), "suggested": suggested})]
    return [_emit("record", domain, evidence)]
