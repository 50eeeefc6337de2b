"""IMAP access as [feedback] and the [canary] mailboxes declare it: host, user, port, security, password or token."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.credentials import optional_credential
from bot.config.reader import MAX_TIMEOUT, Secret, Section
from checks import CheckContext
from checks.mailbox import MailboxSettings

__all__ = ["ImapConfig", "read_imap"]

SECURITIES = ("tls", "starttls", "plain")


@dataclass(frozen=True)
class ImapConfig:
    """One mailbox's login; the password or XOAUTH2 token stays a Secret until used."""

    host: str
    user: str
    port: int = 993
    security: str = "tls"
    password: Secret | None = None
    token: Secret | None = None
    timeout: float = 20.0

    def settings(self, ctx: CheckContext) -> MailboxSettings:
        """The check library's settings for this mailbox, with the context's TLS settings."""
        return MailboxSettings(
            self.host,
            self.user,
            self.port,
            self.security,
            password=optional_credential(self.password),
            token=optional_credential(self.token),
            timeout=self.timeout,
            ssl_context=ctx.ssl_context,
        )


def read_imap(section: Section, *, one_credential: str, port_without_tls: int = 143) -> ImapConfig:
    """The IMAP keys of `section`, which the caller finishes (it may hold other keys).

    `one_credential` is the problem text when neither or both of password and token are given;
    `port_without_tls` is the default port for starttls and plain.
    """
    security = section.choice("security", "tls", SECURITIES)
    imap = ImapConfig(
        host=section.required_str("host"),
        user=section.required_str("user"),
        port=section.number("port", int, 993 if security == "tls" else port_without_tls, low=1, high=65535),
        security=security,
        password=section.secret("password"),
        token=section.secret("token"),
        timeout=section.number("timeout", float, 20.0, low=0, high=MAX_TIMEOUT),
    )
    if (imap.password is None) == (imap.token is None):
        section.problem("password", one_credential)
    return imap
