"""The reputation timeline: the store's history drawn as a PNG, one row per check and subject, one column per day.

Pure functions, no I/O: `timeline_rows` rebuilds each (target, check, subject)'s state per day from the
history of changes and the current state; `draw_timeline` paints them. The history holds changes only, so
the status before the first recorded change of a row is its `old_status` from the window's start, and a
row with no change is in its current status since the state's `since`. Days before any of that, or after
the row was last checked, are "no data". A day that saw several states takes the worst of them.

The picture is 800 px wide with large text, so that Element on a phone (360-400 px) still shows it legibly.
"""

from __future__ import annotations

import io
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bot.i18n import N_, _, day_and_month, ngettext
from bot.monitor.state import AlertState, HistoryEntry
from checks.model import Status

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

__all__ = [
    "COLOURS",
    "NO_DATA",
    "Layout",
    "Row",
    "draw_timeline",
    "layout",
    "timeline_png",
    "timeline_rows",
]

NO_DATA = "none"
SEVERITY_OF = operator.attrgetter("severity")
# Severity for "worst of the day" is the check library's (unknown never counts as ok); no data is below all.
SEVERITY = {NO_DATA: -1, **{status.value: status.severity for status in Status}}
COLOURS: dict[str, tuple[int, int, int]] = {
    Status.OK.value: (46, 160, 67),
    Status.WARN.value: (240, 165, 0),
    Status.FAIL.value: (207, 34, 46),
    Status.UNKNOWN.value: (130, 130, 140),
    NO_DATA: (232, 232, 236),
}
LEGEND = (*((status.value, status.value) for status in sorted(Status, key=SEVERITY_OF)), (NO_DATA, N_("no data")))
MARK = (20, 20, 20)
INK = (30, 30, 30)
MUTED_INK = (95, 95, 105)
BACKGROUND = (255, 255, 255)
# Groups, in the order they are drawn: check id -> heading. Other checks go under "DNS and TLS".
GROUPS = {
    "dnsbl": N_("Blocklists"),
    "snds": N_("Microsoft SNDS"),
    "complaints": N_("Complaints"),
    "canary": N_("Canaries"),
    "dmarc-reports": N_("DMARC reports"),  # a row per reporter: your own mail's alignment there
    "traffic": N_("Outbound mail"),
}
OTHER_GROUP = N_("DNS and TLS")
REPUTATION_CHECKS = frozenset(GROUPS)

WIDTH = 800
MARGIN = 16
LABEL_WIDTH = 270
ROW_HEIGHT = 34
CELL_GAP = 4
HEADING_HEIGHT = 36
TITLE_HEIGHT = 52
AXIS_HEIGHT = 32
LEGEND_HEIGHT = 44
FONT_TITLE, FONT_TEXT, FONT_SMALL = 28, 24, 20


@dataclass(frozen=True)
class Row:
    """One line of the picture: its group heading, label, a state per day and the days with a change."""

    group: str
    label: str
    days: tuple[str, ...]
    changes: frozenset[int] = frozenset()
    check: str = ""


def _when(text: Any) -> datetime | None:
    if not text:
        return None
    stamp = datetime.fromisoformat(str(text))
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _segments(entries: Sequence[HistoryEntry], state: AlertState | None) -> list[tuple[datetime, str]]:
    """(start, status) pieces of one row's life, oldest first; each lasts until the next one starts."""
    pieces: list[tuple[datetime, str]] = []
    for index, entry in enumerate(entries):
        at = _when(entry.at)
        if at is None:
            continue
        kind = entry.kind
        started = _when(entry.since) if kind in ("cannot-check", "problem", "changed") else None
        start: datetime = min(started, at) if started is not None else at
        if index == 0 and entry.old_status:
            pieces.append((datetime.min.replace(tzinfo=UTC), entry.old_status))
        pieces.append((start, entry.status or Status.UNKNOWN.value))
    if not pieces and state is not None:
        if state.status:
            begun = _when(state.since) or _when(state.last_seen)
            if begun is not None:
                pieces.append((begun, state.status))
        elif state.unknown_since:
            blind = _when(state.unknown_since)
            if blind is not None:
                pieces.append((blind, Status.UNKNOWN.value))
    pieces.sort(key=lambda piece: piece[0])
    return pieces


