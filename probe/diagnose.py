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
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.RRSIG import RRSIG

from probe.codes import DiagnosisKind
from probe.observation import FLAG_AA, Observation, Outcome, RRsetObs


@dataclass(frozen=True, slots=True)
class AuthEvidence:
    """What one authoritative server said: its DNSKEY RRset and the probed record (RD=0)."""

    address: str
    dnskey: Observation | None
    answer: Observation | None

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address,
                "dnskey": self.dnskey.to_dict() if self.dnskey else None,
                "answer": self.answer.to_dict() if self.answer else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuthEvidence:
        return cls(str(d["address"]), _obs(d.get("dnskey")), _obs(d.get("answer")))


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone, "qname": self.qname, "qtype": self.qtype,
            "cd_answer": self.cd_answer.to_dict() if self.cd_answer else None,
            "cached_dnskey": self.cached_dnskey.to_dict() if self.cached_dnskey else None,
            "cached_ds": self.cached_ds.to_dict() if self.cached_ds else None,
            "auth": [a.to_dict() for a in self.auth],
            "auth_source": self.auth_source,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        return cls(
            zone=str(d["zone"]), qname=str(d["qname"]), qtype=str(d["qtype"]),
            cd_answer=_obs(d.get("cd_answer")), cached_dnskey=_obs(d.get("cached_dnskey")),
            cached_ds=_obs(d.get("cached_ds")),
            auth=tuple(AuthEvidence.from_dict(a) for a in d.get("auth", ())),
            auth_source=str(d.get("auth_source", "none")),
            notes=tuple(str(n) for n in d.get("notes", ())),
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
        }


# ---- small pure helpers over recorded rdata text -------------------------------------------

def _rdatas(rrset: RRsetObs, rdtype: str, origin: dns.name.Name) -> list[dns.rdata.Rdata]:
    out = []
    for text in rrset.rdatas:
        try:
            out.append(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=origin,
                                             relativize=False))
        except dns.exception.DNSException:
            continue
    return out


def _sigs(rrset: RRsetObs) -> list[RRSIG]:
    out: list[RRSIG] = []
    for text in rrset.rrsigs:
        try:
            rd = dns.rdata.from_text(dns.rdataclass.IN, "RRSIG", text, origin=dns.name.root,
                                     relativize=False)
        except dns.exception.DNSException:
            continue
        if isinstance(rd, RRSIG):
            out.append(rd)
    return out


def dnskey_tags(obs: Observation | None, zone: str) -> tuple[int, ...]:
    """Key tags of the zone's DNSKEY RRset in an observation (empty when absent)."""
    if obs is None or obs.outcome is not Outcome.REPLY:
        return ()
    origin = dns.name.from_text(zone)
    tags = {
        dns.dnssec.key_id(k)
        for r in obs.rrsets("DNSKEY", zone)
        for k in _rdatas(r, "DNSKEY", origin)
        if isinstance(k, DNSKEY)
    }
    return tuple(sorted(tags))


_DENIAL_TYPES = frozenset({"NSEC", "NSEC3", "SOA"})


def signed_rrsets(obs: Observation | None, qname: str, qtype: str) -> list[RRsetObs]:
    """The RRsets whose signatures vouch for a reply: the data, or for NXDOMAIN/NODATA the
    NSEC/NSEC3/SOA RRsets of the authority section (RFC 4035 §3.1.3)."""
    if obs is None or obs.outcome is not Outcome.REPLY:
        return []
    data = obs.rrsets(qtype, qname)
    if data:
        return data
    if obs.rcode in (0, 3):
        return [r for r in obs.authority if r.rdtype in _DENIAL_TYPES]
    return []


def rrsig_tags(obs: Observation | None, qname: str, qtype: str) -> tuple[int, ...]:
    return tuple(sorted({s.key_tag for r in signed_rrsets(obs, qname, qtype) for s in _sigs(r)}))


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
    problems: tuple[str, ...]  # reason codes
    notes: tuple[str, ...]


