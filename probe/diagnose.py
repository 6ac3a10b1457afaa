"""Diagnosis: why a resolver failed and until when — a pure function of follow-up observations.

Evidence (what the resolver has cached, what the authoritative servers serve) is collected by
probe.investigate; everything here is offline analysis that replays from recorded observations.
The decision never depends on EDE or on CD=1 data alone: BIND and PowerDNS send no EDE for a
bogus answer, and PowerDNS answers SERVFAIL even with CD=1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
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
    ds_digests: dict[tuple[str, DNSKEY, int], bytes | None] = field(default_factory=dict)
    # Largest probe-vs-signer clock difference a verified signature needed from the allowance.
    skew_used: float = 0.0

    def note_cut(self, what: str) -> None:
        self.cut[what] = None

    def verify(self, rrset: dns.rrset.RRset, sig: RRSIG, key: DNSKEY, origin: dns.name.Name,
               now: float) -> bool:
        """One signature verification with one key at time `now`, charged to the budget."""
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
        memo = (zone.lower(), key, digest_type)  # the digest covers the owner name too
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

def parse_rdatas(texts: Sequence[str], rdtype: str, origin: dns.name.Name
                 ) -> tuple[list[dns.rdata.Rdata], bool]:
    """The first MAX_RDATAS rdatas that parse (a hostile server may send thousands), and
    whether any were left unread."""
    out = []
    for text in texts[:MAX_RDATAS]:
        try:
            out.append(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=origin,
                                             relativize=False))
        except (dns.exception.DNSException, ValueError):
            continue
    return out, len(texts) > MAX_RDATAS


def parse_rrsigs(rrset: RRsetObs) -> tuple[list[RRSIG], bool]:
    """The RRSIGs recorded with an RRset, bounded as parse_rdatas."""
    parsed, truncated = parse_rdatas(rrset.rrsigs, "RRSIG", dns.name.root)
    return [rd for rd in parsed if isinstance(rd, RRSIG)], truncated


def _keyset(rrset: RRsetObs, origin: dns.name.Name, work: _Work) -> _KeySet:
    ks = work.keysets.get(rrset)
    if ks is None:
        parsed, truncated = parse_rdatas(rrset.rdatas, "DNSKEY", origin)
        ks = _KeySet.of((k for k in parsed if isinstance(k, DNSKEY)), truncated)
        work.keysets[rrset] = ks
    if ks.truncated:
        work.note_cut(f"DNSKEY RRset of {len(rrset.rdatas)} keys: only the first {MAX_RDATAS} read")
    return ks


def dnskey_tags(obs: Observation | None, zone: str) -> tuple[int, ...]:
    """Key tags of the zone's DNSKEY RRset in an observation (empty when absent; the first
    MAX_RDATAS keys only)."""
    if obs is None or obs.outcome is not Outcome.REPLY:
        return ()
    origin, work = dns.name.from_text(zone), _Work()
    tags: set[int] = set()
    for r in obs.rrsets("DNSKEY", zone)[:MAX_SIGNED_RRSETS]:
        tags.update(_keyset(r, origin, work).tags)
    return tuple(sorted(tags))


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


def _rrsig_tags(obs: Observation | None, qname: str, qtype: str, work: _Work,
                signer: dns.name.Name | None = None) -> set[int]:
    """Key tags of the signatures over the reply; only those by `signer` when given."""
    tags: set[int] = set()
    for r in _signed_bounded(obs, qname, qtype, work):
        sigs, truncated = parse_rrsigs(r)
        if truncated:
            work.note_cut(f"{r.name} {r.rdtype}: {len(r.rrsigs)} RRSIGs, only the first "
                          f"{MAX_RDATAS} read")
        tags.update(s.key_tag for s in sigs if signer is None or s.signer == signer)
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


def _ttl(obs: Observation | None, rdtype: str, zone: str) -> int | None:
    """Remaining TTL of the zone's `rdtype` RRset in a reply (None when absent)."""
    if obs is None or obs.outcome is not Outcome.REPLY:
        return None
    rr = obs.rrsets(rdtype, zone)
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
    # Signer names (RRSIG signer field) of data signed by a zone below this one: that data is
    # judged in its own zone, not here.
    elsewhere: tuple[str, ...] = ()


