"""Cross-signing keys for the bot's own account: canonical JSON, ed25519 signatures, and the key file.

matrix-nio has no cross-signing (nio #229), so the three keys (master, self-signing, user-signing) are made
here with `cryptography`'s Ed25519. Signatures follow the Matrix spec ("Signing JSON"): the object without
`signatures` and `unsigned`, as canonical JSON (sorted keys, no whitespace, UTF-8, integers only), signed,
and the unpadded-base64 signature put under `signatures.<user>.ed25519:<public key>`.

The private keys live in `cross_signing.json` in the store directory, encrypted with AES-GCM under a key
derived from the pickle key by scrypt; the public keys sit beside them in clear (they are public anyway),
bound to the ciphertext as associated data, so `repbot identity` can print the master key without the
pickle key and a file whose public half was altered fails to open.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bot.transports.session import write_private

__all__ = [
    "KEY_FILE",
    "CrossSigningKeys",
    "KeyFile",
    "KeyFileError",
    "PublicKeys",
    "canonical_json",
    "fingerprint",
    "published_keys",
    "sign_json",
    "unpadded_b64",
    "verify_json",
]

KEY_FILE = "cross_signing.json"
FORMAT_VERSION = 1
# scrypt's interactive cost (16 MiB, tens of ms): the pickle key may be a passphrase, and this runs once a start.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# Canonical JSON allows only integers that survive a round trip through an IEEE double.
MAX_SAFE_INT = 2**53 - 1
ROLES = ("master", "self_signing", "user_signing")


class KeyFileError(Exception):
    """Raised when the key file cannot be read or opened (damaged, another account's, another pickle key)."""


def unpadded_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _check_canonical(value: object) -> None:
    if isinstance(value, float):
        raise ValueError("canonical JSON has no floats")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
        raise ValueError(f"{value} is outside canonical JSON's integer range")
    if isinstance(value, Mapping):
        for item in value.values():
            _check_canonical(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_canonical(item)


def canonical_json(value: object) -> bytes:
    """The spec's canonical form: sorted keys, no insignificant whitespace, UTF-8; raises ValueError for floats."""
    _check_canonical(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def _signable(value: Mapping[str, Any]) -> dict[str, Any]:
    return {key: item for key, item in value.items() if key not in ("signatures", "unsigned")}


def public_b64(key: Ed25519PrivateKey) -> str:
    return unpadded_b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def sign_json(value: Mapping[str, Any], user_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `value` with this key's signature added beside the signatures it already has."""
    signature = unpadded_b64(key.sign(canonical_json(_signable(value))))
    signed = dict(value)
    signed.pop("unsigned", None)
    signatures = {user: dict(keys) for user, keys in (value.get("signatures") or {}).items()}
    signatures.setdefault(user_id, {})[f"ed25519:{public_b64(key)}"] = signature
    signed["signatures"] = signatures
    return signed


def verify_json(value: Mapping[str, Any], user_id: str, public_key: str) -> bool:
    """True when `value` carries a valid signature by the ed25519 key `public_key` (unpadded base64)."""
    signature = ((value.get("signatures") or {}).get(user_id) or {}).get(f"ed25519:{public_key}")
    if not isinstance(signature, str):
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(_b64decode(public_key))
        key.verify(_b64decode(signature), canonical_json(_signable(value)))
    except (InvalidSignature, ValueError):
        return False
    return True


def _only_key(key: object) -> str | None:
    values = list((key.get("keys") or {}).values()) if isinstance(key, Mapping) else []
    return str(values[0]) if len(values) == 1 else None


def published_keys(query: Mapping[str, Any], user_id: str) -> tuple[str | None, str | None]:
    """(master, self-signing) public keys in a /keys/query answer; the latter only if the master key signed it."""
    master = _only_key((query.get("master_keys") or {}).get(user_id))
    self_signing_key = (query.get("self_signing_keys") or {}).get(user_id)
    self_signing = _only_key(self_signing_key)
    if master is None or self_signing is None or not isinstance(self_signing_key, Mapping):
        return master, None
    if not verify_json(self_signing_key, user_id, master):
        return master, None
    return master, self_signing


def fingerprint(public_key: str) -> str:
    """The key in groups of four characters, as Element shows session keys, for reading aloud."""
    return " ".join(public_key[i : i + 4] for i in range(0, len(public_key), 4))


@dataclass(frozen=True)
class PublicKeys:
    """The public halves of the three keys (unpadded base64)."""

    master: str
    self_signing: str
    user_signing: str


@dataclass(frozen=True)
class CrossSigningKeys:
    """The account's three private keys; never printed."""

    master: Ed25519PrivateKey = field(repr=False)
    self_signing: Ed25519PrivateKey = field(repr=False)
    user_signing: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    @property
    def public(self) -> PublicKeys:
        return PublicKeys(public_b64(self.master), public_b64(self.self_signing), public_b64(self.user_signing))

    def upload_body(self, user_id: str) -> dict[str, Any]:
        """The body of /keys/device_signing/upload: the master key, and the other two signed by it."""

        def key(role: str, private: Ed25519PrivateKey) -> dict[str, Any]:
            public = public_b64(private)
            return {"user_id": user_id, "usage": [role], "keys": {f"ed25519:{public}": public}}

        return {
            "master_key": key("master", self.master),
            "self_signing_key": sign_json(key("self_signing", self.self_signing), user_id, self.master),
            "user_signing_key": sign_json(key("user_signing", self.user_signing), user_id, self.master),
        }

    def _seeds(self) -> dict[str, str]:
        raw = {role: getattr(self, role).private_bytes_raw() for role in ROLES}
        return {role: unpadded_b64(seed) for role, seed in raw.items()}


def _aes_key(pickle_key: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(pickle_key.encode())


class KeyFile:
    """cross_signing.json in the store directory: the public keys in clear, the private ones sealed."""

    def __init__(self, store_dir: Path, user_id: str) -> None:
        self.path = store_dir / KEY_FILE
        self.user_id = user_id

    def __repr__(self) -> str:
        return f"<KeyFile {self.path}>"

    def exists(self) -> bool:
        return self.path.exists()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise KeyFileError(f"{self.path} is unreadable ({error})") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise KeyFileError(f"{self.path} is not a repbot cross-signing key file (version {FORMAT_VERSION})")
        if data.get("user_id") != self.user_id:
            raise KeyFileError(f"{self.path} holds the keys of {data.get('user_id')}, not of {self.user_id}")
        return data

    def public(self) -> PublicKeys:
        """The public keys, without the pickle key; raises KeyFileError."""
        data = self._read()
        try:
            return PublicKeys(*(str(data["public"][role]) for role in ROLES))
        except (KeyError, TypeError):
            raise KeyFileError(f"{self.path} lacks its public keys") from None

    def load(self, pickle_key: str) -> CrossSigningKeys:
        """The private keys; raises KeyFileError when the file is damaged or the pickle key is not the one."""
        data = self._read()
        public = self.public()
        try:
            salt, nonce, sealed = (_b64decode(str(data[name])) for name in ("salt", "nonce", "ciphertext"))
            plain = AESGCM(_aes_key(pickle_key, salt)).decrypt(nonce, sealed, self._associated(public))
            seeds = json.loads(plain)
            keys = CrossSigningKeys(*(Ed25519PrivateKey.from_private_bytes(_b64decode(seeds[role])) for role in ROLES))
        except InvalidTag:
            raise KeyFileError(
                f"{self.path} does not open with this pickle key (was the pickle key changed?)"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise KeyFileError(f"{self.path} is damaged") from None
        if keys.public != public:
            raise KeyFileError(f"{self.path} is damaged: its private keys do not match its public keys")
        return keys

    def save(self, keys: CrossSigningKeys, pickle_key: str) -> None:
        """Seal the keys under the pickle key and write the file (mode 0600, atomically)."""
        salt, nonce = secrets.token_bytes(16), os.urandom(12)
        public = keys.public
        plain = json.dumps(keys._seeds()).encode()
        sealed = AESGCM(_aes_key(pickle_key, salt)).encrypt(nonce, plain, self._associated(public))
        data = {
            "version": FORMAT_VERSION,
            "user_id": self.user_id,
            "public": {role: getattr(public, role) for role in ROLES},
            "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "cipher": "AES-256-GCM",
            "salt": unpadded_b64(salt),
            "nonce": unpadded_b64(nonce),
            "ciphertext": unpadded_b64(sealed),
        }
        write_private(self.path, json.dumps(data, indent=1))

    def _associated(self, public: PublicKeys) -> bytes:
        return canonical_json({"user_id": self.user_id, **{role: getattr(public, role) for role in ROLES}})
