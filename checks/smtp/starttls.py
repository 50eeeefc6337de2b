"""STARTTLS on every address of every MX: TLS version, certificate chain, name and expiry, and DANE (TLSA).

Check ids: "mx-tls" (one finding per MX address) and "dane" (one per MX address where `_25._tcp.<mx>` has TLSA).

How a certificate is judged. The first session upgrades with the verifying context (`ctx.tls_context()`, with the
MX name as SNI and reference identity). When that handshake succeeds, the chain and name are valid and the same
connection gives the certificate: one connection in the healthy case. When it fails on the certificate, a second
session upgrades with a non-verifying context only to read what the server presents (leaf, chain, version,
cipher); the first handshake's OpenSSL verdict (`verify_message`) is the chain evidence, and the name and expiry are
judged from the certificate itself. So an invalid certificate is reported with its details, and nothing we did not
verify is ever called valid.

Why asyncio streams and not aiosmtplib: only four commands are needed, every raw reply is kept as evidence, and
a refused connection must stay distinguishable from a TLS failure; `StreamWriter.start_tls` gives all of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from checks.context import CheckContext
from checks.dns.resolver import DnsAnswer
from checks.i18n import N_, _
from checks.model import Finding, Status, Target
from checks.mx import MxSet, mx_hosts
from checks.smtp._certs import dane_matches, load_der, name_matches, san_names

__all__ = ["SmtpReply", "TlsProbe", "check", "dane_matches", "probe"]

MX_TLS = "mx-tls"
DANE = "dane"
EXPIRY_WARN_DAYS = 21
MAX_REPLY_LINES = 64
# A whole probe (both sessions) of one MX address gets this many ctx.timeouts: a tarpit that sends a line
# just inside the per-line timeout then costs its own finding, within the runner's deadline for the check
# (CHECK_TIMEOUT_FACTOR, 6), which also covers the MX and address look-ups before the probes.
PROBE_TIMEOUT_FACTOR = 3
_DER = 2  # _ssl.ENCODING_DER
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
UNREACHABLE = N_("could not connect from here (outbound port 25 blocked?)")

# What to do, by finding code; `{mx}` is the MX host name.
ADVICE = {
    "unreachable": N_("Run the check from a host whose outbound port 25 is open."),
    "no-starttls": N_(
        "Enable STARTTLS (Postfix: smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_security_level=may)."
    ),
    "starttls-refused": N_("Check the MTA's TLS configuration and logs."),
    "tls-handshake-failed": N_("Check the MTA's TLS configuration and logs for handshake errors."),
    "cert": N_(
        "Renew the certificate for {mx} with its full chain and reload the MTA; senders enforcing MTA-STS or "
        "DANE-TA refuse an expired, untrusted or misnamed certificate."
    ),
    "dane-no-tls": N_("Fix STARTTLS on this host, or withdraw the TLSA records."),
    "tlsa-not-authenticated": N_("Sign the zone with DNSSEC (DS at the parent) and check from a validating resolver."),
    "tlsa-unusable": N_("Publish `_25._tcp.{mx}. IN TLSA 3 1 1 <sha256 of the SPKI>`."),
    "dane-mismatch": N_(
        "Publish a TLSA record for the current key (`_25._tcp.{mx}. IN TLSA 3 1 1 <sha256 of the SPKI>`) "
        "before switching keys, and keep the old one until it expires from caches."
    ),
}


@dataclass(frozen=True)
class SmtpReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def has_extension(self, name: str) -> bool:
        return any(line[4:].split(" ")[0].upper() == name for line in self.lines[1:])


class _SessionEnded(Exception):
    """Raised inside a session when it cannot go on; `stage` says where, `unknown` whether it is our side's fault."""

    def __init__(self, stage: str, detail: str, *, unknown: bool) -> None:
        super().__init__(detail)
        self.stage = stage
        self.detail = detail
        self.unknown = unknown


@dataclass
class TlsProbe:
    """What one STARTTLS probe of one MX address saw."""

    mx: str
    address: str
    stage: str = "connect"  # where it ended: connect, banner, ehlo, starttls, handshake, done, deadline
    detail: str = ""
    unknown: bool = False
    banner: SmtpReply | None = None
    ehlo: SmtpReply | None = None
    version: str = ""
    cipher: str = ""
    chain: tuple[bytes, ...] = field(default=(), repr=False)
    verified: bool = False
    verify_error: str = ""
    verify_code: int = 0

    @property
    def subject(self) -> str:
        return f"{self.mx} [{self.address}]"

    @property
    def tls(self) -> bool:
        return self.stage == "done"