def _may_sign(key: DNSKEY, sig: RRSIG) -> bool:
    """dnspython's own candidate filter (RFC 4034 §2.1.1-2, RFC 5011 §2.1), applied first so that
    keys it would skip cost no budget."""
    return (
        key.flags & Flag.ZONE == Flag.ZONE and key.protocol == 3
        and (key.flags & Flag.REVOKE == 0 or sig.type_covered == dns.rdatatype.DNSKEY)
    )


def _check_sigs(
    rrset_obs: RRsetObs, keys: _KeySet, origin: dns.name.Name, now: float, what: str,
    work: _Work, skew: float = 0.0,
) -> tuple[list[str], list[str], bool, bool]:
    """Return (problems, notes, any_valid, complete) for the signatures over one RRset; when no
    signature verifies and `complete` is False, the problems are not a verdict."""
    problems: list[str] = []
    notes: list[str] = []
    if not rrset_obs.rrsigs:
        return ["rrsig-missing"], [f"{what} has no RRSIG"], False, True
    sigs, truncated = parse_rrsigs(rrset_obs)
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
        # Validators allow for clock skew (Unbound, BIND: about an hour); so do we.
        if sig.expiration < now - skew:
            problems.append("rrsig-expired")
            notes.append(f"{what} RRSIG by key {sig.key_tag} expired {_ago(now - sig.expiration)}"
                         + _beyond(skew))
            continue
        if sig.inception > now + skew:
            problems.append("rrsig-not-yet-valid")
            notes.append(f"{what} RRSIG by key {sig.key_tag} valid only in "
                         f"{_ago(sig.inception - now)}" + _beyond(skew))
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
                    ok = work.verify(rrset, sig, key, origin, _sig_time(sig, now))
                except _OutOfBudget:
                    return problems, notes, False, False
                work.verified[memo] = ok
            if ok:
                _note_skew(sig, now, work)
                valid = True
                break
        if valid:
            return [], [], True, True
        problems.append("signature-invalid")
        notes.append(f"{what} RRSIG by key {sig.key_tag} does not verify")
    return problems, notes, False, complete


def _sig_time(sig: RRSIG, now: float) -> float:
    """The time a signature is checked at: `now`, moved into its validity window when the
    skew allowance (checked by the caller) covers the difference."""
    return float(min(max(now, sig.inception), sig.expiration))


def _note_skew(sig: RRSIG, now: float, work: _Work) -> None:
    work.skew_used = max(work.skew_used, abs(now - _sig_time(sig, now)))


def _beyond(skew: float) -> str:
    return f", beyond the {int(skew)} s clock-skew allowance" if skew > 0 else ""


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
                 qtype: str, now: float, work: _Work | None = None, *,
                 clock_skew: float = 0.0) -> _SourceCheck | None:
    """Can the authoritative data validate on its own? None when the server gave no usable data
    (no reply, or not authoritative: one lame server must not make a zone look broken)."""
    return _check_source(ev, _ds_texts(ds_obs, zone), zone, qname, qtype, now,
                         _Work() if work is None else work, clock_skew)


def _ds_texts(obs: Observation | None, zone: str) -> tuple[str, ...]:
    if obs is None or obs.outcome is not Outcome.REPLY:
        return ()
    ds = obs.rrsets("DS", zone)
    return ds[0].rdatas if ds else ()


