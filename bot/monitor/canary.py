"""The canary job: sends canaries, follows each one to its verdict, and resumes stored ones after a restart.

Sent canaries are kept in the store (meta `canary_pending`) until their verdict is out, so a canary the bot
crashed during is looked for again after the restart, and its verdict arrives once: the thread reply and the
provider verdict go through the monitor's outbox and state in the same write that ends the canary. The job is
scheduled by the monitor's scheduler, like every other job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.config.canary import canary_settings
from bot.config.loader import Config
from bot.i18n import use_language
from bot.language import room_language
from bot.monitor.core import Job, Monitor
from bot.render import render_verdict
from bot.secrets import mask_value
from bot.transports.base import Incoming
from checks import CheckContext, Finding, Report, Status, parse_target
from checks.canary.probe import Canary, poll, send
from checks.canary.verdict import CanaryVerdict, DmarcCounts, DropJoin, classify, provider_finding, settle
from checks.runner import attempt

if TYPE_CHECKING:
    from bot.monitor.traffic import TrafficFollower

__all__ = ["HISTORY", "PENDING", "CanaryRunner", "stored_verdicts"]

log = logging.getLogger("repbot.canary")

PENDING = "canary_pending"
HISTORY = "canary_history"
KEEP_HISTORY = 20


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


class CanaryRunner:
    """Sends canaries, follows each one to its verdict, resumes stored ones, and runs the canary job."""

    def __init__(
        self,
        config: Config,
        ctx: CheckContext,
        monitor: Monitor,
        traffic: TrafficFollower | None = None,
        dmarc: DmarcCounts | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.monitor = monitor
        # With [traffic] (and [reports]), a provider verdict carries the silent-drop join of that day.
        self.traffic = traffic
        self.dmarc = dmarc
        self.store = monitor.store
        self.settings = canary_settings(config, ctx)
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        """Resume the canaries stored as pending; the canary job goes on the monitor's scheduler ([schedule] canary)."""
        for token, entry in dict(self.store.get_meta(PENDING, {})).items():
            canary = Canary.from_json(entry["canary"])
            if canary.name not in self.settings:
                log.warning("pending canary %s names seed %r, which is no longer configured", token, canary.name)
                continue
            reply = Incoming(**entry["reply"], body="") if entry.get("reply") else None
            log.info("resuming canary %s to %s", token, canary.seed)
            # Its verdict is said where it would have been: in the asking room's language, else the alerts'.
            language = room_language(self.config, self.monitor, reply.room) if reply else self.monitor.language()
            with use_language(language):
                self._spawn(self._follow(canary, reply), f"canary-{token}")
        interval = self.config.schedule.intervals.get("canary")
        if interval is not None and self.settings:
            self.monitor.add_job(Job("canary", interval, self.launch_due))

    async def stop(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def launch(self, name: str, reply_to: Incoming | None = None) -> Canary | Finding:
        """Send one canary now, store it as pending and follow it in the background.

        When it cannot even be tried (the submission password cannot be read, say), the `unknown` Finding that
        says why, which also goes to the monitor like any other check's.
        """
        sent = await attempt("canary", name, send(self.settings[name], self.ctx, self.ctx.clock), self.ctx)
        if isinstance(sent, Finding):
            self._blind(name, sent)
            return sent
        with self.store.batch():
            pending = dict(self.store.get_meta(PENDING, {}))
            # A submission server may echo the login in its refusal: the stored copy is masked.
            pending[sent.token] = mask_value({"canary": sent.to_json(), "reply": _incoming_json(reply_to)})
            self.store.set_meta(PENDING, pending)
        self._spawn(self._follow(sent, reply_to), f"canary-{sent.token}")
        return sent

    async def _follow(self, canary: Canary, reply_to: Incoming | None) -> None:
        verdict = await attempt("canary", canary.name, self._verdict(canary), self.ctx)
        if isinstance(verdict, Finding):
            log.warning("canary %s to %s: %s; it stays pending", canary.token, canary.name, verdict.summary)
            self._blind(canary.name, verdict)
            return
        try:
            await self._finish(verdict, reply_to)
        except Exception:
            log.exception("canary %s to %s could not be recorded; it stays pending", canary.token, canary.name)

    async def _verdict(self, canary: Canary) -> CanaryVerdict:
        settings, clock = self.settings[canary.name], self.ctx.clock
        placement = await poll(settings, canary, clock) if canary.submitted else None
        if placement is None:
            return classify(canary, None, None, clock())
        return await settle(settings, canary, placement, clock())

    def _blind(self, name: str, finding: Finding) -> None:
        """A canary step that could not run: its `unknown` finding, on the seed's provider state."""
        domain = self.settings[name].seed.rpartition("@")[2]
        self.monitor.process([Report(parse_target(domain), (finding,))])

    async def _finish(self, verdict: CanaryVerdict, reply_to: Incoming | None) -> None:
        token = verdict.canary.token
        now = self.ctx.clock()
        with self.store.batch():
            history = dict(self.store.get_meta(HISTORY, {}))
            mine = [*history.get(verdict.canary.name, []), mask_value(_verdict_json(verdict, now))][-KEEP_HISTORY:]
            history[verdict.canary.name] = mine
            self.store.set_meta(HISTORY, history)
            pending = dict(self.store.get_meta(PENDING, {}))
            pending.pop(token, None)
            self.store.set_meta(PENDING, pending)
            # Through the outbox, in the same write that ends the canary: the thread reply is never lost.
            if reply_to is not None:
                self.monitor.post(render_verdict(verdict), alert_id=f"canary-{token}", reply_to=reply_to)
            with use_language(self.monitor.language()):  # the provider verdict is an alert, worded as alerts are
                report = self._provider_report(verdict.canary.name, mine)
            self.monitor.process([report])

    def _provider_report(self, name: str, entries: Sequence[Mapping[str, Any]]) -> Report:
        verdicts = [_verdict_from_json(entry) for entry in entries[-5:]]
        snds = self._snds_findings()
        finding = provider_finding(name, verdicts, snds, self._join(verdicts[-1], entries))
        domain = verdicts[-1].canary.seed.rpartition("@")[2]
        return Report(parse_target(domain), (finding,))

    def _join(self, latest: CanaryVerdict, entries: Sequence[Mapping[str, Any]]) -> DropJoin | None:
        """The day's silent-drop join for this seed's provider, when the MTA log is followed ([traffic])."""
        if self.traffic is None:
            return None
        from bot.monitor.traffic import provider_join, seed_provider

        key = seed_provider(self.traffic.families, latest.canary.seed)
        verdicts = [_verdict_from_json(entry) for entry in entries]
        day = latest.canary.sent_at.date()
        return provider_join(self.traffic, self.dmarc, self.config.monitor.ips, key, day, verdicts)

    def _snds_findings(self) -> list[Finding]:
        """The latest SNDS findings in the monitor's state, as Findings (empty without SNDS)."""
        found = []
        for state in self.store.states(check="snds"):
            if state.status in (Status.WARN.value, Status.FAIL.value):
                found.append(Finding("snds", state.subject, Status(state.status), state.summary))
        return found

    async def launch_due(self) -> None:
        """The canary job: one canary to each seed that has none pending; a seed that fails does not stop the rest."""
        pending = {entry["canary"]["name"] for entry in self.store.get_meta(PENDING, {}).values()}
        # No room asked: the verdicts (worded by the tasks launched here, which inherit this) are the alerts'.
        with use_language(self.monitor.language()):
            for name in self.settings:
                if name in pending:
                    continue
                try:
                    await self.launch(name)
                except Exception:  # a bug in one seed's launch must not keep the others from theirs
                    log.exception("the canary to %s could not be launched", name)


def stored_verdicts(history: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[CanaryVerdict]:
    """Every verdict of a stored canary history (oldest first per seed)."""
    return [_verdict_from_json(entry) for entries in history.values() for entry in entries]
