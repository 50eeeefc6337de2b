"""SNDS answers as data: the legacy CSV and REST JSON parsers, pure functions from text.

checks.providers.snds re-exports them.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from checks.errors import SndsAnswerError
from checks.i18n import _
from checks.model import Status

TIME_FORMAT = "%m/%d/%Y %I:%M %p"
COLOURS = {"GREEN": Status.OK, "YELLOW": Status.WARN, "RED": Status.FAIL}
MAX_BLOCK_EXPANSION = 65536


@dataclass(frozen=True)
class DataRow:
    """One data.aspx row (or REST record): the activity of one IP over one period (Pacific time)."""

    ip: str
    start: datetime
    end: datetime
    rcpt_commands: int
    data_commands: int
    recipients: int
    colour: str
    complaint_text: str
    complaint_percent: float | None
    trap_start: datetime | None
    trap_end: datetime | None
    trap_hits: int
    helo: str = ""
    jmr_sender: str = ""
    comments: str = ""

    @property
    def day(self) -> date:
        """The day the row counts for: the day its activity ends, so a row spanning midnight counts once."""
        return self.end.date()


@dataclass(frozen=True)
class BlockRange:
    """One ipStatus.aspx line: a range of addresses and why Microsoft blocks it."""

    first: ipaddress.IPv4Address | ipaddress.IPv6Address
    last: ipaddress.IPv4Address | ipaddress.IPv6Address
    blocked: bool
    reason: str

    def __contains__(self, ip: object) -> bool:
        address = ipaddress.ip_address(str(ip))
        return address.version == self.first.version and self.first <= address <= self.last  # type: ignore[operator]

    def addresses(self) -> list[str]:
        """Every address in the range (refused past MAX_BLOCK_EXPANSION)."""
        count = int(self.last) - int(self.first) + 1
        if count > MAX_BLOCK_EXPANSION:
            raise ValueError(f"range {self.first}-{self.last} has {count} addresses; match it instead")
        return [str(ipaddress.ip_address(int(self.first) + n)) for n in range(count)]


def classify_answer(status_code: int, content_type: str, body: str) -> None:
    """Raise SndsAnswerError when an HTTP answer is not data: login page, expired key, error, empty body."""
    if status_code == 404:
        raise SndsAnswerError("key-expired", _("SNDS answered 404: the access key has expired or was revoked"))
    if status_code in (401, 403):
        raise SndsAnswerError("auth", _("SNDS refused the credentials (HTTP {status})").format(status=status_code))
    if 300 <= status_code < 400:
        said = _("SNDS redirected (HTTP {status}), most likely to a login page")
        raise SndsAnswerError("login-page", said.format(status=status_code))
    if status_code != 200:
        raise SndsAnswerError("http-error", _("SNDS answered HTTP {status}").format(status=status_code))
    head = body.lstrip()[:512].lower()
    if "html" in content_type.lower() or head.startswith(("<!doctype", "<html", "<head", "<body", "<form")):
        said = _("SNDS sent an HTML page (a login page?) instead of data: renew access")
        raise SndsAnswerError("login-page", said)
    if not head:
        raise SndsAnswerError("empty", _("SNDS sent an empty answer"))


_NO_DATA = re.compile(r"^\s*\"?no data\b", re.IGNORECASE)


def is_no_data(body: str) -> bool:
    """True when the body is SNDS's plain "no data" message (normal under ~100 messages a day)."""
    return bool(_NO_DATA.match(body))


def parse_complaint_rate(text: str) -> float | None:
    """The complaint rate in percent: '< 0.1%' -> 0.1 (an upper bound), '0.35%' -> 0.35, 'None'/'' -> None."""
    cleaned = text.strip().lstrip("<").strip().rstrip("%").strip()
    if not cleaned or cleaned.lower() in ("none", "n/a", "-"):
        return None
    try:
        return float(cleaned)
    except ValueError:
        return None


def _time(text: str) -> datetime | None:
    text = " ".join(text.split())
    if not text:
        return None
    try:
        return datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def _int(text: Any) -> int:
    return int(str(text).strip() or 0)


def parse_data_csv(text: str) -> list[DataRow]:
    """The rows of a data.aspx answer (no header, CRLF, 0-based columns as documented); raises ValueError."""
    rows: list[DataRow] = []
    for number, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or not "".join(cells).strip():
            continue
        if len(cells) < 11:
            raise ValueError(f"line {number}: {len(cells)} columns, expected 14")
        # Columns 11-13 are HELO, JMR P1 sender, comments: the comments may themselves contain commas.
        tail = [*cells[11:13], ",".join(cells[13:])] + [""] * 3
        try:
            rows.append(_row(cells[:11], tail[0], tail[1], tail[2]))
        except ValueError as error:
            raise ValueError(f"line {number}: {error}") from None
    return rows


