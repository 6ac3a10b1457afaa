"""Hostile evidence offline: KeyTrap floods, DS x DNSKEY floods, stray owners, CNAME chains."""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter as Counter_
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from dns.dnssectypes import Algorithm
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.RRSIG import RRSIG
from signedzone import Key, SignedZone, servfail

from probe.classify import MAX_CNAME_CHAIN, answer_chain, classify
from probe.codes import REASONS, DiagnosisKind, Verdict
from probe.diagnose import (
    BUDGET_REASON,
    MAX_DS_DIGESTS,
    MAX_KEYS_PER_SIG,
    MAX_RDATAS,
    MAX_SIGS_PER_RRSET,
    MAX_VERIFICATIONS,
    AuthEvidence,
    Evidence,
    diagnose,
)
from probe.observation import (
    FLAG_AA,
    FLAG_AD,
    FLAG_QR,
    FLAG_RA,
    FLAG_RD,
    Observation,
    Outcome,
    RRsetObs,
)

NOW = 1_700_000_000.0
ZONE = "hostile.example."
QNAME = "www.hostile.example."
ALG = Algorithm.RSASHA256


# ---- crafted keys sharing one key tag (the attack is about the number of attempts) ----------

def _tag(rdata: bytes) -> int:
    """RFC 4034 Appendix B."""
    ac = sum(b << 8 if i % 2 == 0 else b for i, b in enumerate(rdata))
    ac += (ac >> 16) & 0xFFFF
    return ac & 0xFFFF