async def _read_reply(reader: asyncio.StreamReader, stage: str, timeout: float) -> SmtpReply:
    lines: list[str] = []
    while len(lines) < MAX_REPLY_LINES:
        try:
            raw = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            raise _SessionEnded(stage, f"no reply within {timeout:g} s", unknown=True) from None
        except (ValueError, OSError) as error:
            raise _SessionEnded(stage, f"reading the reply failed: {error!r}", unknown=stage != "starttls") from None
        if not raw:
            raise _SessionEnded(stage, "the server closed the connection", unknown=stage != "starttls")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            raise _SessionEnded(stage, f"not an SMTP reply: {line[:120]!r}", unknown=True)
        lines.append(line)
        if line[3:4] != "-":
            return SmtpReply(int(line[:3]), tuple(lines))
    raise _SessionEnded(stage, f"reply longer than {MAX_REPLY_LINES} lines", unknown=True)


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, stage: str, timeout: float
) -> SmtpReply:
    try:
        writer.write(line.encode("ascii", "replace") + b"\r\n")
        await asyncio.wait_for(writer.drain(), timeout)
    except (OSError, TimeoutError) as error:
        raise _SessionEnded(stage, f"sending {line.split()[0]} failed: {error!r}", unknown=False) from None
    return await _read_reply(reader, stage, timeout)


async def _session(probe_: TlsProbe, ctx: CheckContext, tls: ssl.SSLContext) -> None:
    """Connect, read the banner, EHLO, STARTTLS and upgrade; fills `probe_` with what it saw."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(probe_.address, ctx.smtp_port), ctx.timeout)
    except (OSError, TimeoutError) as error:
        raise _SessionEnded("connect", f"{UNREACHABLE}: {error!r}", unknown=True) from None
    try:
        await _converse(reader, writer, probe_, ctx, tls)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _converse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe_: TlsProbe, ctx: CheckContext, tls: ssl.SSLContext
) -> None:
    probe_.banner = await _read_reply(reader, "banner", ctx.timeout)
    if probe_.banner.code != 220:
        raise _SessionEnded("banner", f"the server refused the session: {probe_.banner.text}", unknown=True)
    helo = ctx.helo_names[0] if ctx.helo_names else "repbot.invalid"
    probe_.ehlo = await _command(reader, writer, f"EHLO {helo}", "ehlo", ctx.timeout)
    if probe_.ehlo.code != 250:
        raise _SessionEnded("ehlo", f"EHLO refused: {probe_.ehlo.text}", unknown=True)
    if not probe_.ehlo.has_extension("STARTTLS"):
        raise _SessionEnded("starttls", "STARTTLS is not advertised", unknown=False)
    reply = await _command(reader, writer, "STARTTLS", "starttls", ctx.timeout)
    if reply.code != 220:
        raise _SessionEnded("starttls", f"STARTTLS refused: {reply.text}", unknown=False)
    try:
        await writer.start_tls(tls, server_hostname=probe_.mx, ssl_handshake_timeout=ctx.timeout)
    except ssl.SSLCertVerificationError:
        raise
    except (OSError, TimeoutError, EOFError, ValueError) as error:  # ValueError: a name SNI cannot carry
        raise _SessionEnded("handshake", f"TLS handshake failed: {error!r}", unknown=False) from None
    tls_object = writer.get_extra_info("ssl_object")
    if not isinstance(tls_object, ssl.SSLObject):
        raise _SessionEnded("handshake", "no TLS session after the handshake", unknown=False)
    probe_.stage, probe_.version, probe_.chain = "done", tls_object.version() or "", _presented_chain(tls_object)
    probe_.cipher = (tls_object.cipher() or ("",))[0]
    with contextlib.suppress(Exception):
        writer.write(b"QUIT\r\n")


def _lenient_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def _presented_chain(tls_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The certificates the server sent, leaf first (private before Python 3.13, public after)."""
    leaf = tls_object.getpeercert(binary_form=True)
    getter = getattr(tls_object, "get_unverified_chain", None) or getattr(
        getattr(tls_object, "_sslobj", None), "get_unverified_chain", None
    )
    chain: list[bytes] = []
    with contextlib.suppress(Exception):
        for cert in getter() if getter else []:
            chain.append(cert if isinstance(cert, bytes) else cert.public_bytes(_DER))
    if leaf and (not chain or chain[0] != leaf):
        chain.insert(0, leaf)
    return tuple(chain)