def _row(cells: Sequence[str], helo: str, jmr: str, comments: str) -> DataRow:
    ip = ipaddress.ip_address(cells[0].strip()).compressed
    start, end = _time(cells[1]), _time(cells[2])
    if start is None or end is None:
        raise ValueError("no activity period")
    colour = cells[6].strip().upper()
    if colour not in COLOURS:
        raise ValueError(f"unknown filter result {cells[6]!r}")
    return DataRow(
        ip=ip,
        start=start,
        end=end,
        rcpt_commands=_int(cells[3]),
        data_commands=_int(cells[4]),
        recipients=_int(cells[5]),
        colour=colour,
        complaint_text=cells[7].strip(),
        complaint_percent=parse_complaint_rate(cells[7]),
        trap_start=_time(cells[8]),
        trap_end=_time(cells[9]),
        trap_hits=_int(cells[10]),
        helo=helo.strip(),
        jmr_sender=jmr.strip(),
        comments=comments.strip(),
    )


# The REST API's JSON names, as third-party code shows them; each maps to a CSV column.
_JSON_FIELDS = (
    ("ipaddress", "ip"),
    ("activitystart", "activitystarttime"),
    ("activityend", "activityendtime"),
    ("rcptcommands", "rcpt"),
    ("datacommands", "data"),
    ("messagerecipients", "recipients"),
    ("filterresult", "filterresults"),
    ("complaintrate", "complaintrate"),
    ("trapmessagesstart", "trapperiodstart"),
    ("trapmessagesend", "trapperiodend"),
    ("traphits", "trapmessages"),
)


def _records(payload: Any) -> list[Any]:
    if isinstance(payload, dict):
        for name in ("value", "data", "items", "results"):
            if isinstance(payload.get(name), list):
                return list(payload[name])
        return [payload]
    if isinstance(payload, list):
        return payload
    raise ValueError(f"expected a JSON list of records, got {type(payload).__name__}")


def parse_data_json(text: str) -> list[DataRow]:
    """The rows of a REST `report/data` answer (a JSON list of records); raises ValueError."""
    rows = []
    for record in _records(json.loads(text)):
        if not isinstance(record, dict):
            raise ValueError("a record is not a JSON object")
        lower = {key.lower(): value for key, value in record.items()}
        cells = [str(lower.get(a, lower.get(b, "")) or "") for a, b in _JSON_FIELDS]
        rows.append(_row(cells, str(lower.get("samplehelo", "")), str(lower.get("jmrp1sender", "")), ""))
    return rows


def dedupe_rows(rows: Iterable[DataRow]) -> list[DataRow]:
    """One row per (ip, day), keeping the one whose period ends last; sorted by ip then day."""
    kept: dict[tuple[str, date], DataRow] = {}
    for row in rows:
        key = (row.ip, row.day)
        if key not in kept or (row.end, row.recipients) > (kept[key].end, kept[key].recipients):
            kept[key] = row
    return sorted(kept.values(), key=lambda r: (r.ip, r.day))


def parse_ip_status(text: str) -> list[BlockRange]:
    """The ranges of an ipStatus.aspx answer (`first_ip,last_ip,Yes,reason`); raises ValueError."""
    ranges = []
    for number, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or not "".join(cells).strip():
            continue
        if len(cells) < 3:
            raise ValueError(f"line {number}: {len(cells)} columns, expected 4")
        blocked = cells[2].strip().lower() in ("yes", "true", "1")
        ranges.append(_range(cells[0], cells[1], blocked, ",".join(cells[3:]).strip()))
    return ranges


def parse_status_json(text: str) -> list[BlockRange]:
    """The ranges of a REST `report/status/ip` answer; raises ValueError."""
    ranges = []
    for record in _records(json.loads(text)):
        lower = {key.lower(): value for key, value in record.items()}
        blocked = lower.get("blocked")
        is_blocked = blocked is True or str(blocked).strip().lower() in ("yes", "true", "1")
        ranges.append(
            _range(
                str(lower.get("beginningipaddress", "")),
                str(lower.get("endingipaddress", "")),
                is_blocked,
                str(lower.get("reason") or ""),
            )
        )
    return ranges


def _range(first_text: str, last_text: str, blocked: bool, reason: str) -> BlockRange:
    first = ipaddress.ip_address(first_text.strip())
    last = ipaddress.ip_address(last_text.strip() or first_text.strip())
    if first.version != last.version or first > last:  # type: ignore[operator]
        raise ValueError(f"bad range {first_text}-{last_text}")
    return BlockRange(first, last, blocked, reason)
