"""Issue 8 diagnoses, offline: the chain judged where each part lives (parent DS, each server)."""

from __future__ import annotations

import json
from dataclasses import replace

import dns.dnssec
import pytest
from signedzone import Key, SignedZone, make_key, servfail

from probe.codes import REASONS, DiagnosisKind
from probe.diagnose import AuthEvidence, Evidence, ParentEvidence, diagnose
from probe.observation import FLAG_AA, FLAG_QR, FLAG_RA, FLAG_RD, Observation, Outcome, RRsetObs

NOW = 1_700_000_000.0
ZONE = "14.in-addr.arpa."
QNAME = "1.1.14.in-addr.arpa."
PTR = ["host.example."]


def parent_ds(zone: str, *keys: Key, address: str = "192.0.2.100") -> ParentEvidence:
    """The DS RRset as a parent server serves it (AA=1, RD=0); no keys = NODATA."""
    texts = tuple(dns.dnssec.make_ds(zone, k.dnskey, "SHA256").to_text() for k in keys)
    answer = (RRsetObs(zone, "DS", 86400, texts, ()),) if texts else ()
    obs = Observation(f"auth:{address}", address, 53, zone, "DS", False, False, NOW,
                      Outcome.REPLY, rtt_ms=5.0, rcode=0, flags=FLAG_QR | FLAG_AA, answer=answer)
    return ParentEvidence(address, obs)


def cached_ds(zone: str, *keys: Key, ttl: int = 3600, started: float = NOW) -> Observation:
    """The DS the resolver caches (CD=1), with its remaining TTL; no keys = NODATA."""
    texts = tuple(dns.dnssec.make_ds(zone, k.dnskey, "SHA256").to_text() for k in keys)
    answer = (RRsetObs(zone, "DS", ttl, texts, ()),) if texts else ()
    return Observation("res", "192.0.2.53", 53, zone, "DS", True, True, started, Outcome.REPLY,
                       rtt_ms=10.0, rcode=0, flags=FLAG_QR | FLAG_RD | FLAG_RA, answer=answer)


def soa(z: SignedZone, serial: int, address: str) -> Observation:
    return z.record_obs(z.name, "SOA", [f"ns1.{z.name} hostmaster.{z.name} {serial} 3600 600 "
                                        "86400 60"], z.zsk, server=f"auth:{address}")


def test_new_reasons_are_registered() -> None:
    for code in ("ds-stale-cached", "dnskey-stale-for-ds", "sources-disagree", "no-ds-at-parent",
                 "keytag-collision", "via-cname", "probe-clock-skew", "instances-differ"):
        assert code in REASONS


def ksk_swap(cached_age: float = 1000.0) -> tuple[SignedZone, Key, Evidence]:
    """KSK replaced together with the DS; the resolver already refetched the DNSKEY set but
    still caches the old DS."""
    old = make_key(ksk=True)
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)  # z.ksk is the new KSK
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]),
                        z.record_obs(QNAME, "PTR", PTR, z.zsk))
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], server="res", cd=True, ttl=3000),
                  cached_ds=cached_ds(ZONE, old, ttl=7200, started=NOW - cached_age),
                  auth=(auth,), parent="in-addr.arpa.", parent_ds=(parent_ds(ZONE, z.ksk),))
    return z, old, ev


def test_stale_ds_cache_with_recovery_from_the_cached_ds() -> None:
    z, old, ev = ksk_swap(cached_age=1000.0)
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DS_CACHE
    assert d.reasons == ("ds-stale-cached",)
    assert d.ds_keytags == (z.ksk.tag,)
    assert d.cached_ds_keytags == (old.tag,)
    assert d.cached_ds_ttl == 7200
    # Received at NOW - 1000 + 10 ms with 7200 s left: 6200.01 s, rounded up.
    assert d.recovers_in_s == 6201
    assert d.recovers_at == pytest.approx(NOW - 1000 + 0.010 + 7200)
    assert str(old.tag) in d.detail and "bogus-cache" in d.detail
    assert json.loads(json.dumps(d.to_dict()))["ds_keytags"] == [z.ksk.tag]


