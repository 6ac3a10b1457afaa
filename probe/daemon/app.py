"""Wiring for `dnssec-probe run`: build every part from the config, run, shut down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from probe.alerts import AlertStats, Channel
from probe.alerts.alertmanager import AlertmanagerChannel
from probe.alerts.dispatch import Alerter
from probe.alerts.pagerduty import PagerDutyChannel
from probe.alerts.webhook import WebhookChannel
from probe.audit.auditor import AuditConfig, Auditor
from probe.audit.findings import AuditPolicy, ExpiryMargin
from probe.audit.history import AuditHistory
from probe.daemon.config import DaemonConfig
from probe.daemon.metrics import Metrics, MetricsServer
from probe.daemon.runner import Monitor, Schedule
from probe.engine import Engine, EngineConfig
from probe.incidents import IncidentPolicy
from probe.resolvers import ResolverSpec
from probe.sinks import DeliveryStats, Sink
from probe.sinks.delivery import Delivery
from probe.sinks.files import FileSink
from probe.sinks.influx_v1 import InfluxV1Sink
from probe.sinks.influx_v2 import InfluxV2Sink
from probe.sinks.spool import Spool
from probe.state import StateStore
from probe.zones import ZoneSpec

log = logging.getLogger("dnssec_probe.daemon")

SHUTDOWN_S = 5.0  # the writer's bound; the whole stop stays within a few seconds


def make_sink(cfg: DaemonConfig, state_dir: Path) -> Sink:
    token = cfg.influx_token()
    if not cfg.influx_url:
        return FileSink(state_dir / "lines", retention_hours=cfg.lines_retention_hours,
                        database=cfg.influx_db)
    if cfg.influx_api == "v2":
        return InfluxV2Sink(cfg.influx_url, cfg.influx_org, cfg.influx_bucket,
                            token.reveal() if token else "")
    return InfluxV1Sink(cfg.influx_url, cfg.influx_db, username=cfg.influx_username or None,
                        password=token.reveal() if token else None)


def make_channels(cfg: DaemonConfig) -> list[Channel]:
    channels: list[Channel] = []
    if cfg.alertmanager_url:
        # Firing alerts are re-sent every round; they must outlive a few missed rounds.
        channels.append(AlertmanagerChannel(cfg.alertmanager_url,
                                            resend_grace=max(300.0, 4 * cfg.interval)))
    key = cfg.pagerduty_key()
    if key is not None:
        channels.append(PagerDutyChannel(cfg.pagerduty_url, key.reveal()))
    if cfg.webhook_url:
        channels.append(WebhookChannel(cfg.webhook_url))
    return channels


async def serve(cfg: DaemonConfig, zones: Sequence[ZoneSpec],
                resolvers: Sequence[ResolverSpec], *, progress: bool = False) -> None:
    """Run the daemon until `rounds` are done or a signal arrives."""
    state_dir = cfg.effective_state_dir
    store = StateStore(state_dir)
    dstats, astats = DeliveryStats(), AlertStats()
    sink = make_sink(cfg, state_dir)
    delivery = Delivery(sink, Spool(state_dir / "spool", max_bytes=int(cfg.spool_max_mb * 2**20)),
                        dstats)
    channels = make_channels(cfg)
    vantage = cfg.effective_vantage
    alerter = Alerter(channels, store, astats, vantage=vantage)
    engine = Engine(EngineConfig(qps=cfg.qps, timeout=cfg.timeout, retries=cfg.retries,
                                 max_inflight=cfg.inflight, per_resolver=cfg.per_resolver,
                                 allow_local_auth=cfg.allow_local_auth,
                                 control_bogus=cfg.control_bogus or None,
                                 control_secure=cfg.control_secure or None,
                                 clock_skew=cfg.clock_skew))
    auditor: Auditor | None = None
    if cfg.audit:
        auditor = Auditor(
            AuditConfig(timeout=cfg.timeout, retries=cfg.retries,
                        allow_local_auth=cfg.allow_local_auth),
            resolvers, AuditHistory(store.db),
            AuditPolicy(margin=cfg.audit_margin, inconsistent_window=cfg.audit_inconsistent_window,
                        expiry_warning=ExpiryMargin.parse(cfg.audit_expiry_warning),
                        expiry_critical=ExpiryMargin.parse(cfg.audit_expiry_critical)),
            templates=engine.templates)
    monitor: Monitor | None = None
    metrics = Metrics(dstats, astats, lambda: len(monitor.open) if monitor else 0,
                      stale_after=3 * cfg.interval + 120)
    monitor = Monitor(
        zones=zones, resolvers=resolvers, engine=engine, store=store, writer=delivery,
        pager=alerter, metrics=metrics,
        policy=IncidentPolicy(cfg.open_min_resolvers, cfg.resolve_rounds),
        schedule=Schedule(cfg.interval, cfg.rounds, cfg.effective_jitter), vantage=vantage,
        progress=progress, auditor=auditor)
    server = MetricsServer(metrics, cfg.metrics_listen) if cfg.metrics_listen else None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, monitor.request_stop)
    background: list[asyncio.Task[None]] = []
    try:
        if server is not None:
            await server.start()
        background = [asyncio.create_task(delivery.run()), asyncio.create_task(alerter.run())]
        log.info("started", extra={
            "event": "start", "vantage": vantage, "zones": len(zones),
            "resolvers": len(resolvers), "interval_s": cfg.interval, "state_dir": str(state_dir),
            "sink": sink.name, "alert_channels": [c.name for c in channels]})
        if not channels:
            log.warning("no alert channel configured: incidents are logged and written, "
                        "nobody is paged", extra={"event": "no-alert-channel"})
        drop_orphan_alerts(store, {c.name for c in channels})
        await monitor.run()
        if not monitor.stopping:
            # --rounds N: give the writer a moment to deliver before exiting (spooled if not).
            await delivery.flush(SHUTDOWN_S)
    finally:
        # The handlers stay until the end: a second signal while stopping must not kill the
        # process before the spool has what is still in memory (request_stop is idempotent).
        await asyncio.gather(delivery.shutdown(SHUTDOWN_S), alerter.shutdown(2.0))
        for t in background:
            t.cancel()
        for t in background:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await sink.close()
        for ch in channels:
            await ch.close()
        if server is not None:
            await server.stop()
        store.close()
        log.info("stopped", extra={"event": "stopped", "rounds": monitor.rounds_done,
                                   "spool_batches": dstats.spool_batches})
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def drop_orphan_alerts(store: StateStore, configured: set[str]) -> None:
    """Alerts queued for a channel that is no longer configured could never be sent."""
    for channel in sorted(store.outbox_channels() - configured):
        n = store.outbox_drop_channel(channel)
        log.warning("dropped %d queued alert(s) for %s, which is no longer configured", n,
                    channel, extra={"event": "alerts-orphaned", "channel": channel,
                                    "alerts": n})