def _day_states(pieces: Sequence[tuple[datetime, str]], end: datetime, first_day: date, days: int) -> tuple[str, ...]:
    result: list[str] = []
    for offset in range(days):
        day_start = datetime.combine(first_day + timedelta(days=offset), time(0), tzinfo=UTC)
        day_end = day_start + timedelta(days=1)
        worst = NO_DATA
        for index, (start, status) in enumerate(pieces):
            stop = pieces[index + 1][0] if index + 1 < len(pieces) else end
            if start < day_end and stop > day_start and start <= end:
                worst = max(worst, status if status in SEVERITY else Status.UNKNOWN.value, key=SEVERITY.__getitem__)
        result.append(worst)
    return tuple(result)


def _label(target: str, check: str, subject: str) -> str:
    if check in GROUPS:
        return subject
    return check if subject == target else f"{check} {subject}"


def _group(target: str, check: str, several_targets: bool) -> str:
    """The heading: the kind of check, and the IP for blocklists when several IPs are drawn."""
    heading = _(GROUPS.get(check, OTHER_GROUP))
    return f"{heading}: {target}" if several_targets and check == "dnsbl" else heading


def timeline_rows(
    history: Iterable[HistoryEntry],
    states: Iterable[AlertState],
    *,
    now: datetime,
    days: int = 30,
    target: str | None = None,
    fold_clean: bool = True,
) -> list[Row]:
    """The rows for one target (every check), or for all targets (the reputation checks only).

    With `fold_clean`, the blocklist zones that were ok (or unchecked) every day share one row.
    """
    first_day = now.astimezone(UTC).date() - timedelta(days=days - 1)
    by_key: dict[tuple[str, str, str], list[HistoryEntry]] = {}
    current: dict[tuple[str, str, str], AlertState] = {}
    for entry in sorted(history, key=lambda item: item.at):
        by_key.setdefault((entry.target, entry.check, entry.subject), []).append(entry)
    for state in states:
        current[(state.target, state.check, state.subject)] = state
    keys = [k for k in {*by_key, *current} if _wanted(k, target)]
    several = len({k[0] for k in keys if k[1] == "dnsbl"}) > 1
    rows: list[tuple[tuple[int, str, str, str], Row]] = []
    for key in keys:
        found = current.get(key)
        end = min(now, _when(found.last_seen) or now) if found is not None else now
        pieces = _segments(by_key.get(key, []), found)
        changes = {(_when(e.at) or now).date() for e in by_key.get(key, []) if e.at}
        marked = frozenset(i for i in range(days) if first_day + timedelta(days=i) in changes)
        group = _group(key[0], key[1], several)
        row = Row(group, _label(*key), _day_states(pieces, end, first_day, days), marked, key[1])
        order = list(GROUPS).index(key[1]) if key[1] in GROUPS else len(GROUPS)
        rows.append(((order, key[0], key[1], key[2]), row))
    ordered = [row for _, row in sorted(rows, key=lambda item: item[0])]
    return _fold(ordered) if fold_clean else ordered


def _wanted(key: tuple[str, str, str], target: str | None) -> bool:
    target_name, check, subject = key
    if check == "complaints" and subject.startswith("complaint "):
        return False  # one state per complaint report; the per-domain count row carries them
    return target_name == target if target is not None else check in REPUTATION_CHECKS


def _fold(rows: Sequence[Row]) -> list[Row]:
    result: list[Row] = []
    for group in dict.fromkeys(row.group for row in rows):
        mine = [row for row in rows if row.group == group]
        clean = [r for r in mine if r.check == "dnsbl" and all(s in (Status.OK.value, NO_DATA) for s in r.days)]
        if len(clean) < 2:
            result += mine
            continue
        days = tuple(max(states, key=SEVERITY.__getitem__) for states in zip(*(r.days for r in clean), strict=True))
        result += [r for r in mine if r not in clean]
        never = ngettext("{count} zones: never listed", "{count} zones: never listed", len(clean))
        result.append(Row(group, never.format(count=len(clean)), days, check="dnsbl"))
    return result


# -- drawing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where things go: the grid's left edge and cell width, and the top of each row."""

    width: int
    height: int
    grid_left: int
    cell_width: int
    row_tops: tuple[int, ...]
    heading_tops: tuple[tuple[str, int], ...]
    axis_top: int
    legend_top: int

    def cell(self, row: int, day: int) -> tuple[int, int, int, int]:
        """The box (left, top, right, bottom; right/bottom exclusive) of one day of one row."""
        left = self.grid_left + day * self.cell_width
        top = self.row_tops[row]
        return left, top, left + self.cell_width - (1 if self.cell_width > 4 else 0), top + ROW_HEIGHT - CELL_GAP