def _rsa_key_bytes(bits: int, big_exponent: bool) -> bytes:
    """DNSKEY public key field (RFC 3110): exponent length, exponent, modulus."""
    n = rsa.generate_private_key(65537, bits).public_key().public_numbers().n
    nb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    # A public exponent almost as long as the modulus makes each verification as costly as a
    # private-key operation (OpenSSL bounds the exponent only above 3072-bit moduli).
    e = (n >> 8) | 1 if big_exponent else 65537
    eb = e.to_bytes((e.bit_length() + 7) // 8, "big")
    head = bytes([len(eb)]) if len(eb) < 256 else b"\x00" + len(eb).to_bytes(2, "big")
    return head + eb + nb


def colliding_keys(count: int, tag: int, *, bits: int = 1024,
                   big_exponent: bool = False) -> list[DNSKEY]:
    """`count` distinct RSA DNSKEYs that all have key tag `tag` (bytes in the modulus adjusted)."""
    base = _rsa_key_bytes(bits, big_exponent)
    out: list[DNSKEY] = []
    for i in range(count):
        key = bytearray(base)
        # Distinct keys: vary two bytes well inside the modulus; fix the tag two bytes before
        # the end (keeping the modulus odd and its top byte as it was).
        mid = len(key) - 40
        key[mid:mid + 2] = i.to_bytes(2, "big")
        p = len(key) - 4
        if (4 + p) % 2:  # the fixed pair must sit at an even offset of the whole rdata
            p -= 1
        key[p:p + 2] = b"\x00\x00"
        head = (257).to_bytes(2, "big") + bytes([3, int(ALG)])
        for c in range(64):
            v = (tag - _tag(head + bytes(key)) - c) % 0x10000
            key[p:p + 2] = v.to_bytes(2, "big")
            if _tag(head + bytes(key)) == tag:
                break
        else:  # pragma: no cover - the carry fold moves the sum by at most a few
            raise AssertionError("no tag fix found")
        k = DNSKEY(dns.rdataclass.IN, dns.rdatatype.DNSKEY, 257, 3, ALG,  # type: ignore[no-untyped-call]
                   bytes(key))
        assert dns.dnssec.key_id(k) == tag
        out.append(k)
    return out


def forged_sigs(count: int, covered: str, owner: str, tag: int, siglen: int) -> list[str]:
    """RRSIGs naming key `tag`, valid in time, with random signature bytes."""
    labels = len(dns.name.from_text(owner)) - 1
    return [
        RRSIG(dns.rdataclass.IN,  # type: ignore[no-untyped-call]
              dns.rdatatype.RRSIG, dns.rdatatype.from_text(covered), ALG, labels, 3600,
              int(NOW + 86400), int(NOW - 3600), tag,
              dns.name.from_text(ZONE), b"\x01" + os.urandom(siglen - 1)).to_text()
        for _ in range(count)
    ]


def auth_obs(qname: str, qtype: str, answer: tuple[RRsetObs, ...]) -> Observation:
    return Observation("auth:192.0.2.1", "192.0.2.1", 53, qname, qtype, False, False, NOW,
                       Outcome.REPLY, rtt_ms=1.0, rcode=0, flags=FLAG_QR | FLAG_AA,
                       answer=answer)


@dataclass(frozen=True)
class Flood:
    keys: list[DNSKEY]
    dnskey: Observation
    answer: Observation
    ds: Observation


def keytrap(n_keys: int, n_sigs: int, *, tag: int = 4242, bits: int = 1024,
            big_exponent: bool = False, n_ds: int | None = None) -> Flood:
    keys = colliding_keys(n_keys, tag, bits=bits, big_exponent=big_exponent)
    siglen = (bits + 7) // 8
    key_texts = tuple(sorted(k.to_text() for k in keys))
    dnskey = auth_obs(ZONE, "DNSKEY", (RRsetObs(
        ZONE, "DNSKEY", 3600, key_texts, tuple(forged_sigs(n_sigs, "DNSKEY", ZONE, tag, siglen))),))
    answer = auth_obs(QNAME, "A", (RRsetObs(
        QNAME, "A", 300, ("192.0.2.80",), tuple(forged_sigs(n_sigs, "A", QNAME, tag, siglen))),))
    # One DS per key by default: every key is a candidate SEP key.
    ds_list = [dns.dnssec.make_ds(ZONE, k, "SHA256") for k in keys[: n_ds or n_keys]]
    ds = Observation("res", "192.0.2.53", 53, ZONE, "DS", True, True, NOW, Outcome.REPLY,
                     rtt_ms=1.0, rcode=0, flags=FLAG_QR,
                     answer=(RRsetObs(ZONE, "DS", 3600, tuple(d.to_text() for d in ds_list)),))
    return Flood(keys, dnskey, answer, ds)


def ds_obs(texts: list[str]) -> Observation:
    return Observation("res", "192.0.2.53", 53, ZONE, "DS", True, True, NOW, Outcome.REPLY,
                       rtt_ms=1.0, rcode=0, flags=FLAG_QR,
                       answer=(RRsetObs(ZONE, "DS", 3600, tuple(texts)),))


def flood_evidence(*floods: Flood, cached: Observation | None = None) -> Evidence:
    return Evidence(ZONE, QNAME, "A", cd_answer=servfail(QNAME, "A"),
                    cached_dnskey=cached or floods[0].dnskey, cached_ds=floods[0].ds,
                    auth=tuple(AuthEvidence(f"192.0.2.{i + 1}", f.dnskey, f.answer)
                               for i, f in enumerate(floods)))


@dataclass
class Counter:
    """Every signature verification and DS digest dnspython is asked for, by RRset and RRSIG."""

    verify_calls: list[tuple[str, int, bytes]]
    crypto: int = 0
    digests: int = 0
    key_ids: int = 0


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    c = Counter([])
    validate_rrsig = dns.dnssec.validate_rrsig

    def counting_validate(rrset: Any, sig: RRSIG, keys: Any, *a: Any, **k: Any) -> None:
        c.verify_calls.append((f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}",
                               sig.key_tag, sig.signature))
        validate_rrsig(rrset, sig, keys, *a, **k)

    monkeypatch.setattr(dns.dnssec, "validate_rrsig", counting_validate)
    # dnspython's own per-key crypto step and helpers, where this version has them.
    for name, field_ in (("_validate_signature", "crypto"), ("make_ds", "digests"),
                         ("key_id", "key_ids")):
        orig = getattr(dns.dnssec, name, None)
        if orig is None:
            continue

        def wrapped(*a: Any, _orig: Any = orig, _f: str = field_, **k: Any) -> Any:
            setattr(c, _f, getattr(c, _f) + 1)
            return _orig(*a, **k)

        monkeypatch.setattr(dns.dnssec, name, wrapped)
    yield c


# ---- KeyTrap: many keys sharing a tag times many signatures --------------------------------

@pytest.fixture(scope="module")
def trap() -> Flood:
    return keytrap(40, 80, tag=4242)


def assert_within_budget(c: Counter) -> None:
    assert 0 < len(c.verify_calls) <= MAX_VERIFICATIONS
    assert c.crypto <= MAX_VERIFICATIONS
    per_sig = Counter_(c.verify_calls)
    assert max(per_sig.values()) <= MAX_KEYS_PER_SIG
    per_rrset = Counter_(what for what, _, _ in per_sig)
    assert max(per_rrset.values()) <= MAX_SIGS_PER_RRSET


