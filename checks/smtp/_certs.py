"""Certificate and DANE evaluation, pure: SAN names, RFC 6125 name matching and RFC 7672 TLSA matching.

checks.smtp.starttls reads the chain an MX presents; this module only judges it (and starttls re-exports
`dane_matches`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from typing import Any

import dns.rdtypes.tlsabase
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = ["dane_matches", "load_der", "name_matches", "san_names"]

_SPKI_DER, _SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def load_der(der: bytes) -> x509.Certificate | None:
    """The certificate in DER form, or None when it cannot be read."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def san_names(cert: x509.Certificate) -> list[str]:
    """The lower-cased DNS names of the subjectAltName extension (none when it is missing or unreadable)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    except (x509.ExtensionNotFound, ValueError):
        return []


def name_matches(host: str, names: Sequence[str]) -> bool:
    """RFC 6125: does a DNS SAN match `host` (a wildcard covers exactly one left-most label)?"""
    host = host.rstrip(".").lower()
    for name in names:
        name = name.rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _association(der: bytes, selector: int, mtype: int) -> bytes | None:
    cert = load_der(der) if selector == 1 else None
    try:
        data = cert.public_key().public_bytes(_SPKI_DER, _SPKI) if cert else der
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if selector == 1 and cert is None:
        return None
    return data if mtype == 0 else hashlib.new("sha256" if mtype == 1 else "sha512", data).digest()


def _chains_to(chain: Sequence[bytes], anchor: int) -> bool:
    certs = [load_der(der) for der in chain[: anchor + 1]]
    for child, parent in itertools.pairwise(certs):
        if child is None or parent is None:
            return False
        try:
            child.verify_directly_issued_by(parent)
        except Exception:  # any signature, type or name problem means this chain does not reach the anchor
            return False
    return True


def dane_matches(records: Sequence[Any], chain: Sequence[bytes], mx: str) -> list[dict[str, Any]]:
    """For each TLSA record: is it usable for SMTP (RFC 7672: usages 2 and 3), and does it match the chain?"""
    results: list[dict[str, Any]] = []
    leaf = load_der(chain[0]) if chain else None
    for rd in records:
        if not isinstance(rd, dns.rdtypes.tlsabase.TLSABase):
            continue
        usable = rd.usage in (2, 3) and rd.selector in (0, 1) and rd.mtype in (0, 1, 2)
        entry: dict[str, Any] = {"record": rd.to_text(), "usable": usable, "matches": False}
        if usable and chain and rd.usage == 3:
            entry["matches"] = _association(chain[0], rd.selector, rd.mtype) == rd.cert
        elif usable and leaf is not None:
            for index in range(1, len(chain)):
                if _association(chain[index], rd.selector, rd.mtype) == rd.cert:
                    entry["matches"] = _chains_to(chain, index) and name_matches(mx, san_names(leaf))
                    break
        results.append(entry)
    return results
