"""`dnssec-probe run` as a process against the real-resolver lab, InfluxDB and Alertmanager.

The daemon runs as users run it (a config file, flags, signals); the lab's resolvers fail for
real; incidents and points are read back from the servers they went to.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from alert_fixtures import HttpReceiver
from cutover_run import BASE, CUT, PD_KEY, ROLL, CutoverRun, lab_settings
from daemonproc import DaemonProc, free_port
from dnslab import Lab

pytestmark = pytest.mark.lab

BROKEN = "36.in-addr.arpa."  # expired signatures: bogus at every resolver, all the time


def lines_in(state_dir: Path) -> list[str]:
    """Every line-protocol line the daemon kept: the embedded sink's files (plain and rotated)
    and the spool (a stop spools what it had not written yet)."""
    out: list[str] = []
    for f in [*sorted((state_dir / "lines").iterdir()), *sorted((state_dir / "spool").glob("*.lp"))]:
        if f.name.endswith(".lp"):
            out += f.read_text().splitlines()
        elif f.name.endswith(".lp.gz"):
            out += gzip.decompress(f.read_bytes()).decode().splitlines()
    return out


def field(line: str, name: str) -> str | None:
    for kv in line.split(" ")[1].split(","):
        k, _, v = kv.partition("=")
        if k == name:
            return v
    return None


def incidents_cli(state_dir: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "probe", "incidents", "--state-dir",
                          str(state_dir), "--json", "--all"],
                         capture_output=True, text=True, check=True).stdout
    incs: list[dict[str, Any]] = json.loads(out)["incidents"]
    return incs


def test_sigterm_mid_round_loses_nothing_and_restart_pages_nothing_twice(
        lab: Lab, http_receiver: HttpReceiver, tmp_path: Path) -> None:
    """Embedded default (no InfluxDB): an always-bogus zone opens one incident; SIGTERM in the
    middle of a slow round writes what it had and exits 0; a restart restores the incident
    without opening or paging it again."""
    settings = lab_settings(lab, tmp_path, [BROKEN, BASE], interval=1.0,
                            webhook_url=f"{http_receiver.url}/hook")
    d = DaemonProc(tmp_path, settings).start()
    try:
        opened = d.wait_for(lambda e: e.get("event") == "incident-open", 20, "incident open")
        assert opened["zone"] == BROKEN and opened["kind"] == "bogus-at-source"
        assert http_receiver.wait_for(lambda: len(http_receiver.received("/hook")) == 1, 10)
        d.wait_rounds(3, 20)
    finally:
        assert d.stop() == 0
    state = tmp_path / "state"
    # A slow second run (rate-limited, so a round takes seconds): stop it mid-round.
    slow = DaemonProc(tmp_path / "second", {**settings, "qps": 1.0, "interval": 30.0})
    slow.start()
    try:
        slow.wait_for(lambda e: e.get("event") == "restore", 15, "restore")
        # Inside round 1: at 1 q/s per resolver its 2 checks and the bogus zone's follow-ups
        # (CD=1 data, DNSKEY, DS, NS, A, AAAA through the same resolver) take over 5 s.
        time.sleep(1.5)
        t0 = time.monotonic()
    finally:
        rc = slow.stop()
    assert rc == 0 and time.monotonic() - t0 < 8
    rounds = slow.of("round")
    assert rounds and rounds[-1]["partial"], slow.tail()
    # Every check of every round, the partial one included, is in the line files.
    lines = lines_in(state)
    round_lines = [ln for ln in lines if ln.startswith("dnssec_round,")]
    assert round_lines
    for rl in round_lines:
        number = field(rl, "round")
        checks = int((field(rl, "checks") or "0").rstrip("i"))
        got = [ln for ln in lines if ln.startswith("dnssec_check,")
               and field(ln, "round") == number]
        assert len(got) == checks, (number, checks, len(got))
    assert any(field(rl, "partial") == "true" for rl in round_lines)
    # The restart neither opened nor paged the incident again.
    assert not slow.of("incident-open")
    incs = incidents_cli(state)
    assert [i["id"] for i in incs] == [opened["incident"]] and incs[0]["resolved_at"] is None
    time.sleep(0.5)
    assert [b["event"] for b in http_receiver.received("/hook")] == ["open"]
    opens = [ln for ln in lines if ln.startswith("dnssec_incident,") and "event=open" in ln]
    assert len(opens) == 1


def influx_rows(result: Any) -> list[dict[str, Any]]:
    """Rows of an InfluxQL answer as dicts (column -> value)."""
    rows: list[dict[str, Any]] = []
    for res in result.get("results", []):
        for series in res.get("series", []):
            cols = series["columns"]
            tags = series.get("tags", {})
            rows += [{**tags, **dict(zip(cols, v, strict=True))} for v in series["values"]]
    return rows


@pytest.mark.slow
def test_cutover_opens_one_incident_pages_and_resolves(lab: Lab, influxdb: Any,
                                                        cutover_run: CutoverRun) -> None:
    run, d, db = cutover_run, cutover_run.daemon, cutover_run.db
    cut = lab.zones[CUT]
    assert run.rc == 0 and run.healthz_before["ok"] is True
    (opened,) = d.of("incident-open")  # the rollover zone opened nothing
    (resolved,) = d.of("incident-resolve")
    assert opened["zone"] == CUT and opened["kind"] == "stale-dnskey-cache"
    assert opened["rrsig_keytags"] == [cut.standby_zsk_tag]
    assert set(opened["cached_keytags"]) == {cut.ksk_tag, cut.zsk_tag}
    assert opened["affected"] >= 2 and resolved["incident"] == opened["incident"]
    inc_id = opened["incident"]

    # InfluxDB: the incident's events, the first failing round, every check of every round.
    influxdb.ensure_running()
    every = influx_rows(influxdb.query(
        'SELECT * FROM dnssec_incident GROUP BY "zone", "event", "kind"', db))
    assert {r["zone"] for r in every} == {CUT}
    # The audit saw the cause at the source (issue 9): an unsafe-rollover audit incident for
    # the same zone, paged through the same channels; the resolvers' incident names it.
    audit = [r for r in every if r["kind"] == "unsafe-rollover"]
    rows = [r for r in every if r["kind"] != "unsafe-rollover"]
    assert [r["event"] for r in audit][:1] == ["open"]
    assert str(cut.standby_zsk_tag) == audit[0]["rrsig_keytags"]
    cause = (f"cause: {CUT} re-signed with key {cut.standby_zsk_tag} published 0 s before use; "
             "at risk until ")
    assert any(cause in r["detail"] for r in rows), [r["detail"] for r in rows]
    assert [r["event"] for r in rows if r["event"] != "update"] == ["open", "resolve"]
    first = next(r for r in rows if r["event"] == "open")
    assert first["id"] == inc_id and first["kind"] == "stale-dnskey-cache"
    assert first["rrsig_keytags"] == str(cut.standby_zsk_tag)
    failing = influx_rows(influxdb.query(
        f"SELECT bogus, \"round\" FROM dnssec_zone WHERE \"zone\" = '{CUT}' AND bogus >= 2", db))
    assert min(r["round"] for r in failing) == first["round"]  # opened in the first bad round
    per_round = {r["round"]: r["checks"] for r in influx_rows(influxdb.query(
        'SELECT "round", checks FROM dnssec_round', db))}
    for number, checks in per_round.items():
        (row,) = influx_rows(influxdb.query(
            f'SELECT count(qname) FROM dnssec_check WHERE "round" = {number}', db))
        assert row["count"] == checks, (number, checks, row)
    assert len(per_round) >= 10
    stale = influx_rows(influxdb.query(
        f"SELECT recovers_in_s FROM dnssec_check WHERE \"zone\" = '{CUT}' "
        "AND diagnosis = 'stale-dnskey-cache'", db))
    assert stale and all(0 <= r["recovers_in_s"] <= cut.dnskey_ttl for r in stale)
    assert not influx_rows(influxdb.query(
        f"SELECT * FROM dnssec_check WHERE \"zone\" = '{ROLL}' AND verdict != 'secure'", db))

    # Alertmanager delivered firing then resolved to its webhook and PagerDuty receivers.
    statuses = [a["status"] for b in run.am_webhook for a in b["alerts"]
                if a["labels"].get("zone") == CUT]
    assert statuses[0] == "firing" and "resolved" in statuses
    fired = next(a for b in run.am_webhook for a in b["alerts"] if a["labels"].get("zone") == CUT
                 and a["labels"]["alertname"] == "DNSSECValidationFailure")
    assert any(a["labels"]["alertname"] == "DNSSECSignerAudit"
               and a["labels"]["kind"] == "unsafe-rollover"
               for b in run.am_webhook for a in b["alerts"])
    assert fired["labels"]["alertname"] == "DNSSECValidationFailure"
    assert fired["labels"]["kind"] == "stale-dnskey-cache" and fired["labels"]["vantage"] == "lab"
    assert str(cut.standby_zsk_tag) in fired["annotations"]["description"]
    pd_actions = [b["event_action"] for b in run.am_pagerduty]
    assert pd_actions[0] == "trigger" and "resolve" in pd_actions
    # Our own PagerDuty channel: trigger(s) and one resolve, all with the incident id.
    pd = [b for b in run.pagerduty if "#unsafe-rollover@" not in b["dedup_key"]]
    assert len(pd) < len(run.pagerduty)  # the audit incident paged too
    assert {b["dedup_key"] for b in pd} == {inc_id}
    assert pd[0]["event_action"] == "trigger" and pd[-1]["event_action"] == "resolve"
    assert [b["event_action"] for b in pd].count("resolve") == 1
    hooks = [b for b in run.webhook if b["incident"]["source"] == "resolvers"]
    assert any(cause.removeprefix("cause: ") in b["incident"]["cause"] for b in hooks)
    assert hooks[0]["event"] == "open" and hooks[-1]["event"] == "resolve"
    assert hooks[0]["incident"]["id"] == inc_id and hooks[0]["incident"]["zone"] == CUT
    # Self-metrics saw it all; the routing key never reached the logs.
    assert "dnssec_probe_rounds_total" in run.metrics and 'verdict="bogus"' in run.metrics
    assert PD_KEY not in d.log_path.read_text()
    assert [i["id"] for i in incidents_cli(run.state_dir) if i["source"] == "resolvers"] == [inc_id]


# A few backoff steps (1, 2, 4 s ...) pass while it is away; OUTAGE_ROUNDS=60 makes it the
# minute of the issue (run by hand: recovery can then wait for a backoff step of up to 60 s).
OUTAGE_ROUNDS = int(os.environ.get("OUTAGE_ROUNDS", "8"))


def test_influxdb_outage_loses_nothing_and_writes_nothing_twice(
        lab: Lab, influxdb: Any, influx_db: str, tmp_path: Path) -> None:
    """InfluxDB stops for a while in the middle of a run: rounds go on, their points wait in
    the spool, and once it is back every point of every round is there exactly once."""
    metrics_port = free_port()
    settings = lab_settings(lab, tmp_path, [BASE, BROKEN], interval=1.0,
                            influx_url=influxdb.url, influx_db=influx_db,
                            metrics_listen=f"127.0.0.1:{metrics_port}")
    d = DaemonProc(tmp_path, settings).start()
    try:
        d.wait_rounds(2, 20)
        influxdb.stop()
        d.wait_rounds(OUTAGE_ROUNDS, OUTAGE_ROUNDS * 3 + 10)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as r:
            raise AssertionError(f"healthy while InfluxDB is down: {r.read()!r}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503 and json.load(exc)["last_write_ok"] is False
        influxdb.start()
        d.wait_for(lambda e: e.get("event") == "delivery-recovered", 90, "delivery recovered")
        d.wait_rounds(1, 10)
    finally:
        assert d.stop() == 0
        influxdb.ensure_running()
    rounds = {r["round"]: r["checks"] for r in influx_rows(influxdb.query(
        'SELECT "round", checks FROM dnssec_round', influx_db))}
    logged = {e["round"]: e["checks"] for e in d.of("round")}
    assert rounds == logged and len(rounds) >= OUTAGE_ROUNDS + 3
    for number, checks in rounds.items():
        (row,) = influx_rows(influxdb.query(
            f'SELECT count(qname) FROM dnssec_check WHERE "round" = {number}', influx_db))
        assert row["count"] == checks == 8, (number, row)
    # It did go through the spool: the outage was seen, and the backlog written afterwards.
    failed = d.of("delivery-failed")
    assert failed and failed[0]["code"] == "connect-failed"
    assert d.of("delivery-recovered")[0]["failed_attempts"] >= 2


def test_influx_v2_api_through_influxdb_client_to_victoriametrics(
        lab: Lab, vm: Any, tmp_path: Path) -> None:
    """influx_api = "v2": the influxdb-client write path, read back from VictoriaMetrics."""
    settings = lab_settings(lab, tmp_path, [BASE, BROKEN], interval=0.5, rounds=3,
                            vantage="vm-e2e", influx_url=vm.url, influx_api="v2",
                            influx_org="lab", influx_bucket="dnssec")
    d = DaemonProc(tmp_path, settings, env={"DNSSEC_PROBE_INFLUX_TOKEN": "vm-token"}).start()
    assert d.proc is not None and d.proc.wait(30) == 0, d.tail()
    assert [e["checks"] for e in d.of("round")] == [8, 8, 8]
    assert d.of("stopped")[0]["spool_batches"] == 0
    rounds = vm.wait_export('{__name__="dnssec_round_checks",vantage="vm-e2e"}', samples=3)
    assert [v for s in rounds for v in s["values"]] == [8, 8, 8]
    rtts = vm.wait_export('{__name__="dnssec_check_rtt_ms",vantage="vm-e2e"}', samples=24)
    assert sum(len(s["values"]) for s in rtts) == 24
    bogus = vm.wait_export('{__name__="dnssec_zone_bogus",vantage="vm-e2e"}', samples=6)
    by_zone = {s["metric"]["zone"]: s["values"] for s in bogus}
    assert by_zone == {BASE: [0, 0, 0], BROKEN: [4, 4, 4]}
    assert "vm-token" not in d.log_path.read_text()