def layout(rows: Sequence[Row], days: int) -> Layout:
    """The geometry of the picture for these rows and this many days."""
    grid_left = MARGIN + LABEL_WIDTH
    cell_width = max(1, (WIDTH - MARGIN - grid_left) // max(1, days))
    y = TITLE_HEIGHT
    tops: list[int] = []
    headings: list[tuple[str, int]] = []
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            headings.append((group, y))
            y += HEADING_HEIGHT
        tops.append(y)
        y += ROW_HEIGHT
    axis_top = y + 2
    legend_top = axis_top + AXIS_HEIGHT
    height = legend_top + LEGEND_HEIGHT + MARGIN // 2
    return Layout(WIDTH, height, grid_left, cell_width, tuple(tops), tuple(headings), axis_top, legend_top)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def draw_timeline(rows: Sequence[Row], *, title: str, first_day: date, days: int) -> bytes:
    """The PNG bytes of the picture: title, a heading per group, a labelled row each, the day axis, the legend."""
    geometry = layout(rows, days)
    image = Image.new("RGB", (geometry.width, geometry.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    big = ImageFont.load_default(size=FONT_TITLE)
    text = ImageFont.load_default(size=FONT_TEXT)
    small = ImageFont.load_default(size=FONT_SMALL)
    draw.text((MARGIN, 10), _fit(draw, title, big, WIDTH - 2 * MARGIN), font=big, fill=INK)
    for heading, top in geometry.heading_tops:
        draw.text((MARGIN, top + 8), heading, font=small, fill=MUTED_INK)
    for index, row in enumerate(rows):
        top = geometry.row_tops[index]
        draw.text((MARGIN, top + 2), _fit(draw, row.label, text, LABEL_WIDTH - 10), font=text, fill=INK)
        for day, status in enumerate(row.days):
            box = geometry.cell(index, day)
            draw.rectangle(
                (box[0], box[1], box[2] - 1, box[3] - 1), fill=COLOURS.get(status, COLOURS[Status.UNKNOWN.value])
            )
            if day in row.changes:
                _mark(draw, box)
    _axis(draw, geometry, first_day, days, small)
    _legend(draw, geometry, small)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _mark(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    """A dark dot in the middle of a cell: the day something changed."""
    radius = max(1, min(box[2] - box[0], box[3] - box[1]) // 4)
    x, y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=MARK)


def _axis(draw: ImageDraw.ImageDraw, geometry: Layout, first_day: date, days: int, font: Font) -> None:
    step = max(1, round(days / 5))
    room = draw.textlength("00 Mmm", font=font) + 12
    last_x = min(geometry.grid_left + (days - 1) * geometry.cell_width, WIDTH - MARGIN - room + 12)
    ticks = [day for day in range(0, days, step) if geometry.grid_left + day * geometry.cell_width + room <= last_x]
    for day in [*ticks, days - 1]:
        x = geometry.grid_left + day * geometry.cell_width
        label = day_and_month(first_day + timedelta(days=day))
        shown = min(x, WIDTH - MARGIN - int(draw.textlength(label, font=font)))
        draw.line((x, geometry.axis_top, x, geometry.axis_top + 5), fill=MUTED_INK, width=1)
        draw.text((shown, geometry.axis_top + 6), label, font=font, fill=MUTED_INK)


def _legend(draw: ImageDraw.ImageDraw, geometry: Layout, font: Font) -> None:
    x, y = MARGIN, geometry.legend_top + 8
    for status, words in LEGEND:
        draw.rectangle((x, y, x + 20, y + 20), fill=COLOURS[status], outline=MUTED_INK if status == NO_DATA else None)
        x += 26
        said = _(words)
        draw.text((x, y), said, font=font, fill=INK)
        x += int(draw.textlength(said, font=font)) + 18
    _mark(draw, (x, y, x + 20, y + 20))
    draw.text((x + 26, y), _("change"), font=font, fill=INK)


def timeline_png(
    history: Iterable[HistoryEntry],
    states: Iterable[AlertState],
    *,
    now: datetime,
    days: int = 30,
    target: str | None = None,
) -> bytes | None:
    """The timeline picture for a target (or every target's reputation), or None when there is nothing to draw."""
    rows = timeline_rows(history, states, now=now, days=days, target=target)
    if not rows:
        return None
    first_day = now.astimezone(UTC).date() - timedelta(days=days - 1)
    title = _("{what}: last {days} days").format(what=target or _("reputation"), days=days)
    return draw_timeline(rows, title=title, first_day=first_day, days=days)
