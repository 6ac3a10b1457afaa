"""The audit inside `dnssec-probe run`, in-process: findings become points, paged findings become
incidents through the same alert paths, and a resolver-side incident names its cause."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from signedzone import SignedZone
from test_audit import _server
from test_daemon_units import RND, round_results
from test_monitor import FakeSweep, ListWriter

from probe.alerts import AlertStats
from probe.alerts.alertmanager import AUDIT_ALERTNAME, AlertmanagerChannel
from probe.alerts.dispatch import Alerter
from probe.alerts.pagerduty import PagerDutyChannel
from probe.alerts.webhook import WebhookChannel
from probe.audit.auditor import AuditConfig, Auditor, AuditReport
from probe.audit.findings import AuditPolicy, Finding
from probe.audit.history import AuditHistory
from probe.audit.snapshot import ZoneSnapshot
from probe.codes import FindingCode, FindingSeverity
from probe.daemon.metrics import Metrics
from probe.daemon.runner import Monitor, Schedule
from probe.incidents import EventKind, Incident, IncidentPolicy, audit_key, audit_step
from probe.points import finding_points, to_lines
from probe.sinks import DeliveryStats
from probe.state import StateStore

ZONE = "14.in-addr.arpa."


class FakeAuditor:
    """Answers every pass with the next prepared snapshots; judging is the real Auditor's."""

    def __init__(self, real: Auditor, passes: list[list[ZoneSnapshot]]) -> None:
        self.real = real
        self.passes = passes
        self.calls = 0

    async def collect(self, zones: Sequence[object]) -> list[ZoneSnapshot]:
        snaps = self.passes[min(self.calls, len(self.passes) - 1)]
        self.calls += 1
        return snaps

    def record(self, snapshots: Sequence[ZoneSnapshot]) -> AuditReport:
        return self.real.record(snapshots)


def _monitor(store: StateStore, writer: ListWriter, auditor: FakeAuditor, rounds: int
             ) -> Monitor:
    results = round_results()
    channels = [WebhookChannel("http://127.0.0.1:9/hook")]  # queued only: never sent here
    return Monitor(
        zones=[results[0].zone], resolvers=sorted({r.resolver for r in results},
                                                  key=lambda r: r.name),
        engine=FakeSweep(0.01, results), store=store, writer=writer,
        pager=Alerter(channels, store, AlertStats(), vantage="t"),
        metrics=Metrics(DeliveryStats(), AlertStats(), lambda: 0), policy=IncidentPolicy(),
        schedule=Schedule(0.05, rounds, 0.0), vantage="t", auditor=auditor)


