"""Canaries in the bot: `!canary [name]`, `!canary history [name]`, and the canary job.

Sent canaries are kept in the store (meta `canary_pending`) until their verdict is out, so a canary the bot
crashed during is looked for again after the restart, and its verdict arrives once: the thread reply is sent
with a stable transaction id before the pending entry leaves the store, and the provider verdict goes through
the monitor's state and outbox like every other change.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot.commands.core import REGISTRY, Argument, Call, Services, command
from bot.config.canary import CanaryConfig, canary_settings, read_canary
from bot.monitor.store import Store
from bot.render import MARKS, Rendered, plain_and_html
from bot.transports.base import DeliveryError, Incoming
from checks import Finding, Report, Status, parse_target
from checks.canary.probe import Canary, poll, send
from checks.canary.verdict import CanaryVerdict, classify, provider_finding, settle

__all__ = ["CanaryConfig", "CanaryRunner", "canary_lifespan", "canary_settings", "read_canary"]

log = logging.getLogger("repbot.canary")

PENDING = "canary_pending"
HISTORY = "canary_history"
KEEP_HISTORY = 20
STATE_FILE = "canary.json"


def _incoming_json(incoming: Incoming | None) -> dict[str, Any] | None:
    if incoming is None:
        return None
    thread = incoming.thread_root or incoming.event_id or None
    return {"room": incoming.room, "sender": incoming.sender, "event_id": incoming.event_id, "thread_root": thread}


def _verdict_json(verdict: CanaryVerdict, at: datetime) -> dict[str, Any]:
    return {
        "canary": verdict.canary.to_json(), "kind": verdict.kind, "summary": verdict.summary,
        "lines": list(verdict.lines), "advice": verdict.advice, "latency": verdict.latency, "at": at.isoformat(),
    }  # fmt: skip


def _verdict_from_json(data: Mapping[str, Any]) -> CanaryVerdict:
    return CanaryVerdict(
        Canary.from_json(data["canary"]), data["kind"], data["summary"], tuple(data.get("lines", ())),
        advice=data.get("advice", ""), latency=data.get("latency"),
    )  # fmt: skip


def render_verdict(verdict: CanaryVerdict) -> Rendered:
    """The thread reply: mark, summary, the quoted evidence, what to do."""
    head = f"{MARKS[verdict.status]} canary {verdict.canary.name} ({verdict.canary.token}): {verdict.summary}"
    lines = [head, *(f"> {line}" for line in verdict.lines[:8])]
    if verdict.advice:
        lines.append(verdict.advice)
    body = "".join(f"<blockquote><code>{html.escape(line)}</code></blockquote>" for line in verdict.lines[:8])
    advice = f"<p>{html.escape(verdict.advice)}</p>" if verdict.advice else ""
    return Rendered(plain="\n".join(lines), html=f"<p>{html.escape(head)}</p>{body}{advice}")


class CanaryRunner:
    """Sends canaries, follows each one to its verdict, resumes stored ones, and runs the canary job."""

    def __init__(self, services: Services, store: Store, monitor: Any = None) -> None:
        self.services = services
        self.store = store
        self.monitor = monitor
        self.settings = canary_settings(services.config, services.ctx)
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        """Resume the canaries stored as pending, and start the schedule when [schedule] canary is set."""
        for token, entry in dict(self.store.get_meta(PENDING, {})).items():
            canary = Canary.from_json(entry["canary"])
            if canary.name not in self.settings:
                log.warning("pending canary %s names seed %r, which is no longer configured", token, canary.name)
                continue
            reply = Incoming(**entry["reply"], body="") if entry.get("reply") else None
            log.info("resuming canary %s to %s", token, canary.seed)
            self._spawn(self._follow(canary, reply), f"canary-{token}")
        interval = self.services.config.schedule.intervals.get("canary")
        if interval is not None and self.settings:
            self._spawn(self._schedule(interval), "canary-schedule")

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def launch(self, name: str, reply_to: Incoming | None = None) -> Canary:
        """Send one canary now, store it as pending, and follow it in the background."""
        canary = await send(self.settings[name], self.services.ctx, self.services.ctx.clock)
        with self.store.batch():
            pending = dict(self.store.get_meta(PENDING, {}))
            pending[canary.token] = {"canary": canary.to_json(), "reply": _incoming_json(reply_to)}
            self.store.set_meta(PENDING, pending)
        self._spawn(self._follow(canary, reply_to), f"canary-{canary.token}")
        return canary

    async def _follow(self, canary: Canary, reply_to: Incoming | None) -> None:
        settings = self.settings[canary.name]
        clock = self.services.ctx.clock
        try:
            placement = await poll(settings, canary, clock) if canary.submitted else None
            if placement is None:
                verdict = classify(canary, None, None, clock())
            else:
                verdict = await settle(settings, canary, placement, clock())
            await self._finish(verdict, reply_to)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("canary %s to %s failed; it stays pending until the next start", canary.token, canary.name)

    async def _finish(self, verdict: CanaryVerdict, reply_to: Incoming | None) -> None:
        token = verdict.canary.token
        if reply_to is not None and self.monitor is None:
            try:
                await self.services.transport.send(
                    reply_to.room, render_verdict(verdict), txn_id=f"canary-{token}", reply_to=reply_to
                )
            except DeliveryError as error:
                log.warning("canary %s verdict not delivered to %s: %s", token, reply_to.room, error)
        now = self.services.ctx.clock()
        with self.store.batch():
            history = dict(self.store.get_meta(HISTORY, {}))
            mine = [*history.get(verdict.canary.name, []), _verdict_json(verdict, now)][-KEEP_HISTORY:]
            history[verdict.canary.name] = mine
            self.store.set_meta(HISTORY, history)
            pending = dict(self.store.get_meta(PENDING, {}))
            pending.pop(token, None)
            self.store.set_meta(PENDING, pending)
            if self.monitor is not None:
                # Through the outbox, in the same write that ends the canary: the thread reply is never lost.
                if reply_to is not None:
                    self.monitor.post(render_verdict(verdict), alert_id=f"canary-{token}", reply_to=reply_to)
                self.monitor.process([self._provider_report(verdict.canary.name, mine)])

    def _provider_report(self, name: str, entries: Sequence[Mapping[str, Any]]) -> Report:
        verdicts = [_verdict_from_json(entry) for entry in entries[-5:]]
        snds = self._snds_findings()
        finding = provider_finding(name, verdicts, snds)
        domain = verdicts[-1].canary.seed.rpartition("@")[2]
        return Report(parse_target(domain), (finding,))

    def _snds_findings(self) -> list[Finding]:
        """The latest SNDS findings in the monitor's state, as Findings (empty without SNDS)."""
        found = []
        for state in self.store.states():
            if state.check == "snds" and state.status in (Status.WARN.value, Status.FAIL.value):
                found.append(Finding("snds", state.subject, Status(state.status), state.summary))
        return found

    async def _schedule(self, interval: timedelta) -> None:
        jitter = min(self.services.config.schedule.jitter, interval / 10).total_seconds()
        await asyncio.sleep(self.services.config.schedule.first_run.total_seconds() + random.uniform(0, jitter))
        while True:
            for name in self.settings:
                if not any(e["canary"]["name"] == name for e in self.store.get_meta(PENDING, {}).values()):
                    try:
                        await self.launch(name)
                    except Exception:
                        log.exception("the canary to %s could not be launched", name)
            await asyncio.sleep(interval.total_seconds() + random.uniform(-jitter, jitter))


