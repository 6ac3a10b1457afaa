"""Self-monitoring: Prometheus /metrics (its own registry, never the global one) and /healthz."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from probe.alerts import AlertStats
from probe.codes import FindingCode, Verdict
from probe.errors import ConfigError
from probe.resolvers import parse_hostport
from probe.sinks import DeliveryStats

PREFIX = "dnssec_probe"


@dataclass
class Health:
    """What /healthz reports: did the last round finish, did the last write succeed."""

    last_round_ok: bool | None = None  # None until the first round ended
    last_round_end: float | None = None


class _StatsCollector(Collector):
    """Reads the delivery and alert counters at scrape time (they live with their owners)."""

    def __init__(self, delivery: DeliveryStats, alerts: AlertStats,
                 open_incidents: Callable[[], int]) -> None:
        self.d = delivery
        self.a = alerts
        self.open_incidents = open_incidents

    def collect(self) -> Iterator[Metric]:
        d, a = self.d, self.a
        yield CounterMetricFamily(f"{PREFIX}_written_lines", "Lines written to the sink.",
                                  d.written_lines)
        wf = CounterMetricFamily(f"{PREFIX}_write_failures", "Failed writes, by error code.",
                                 labels=["code"])
        for code, n in sorted(d.write_failures.items()):
            wf.add_metric([code], n)
        yield wf
        yield CounterMetricFamily(f"{PREFIX}_spooled_lines", "Lines that went to the spool.",
                                  d.spooled_lines)
        yield CounterMetricFamily(f"{PREFIX}_replayed_lines", "Lines written from the spool.",
                                  d.replayed_lines)
        yield CounterMetricFamily(f"{PREFIX}_spool_dropped_lines",
                                  "Lines dropped because the spool was full (oldest first).",
                                  d.dropped_lines)
        yield CounterMetricFamily(f"{PREFIX}_rejected_lines",
                                  "Lines the server refused as bad data (kept in rejected/).",
                                  d.rejected_lines)
        yield CounterMetricFamily(f"{PREFIX}_rejected_pruned_lines",
                                  "Rejected lines deleted to keep rejected/ within its bound.",
                                  d.rejected_pruned_lines)
        yield GaugeMetricFamily(f"{PREFIX}_spool_bytes", "Current spool size.", d.spool_bytes)
        yield GaugeMetricFamily(f"{PREFIX}_spool_batches", "Current spooled batches.",
                                d.spool_batches)
        yield GaugeMetricFamily(f"{PREFIX}_last_successful_write_timestamp_seconds",
                                "When the last write succeeded (0: never).",
                                d.last_success or 0.0)
        sent = CounterMetricFamily(f"{PREFIX}_alerts_sent", "Alerts delivered, by channel.",
                                   labels=["channel"])
        for ch, n in sorted(a.sent.items()):
            sent.add_metric([ch], n)
        yield sent
        fail = CounterMetricFamily(f"{PREFIX}_alert_send_failures",
                                   "Failed alert sends, by channel and error code.",
                                   labels=["channel", "code"])
        for (ch, code), n in sorted(a.failures.items()):
            fail.add_metric([ch, code], n)
        yield fail
        yield GaugeMetricFamily(f"{PREFIX}_alerts_pending", "Alerts queued for delivery.",
                                a.pending)
        yield GaugeMetricFamily(f"{PREFIX}_open_incidents", "Open incidents.",
                                self.open_incidents())


class Metrics:
    """The daemon's metrics on a registry of its own."""

    def __init__(self, delivery: DeliveryStats, alerts: AlertStats,
                 open_incidents: Callable[[], int], *, stale_after: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.stale_after = stale_after  # no round ended for this long: a hung sweep
        self.clock = clock
        self.started = clock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, resident memory, open fds
        self.rounds = Counter(f"{PREFIX}_rounds", "Rounds finished.", registry=r)
        self.overruns = Counter(f"{PREFIX}_round_overruns", "Rounds that ran past their interval.",
                                registry=r)
        self.round_errors = Counter(f"{PREFIX}_round_errors",
                                    "Rounds that failed with an internal error.", registry=r)
        self.audit_errors = Counter(f"{PREFIX}_audit_errors",
                                    "Signer-side audit passes that failed with an internal error.",
                                    registry=r)
        self.audit_findings = Counter(f"{PREFIX}_audit_findings",
                                      "Signer-side audit findings, by code.", ["code"], registry=r)
        for code in FindingCode:
            self.audit_findings.labels(code.value)
        self.duration = Histogram(f"{PREFIX}_round_duration_seconds", "Round duration.",
                                  buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
                                  registry=r)
        self.checks = Counter(f"{PREFIX}_checks", "Checks by verdict.", ["verdict"], registry=r)
        for v in Verdict:
            self.checks.labels(v.value)  # every verdict appears, at 0, from the start
        self.followups = Counter(f"{PREFIX}_followups",
                                 "Failed checks that got follow-up questions (diagnosis).",
                                 registry=r)
        self.last_round = Gauge(f"{PREFIX}_last_round_timestamp_seconds",
                                "When the last round ended.", registry=r)
        self.delivery = delivery
        self.alerts = alerts
        self.open_incidents = open_incidents
        self.health = Health()
        r.register(_StatsCollector(delivery, alerts, open_incidents))

    def healthz(self) -> tuple[bool, dict[str, object]]:
        """Healthy when the last round finished, one ended recently (no hung sweep) and the
        last write (if any) succeeded."""
        d = self.delivery
        last_end = self.health.last_round_end
        fresh = self.clock() - (last_end or self.started) <= self.stale_after
        round_ok = self.health.last_round_ok is not False and fresh
        write_ok = d.last_write_ok is not False
        body: dict[str, object] = {
            "ok": round_ok and write_ok,
            "last_round_finished": self.health.last_round_ok,
            "rounds_stale": not fresh,
            "last_round_end": self.health.last_round_end,
            "last_write_ok": d.last_write_ok,
            "last_successful_write": d.last_success,
            "spool_batches": d.spool_batches,
        }
        return round_ok and write_ok, body


class MetricsServer:
    """aiohttp server for /metrics and /healthz on metrics_listen."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        try:
            self.host, self.port = parse_hostport(listen, default_port=9153)
        except ValueError as exc:
            raise ConfigError(f"metrics_listen: {exc}") from None
        self.metrics = metrics
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _healthz(self, _: web.Request) -> web.Response:
        ok, body = self.metrics.healthz()
        body["time"] = time.time()
        return web.Response(status=200 if ok else 503, text=json.dumps(body),
                            content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"metrics_listen: cannot listen on {self.host}:{self.port} "
                              f"({exc.strerror})") from None
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
