"""Diagnosis: why a resolver failed and until when — a pure function of follow-up observations.

Evidence (what the resolver has cached, what the authoritative servers serve) is collected by
probe.investigate; everything here is offline analysis that replays from recorded observations.
The decision never depends on EDE or on CD=1 data alone: BIND and PowerDNS send no EDE for a
bogus answer, and PowerDNS answers SERVFAIL even with CD=1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.dnssec
import dns.exception
import dns.name
import dns.node
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
from dns.dnssectypes import DSDigest
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.RRSIG import RRSIG
from dns.rdtypes.dnskeybase import Flag

from probe.codes import DiagnosisKind
from probe.observation import FLAG_AA, Observation, Outcome, RRsetObs


@dataclass(frozen=True, slots=True)
class AuthEvidence:
    """What one authoritative server said: its DNSKEY RRset and the probed record (RD=0)."""

    address: str
    dnskey: Observation | None
    answer: Observation | None
    soa: Observation | None = None  # the zone's SOA (RD=0): its serial tells versions apart

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address,
                "dnskey": self.dnskey.to_dict() if self.dnskey else None,
                "answer": self.answer.to_dict() if self.answer else None,
                "soa": self.soa.to_dict() if self.soa else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuthEvidence:
        return cls(str(d["address"]), _obs(d.get("dnskey")), _obs(d.get("answer")),
                   _obs(d.get("soa")))


@dataclass(frozen=True, slots=True)
class ParentEvidence:
    """What one server of the parent zone said about the zone's DS RRset (RD=0)."""

    address: str
    ds: Observation | None

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "ds": self.ds.to_dict() if self.ds else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParentEvidence:
        return cls(str(d["address"]), _obs(d.get("ds")))