@REGISTRY.lifespan
@contextlib.asynccontextmanager
async def canary_lifespan(services: Services) -> AsyncIterator[None]:
    """Start the canary runner (resume pending canaries, schedule the job) when [canary] is configured."""
    if "canary" not in services.config.extra:
        yield
        return
    monitor = services.extra.get("monitor")
    own: Store | None = None
    if monitor is not None:
        store = monitor.store
    else:
        own = store = Store(Path(services.config.state_dir) / STATE_FILE)
    runner = CanaryRunner(services, store, monitor)
    services.extra["canary"] = runner
    await runner.start()
    try:
        yield
    finally:
        await runner.stop()
        if own is not None:
            own.close()


def _runner(call: Call) -> CanaryRunner | None:
    runner = call.services.extra.get("canary")
    return runner if isinstance(runner, CanaryRunner) else None


def history_lines(history: Mapping[str, Sequence[Mapping[str, Any]]], name: str | None) -> list[str]:
    """`!canary history` text: the latest verdicts per seed, newest last."""
    lines = []
    for seed, entries in sorted(history.items()):
        if name is not None and seed != name:
            continue
        for entry in entries[-10:]:
            at = str(entry.get("at", ""))[:16].replace("T", " ")
            lines.append(f"{at} {seed} {entry['canary']['token']}: {entry['kind']} — {entry['summary']}")
    return lines


@command(
    "canary",
    help="send a canary to a seed mailbox now (or `history [name]`): where did it land?",
    args=[Argument("name", required=False), Argument("seed", required=False)],
    costly=True,
)
async def canary_command(call: Call) -> Rendered:
    runner = _runner(call)
    if runner is None:
        return plain_and_html("no canaries are configured: add a [canary] section (see docs/canaries.md)")
    name, seed = call.args.get("name"), call.args.get("seed")
    if name == "history":
        lines = history_lines(runner.store.get_meta(HISTORY, {}), seed)
        text = "\n".join(lines) if lines else "no canary verdicts yet"
        return Rendered(plain=text, html=f"<pre>{html.escape(text)}</pre>")
    names = [name] if name else sorted(runner.settings)
    unknown = [n for n in names if n not in runner.settings]
    if unknown:
        return plain_and_html(f"no seed named {unknown[0][:40]!r}; seeds: {', '.join(sorted(runner.settings))}")
    replies = []
    for each in names:
        canary = await runner.launch(each, call.incoming)
        if canary.submitted:
            replies.append(f"{each}: sent ({canary.token}), checking until {canary.deadline_at:%H:%M} UTC")
        else:
            replies.append(f"{each}: not sent ({canary.error or canary.reply}); the verdict follows")
    return plain_and_html("\n".join(replies))
