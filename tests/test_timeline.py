"""The timeline picture: rows rebuilt from hand-made history, and the PNG's size and pixel colours."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from bot.app import Bot, Permissions, RateLimiter
from bot.commands.registry import REGISTRY, Services
from bot.config.loader import Config
from bot.context import build_context
from bot.monitor.core import Monitor
from bot.monitor.state import AlertState, HistoryEntry
from bot.monitor.store import Store
from bot.runtime import console_transport
from bot.timeline import COLOURS, MARK, NO_DATA, WIDTH, layout, timeline_png, timeline_rows
from bot.transports.base import Incoming
from bot.transports.console import CONSOLE_USER

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
IP = "192.0.2.1"


def at(days_ago: int, hour: int = 10) -> str:
    return (NOW - timedelta(days=days_ago)).replace(hour=hour).isoformat()


def change(
    kind: str, check: str, subject: str, status: str, days_ago: int, old: str | None = None, since: int | None = None
) -> HistoryEntry:
    return HistoryEntry(at(days_ago), kind, IP, check, subject, status, old_status=old,
                        since=at(days_ago if since is None else since))  # fmt: skip


def state(check: str, subject: str, status: str | None, since: int, seen: int = 0, target: str = IP) -> AlertState:
    return AlertState(f"{target}|{check}|{subject}", target, check, subject, status=status, since=at(since),
                      last_seen=at(seen))  # fmt: skip


HISTORY = [
    change("problem", "dnsbl", "zen.spamhaus.org", "fail", 20, old="ok"),
    change("resolved", "dnsbl", "zen.spamhaus.org", "ok", 15, old="fail"),
    change("changed", "snds", IP, "warn", 10, old="ok"),
    change("cannot-check", "dnsbl", "b.barracudacentral.org", "unknown", 5, since=6),
    change("checking-again", "dnsbl", "b.barracudacentral.org", "ok", 3),
]
STATES = [
    state("dnsbl", "zen.spamhaus.org", "ok", 15),
    state("dnsbl", "b.barracudacentral.org", "ok", 25),
    state("dnsbl", "bl.spamcop.net", "ok", 25),
    state("dnsbl", "psbl.surriel.com", "ok", 25),
    state("snds", IP, "warn", 10, seen=2),
    state("canary", "outlook", "ok", 12, target="outlook.com"),
    state("spf", IP, "ok", 25),
]


def test_rows_per_day_from_history_and_state() -> None:
    rows = timeline_rows(HISTORY, STATES, now=NOW, days=30, target=IP)
    by_label = {row.label: row for row in rows}
    assert [row.group for row in rows] == ["Blocklists"] * 3 + ["Microsoft SNDS", "DNS and TLS"]
    zen = by_label["zen.spamhaus.org"].days
    assert zen[29 - 21] == "ok" and zen[29 - 20] == "fail" and zen[29 - 16] == "fail" and zen[29 - 14] == "ok"
    assert zen[29 - 15] == "fail"  # the day it was delisted saw both: the worst counts
    assert by_label["zen.spamhaus.org"].changes == frozenset({29 - 20, 29 - 15})
    barracuda = by_label["b.barracudacentral.org"].days
    assert barracuda[29 - 7] == NO_DATA  # before the first record: the cannot-check has no old status
    assert barracuda[29 - 6] == "unknown" and barracuda[29 - 3] == "unknown" and barracuda[29 - 2] == "ok"
    # Two zones were clean all along: they share one row, "no data" before they were first confirmed.
    folded = by_label["2 zones: never listed"].days
    assert folded[29 - 26] == NO_DATA and folded[29 - 25] == "ok"
    snds = by_label[IP].days
    assert snds[29 - 11] == "ok" and snds[29 - 10] == "warn" and snds[29 - 2] == "warn"
    assert snds[29 - 1] == NO_DATA and snds[29] == NO_DATA  # not checked since: no data, not warn
    assert "outlook" not in by_label  # another target
    everything = timeline_rows(HISTORY, STATES, now=NOW, days=30)
    assert {row.label for row in everything} >= {"outlook", IP} and "spf" not in {r.label for r in everything}
    unfolded = timeline_rows(HISTORY, STATES, now=NOW, days=30, target=IP, fold_clean=False)
    assert len([row for row in unfolded if row.group == "Blocklists"]) == 4


def test_the_picture_has_the_size_and_the_colours_of_the_states() -> None:
    png = timeline_png(HISTORY, STATES, now=NOW, days=30, target=IP)
    assert png is not None and png.startswith(b"\x89PNG")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    rows = timeline_rows(HISTORY, STATES, now=NOW, days=30, target=IP)
    geometry = layout(rows, 30)
    assert image.size == (WIDTH, geometry.height)
    assert 400 <= geometry.height <= 700
    assert geometry.cell_width >= 14  # a day is a finger-wide stripe on a phone

    def colour(row: int, day: int, where: str = "corner") -> tuple[int, int, int]:
        left, top, right, bottom = geometry.cell(row, day)
        point = (left + 1, top + 1) if where == "corner" else ((left + right) // 2, (top + bottom) // 2)
        pixel = image.getpixel(point)
        assert isinstance(pixel, tuple)
        return (pixel[0], pixel[1], pixel[2])

    labels = [row.label for row in rows]
    zen, barracuda, snds = labels.index("zen.spamhaus.org"), labels.index("b.barracudacentral.org"), labels.index(IP)
    assert colour(zen, 29 - 21) == COLOURS["ok"]
    assert colour(zen, 29 - 18) == COLOURS["fail"]
    assert colour(zen, 29 - 20, "centre") == MARK  # the listing day is marked
    assert colour(zen, 29 - 18, "centre") == COLOURS["fail"]  # a day without a change is not
    assert colour(barracuda, 29 - 4) == COLOURS["unknown"]
    assert colour(barracuda, 29 - 10) == COLOURS[NO_DATA]
    assert colour(snds, 29 - 5) == COLOURS["warn"]
    assert colour(snds, 29) == COLOURS[NO_DATA]


def test_ninety_days_still_fit_and_nothing_recorded_is_none() -> None:
    png = timeline_png(HISTORY, STATES, now=NOW, days=90, target=IP)
    assert png is not None
    assert Image.open(io.BytesIO(png)).size[0] == WIDTH
    assert timeline_png([], [], now=NOW) is None


def test_timeline_in_the_console_writes_the_png_under_the_state_dir(tmp_path: Path) -> None:
    config = Config(state_dir=str(tmp_path / "state"))
    out = io.StringIO()
    transport = console_transport(config, stdin=io.StringIO(""), stdout=out)
    store = Store(tmp_path / "state" / "monitor.json", clock=lambda: NOW)
    with store.batch():
        for entry in HISTORY:
            store.add_history(entry)
        for item in STATES:
            store.put_state(item)
    ctx = build_context(config)
    monitor = Monitor(config, store, transport, ctx, families={}, clock=lambda: NOW)
    services = Services(config, ctx, transport, REGISTRY, NOW, monitor=monitor)
    bot = Bot(services, Permissions((CONSOLE_USER,)), RateLimiter(None))

    async def run() -> None:
        await bot.handle(Incoming("console", CONSOLE_USER, f"!timeline {IP} 14", "line-1"))
        await bot.handle(Incoming("console", CONSOLE_USER, "!timeline 7", "line-2"))
        await bot.handle(Incoming("console", CONSOLE_USER, "!timeline 2001:db8::1", "line-3"))

    asyncio.run(run())
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"repbot timeline: {IP}, last 14 days: {tmp_path / 'state' / 'images'}")
    assert lines[1].startswith("repbot timeline: reputation, last 7 days: ")
    assert lines[2].startswith("nothing recorded for 2001:db8::1 yet")
    written = sorted((tmp_path / "state" / "images").glob("*.png"))
    assert len(written) == 2
    assert Image.open(written[0]).size[0] == WIDTH
    store.close()