def test_keytrap_keys_times_signatures_is_bounded(trap: Flood, counted: Counter) -> None:
    """40 keys x 80 signatures under one tag: was 6,400 verifications per RRset."""
    d = diagnose(flood_evidence(trap), now=NOW)
    assert_within_budget(counted)
    assert d.kind is DiagnosisKind.UNKNOWN
    assert d.reasons == (BUDGET_REASON,)
    assert "KeyTrap" in d.detail
    assert d.to_dict()["reasons"] == [BUDGET_REASON]
    c = classify(servfail(QNAME, "A"), cd_answer=servfail(QNAME, "A"), diagnosis=d)
    assert (c.verdict, c.reason) == (Verdict.SERVFAIL, "servfail-unexplained")


def test_keytrap_budget_is_per_diagnosis_not_per_server(counted: Counter) -> None:
    floods = [keytrap(12, 20, tag=100 + i) for i in range(3)]
    d = diagnose(flood_evidence(*floods), now=NOW)
    assert_within_budget(counted)
    assert d.kind is not DiagnosisKind.STALE_DNSKEY_CACHE
    assert BUDGET_REASON in d.reasons


def test_keytrap_with_costly_keys_finishes() -> None:
    """3072-bit moduli with exponents as long: each verification costs a private-key operation
    (33 s for this check before the budget, about 0.2 s with it)."""
    flood = keytrap(40, 80, tag=777, bits=3072, big_exponent=True)
    started = time.monotonic()
    d = diagnose(flood_evidence(flood), now=NOW)
    assert time.monotonic() - started < 5.0  # a hang bound, not a benchmark
    assert d.kind is DiagnosisKind.UNKNOWN and d.reasons == (BUDGET_REASON,)


def test_keys_with_the_tag_but_another_algorithm_cost_nothing(counted: Counter) -> None:
    """The index is by (tag, algorithm): RSA keys colliding with an ECDSA key's tag are never
    tried, and the cut-over diagnosis stands."""
    z = SignedZone(ZONE, NOW)
    decoys = [Key(z.ksk.private, k) for k in colliding_keys(40, z.standby.tag)]
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True), cached_ds=z.ds_obs(),
                  auth=(AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby, *decoys]),
                                     z.record_obs(QNAME, "PTR", ["h.example."], z.standby)),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert len(counted.verify_calls) == 2  # the DNSKEY RRset by the KSK, the record by the ZSK


def test_a_cut_over_seen_by_three_servers_verifies_each_signature_once(counted: Counter) -> None:
    z = SignedZone(ZONE, NOW)
    auth = tuple(AuthEvidence(f"192.0.2.{i}", z.dnskey_obs([z.ksk, z.standby]),
                              z.record_obs(QNAME, "PTR", ["h.example."], z.standby))
                 for i in (1, 2, 3))
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(), auth=auth)
    assert diagnose(ev, now=NOW).kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert len(counted.verify_calls) == 2


def test_a_signature_hidden_behind_the_bound_is_not_a_verdict(counted: Counter) -> None:
    """Nine forged signatures, then the good one: the budget stops first, and says so rather
    than calling the source bogus."""
    z = SignedZone(ZONE, NOW)
    good = z.record_obs(QNAME, "PTR", ["h.example."], z.zsk)
    forged = forged_sigs(MAX_SIGS_PER_RRSET + 1, "PTR", QNAME, z.zsk.tag, 64)
    forged = [f.replace(f" {int(ALG)} ", f" {int(z.zsk.dnskey.algorithm)} ", 1) for f in forged]
    hidden = Observation.from_dict({**good.to_dict(), "answer": [{
        **good.to_dict()["answer"][0], "rrsigs": [*forged, *good.answer[0].rrsigs]}]})
    ev = Evidence(ZONE, QNAME, "PTR", cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True),
                  cached_ds=z.ds_obs(),
                  auth=(AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.zsk]), hidden),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.UNKNOWN and d.reasons == (BUDGET_REASON,)
    assert "signature-invalid" not in d.reasons


def test_a_dnskey_set_too_large_to_read_proves_no_stale_cache() -> None:
    """Unread keys could hold the signing key: no stale-dnskey-cache from a truncated set."""
    z = SignedZone(ZONE, NOW)
    padding = [Key(z.ksk.private, k) for k in colliding_keys(MAX_RDATAS + 6, 9999)]
    ev = Evidence(ZONE, QNAME, "PTR", cd_answer=servfail(QNAME, "PTR"),
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk, *padding], cd=True),
                  cached_ds=z.ds_obs(),
                  auth=(AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby]),
                                     z.record_obs(QNAME, "PTR", ["h.example."], z.standby)),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.UNKNOWN and d.reasons == (BUDGET_REASON,)
    assert f"only the first {MAX_RDATAS} read" in d.detail


