"""The Matrix bot's `!ping` command-to-reply time and its idle RSS, against a local Synapse.

Starts Synapse (tests/fixtures/synapse.py) on loopback, registers the bot and an operator, runs
`repbot run -c FILE` in a subprocess, has the operator (nio) invite it, then:
  - sends `--pings` `!ping` commands one after another and times each from the send to the reply
    arriving at the operator's long-poll sync (median, p95, max);
  - leaves the bot idle (syncing, nothing to do) for `--minutes` and reads its RSS from /proc.

    python bench/matrix_bot.py                  # 10 minutes idle, 20 pings
    python bench/matrix_bot.py --minutes 1      # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nio import AsyncClient, RoomCreateResponse, RoomMessageNotice

from tests.fixtures.synapse import CONFIG_CACHE, SERVER_NAME, SynapseServer, generated_config

PASSWORD = "bench password"


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def write_config(directory: Path, synapse: SynapseServer, bot_id: str, admin: str) -> Path:
    config = directory / "repbot.toml"
    config.write_text(
        f"""
[state]
dir = "{directory / "state"}"

[matrix]
homeserver = "{synapse.base_url}"
user_id = "{bot_id}"
password = "{PASSWORD}"
pickle_key = "bench"
store_dir = "{directory / "store"}"
admins = ["{admin}"]
""",
        encoding="utf-8",
    )
    config.chmod(0o600)
    return config


async def wait_for_join(operator: AsyncClient, room: str, user: str) -> None:
    while True:
        response = await operator.room_get_state_event(room, "m.room.member", user)
        if getattr(response, "content", {}).get("membership") == "join":
            return
        await asyncio.sleep(0.1)


async def ping_times(operator: AsyncClient, room: str, bot_id: str, count: int) -> list[float]:
    replies: dict[str, float] = {}

    async def on_notice(_room: object, event: RoomMessageNotice) -> None:
        relates = event.source["content"].get("m.relates_to", {})
        replied = relates.get("m.in_reply_to", {}).get("event_id")
        if event.sender == bot_id and replied:
            replies[replied] = time.perf_counter()

    operator.add_event_callback(on_notice, RoomMessageNotice)  # type: ignore[arg-type]
    await operator.sync(timeout=0)
    times = []
    for _ in range(count):
        sent = time.perf_counter()
        response = await operator.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "!ping"})
        event_id = response.event_id  # type: ignore[union-attr]
        while event_id not in replies:
            await operator.sync(timeout=30_000)
        times.append(replies[event_id] - sent)
    return times


async def measure(args: argparse.Namespace, synapse: SynapseServer, directory: Path) -> None:
    bot_id, _ = synapse.register("repbot", PASSWORD)
    admin_id, _ = synapse.register("operator", PASSWORD)
    config = write_config(directory, synapse, bot_id, admin_id)
    log = (directory / "bot.log").open("wb")
    bot = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "--log-level", "INFO", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    operator = AsyncClient(synapse.base_url, admin_id)
    try:
        await operator.login(PASSWORD)
        created = await operator.room_create(invite=[bot_id])
        assert isinstance(created, RoomCreateResponse), created
        await wait_for_join(operator, created.room_id, bot_id)
        times = await ping_times(operator, created.room_id, bot_id, args.pings)
        times.sort()
        p95 = times[max(0, round(0.95 * len(times)) - 1)]
        print(
            f"!ping command->reply over {len(times)} pings: median {statistics.median(times) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
        )
        print(f"RSS after the pings: {rss_mb(bot.pid)[0]:.1f} MiB; idling {args.minutes:g} min…", flush=True)
        await operator.close()
        await asyncio.sleep(args.minutes * 60)
        current, peak = rss_mb(bot.pid)
        print(f"idle RSS after {args.minutes:g} min: {current:.1f} MiB (peak {peak:.1f} MiB)")
    finally:
        await operator.close()
        bot.terminate()
        print(f"bot exit code after SIGTERM: {bot.wait(30)}")
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="idle time before the RSS reading (default 10)")
    parser.add_argument("--pings", type=int, default=20, help="number of !ping round trips (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repbot-bench-") as temporary:
        directory = Path(temporary)
        (directory / "synapse").mkdir()
        synapse = SynapseServer(directory / "synapse", generated_config(CONFIG_CACHE, SERVER_NAME))
        synapse.write_config()
        synapse.start()
        try:
            asyncio.run(measure(args, synapse, directory))
        finally:
            synapse.stop()


if __name__ == "__main__":
    main()
