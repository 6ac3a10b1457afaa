"""Diagnosis and verdicts from recorded observations (no network): the decisions replay offline."""

from __future__ import annotations

import json

import pytest
from signedzone import SignedZone, make_key, servfail

from probe.classify import classify
from probe.codes import DiagnosisKind, Verdict
from probe.diagnose import AuthEvidence, Evidence, diagnose
from probe.observation import Observation, Outcome

NOW = 1_700_000_000.0
ZONE = "14.in-addr.arpa."
QNAME = "1.1.14.in-addr.arpa."
PTR = ["host.example."]


@pytest.fixture(scope="module")
def z() -> SignedZone:
    return SignedZone(ZONE, NOW, dnskey_ttl=86400)


def cutover_evidence(z: SignedZone, cached_age: float = 0.0) -> Evidence:
    """The APNIC 2012 shape: source signs with the standby ZSK; the resolver caches the old set."""
    cached = z.dnskey_obs([z.ksk, z.zsk], ttl=86400 - 600, server="res", cd=True,
                          started=NOW - cached_age)
    auth = AuthEvidence(
        "192.0.2.1",
        z.dnskey_obs([z.ksk, z.standby]),
        z.record_obs(QNAME, "PTR", PTR, z.standby),
    )
    return Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"), cached_dnskey=cached,
                    cached_ds=z.ds_obs(), auth=(auth,), auth_source="discovered")


def test_stale_dnskey_cache_with_recovery_prediction(z: SignedZone) -> None:
    d = diagnose(cutover_evidence(z, cached_age=0.0), now=NOW + 100)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert d.rrsig_keytags == (z.standby.tag,)
    assert set(d.cached_dnskey_keytags) == {z.ksk.tag, z.zsk.tag}
    assert set(d.authoritative_dnskey_keytags) == {z.ksk.tag, z.standby.tag}
    assert d.cached_dnskey_ttl == 86400 - 600
    # The TTL counts down from when the reply arrived (NOW + 10 ms), not from diagnosis time;
    # the 10 ms are rounded up, never down.
    assert d.recovers_in_s == 86400 - 600 - 100 + 1
    assert d.recovers_at == pytest.approx(NOW + 0.010 + 86400 - 600)
    assert d.reasons == ("dnskey-not-cached",)
    assert str(z.standby.tag) in d.detail


def test_verdict_is_bogus_without_any_ede(z: SignedZone) -> None:
    """BIND 9.18 and PowerDNS 4.8 send no EDE: the diagnosis alone must make it bogus."""
    ev = cutover_evidence(z)
    obs = servfail(QNAME, "PTR")
    assert classify(obs).verdict is Verdict.SERVFAIL
    c = classify(obs, cd_answer=ev.cd_answer, diagnosis=diagnose(ev, now=NOW))
    assert (c.verdict, c.reason) == (Verdict.BOGUS, "diagnosed")


def test_ede_alone_makes_bogus() -> None:
    assert classify(servfail(QNAME, "PTR", ede=(9,))).verdict is Verdict.BOGUS
    # EDE 22 "No Reachable Authority" is not a validation failure.
    assert classify(servfail(QNAME, "PTR", ede=(22,))).verdict is Verdict.SERVFAIL


def test_cd_data_makes_bogus(z: SignedZone) -> None:
    cd = z.record_obs(QNAME, "PTR", PTR, z.standby, server="res", cd=True)
    c = classify(servfail(QNAME, "PTR"), cd_answer=cd)
    assert (c.verdict, c.reason) == (Verdict.BOGUS, "cd-data")


def test_replay_from_json_gives_same_diagnosis(z: SignedZone) -> None:
    ev = cutover_evidence(z, cached_age=30)
    again = Evidence.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert again == ev
    assert diagnose(again, now=NOW) == diagnose(ev, now=NOW)