def _check_sigs(
    rrset_obs: RRsetObs, keys: dict[dns.name.Name, dns.rrset.RRset], origin: dns.name.Name,
    now: float, key_tags: set[int], what: str,
) -> tuple[list[str], list[str], bool]:
    """Return (problems, notes, any_valid) for the signatures over one RRset."""
    problems: list[str] = []
    notes: list[str] = []
    sigs = _sigs(rrset_obs)
    if not sigs:
        return ["rrsig-missing"], [f"{what} has no RRSIG"], False
    try:
        rrset = _to_rrset(rrset_obs, origin)
    except dns.exception.DNSException:
        return ["signature-invalid"], [f"{what} rdata could not be rebuilt"], False
    valid = False
    for sig in sigs:
        if sig.expiration < now:
            problems.append("rrsig-expired")
            notes.append(f"{what} RRSIG by key {sig.key_tag} expired {_ago(now - sig.expiration)}")
            continue
        if sig.inception > now:
            problems.append("rrsig-not-yet-valid")
            notes.append(f"{what} RRSIG by key {sig.key_tag} valid only in {_ago(sig.inception - now)}")
            continue
        if sig.key_tag not in key_tags:
            problems.append("rrsig-unknown-key")
            notes.append(f"{what} RRSIG by key {sig.key_tag}, which the DNSKEY set lacks")
            continue
        try:
            dns.dnssec.validate_rrsig(rrset, sig, keys, now=now)  # type: ignore[arg-type]
            valid = True
        except (dns.exception.ValidationFailure, dns.exception.UnsupportedAlgorithm):
            problems.append("signature-invalid")
            notes.append(f"{what} RRSIG by key {sig.key_tag} does not verify")
    return problems, notes, valid


def _ago(seconds: float) -> str:
    s = int(abs(seconds))
    if s >= 86400:
        return f"{s // 86400} d"
    if s >= 3600:
        return f"{s // 3600} h"
    return f"{s} s"


def check_source(ev: AuthEvidence, ds_obs: Observation | None, zone: str, qname: str,
                 qtype: str, now: float) -> _SourceCheck | None:
    """Can the authoritative data validate on its own? None when the server gave no usable data
    (no reply, or not authoritative: one lame server must not make a zone look broken)."""
    if not authoritative(ev.dnskey):
        return None
    assert ev.dnskey is not None
    origin = dns.name.from_text(zone)
    key_sets = ev.dnskey.rrsets("DNSKEY", zone)
    ds_sets = ds_obs.rrsets("DS", zone) if ds_obs and ds_obs.outcome is Outcome.REPLY else []
    if not key_sets:
        if ds_sets:
            return _SourceCheck(("dnskey-missing",), ("the parent has a DS but the zone serves no DNSKEY",))
        return _SourceCheck((), ("unsigned: no DNSKEY at the source and no DS in the parent",))
    key_obs = key_sets[0]
    keys = [k for k in _rdatas(key_obs, "DNSKEY", origin) if isinstance(k, DNSKEY)]
    tags = {dns.dnssec.key_id(k) for k in keys}
    problems: list[str] = []
    notes: list[str] = []

    # DS -> DNSKEY: at least one DS in the parent must match a key here (RFC 4035 §5.2).
    ds_keys = keys
    ds_list = [d for d in _rdatas(ds_sets[0], "DS", origin) if isinstance(d, DS)] if ds_sets else []
    # A DS set with no digest or algorithm we (or any validator) support makes the zone insecure
    # rather than bogus (RFC 4035 §5.2, RFC 6840 §5.2): then there is nothing to check here.
    ds_list = [d for d in ds_list if _ds_supported(d)]
    if ds_list:
        ds_keys = [k for k in keys if any(_ds_matches(zone, k, d) for d in ds_list)]
        if not ds_keys:
            problems.append("ds-no-matching-key")
            notes.append(
                f"DS key tags {sorted({d.key_tag for d in ds_list})} match no DNSKEY {sorted(tags)}"
            )

    # The DNSKEY RRset must be signed by a key the DS points at.
    if ds_keys:
        sep = {origin: dns.rrset.from_rdata_list(origin, key_obs.ttl, ds_keys)}
        sep_tags = {dns.dnssec.key_id(k) for k in ds_keys}
        p, n, ok = _check_sigs(key_obs, sep, origin, now, sep_tags, "DNSKEY")
        if not ok:
            problems.extend(p or ["dnskey-rrsig-invalid"])
            notes.extend(n or ["DNSKEY RRset is not signed by a key the DS points at"])

    # The probed record (or the proof that it does not exist) must be signed by a zone key.
    if authoritative(ev.answer) and keys:
        all_keys = {origin: dns.rrset.from_rdata_list(origin, key_obs.ttl, keys)}
        for rrset in signed_rrsets(ev.answer, qname, qtype):
            what = f"{rrset.name} {rrset.rdtype}"
            p, n, ok = _check_sigs(rrset, all_keys, origin, now, tags, what)
            if not ok:
                problems.extend(p)
                notes.extend(n)
    return _SourceCheck(tuple(dict.fromkeys(problems)), tuple(notes))


