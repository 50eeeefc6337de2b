"""The Prometheus endpoint, scraped over HTTP on a free port while the lifespan runs."""

from __future__ import annotations

import io
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.config.loader import MetricsConfig, parse_config
from bot.context import build_context
from bot.metrics import serve_metrics
from bot.monitor.core import Monitor
from bot.monitor.state import AlertState, OutboxItem
from bot.monitor.store import Store
from bot.transports.console import ConsoleTransport

NOW = datetime.now(UTC)


class SyncingTransport(ConsoleTransport):
    """The console, plus the last-sync time a Matrix transport records."""

    last_sync: float | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _store(path: Path) -> Store:
    store = Store(path)
    seen = NOW.isoformat()
    rows = [
        ("192.0.2.1", "dnsbl", "zen.spamhaus.org", "fail", {}),
        ("192.0.2.1", "dnsbl", "bl.spamcop.net", "ok", {}),
        ("192.0.2.1", "snds", "192.0.2.1", "warn", {"ip": "192.0.2.1", "colour": "YELLOW", "trap_hits": 2}),
        ("example.org", "complaints", "example.org", "warn", {"count": 3, "days": 7}),
        ("example.org", "complaints", "complaint abc", "warn", {}),
        ("outlook.com", "canary", "outlook", "ok", {}),
    ]
    with store.batch():
        for target, check, subject, status, evidence in rows:
            key = f"{target}|{check}|{subject}"
            doc = {"key": key, "target": target, "check": check, "subject": subject, "status": status}
            store.put_state(AlertState.from_json({**doc, "last_seen": seen, "evidence": evidence}))
        doc = {"key": "example.org|spf|example.org", "target": "example.org", "check": "spf", "subject": "example.org"}
        store.put_state(AlertState.from_json({**doc, "status": "ok", "unknown_alerted": True, "last_seen": seen}))
        verdicts = [{"kind": "inbox", "latency": 42.5, "at": (NOW - timedelta(hours=7)).isoformat()},
                    {"kind": "junk", "latency": 61.0, "at": NOW.isoformat()}]  # fmt: skip
        store.set_meta("canary_history", {"outlook": verdicts})
        store.enqueue(OutboxItem("a1", seen, ("!r",), "x", "x"))
    return store


async def test_metrics_are_scraped_over_http(tmp_path: Path) -> None:
    port = _free_port()
    config = parse_config({"metrics": {"listen": f"127.0.0.1:{port}"}, "state": {"dir": str(tmp_path)}})
    assert config.metrics == MetricsConfig(f"127.0.0.1:{port}", "127.0.0.1", port)
    transport = SyncingTransport(stdin=io.StringIO(""), stdout=io.StringIO())
    transport.last_sync = time.time() - 12
    ctx = build_context(config)
    store = _store(tmp_path / "monitor.json")
    monitor = Monitor(config, store, transport, ctx, families={})
    async with serve_metrics(config.metrics, monitor, transport), httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
        missing = await client.get(f"http://127.0.0.1:{port}/nothing")
    store.close()
    assert response.status_code == 200 and missing.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    zen = {"target": "192.0.2.1", "check": "dnsbl", "subject": "zen.spamhaus.org"}
    assert value("repbot_check_status", **zen) == 2
    assert value("repbot_check_status", target="192.0.2.1", check="dnsbl", subject="bl.spamcop.net") == 0
    assert value("repbot_check_status", target="example.org", check="spf", subject="example.org") == 3
    assert abs(value("repbot_check_last_run_timestamp_seconds", **zen) - NOW.timestamp()) < 1
    assert not any(labels and ("subject", "complaint abc") in labels for _, labels in samples)
    assert value("repbot_snds_colour", ip="192.0.2.1") == 1
    assert value("repbot_snds_trap_hits", ip="192.0.2.1") == 2
    assert value("repbot_complaints", domain="example.org", days="7") == 3
    assert value("repbot_canary_verdict", seed="outlook", verdict="junk") == 1
    assert value("repbot_canary_verdict", seed="outlook", verdict="inbox") == 0
    assert value("repbot_canary_latency_seconds", seed="outlook") == 61.0
    assert value("repbot_outbox_messages") == 1
    assert 11 <= value("repbot_matrix_sync_lag_seconds") < 60


async def test_no_listen_no_endpoint(tmp_path: Path) -> None:
    config = parse_config({"state": {"dir": str(tmp_path)}})
    transport = ConsoleTransport(stdin=io.StringIO(""), stdout=io.StringIO())
    async with serve_metrics(config.metrics, None, transport) as port:
        assert port is None
