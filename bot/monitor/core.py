"""The monitor: runs each check family on its schedule, keeps state, decides alerts, empties the outbox.

A run's new state, its history and its alert are written to the store in one atomic write, then the
outbox is delivered: an alert leaves it only once `Transport.send` returned, and is sent with its own
stable transaction id, so a crash between the two never posts it twice. Delivery failures are retried
with a capped backoff for as long as it takes, across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bot.config.loader import Config
from bot.i18n import N_, _, use_language
from bot.language import room_language
from bot.monitor import alerts, collector
from bot.monitor.alerts import AlertRules, Event, digest_message, is_muted, observe, render_events
from bot.monitor.state import OutboxItem
from bot.monitor.store import Store, StoreError
from bot.pacing import paced
from bot.render import MARKS, Rendered, plain_and_html
from bot.secrets import mask, mask_value, registered
from bot.transports.base import DeliveryError, Incoming, Transport
from checks import CheckContext, Finding, Report, Status, parse_target
from checks.runner import RESOLVER_LIES

__all__ = ["STATE_FILE", "Family", "FamilyRun", "Job", "Monitor", "alert_rules", "default_families", "mask_report"]

log = logging.getLogger("repbot.monitor")

FamilyRun = Callable[[CheckContext], Awaitable[Sequence[Report]]]
# Which checks belong to which family; a check not named here runs with "domains".
FAMILY_CHECKS = {"blocklists": frozenset({"dnsbl"}), "tls": frozenset({"mx-tls", "smtp", "tls", "dane"})}
RETRY_FIRST = 2.0
STATE_FILE = "monitor.json"  # under [state] dir: the monitor's state, history and outbox, and the canaries'
T = TypeVar("T")
_RESOLVER_META = "resolver_lies"
STOP_DELIVERY = 5.0  # seconds a clean stop gives the outbox to send what the last run queued
TARGETS_AT_ONCE = 64  # targets under way in a run: the loop also answers the room's commands
REPORTS_AT_ONCE = 256  # reports freed per turn of the event loop at a run's end (~4,600 findings, a few ms)
# A room that refuses an item this many times in a row (M_FORBIDDEN, M_TOO_LARGE, another 4xx) never takes it.
MAX_REFUSALS = 3
UNDELIVERED = N_("⚠ repbot: an alert could not be delivered to this room ({reason}); see !status and the log.")


@dataclass(frozen=True)
class Family:
    """A job: a name (`blocklists`), how it runs its checks, and how often."""

    name: str
    run: FamilyRun
    interval: timedelta


@dataclass(frozen=True)
class Job:
    """A scheduled coroutine that is not a check family (the canary launches): a name, how often, what it runs."""

    name: str
    interval: timedelta
    run: Callable[[], Coroutine[Any, Any, None]]


def _resolver_checks() -> frozenset[str]:
    """The checks checks.runner runs only after the resolver passed its probe."""
    from checks.runner import domain_checks, ip_checks

    return frozenset(name for name, _ in (*domain_checks(), *ip_checks()))


def _family_of(check: str) -> str:
    return next((family for family, names in FAMILY_CHECKS.items() if check in names), "domains")


def default_families(config: Config) -> dict[str, Family]:
    """One Family per job family that has checks and targets in this config."""
    from bot.monitor.providers import provider_families
    from checks.runner import check_plan, domain_checks, ip_checks

    targets = [parse_target(name) for name in (*config.monitor.ips, *config.monitor.domains)]
    providers = provider_families(config)
    families: dict[str, Family] = {}
    for name, interval in config.schedule.intervals.items():
        if name in providers:
            families[name] = Family(name, providers[name], interval)
            continue

        def pick(checks: Sequence[tuple[str, Any]], family: str = name) -> tuple[Any, ...]:
            return tuple(item for item in checks if _family_of(item[0]) == family)

        plan = [(target, pick(ip_checks() if target.is_ip else domain_checks())) for target in targets]
        plan = [(target, checks) for target, checks in plan if checks]
        if not plan:
            continue

        async def run(ctx: CheckContext, plan: Sequence[Any] = tuple(plan)) -> list[Report]:
            # Paced by the queries the targets ask, and a bounded number at a time: 4,096 started at once put 73k
            # queries and their wake-ups into single turns of the event loop (12 s without a !ping answered,
            # measured by the soak), and the domains' TLS handshakes come in bursts of at most this many.
            return await check_plan(plan, ctx, at_most=TARGETS_AT_ONCE)

        families[name] = Family(name, run, interval)
    return families


def alert_rules(config: Config) -> AlertRules:
    alerts = config.alerts
    return AlertRules(alerts.confirm, alerts.immediate_new_listing, alerts.unknown_after)


def _txn_id(alert_id: str, room: str) -> str:
    """The Matrix transaction id for one alert in one room: stable across restarts."""
    return f"{alert_id}-{hashlib.sha256(room.encode()).hexdigest()[:10]}"


class Monitor:
    """Scheduled runs, change detection, the persisted outbox and the digest, around one Store."""

    def __init__(
        self,
        config: Config,
        store: Store,
        transport: Transport,
        ctx: CheckContext,
        families: Mapping[str, Family] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.ctx = ctx
        self.families = dict(families) if families is not None else default_families(config)
        self.rules = alert_rules(config)
        self._blind_rules = dataclasses.replace(self.rules, unknown_after=timedelta.max)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.retry_max = config.alerts.retry_max.total_seconds()
        self._locks = {name: asyncio.Lock() for name in self.families}
        self._wake = asyncio.Event()
        self._deliverer: asyncio.Task[None] | None = None
        self._delivering = asyncio.Lock()
        self._scheduler: Any = None
        self.jobs: dict[str, Job] = {}
        self._runs: set[asyncio.Task[Any]] = set()
        self._stopping = False  # from `stop`: a cancelled scheduled run then ends quietly

    def language(self) -> str:
        """The language alerts and the digest are worded in: the first alert room's choice, else [bot] language.

        One message goes to every alert room (one outbox item), so it is worded once."""
        rooms = list(self.transport.alert_rooms)
        return room_language(self.config, self, rooms[0]) if rooms else self.config.language

    def __repr__(self) -> str:
        return f"<Monitor {sorted(self.families)} {self.store.path}>"

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self, *, schedule: bool = True) -> None:
        """Report a state file that had to be set aside, start delivering the outbox, schedule the jobs."""
        self._stopping = False
        if self.store.recovered_from is not None:
            moved = self.store.recovered_from
            text = f"⚠ repbot: the state file was unreadable; it was moved to {moved} and the monitor starts afresh."
            with self.store.batch():
                self._enqueue(plain_and_html(text), alert_id=f"recovered-{moved.name}")
        with self.store.batch():
            self.store.prune_history((self.clock() - self.config.alerts.retention).isoformat())
        self.store.start_writer()
        # The system's trust store, read once for the first TLS check: OpenSSL reads it without the GIL, so in
        # a thread it no longer holds the loop (the soak's stall trace caught it there on the first tls run).
        await asyncio.to_thread(self.ctx.tls_context)
        collector.take_over()
        self._deliverer = asyncio.create_task(self._deliver_forever(), name="repbot-outbox")
        if schedule:
            self._scheduler = self._build_scheduler()
            self._scheduler.start()

    async def stop(self) -> None:
        """Stop the scheduler, cancel the runs in flight and the outbox task, and wait for them all.

        Once it returns, nothing of the monitor touches the store: the caller may close it.
        """
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        runs = list(self._runs)
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        if self._deliverer is not None:
            self._deliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deliverer
            self._deliverer = None
            await self._last_delivery()
        try:
            await self.store.flush()
        except StoreError as error:  # the writer logged it; what stays unwritten is the last run, seen again
            log.error("the last changes were not written at stop: %s", error)
        collector.give_back()

    async def _last_delivery(self) -> None:
        """One bounded try to send what a last run queued (`echo '!run' | repbot run --console` shows its alert);
        what is not sent stays in the outbox for the next start."""
        try:
            async with asyncio.timeout(STOP_DELIVERY):
                await self.deliver()
        except Exception as error:  # a room that is gone at stop must not make the stop fail
            log.info("the outbox keeps its messages for the next start (%s)", type(error).__name__)

    # -- runs ----------------------------------------------------------------------------------------------

    async def run_family(self, name: str) -> list[Event]:
        """Run one family's checks now (waiting for a run already under way); the events it confirmed."""
        return await self._in_flight(self._run_family(name), f"repbot-run-{name}")

    async def _in_flight(self, work: Coroutine[Any, Any, T], name: str) -> T:
        """Run `work` as a task that `stop` cancels and awaits; cancelling the caller cancels it too."""
        task = asyncio.create_task(work, name=name)
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return await task

    async def _run_family(self, name: str) -> list[Event]:
        family = self.families[name]
        async with self._locks[name]:
            started = time.monotonic()
            collector.run_begins()
            try:
                with use_language(self.language()):  # the findings' summaries and advice, as the alert says them
                    reports = list(await family.run(self.ctx))
                with self.store.batch(), use_language(self.language()):  # the run's one write
                    events = await self.process_run(reports)
                    self.store.set_meta(f"last_run:{name}", self.clock().isoformat())
                findings = sum(len(report.findings) for report in reports)
                await _let_go(reports)
            finally:
                collector.after_run()  # the run's findings are gone: what the runs left is frozen
        took = round(time.monotonic() - started, 3)
        extra = {"job": name, "duration": took, "findings": findings, "changes": len(events)}
        log.info("ran %s: %d findings, %d changes in %.2f s", name, findings, len(events), took, extra=extra)
        self._wake.set()
        return events

    def process(self, reports: Sequence[Report]) -> list[Event]:
        """Compare the reports with the stored state; store the new state, the history and one grouped alert."""
        now = self.clock()
        with self.store.batch(), use_language(self.language()):
            # Findings may quote a server that echoed a secret (an IMAP NO with the LOGIN line): masked
            # here, before they become state, history or an alert.
            reports = [mask_report(report) for report in reports]
            events = [
                event
                for report in reports
                for finding in alerts.one_per_state(report.findings)
                for event in self._observe(report, finding, now)
            ]
            if events:
                self._record(events, now)
            self._resolver_alert(reports)
        return events

    def _resolver_alert(self, reports: Sequence[Report]) -> None:
        """Say once that the resolver lies (call inside a batch), and once that it answers truthfully again."""
        lies = [f for r in reports for f in r.findings if f.code == RESOLVER_LIES]
        said = self.store.get_meta(_RESOLVER_META)
        if lies and said is None:
            summary = lies[0].summary
            self.store.set_meta(_RESOLVER_META, str(lies[0].evidence.get("resolver", "")))
            text = f"{MARKS[Status.UNKNOWN]} {summary}. " + _(
                "No blocklist, SPF, DKIM or DMARC verdict is drawn from it."
            )
            self._enqueue(plain_and_html(text), alert_id=f"resolver-lies-{uuid.uuid4().hex[:12]}")
            log.warning("%s", summary)
        elif not lies and said is not None and any(f.check in _resolver_checks() for r in reports for f in r.findings):
            # Only a run of the checks the probe guards says the resolver is honest again (not SNDS, not canaries).
            self.store.set_meta(_RESOLVER_META, None)
            text = f"{MARKS[Status.OK]} " + _(
                "the resolver at {address} answers truthfully again: checking again."
            ).format(address=said)
            self._enqueue(plain_and_html(text), alert_id=f"resolver-honest-{uuid.uuid4().hex[:12]}")

    async def process_run(self, reports: Sequence[Report]) -> list[Event]:
        """`process` for a whole run, giving the event loop a turn every `pacing.STEP` (73k findings take ~1 s).

        Call inside a batch: what other tasks change meanwhile joins this run's one write."""
        now = self.clock()
        events: list[Event] = []
        reports = [mask_report(report) for report in reports]
        pairs = ((report, finding) for report in reports for finding in alerts.one_per_state(report.findings))
        async for report, finding in paced(pairs):
            events.extend(self._observe(report, finding, now))
        if events:
            self._record(events, now)
        self._resolver_alert(reports)
        return events

    def _observe(self, report: Report, finding: Finding, now: datetime) -> list[Event]:
        target = report.target.value
        # A lying resolver is said once, for the whole run, not as "cannot check" for each check after a while.
        rules = self._blind_rules if finding.code == RESOLVER_LIES else self.rules
        key = alerts.state_key(target, finding)
        old = self.store.get_state(key)
        if old is not None and alerts.seen_unchanged(old, finding, rules):
            # Only its last_seen moves: the store then writes no row (a run's 73k states would be 38 MiB).
            self.store.seen_again(key, alerts.run_stamp(now), finding.status.value)
            return []
        state, found = observe(old, target, finding, now, rules)
        self.store.put_state(state)
        return found

    def _record(self, events: Sequence[Event], now: datetime) -> None:
        mutes = self.store.mutes(now.isoformat())
        muted = [is_muted(event, mutes) for event in events]  # once each: `in` on a list was O(n²) at 10k events
        for event, quiet in zip(events, muted, strict=True):
            self.store.add_history(event.history_entry(muted=quiet))
            log.info(
                "%s%s: %s %s %s", "(muted) " if quiet else "", event.kind, event.target, event.check, event.subject
            )
        loud = [event for event, quiet in zip(events, muted, strict=True) if not quiet]
        if loud:
            self._enqueue(render_events(loud))

    def _enqueue(self, message: Rendered, alert_id: str | None = None, reply_to: Incoming | None = None) -> str:
        """Put a message in the outbox (call inside a batch): for every alert room, or as a reply; its id."""
        alert_id = alert_id or f"repbot-{uuid.uuid4().hex}"
        rooms = [reply_to.room] if reply_to is not None else list(self.transport.alert_rooms)
        if not rooms:
            log.warning("no alert rooms configured; alert %s is only in the history", alert_id)
            return alert_id
        reply = dataclasses.replace(reply_to, body="") if reply_to is not None else None
        created = self.clock().isoformat()
        item = OutboxItem(alert_id, created, tuple(rooms), mask(message.plain), mask(message.html), reply=reply)
        self.store.enqueue(item)
        self._wake.set()
        return alert_id

    def post(self, message: Rendered, *, alert_id: str, reply_to: Incoming | None = None) -> None:
        """Queue a message through the outbox (call inside a store batch): delivered once, across restarts."""
        self._enqueue(message, alert_id=alert_id, reply_to=reply_to)

    # -- the outbox ----------------------------------------------------------------------------------------

    async def deliver(self) -> bool:
        """Send every due outbox item, oldest first; False when one was refused (the rest wait)."""
        async with self._delivering:
            return await self._deliver_due()

    async def _deliver_due(self) -> bool:
        # An alert is sent only once the write that made it is on disk: a crash can then never re-detect
        # (and post again) a change whose alert was already out.
        await self.store.flush()
        for item in self.store.pending():
            if item.next_try > time.time():
                if item.refusals:
                    continue  # a refused item never holds back the ones behind it
                return False
            message = Rendered(item.plain, item.html)
            for room in item.rooms:
                try:
                    await self._send_item(item, room, message, item.reply)
                except DeliveryError as error:
                    if error.permanent:
                        self._refused(item, room, error)
                        break
                    self._retry(item, room, error)
                    return False
                with self.store.batch():
                    self.store.delivered(item.id, room)
        return True

    def _retry(self, item: OutboxItem, room: str, error: DeliveryError) -> None:
        attempts = item.attempts + 1
        delay = min(self.retry_max, RETRY_FIRST * 2 ** min(attempts - 1, 16)) * random.uniform(0.8, 1.0)
        log.warning("alert %s not delivered to %s (%s); retry in %.0f s", item.id, room, error, delay)
        with self.store.batch():
            self.store.retry_later(item.id, attempts, time.time() + delay, error=str(error)[:300])

    def _refused(self, item: OutboxItem, room: str, error: DeliveryError) -> None:
        """A room refused the item for good: after MAX_REFUSALS it becomes a dead letter and a short note goes."""
        if item.refusals + 1 < MAX_REFUSALS:
            delay = min(self.retry_max, RETRY_FIRST * 2**item.refusals)
            log.warning(
                "alert %s refused by %s (%s); %d more tries", item.id, room, error, MAX_REFUSALS - item.refusals - 1
            )
            with self.store.batch():
                self.store.retry_later(
                    item.id, item.attempts + 1, time.time() + delay, error=str(error)[:300], refused=True
                )
            return
        reason = str(error)[:300]
        log.error(
            "alert %s was refused %d times by %s and is given up (dead letter): %s", item.id, MAX_REFUSALS, room, reason
        )
        with self.store.batch():
            letter = self.store.dead_letter(item.id, room, reason)
            if letter is not None and not item.id.startswith("undelivered-"):  # a refused note gets no note
                with use_language(self.language()):
                    note = plain_and_html(_(UNDELIVERED).format(reason=letter.short_reason))
                self._enqueue_note(note, room, f"undelivered-{item.id}-{_txn_id(item.id, room)[-10:]}")

    def _enqueue_note(self, message: Rendered, room: str, alert_id: str) -> None:
        created = self.clock().isoformat()
        self.store.enqueue(OutboxItem(alert_id, created, (room,), message.plain, message.html))
        self._wake.set()

    async def _send_item(self, item: OutboxItem, room: str, message: Rendered, reply_to: Incoming | None) -> None:
        txn_id = _txn_id(item.id, room)
        if item.kind != "timeline":
            await self.transport.send(room, message, txn_id=txn_id, reply_to=reply_to)
            return
        # The picture is drawn when it is sent, from the store, so the outbox holds no image bytes.
        from bot.timeline import timeline_png

        days = item.days
        now = self.clock()
        history = self.store.history(since=(now - timedelta(days=days + 1)).isoformat())
        png = timeline_png(history, self.store.states(), now=now, days=days)
        if png is not None:
            await self.transport.send_image(room, png, body=f"repbot timeline: the last {days} days", txn_id=txn_id)

    def next_retry(self) -> float | None:
        """Seconds until the first outbox item may be tried again, or None when the outbox is empty."""
        pending = self.store.pending()
        return max(0.0, min(item.next_try for item in pending) - time.time()) if pending else None

    async def _deliver_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.deliver()
            except Exception:
                log.exception("outbox delivery failed; trying again")
                await asyncio.sleep(RETRY_FIRST)
                continue
            wait = self.next_retry()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait if wait is not None else None):
                    await self._wake.wait()

    # -- the schedule ------------------------------------------------------------------------------------------

    def _build_scheduler(self) -> Any:
        """An AsyncIOScheduler with one interval job per family (first run soon after start) and the digest."""
        from zoneinfo import ZoneInfo

        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not two lines a run
        # A missed run (suspend, a blocked loop) runs once, however late: coalesce, no grace limit.
        defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        scheduler = AsyncIOScheduler(timezone=UTC, job_defaults=defaults)
        for index, name in enumerate(sorted(self.families)):
            self._add_interval(scheduler, name, self.families[name].interval, index, self._scheduled_run)
        for index, name in enumerate(sorted(self.jobs), start=len(self.families)):
            self._add_interval(scheduler, name, self.jobs[name].interval, index, self._scheduled_job)
        digest = self.config.digest
        if digest.enabled:
            zone = ZoneInfo(digest.timezone)
            cron = CronTrigger(hour=digest.at.hour, minute=digest.at.minute, timezone=zone)
            scheduler.add_job(self._scheduled_digest, cron, id="digest", name="digest")
        return scheduler

    def _add_interval(
        self, scheduler: Any, name: str, interval: timedelta, index: int, run: Callable[[str], Awaitable[None]]
    ) -> None:
        """An interval job with the configured jitter, first run soon after start (jobs a little apart)."""
        from apscheduler.triggers.interval import IntervalTrigger

        jitter = int(min(self.config.schedule.jitter, interval / 10).total_seconds()) or None
        trigger = IntervalTrigger(seconds=int(interval.total_seconds()), jitter=jitter, timezone=UTC)
        start = datetime.now(UTC) + self.config.schedule.first_run + timedelta(seconds=5 * index)
        scheduler.add_job(run, trigger, args=[name], id=name, name=name, next_run_time=start)

    def add_job(self, job: Job) -> None:
        """Schedule `job` beside the families, on the same scheduler (now, or when the monitor starts)."""
        self.jobs[job.name] = job
        if self._scheduler is not None:
            self._add_interval(self._scheduler, job.name, job.interval, len(self.families), self._scheduled_job)

    async def _scheduled_job(self, name: str) -> None:
        await self._scheduled(self._in_flight(self.jobs[name].run(), f"repbot-job-{name}"), "job", name)

    async def _scheduled_run(self, name: str) -> None:
        await self._scheduled(self.run_family(name), "run", name)

    async def _scheduled(self, work: Awaitable[Any], kind: str, name: str) -> None:
        """What the scheduler runs: a failure is logged and the next run is on schedule; a run that `stop`
        cancelled ends quietly (apscheduler would log its CancelledError as a traceback at every restart)."""
        try:
            await work
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Stopping: the scheduler's shutdown cancels this task too, and would log that as its error.
            log.info("the %s %s was stopped before it ended", name, kind)
        except Exception:
            log.exception("the %s %s failed; the next one is on schedule", name, kind)

    async def _scheduled_digest(self) -> None:
        try:
            self.digest()
        except Exception:
            log.exception("the daily digest failed")

    # -- the digest ----------------------------------------------------------------------------------------

    def digest(self) -> str | None:
        """Queue today's digest once; its alert id, or None when it was already sent today."""
        from zoneinfo import ZoneInfo

        now = self.clock()
        local = now.astimezone(ZoneInfo(self.config.digest.timezone))
        day = local.date().isoformat()
        if self.store.get_meta("digest_day") == day:
            return None
        since = (now - timedelta(days=1)).isoformat()
        with use_language(self.language()):
            extra = self._digest_lines(now)
            message = digest_message(self.store.states(), self.store.history(since=since), now, extra)
        weekly = self.config.digest.timeline_weekday
        with self.store.batch():
            self.store.set_meta("digest_day", day)
            alert_id = self._enqueue(message, alert_id=f"digest-{day}")
            if weekly and local.strftime("%A").lower() == weekly:
                self._enqueue_timeline(f"digest-timeline-{day}", days=7)
            self.store.prune_history((now - self.config.alerts.retention).isoformat())
        return alert_id

    def _digest_lines(self, now: datetime) -> list[str]:
        """The lines the optional sections add to the digest (yesterday's DMARC report totals, say)."""
        from bot.monitor.providers import digest_lines

        try:
            return digest_lines(self.config, now)
        except Exception:
            log.exception("a digest line failed; the digest goes without it")
            return []

    def _enqueue_timeline(self, alert_id: str, days: int) -> None:
        rooms = tuple(self.transport.alert_rooms)
        if rooms:
            self.store.enqueue(OutboxItem(alert_id, self.clock().isoformat(), rooms, kind="timeline", days=days))
            self._wake.set()


async def _let_go(reports: list[Report]) -> None:
    """Free a run's reports a slice per turn of the event loop, then give it one more turn: freeing a /20's
    73k findings at once, then the full collection right after it, held the loop for 0.1-0.3 s (the soak)."""
    await asyncio.sleep(0)  # the commit had this turn
    while reports:
        del reports[-REPORTS_AT_ONCE:]
        await asyncio.sleep(0)


def mask_report(report: Report) -> Report:
    """The report with every secret value masked in its findings (the same object when none is known)."""
    if not registered():
        return report
    masked = tuple(
        replace(
            finding,
            subject=mask(finding.subject),
            summary=mask(finding.summary),
            advice=mask(finding.advice),
            evidence=mask_value(finding.evidence),
        )
        for finding in report.findings
    )
    return replace(report, findings=masked)