def test_expired_signatures_are_bogus_at_source(z: SignedZone) -> None:
    auth = AuthEvidence(
        "192.0.2.1",
        z.dnskey_obs([z.ksk, z.zsk]),
        z.record_obs(QNAME, "PTR", PTR, z.zsk, inception=NOW - 10 * 86400,
                     expiration=NOW - 86400),
    )
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(), auth=(auth,))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE
    assert "rrsig-expired" in d.reasons
    assert d.recovers_in_s is None


def test_ds_matching_no_key_is_bogus_at_source(z: SignedZone) -> None:
    never_published = make_key(ksk=True)
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]),
                        z.record_obs(QNAME, "PTR", PTR, z.zsk))
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(never_published), auth=(auth,))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE
    assert d.reasons[0] == "ds-no-matching-key"
    assert str(never_published.tag) in d.detail


def test_missing_rrsig_and_forged_signature(z: SignedZone) -> None:
    keys = z.dnskey_obs([z.ksk, z.zsk])
    unsigned = AuthEvidence("192.0.2.1", keys, z.record_obs(QNAME, "PTR", PTR, None))
    d = diagnose(Evidence(ZONE, QNAME, "PTR", cached_ds=z.ds_obs(), auth=(unsigned,)), now=NOW)
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE and "rrsig-missing" in d.reasons

    # A signature made over other data does not verify although its key tag is right.
    good = z.record_obs(QNAME, "PTR", ["other.example."], z.zsk)
    swapped = Observation.from_dict({**good.to_dict(), "answer": [
        {**good.to_dict()["answer"][0], "rdatas": PTR}]})
    forged = AuthEvidence("192.0.2.1", keys, swapped)
    d = diagnose(Evidence(ZONE, QNAME, "PTR", cached_ds=z.ds_obs(), auth=(forged,)), now=NOW)
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE and d.reasons == ("signature-invalid",)


def test_signature_by_unpublished_key_is_bogus_at_source(z: SignedZone) -> None:
    """A standby key used but never published anywhere is the signer's fault, not a cache's."""
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]),
                        z.record_obs(QNAME, "PTR", PTR, z.standby))
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(), auth=(auth,))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE and "rrsig-unknown-key" in d.reasons


def test_no_authoritative_data_is_unknown_but_says_what_it_saw(z: SignedZone) -> None:
    cd = z.record_obs(QNAME, "PTR", PTR, z.standby, server="res", cd=True)
    dead = Observation("auth:192.0.2.1", "192.0.2.1", 53, ZONE, "DNSKEY", False, False, NOW,
                       Outcome.TIMEOUT)
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=cd,
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  auth=(AuthEvidence("192.0.2.1", dead, dead),), notes=("no answer",))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.UNKNOWN
    assert d.reasons == ("no-authoritative-data",)
    assert d.rrsig_keytags == (z.standby.tag,)
    assert str(z.standby.tag) in d.detail


def test_cache_already_current_is_unknown(z: SignedZone) -> None:
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]),
                        z.record_obs(QNAME, "PTR", PTR, z.zsk))
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(), auth=(auth,))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.UNKNOWN and d.reasons == ("cache-matches-source",)


def test_recovery_never_negative(z: SignedZone) -> None:
    d = diagnose(cutover_evidence(z), now=NOW + 86400 - 1)  # signatures still valid
    assert d.recovers_in_s == 0


def test_dnskey_missing_with_ds_vs_unsigned_zone(z: SignedZone) -> None:
    no_keys = Observation("auth:192.0.2.1", "192.0.2.1", 53, ZONE, "DNSKEY", False, False, NOW,
                          Outcome.REPLY, rtt_ms=1.0, rcode=0, flags=0x8400)
    data = z.record_obs(QNAME, "PTR", PTR, None)
    auth = (AuthEvidence("192.0.2.1", no_keys, data),)
    with_ds = diagnose(Evidence(ZONE, QNAME, "PTR", cached_ds=z.ds_obs(), auth=auth), now=NOW)
    assert with_ds.kind is DiagnosisKind.BOGUS_AT_SOURCE and with_ds.reasons == ("dnskey-missing",)
    unsigned = diagnose(Evidence(ZONE, QNAME, "PTR", auth=auth), now=NOW)
    assert unsigned.kind is DiagnosisKind.UNKNOWN and unsigned.reasons == ("zone-unsigned",)