_DS_DIGESTS = frozenset({1, 2, 4})  # SHA-1, SHA-256, SHA-384 (RFC 8624 §3.3: validate all)
_ALGORITHMS = frozenset({5, 7, 8, 10, 13, 14, 15, 16})


def _ds_supported(ds: DS) -> bool:
    return int(ds.digest_type) in _DS_DIGESTS and int(ds.algorithm) in _ALGORITHMS


def _ds_matches(zone: str, key: DNSKEY, ds: DS) -> bool:
    if dns.dnssec.key_id(key) != ds.key_tag or int(key.algorithm) != int(ds.algorithm):
        return False
    try:
        # validating=True: dnspython's policy refuses to *create* SHA-1 DS, not to check one.
        made = dns.dnssec.make_ds(zone, key, ds.digest_type, validating=True)
        return made.digest == ds.digest
    except (dns.exception.UnsupportedAlgorithm, ValueError, dns.exception.DNSException):
        return False


def format_tags(ts: Iterable[int]) -> str:
    """Key tags for people: sorted, comma-separated, "none" when empty."""
    return ", ".join(str(t) for t in sorted(ts)) or "none"


def diagnose(ev: Evidence, *, now: float) -> Diagnosis:
    """Classify the cause of a failure from follow-up evidence; `now` is wall-clock seconds."""
    zone, qname, qtype = ev.zone, ev.qname, ev.qtype
    cached_tags = dnskey_tags(ev.cached_dnskey, zone)
    cached_ttl = _dnskey_ttl(ev.cached_dnskey, zone)
    auth_dnskey: set[int] = set()
    auth_sig: set[int] = set()
    bad_sources: list[tuple[str, _SourceCheck]] = []
    unsigned: list[str] = []
    good_sources = 0
    for a in ev.auth:
        if authoritative(a.dnskey):
            auth_dnskey.update(dnskey_tags(a.dnskey, zone))
        if authoritative(a.answer):
            auth_sig.update(rrsig_tags(a.answer, qname, qtype))
        chk = check_source(a, ev.cached_ds, zone, qname, qtype, now)
        if chk is None:
            continue
        if chk.problems:
            bad_sources.append((a.address, chk))
        elif chk.notes:  # answered, but the zone is unsigned: nothing there to validate
            unsigned.append(a.address)
        else:
            good_sources += 1
    sig_tags = auth_sig or set(rrsig_tags(ev.cd_answer, qname, qtype))

    def make(kind: DiagnosisKind, reasons: Iterable[str], detail: str,
             recovers_in: int | None = None, recovers_at: float | None = None) -> Diagnosis:
        return Diagnosis(kind, tuple(dict.fromkeys(reasons)), tuple(sorted(sig_tags)),
                         cached_tags, tuple(sorted(auth_dnskey)), cached_ttl, recovers_in,
                         recovers_at, detail)

    if bad_sources:
        reasons = [r for _, c in bad_sources for r in c.problems]
        where = "; ".join(f"{addr}: {'; '.join(c.notes)}" for addr, c in bad_sources)
        return make(DiagnosisKind.BOGUS_AT_SOURCE, reasons, where)

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
