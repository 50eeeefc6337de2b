"""MTA-STS (RFC 8461): the `_mta-sts` record, the HTTPS policy file, and whether its mx patterns cover every MX.

The policy host is resolved with our resolver (so --nameserver applies) and fetched by address, with the
host name as SNI and Host. No redirects, at most 64 KiB read, and one deadline for the whole fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from checks.context import CheckContext
from checks.dns.resolver import DnsAnswer
from checks.i18n import N_
from checks.messages import DNS_FAILED, Messages, emit
from checks.model import Finding, Status, Target

__all__ = [
    "MESSAGES",
    "Fetched",
    "StsPolicy",
    "StsRecord",
    "check",
    "fetch_policy",
    "mx_matches",
    "parse_sts_policy",
    "parse_sts_record",
    "uncovered_mx",
]

CHECK = "mta-sts"
POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: about one year
SHORT_MAX_AGE = 86_400
MODES = frozenset({"enforce", "testing", "none"})
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_PREFIX = re.compile(r"^\s*v=STSv1\s*(;|$)")
_MX_PATTERN = re.compile(r"^(\*\.)?([a-z0-9_-]+\.)*[a-z0-9_-]+\.?$")

_OK, _WARN, _FAIL, _UNKNOWN = Status.OK, Status.WARN, Status.FAIL, Status.UNKNOWN
_NEW_POLICY = "change the policy and the id in {name} together"

#: code -> (status, summary, advice); the {fields} come from the finding's evidence.
MESSAGES: Messages = {
    "record": (_OK, N_("MTA-STS record at {name}, id={id}"), ""),
    "missing": (
        _WARN,
        N_("no MTA-STS record at {name}: senders may deliver to you without TLS"),
        N_(
            "serve a policy at https://mta-sts.{domain}/.well-known/mta-sts.txt, "
            'then publish {name} TXT "v=STSv1; id=1"'
        ),
    ),
    "dns-failed": DNS_FAILED,
    "multiple": (
        _FAIL,
        N_("{count} MTA-STS records at {name}: senders ignore them all"),
        N_("keep exactly one at {name}"),
    ),
    "syntax": (_FAIL, N_("the MTA-STS record at {name} is invalid: {errors}"), N_('{name} TXT "v=STSv1; id={new_id}"')),
    "policy": (_OK, N_("MTA-STS policy: mode {mode}, max_age {max_age}, mx {mx}"), ""),
    "no-policy-host": (_FAIL, N_("{host} does not resolve ({outcome})"), N_("publish an A/AAAA record for {host}")),
    "unreachable": (_UNKNOWN, N_("could not fetch {url} from here: {detail}"), N_("check that {host} serves HTTPS")),
    "fetch-timeout": (_UNKNOWN, N_("{url} did not answer within {timeout} s"), N_("check the web server of {host}")),
    "tls": (
        _FAIL,
        N_("{url}: TLS failed: {detail}"),
        N_("give {host} a certificate valid for that name from a public CA"),
    ),
    "redirect": (_FAIL, N_("{url} redirects ({status}) to {location}"), N_("serve the policy at that URL directly")),
    "http-status": (_FAIL, N_("{url} answered HTTP {status}"), N_("serve the policy file with status 200")),
    "too-large": (_FAIL, N_("{url} is larger than {limit} bytes"), N_("serve only the policy (a few lines)")),
    "http-error": (_FAIL, N_("{url}: {detail}"), N_("check the web server of {host}")),
    "content-type": (_WARN, N_("{url} is served as {content_type!r}, not text/plain"), N_("serve it as text/plain")),
    "policy-syntax": (_FAIL, N_("the MTA-STS policy at {url} is invalid: {errors}"), _NEW_POLICY),
    "short-max-age": (
        _WARN,
        N_("max_age={max_age}: senders forget the policy within a day"),
        N_("use max_age=604800+"),
    ),
    "mode-testing": (_WARN, N_("MTA-STS mode testing: failures are reported, not enforced"), N_("then mode: enforce")),
    "mode-none": (
        _WARN,
        N_("MTA-STS mode none: the policy is withdrawn"),
        N_("use mode: enforce, or remove the record"),
    ),
    "mx-covered": (_OK, N_("the MTA-STS mx patterns cover every MX: {mx_hosts}"), ""),
    "mx-uncovered": (
        _FAIL,
        N_("MX hosts not covered by the MTA-STS policy: {uncovered}"),
        "add mx: lines; " + _NEW_POLICY,
    ),
    "mx-dns-failed": (_UNKNOWN, N_("could not look up the MX of {domain}: {outcome}"), N_("try again later")),
    "no-mx": (_WARN, N_("{domain} has no MX records for the MTA-STS policy to cover"), N_("publish MX records")),
}


@dataclass(frozen=True)
class StsRecord:
    """A parsed `_mta-sts` TXT record."""

    raw: str
    id: str | None
    errors: tuple[str, ...] = ()


def parse_sts_record(text: str) -> StsRecord:
    """Parse a `v=STSv1; id=...` record; never raises."""
    tags: dict[str, str] = {}
    errors: list[str] = []
    for part in (p.strip() for p in text.split(";")):
        name, sep, value = part.partition("=")
        if not part:
            continue
        if not sep or not name.strip():
            errors.append(f"{part[:40]!r} is not a tag=value pair")
        elif name.strip() in tags:
            errors.append(f"tag {name.strip()} appears twice")
        else:
            tags[name.strip()] = value.strip()
    if next(iter(tags), None) != "v" or tags["v"] != "STSv1":
        errors.append("the record must start with v=STSv1")
    record_id = tags.get("id")
    if record_id is None:
        errors.append("id= is missing")
    elif not _ID.match(record_id):
        errors.append(f"id={record_id[:40]} must be 1 to 32 letters and digits")
    return StsRecord(text, record_id, tuple(errors))


@dataclass(frozen=True)
class StsPolicy:
    """A parsed policy file."""

    raw: str
    version: str | None
    mode: str | None
    max_age: int | None
    mx: tuple[str, ...]
    errors: tuple[str, ...] = ()


def parse_sts_policy(text: str) -> StsPolicy:
    """Parse the policy file (key: value lines, CRLF or LF); never raises."""
    values: dict[str, str] = {}
    mx: list[str] = []
    errors: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            errors.append(f"{line[:40]!r} is not a key: value line")
        elif key == "mx":
            mx.append(value.lower())
            if not _MX_PATTERN.match(value.lower()):
                errors.append(f"mx: {value[:60]} is not a host name or *.domain pattern")
        elif key in values and key in {"version", "mode", "max_age"}:
            errors.append(f"{key} appears twice")
        else:
            values.setdefault(key, value)
    if values.get("version") != "STSv1":
        errors.append("version: STSv1 is missing")
    mode = values.get("mode")
    if mode not in MODES:
        errors.append(f"mode must be one of {', '.join(sorted(MODES))}, not {mode!r}")
    raw_age = values.get("max_age", "")
    max_age = int(raw_age) if raw_age.isdigit() and len(raw_age) <= 10 else None
    if max_age is None or max_age > MAX_AGE_LIMIT:
        errors.append(f"max_age must be a number of seconds up to {MAX_AGE_LIMIT}, not {raw_age!r}")
    if not mx and mode in {"enforce", "testing"}:
        errors.append("no mx: line (required unless mode is none)")
    return StsPolicy(text, values.get("version"), mode, max_age, tuple(mx), tuple(errors))


def mx_matches(pattern: str, host: str) -> bool:
    """Whether an MX host matches a policy mx pattern; `*.example.org` matches exactly one more label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == host


