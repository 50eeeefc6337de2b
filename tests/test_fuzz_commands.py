"""Thousands of hostile command lines through the real command path (issue 13, the fuzz test).

Every shipped command is reachable, with the monitor and its store behind `!status`, `!mute`,
`!history` and `!run`. The rate limit of the real Bot keeps costly commands (`!check`, `!run`) to a
few real runs, and the DNS server on loopback answers at once, so the whole run takes seconds. After
the flood `!ping` still answers, nothing was an internal error, and the memory did not grow.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot.app import INTERNAL_ERROR, Bot, Permissions, RateLimiter
from bot.commands.catalog import REGISTRY
from bot.commands.registry import Services
from bot.config.loader import Config
from bot.context import build_context
from bot.monitor.core import Monitor
from bot.monitor.store import Store
from bot.render import Rendered
from bot.transports.base import Incoming
from tests.fixtures.dnsserver import DnsServer
from tests.helpers import RecordingTransport

ADMIN = "@alice:localhost"
BATCH = 1500
# How much the resident set may grow over the second batch: a leak per line would show as far more.
RSS_SLACK = 16 * 1024 * 1024

NAMES = sorted(REGISTRY.commands)
ODD_TARGETS = [
    "fe80::1%eth0", "::ffff:1.2.3.4", "0.0.0.0", "[::1]", "1.2.3.4/32", "ex ample.org", "xn--zz.example",
    "a" * 64 + ".example", ".", "..", "-x-.example", "例え.テスト", "\u202eexample.org", "example.org\x00",
]  # fmt: skip
HUGE = ["1000000000d", "99999999999999999999s", "9" * 400, "-1", "1e309", "nan", "0x10", "1h" * 200]
REGEX = ["(a+)+$", ".*", "[", "\\", "*", "?", "(?i)", "$(rm -rf /)", "%s%n", "{0}", "<b>", "&amp;"]
WORDS = st.one_of(
    st.sampled_from(ODD_TARGETS + HUGE + REGEX + NAMES + ["--selector", "--x", "history", "@room"]),
    st.text(max_size=30),
)
LINES = st.one_of(
    st.builds(
        lambda name, first, then: f"!{name} {first} {then}",
        st.sampled_from(NAMES),
        st.sampled_from(ODD_TARGETS + NAMES + ["X", "dnsbl"]),
        st.sampled_from(HUGE + ODD_TARGETS),
    ),
    st.builds(lambda name, words: " ".join([f"!{name}", *words]), st.sampled_from(NAMES), st.lists(WORDS, max_size=4)),
    st.text(max_size=200),
    st.builds(lambda rest: f"!{rest}", st.text(max_size=80)),
    st.builds(
        lambda marks, line: f"{marks}{line}",
        st.sampled_from(["\u200f", "\u202e", "\x00", "\ufeff"]),
        st.text(max_size=60),
    ),
    st.builds(lambda n: "!check " + "a" * n, st.integers(0, 100_000)),
    st.builds(lambda quoted: f"> <@x:y> {quoted}\n\n!ping", st.text(max_size=50)),
)


# What broke before (issue 13), in every flood whatever hypothesis draws.
KNOWN_BAD = [
    "!mute X 1000000000d", "!mute X 99999999999999999999s", "!mute X 999999999d", "!check fe80::1%eth0",
    "!mute typo.example 7d", "!check " + "a" * 100_000, "!ping\x00", "!\u202eping", '!spf "',
]  # fmt: skip


def _lines(count: int) -> list[str]:
    """`count` fuzzed lines; drawn ten to an example, which costs hypothesis a tenth of one line each."""
    found: list[str] = []

    @settings(
        max_examples=count // 10,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(lines=st.lists(LINES, min_size=10, max_size=10))
    def collect(lines: list[str]) -> None:
        found.extend(lines)

    collect()
    return [*KNOWN_BAD, *found]


class CountingTransport(RecordingTransport):
    """Keeps only counts and the last reply, so the memory measured is the bot's, not the recorder's."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.internal_errors = 0
        self.last = ""

    async def send(
        self, room: str, message: Rendered, *, txn_id: str | None = None, reply_to: Incoming | None = None
    ) -> str:
        self.count += 1
        self.last = message.plain
        self.internal_errors += INTERNAL_ERROR in message.plain
        return f"$e{self.count}"

    async def send_image(
        self, room: str, png: bytes, *, body: str, reply_to: Incoming | None = None, txn_id: str | None = None
    ) -> str:
        self.count += 1
        return f"$e{self.count}"

    async def react(self, incoming: Incoming, key: str) -> None:
        return None

    async def typing(self, room: str, on: bool) -> None:
        return None


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_thousands_of_fuzzed_lines_leave_the_bot_answering_and_flat(
    dns_server: DnsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    config = Config(state_dir=str(tmp_path))
    transport = CountingTransport()
    ctx = build_context(config, nameservers=[dns_server.address], timeout=0.3)
    store = Store(tmp_path / "monitor.json")
    monitor = Monitor(config, store, transport, ctx)
    services = Services(config, ctx, transport, REGISTRY, datetime.now(UTC), monitor=monitor)
    await monitor.start(schedule=False)
    bot = Bot(services, Permissions((ADMIN,)), RateLimiter(3))
    first, second = _lines(BATCH), _lines(BATCH)
    try:
        for number, line in enumerate(first):
            await bot.handle(Incoming("!r:localhost", ADMIN, line, f"$a{number}"))
        before = _rss()
        for number, line in enumerate(second):
            await bot.handle(Incoming("!r:localhost", ADMIN, line, f"$b{number}"))
        grown = _rss() - before
        await bot.handle(Incoming("!r:localhost", ADMIN, "!ping", "$ping"))
        assert transport.last == "pong"
    finally:
        await monitor.stop()
        store.close()
        await ctx.aclose()
    assert transport.internal_errors == 0, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert grown < RSS_SLACK, f"RSS grew by {grown / 1e6:.1f} MB over {BATCH} lines"
    await asyncio.sleep(0)