def _check_source(ev: AuthEvidence, ds_texts: tuple[str, ...], zone: str, qname: str,
                  qtype: str, now: float, work: _Work, skew: float) -> _SourceCheck | None:
    if not authoritative(ev.dnskey):
        return None
    assert ev.dnskey is not None
    origin = dns.name.from_text(zone)
    key_sets = ev.dnskey.rrsets("DNSKEY", zone)
    if not key_sets:
        if ds_texts:
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
    ds_parsed, ds_truncated = parse_rdatas(ds_texts, "DS", origin)
    if ds_truncated:
        work.note_cut(f"DS RRset of {len(ds_texts)} records: only the first {MAX_RDATAS} read")
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
        p, n, ok, complete = _check_sigs(key_obs, sep, origin, now, "DNSKEY", work, skew)
        if not ok:
            if complete and sep_complete:
                problems.extend(p or ["dnskey-rrsig-invalid"])
                notes.extend(n or ["DNSKEY RRset is not signed by a key the DS points at"])
            else:
                limited = True
                notes.append("DNSKEY RRset: no signature verified before the budget ran out")

    # The probed record (or the proof that it does not exist) must be signed by a zone key.
    elsewhere: dict[str, None] = {}
    if authoritative(ev.answer) and keys.keys:
        for rrset in _signed_bounded(ev.answer, qname, qtype, work):
            what = f"{rrset.name} {rrset.rdtype}"
            below = _signed_below(rrset, origin)
            if below is not None:
                elsewhere[below.to_text()] = None
                continue
            p, n, ok, complete = _check_sigs(rrset, keys, origin, now, what, work, skew)
            if not ok:
                if complete and not keys.truncated:
                    problems.extend(p)
                    notes.extend(n)
                else:
                    limited = True
                    notes.append(f"{what}: no signature verified before the budget ran out")
    return _SourceCheck(tuple(dict.fromkeys(problems)), tuple(notes), limited, tuple(elsewhere))


def _owns_soa(obs: Observation, zone: str) -> bool:
    """The SOA answer (CD=1) at `zone` has an SOA owned by it: the name is a zone apex."""
    return obs.outcome is Outcome.REPLY and bool(obs.rrsets("SOA", zone))


def _signed_below(rrset: RRsetObs, origin: dns.name.Name) -> dns.name.Name | None:
    """The signer name when every RRSIG over the RRset names one zone strictly below `origin`
    (a server authoritative for parent and child answers from the child), else None."""
    sigs, _ = parse_rrsigs(rrset)
    signers = {s.signer for s in sigs}
    if len(signers) != 1:
        return None
    signer = next(iter(signers))
    owner = dns.name.from_text(rrset.name)
    # RFC 4035 §5.3.1: the signer must be the zone containing the RRset, so the owner must be
    # at or below it; anything else is a bad signature here, not data of another zone.
    return (signer if signer != origin and signer.is_subdomain(origin)
            and owner.is_subdomain(signer) else None)


_DS_DIGESTS = frozenset({1, 2, 4})  # SHA-1, SHA-256, SHA-384 (RFC 8624 §3.3: validate all)
_ALGORITHMS = frozenset({5, 7, 8, 10, 13, 14, 15, 16})


def _ds_supported(ds: DS) -> bool:
    return int(ds.digest_type) in _DS_DIGESTS and int(ds.algorithm) in _ALGORITHMS


def format_tags(ts: Iterable[int]) -> str:
    """Key tags for people: sorted, comma-separated, "none" when empty."""
    return ", ".join(str(t) for t in sorted(ts)) or "none"


MAX_SIGNER_DEPTH = 4  # nested zones (CNAME target, signer below a cut) followed per diagnosis
BOGUS_CACHE_CAVEAT = ("names already asked can stay bogus for the resolver's bogus-cache time, "
                      "60 s by default in Unbound and PowerDNS")
_STALE_KINDS = frozenset({DiagnosisKind.STALE_DNSKEY_CACHE, DiagnosisKind.STALE_DS_CACHE,
                          DiagnosisKind.STALE_DNSKEY_VS_DS})
# The zone's own diagnosis wins over the CNAME target's: the resolver fails there first.
_DECISIVE = _STALE_KINDS | {DiagnosisKind.BOGUS_AT_SOURCE, DiagnosisKind.INCONSISTENT_SOURCES}


def diagnose(ev: Evidence, *, now: float, clock_skew: float = 3600.0) -> Diagnosis:
    """Classify the cause of a failure from follow-up evidence; `now` is wall-clock seconds and
    `clock_skew` the allowance for signature times (RFC 6781 §4.4.2.1).
    The work is bounded (see MAX_*): hostile evidence ends in `validation-budget-exceeded`."""
    work = _Work()  # one budget for the zone and every nested zone followed
    return _follow(ev, now, max(0.0, clock_skew), work, 0)


