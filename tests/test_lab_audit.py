"""Issue 9 in the lab: the signer-side audit sees each unsafe change at publication, and the
standby signer with other keys before any failover.

Each scenario has its own zone (tests/dnslab/zones.py: 106, 110, 111, 112), so the other lab
tests see the caches they expect. The audit asks only 127.53.x.x: the lab's servers, and the
lab's resolvers to find name servers and the parent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dns.flags
import dns.rcode
import pytest
from conftest import lab_resolvers
from dnslab import Lab, query

from probe.audit.auditor import AuditConfig, Auditor, AuditReport
from probe.audit.findings import AuditPolicy
from probe.audit.history import AuditHistory
from probe.codes import FindingCode
from probe.zones import ZoneSpec, zone_from_tokens

pytestmark = pytest.mark.lab

CUT_ZONE = "106.in-addr.arpa."
ROLL_ZONE = "110.in-addr.arpa."
STANDBY_ZONE = "111.in-addr.arpa."
KSK_ZONE = "112.in-addr.arpa."
STANDBY = "127.53.0.6"
MARGIN = 1.0  # the lab's servers are reloaded in place: no transfer delay to allow for


def _auditor(lab: Lab, state: Path) -> Auditor:
    return Auditor(AuditConfig(timeout=1.0, retries=1, allow_local_auth=True),
                   lab_resolvers(lab), AuditHistory.open(state), AuditPolicy(margin=MARGIN))


def _spec(lab: Lab, zone: str, *options: str) -> ZoneSpec:
    return zone_from_tokens([zone, lab.zones[zone].probe_names[0][0], *options])


def _audit(auditor: Auditor, spec: ZoneSpec) -> tuple[AuditReport, dict[FindingCode, Any]]:
    report = asyncio.run(auditor.run([spec]))
    return report, {f.code: f for f in report.findings}


def _secure(host: str, qname: str) -> bool | None:
    """True secure, False SERVFAIL, None anything else (e.g. a timeout)."""
    try:
        r = query(host, qname, "PTR", timeout=1.0)
    except Exception:
        return None
    if r.rcode() == dns.rcode.SERVFAIL:
        return False
    return r.rcode() == dns.rcode.NOERROR and bool(r.flags & dns.flags.AD)


def _watch(lab: Lab, qname: str, until: float) -> tuple[dict[str, float], dict[str, float]]:
    """Poll every resolver until `until`: when each first failed, and when it was secure again
    after failing (polled in parallel, a thread per resolver)."""
    failed: dict[str, float] = {}
    recovered: dict[str, float] = {}

    def poll(name: str, host: str) -> None:
        while time.time() < until and name not in recovered:
            ok = _secure(host, qname)
            now = time.time()
            if ok is False and name not in failed:
                failed[name] = now
            elif ok is True and name in failed:
                recovered[name] = now
            time.sleep(0.2)

    threads = [threading.Thread(target=poll, args=(r.name, r.host)) for r in lab.resolvers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed, recovered


@pytest.mark.slow
def test_bad_cutover_is_unsafe_at_publication_before_resolvers_fail(
        lab: Lab, tmp_path: Path) -> None:
    z = lab.zones[CUT_ZONE]
    qname = z.probe_names[0][0]
    spec = _spec(lab, CUT_ZONE)
    auditor = _auditor(lab, tmp_path)
    try:
        _, before = _audit(auditor, spec)
        assert FindingCode.UNSAFE_ROLLOVER not in before
        for r in lab.resolvers:  # every resolver caches the DNSKEY set and the answer now
            assert _secure(r.host, qname), r.name
        # Watch the resolvers from before the cut-over: a failure could be seen before the
        # audit is done (the answer is cached for its 2 s TTL, the DNSKEY set for 12 s).
        watched: list[tuple[dict[str, float], dict[str, float]]] = []
        watcher = threading.Thread(target=lambda: watched.append(
            _watch(lab, qname, time.time() + z.dnskey_ttl + 25)))
        watcher.start()
        try:
            lab.cutover(CUT_ZONE)
            report, got = _audit(auditor, spec)
            t_audit = time.time()
        finally:
            watcher.join()
        f = got[FindingCode.UNSAFE_ROLLOVER]
        assert f.new_keytags == (z.standby_zsk_tag,)
        assert z.zsk_tag in f.keytags
        assert f.published_before_use_s == 0.0
        assert f.at_risk_until is not None
        assert FindingCode.KEY_CHANGE in got
        (failed, recovered), = watched
    finally:
        auditor.history.close()
        lab.reset(CUT_ZONE)
    assert failed, "no resolver failed: the cut-over did not bite"
    assert t_audit <= min(failed.values()), (t_audit, failed)  # seen before the first failure
    assert set(recovered) == set(failed)
    # Every failing resolver is back by at_risk_until (Unbound runs a few seconds late, see
    # docs/design.md), the last of them within a few seconds of it.
    late = {n: round(t - f.at_risk_until, 1) for n, t in recovered.items()}
    assert all(d <= 8.0 for d in late.values()), late
    assert max(late.values()) >= -4.0, late
    assert report.exit_status == 2


@pytest.mark.slow
def test_prepublished_rollover_is_key_changes_only(lab: Lab, tmp_path: Path) -> None:
    z = lab.zones[ROLL_ZONE]
    spec = _spec(lab, ROLL_ZONE)
    auditor = _auditor(lab, tmp_path)
    wait = z.dnskey_ttl + MARGIN + 1
    seen: list[dict[FindingCode, Any]] = []
    try:
        seen.append(_audit(auditor, spec)[1])
        lab.prepublish(ROLL_ZONE)
        seen.append(_audit(auditor, spec)[1])
        time.sleep(wait)
        lab.roll(ROLL_ZONE)
        seen.append(_audit(auditor, spec)[1])
        time.sleep(wait)
        lab.retire(ROLL_ZONE)
        seen.append(_audit(auditor, spec)[1])
    finally:
        auditor.history.close()
        lab.reset(ROLL_ZONE)
    # The history stays shorter than the parent's DS TTL (60 s) + margin throughout, which
    # no-history (info) says each time; apart from it, key-change twice and nothing else.
    assert all(FindingCode.NO_HISTORY in s for s in seen)
    assert [set(s) - {FindingCode.NO_HISTORY} for s in seen] == [
        set(), {FindingCode.KEY_CHANGE}, set(), {FindingCode.KEY_CHANGE}]
    publish, retire = seen[1][FindingCode.KEY_CHANGE], seen[3][FindingCode.KEY_CHANGE]
    assert publish.new_keytags == (z.standby_zsk_tag,)
    assert f"removed {z.zsk_tag}" in retire.detail and retire.new_keytags == ()


def _cli_audit(lab: Lab, zones_file: Path, state: Path) -> tuple[int, dict[str, Any]]:
    cmd = [sys.executable, "-m", "probe", "audit", "--zones", str(zones_file), "--state-dir",
           str(state), "--json", "--allow-local-auth", "--margin", str(MARGIN), "--timeout", "1",
           "--retries", "1", *(a for r in lab.resolvers for a in ("--resolver",
                                                                 f"{r.name}={r.host}"))]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1, 2), p.stderr
    return p.returncode, json.loads(p.stdout)


def test_standby_with_other_keys_before_failover_then_synced(lab: Lab, tmp_path: Path) -> None:
    """`dnssec-probe audit` as cron would run it: name servers found through the resolvers,
    the standby named in zones.txt."""
    z = lab.zones[STANDBY_ZONE]
    zones_file = tmp_path / "zones.txt"
    zones_file.write_text(f"{STANDBY_ZONE} {z.probe_names[0][0]} standby={STANDBY}\n")
    state = tmp_path / "state"
    try:
        rc, doc = _cli_audit(lab, zones_file, state)
        assert rc == 2
        (mismatch,) = [f for f in doc["findings"] if f["code"] == "signer-key-mismatch"]
        assert mismatch["servers"] == [STANDBY] and mismatch["severity"] == "critical"
        assert z.standby_zsk_tag in mismatch["new_keytags"]
        assert set(mismatch["keytags"]) == {z.ksk_tag, z.zsk_tag}
        roles = {s["server"]: s["role"] for s in doc["zones"][0]["servers"]}
        assert roles == {"127.53.0.4": "ns", STANDBY: "standby"}  # found, not configured
        # A standby is never what resolvers use: no unsafe-rollover from it.
        assert not [f for f in doc["findings"] if f["code"] == "unsafe-rollover"]
        lab.sync_standby(STANDBY_ZONE)
        rc, doc = _cli_audit(lab, zones_file, state)
        assert not [f for f in doc["findings"] if f["code"] == "signer-key-mismatch"]
        assert rc == 0, doc["findings"]
        lab.desync_standby(STANDBY_ZONE)
        rc, doc = _cli_audit(lab, zones_file, state)
        assert rc == 2 and [f for f in doc["findings"] if f["code"] == "signer-key-mismatch"]
    finally:
        lab.reset(STANDBY_ZONE)


@pytest.mark.slow
def test_ksk_swap_without_double_ds_is_unsafe_on_the_ds_side(lab: Lab, tmp_path: Path) -> None:
    z = lab.zones[KSK_ZONE]
    spec = _spec(lab, KSK_ZONE)
    auditor = _auditor(lab, tmp_path)
    try:
        report, before = _audit(auditor, spec)
        assert report.zones[0].snapshot.parent == "in-addr.arpa."
        assert [p.ds for p in report.zones[0].parents if p.answered]  # the parent's DS is known
        assert FindingCode.UNSAFE_ROLLOVER not in before
        lab.ksk_swap(KSK_ZONE)
        t = time.time()
        _, got = _audit(auditor, spec)
    finally:
        auditor.history.close()
        lab.reset(KSK_ZONE)
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert "DS set" in f.detail
    assert f.new_keytags == (z.standby_ksk_tag,) and z.ksk_tag in f.keytags
    assert f.at_risk_until is not None and abs(f.at_risk_until - (t + z.ds_ttl)) < 5


def test_expired_signatures_are_critical(lab: Lab, tmp_path: Path) -> None:
    auditor = _auditor(lab, tmp_path)
    try:
        _, got = _audit(auditor, _spec(lab, "36.in-addr.arpa."))
    finally:
        auditor.history.close()
    f = got[FindingCode.SIGNATURE_EXPIRY]
    assert f.severity.value == "critical" and "expired" in f.detail