# ---- DS x DNSKEY ---------------------------------------------------------------------------

def test_ds_times_dnskey_is_bounded(counted: Counter) -> None:
    """1,300 keys x 1,500 DS, all under one tag: was 19-31 s of key tags and digests."""
    keys = colliding_keys(1300, 5150)
    dnskey = auth_obs(ZONE, "DNSKEY", (RRsetObs(
        ZONE, "DNSKEY", 3600, tuple(sorted(k.to_text() for k in keys)),
        tuple(forged_sigs(1, "DNSKEY", ZONE, 5150, 128))),))
    answer = auth_obs(QNAME, "A", (RRsetObs(QNAME, "A", 300, ("192.0.2.80",),
                                            tuple(forged_sigs(1, "A", QNAME, 5150, 128))),))
    ds = [f"5150 {int(ALG)} 2 {os.urandom(32).hex()}" for _ in range(1500)]
    counted.key_ids = counted.digests = 0
    started = time.monotonic()
    d = diagnose(Evidence(ZONE, QNAME, "A", cached_dnskey=dnskey, cached_ds=ds_obs(ds),
                          auth=(AuthEvidence("192.0.2.1", dnskey, answer),)), now=NOW)
    assert time.monotonic() - started < 5.0
    assert counted.digests <= MAX_DS_DIGESTS
    # Key tags: once per parsed key (cached and source sets are the same RRset: parsed once),
    # plus one per single-key verification inside dnspython.
    assert counted.key_ids <= MAX_RDATAS + MAX_VERIFICATIONS
    assert d.kind is DiagnosisKind.UNKNOWN and d.reasons == (BUDGET_REASON,)


def test_ds_matching_cut_short_is_not_ds_no_matching_key(counted: Counter) -> None:
    """60 keys and 60 DS under one tag, no digest matching: 16 digests cannot prove that no DS
    matches, so no bogus-at-source."""
    keys = colliding_keys(60, 6160)
    flood = keytrap(1, 1, tag=6160)
    dnskey = auth_obs(ZONE, "DNSKEY", (RRsetObs(
        ZONE, "DNSKEY", 3600, tuple(sorted(k.to_text() for k in keys)),
        flood.dnskey.answer[0].rrsigs),))
    ds = [f"6160 {int(ALG)} 2 {os.urandom(32).hex()}" for _ in range(60)]
    counted.digests = 0
    d = diagnose(Evidence(ZONE, QNAME, "A", cached_ds=ds_obs(ds),
                          auth=(AuthEvidence("192.0.2.1", dnskey, flood.answer),)), now=NOW)
    assert counted.digests == MAX_DS_DIGESTS
    assert "ds-no-matching-key" not in d.reasons
    assert d.kind is DiagnosisKind.UNKNOWN and d.reasons == (BUDGET_REASON,)


def test_few_ds_still_prove_no_matching_key(counted: Counter) -> None:
    keys = colliding_keys(3, 6170)
    flood = keytrap(1, 1, tag=6170)
    dnskey = auth_obs(ZONE, "DNSKEY", (RRsetObs(
        ZONE, "DNSKEY", 3600, tuple(sorted(k.to_text() for k in keys)),
        flood.dnskey.answer[0].rrsigs),))
    ds = [f"6170 {int(ALG)} 2 {os.urandom(32).hex()}", f"1 {int(ALG)} 2 {'00' * 32}"]
    counted.digests = 0
    d = diagnose(Evidence(ZONE, QNAME, "A", cached_ds=ds_obs(ds),
                          auth=(AuthEvidence("192.0.2.1", dnskey, flood.answer),)), now=NOW)
    assert counted.digests == 3  # one per key with the DS's tag; none for tag 1
    assert d.kind is DiagnosisKind.BOGUS_AT_SOURCE
    assert d.reasons == ("ds-no-matching-key", "signature-invalid")  # the forged A RRSIG too


# ---- owner names and CNAME chains in verdicts ----------------------------------------------

Q = "1.2.0.192.in-addr.arpa."


def resolver_reply(answer: list[tuple[str, str, str]], *, ad: bool = True, cd: bool = False,
                   rcode: int = 0, authority: tuple[RRsetObs, ...] = ()) -> Observation:
    rrsets = tuple(RRsetObs(owner, rdtype, 60, (rdata,)) for owner, rdtype, rdata in answer)
    return Observation("r", "127.0.0.1", 53, Q, "PTR", True, cd, NOW, Outcome.REPLY,
                       rtt_ms=1.0, rcode=rcode,
                       flags=FLAG_QR | FLAG_RD | FLAG_RA | (FLAG_AD if ad else 0),
                       answer=rrsets, authority=authority)