def test_without_parent_evidence_the_cached_ds_is_used_and_said() -> None:
    _, _, ev = ksk_swap()
    d = diagnose(replace(ev, parent_ds=()), now=NOW)
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE and "ds-no-matching-key" in d.reasons
    assert "resolver's cache" in d.detail


def test_lame_parent_server_is_not_evidence() -> None:
    """A referral (AA=0) from a parent address is no DS answer: fall back, do not conclude."""
    z, _, ev = ksk_swap()
    p = parent_ds(ZONE, z.ksk)
    assert p.ds is not None
    lame = ParentEvidence(p.address, p.ds._replace(flags=FLAG_QR))
    d = diagnose(replace(ev, parent_ds=(lame,)), now=NOW)
    assert d.kind is not DiagnosisKind.STALE_DS_CACHE and d.ds_keytags == ()


def test_cached_dnskey_without_the_key_of_the_new_ds() -> None:
    """DS replaced before the new KSK had been published for a DNSKEY TTL."""
    old_ksk = make_key(ksk=True)
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]),
                        z.record_obs(QNAME, "PTR", PTR, z.zsk))
    cached = z.dnskey_obs([old_ksk, z.zsk], server="res", cd=True, ttl=1500,
                          sign_with=old_ksk, started=NOW - 100)
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"), cached_dnskey=cached,
                  cached_ds=cached_ds(ZONE, z.ksk), auth=(auth,),
                  parent_ds=(parent_ds(ZONE, z.ksk),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_VS_DS
    assert d.reasons == ("dnskey-stale-for-ds",)
    assert d.recovers_in_s == 1500 - 100 + 1
    assert d.ds_keytags == (z.ksk.tag,)
    # When the cache does hold the DS's key, it is not this diagnosis.
    current = z.dnskey_obs([z.ksk, z.zsk], server="res", cd=True)
    ok = diagnose(replace(ev, cached_dnskey=current), now=NOW)
    assert ok.kind is DiagnosisKind.UNKNOWN and ok.reasons == ("cache-matches-source",)


def test_partial_cutover_names_each_server() -> None:
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    old = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk], server="auth:192.0.2.1"),
                       z.record_obs(QNAME, "PTR", PTR, z.zsk), soa(z, 2026120101, "192.0.2.1"))
    new = AuthEvidence("192.0.2.2", z.dnskey_obs([z.ksk, z.standby], server="auth:192.0.2.2"),
                       z.record_obs(QNAME, "PTR", PTR, z.standby),
                       soa(z, 2026120102, "192.0.2.2"))
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], server="res", cd=True),
                  cached_ds=cached_ds(ZONE, z.ksk), auth=(old, new),
                  parent_ds=(parent_ds(ZONE, z.ksk),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.INCONSISTENT_SOURCES
    assert d.reasons == ("sources-disagree",)
    assert d.recovers_in_s is None and d.recovers_at is None
    assert "Nothing recovers while the servers disagree" in d.detail
    first = next(p for p in d.detail.split("; ") if "192.0.2.1:" in p)
    second = next(p for p in d.detail.split("; ") if p.startswith("192.0.2.2:"))
    assert "2026120101" in first and str(z.zsk.tag) in first
    assert "cached keys match it" in first
    assert "2026120102" in second and str(z.standby.tag) in second
    assert "do not match" in second
    # Each server alone is consistent: one server is no disagreement.
    one = diagnose(replace(ev, auth=(new,)), now=NOW)
    assert one.kind is DiagnosisKind.STALE_DNSKEY_CACHE


def collide(key: Key) -> Key:
    """Another key with the same tag and algorithm: two even-offset bytes moved by +1 / -1
    leave the RFC 4034 Appendix B checksum unchanged."""
    raw = bytearray(key.dnskey.key)
    i = next(n for n in range(0, len(raw), 2) if raw[n] < 255)
    j = next(n for n in range(0, len(raw), 2) if n != i and raw[n] > 0)
    raw[i] += 1
    raw[j] -= 1
    twin = replace_key(key, bytes(raw))
    assert twin.tag == key.tag and twin.dnskey != key.dnskey
    return twin


def replace_key(key: Key, material: bytes) -> Key:
    d = key.dnskey
    return Key(key.private, type(d)(d.rdclass, d.rdtype, d.flags, d.protocol, d.algorithm,
                                     material))


def test_keytag_collision_is_not_the_signing_key() -> None:
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    twin = collide(z.standby)  # the old key the resolver caches, with the new key's tag
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby]),
                        z.record_obs(QNAME, "PTR", PTR, z.standby))
    cached = z.dnskey_obs([z.ksk, twin], server="res", cd=True, ttl=600)
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"), cached_dnskey=cached,
                  cached_ds=cached_ds(ZONE, z.ksk), auth=(auth,),
                  parent_ds=(parent_ds(ZONE, z.ksk),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert d.reasons == ("dnskey-not-cached", "keytag-collision")
    assert z.standby.tag in d.cached_dnskey_keytags  # the tags alone look current
    # The real key cached: current, and no collision claimed.
    real = z.dnskey_obs([z.ksk, z.standby], server="res", cd=True)
    ok = diagnose(replace(ev, cached_dnskey=real), now=NOW)
    assert ok.reasons == ("cache-matches-source",)


def cutover(z: SignedZone, inception: float | None = None,
            expiration: float | None = None) -> Evidence:
    """The ZSK cut-over shape: the source signs with the standby key, the cache lacks it."""
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby]),
                        z.record_obs(QNAME, "PTR", PTR, z.standby, inception=inception,
                                     expiration=expiration))
    return Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                    cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], server="res", cd=True, ttl=3000),
                    cached_ds=cached_ds(ZONE, z.ksk), auth=(auth,),
                    parent_ds=(parent_ds(ZONE, z.ksk),))


