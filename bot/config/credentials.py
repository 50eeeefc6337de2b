"""A configured Secret as the check library takes a credential: a plain callable, raising the library's own error.

A secret whose file or command fails then reaches the runner as a CredentialError, and becomes an `unknown`
finding naming the key, like any other failed look-up, not a bot exception the check library cannot know.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.config.reader import Secret, SecretError
from checks.errors import CredentialError

__all__ = ["credential", "optional_credential"]


def credential(secret: Secret) -> Callable[[], str]:
    """`secret.get`, raising CredentialError (never holding the secret) when it cannot be read."""

    def read() -> str:
        try:
            return secret.get()
        except SecretError as error:
            raise CredentialError(secret.key, str(error)) from None

    return read


def optional_credential(secret: Secret | None) -> Callable[[], str] | None:
    return credential(secret) if secret is not None else None