def _follow(ev: Evidence, now: float, skew: float, work: _Work, depth: int) -> Diagnosis:
    own = _finish(ev, _diagnose_zone(ev, now, skew, work), now, work)
    if ev.signer is None or own.kind in _DECISIVE:
        return own
    if depth >= MAX_SIGNER_DEPTH:
        return replace(own, detail=f"{own.detail}; {ev.signer.zone} not followed: more than "
                                   f"{MAX_SIGNER_DEPTH} nested zones")
    inner = _follow(ev.signer, now, skew, work, depth + 1)
    via = _via_cname(ev)
    lead = (f"{ev.qname} is a {via} into {ev.signer.zone}, diagnosed there" if via else
            f"{ev.qname} is signed by {ev.signer.zone}, diagnosed there")
    reasons = inner.reasons + (("via-cname",) if via else ())
    return replace(inner, zone=inner.zone or ev.signer.zone,
                   reasons=tuple(dict.fromkeys(reasons)), detail=f"{lead}: {inner.detail}")


def _via_cname(ev: Evidence) -> str | None:
    """"CNAME" or "DNAME" when an answer to the question redirects it, else None."""
    answers = [ev.cd_answer, *(a.answer for a in ev.auth)]
    for obs in answers:
        if obs is None or obs.outcome is not Outcome.REPLY:
            continue
        if ev.qtype != "CNAME" and obs.rrsets("CNAME", ev.qname):
            return "CNAME"
        if obs.rrsets("DNAME"):
            return "DNAME"
    return None


def _finish(ev: Evidence, d: Diagnosis, now: float, work: _Work) -> Diagnosis:
    """Add what holds for any outcome: the clock-skew allowance used, differing instances."""
    if work.skew_used > 0 and d.kind is not DiagnosisKind.BOGUS_AT_SOURCE:
        skew_s = math.ceil(work.skew_used)
        d = replace(d, reasons=tuple(dict.fromkeys((*d.reasons, "probe-clock-skew"))),
                    clock_skew_s=skew_s,
                    detail=f"{d.detail}; signature times checked with the clock-skew allowance: "
                           f"by this host's clock a signature is up to {skew_s} s outside its "
                           "validity period - either this clock is off by that much, or the "
                           "signatures really expired (or start) that recently, which "
                           "validators with a smaller allowance reject")
    nsids = sorted({o.nsid for o in (ev.cd_answer, ev.cached_dnskey, ev.cached_ds)
                    if o is not None and o.nsid is not None})
    if len(nsids) > 1:
        detail = (f"{d.detail}; the follow-ups were answered by different instances of the "
                  f"resolver (NSID {', '.join(nsids)}): each may cache another version")
        recovers_in, recovers_at = d.recovers_in_s, d.recovers_at
        src_ttl = _source_dnskey_ttl(ev)
        if recovers_in is not None and src_ttl is not None and src_ttl > recovers_in:
            # Another instance may have fetched the old set just before the new key appeared.
            recovers_in, recovers_at = src_ttl, now + src_ttl
            detail += f"; recovery widened to the source's DNSKEY TTL ({src_ttl} s)"
        d = replace(d, reasons=tuple(dict.fromkeys((*d.reasons, "instances-differ"))),
                    detail=detail, recovers_in_s=recovers_in, recovers_at=recovers_at)
    return d


def _source_dnskey_ttl(ev: Evidence) -> int | None:
    ttls = [_ttl(a.dnskey, "DNSKEY", ev.zone) for a in ev.auth if authoritative(a.dnskey)]
    known = [t for t in ttls if t is not None]
    return max(known) if known else None


def _soa_serial(obs: Observation | None, zone: str) -> str:
    if not authoritative(obs):
        return "unknown"
    assert obs is not None
    soa = obs.rrsets("SOA", zone)
    fields = soa[0].rdatas[0].split() if soa and soa[0].rdatas else []
    return fields[2] if len(fields) >= 7 else "unknown"


def _keys_of(obs: Observation | None, zone: str, work: _Work) -> _KeySet | None:
    if obs is None or obs.outcome is not Outcome.REPLY:
        return None
    sets = obs.rrsets("DNSKEY", zone)
    return _keyset(sets[0], dns.name.from_text(zone), work) if sets else None


def _ds_list(texts: tuple[str, ...], origin: dns.name.Name) -> list[DS]:
    parsed, _ = parse_rdatas(texts, "DS", origin)
    return [d for d in parsed if isinstance(d, DS) and _ds_supported(d)]


