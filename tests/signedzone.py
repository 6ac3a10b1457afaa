"""Test helper: a zone signed in memory with dnspython, producing Observations like the lab's."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec
from dns.rdtypes.ANY.DNSKEY import DNSKEY

from probe.observation import (
    FLAG_AA,
    FLAG_AD,
    FLAG_QR,
    FLAG_RA,
    FLAG_RD,
    EdeObs,
    Observation,
    Outcome,
    RRsetObs,
)

ALG = dns.dnssec.Algorithm.ECDSAP256SHA256


@dataclass
class Key:
    private: ec.EllipticCurvePrivateKey
    dnskey: DNSKEY

    @property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)


def make_key(ksk: bool = False) -> Key:
    priv = ec.generate_private_key(ec.SECP256R1())
    return Key(priv, dns.dnssec.make_dnskey(priv.public_key(), ALG, flags=257 if ksk else 256))


@dataclass
class SignedZone:
    name: str
    now: float
    ksk: Key = field(default_factory=lambda: make_key(True))
    zsk: Key = field(default_factory=make_key)
    standby: Key = field(default_factory=make_key)
    dnskey_ttl: int = 3600
    record_ttl: int = 300

    def _rrset(self, owner: str, rdtype: str, ttl: int, texts: list[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(owner, ttl, "IN", rdtype, texts)

    def _sign(self, rrset: dns.rrset.RRset, key: Key, *, inception: float | None = None,
              expiration: float | None = None) -> str:
        sig = dns.dnssec.sign(
            rrset, key.private, dns.name.from_text(self.name), key.dnskey,
            inception=inception if inception is not None else self.now - 3600,
            expiration=expiration if expiration is not None else self.now + 86400,
        )
        return str(sig.to_text())

    def dnskey_obs(self, keys: list[Key], *, ttl: int | None = None, server: str = "auth:x",
                   sign_with: Key | None = None, started: float | None = None,
                   cd: bool = False, expiration: float | None = None) -> Observation:
        rrset = dns.rrset.from_rdata_list(self.name, self.dnskey_ttl, [k.dnskey for k in keys])
        sigs = (self._sign(rrset, sign_with or self.ksk, expiration=expiration),)
        data = RRsetObs(self.name, "DNSKEY", ttl if ttl is not None else self.dnskey_ttl,
                        tuple(sorted(r.to_text() for r in rrset)), sigs)
        return self._obs(server, self.name, "DNSKEY", (data,), cd=cd, started=started)

    def record_obs(self, qname: str, qtype: str, texts: list[str], key: Key | None, *,
                   server: str = "auth:x", expiration: float | None = None,
                   inception: float | None = None, cd: bool = False) -> Observation:
        rrset = self._rrset(qname, qtype, self.record_ttl, texts)
        sigs = () if key is None else (self._sign(rrset, key, inception=inception,
                                                  expiration=expiration),)
        data = RRsetObs(qname, qtype, self.record_ttl, tuple(sorted(texts)), sigs)
        return self._obs(server, qname, qtype, (data,), cd=cd)

    def denial_obs(self, qname: str, qtype: str, key: Key, *, server: str = "auth:x",
                   cd: bool = False) -> Observation:
        """NXDOMAIN for `qname`: SOA and an NSEC covering the name, both signed by `key`."""
        soa = self._rrset(self.name, "SOA", self.record_ttl,
                          [f"ns1.{self.name} hostmaster.{self.name} 1 3600 600 86400 60"])
        nsec = self._rrset(self.name, "NSEC", self.record_ttl, [f"zz.{self.name} SOA NS RRSIG NSEC DNSKEY"])
        authority = tuple(
            RRsetObs(r.name.to_text(), dns.rdatatype.to_text(r.rdtype), r.ttl,
                     tuple(x.to_text() for x in r), (self._sign(r, key),))
            for r in (soa, nsec)
        )
        obs = self._obs(server, qname, qtype, (), cd=cd)
        return Observation.from_dict({**obs.to_dict(), "rcode": 3,
                                      "authority": [
                                          {"name": a.name, "rdtype": a.rdtype, "ttl": a.ttl,
                                           "rdatas": list(a.rdatas), "rrsigs": list(a.rrsigs)}
                                          for a in authority]})

    def ds_obs(self, key: Key | None = None, digest: str = "SHA256") -> Observation:
        ds = dns.dnssec.make_ds(self.name, (key or self.ksk).dnskey, digest, validating=True)
        data = RRsetObs(self.name, "DS", 3600, (ds.to_text(),), ())
        return self._obs("res", self.name, "DS", (data,), cd=True)

    def _obs(self, server: str, qname: str, qtype: str, answer: tuple[RRsetObs, ...], *,
             cd: bool, started: float | None = None) -> Observation:
        auth = server.startswith("auth")
        # An authoritative server sets AA; a resolver sets RD/RA and AD unless CD was asked.
        flags = FLAG_QR | FLAG_AA if auth else FLAG_QR | FLAG_RD | FLAG_RA | (0 if cd else FLAG_AD)
        return Observation(
            server, "192.0.2.1", 53, qname, qtype, rd=not auth, cd=cd,
            started=self.now if started is None else started, outcome=Outcome.REPLY,
            rtt_ms=10.0, rcode=0, flags=flags, answer=answer,
        )


def servfail(qname: str, qtype: str, *, ede: tuple[int, ...] = (), now: float = 0.0) -> Observation:
    return Observation("res", "192.0.2.53", 53, qname, qtype, True, False, now, Outcome.REPLY,
                       rtt_ms=5.0, rcode=2, flags=FLAG_QR | FLAG_RD | FLAG_RA,
                       ede=tuple(EdeObs(c, "") for c in ede))