def chain(n: int, end: str = "h.example.") -> list[tuple[str, str, str]]:
    names = [Q] + [f"c{i}.example." for i in range(n)]
    return [*[(a, "CNAME", b) for a, b in itertools.pairwise(names)],
            (names[-1], "PTR", end)]


SOA = RRsetObs("example.", "SOA", 60, ("ns.example. h.example. 1 2 3 4 5",))


@pytest.mark.parametrize(("answer", "authority", "verdict", "reason"), [
    ([(Q, "PTR", "h.example.")], (), Verdict.SECURE, "ad-answer"),
    ([(Q.upper(), "PTR", "h.example.")], (), Verdict.SECURE, "ad-answer"),
    ([("other.example.", "PTR", "h.example.")], (), Verdict.ERROR, "answer-owner-mismatch"),
    ([("other.example.", "PTR", "h.example.")], (SOA,), Verdict.SECURE, "ad-denial"),
    ([(Q, "TXT", '"x"')], (), Verdict.ERROR, "answer-owner-mismatch"),
    ([], (), Verdict.SECURE, "ad-denial"),
    (chain(1), (), Verdict.SECURE, "ad-answer"),
    (chain(MAX_CNAME_CHAIN), (), Verdict.SECURE, "ad-answer"),
    (chain(MAX_CNAME_CHAIN + 1), (), Verdict.ERROR, "cname-loop"),
    (chain(2)[:-1], (), Verdict.SECURE, "ad-denial"),  # the chain ends in NODATA
    ([*chain(2)[:-1], ("x.example.", "PTR", "h.example.")], (), Verdict.ERROR,
     "answer-owner-mismatch"),  # data, but not where the chain ends
    ([(Q, "CNAME", "a.example."), ("a.example.", "CNAME", Q.upper())], (), Verdict.ERROR,
     "cname-loop"),
    ([(Q, "CNAME", Q)], (), Verdict.ERROR, "cname-loop"),
])
def test_ad_answer_must_answer_the_question(
    answer: list[tuple[str, str, str]], authority: tuple[RRsetObs, ...], verdict: Verdict,
    reason: str,
) -> None:
    c = classify(resolver_reply(answer, authority=authority))
    assert (c.verdict, c.reason) == (verdict, reason)
    assert c.reason in REASONS


def test_a_cname_with_two_targets_is_broken() -> None:
    obs = Observation.from_dict({**resolver_reply([]).to_dict(), "answer": [
        {"name": Q, "rdtype": "CNAME", "ttl": 60, "rdatas": ["a.example.", "b.example."]},
        {"name": "a.example.", "rdtype": "PTR", "ttl": 60, "rdatas": ["h.example."]}]})
    assert answer_chain(obs, Q, "PTR").broken
    assert classify(obs).reason == "cname-loop"


@pytest.mark.parametrize(("cd_answer", "reason"), [
    ([(Q, "PTR", "h.example.")], "cd-data"),
    (chain(3), "cd-data"),
    ([("other.example.", "PTR", "h.example.")], "servfail-unexplained"),
    ([*chain(2)[:-1], ("x.example.", "PTR", "h.example.")], "servfail-unexplained"),
    ([(Q, "CNAME", "a.example."), ("a.example.", "CNAME", Q)], "servfail-unexplained"),
    (chain(MAX_CNAME_CHAIN + 1), "servfail-unexplained"),
])
def test_cd_data_must_be_for_the_question(cd_answer: list[tuple[str, str, str]],
                                          reason: str) -> None:
    cd = resolver_reply(cd_answer, ad=False, cd=True)
    c = classify(servfail(Q, "PTR"), cd_answer=cd)
    assert c.reason == reason
    assert c.verdict is (Verdict.BOGUS if reason == "cd-data" else Verdict.SERVFAIL)


def test_a_cname_signed_by_an_uncached_key_is_a_stale_cache() -> None:
    """The zone signs the CNAME its name holds; the target may be elsewhere."""
    z = SignedZone(ZONE, NOW)
    ev = Evidence(ZONE, QNAME, "A", cd_answer=servfail(QNAME, "A"),
                  cached_dnskey=z.dnskey_obs([z.ksk, z.zsk], cd=True), cached_ds=z.ds_obs(),
                  auth=(AuthEvidence("192.0.2.1", z.dnskey_obs([z.ksk, z.standby]),
                                     z.record_obs(QNAME, "CNAME", ["elsewhere.example."],
                                                  z.standby)),))
    d = diagnose(ev, now=NOW)
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert d.rrsig_keytags == (z.standby.tag,)