def _signing_keys(rrsets: list[RRsetObs], keys: _KeySet, origin: dns.name.Name, now: float,
                  skew: float, work: _Work) -> set[DNSKEY]:
    """The keys of `keys` that verify a signature over the rrsets (every signature, not only
    the first: a double signature has two signers). Charged to the budget."""
    found: set[DNSKEY] = set()
    for r in rrsets:
        sigs, _ = parse_rrsigs(r)
        if len(r.rdatas) > MAX_SIGNED_RDATAS:
            work.note_cut(f"{r.name} {r.rdtype}: {len(r.rdatas)} records, more than "
                          f"{MAX_SIGNED_RDATAS} to verify")
            continue
        try:
            rrset = _to_rrset(r, origin)
        except dns.exception.DNSException:
            continue
        rkey: RRsetKey = (r.name.lower(), r.rdtype, r.rdatas)
        for sig in sigs[:MAX_SIGS_PER_RRSET]:
            if sig.signer != origin or not (sig.expiration >= now - skew
                                            and sig.inception <= now + skew):
                continue
            for key in keys.by_tag.get((sig.key_tag, int(sig.algorithm)), ())[:MAX_KEYS_PER_SIG]:
                if not _may_sign(key, sig):
                    continue
                memo = (rkey, sig, key)
                ok = work.verified.get(memo)
                if ok is None:
                    ok = work.verify(rrset, sig, key, origin, _sig_time(sig, now))
                    work.verified[memo] = ok
                if ok:
                    _note_skew(sig, now, work)
                    found.add(key)
    return found


@dataclass(frozen=True, slots=True)
class _Server:
    """One authoritative server, judged on its own (never merged with the others)."""

    ev: AuthEvidence
    check: _SourceCheck
    keys: _KeySet | None
    sig_tags: frozenset[int] | None  # None: no authoritative answer to the question