async def probe(mx: str, address: str, ctx: CheckContext) -> TlsProbe:
    """Probe STARTTLS on one MX address, within its own deadline; a slow server ends as an unknown probe."""
    limit = ctx.timeout * PROBE_TIMEOUT_FACTOR
    try:
        async with asyncio.timeout(limit):
            return await _probe(mx, address, ctx)
    except TimeoutError:
        detail = f"no complete SMTP session within {limit:g} s (each reply slow but never finished: a tarpit?)"
        return TlsProbe(mx, address, stage="deadline", detail=detail, unknown=True)


async def _probe(mx: str, address: str, ctx: CheckContext) -> TlsProbe:
    """A verifying handshake, and a non-verifying one if that fails on the certificate."""
    result = TlsProbe(mx, address)
    try:
        await _session(result, ctx, ctx.tls_context())
        result.verified = True
    except _SessionEnded as ended:
        result.stage, result.detail, result.unknown = ended.stage, ended.detail, ended.unknown
    except ssl.SSLCertVerificationError as error:
        result.verify_error = str(error.verify_message or error)
        result.verify_code = int(error.verify_code or 0)
        result.stage, result.detail = "handshake", f"certificate rejected: {result.verify_error}"
        second = TlsProbe(mx, address, verify_error=result.verify_error, verify_code=result.verify_code)
        try:
            await _session(second, ctx, _lenient_context())
        except (_SessionEnded, ssl.SSLError) as ended:
            result.detail += f"; reading it without verification failed too: {ended}"
        else:
            result = second
    return result


# -- findings ------------------------------------------------------------------------------------------------


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """One "mx-tls" finding per MX address, plus "dane" findings where TLSA records are published."""
    if target.is_ip:
        return []
    mxset = await mx_hosts(target.value, ctx)
    if mxset.kind == "unknown":
        summary = _("could not look up the MX hosts, so STARTTLS was not tested")
        return [Finding(MX_TLS, mxset.domain, Status.UNKNOWN, summary, code="lookup-failed", observed_at=ctx.clock())]
    return await _check_hosts(mxset, ctx)


async def _check_hosts(mxset: MxSet, ctx: CheckContext) -> list[Finding]:
    hosts = [host for host in mxset.hosts if host.addresses and not host.ip_literal]
    pairs = [(host.name, address) for host in hosts for address in host.addresses]
    names = list(dict.fromkeys(host.name for host in hosts))
    tlsa_task = asyncio.gather(*(ctx.resolver.query(f"_25._tcp.{name}", "TLSA") for name in names))
    probes, tlsas = await asyncio.gather(asyncio.gather(*(probe(mx, addr, ctx) for mx, addr in pairs)), tlsa_task)
    tlsa_by_name = dict(zip(names, tlsas, strict=True))
    findings: list[Finding] = []
    for result in probes:
        tlsa = tlsa_by_name[result.mx]
        findings.append(tls_finding(result, tlsa, ctx.clock()))
        dane = dane_finding(result, tlsa, ctx.clock())
        if dane is not None:
            findings.append(dane)
    return findings


