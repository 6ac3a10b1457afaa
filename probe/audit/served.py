"""What one server serves, read from its raw answers: keys by full RDATA, signers, serial, TTLs.

Pure functions over recorded observations (no I/O, no clock of their own). Keys are named by a
key id `TAG/ALG/FLAGS/BASE64` so two keys sharing a tag stay apart; a signature whose key is not
published anywhere is named `TAG/ALG/?/?`. DS records are named `TAG/ALG/DIGEST-TYPE/HEX`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rrset
from dns.dnssectypes import DSDigest
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.RRSIG import RRSIG

from probe.audit.snapshot import ParentSnapshot, Role, ServerSnapshot
from probe.diagnose import MAX_RDATAS, authoritative, parse_rdatas, parse_rrsigs, signed_rrsets
from probe.observation import Observation, RRsetObs

UNKNOWN = "?"
GROUP_SEP = "|"  # in no key id (base64 has no '|')


def group_id(keys: Iterable[str]) -> str:
    return GROUP_SEP.join(sorted(keys))


def group_keys(group: str) -> frozenset[str]:
    return frozenset(k for k in group.split(GROUP_SEP) if k)


def key_id(key: DNSKEY) -> str:
    """`TAG/ALG/FLAGS/BASE64`: the key by its full RDATA, with its tag first for people."""
    return (f"{dns.dnssec.key_id(key)}/{int(key.algorithm)}/{key.flags}/"
            f"{base64.b64encode(key.key).decode()}")


def unknown_key(tag: int, alg: int) -> str:
    return f"{tag}/{alg}/{UNKNOWN}/{UNKNOWN}"


def tag_of(ident: str) -> int:
    """The key tag of a key id or DS id (its first field); 0 for a malformed id."""
    head = ident.split("/", 1)[0]
    return int(head) if head.isdigit() else 0


def tags(idents: Iterable[str]) -> tuple[int, ...]:
    return tuple(sorted({tag_of(i) for i in idents}))


@dataclass(frozen=True, slots=True)
class SigSeen:
    """One signature a server serves, as far as expiry is concerned."""

    covers: str  # "SOA 14.in-addr.arpa."
    tag: int
    inception: int
    expiration: int
    ttl: int  # what a resolver may cache the signed RRset for: min(TTL, original TTL)


@dataclass(frozen=True, slots=True)
class Served:
    """What one server of a zone served in one pass."""

    server: str
    role: Role
    # Authoritative DNSKEY and SOA answers: a server that answered only part of the questions
    # says nothing this pass (a timeout must not look like a change).
    answered: bool
    serial: int | None
    keys: frozenset[str]  # key ids of the DNSKEY RRset
    dnskey_ttl: int | None  # the most a resolver may cache the set (TTL capped, see _cap)
    signers: frozenset[str]  # keys whose signatures cover the zone's data (SOA, probe answers)
    ksk_signers: frozenset[str]  # keys whose signatures cover the DNSKEY RRset
    sigs: tuple[SigSeen, ...] = ()
    # The signers of each signed RRset, as group ids (key ids joined by GROUP_SEP): an RRset
    # signed by an old and a new key (double signature) validates with either.
    signer_groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ParentServed:
    """The zone's DS RRset as one parent server serves it."""

    server: str
    answered: bool
    ds: frozenset[str]
    ttl: int | None


def _parse(texts: Sequence[str], rdtype: str, origin: dns.name.Name) -> list[dns.rdata.Rdata]:
    return parse_rdatas(texts, rdtype, origin)[0]


def _sigs(rrset: RRsetObs) -> list[RRSIG]:
    return parse_rrsigs(rrset)[0]


def _cap(rrset: RRsetObs, sigs: Sequence[RRSIG], at: float) -> int:
    """The longest a resolver may cache `rrset` fetched at `at`: its TTL, capped by the original
    TTL and expiration (RFC 4035 §5.3.3) of the signature that allows the longest — a leftover
    expired signature beside a valid one must not shorten it."""
    caps = [min(s.original_ttl, int(s.expiration - at)) for s in sigs if s.expiration > at]
    return max(0, min(rrset.ttl, max(caps)) if caps else rrset.ttl)


def _signer(sig: RRSIG, rrset: RRsetObs, by_tag: dict[tuple[int, int], list[DNSKEY]],
            origin: dns.name.Name) -> str:
    """The key that made `sig`: the only published key with its tag and algorithm, or among
    several (a key tag collision) the one it verifies with; else an unknown-key id."""
    found = by_tag.get((sig.key_tag, int(sig.algorithm)), [])
    if len(found) == 1:
        return key_id(found[0])
    if found:
        try:
            data = dns.rrset.from_text_list(rrset.name, rrset.ttl, "IN", rrset.rdtype,
                                            list(rrset.rdatas[:MAX_RDATAS]), origin=origin,
                                            relativize=False)
        except (dns.exception.DNSException, ValueError):
            data = None
        for k in found[:4]:  # bounded: a collision of more than a few keys is hostile
            if data is None:
                break
            keys = {origin: dns.rrset.from_rdata_list(origin, 0, [k])}
            try:
                # Judged at the signature's own inception: who signed, not whether it is valid.
                dns.dnssec.validate_rrsig(data, sig, keys, now=float(sig.inception))  # type: ignore[arg-type]
            except (dns.exception.DNSException, ValueError):
                continue
            return key_id(k)
    return unknown_key(sig.key_tag, int(sig.algorithm))


