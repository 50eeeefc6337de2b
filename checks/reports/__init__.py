"""What the providers counted: DMARC aggregate reports and SMTP TLS reports, read, stored and explained.

- `extract`: files, folders and messages (plain, gzip, zip, MIME) to reports and problems; never raises.
- `aggregate`, `smtp_tls`: the two parsers (RFC 7489 / RFC 9990 XML, RFC 8460 JSON).
- `store`: the SQLite store of report rows, deduplicated by reporter and report id, with its query API.
- `collect`: the mailbox run (record, then mark), idempotent across a kill.
- `findings`: unknown sources, alignment failures, quiet reporters and TLS failures as Findings.
"""

from checks.reports._containers import Limits
from checks.reports.aggregate import ReportError, parse_aggregate
from checks.reports.extract import iter_files, read_bytes, read_paths
from checks.reports.model import (
    AuthResult,
    DmarcRecord,
    DmarcReport,
    Extracted,
    PublishedPolicy,
    ReportProblem,
    TlsFailure,
    TlsPolicy,
    TlsReport,
    provider_of,
)
from checks.reports.smtp_tls import FIXES, parse_tls_report

__all__ = [
    "FIXES",
    "AuthResult",
    "DmarcRecord",
    "DmarcReport",
    "Extracted",
    "Limits",
    "PublishedPolicy",
    "ReportError",
    "ReportProblem",
    "TlsFailure",
    "TlsPolicy",
    "TlsReport",
    "iter_files",
    "parse_aggregate",
    "parse_tls_report",
    "provider_of",
    "read_bytes",
    "read_paths",
]