def test_island_is_an_insecure_delegation_not_a_stale_key() -> None:
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    ev = cutover(z)
    assert diagnose(ev, now=NOW).kind is DiagnosisKind.STALE_DNSKEY_CACHE  # with a DS
    island = replace(ev, parent_ds=(parent_ds(ZONE),), cached_ds=cached_ds(ZONE))
    d = diagnose(island, now=NOW)
    assert d.kind is DiagnosisKind.INSECURE_DELEGATION and d.reasons == ("no-ds-at-parent",)
    assert d.recovers_in_s is None
    # The parent removed the DS, but the resolver still caches one that matches the KSK: it
    # still validates the zone, so the stale ZSK is the cause, not an insecure delegation ...
    d = diagnose(replace(ev, parent_ds=(parent_ds(ZONE),)), now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    # ... and a cached DS that matches no published key is a stale DS, recovering when it
    # expires (before: insecure-delegation, so the SERVFAIL was called "not DNSSEC").
    gone = make_key(ksk=True)
    d = diagnose(replace(ev, parent_ds=(parent_ds(ZONE),), cached_ds=cached_ds(ZONE, gone)),
                 now=NOW)
    assert d.kind is DiagnosisKind.STALE_DS_CACHE and d.reasons == ("ds-stale-cached",)
    assert d.recovers_in_s is not None
    # ... and with no parent evidence, no DS anywhere is an island too.
    d = diagnose(replace(island, parent_ds=()), now=NOW)
    assert d.kind is DiagnosisKind.INSECURE_DELEGATION


def test_clock_skew_inside_the_allowance() -> None:
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    ev = cutover(z, inception=NOW + 1800)  # the signer's clock runs half an hour ahead
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert "probe-clock-skew" in d.reasons and d.clock_skew_s == 1800
    strict = diagnose(ev, now=NOW, clock_skew=0)
    assert strict.kind is DiagnosisKind.BOGUS_AT_SOURCE and "rrsig-not-yet-valid" in strict.reasons
    assert strict.clock_skew_s is None
    late = diagnose(cutover(z, inception=NOW - 86400, expiration=NOW - 600), now=NOW)
    assert late.kind is DiagnosisKind.STALE_DNSKEY_CACHE and late.clock_skew_s == 600
    plain = diagnose(cutover(z), now=NOW)
    assert plain.clock_skew_s is None and "probe-clock-skew" not in plain.reasons


def test_clock_skew_outside_the_allowance() -> None:
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    early = diagnose(cutover(z, inception=NOW + 7200), now=NOW)
    assert early.kind is DiagnosisKind.BOGUS_AT_SOURCE
    assert "rrsig-not-yet-valid" in early.reasons and "allowance" in early.detail
    expired = diagnose(cutover(z, inception=NOW - 86400, expiration=NOW - 7200), now=NOW)
    assert expired.kind is DiagnosisKind.BOGUS_AT_SOURCE and "rrsig-expired" in expired.reasons
    wider = diagnose(cutover(z, inception=NOW + 7200), now=NOW, clock_skew=3 * 3600)
    assert wider.kind is DiagnosisKind.STALE_DNSKEY_CACHE and wider.clock_skew_s == 7200


def test_cname_into_a_zone_with_a_stale_cache() -> None:
    """RFC 2317: 5.10.14.in-addr.arpa. CNAME 5.0-25.10.14.in-addr.arpa. in a child zone."""
    outer = SignedZone("10.14.in-addr.arpa.", NOW, dnskey_ttl=3600)
    inner = SignedZone("0-25.10.14.in-addr.arpa.", NOW, dnskey_ttl=3600)
    qname, target = "5.10.14.in-addr.arpa.", "5.0-25.10.14.in-addr.arpa."
    target_ev = Evidence(
        inner.name, target, "PTR", cd_answer=servfail(target, "PTR"),
        cached_dnskey=inner.dnskey_obs([inner.ksk, inner.zsk], server="res", cd=True, ttl=900),
        cached_ds=cached_ds(inner.name, inner.ksk),
        auth=(AuthEvidence("192.0.2.7", inner.dnskey_obs([inner.ksk, inner.standby]),
                           inner.record_obs(target, "PTR", PTR, inner.standby)),),
        parent_ds=(parent_ds(inner.name, inner.ksk),))
    ev = Evidence(
        outer.name, qname, "PTR", cd_answer=servfail(qname, "PTR"),
        cached_dnskey=outer.dnskey_obs([outer.ksk, outer.zsk], server="res", cd=True),
        cached_ds=cached_ds(outer.name, outer.ksk),
        auth=(AuthEvidence("192.0.2.1", outer.dnskey_obs([outer.ksk, outer.zsk]),
                           outer.record_obs(qname, "CNAME", [target], outer.zsk)),),
        parent_ds=(parent_ds(outer.name, outer.ksk),))
    alone = diagnose(ev, now=NOW)
    assert alone.kind is DiagnosisKind.UNKNOWN and alone.zone is None
    d = diagnose(replace(ev, signer=target_ev), now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert d.zone == inner.name and "via-cname" in d.reasons
    assert d.rrsig_keytags == (inner.standby.tag,)
    assert d.recovers_in_s == 900 + 1
    again = Evidence.from_dict(json.loads(json.dumps(replace(ev, signer=target_ev).to_dict())))
    assert diagnose(again, now=NOW) == d


def test_nsid_differing_widens_the_recovery() -> None:
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    ev = cutover(z)
    assert ev.cd_answer is not None and ev.cached_dnskey is not None
    same = replace(ev, cd_answer=ev.cd_answer._replace(nsid="fra1"),
                   cached_dnskey=ev.cached_dnskey._replace(nsid="fra1"))
    d = diagnose(same, now=NOW)
    assert "instances-differ" not in d.reasons and d.recovers_in_s == 3000 + 1
    differ = replace(same, cached_dnskey=ev.cached_dnskey._replace(nsid="ams2"))
    d = diagnose(differ, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE and "instances-differ" in d.reasons
    assert d.recovers_in_s == 3600  # the source's DNSKEY TTL, from now
    assert "ams2" in d.detail and "fra1" in d.detail


def test_signer_name_below_the_cut_is_not_blamed_on_the_zone() -> None:
    """A server for both parent and child answers (AA) with the child's signed data: the RRSIG
    signer name says where it lives; the parent zone is not bogus for it."""
    parent = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    child = SignedZone("1.14.in-addr.arpa.", NOW, dnskey_ttl=3600)
    data = child.record_obs(QNAME, "PTR", PTR, child.standby, server="auth:192.0.2.1")
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                  cached_dnskey=parent.dnskey_obs([parent.ksk, parent.zsk], server="res",
                                                  cd=True),
                  cached_ds=cached_ds(ZONE, parent.ksk),
                  auth=(AuthEvidence("192.0.2.1", parent.dnskey_obs([parent.ksk, parent.zsk]),
                                     data),),
                  parent_ds=(parent_ds(ZONE, parent.ksk),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.UNKNOWN and child.name in d.detail
    below = Evidence(
        child.name, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
        cached_dnskey=child.dnskey_obs([child.ksk, child.zsk], server="res", cd=True, ttl=500),
        cached_ds=cached_ds(child.name, child.ksk),
        auth=(AuthEvidence("192.0.2.1", child.dnskey_obs([child.ksk, child.standby]), data),),
        parent_ds=(parent_ds(child.name, child.ksk),))
    d = diagnose(replace(ev, signer=below), now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE and d.zone == child.name
    assert "via-cname" not in d.reasons


def test_multi_signer_servers_are_not_inconsistent() -> None:
    """RFC 8901: both providers publish one DNSKEY set and each signs with its own ZSK; any
    server's data validates with it. Before: `inconsistent-sources` and no recovery time."""
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    keys = [z.ksk, z.zsk, z.standby]
    a = AuthEvidence("192.0.2.1", z.dnskey_obs(keys, server="auth:192.0.2.1"),
                     z.record_obs(QNAME, "PTR", PTR, z.zsk), soa(z, 7, "192.0.2.1"))
    b = AuthEvidence("192.0.2.2", z.dnskey_obs(keys, server="auth:192.0.2.2"),
                     z.record_obs(QNAME, "PTR", PTR, z.standby), soa(z, 7, "192.0.2.2"))
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], server="res", cd=True),
                  cached_ds=cached_ds(ZONE, z.ksk), auth=(a, b),
                  parent_ds=(parent_ds(ZONE, z.ksk),))
    d = diagnose(ev, now=NOW)
    assert d.kind is not DiagnosisKind.INCONSISTENT_SOURCES, d


def test_ds_nodata_below_no_apex_is_not_an_insecure_delegation() -> None:
    """A zones.txt entry that is no zone apex: the enclosing zone's DS NODATA proves nothing
    about a delegation, so DNSSEC is not ruled out. Before: `insecure-delegation`."""
    z = SignedZone(ZONE, NOW, dnskey_ttl=3600)
    inside = Observation("res", "192.0.2.53", 53, ZONE, "SOA", True, True, NOW, Outcome.REPLY,
                         rtt_ms=10.0, rcode=0, flags=FLAG_QR | FLAG_RD | FLAG_RA,
                         authority=(RRsetObs("in-addr.arpa.", "SOA", 60,
                                             ("ns. host. 1 2 3 4 5",), ()),))
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], server="res", cd=True),
                  cached_ds=cached_ds(ZONE), parent_ds=(parent_ds(ZONE),), zone_soa=inside)
    assert diagnose(ev, now=NOW).kind is not DiagnosisKind.INSECURE_DELEGATION
    apex = inside._replace(answer=(RRsetObs(ZONE, "SOA", 60, ("ns. host. 1 2 3 4 5",), ()),),
                           authority=())
    assert diagnose(replace(ev, zone_soa=apex), now=NOW).kind is \
        DiagnosisKind.INSECURE_DELEGATION