@pytest.mark.parametrize(("qname", "qtype", "texts"), [
    (ZONE, "SOA", ["ns1.14.in-addr.arpa. hostmaster.14.in-addr.arpa. 7 3600 600 86400 60"]),
    (ZONE, "NS", ["ns1.14.in-addr.arpa.", "ns2.example."]),
    (QNAME, "PTR", ["host.14.in-addr.arpa."]),  # a target inside the zone
])
def test_names_inside_rdata_verify(z: SignedZone, qname: str, qtype: str, texts: list[str]) -> None:
    """Rdata names are rebuilt absolute; relative ones would change the signed data."""
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby]),
                        z.record_obs(qname, qtype, texts, z.standby))
    ev = Evidence(ZONE, qname, qtype, cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(), auth=(auth,))
    assert diagnose(ev, now=NOW).kind is DiagnosisKind.STALE_DNSKEY_CACHE


def test_a_lame_server_does_not_make_the_source_bogus(z: SignedZone) -> None:
    good = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby]),
                        z.record_obs(QNAME, "PTR", PTR, z.standby))
    refused = Observation("auth:192.0.2.2", "192.0.2.2", 53, ZONE, "DNSKEY", False, False, NOW,
                          Outcome.REPLY, rtt_ms=1.0, rcode=5, flags=0x8000)
    lame = AuthEvidence("192.0.2.2", refused, refused)
    ev = cutover_evidence(z)
    ev = Evidence(ZONE, QNAME, "PTR", ev.cd_answer, ev.cached_dnskey, ev.cached_ds, (good, lame))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE


def test_sha1_ds_still_matches(z: SignedZone) -> None:
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]),
                        z.record_obs(QNAME, "PTR", PTR, z.zsk))
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(digest="SHA1"), auth=(auth,))
    assert diagnose(ev, now=NOW).reasons == ("cache-matches-source",)


def test_double_signature_with_one_cached_key_is_not_stale(z: SignedZone) -> None:
    """RFC 6781 §4.1.1.2: signed by old and new ZSK; the cached old one validates."""
    old = z.record_obs(QNAME, "PTR", PTR, z.zsk)
    new = z.record_obs(QNAME, "PTR", PTR, z.standby)
    both = Observation.from_dict({**old.to_dict(), "answer": [{
        **old.to_dict()["answer"][0],
        "rrsigs": [*old.answer[0].rrsigs, *new.answer[0].rrsigs]}]})
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk, z.standby]), both)
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(), auth=(auth,))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.UNKNOWN
    c = classify(servfail(QNAME, "PTR", ede=(22,)), diagnosis=d)
    assert c.verdict is Verdict.SERVFAIL  # EDE 22 is no validation failure; nothing made it one


def test_denial_signed_by_uncached_key_is_stale(z: SignedZone) -> None:
    missing = "9.9.14.in-addr.arpa."
    auth = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby]),
                        z.denial_obs(missing, "PTR", z.standby))
    ev = Evidence(ZONE, missing, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(), auth=(auth,))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert d.rrsig_keytags == (z.standby.tag,)
    # ... and an unsigned NSEC at the source is bogus there.
    bad = AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]),
                       z.denial_obs(missing, "PTR", make_key()))
    d = diagnose(Evidence(ZONE, missing, "PTR", cached_ds=z.ds_obs(), auth=(bad,)), now=NOW)
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE and "rrsig-unknown-key" in d.reasons


def test_hidden_cache_is_unknown_with_a_reason(z: SignedZone) -> None:
    ev = cutover_evidence(z)
    hidden = Evidence(ZONE, QNAME, "PTR", ev.cd_answer, servfail(ZONE, "DNSKEY"), ev.cached_ds,
                      ev.auth)
    assert diagnose(hidden, now=NOW).reasons == ("cache-hidden",)