async def test_round_audit_pages_and_names_the_cause(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    now = time.time()
    z = SignedZone(ZONE, now - 20, dnskey_ttl=3600)
    real = Auditor(AuditConfig(), [], AuditHistory(store.db), AuditPolicy(margin=60.0))
    real.record([ZoneSnapshot(ZONE, now - 20, (_server(z, now - 20, [z.ksk, z.zsk], z.zsk),))])
    cut = [ZoneSnapshot(ZONE, now, (_server(z, now, [z.ksk, z.standby], z.standby),))]
    writer = ListWriter()
    m = _monitor(store, writer, FakeAuditor(real, [cut]), rounds=2)
    await m.run()

    findings = [ln for ln in writer.lines if ln.startswith("dnssec_finding,")]
    unsafe = [ln for ln in findings if "code=unsafe-rollover" in ln]
    assert len(unsafe) == 2  # one per round while at risk
    assert "severity=critical" in unsafe[0] and "at_risk_until=" in unsafe[0]
    assert f'new_keytags="{z.standby.tag}"' in unsafe[0]
    assert any("code=key-change" in ln for ln in findings)
    incidents = [ln for ln in writer.lines if ln.startswith("dnssec_incident,")]
    opened = [ln for ln in incidents if "event=open" in ln]
    assert len(opened) == 2
    (validation,) = [ln for ln in opened if "kind=stale-dnskey-cache" in ln]
    assert (f"cause: {ZONE} re-signed with key {z.standby.tag} published 0 s before use; "
            "at risk until") in validation
    assert any("kind=unsafe-rollover" in ln for ln in opened)
    # Same alert path: the webhook outbox holds both opens; the audit one says where it is from.
    bodies = [r.body for r in store.outbox_pending("webhook")]
    assert {b["incident"]["source"] for b in bodies} == {"resolvers", "audit"}
    (audit_body,) = [b for b in bodies if b["incident"]["source"] == "audit"]
    assert audit_body["incident"]["kind"] == "unsafe-rollover"
    assert audit_body["incident"]["recovers_at"] is not None
    # Restored apart: validation incidents by zone, audit incidents by zone and code.
    assert set(store.open_incidents()) == {ZONE}
    assert set(store.open_audit_incidents()) == {audit_key(ZONE, "unsafe-rollover")}
    assert m.metrics.registry.get_sample_value(
        "dnssec_probe_audit_findings_total", {"code": "unsafe-rollover"}) == 2
    store.close()


async def test_a_failing_audit_does_not_cost_the_round(tmp_path: Path) -> None:
    class Broken(FakeAuditor):
        def record(self, snapshots: Sequence[ZoneSnapshot]) -> AuditReport:
            raise RuntimeError("audit bug")

    store = StateStore(tmp_path)
    writer = ListWriter()
    real = Auditor(AuditConfig(), [], AuditHistory(store.db), AuditPolicy())
    m = _monitor(store, writer, Broken(real, [[]]), rounds=1)
    await m.run()
    assert m.rounds_done == 1
    assert any(ln.startswith("dnssec_check,") for ln in writer.lines)
    assert m.metrics.registry.get_sample_value("dnssec_probe_audit_errors_total") == 1
    store.close()


def _finding(code: FindingCode = FindingCode.SIGNER_KEY_MISMATCH, servers: tuple[str, ...] = (
        "192.0.2.50",), new: tuple[int, ...] = (222,)) -> Finding:
    return Finding(code, ZONE, FindingSeverity.CRITICAL, f"{ZONE}: standby differs", servers,
                   (111,), new)


def test_audit_step_opens_updates_and_resolves_only_when_audited() -> None:
    t = 1_800_000_000.0
    info = Finding(FindingCode.KEY_CHANGE, ZONE, FindingSeverity.INFO, "x")
    heard = {ZONE: ["192.0.2.1", "192.0.2.50"]}
    open1, ev = audit_step({}, [_finding(), info], answered=heard, watched=[ZONE], now=t)
    assert [e.event for e in ev] == [EventKind.OPEN]  # info findings never page
    inc = open1[audit_key(ZONE, "signer-key-mismatch")]
    assert inc.source == "audit" and inc.id == "14.in-addr.arpa#signer-key-mismatch@2027-01-15T08:00:00Z"
    assert inc.detail == f"{ZONE}: standby differs"
    same, ev = audit_step(open1, [_finding()], answered=heard, watched=[ZONE], now=t + 60)
    assert ev == [] and same == open1
    upd, ev = audit_step(open1, [_finding(new=(223,))], answered=heard, watched=[ZONE],
                         now=t + 120)
    assert [e.event for e in ev] == [EventKind.UPDATE]
    # Not audited this pass (no server answered): nothing is known, nothing changes; nor when
    # the server the finding names (the standby) did not answer.
    kept, ev = audit_step(upd, [], answered={}, watched=[ZONE], now=t + 180)
    assert ev == [] and kept == upd
    kept, ev = audit_step(upd, [], answered={ZONE: ["192.0.2.1"]}, watched=[ZONE], now=t + 200)
    assert ev == [] and kept == upd
    done, ev = audit_step(upd, [], answered=heard, watched=[ZONE], now=t + 240)
    assert done == {} and [e.event for e in ev] == [EventKind.RESOLVE]
    assert ev[0].incident.detail.endswith("cleared at 2027-01-15T08:04:00Z")
    gone, ev = audit_step(upd, [], answered={}, watched=[], now=t + 240)
    assert gone == {} and [e.event for e in ev] == [EventKind.RESOLVE]


def test_audit_incidents_round_trip_and_channels_name_them() -> None:
    (_, ev), = [audit_step({}, [_finding()], answered={}, watched=[ZONE], now=1e9)]
    inc = ev[0].incident
    assert Incident.from_dict(inc.to_dict()) == inc
    am = AlertmanagerChannel("http://127.0.0.1:9093")
    alert = am.on_event(ev[0], vantage="v")[0]["alerts"][0]
    assert alert["labels"]["alertname"] == AUDIT_ALERTNAME
    assert alert["labels"]["kind"] == "signer-key-mismatch"
    assert "signer audit" in alert["annotations"]["summary"]
    pd = PagerDutyChannel(routing_key="k")
    body = pd.on_event(ev[0], vantage="v")[0]
    assert body["payload"]["summary"].startswith("DNSSEC signer audit: signer-key-mismatch")


def test_finding_points_schema() -> None:
    f = Finding(FindingCode.UNSAFE_ROLLOVER, ZONE, FindingSeverity.CRITICAL, "d e", ("a", "b"),
                (1, 2), (3,), 1_800_000_100.0)
    (line,) = to_lines(finding_points([f], RND))
    assert line.startswith("dnssec_finding,code=unsafe-rollover,severity=critical,"
                           "vantage=lab\\ host,zone=14.in-addr.arpa. ")
    for field in ('detail="d e"', 'keytags="1,2"', 'new_keytags="3"', 'servers="a,b"',
                  "at_risk_until=1800000100i", "round=7i"):
        assert field in line, field
    assert line.endswith(" 1700000000000000000")
    (no_risk,) = to_lines(finding_points([Finding(FindingCode.KEY_CHANGE, ZONE,
                                                  FindingSeverity.INFO, "k")], RND))
    assert "at_risk_until" not in no_risk



def test_an_unsafe_rollover_stays_open_until_its_risk_is_over() -> None:
    t = 1_800_000_000.0
    f = _finding(FindingCode.UNSAFE_ROLLOVER, servers=("192.0.2.1", "192.0.2.2"))
    f = Finding(f.code, f.zone, f.severity, f.detail, f.servers, f.keytags, f.new_keytags,
                at_risk_until=t + 600)
    opened, _ = audit_step({}, [f], answered={ZONE: ["192.0.2.1", "192.0.2.2"]},
                           watched=[ZONE], now=t)
    # 192.0.2.2 timed out: the finding is gone from this pass, the risk is not.
    kept, ev = audit_step(opened, [], answered={ZONE: ["192.0.2.1"]}, watched=[ZONE], now=t + 60)
    assert ev == []
    done, ev = audit_step(kept, [], answered={ZONE: ["192.0.2.1"]}, watched=[ZONE], now=t + 600)
    assert done == {} and [e.event for e in ev] == [EventKind.RESOLVE]


def test_a_cause_is_worded_once() -> None:
    from probe.incidents import BogusView, ZoneRound, step

    bogus = {r: BogusView("stale-dnskey-cache", (2,), (1,), 1e9 + 60) for r in ("a", "b")}
    policy = IncidentPolicy()
    open1, ev = step({}, [ZoneRound(ZONE, bogus, 2, cause="x at risk until T1")], now=1e9,
                     policy=policy)
    assert [e.event for e in ev] == [EventKind.OPEN] and open1[ZONE].cause == "x at risk until T1"
    open2, ev = step(open1, [ZoneRound(ZONE, bogus, 2, cause="x at risk until T2")],
                     now=1e9 + 60, policy=policy)
    assert ev == [] and open2[ZONE].cause == "x at risk until T1"
    # An incident opened before the audit saw the cause gets it by one update.
    open3, _ = step({}, [ZoneRound(ZONE, bogus, 2)], now=1e9, policy=policy)
    open4, ev = step(open3, [ZoneRound(ZONE, bogus, 2, cause="y")], now=1e9 + 60, policy=policy)
    assert [e.event for e in ev] == [EventKind.UPDATE] and open4[ZONE].cause == "y"
