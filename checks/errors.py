"""Every exception the check library raises, in one tree.

    CheckError                 root: anything a check can raise on purpose
    ├── TargetError            the text is not a domain, an IPv4 or an IPv6 address
    ├── CatalogError           the blocklist zone data (zones.toml or config) is malformed
    ├── SpfSyntaxError         an SPF record, term or macro breaks the RFC 7208 grammar
    └── LookupFailed           a network look-up gave no usable answer
        ├── DnsFailed          a DNS query ended in SERVFAIL, REFUSED, timeout or a network error
        └── ServiceError       a service answered, but not with what we asked for; `code` says why
            ├── MailboxError   the IMAP mailbox cannot be used
            ├── SndsAnswerError SNDS sent something that is not data
            ├── TokenError     no OAuth access token can be had
            └── CredentialError a password, key or token the check needs cannot be read

Every error has a stable `code` and its fields as `evidence()`; the runner (`checks.runner.attempt`) turns a
LookupFailed into an `unknown` Finding carrying both, in one place.
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "CheckError",
    "CredentialError",
    "DnsFailed",
    "LookupFailed",
    "MailboxError",
    "ServiceError",
    "SndsAnswerError",
    "SpfSyntaxError",
    "TargetError",
    "TokenError",
]


Plain = str | int | float | bool | None | list["Plain"] | dict[str, "Plain"]


class CheckError(Exception):
    """Raised on purpose by the check library; the root of its errors."""

    code: str = "check-error"

    def evidence(self) -> dict[str, Plain]:
        """The error's fields (what was asked, who answered what), JSON-ready, for an `unknown` finding."""
        fields = {
            name: _plain(value) for name, value in vars(self).items() if not name.startswith("_") and name != "code"
        }
        return {"error": type(self).__name__, **fields}


def _plain(value: object) -> Plain:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    to_json = getattr(value, "to_json", None)
    return _plain(to_json()) if callable(to_json) else str(value)


class TargetError(CheckError, ValueError):
    """Raised when a target is not a valid domain name, IPv4 or IPv6 address."""


class CatalogError(CheckError):
    """Raised when zone data is malformed; the message names the zone and the field."""

    def __init__(self, zone: str, field: str, problem: str) -> None:
        self.zone = zone
        self.field = field
        self.problem = problem
        super().__init__(f"zone {zone!r}, field {field!r}: {problem}")


class LookupFailed(CheckError):
    """Raised when a network look-up gave no usable answer."""

    code = "lookup-failed"


class DnsFailed(LookupFailed):
    """Raised when a DNS query ended without an answer (its outcome says why)."""

    def __init__(self, name: str, rdtype: str, outcome: str, server: str = "") -> None:
        self.name = name
        self.rdtype = rdtype
        self.outcome = outcome
        self.server = server
        where = f" from {server}" if server else ""
        super().__init__(f"{rdtype} {name}: {outcome}{where}")


class SpfSyntaxError(CheckError, ValueError):
    """Raised when an SPF record, term or macro string breaks the RFC 7208 grammar (a permerror)."""


class ServiceError(LookupFailed):
    """Raised when a service answered with something unusable; `code` is a stable machine word for why."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class MailboxError(ServiceError):
    """Raised when the mailbox cannot be used; `code` is connect, tls, auth, timeout, dropped or protocol."""


class SndsAnswerError(ServiceError):
    """Raised when SNDS answered with something that is not data; `code` says what (login-page, key-expired...)."""


class TokenError(ServiceError):
    """Raised when no access token can be had; `code` is auth (refused, missing) or unreachable."""


class CredentialError(ServiceError):
    """Raised when a credential cannot be read (its file is missing, its command failed); `key` names it.

    The message never holds the credential: it says which key and what failed.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__("credential", message)
