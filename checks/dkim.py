"""DKIM: the public key at each configured selector (RFC 6376, RFC 8301 key sizes, RFC 8463 ed25519)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.context import CheckContext
from checks.dns.resolver import DnsAnswer
from checks.i18n import N_
from checks.messages import DNS_FAILED, Messages, emit
from checks.model import Finding, Status, Target

__all__ = ["DKIM_TAGS", "MESSAGES", "DkimKey", "check", "parse_dkim_key"]

CHECK = "dkim"
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers must not accept smaller keys
GOOD_RSA_BITS = 2048
ED25519_BYTES = 32

#: Key record tags (RFC 6376 §3.6.1) and their defaults; None means no default.
DKIM_TAGS: Mapping[str, str | None] = {
    "v": "DKIM1",
    "h": None,  # acceptable hash algorithms
    "k": "rsa",  # key type
    "n": None,  # notes for humans
    "p": None,  # the public key, base64; empty = revoked
    "s": "*",  # service types
    "t": None,  # flags: y = testing, s = strict identity
}
KEY_TYPES = frozenset({"rsa", "ed25519"})

_OK, _WARN, _FAIL = Status.OK, Status.WARN, Status.FAIL

#: code -> (status, summary, advice); the {fields} come from the finding's evidence.
MESSAGES: Messages = {
    "not-configured": (
        _WARN,
        N_("DKIM not checked: no selector configured for {domain}"),
        N_('name your selectors: dkim_selectors = ["s1"] under [domains."{domain}"], or --selector NAME'),
    ),
    "key": (_OK, N_("{key_type} key{bits_text} at {name}{via}"), ""),
    "missing": (
        _FAIL,
        N_("no DKIM key at {name} ({outcome})"),
        N_('publish the selector\'s public key: {name} TXT "v=DKIM1; k=rsa; p=<base64 key>", or fix the selector name'),
    ),
    "dns-failed": DNS_FAILED,
    "multiple": (
        _FAIL,
        N_("{count} key records at {name}: verifiers may pick either"),
        N_("keep exactly one v=DKIM1 TXT record at {name}"),
    ),
    "syntax": (
        _FAIL,
        N_("the DKIM key record at {name} is invalid: {errors}"),
        N_("republish the key as your signer prints it"),
    ),
    "revoked": (
        _FAIL,
        N_("the DKIM key at {name} is revoked (empty p=): mail signed with it fails DKIM"),
        N_("sign with another selector and drop {selector} from the configuration, or publish the key again"),
    ),
    "weak-key": (
        _FAIL,
        N_("RSA key of {bits} bits at {name}: verifiers reject keys under 1024 bits (RFC 8301)"),
        N_("generate a 2048-bit key, publish it under a new selector, then switch the signer to it"),
    ),
    "short-key": (
        _WARN,
        N_("RSA key of {bits} bits at {name}: 2048 bits is the norm"),
        N_("generate a 2048-bit key, publish it under a new selector, then switch the signer to it"),
    ),
    "testing": (
        _WARN,
        N_("t=y at {name}: receivers treat mail signed with this key as unsigned"),
        N_('remove t=y once signing works: {name} TXT "{suggested}"'),
    ),
}


@dataclass(frozen=True)
class DkimKey:
    """A parsed DKIM key record; `bits` is the RSA modulus size (or 256 for ed25519), None if unreadable."""

    raw: str
    tags: Mapping[str, str]
    key_type: str
    bits: int | None
    fingerprint: str  # sha256 of the decoded p= (of its text when it is not base64)
    errors: tuple[str, ...] = ()

    @property
    def revoked(self) -> bool:
        return "p" in self.tags and not self.tags["p"]

    @property
    def testing(self) -> bool:
        return "y" in (flag.strip() for flag in self.tags.get("t", "").split(":"))

    def without_testing(self) -> str:
        flags = [flag.strip() for flag in self.tags.get("t", "").split(":") if flag.strip() not in {"y", ""}]
        tags = {**self.tags, "t": ":".join(flags)}
        return "; ".join(f"{name}={value}" for name, value in tags.items() if name != "t" or value)


def _split_tags(text: str) -> tuple[dict[str, str], list[str]]:
    tags: dict[str, str] = {}
    errors: list[str] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            errors.append(f"{part[:40]!r} is not a tag=value pair")
        elif name in tags:
            errors.append(f"tag {name} appears twice")
        else:
            tags[name] = "".join(value.split())  # folding whitespace is allowed inside values
    return tags, errors


def _key_size(key_type: str, der: bytes) -> tuple[int | None, str | None]:
    if key_type == "ed25519":
        ok = len(der) == ED25519_BYTES
        return (256, None) if ok else (None, f"an ed25519 key is 32 bytes, this one {len(der)}")
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError) as error:
        return None, f"p= is not an RSA public key ({error})"
    if not isinstance(key, rsa.RSAPublicKey):
        return None, f"k=rsa but p= holds a {type(key).__name__}"
    return key.key_size, None


def parse_dkim_key(text: str) -> DkimKey:
    """Parse a DKIM key record (the joined TXT strings); never raises, problems go into `errors`."""
    tags, errors = _split_tags(text)
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        errors.append("v= must be DKIM1 and the first tag")
    key_type = tags.get("k", "rsa").lower()
    if key_type not in KEY_TYPES:
        errors.append(f"k={key_type} is not a known key type ({', '.join(sorted(KEY_TYPES))})")
    if "p" not in tags:
        errors.append("p= (the public key) is missing")
    value = tags.get("p", "")
    bits: int | None = None
    try:
        der = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        der = value.encode("utf-8", "replace")
        errors.append("p= is not valid base64")
    else:
        if der and key_type in KEY_TYPES:
            bits, problem = _key_size(key_type, der)
            if problem:
                errors.append(problem)
    return DkimKey(text, tags, key_type, bits, hashlib.sha256(der).hexdigest(), tuple(errors))


def _emit(code: str, subject: str, evidence: Mapping[str, Any], said: Mapping[str, str] | None = None) -> Finding:
    return emit(CHECK, MESSAGES, code, subject, evidence, said=said)


async def check(target: Target, ctx: CheckContext) -> list[Finding]:
    """One or more findings per configured selector of the domain; a warning when none is configured."""
    domain = target.value
    selectors = ctx.dkim_selectors.get(domain, ())
    if not selectors:
        return [_emit("not-configured", domain, {"domain": domain})]
    answers = await asyncio.gather(*(ctx.resolver.query(f"{sel}._domainkey.{domain}", "TXT") for sel in selectors))
    findings: list[Finding] = []
    for selector, answer in zip(selectors, answers, strict=True):
        findings.extend(selector_findings(selector, f"{selector}._domainkey.{domain}", answer))
    return findings


def selector_findings(selector: str, name: str, answer: DnsAnswer) -> list[Finding]:
    """The findings for one selector's TXT answer."""
    evidence: dict[str, Any] = {"selector": selector, "name": name, "outcome": answer.describe()}
    if answer.cnames:
        evidence["cname"] = list(answer.cnames)
    said = {"outcome": answer.said()}
    if answer.failed:
        return [_emit("dns-failed", selector, evidence, said)]
    records = [text for text in answer.texts() if "p=" in text or text.lstrip().startswith("v=DKIM1")]
    if not records:
        return [_emit("missing", selector, evidence | {"records": answer.texts()}, said)]
    if len(records) > 1:
        return [_emit("multiple", selector, evidence | {"count": len(records), "records": records})]
    key = parse_dkim_key(records[0])
    via = f" (CNAME to {answer.cnames[-1].rstrip('.')}: a provider-hosted key, which is fine)" if answer.cnames else ""
    bits_text = f", {key.bits} bits" if key.bits and key.key_type == "rsa" else ""
    evidence |= {"record": key.raw, "key_type": key.key_type, "bits": key.bits, "bits_text": bits_text, "via": via}
    evidence |= {"fingerprint": f"sha256:{key.fingerprint}", "testing": key.testing}
    if key.revoked:
        return [_emit("revoked", selector, evidence)]
    if key.errors:
        return [_emit("syntax", selector, evidence | {"errors": "; ".join(key.errors)})]
    findings = []
    if key.bits is not None and key.key_type == "rsa" and key.bits < GOOD_RSA_BITS:
        findings.append(_emit("weak-key" if key.bits < MIN_RSA_BITS else "short-key", selector, evidence))
    else:
        findings.append(_emit("key", selector, evidence))
    if key.testing:
        findings.append(_emit("testing", selector, evidence | {"suggested": key.without_testing()}))
    return findings