def zone_keys(snapshots: Iterable[ServerSnapshot], zone: str) -> list[DNSKEY]:
    """Every DNSKEY any server of the zone served in this pass (signers are looked up here, so
    a key one server signs with but does not publish is still named when another publishes it)."""
    origin = dns.name.from_text(zone)
    out: dict[str, DNSKEY] = {}
    for s in snapshots:
        if not authoritative(s.dnskey):
            continue
        for rr in s.dnskey.rrsets("DNSKEY", zone)[:1]:
            for k in _parse(rr.rdatas, "DNSKEY", origin):
                if isinstance(k, DNSKEY):
                    out.setdefault(key_id(k), k)
    return list(out.values())


def served(snap: ServerSnapshot, zone: str, known: Sequence[DNSKEY]) -> Served:
    """Read one server's answers; `known` is zone_keys() of the same pass."""
    origin = dns.name.from_text(zone)
    by_tag: dict[tuple[int, int], list[DNSKEY]] = {}
    for k in known:
        by_tag.setdefault((dns.dnssec.key_id(k), int(k.algorithm)), []).append(k)
    if not (authoritative(snap.dnskey) and authoritative(snap.soa)):
        return Served(snap.server, snap.role, False, _serial(snap.soa, zone), frozenset(), None,
                      frozenset(), frozenset())
    at = snap.dnskey.started
    keys: set[str] = set()
    ttl: int | None = None
    ksk_signers: set[str] = set()
    seen: list[SigSeen] = []
    for rr in snap.dnskey.rrsets("DNSKEY", zone)[:1]:
        keys.update(key_id(k) for k in _parse(rr.rdatas, "DNSKEY", origin)
                    if isinstance(k, DNSKEY))
        sigs = _sigs(rr)
        ttl = _cap(rr, sigs, at)
        ksk_signers.update(_signer(s, rr, by_tag, origin) for s in sigs)
        seen += _seen(rr, sigs)
    groups: set[str] = set()
    for obs in (snap.soa, *snap.answers):
        if not authoritative(obs):
            continue
        for rr in signed_rrsets(obs, obs.qname, obs.qtype)[:8]:
            sigs = [s for s in _sigs(rr) if s.signer == origin]  # data of a zone below: not ours
            if sigs:
                groups.add(group_id({_signer(s, rr, by_tag, origin) for s in sigs}))
            seen += _seen(rr, sigs)
    signers = frozenset(k for g in groups for k in group_keys(g))
    return Served(snap.server, snap.role, True, _serial(snap.soa, zone), frozenset(keys), ttl,
                  signers, frozenset(ksk_signers), tuple(seen), frozenset(groups))


def _seen(rr: RRsetObs, sigs: Sequence[RRSIG]) -> list[SigSeen]:
    return [SigSeen(f"{rr.rdtype} {rr.name}", s.key_tag, int(s.inception), int(s.expiration),
                    min(rr.ttl, s.original_ttl)) for s in sigs]


def _serial(soa: Observation, zone: str) -> int | None:
    if not authoritative(soa):
        return None
    for rr in soa.rrsets("SOA", zone)[:1]:
        fields = rr.rdatas[0].split() if rr.rdatas else []
        if len(fields) >= 3 and fields[2].isdigit():
            return int(fields[2])
    return None


def ds_id(ds: DS) -> str:
    return f"{ds.key_tag}/{int(ds.algorithm)}/{int(ds.digest_type)}/{ds.digest.hex()}"


def parent_served(p: ParentSnapshot, zone: str) -> ParentServed:
    """The DS RRset one parent server serves: answered with AA (NOERROR or NODATA) or not."""
    obs = p.ds
    if not authoritative(obs):
        return ParentServed(p.server, False, frozenset(), None)
    ds: set[str] = set()
    ttl: int | None = None
    for rr in obs.rrsets("DS", zone)[:1]:
        ds.update(ds_id(d) for d in _parse(rr.rdatas, "DS", dns.name.root) if isinstance(d, DS))
        ttl = _cap(rr, _sigs(rr), obs.started)
    return ParentServed(p.server, True, frozenset(ds), ttl)


# DS digest types a validator uses (RFC 4509, RFC 6605; SHA-1 still validates, RFC 8624 §3.3).
_USABLE_DIGESTS = frozenset({"1", "2", "4"})


def ds_usable(ds_ident: str) -> bool:
    """A DS a validator can use: a digest type it implements. A DS set with none of these is
    treated as insecure (RFC 4035 §5.2), never a stale-key case."""
    parts = ds_ident.split("/")
    return len(parts) == 4 and parts[2] in _USABLE_DIGESTS


def ds_matches(ds_ident: str, key_ident: str, zone: str) -> bool:
    """Does the DS (by id) point at the key (by id)? Tag, algorithm and digest must agree."""
    d_tag, d_alg, d_type, d_hex = [*ds_ident.split("/"), "", "", ""][:4]
    k_tag, k_alg, flags, b64 = [*key_ident.split("/", 3), "", "", ""][:4]
    if (d_tag, d_alg) != (k_tag, k_alg) or b64 == UNKNOWN or not flags.isdigit() \
            or not d_type.isdigit():
        return False
    try:
        key = dns.rdata.from_text(dns.rdataclass.IN, "DNSKEY", f"{flags} 3 {k_alg} {b64}")
        made = dns.dnssec.make_ds(zone, key, DSDigest(int(d_type)),
                                  validating=True)
    except (dns.exception.DNSException, ValueError):
        return False
    return bool(made.digest.hex() == d_hex)