def _cert_facts(result: TlsProbe, now: datetime) -> dict[str, Any]:
    cert = load_der(result.chain[0]) if result.chain else None
    if cert is None:
        return {}
    not_after = cert.not_valid_after_utc
    return {
        "sha256": hashlib.sha256(result.chain[0]).hexdigest(),
        "not_after": not_after.isoformat(),
        "days_left": int((not_after - now).total_seconds() // 86400),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": san_names(cert),
        "name_matches": name_matches(result.mx, san_names(cert)),
        "chain_length": len(result.chain),
    }


def _tls_evidence(result: TlsProbe, tlsa: DnsAnswer) -> dict[str, Any]:
    evidence: dict[str, Any] = {"address": result.address, "stage": result.stage}
    if result.detail:
        evidence["error"] = result.detail
    if result.banner:
        evidence["banner"] = result.banner.text
    if result.ehlo:
        evidence["ehlo"] = result.ehlo.text
    if result.tls:
        evidence.update(version=result.version, cipher=result.cipher, chain_verified=result.verified)
    if result.verify_error:
        evidence["verify_error"] = result.verify_error
    evidence["tlsa"] = tlsa.outcome
    return evidence


class _Maker:
    """Builds findings for one probe, taking advice from ADVICE by code."""

    def __init__(self, check: str, result: TlsProbe, evidence: dict[str, Any], now: datetime) -> None:
        self.check, self.result, self.evidence, self.now = check, result, evidence, now

    def __call__(self, status: Status, code: str, summary: str, advice_key: str = "") -> Finding:
        advice = _(ADVICE.get(advice_key or code, "")).format(mx=self.result.mx)
        return Finding(self.check, self.result.subject, status, summary, self.evidence, advice, code, self.now)


def tls_finding(result: TlsProbe, tlsa: DnsAnswer, now: datetime) -> Finding:
    """The "mx-tls" Finding for one probe."""
    make = _Maker(MX_TLS, result, _tls_evidence(result, tlsa), now)
    if not result.tls:
        return _failed_session(result, make)
    facts = _cert_facts(result, now)
    make.evidence["certificate"] = facts
    head = f"{result.version} {result.cipher}"
    if not facts:
        return make(
            Status.FAIL, "no-certificate", _("STARTTLS {head}, but no readable certificate").format(head=head), "cert"
        )
    days = facts["days_left"]
    problems: list[tuple[Status, str, str]] = []
    if days < 0:
        problems.append(
            (Status.FAIL, "cert-expired", _("certificate expired on {day}").format(day=facts["not_after"][:10]))
        )
    if not result.verified and result.verify_code != _HOSTNAME_MISMATCH:
        problems.append(
            (
                Status.WARN,
                "cert-untrusted",
                _("certificate chain not trusted ({error})").format(error=result.verify_error),
            )
        )
    if not facts["name_matches"]:
        problems.append((Status.WARN, "cert-name-mismatch", _("certificate does not name {mx}").format(mx=result.mx)))
    if 0 <= days < EXPIRY_WARN_DAYS:
        problems.append((Status.WARN, "cert-expiring", _("certificate expires in {days} days").format(days=days)))
    if result.version in ("TLSv1", "TLSv1.1", "SSLv3"):
        problems.append((Status.WARN, "old-tls", _("{version} is obsolete").format(version=result.version)))
    if not problems:
        return make(
            Status.OK,
            "tls-ok",
            _("STARTTLS {head}, certificate valid for {days} more days").format(head=head, days=days),
        )
    problems.sort(key=lambda p: -p[0].severity)
    summary = f"STARTTLS {head}; " + "; ".join(text for _status, _code, text in problems)
    return make(problems[0][0], problems[0][1], summary, "cert")


def _failed_session(result: TlsProbe, make: _Maker) -> Finding:
    if result.unknown:
        code = "unreachable" if result.stage == "connect" else f"{result.stage}-failed"
        summary = (
            _(UNREACHABLE)
            if result.stage == "connect"
            else _("could not test STARTTLS: {detail}").format(detail=result.detail)
        )
        return make(Status.UNKNOWN, code, summary, "unreachable")
    if result.stage == "starttls" and "not advertised" in result.detail:
        return make(
            Status.FAIL, "no-starttls", _("the server does not offer STARTTLS: mail to it travels in clear text")
        )
    code = "starttls-refused" if result.stage == "starttls" else "tls-handshake-failed"
    return make(Status.FAIL, code, result.detail)


def dane_finding(result: TlsProbe, tlsa: DnsAnswer, now: datetime) -> Finding | None:
    """The "dane" Finding for one probe, or None when no TLSA record is published."""
    make = _Maker(DANE, result, {"tlsa": tlsa.to_json(), "authenticated": tlsa.authenticated}, now)
    if tlsa.missing:
        return None
    if tlsa.failed:
        return make(
            Status.UNKNOWN,
            "tlsa-lookup-failed",
            _("could not look up TLSA records: {outcome}").format(outcome=tlsa.said()),
        )
    if not result.tls:
        if result.unknown:
            return make(Status.UNKNOWN, "unreachable", _("TLSA published, but {reason}").format(reason=_(UNREACHABLE)))
        summary = _("TLSA published but no TLS session ({detail}): DANE senders will not deliver").format(
            detail=result.detail
        )
        return make(Status.FAIL, "dane-no-tls", summary)
    matches = dane_matches(tlsa.rdata, result.chain, result.mx)
    make.evidence["records"] = matches
    usable = [m for m in matches if m["usable"]]
    matched = [m for m in usable if m["matches"]]
    counted = _("{matched} of {usable} usable TLSA records match").format(matched=len(matched), usable=len(usable))
    if not tlsa.authenticated:
        summary = _("{counted}, but the TLSA answer is not DNSSEC-authenticated (no AD bit): senders ignore it").format(
            counted=counted
        )
        return make(Status.WARN, "tlsa-not-authenticated", summary)
    if not usable:
        summary = _("no TLSA record usable for SMTP (RFC 7672: usage 2 or 3, selector 0/1, matching type 0/1/2)")
        return make(Status.WARN, "tlsa-unusable", summary)
    if not matched:
        summary = _("no TLSA record matches the certificate: DANE senders will not deliver ({counted})").format(
            counted=counted
        )
        return make(Status.FAIL, "dane-mismatch", summary)
    return make(Status.OK, "dane-match", _("{counted} (DNSSEC-authenticated)").format(counted=counted))