def _diagnose_zone(ev: Evidence, now: float, skew: float, work: _Work) -> Diagnosis:
    zone, qname, qtype = ev.zone, ev.qname, ev.qtype
    origin = dns.name.from_text(zone)
    cached_keys = _keys_of(ev.cached_dnskey, zone, work)
    cached_tags = tuple(sorted(cached_keys.tags)) if cached_keys else ()
    cached_ttl = _ttl(ev.cached_dnskey, "DNSKEY", zone)
    cached_set = set(cached_keys.keys) if cached_keys else set()

    # The DS: the parent's servers' (authoritative, RD=0) when asked; else the resolver's cache.
    cached_ds_texts = _ds_texts(ev.cached_ds, zone)
    cached_ds_ttl = _ttl(ev.cached_ds, "DS", zone)
    parent_replies = [p for p in ev.parent_ds if authoritative(p.ds)]
    if parent_replies:
        ds_texts = tuple(dict.fromkeys(t for p in parent_replies if p.ds is not None
                                       for t in _ds_texts(p.ds, zone)))
        # NODATA (NOERROR, AA, no DS) proves absence; an NXDOMAIN says something else.
        ds_absent = not ds_texts and any(p.ds is not None and p.ds.rcode == 0
                                         for p in parent_replies)
        ds_from = f"the parent's servers ({', '.join(p.address for p in parent_replies)})"
    else:
        ds_texts = cached_ds_texts
        ds_absent = (ev.cached_ds is not None and ev.cached_ds.outcome is Outcome.REPLY
                     and ev.cached_ds.rcode == 0 and not ds_texts)
        ds_from = "the resolver's cache (CD=1): the parent's servers were not asked"
    ds_tags = tuple(sorted({d.key_tag for d in _ds_list(ds_texts, origin)})) \
        if parent_replies else ()
    cached_ds_tags = tuple(sorted({d.key_tag for d in _ds_list(cached_ds_texts, origin)}))

    servers: list[_Server] = []
    auth_dnskey: set[int] = set()
    for a in ev.auth:
        chk = _check_source(a, ds_texts, zone, qname, qtype, now, work, skew)
        if chk is None:
            continue
        keys = _keys_of(a.dnskey, zone, work)
        if keys:
            auth_dnskey.update(keys.tags)
        stags = (frozenset(_rrsig_tags(a.answer, qname, qtype, work))
                 if authoritative(a.answer) else None)
        servers.append(_Server(a, chk, keys, stags))
    auth_sig = set().union(*(s.sig_tags for s in servers if s.sig_tags is not None))
    sig_tags = auth_sig or _rrsig_tags(ev.cd_answer, qname, qtype, work, origin)

    def make(kind: DiagnosisKind, reasons: Iterable[str], detail: str,
             recovers_in: int | None = None, recovers_at: float | None = None) -> Diagnosis:
        return Diagnosis(kind, tuple(dict.fromkeys(reasons)), tuple(sorted(sig_tags)),
                         cached_tags, tuple(sorted(auth_dnskey)), cached_ttl, recovers_in,
                         recovers_at, detail, ds_keytags=ds_tags, cached_ds_keytags=cached_ds_tags,
                         cached_ds_ttl=cached_ds_ttl)

    def cut_short() -> str:
        return ("validation work bounded against KeyTrap-style data (CVE-2023-50387): "
                + "; ".join(work.cut))

    def expiry(obs: Observation | None, ttl: int | None) -> float | None:
        received = obs.received if obs else None
        return None if ttl is None or received is None else received + ttl

    def recovery(at: float | None, what: str = "that") -> tuple[int | None, float | None, str]:
        if at is None:
            return None, None, ""
        rin = max(0, math.ceil(at - now))
        return rin, at, f"; recovers when {what} expires in about {rin} s ({BOGUS_CACHE_CAVEAT})"

    # No DS at the parent: the zone is insecure whatever keys it serves (an island).
    signed_servers = [s for s in servers if s.keys is not None and s.keys.keys]
    # The parent removed the DS (going insecure, or a KSK change done as remove-then-add), but
    # the resolver still validates against the DS it caches until that expires: for it the
    # zone is still signed, so this is no insecure delegation yet.
    cached_ds_holds = bool(ds_absent and parent_replies and cached_ds_tags)
    if cached_ds_holds:
        held = _ds_list(cached_ds_texts, origin)
        held_ok = False
        for srv in signed_servers:
            assert srv.keys is not None
            try:
                held_ok = held_ok or bool(_match_ds(zone, srv.keys, held, work)[0])
            except _OutOfBudget:
                held_ok = True  # not proven stale: say nothing rather than guess
        if not held_ok:
            rin, at, tail = recovery(expiry(ev.cached_ds, cached_ds_ttl))
            return make(DiagnosisKind.STALE_DS_CACHE, ["ds-stale-cached"],
                        f"the parent's servers serve no DS for {zone}, but the resolver caches "
                        f"DS {format_tags(cached_ds_tags)}, which matches no key the zone "
                        f"publishes, and validates the zone against it{tail}", rin, at)
    # A DS NODATA at a name that is no zone apex proves nothing about a delegation.
    not_apex = not servers and ev.zone_soa is not None and not _owns_soa(ev.zone_soa, zone)
    if ds_absent and (signed_servers or not servers) and not not_apex and not cached_ds_holds:
        where = ("the parent's servers answer that there is no DS" if parent_replies else
                 "no DS anywhere (the resolver has none; the parent's servers were not asked)")
        return make(DiagnosisKind.INSECURE_DELEGATION, ["no-ds-at-parent"],
                    f"{where} for {zone}: an insecure delegation, so validators do not use the "
                    f"zone's keys ({format_tags(auth_dnskey)}); this failure is not a stale key")

    # Each server on its own: different DNSKEY sets = a partial cut-over.
    key_sets = {frozenset(s.keys.keys) if s.keys else frozenset() for s in servers}
    # Different signing keys alone are not: multi-signer zones (RFC 8901) publish one DNSKEY
    # set and each provider signs with its own ZSK, so any server's data validates.
    if len(servers) > 1 and len(key_sets) > 1:
        parts = []
        for s in servers:
            published = s.keys.keys if s.keys else ()
            signing = {k for k in published if dns.dnssec.key_id(k) in (s.sig_tags or ())}
            match = bool(signing & cached_set) if signing else (bool(published)
                                                                and set(published) == cached_set)
            part = (f"{s.ev.address}: DNSKEY {format_tags(s.keys.tags if s.keys else ())}, "
                    f"signs with {format_tags(s.sig_tags or ())}, SOA serial "
                    f"{_soa_serial(s.ev.soa, zone)}, "
                    + ("the resolver's cached keys match it" if match else
                       "the resolver's cached keys do not match it"))
            if s.check.problems:
                part += f" ({'; '.join(s.check.notes)})"
            parts.append(part)
        reasons = ["sources-disagree", *(r for s in servers for r in s.check.problems)]
        tail = ""
        if work.cut:
            reasons.append(BUDGET_REASON)
            tail = f"; {cut_short()}"
        return make(DiagnosisKind.INCONSISTENT_SOURCES, reasons,
                    "the zone's authoritative servers disagree: " + "; ".join(parts)
                    + f"; the resolver caches DNSKEY {format_tags(cached_tags)}. Nothing "
                    "recovers while the servers disagree: resolvers fail or succeed depending on "
                    "the server they ask, until every server serves the same version" + tail)

    bad = [s for s in servers if s.check.problems]
    limited = [s for s in servers if not s.check.problems and s.check.limited]
    unsigned = [s for s in servers if not s.check.problems and not s.check.limited
                and s.check.notes]
    good = [s for s in servers if not (s.check.problems or s.check.limited or s.check.notes)]

    if bad:
        reasons = [r for s in bad for r in s.check.problems]
        where = "; ".join(f"{s.ev.address}: {'; '.join(s.check.notes)}" for s in bad)
        where += f" (DS from {ds_from})"
        if work.cut:
            reasons.append(BUDGET_REASON)
            where += f"; {cut_short()}"
        return make(DiagnosisKind.BOGUS_AT_SOURCE, reasons, where)

    if limited and not good:
        where = "; ".join(f"{s.ev.address}: {'; '.join(s.check.notes)}" for s in limited)
        return make(DiagnosisKind.UNKNOWN, [BUDGET_REASON], f"{cut_short()}; {where}")

    if unsigned and not good:
        return make(DiagnosisKind.UNKNOWN, ["zone-unsigned"],
                    f"{', '.join(s.ev.address for s in unsigned)}: no DNSKEY at the source and no "
                    "DS in the parent; the zone is unsigned, so this SERVFAIL is not a signing "
                    "problem there")

    if not good:
        why = "; ".join(ev.notes) or "the authoritative servers could not be asked"
        if sig_tags and cached_tags and not sig_tags & set(cached_tags):
            return make(DiagnosisKind.UNKNOWN, ["no-authoritative-data"],
                        f"signatures use key {format_tags(sig_tags)}, the resolver caches keys "
                        f"{format_tags(cached_tags)}; not confirmed at the source: {why}")
        return make(DiagnosisKind.UNKNOWN, ["no-authoritative-data"], why)

    src = good[0]
    assert src.keys is not None
    parent_ds = _ds_list(ds_texts, origin) if parent_replies else []
    try:
        # The resolver's cached DS against the keys the zone now publishes (RFC 4035 §5.2).
        cached_ds_list = _ds_list(cached_ds_texts, origin)
        if parent_ds and cached_ds_list:
            matched, complete = _match_ds(zone, src.keys, cached_ds_list, work)
            if not matched and complete and not work.cut:
                at = expiry(ev.cached_ds, cached_ds_ttl)
                also = ""
                if cached_keys is not None:
                    for_ds, done = _match_ds(zone, cached_keys, parent_ds, work)
                    dnskey_at = expiry(ev.cached_dnskey, cached_ttl)
                    if done and not for_ds and dnskey_at is not None and at is not None \
                            and dnskey_at > at:
                        at = dnskey_at  # the old DNSKEY set must go too
                        also = " (and its cached DNSKEY set, which expires later)"
                rin, rat, words = recovery(at)
                return make(DiagnosisKind.STALE_DS_CACHE, ["ds-stale-cached"],
                            f"the parent serves DS {format_tags(ds_tags)}, which matches the "
                            f"zone's published keys {format_tags(src.keys.tags)} and the chain "
                            f"validates; the resolver caches DS {format_tags(cached_ds_tags)}"
                            f"{also}, which matches no key the zone publishes" + words, rin, rat)
    except _OutOfBudget:
        pass

    if not cached_tags or cached_keys is None:
        return make(DiagnosisKind.UNKNOWN, ["cache-hidden"],
                    "the authoritative data validates, but the resolver would not show "
                    "its cached DNSKEY set")

    if work.cut:
        # Key tags or sources not fully read: a stale cache cannot be told from the rest.
        return make(DiagnosisKind.UNKNOWN, [BUDGET_REASON], cut_short())

    # The parent's current DS against the resolver's cached DNSKEY set (RFC 7583 §3.3.4).
    if parent_ds:
        for_ds, complete = _match_ds(zone, cached_keys, parent_ds, work)
        if not for_ds and complete and not work.cut:
            ds_keys = {(d.key_tag, int(d.algorithm)) for d in parent_ds}
            collide = [k for k in cached_keys.keys
                       if (dns.dnssec.key_id(k), int(k.algorithm)) in ds_keys]
            rin, rat, words = recovery(expiry(ev.cached_dnskey, cached_ttl), "that set")
            extra = (f"; cached key {format_tags(dns.dnssec.key_id(k) for k in collide)} has "
                     "the DS's key tag but other key material" if collide else "")
            return make(DiagnosisKind.STALE_DNSKEY_VS_DS,
                        ["dnskey-stale-for-ds", *(["keytag-collision"] if collide else [])],
                        f"the parent's DS {format_tags(ds_tags)} matches the published KSK, but "
                        f"the resolver's cached DNSKEY set {format_tags(cached_tags)} has no key "
                        f"it matches{extra}" + words,
                        rin, rat)

    # The keys that sign the data at the source, compared with the cache by full RDATA.
    try:
        answer = _signed_bounded(src.ev.answer, qname, qtype, work) \
            if authoritative(src.ev.answer) else []
        signing = _signing_keys(answer, src.keys, origin, now, skew, work)
    except _OutOfBudget:
        return make(DiagnosisKind.UNKNOWN, [BUDGET_REASON], cut_short())
    elsewhere = {n for s in good for n in s.check.elsewhere}
    if elsewhere and not signing:
        return make(DiagnosisKind.UNKNOWN, ["no-authoritative-data"],
                    f"the data is signed by {', '.join(sorted(elsewhere))} (RRSIG signer name), "
                    f"a zone below {zone}: it validates there, and that zone's follow-ups were "
                    "not collected")
    try:
        if not signing and ev.cd_answer is not None:
            # No answer at the source: the data the resolver itself holds, checked with the
            # zone's keys (the signer name must be this zone's).
            signing = _signing_keys(_signed_bounded(ev.cd_answer, qname, qtype, work),
                                    src.keys, origin, now, skew, work)
    except _OutOfBudget:
        return make(DiagnosisKind.UNKNOWN, [BUDGET_REASON], cut_short())
    if not signing:
        # Nothing verified: fall back to the key tags, signer name checked.
        signing = {k for k in src.keys.keys if dns.dnssec.key_id(k) in sig_tags}
    signing_ids = {(dns.dnssec.key_id(k), int(k.algorithm)) for k in signing}
    collide = [k for k in cached_keys.keys
               if k not in signing and (dns.dnssec.key_id(k), int(k.algorithm)) in signing_ids]
    collision = ["keytag-collision"] if collide else []
    collision_words = (f"; the cached key {format_tags(dns.dnssec.key_id(k) for k in collide)} "
                       "has the signing key's tag but other key material: it is not the signing "
                       "key" if collide else "")
    # Stale only if no signing key is cached: with a double signature (RFC 6781 §4.1.1.2) one
    # cached key is enough to validate, so the SERVFAIL has another cause.
    if signing and not signing & cached_set:
        rin, rat, words = recovery(expiry(ev.cached_dnskey, cached_ttl), "that set")
        tags = format_tags({dns.dnssec.key_id(k) for k in signing})
        return make(DiagnosisKind.STALE_DNSKEY_CACHE, ["dnskey-not-cached", *collision],
                    f"signed by key {tags}, published at the source, but the resolver caches "
                    f"DNSKEY set {format_tags(cached_tags)}{collision_words}"
                    + words, rin, rat)

    return make(DiagnosisKind.UNKNOWN, ["cache-matches-source", *collision],
                f"the resolver caches the keys that sign the data ({format_tags(cached_tags)})"
                f"{collision_words}; it may still serve a cached bogus result for a short while")
