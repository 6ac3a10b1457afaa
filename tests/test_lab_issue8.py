"""Issue 8 in the lab: KSK swap without DS pre-publication, partial cut-over, CNAME, non-validator.

Each scenario has its own zone (tests/dnslab/zones.py: 61-64.in-addr.arpa.), so the scenarios of
tests/test_lab_scenarios.py and the daemon tests see the caches they expect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import dns.flags
import dns.rcode
import pytest
from conftest import LAB_CONFIG, lab_resolvers, lab_zone
from dnslab import Lab, query

from probe.codes import DiagnosisKind, Verdict
from probe.engine import CheckResult, Engine
from probe.resolvers import ResolverSpec
from probe.zones import ProbeName, ZoneSpec

pytestmark = pytest.mark.lab

KSK_ZONE = "61.in-addr.arpa."
TWO_SERVER_ZONE = "62.in-addr.arpa."
CNAME_ZONE = "63.in-addr.arpa."
CNAME_TARGET = "64.in-addr.arpa."
NS2 = "127.53.0.5"


def _warm(lab: Lab, zone: str, qname: str) -> None:
    """Every resolver caches the data, the DNSKEY set and the DS as they are now."""
    for r in lab.resolvers:
        query(r.host, qname, "PTR", port=r.port)
        query(r.host, zone, "DNSKEY", port=r.port)
        query(r.host, zone, "DS", port=r.port)


def _doc(r: CheckResult) -> object:
    return r.to_json(raw=True)


@pytest.mark.slow
async def test_ksk_swap_without_ds_prepublication(lab: Lab, engine: Engine) -> None:
    z = lab.zones[KSK_ZONE]
    assert z.standby_ksk_tag is not None and z.ds_ttl > z.dnskey_ttl
    spec = lab_zone(lab, KSK_ZONE)
    resolvers = lab_resolvers(lab)
    warm = await engine.sweep([spec], resolvers)
    assert {r.classification.verdict for r in warm} == {Verdict.SECURE}, [_doc(r) for r in warm]
    _warm(lab, KSK_ZONE, z.probe_names[0][0])
    lab.ksk_swap(KSK_ZONE)
    # the source chain is whole again: new DS at the parent, new KSK in the zone
    assert lab.parent_ds_tags(KSK_ZONE) == {z.standby_ksk_tag}
    assert lab.served_key_tags(KSK_ZONE)[0] == {z.standby_ksk_tag, z.zsk_tag}
    # Ask until Unbound and BIND fail (the DNSKEY set and then the 2 s data expire): BIND keeps the
    # new DNSKEY set in its bad cache for 30 s from its first failure, which the lab's DS TTL
    # (32 s) makes end just after the old DS expires.
    stale = {"unbound", "bind"}
    hosts = {r.name: r for r in lab.resolvers if r.name in stale}
    deadline = time.time() + z.dnskey_ttl + z.record_ttl + 4
    while stale and time.time() < deadline:
        stale -= {n for n, r in hosts.items()
                  if query(r.host, z.probe_names[0][0], "PTR", port=r.port).rcode() == dns.rcode.SERVFAIL}
        await asyncio.sleep(0.2)
    assert not stale, f"{stale} never failed after the KSK swap"

    seen = await engine.sweep([spec], resolvers)
    # kresd and PowerDNS were seen to re-fetch the DS when the new DNSKEY set does not match it,
    # so only the resolvers that keep the old DS fail; Unbound and BIND do.
    failed = {r.resolver.name: r for r in seen if r.classification.verdict is not Verdict.SECURE}
    assert failed, [_doc(r) for r in seen]
    predicted: dict[str, float] = {}
    for name, r in failed.items():
        d = r.diagnosis
        assert d is not None and d.kind is DiagnosisKind.STALE_DS_CACHE, (name, _doc(r))
        assert d.cached_ds_keytags == (z.ksk_tag,), (name, _doc(r))
        assert d.ds_keytags == (z.standby_ksk_tag,), (name, _doc(r))
        assert d.recovers_at is not None and d.recovers_in_s is not None, (name, _doc(r))
        assert 0 < d.recovers_in_s <= z.ds_ttl, (name, _doc(r))
        predicted[name] = d.recovers_at

    # Watch the failing resolvers recover; never blame the (correct) source meanwhile.
    recovered: dict[str, float] = {}
    deadline = time.time() + 4 * z.ds_ttl + 10
    while len(recovered) < len(failed) and time.time() < deadline:
        pending = [r for r in resolvers if r.name in failed and r.name not in recovered]
        for r in await engine.sweep([spec], pending):
            seen.append(r)
            if r.classification.verdict is Verdict.SECURE:
                recovered[r.resolver.name] = r.observation.started
        await asyncio.sleep(1.0)
    blamed = [_doc(r) for r in seen if r.diagnosis is not None
              and r.diagnosis.kind is DiagnosisKind.BOGUS_AT_SOURCE]
    assert not blamed
    assert set(recovered) == set(failed), recovered
    late = {n: round(at - predicted[n], 1) for n, at in recovered.items()}
    for delta in late.values():
        assert -2.0 <= delta <= 8.0, late  # same allowance as the ZSK cut-over scenario


@pytest.mark.slow
async def test_partial_cutover_on_one_of_two_servers(lab: Lab, engine: Engine) -> None:
    z = lab.zones[TWO_SERVER_ZONE]
    assert NS2 in z.auth_addresses and len(z.auth_addresses) == 2
    spec = lab_zone(lab, TWO_SERVER_ZONE)
    resolvers = lab_resolvers(lab)
    _warm(lab, TWO_SERVER_ZONE, z.probe_names[0][0])
    lab.partial_cutover(TWO_SERVER_ZONE)
    assert lab.auth_key_tags(TWO_SERVER_ZONE, z.auth_addresses[0]) == ({z.ksk_tag, z.zsk_tag}, {z.zsk_tag})
    assert lab.auth_key_tags(TWO_SERVER_ZONE, NS2) == (
        {z.ksk_tag, z.standby_zsk_tag}, {z.standby_zsk_tag})

    # Failures are intermittent (resolvers retry the other server on a bogus answer): watch a while.
    failed: list[CheckResult] = []
    end = time.time() + z.dnskey_ttl + 4
    while time.time() < end and len(failed) < 3:
        for r in await engine.sweep([spec], resolvers):
            if r.classification.verdict is not Verdict.SECURE:
                failed.append(r)
        await asyncio.sleep(0.5)
    assert failed, "no resolver failed during the partial cut-over"
    for r in failed:
        d = r.diagnosis
        assert d is not None and d.kind is DiagnosisKind.INCONSISTENT_SOURCES, (r.resolver.name, _doc(r))
        assert NS2 in d.detail, (r.resolver.name, _doc(r))
        assert d.recovers_in_s is None, (r.resolver.name, _doc(r))


@pytest.mark.slow
async def test_cname_into_zone_with_bad_cutover(lab: Lab, engine: Engine) -> None:
    src, tgt = lab.zones[CNAME_ZONE], lab.zones[CNAME_TARGET]
    assert src.cname_target == CNAME_TARGET and tgt.standby_zsk_tag is not None
    qname = src.probe_names[0][0]
    spec = ZoneSpec(CNAME_ZONE, (ProbeName(qname.lower(), "PTR"),))
    resolvers = lab_resolvers(lab)
    warm = await engine.sweep([spec], resolvers)
    assert {r.classification.verdict for r in warm} == {Verdict.SECURE}, [_doc(r) for r in warm]
    for r in lab.resolvers:
        query(r.host, CNAME_TARGET, "DNSKEY", port=r.port)
    lab.cutover(CNAME_TARGET)
    await asyncio.sleep(tgt.record_ttl + 1.5)

    failed = {r.resolver.name: r for r in await engine.sweep([spec], resolvers)}
    for name, r in failed.items():
        assert r.classification.verdict is Verdict.BOGUS, (name, _doc(r))
        d = r.diagnosis
        assert d is not None and d.kind is DiagnosisKind.STALE_DNSKEY_CACHE, (name, _doc(r))
        assert d.zone == CNAME_TARGET, (name, _doc(r))
        assert "via-cname" in d.reasons, (name, _doc(r))
        assert d.rrsig_keytags == (tgt.standby_zsk_tag,), (name, _doc(r))
        assert set(d.cached_dnskey_keytags) == {tgt.ksk_tag, tgt.zsk_tag}, (name, _doc(r))
        assert d.recovers_in_s is not None and 0 < d.recovers_in_s <= tgt.dnskey_ttl, (name, _doc(r))


async def test_nonvalidating_resolver_is_named(lab: Lab) -> None:
    nv = lab.nonvalidating
    assert nv is not None and nv.name not in {r.name for r in lab.resolvers}
    # the controls do what they promise on the validating resolvers
    bogus_name, bogus_type = lab.control_bogus.split("/")
    secure_name, secure_type = lab.control_secure.split("/")
    for r in lab.resolvers:
        assert query(r.host, bogus_name, bogus_type).rcode() == dns.rcode.SERVFAIL, r.name
        assert query(r.host, secure_name, secure_type).flags & dns.flags.AD, r.name
    assert query(nv.host, bogus_name, bogus_type).answer  # answers what validators reject

    engine = Engine(dataclasses.replace(
        LAB_CONFIG, control_bogus=lab.control_bogus, control_secure=lab.control_secure))
    resolvers = [*lab_resolvers(lab), ResolverSpec(nv.name, nv.host, nv.port, "lab")]
    results = {r.resolver.name: r for r in await engine.sweep([lab_zone(lab, "1.in-addr.arpa.")], resolvers)}
    assert set(results) == {r.name for r in resolvers}
    assert results[nv.name].classification.reason == "not-validating", _doc(results[nv.name])
    for name, r in results.items():
        if name != nv.name:
            assert r.classification.verdict is Verdict.SECURE, (name, _doc(r))
            assert r.classification.reason != "not-validating", (name, _doc(r))
