"""Session fixture: one daemon run through the lab's bad cut-over, shared by the tests that read
what it wrote (the end-to-end assertions, every Grafana query against real InfluxDB data)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alert_fixtures import PAGERDUTY_PATH, WEBHOOK_PATH, Alertmanager, HttpReceiver
from daemonproc import DaemonProc, free_port
from dnslab import Lab

CUT = "49.in-addr.arpa."  # bad cut-over here
ROLL = "58.in-addr.arpa."  # correct pre-published rollover here
BASE = "1.in-addr.arpa."
DB = "e2e"
PD_KEY = "pd-secret-key"


def lab_settings(lab: Lab, workdir: Path, zones: list[str], **more: Any) -> dict[str, Any]:
    zfile = workdir / "zones.txt"
    zfile.write_text("".join(f"{z} {lab.zones[z].probe_names[0][0]}\n" for z in zones))
    return {
        "zones": str(zfile),
        "resolver": [f"{r.name}={r.host}" for r in lab.resolvers],
        "interval": 1.5, "jitter": 0.0, "qps": 0.0, "timeout": 1.0, "retries": 1,
        "allow_local_auth": True, "state_dir": str(workdir / "state"), "vantage": "lab",
        **more,
    }


@dataclass
class CutoverRun:
    """What the run did and what every receiver got, captured when it ended."""

    daemon: DaemonProc
    rc: int
    db: str
    state_dir: Path
    t_start: float
    t_cut: float  # cut-over (and rollover pre-publication) done
    t_open: float
    t_resolve: float
    t_end: float
    healthz_before: dict[str, Any]
    metrics: str
    am_webhook: list[dict[str, Any]]  # what Alertmanager delivered to its webhook receiver
    am_pagerduty: list[dict[str, Any]]  # ... and to its PagerDuty-format receiver
    pagerduty: list[dict[str, Any]]  # our own PagerDuty channel's bodies
    webhook: list[dict[str, Any]]  # our own webhook's bodies


def _am_zone_statuses(am: Alertmanager) -> list[str]:
    return [a["status"] for b in am.received(WEBHOOK_PATH) for a in b["alerts"]
            if a["labels"].get("zone") == CUT]


@pytest.fixture(scope="session")
def cutover_run(lab: Lab, influxdb: Any, alertmanager: Alertmanager,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[CutoverRun]:
    """Steady state, then zone 49 cut over to a standby ZSK while zone 58 rolls correctly; the
    daemon writes to InfluxDB 1.6 (db "e2e") and pages Alertmanager, PagerDuty and a webhook
    (loopback receivers); it runs until the incident resolved and is then stopped (SIGTERM)."""
    workdir = Path(tmp_path_factory.mktemp("cutover-run"))
    influxdb.ensure_running()
    influxdb.create_db(DB)
    alertmanager.clear()
    receiver = HttpReceiver()
    metrics_port = free_port()
    settings = lab_settings(
        lab, workdir, [BASE, CUT, ROLL], influx_url=influxdb.url, influx_api="v1",
        influx_db=DB, alertmanager_url=alertmanager.url, webhook_url=f"{receiver.url}/hook",
        pagerduty_url=f"{receiver.url}/pd", metrics_listen=f"127.0.0.1:{metrics_port}")
    d = DaemonProc(workdir, settings, env={"DNSSEC_PROBE_PAGERDUTY_KEY": PD_KEY})
    cut, roll = lab.zones[CUT], lab.zones[ROLL]
    t_start = time.time()
    d.start()
    try:
        d.wait_rounds(2, 20)  # steady state, caches warm
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as r:
            healthz = json.load(r)
        lab.cutover(CUT)
        lab.prepublish(ROLL)
        t_cut = time.time()
        d.wait_for(lambda e: e.get("event") == "incident-open", 20, "incident open")
        t_open = time.time()
        # Correct rollover, step 2, once every cache holds the new key too.
        time.sleep(max(0.0, t_cut + roll.dnskey_ttl + roll.record_ttl + 1 - time.time()))
        lab.roll(ROLL)
        d.wait_for(lambda e: e.get("event") == "incident-resolve", cut.dnskey_ttl + 40,
                   "incident resolve")
        t_resolve = time.time()
        d.wait_rounds(1, 10)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        # Alertmanager groups for 1 s before it notifies: wait for both resolutions.
        alertmanager.wait_for(lambda: "resolved" in _am_zone_statuses(alertmanager) and any(
            b.get("event_action") == "resolve" for b in alertmanager.received(PAGERDUTY_PATH)),
            15)
    finally:
        rc = d.stop()
        receiver.close()
    yield CutoverRun(
        daemon=d, rc=rc, db=DB, state_dir=workdir / "state", t_start=t_start, t_cut=t_cut,
        t_open=t_open, t_resolve=t_resolve, t_end=time.time(), healthz_before=healthz,
        metrics=metrics, am_webhook=alertmanager.received(WEBHOOK_PATH),
        am_pagerduty=alertmanager.received(PAGERDUTY_PATH),
        pagerduty=receiver.received("/pd"), webhook=receiver.received("/hook"))