def uncovered_mx(patterns: Sequence[str], hosts: Sequence[str]) -> list[str]:
    """The MX hosts no pattern matches."""
    return [host for host in hosts if not any(mx_matches(pattern, host) for pattern in patterns)]


@dataclass(frozen=True)
class Fetched:
    """How fetching the policy went: a `problem` code (see MESSAGES) or the body."""

    host: str
    url: str
    problem: str | None = None
    body: bytes | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    said: Mapping[str, str] = field(default_factory=dict)  # evidence fields in the active language, for the texts


def _emit(code: str, domain: str, evidence: Mapping[str, Any], said: Mapping[str, str] | None = None) -> Finding:
    return emit(CHECK, MESSAGES, code, domain, evidence, said=said)


async def fetch_policy(ctx: CheckContext, domain: str) -> Fetched:
    """Fetch https://mta-sts.<domain>/.well-known/mta-sts.txt: no redirects, size-capped, within ctx.timeout."""
    host = f"mta-sts.{domain}"
    port = "" if ctx.https_port == 443 else f":{ctx.https_port}"
    url = f"https://{host}{port}{POLICY_PATH}"
    v4, v6 = await asyncio.gather(ctx.resolver.query(host, "A"), ctx.resolver.query(host, "AAAA"))
    addresses = [*v4.records, *v6.records]
    base: dict[str, Any] = {"host": host, "url": url, "timeout": ctx.timeout, "limit": MAX_POLICY_BYTES}
    if not addresses:
        failed = v4 if v4.failed else v6
        code = "unreachable" if failed.failed else "no-policy-host"
        evidence = base | {"outcome": v4.describe(), "detail": f"{host}: {failed.describe()}"}
        said = {"outcome": v4.said(), "detail": f"{host}: {failed.said()}"}
        return Fetched(host, url, code, evidence=evidence, said=said)
    address = ipaddress.ip_address(addresses[0])
    literal = f"[{address}]" if address.version == 6 else str(address)
    base["address"] = str(address)
    try:
        async with asyncio.timeout(ctx.timeout):
            return await _get(ctx, host, url, f"https://{literal}:{ctx.https_port}{POLICY_PATH}", port, base)
    except TimeoutError:
        return Fetched(host, url, "fetch-timeout", evidence=base)


