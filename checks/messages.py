"""Findings from a message table: code -> (status, summary, advice), the shape dkim, dmarc, mtasts and tlsrpt share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from checks.i18n import N_, _
from checks.model import Finding, Status

__all__ = ["DNS_FAILED", "Messages", "emit"]

#: code -> (status, summary, advice); the {fields} come from the finding's evidence.
Messages = Mapping[str, tuple[Status, str, str]]

#: The entry every record check uses when its TXT look-up failed; evidence needs `name` and `outcome`.
DNS_FAILED = (
    Status.UNKNOWN,
    N_("could not look up {name}: {outcome}"),
    N_("try again later; if it lasts, check the DNS"),
)


def emit(
    check: str,
    messages: Messages,
    code: str,
    subject: str,
    evidence: Mapping[str, Any],
    status: Status | None = None,
    said: Mapping[str, str] | None = None,
) -> Finding:
    """The Finding for `code`, its texts filled from `evidence`; `status` overrides the table's (no advice when OK).

    `said` gives fields worded in the active language for the texts only (a DNS outcome's `said()`): the
    evidence keeps the English, as JSON and logs do.
    """
    default, summary, advice = messages[code]
    status = status or default
    fields = {**evidence, **said} if said else evidence
    advice = "" if status is Status.OK else _(advice).format_map(fields)
    return Finding(check, subject, status, _(summary).format_map(fields), dict(evidence), advice, code)