def _obs(d: dict[str, Any] | None) -> Observation | None:
    return None if d is None else Observation.from_dict(d)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Follow-up observations for one failed (resolver, qname, qtype) check."""

    zone: str
    qname: str
    qtype: str
    cd_answer: Observation | None = None  # same query, CD=1, at the resolver
    cached_dnskey: Observation | None = None  # zone DNSKEY, CD=1, at the resolver
    cached_ds: Observation | None = None  # zone DS, CD=1, at the resolver
    auth: tuple[AuthEvidence, ...] = ()
    auth_source: str = "none"  # "zones-file" | "discovered" | "none"
    notes: tuple[str, ...] = field(default=())
    # "discovered": the resolvers whose NS and address answers agreed (two, or one when no
    # second resolver answered); never only the resolver under test when another answered.
    auth_resolvers: tuple[str, ...] = ()
    parent: str | None = None  # the parent zone's name, when it was found
    parent_ds: tuple[ParentEvidence, ...] = ()  # the DS as each parent server serves it
    zone_soa: Observation | None = None  # SOA of the zone name at the resolver, CD=1 (apex?)
    # Where the validated data lives when that is another zone (a CNAME/DNAME target, or
    # the RRSIG signer name below a further cut): the same follow-ups, asked there.
    signer: Evidence | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone, "qname": self.qname, "qtype": self.qtype,
            "cd_answer": self.cd_answer.to_dict() if self.cd_answer else None,
            "cached_dnskey": self.cached_dnskey.to_dict() if self.cached_dnskey else None,
            "cached_ds": self.cached_ds.to_dict() if self.cached_ds else None,
            "auth": [a.to_dict() for a in self.auth],
            "auth_source": self.auth_source,
            "auth_resolvers": list(self.auth_resolvers),
            "notes": list(self.notes),
            "parent": self.parent,
            "parent_ds": [p.to_dict() for p in self.parent_ds],
            "zone_soa": self.zone_soa.to_dict() if self.zone_soa else None,
            "signer": self.signer.to_dict() if self.signer else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        return cls(
            zone=str(d["zone"]), qname=str(d["qname"]), qtype=str(d["qtype"]),
            cd_answer=_obs(d.get("cd_answer")), cached_dnskey=_obs(d.get("cached_dnskey")),
            cached_ds=_obs(d.get("cached_ds")),
            auth=tuple(AuthEvidence.from_dict(a) for a in d.get("auth", ())),
            auth_source=str(d.get("auth_source", "none")),
            auth_resolvers=tuple(str(r) for r in d.get("auth_resolvers", ())),
            notes=tuple(str(n) for n in d.get("notes", ())),
            parent=None if d.get("parent") is None else str(d["parent"]),
            parent_ds=tuple(ParentEvidence.from_dict(x) for x in d.get("parent_ds", ())),
            zone_soa=_obs(d.get("zone_soa")),
            signer=None if d.get("signer") is None else Evidence.from_dict(d["signer"]),
        )


@dataclass(frozen=True, slots=True)
class Diagnosis:
    kind: DiagnosisKind
    reasons: tuple[str, ...]  # keys of probe.codes.REASONS
    rrsig_keytags: tuple[int, ...]
    cached_dnskey_keytags: tuple[int, ...]
    authoritative_dnskey_keytags: tuple[int, ...]
    cached_dnskey_ttl: int | None  # remaining TTL as the resolver reported it
    recovers_in_s: int | None  # from `now` passed to diagnose()
    recovers_at: float | None  # wall clock
    detail: str
    # The zone diagnosed, when it is not the check's zone (a CNAME target, a signer below a cut).
    zone: str | None = None
    ds_keytags: tuple[int, ...] = ()  # the parent's current DS, as its servers serve it
    cached_ds_keytags: tuple[int, ...] = ()
    cached_ds_ttl: int | None = None
    clock_skew_s: int | None = None  # observed probe-vs-signer skew, when the allowance was used

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "reasons": list(self.reasons),
            "rrsig_keytags": list(self.rrsig_keytags),
            "cached_dnskey_keytags": list(self.cached_dnskey_keytags),
            "authoritative_dnskey_keytags": list(self.authoritative_dnskey_keytags),
            "cached_dnskey_ttl": self.cached_dnskey_ttl,
            "recovers_in_s": self.recovers_in_s,
            "recovers_at": self.recovers_at,
            "detail": self.detail,
            "zone": self.zone,
            "ds_keytags": list(self.ds_keytags),
            "cached_ds_keytags": list(self.cached_ds_keytags),
            "cached_ds_ttl": self.cached_ds_ttl,
            "clock_skew_s": self.clock_skew_s,
        }


# ---- work bounds ----------------------------------------------------------------------------
# One reply from a hostile server must not buy unbounded CPU (KeyTrap, CVE-2023-50387; and the
# DS x DNSKEY variant, CVE-2023-50868 class). Real zones need a few keys, a few signatures per
# RRset and a few verifications per diagnosis; past these bounds the diagnosis says it stopped
# ("validation-budget-exceeded") instead of guessing.
MAX_RDATAS = 64  # DNSKEY, DS and RRSIG rdatas parsed per RRset
MAX_SIGNED_RDATAS = 512  # records of one RRset rebuilt to check a signature over it
MAX_SIGNED_RRSETS = 8  # RRsets of one answer whose signatures are checked (data or denial)
MAX_KEYS_PER_SIG = 4  # keys with the signature's (key tag, algorithm) tried per signature
MAX_SIGS_PER_RRSET = 8  # signatures per RRset that get as far as a verification
MAX_VERIFICATIONS = 32  # signature verifications per diagnosis
MAX_DS_DIGESTS = 16  # DS digest computations per diagnosis

BUDGET_REASON = "validation-budget-exceeded"


class _OutOfBudget(Exception):
    """Raised inside the diagnosis when a per-diagnosis bound is reached; never escapes it."""


RRsetKey = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _KeySet:
    """A DNSKEY RRset parsed once: key tags computed once per key, indexed by (tag, algorithm)."""

    keys: tuple[DNSKEY, ...]
    tags: frozenset[int]
    by_tag: dict[tuple[int, int], tuple[DNSKEY, ...]]
    truncated: bool  # more rdatas than MAX_RDATAS: the rest was not looked at

    @classmethod
    def of(cls, keys: Iterable[DNSKEY], truncated: bool = False) -> _KeySet:
        index: dict[tuple[int, int], list[DNSKEY]] = {}
        for k in keys:
            index.setdefault((dns.dnssec.key_id(k), int(k.algorithm)), []).append(k)
        return cls(tuple(k for ks in index.values() for k in ks),
                   frozenset(t for t, _ in index), {t: tuple(ks) for t, ks in index.items()},
                   truncated)


@dataclass(slots=True)
class _Work:
    """The work one diagnosis may still do, what it had to cut short, and what it already did."""

    verifications: int = MAX_VERIFICATIONS
    digests: int = MAX_DS_DIGESTS
    cut: dict[str, None] = field(default_factory=dict)  # what was cut short, for people
    keysets: dict[RRsetObs, _KeySet] = field(default_factory=dict)
    verified: dict[tuple[RRsetKey, RRSIG, DNSKEY], bool] = field(default_factory=dict)
    ds_digests: dict[tuple[DNSKEY, int], bytes | None] = field(default_factory=dict)

    def note_cut(self, what: str) -> None:
        self.cut[what] = None

    def verify(self, rrset: dns.rrset.RRset, sig: RRSIG, key: DNSKEY, origin: dns.name.Name,
               now: float) -> bool:
        """One signature verification with one key, charged to the budget."""
        if self.verifications <= 0:
            self.note_cut(f"stopped after {MAX_VERIFICATIONS} signature verifications")
            raise _OutOfBudget
        self.verifications -= 1
        # Only this key: dnspython would otherwise try every key with the same tag itself.
        keys: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {
            origin: dns.rrset.from_rdata_list(origin, 0, [key])}
        try:
            dns.dnssec.validate_rrsig(rrset, sig, keys, now=now)
        except (dns.exception.DNSException, ValueError):
            return False
        return True

    def ds_digest(self, zone: str, key: DNSKEY, digest_type: int) -> bytes | None:
        """The digest a DS of `digest_type` would carry for `key`; computed once per key."""
        memo = (key, digest_type)
        if memo in self.ds_digests:
            return self.ds_digests[memo]
        if self.digests <= 0:
            self.note_cut(f"stopped after {MAX_DS_DIGESTS} DS digest computations")
            raise _OutOfBudget
        self.digests -= 1
        try:
            # validating=True: dnspython's policy refuses to *create* SHA-1 DS, not to check one.
            made: bytes | None = dns.dnssec.make_ds(zone, key, DSDigest(digest_type),
                                                     validating=True).digest
        except (dns.exception.UnsupportedAlgorithm, ValueError, dns.exception.DNSException):
            made = None
        self.ds_digests[memo] = made
        return made


# ---- small pure helpers over recorded rdata text -------------------------------------------

def _parse(texts: tuple[str, ...], rdtype: str, origin: dns.name.Name
           ) -> tuple[list[dns.rdata.Rdata], bool]:
    """The first MAX_RDATAS rdatas that parse, and whether any were left unread."""
    out = []
    for text in texts[:MAX_RDATAS]:
        try:
            out.append(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=origin,
                                             relativize=False))
        except dns.exception.DNSException:
            continue
    return out, len(texts) > MAX_RDATAS


def _sigs_bounded(rrset: RRsetObs) -> tuple[list[RRSIG], bool]:
    parsed, truncated = _parse(rrset.rrsigs, "RRSIG", dns.name.root)
    return [rd for rd in parsed if isinstance(rd, RRSIG)], truncated


def _keyset(rrset: RRsetObs, origin: dns.name.Name, work: _Work) -> _KeySet:
    ks = work.keysets.get(rrset)
    if ks is None:
        parsed, truncated = _parse(rrset.rdatas, "DNSKEY", origin)
        ks = _KeySet.of((k for k in parsed if isinstance(k, DNSKEY)), truncated)
        work.keysets[rrset] = ks
    if ks.truncated:
        work.note_cut(f"DNSKEY RRset of {len(rrset.rdatas)} keys: only the first {MAX_RDATAS} read")
    return ks


def _dnskey_tags(obs: Observation | None, zone: str, work: _Work) -> tuple[int, ...]:
    if obs is None or obs.outcome is not Outcome.REPLY:
        return ()
    origin = dns.name.from_text(zone)
    tags: set[int] = set()
    for r in obs.rrsets("DNSKEY", zone)[:MAX_SIGNED_RRSETS]:
        tags.update(_keyset(r, origin, work).tags)
    return tuple(sorted(tags))


def dnskey_tags(obs: Observation | None, zone: str) -> tuple[int, ...]:
    """Key tags of the zone's DNSKEY RRset in an observation (empty when absent; the first
    MAX_RDATAS keys only)."""
    return _dnskey_tags(obs, zone, _Work())


_DENIAL_TYPES = frozenset({"NSEC", "NSEC3", "SOA"})


def signed_rrsets(obs: Observation | None, qname: str, qtype: str) -> list[RRsetObs]:
    """The RRsets whose signatures vouch for a reply: the data (or the CNAME the question's name
    holds), or for NXDOMAIN/NODATA the NSEC/NSEC3/SOA RRsets of the authority section
    (RFC 4035 §3.1.3)."""
    if obs is None or obs.outcome is not Outcome.REPLY:
        return []
    data = obs.rrsets(qtype, qname)
    if data:
        return data
    if qtype != "CNAME":
        # The zone signs the CNAME at the name; its target may live in another zone.
        cname = obs.rrsets("CNAME", qname)
        if cname:
            return cname
    if obs.rcode in (0, 3):
        return [r for r in obs.authority if r.rdtype in _DENIAL_TYPES]
    return []


def _signed_bounded(obs: Observation | None, qname: str, qtype: str,
                    work: _Work) -> list[RRsetObs]:
    rrsets = signed_rrsets(obs, qname, qtype)
    if len(rrsets) > MAX_SIGNED_RRSETS:
        work.note_cut(f"{len(rrsets)} signed RRsets in one answer: only the first "
                      f"{MAX_SIGNED_RRSETS} checked")
    return rrsets[:MAX_SIGNED_RRSETS]


def _rrsig_tags(obs: Observation | None, qname: str, qtype: str, work: _Work) -> set[int]:
    tags: set[int] = set()
    for r in _signed_bounded(obs, qname, qtype, work):
        sigs, truncated = _sigs_bounded(r)
        if truncated:
            work.note_cut(f"{r.name} {r.rdtype}: {len(r.rrsigs)} RRSIGs, only the first "
                          f"{MAX_RDATAS} read")
        tags.update(s.key_tag for s in sigs)
    return tags


def rrsig_tags(obs: Observation | None, qname: str, qtype: str) -> tuple[int, ...]:
    return tuple(sorted(_rrsig_tags(obs, qname, qtype, _Work())))


def authoritative(obs: Observation | None) -> bool:
    """An answer from the zone itself: NOERROR/NXDOMAIN with AA=1 (not a lame or REFUSED server,
    not a referral)."""
    return (
        obs is not None and obs.outcome is Outcome.REPLY and obs.rcode in (0, 3)
        and obs.flags is not None and bool(obs.flags & FLAG_AA)
    )


def _dnskey_ttl(obs: Observation | None, zone: str) -> int | None:
    if obs is None or obs.outcome is not Outcome.REPLY:
        return None
    rr = obs.rrsets("DNSKEY", zone)
    return rr[0].ttl if rr else None


def _to_rrset(r: RRsetObs, origin: dns.name.Name) -> dns.rrset.RRset:
    # Names inside rdata (SOA, PTR, NS) must stay absolute, or signature data changes.
    return dns.rrset.from_text_list(r.name, r.ttl, "IN", r.rdtype, list(r.rdatas), origin=origin,
                                    relativize=False)


@dataclass(frozen=True, slots=True)
class _SourceCheck:
    problems: tuple[str, ...]  # reason codes, each from a check that ran to its end
    notes: tuple[str, ...]
    limited: bool = False  # a check was cut short before it could conclude


def _may_sign(key: DNSKEY, sig: RRSIG) -> bool:
    """dnspython's own candidate filter (RFC 4034 §2.1.1-2, RFC 5011 §2.1), applied first so that
    keys it would skip cost no budget."""
    return (
        key.flags & Flag.ZONE == Flag.ZONE and key.protocol == 3
        and (key.flags & Flag.REVOKE == 0 or sig.type_covered == dns.rdatatype.DNSKEY)
    )


def _check_sigs(
    rrset_obs: RRsetObs, keys: _KeySet, origin: dns.name.Name, now: float, what: str,
    work: _Work,
) -> tuple[list[str], list[str], bool, bool]:
    """Return (problems, notes, any_valid, complete) for the signatures over one RRset; when no
    signature verifies and `complete` is False, the problems are not a verdict."""
    problems: list[str] = []
    notes: list[str] = []
    if not rrset_obs.rrsigs:
        return ["rrsig-missing"], [f"{what} has no RRSIG"], False, True
    sigs, truncated = _sigs_bounded(rrset_obs)
    complete = not truncated
    if truncated:
        work.note_cut(f"{what}: {len(rrset_obs.rrsigs)} RRSIGs, only the first {MAX_RDATAS} read")
    rkey: RRsetKey = (rrset_obs.name.lower(), rrset_obs.rdtype, rrset_obs.rdatas)
    rrset: dns.rrset.RRset | None = None
    try:
        covered = dns.rdatatype.from_text(rrset_obs.rdtype)
    except dns.exception.DNSException:
        return ["signature-invalid"], [f"{what} rdata could not be rebuilt"], False, True
    tried = 0
    for sig in sigs:
        if sig.expiration < now:
            problems.append("rrsig-expired")
            notes.append(f"{what} RRSIG by key {sig.key_tag} expired {_ago(now - sig.expiration)}")
            continue
        if sig.inception > now:
            problems.append("rrsig-not-yet-valid")
            notes.append(f"{what} RRSIG by key {sig.key_tag} valid only in {_ago(sig.inception - now)}")
            continue
        if sig.key_tag not in keys.tags:
            problems.append("rrsig-unknown-key")
            notes.append(f"{what} RRSIG by key {sig.key_tag}, which the DNSKEY set lacks")
            continue
        candidates = [k for k in keys.by_tag.get((sig.key_tag, int(sig.algorithm)), ())
                      if _may_sign(k, sig)]
        if sig.signer != origin or sig.type_covered != covered or not candidates:
            problems.append("signature-invalid")
            notes.append(f"{what} RRSIG by key {sig.key_tag} does not verify")
            continue
        if tried >= MAX_SIGS_PER_RRSET:
            work.note_cut(f"{what}: only {MAX_SIGS_PER_RRSET} signatures tried")
            return problems, notes, False, False
        tried += 1
        if len(candidates) > MAX_KEYS_PER_SIG:
            work.note_cut(f"{what}: {len(candidates)} keys share tag {sig.key_tag}; only "
                          f"{MAX_KEYS_PER_SIG} tried per signature")
            candidates = candidates[:MAX_KEYS_PER_SIG]
            complete = False
        valid = False
        for key in candidates:
            memo = (rkey, sig, key)
            ok = work.verified.get(memo)
            if ok is None:
                if rrset is None:
                    if len(rrset_obs.rdatas) > MAX_SIGNED_RDATAS:
                        work.note_cut(f"{what}: {len(rrset_obs.rdatas)} records, more than "
                                      f"{MAX_SIGNED_RDATAS} to verify")
                        return problems, notes, False, False
                    try:
                        rrset = _to_rrset(rrset_obs, origin)
                    except dns.exception.DNSException:
                        return (["signature-invalid"], [f"{what} rdata could not be rebuilt"],
                                False, True)
                try:
                    ok = work.verify(rrset, sig, key, origin, now)
                except _OutOfBudget:
                    return problems, notes, False, False
                work.verified[memo] = ok
            if ok:
                valid = True
                break
        if valid:
            return [], [], True, True
        problems.append("signature-invalid")
        notes.append(f"{what} RRSIG by key {sig.key_tag} does not verify")
    return problems, notes, False, complete


def _ago(seconds: float) -> str:
    s = int(abs(seconds))
    if s >= 86400:
        return f"{s // 86400} d"
    if s >= 3600:
        return f"{s // 3600} h"
    return f"{s} s"


def _match_ds(zone: str, keys: _KeySet, ds_list: list[DS], work: _Work
              ) -> tuple[list[DNSKEY], bool]:
    """Keys some DS points at, through the tag index (a digest only for a (tag, algorithm)
    match, once per key and digest type); False when the digest budget ran out."""
    matched: dict[DNSKEY, None] = {}
    try:
        for ds in ds_list:
            for key in keys.by_tag.get((ds.key_tag, int(ds.algorithm)), ()):
                if work.ds_digest(zone, key, int(ds.digest_type)) == ds.digest:
                    matched[key] = None
    except _OutOfBudget:
        return list(matched), False
    return list(matched), True


def check_source(ev: AuthEvidence, ds_obs: Observation | None, zone: str, qname: str,
                 qtype: str, now: float, work: _Work | None = None) -> _SourceCheck | None:
    """Can the authoritative data validate on its own? None when the server gave no usable data
    (no reply, or not authoritative: one lame server must not make a zone look broken)."""
    if not authoritative(ev.dnskey):
        return None
    assert ev.dnskey is not None
    work = _Work() if work is None else work
    origin = dns.name.from_text(zone)
    key_sets = ev.dnskey.rrsets("DNSKEY", zone)
    ds_sets = ds_obs.rrsets("DS", zone) if ds_obs and ds_obs.outcome is Outcome.REPLY else []
    if not key_sets:
        if ds_sets:
            return _SourceCheck(("dnskey-missing",), ("the parent has a DS but the zone serves no DNSKEY",))
        return _SourceCheck((), ("unsigned: no DNSKEY at the source and no DS in the parent",))
    key_obs = key_sets[0]
    keys = _keyset(key_obs, origin, work)
    problems: list[str] = []
    notes: list[str] = []
    limited = False

    # DS -> DNSKEY: at least one DS in the parent must match a key here (RFC 4035 §5.2).
    sep = keys
    sep_complete = not keys.truncated
    ds_parsed, ds_truncated = _parse(ds_sets[0].rdatas, "DS", origin) if ds_sets else ([], False)
    if ds_truncated:
        work.note_cut(f"DS RRset of {len(ds_sets[0].rdatas)} records: only the first "
                      f"{MAX_RDATAS} read")
    # A DS set with no digest or algorithm we (or any validator) support makes the zone insecure
    # rather than bogus (RFC 4035 §5.2, RFC 6840 §5.2): then there is nothing to check here.
    ds_list = [d for d in ds_parsed if isinstance(d, DS) and _ds_supported(d)]
    if ds_list:
        matched, digests_done = _match_ds(zone, keys, ds_list, work)
        sep = _KeySet.of(matched)
        sep_complete = digests_done and not ds_truncated and not keys.truncated
        if not matched:
            if sep_complete:
                problems.append("ds-no-matching-key")
                notes.append(f"DS key tags {sorted({d.key_tag for d in ds_list})} match no "
                             f"DNSKEY {sorted(keys.tags)}")
            else:
                limited = True
                notes.append("DS x DNSKEY matching cut short before a match was found")
    elif ds_truncated:
        sep_complete = False

    # The DNSKEY RRset must be signed by a key the DS points at.
    if sep.keys:
        p, n, ok, complete = _check_sigs(key_obs, sep, origin, now, "DNSKEY", work)
        if not ok:
            if complete and sep_complete:
                problems.extend(p or ["dnskey-rrsig-invalid"])
                notes.extend(n or ["DNSKEY RRset is not signed by a key the DS points at"])
            else:
                limited = True
                notes.append("DNSKEY RRset: no signature verified before the budget ran out")

    # The probed record (or the proof that it does not exist) must be signed by a zone key.
    if authoritative(ev.answer) and keys.keys:
        for rrset in _signed_bounded(ev.answer, qname, qtype, work):
            what = f"{rrset.name} {rrset.rdtype}"
            p, n, ok, complete = _check_sigs(rrset, keys, origin, now, what, work)
            if not ok:
                if complete and not keys.truncated:
                    problems.extend(p)
                    notes.extend(n)
                else:
                    limited = True
                    notes.append(f"{what}: no signature verified before the budget ran out")
    return _SourceCheck(tuple(dict.fromkeys(problems)), tuple(notes), limited)


_DS_DIGESTS = frozenset({1, 2, 4})  # SHA-1, SHA-256, SHA-384 (RFC 8624 §3.3: validate all)
_ALGORITHMS = frozenset({5, 7, 8, 10, 13, 14, 15, 16})


def _ds_supported(ds: DS) -> bool:
    return int(ds.digest_type) in _DS_DIGESTS and int(ds.algorithm) in _ALGORITHMS


def format_tags(ts: Iterable[int]) -> str:
    """Key tags for people: sorted, comma-separated, "none" when empty."""
    return ", ".join(str(t) for t in sorted(ts)) or "none"


def diagnose(ev: Evidence, *, now: float) -> Diagnosis:
    """Classify the cause of a failure from follow-up evidence; `now` is wall-clock seconds.
    The work is bounded (see MAX_*): hostile evidence ends in `validation-budget-exceeded`."""
    zone, qname, qtype = ev.zone, ev.qname, ev.qtype
    work = _Work()
    cached_tags = _dnskey_tags(ev.cached_dnskey, zone, work)
    cached_ttl = _dnskey_ttl(ev.cached_dnskey, zone)
    auth_dnskey: set[int] = set()
    auth_sig: set[int] = set()
    bad_sources: list[tuple[str, _SourceCheck]] = []
    limited_sources: list[tuple[str, _SourceCheck]] = []
    unsigned: list[str] = []
    good_sources = 0
    for a in ev.auth:
        if authoritative(a.dnskey):
            auth_dnskey.update(_dnskey_tags(a.dnskey, zone, work))
        if authoritative(a.answer):
            auth_sig.update(_rrsig_tags(a.answer, qname, qtype, work))
        chk = check_source(a, ev.cached_ds, zone, qname, qtype, now, work)
        if chk is None:
            continue
        if chk.problems:
            bad_sources.append((a.address, chk))
        elif chk.limited:
            limited_sources.append((a.address, chk))
        elif chk.notes:  # answered, but the zone is unsigned: nothing there to validate
            unsigned.append(a.address)
        else:
            good_sources += 1
    sig_tags = auth_sig or _rrsig_tags(ev.cd_answer, qname, qtype, work)

    def make(kind: DiagnosisKind, reasons: Iterable[str], detail: str,
             recovers_in: int | None = None, recovers_at: float | None = None) -> Diagnosis:
        return Diagnosis(kind, tuple(dict.fromkeys(reasons)), tuple(sorted(sig_tags)),
                         cached_tags, tuple(sorted(auth_dnskey)), cached_ttl, recovers_in,
                         recovers_at, detail)

    def cut_short() -> str:
        return ("validation work bounded against KeyTrap-style data (CVE-2023-50387): "
                + "; ".join(work.cut))

    if bad_sources:
        reasons = [r for _, c in bad_sources for r in c.problems]
        where = "; ".join(f"{addr}: {'; '.join(c.notes)}" for addr, c in bad_sources)
        if work.cut:
            reasons.append(BUDGET_REASON)
            where += f"; {cut_short()}"
        return make(DiagnosisKind.BOGUS_AT_SOURCE, reasons, where)

    if limited_sources and good_sources == 0:
        where = "; ".join(f"{addr}: {'; '.join(c.notes)}" for addr, c in limited_sources)
        return make(DiagnosisKind.UNKNOWN, [BUDGET_REASON], f"{cut_short()}; {where}")

    if unsigned and good_sources == 0:
        return make(DiagnosisKind.UNKNOWN, ["zone-unsigned"],
                    f"{', '.join(unsigned)}: no DNSKEY at the source and no DS in the parent; "
                    "the zone is unsigned, so this SERVFAIL is not a signing problem there")

    if good_sources == 0:
        why = "; ".join(ev.notes) or "the authoritative servers could not be asked"
        if sig_tags and cached_tags and not sig_tags & set(cached_tags):
            return make(DiagnosisKind.UNKNOWN, ["no-authoritative-data"],
                        f"signatures use key {format_tags(sig_tags)}, the resolver caches keys "
                        f"{format_tags(cached_tags)}; not confirmed at the source: {why}")
        return make(DiagnosisKind.UNKNOWN, ["no-authoritative-data"], why)

    if not cached_tags:
        return make(DiagnosisKind.UNKNOWN, ["cache-hidden"],
                    "the authoritative data validates, but the resolver would not show "
                    "its cached DNSKEY set")

    if work.cut:
        # Key tags or sources not fully read: a stale cache cannot be told from the rest.
        return make(DiagnosisKind.UNKNOWN, [BUDGET_REASON], cut_short())

    missing = sig_tags - set(cached_tags)
    # Stale only if no signing key is cached: with a double signature (RFC 6781 §4.1.1.2) one
    # cached key is enough to validate, so the SERVFAIL has another cause.
    if sig_tags and missing == sig_tags and missing <= auth_dnskey:
        received = ev.cached_dnskey.received if ev.cached_dnskey else None
        recovers_in = recovers_at = None
        if cached_ttl is not None and received is not None:
            recovers_at = received + cached_ttl
            recovers_in = max(0, math.ceil(recovers_at - now))
        detail = (
            f"signed by key {format_tags(missing)}, published at the source, but the resolver "
            f"caches DNSKEY set {format_tags(cached_tags)}"
        )
        if recovers_in is not None:
            detail += (
                f"; recovers when that set expires in about {recovers_in} s (names already "
                "asked can stay bogus for the resolver's bogus-cache time, 60 s by default in "
                "Unbound and PowerDNS)"
            )
        return make(DiagnosisKind.STALE_DNSKEY_CACHE, ["dnskey-not-cached"], detail,
                    recovers_in, recovers_at)

    return make(DiagnosisKind.UNKNOWN, ["cache-matches-source"],
                f"the resolver caches the keys that sign the data ({format_tags(cached_tags)}); "
                "it may still serve a cached bogus result for a short while")