async def _get(ctx: CheckContext, host: str, url: str, target: str, port: str, base: dict[str, Any]) -> Fetched:
    import httpx

    headers = {"Host": f"{host}{port}", "Accept-Encoding": "identity"}
    try:
        async with ctx.http().stream("GET", target, headers=headers, extensions={"sni_hostname": host}) as response:
            evidence = base | {"status": response.status_code, "content_type": response.headers.get("content-type")}
            if response.is_redirect:
                location = response.headers.get("location", "(no Location)")
                return Fetched(host, url, "redirect", evidence=evidence | {"location": location})
            if response.status_code != 200:
                return Fetched(host, url, "http-status", evidence=evidence)
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > MAX_POLICY_BYTES:
                    return Fetched(host, url, "too-large", evidence=evidence)
            return Fetched(host, url, None, bytes(body), evidence)
    except httpx.TimeoutException:
        return Fetched(host, url, "fetch-timeout", evidence=base)
    except httpx.ConnectError as error:
        detail = str(error) or type(error).__name__
        verify = isinstance(error.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in detail
        return Fetched(host, url, "tls" if verify else "unreachable", evidence=base | {"detail": detail})
    except (httpx.NetworkError, httpx.ProxyError) as error:
        return Fetched(host, url, "unreachable", evidence=base | {"detail": str(error) or type(error).__name__})
    except httpx.HTTPError as error:
        return Fetched(host, url, "http-error", evidence=base | {"detail": str(error) or type(error).__name__})


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """MTA-STS findings: the record, the policy file, and the coverage of every MX."""
    domain = target.value
    name = f"_mta-sts.{domain}"
    answer = await ctx.resolver.query(name, "TXT")
    evidence: dict[str, Any] = {"name": name, "domain": domain, "outcome": answer.describe()}
    if answer.failed:
        return [_emit("dns-failed", domain, evidence, {"outcome": answer.said()})]
    records = [text for text in answer.texts() if _PREFIX.match(text)]
    if not records:
        return [_emit("missing", domain, evidence | {"records": answer.texts()})]
    if len(records) > 1:
        return [_emit("multiple", domain, evidence | {"count": len(records), "records": records})]
    record = parse_sts_record(records[0])
    evidence |= {"record": record.raw, "id": record.id}
    findings = []
    if record.errors:
        new_id = ctx.clock().strftime("%Y%m%d%H%M")
        findings.append(_emit("syntax", domain, evidence | {"errors": "; ".join(record.errors), "new_id": new_id}))
    else:
        findings.append(_emit("record", domain, evidence))
    fetched, mx = await asyncio.gather(fetch_policy(ctx, domain), ctx.resolver.query(domain, "MX"))
    findings.extend(_policy_findings(domain, record, fetched, mx))
    return findings


def _mx_hosts(rdata: Sequence[Any]) -> list[str]:
    hosts = {str(rd.exchange).lower().rstrip(".") for rd in rdata if hasattr(rd, "exchange")}
    return sorted(host for host in hosts if host)  # a null MX ("0 .") has nothing to cover


def _policy_findings(domain: str, record: StsRecord, fetched: Fetched, mx: DnsAnswer) -> list[Finding]:
    evidence = {"domain": domain, "name": f"_mta-sts.{domain}", "id": record.id, **fetched.evidence}
    if fetched.problem is not None:
        return [_emit(fetched.problem, domain, evidence, fetched.said)]
    body = fetched.body or b""
    policy = parse_sts_policy(body.decode("utf-8", "replace"))
    evidence |= {"policy": policy.raw, "policy_sha256": hashlib.sha256(body).hexdigest(), "mode": policy.mode}
    evidence |= {"max_age": policy.max_age, "mx": ", ".join(policy.mx) or "(none)"}
    findings = []
    content_type = str(evidence.get("content_type") or "")
    if content_type.split(";")[0].strip().lower() != "text/plain":
        findings.append(_emit("content-type", domain, evidence | {"content_type": content_type}))
    if policy.errors:
        findings.append(_emit("policy-syntax", domain, evidence | {"errors": "; ".join(policy.errors)}))
    else:
        findings.append(_emit("policy", domain, evidence))
    if policy.max_age is not None and policy.max_age < SHORT_MAX_AGE:
        findings.append(_emit("short-max-age", domain, evidence))
    if policy.mode in {"testing", "none"}:
        findings.append(_emit(f"mode-{policy.mode}", domain, evidence))
    if policy.mode == "none":
        return findings
    mx_hosts = _mx_hosts(mx.rdata)
    mx_evidence = evidence | {"outcome": mx.describe(), "mx_hosts": ", ".join(mx_hosts)}
    if mx.failed:
        findings.append(_emit("mx-dns-failed", domain, mx_evidence, {"outcome": mx.said()}))
    elif not mx_hosts:
        findings.append(_emit("no-mx", domain, mx_evidence))
    elif uncovered := uncovered_mx(policy.mx, mx_hosts):
        findings.append(_emit("mx-uncovered", domain, mx_evidence | {"uncovered": ", ".join(uncovered)}))
    else:
        findings.append(_emit("mx-covered", domain, mx_evidence))
    return findings
