"""`[metrics] listen = "127.0.0.1:9464"`: the monitor's state and the bot's health for Prometheus.

Every value is read from the store when Prometheus scrapes, so nothing is cached and nothing goes stale
between runs. The endpoint is a small asyncio HTTP server in the bot's own event loop: the store is
only ever touched from that loop.

Status numbers follow the Nagios convention the CLI's exit codes use: ok=0, warn=1, fail=2, unknown=3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot import __version__
from bot.config.loader import Config
from bot.config.sections import MetricsConfig
from bot.monitor.core import Monitor
from bot.monitor.state import AlertState
from bot.monitor.traffic import TrafficFollower
from bot.transports.base import Transport
from checks.model import Status

__all__ = ["SNDS_COLOURS", "STATUS_VALUES", "MetricsServer", "MetricsStartError", "StoreCollector", "serve_metrics"]

log = logging.getLogger("repbot.metrics")

# The Nagios numbers, as the CLI's exit codes: one source, checks.model.Status.
STATUS_VALUES = {status.value: status.exit_code for status in Status}
SNDS_COLOURS = {"GREEN": 0, "YELLOW": 1, "RED": 2}
CANARY_KINDS = (
    "inbox", "junk", "bounced", "deferred", "not-sent", "pending", "missing-accepted", "missing-unknown", "unreadable",
)  # fmt: skip
MAX_REQUEST = 8192


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp() if text else None
    except ValueError:
        return None


def _status_value(state: AlertState) -> int:
    """The confirmed status; 3 while a check has been blind long enough to be reported, or never confirmed."""
    if state.unknown_alerted or not state.status:
        return STATUS_VALUES["unknown"]
    return STATUS_VALUES.get(state.status, STATUS_VALUES["unknown"])


class StoreCollector(Collector):
    """Builds every repbot_* metric at scrape time from the monitor's store and the transport."""

    def __init__(self, monitor: Monitor | None, transport: Transport, traffic: TrafficFollower | None = None) -> None:
        self.monitor = monitor
        self.transport = transport
        self.traffic = traffic

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("repbot_info", "repbot's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._health()
        monitor = self.monitor
        if monitor is None:
            return
        yield from _check_metrics(monitor.store.states())
        # Only these two checks' evidence is read: parsing every state's (73k with a /20) took the scrape 0.4 s.
        yield from _provider_metrics([*monitor.store.states(check="snds"), *monitor.store.states(check="complaints")])
        yield from _canary_metrics(monitor.store.get_meta("canary_history", {}) or {})
        yield from _report_metrics(monitor.config, monitor.clock())
        outbox = GaugeMetricFamily("repbot_outbox_messages", "alerts waiting to be accepted by a room")
        outbox.add_metric([], len(monitor.store.pending()))
        yield outbox
        runs = GaugeMetricFamily(
            "repbot_job_last_run_timestamp_seconds", "when each monitor job last finished", labels=["job"]
        )
        for name in sorted(monitor.families):
            stamp = _timestamp(monitor.store.get_meta(f"last_run:{name}"))
            if stamp is not None:
                runs.add_metric([name], stamp)
        yield runs
        if self.traffic is not None:
            from bot.monitor.traffic import traffic_metrics

            yield from traffic_metrics(self.traffic)

    def _health(self) -> Iterator[Metric]:
        last_sync = getattr(self.transport, "last_sync", None)
        if last_sync is None and not hasattr(self.transport, "last_sync"):
            return  # the console has no homeserver to lag behind
        stamp = GaugeMetricFamily(
            "repbot_matrix_last_sync_timestamp_seconds", "when the last sync with the homeserver succeeded"
        )
        lag = GaugeMetricFamily("repbot_matrix_sync_lag_seconds", "seconds since the last successful sync")
        if last_sync is not None:
            stamp.add_metric([], last_sync)
            lag.add_metric([], max(0.0, time.time() - last_sync))
        yield stamp
        yield lag


def _report_metrics(config: Config, now: datetime) -> Iterator[Metric]:
    """DMARC and TLS report counts, when [reports] is configured."""
    if config.reports is None:
        return
    from bot.monitor.reports import report_metrics

    yield from report_metrics(config, now)


def _check_metrics(states: Sequence[AlertState]) -> Iterator[Metric]:
    labels = ["target", "check", "subject"]
    status = GaugeMetricFamily(
        "repbot_check_status", "confirmed state of a check: ok=0, warn=1, fail=2, unknown=3", labels=labels
    )
    seen = GaugeMetricFamily("repbot_check_last_run_timestamp_seconds", "when the check last ran", labels=labels)
    for state in states:
        if state.check == "complaints" and state.subject.startswith("complaint "):
            continue  # one state per complaint report: repbot_complaints counts them
        key = [state.target, state.check, state.subject]
        status.add_metric(key, _status_value(state))
        stamp = _timestamp(state.last_seen)
        if stamp is not None:
            seen.add_metric(key, stamp)
    yield status
    yield seen


def _provider_metrics(states: Sequence[AlertState]) -> Iterator[Metric]:
    colour = GaugeMetricFamily("repbot_snds_colour", "Microsoft SNDS colour: green=0, yellow=1, red=2", labels=["ip"])
    traps = GaugeMetricFamily("repbot_snds_trap_hits", "SNDS spam-trap hits on the latest day", labels=["ip"])
    complaints = GaugeMetricFamily(
        "repbot_complaints", "feedback-loop complaints in the window", labels=["domain", "days"]
    )
    for state in states:
        evidence = state.evidence
        if state.check == "snds" and evidence.get("colour") in SNDS_COLOURS:
            colour.add_metric([str(evidence.get("ip", state.subject))], SNDS_COLOURS[evidence["colour"]])
            if isinstance(evidence.get("trap_hits"), int):
                traps.add_metric([str(evidence.get("ip", state.subject))], evidence["trap_hits"])
        if state.check == "complaints" and isinstance(evidence.get("count"), int):
            complaints.add_metric([state.subject, str(evidence.get("days", ""))], evidence["count"])
    yield colour
    yield traps
    yield complaints


def _canary_metrics(history: Mapping[str, Sequence[Mapping[str, Any]]]) -> Iterator[Metric]:
    verdict = GaugeMetricFamily(
        "repbot_canary_verdict", "1 for the kind of the latest canary verdict per seed", labels=["seed", "verdict"]
    )
    latency = GaugeMetricFamily(
        "repbot_canary_latency_seconds", "delivery time of the latest canary that arrived", labels=["seed"]
    )
    when = GaugeMetricFamily(
        "repbot_canary_last_verdict_timestamp_seconds", "when the latest verdict came", labels=["seed"]
    )
    for seed, entries in sorted(history.items()):
        if not entries:
            continue
        latest = entries[-1]
        for kind in CANARY_KINDS:
            verdict.add_metric([seed, kind], 1 if latest.get("kind") == kind else 0)
        arrived = [e["latency"] for e in entries if isinstance(e.get("latency"), int | float)]
        if arrived:
            latency.add_metric([seed], float(arrived[-1]))
        stamp = _timestamp(latest.get("at"))
        if stamp is not None:
            when.add_metric([seed], stamp)
    yield verdict
    yield latency
    yield when


class MetricsServer:
    """GET /metrics over HTTP/1.0 in the running event loop; anything else is 404."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the port (useful with port 0)."""
        self.server = await asyncio.start_server(self._serve, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = [*head.split(b"\r\n", 1)[0].split(b" "), b"", b""][:2]
            if method in (b"GET", b"HEAD") and path.split(b"?")[0] in (b"/metrics", b"/"):
                body = generate_latest(self.registry)
                status, kind = b"200 OK", CONTENT_TYPE_LATEST.encode()
            else:
                body, status, kind = b"not found\n", b"404 Not Found", b"text/plain"
            header = b"HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, kind, len(body))
            writer.write(header + (body if method != b"HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("a metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class MetricsStartError(Exception):
    """[metrics] listen names an address the bot cannot listen on (a port in use): one line, exit 1."""


@contextlib.asynccontextmanager
async def serve_metrics(
    config: MetricsConfig, monitor: Monitor | None, transport: Transport, traffic: TrafficFollower | None = None
) -> AsyncIterator[int | None]:
    """Serve /metrics while inside, when [metrics] listen is set; the port it listens on, or None."""
    if not config.listen:
        yield None
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(monitor, transport, traffic))
    server = MetricsServer(registry)
    try:
        port = await server.start(config.host, config.port)
    except OSError as error:
        raise MetricsStartError(
            f"[metrics] listen = {config.listen!r}: cannot listen there: {error.strerror}"
        ) from None
    log.info("Prometheus metrics on http://%s:%d/metrics", config.host, port)
    try:
        yield port
    finally:
        await server.stop()
