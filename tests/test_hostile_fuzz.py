"""Seeded hostile-reply fuzz of the engine and CLI against fake servers on 127.0.0.1."""

# Every case is one zone (cN.fuzz.example.) with its own script: the reply to the probe's own
# question and to each follow-up (CD=1 answer, DNSKEY, DS, NS, A/AAAA at the resolver; DNSKEY and
# the record at the authoritative server) is built from validly signed data, then made hostile
# (random bytes, truncation, wrong ID/question, QR=0, duplicates, TC=1 then hostile TCP, bad EDNS,
# EDE with invalid UTF-8, compression loops, ANCOUNT=65535, other owners, CNAME loops, giant and
# KeyTrap-style RRsets, huge NS sets at non-public addresses, rich markup in names). Each request
# gets its own RNG derived from the seed, so a run replays whatever order queries arrive in.
# Judged per case: a result for every check, no hang, no `secure` unless the reply the probe took
# parses and answers the question with AD=1, bounded queries and crypto work, and no packet to
# any address but the fakes'. FUZZ_SEED=N replays a run (printed, and named in every failure);
# FUZZ_CASES=N sets the number of engine cases (default 160, each several hostile replies).

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from unittest import mock

import dns.dnssec
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.OPT import OPT
from dns.rdtypes.ANY.RRSIG import RRSIG
from fakedns import HOST, THREAD_NAME, FakeDNS, RawTcp, Reply, Request, make_auth_reply, with_id
from signedzone import Key, make_key

from probe.cli import main
from probe.codes import EDE_DNSSEC_FAILURE
from probe.engine import CheckResult, Engine, EngineConfig
from probe.resolvers import ResolverSpec
from probe.zones import ZoneSpec, parse_zones

SEED = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
N_CASES = int(os.environ.get("FUZZ_CASES") or 160)
print(f"hostile fuzz: FUZZ_SEED={SEED} FUZZ_CASES={N_CASES}", file=sys.stderr)

SUFFIX = "fuzz.example."
CASE_BOUND_S = 10.0  # one check, from the start of its sweep to its result (no hang)
SWEEP_BOUND_S = 45.0  # one whole sweep
TEST_BOUND_S = 60.0  # all sweeps of one test
MAX_QUERIES_PER_CASE = 200  # both fakes together: a reply must not multiply the probe's queries
# Crypto work per case (a work bound, not a time bound: it holds on any machine). KeyTrap
# replies here ask for 400-2300 verifications and up to 45,000 DS digests when nothing bounds it.
MAX_VERIFICATIONS_PER_CASE = 200
MAX_DS_DIGESTS_PER_CASE = 200
TIMEOUT = 0.4
NOW = time.time()
KSK, ZSK = make_key(True), make_key()
CASE_RE = re.compile(r"(c\d+)\.fuzz\.example\.?$", re.IGNORECASE)

# Addresses no reply may send the probe to (unless --allow-local-auth, and then only 127.0.0.1
# is handed out): loopback, private, link-local, special, and IPv6 forms that embed them.
HOSTILE_V4 = ["127.0.0.1", "127.0.0.2", "127.77.0.9", "10.1.2.3", "192.168.1.1", "172.16.0.1",
              "169.254.169.254", "0.0.0.0", "255.255.255.255", "224.0.0.1", "100.64.0.1",
              "198.18.0.1", "192.0.2.1", "240.0.0.1"]
HOSTILE_V6 = ["::1", "::127.0.0.1", "::127.77.0.9", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
              "64:ff9b::7f00:1", "64:ff9b::7f4d:9", "64:ff9b::a00:1", "64:ff9b:1::7f00:1",
              "2002:7f00:1::1", "2002:7f4d:9::1", "2002:a00:1::1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
              "fe80::1", "fc00::1", "fd00::53", "ff02::1", "::", "2001:db8::53", "100::1"]
MARKUP = ["[/x]", "[link=x]", "[bold]", "[/]", "[link=https://127.0.0.1/]", "[red]x[/red]"]


# -- wire helpers ------------------------------------------------------------------------------

def set_count(wire: bytes, section: int, value: int) -> bytes:
    """Patch QD/AN/NS/AR count (section 0..3) in a header."""
    at = 4 + 2 * section
    return wire[:at] + (value & 0xFFFF).to_bytes(2, "big") + wire[at + 2:]


def count(wire: bytes, section: int) -> int:
    return int.from_bytes(wire[4 + 2 * section: 6 + 2 * section], "big")


def opt_rr(options: bytes = b"", *, payload: int = 1232, ext_rcode: int = 0, version: int = 0,
           flags: int = 0x8000, rdlen: int | None = None) -> bytes:
    return (b"\x00\x00\x29" + payload.to_bytes(2, "big") + bytes([ext_rcode, version])
            + flags.to_bytes(2, "big") + (len(options) if rdlen is None else rdlen).to_bytes(2, "big")
            + options)


def option(code: int, data: bytes, *, length: int | None = None) -> bytes:
    return code.to_bytes(2, "big") + (len(data) if length is None else length).to_bytes(2, "big") + data


def ede(code: int, text: bytes = b"") -> bytes:
    return option(15, code.to_bytes(2, "big") + text)


def question_end(query: bytes) -> int:
    """Offset after the (uncompressed) question of a query the probe sent."""
    i = 12
    while query[i]:
        i += query[i] + 1
    return i + 5


def accepted(query: bytes, reply: bytes) -> bool:
    """Would a correct transport take `reply` for `query` (ID, QR=1, exactly our question)?"""
    end = question_end(query)
    return (len(reply) >= end and reply[:2] == query[:2] and bool(reply[2] & 0x80)
            and reply[4:6] == b"\x00\x01" and reply[12:end - 4].lower() == query[12:end - 4].lower()
            and reply[end - 4:end] == query[end - 4:end])


# A broken option TLV framing (an option length past the OPT RDATA, a partial option) makes a
# reply malformed here, as it does for dnspython; only option payloads are decoded leniently.
# False: the whole OPT RDATA is opaque to the judge too (framing errors tolerated).
STRICT_OPTION_FRAMING = True


def _opaque_opt(cls: Any, rdclass: Any, rdtype: Any, parser: Any, origin: Any = None) -> Any:
    parser.get_remaining()
    return cls(rdclass, rdtype, [])


def structural_parse(wire: bytes) -> dns.message.Message:
    """dnspython's full parse, EDNS option payloads taken as opaque (lenient option decoding is
    allowed; a broken message structure or OPT RR is not, nor a broken option framing while
    STRICT_OPTION_FRAMING)."""
    with mock.patch.dict(dns.edns._type_to_class, {}, clear=True):
        try:
            return dns.message.from_wire(wire, ignore_trailing=True)
        except dns.exception.FormError:
            if STRICT_OPTION_FRAMING:
                raise
        with mock.patch.object(OPT, "from_wire_parser", classmethod(_opaque_opt)):
            return dns.message.from_wire(wire, ignore_trailing=True)


def answers_qname(msg: dns.message.Message, qname: dns.name.Name, rdtype: int) -> bool:
    """An RRset of the asked type owned by qname, directly or through a CNAME chain in the reply."""
    name, seen = qname, set()
    while name not in seen and len(seen) < 16:
        seen.add(name)
        if any(r.name == name and r.rdtype == rdtype for r in msg.answer):
            return True
        nxt = [r for r in msg.answer if r.name == name and r.rdtype == dns.rdatatype.CNAME]
        if not nxt:
            return False
        name = nxt[0][0].target
    return False


def dnssec_ede(msg: dns.message.Message) -> bool:
    codes = set()
    for o in msg.options:
        if int(o.otype) == 15:
            data = o.to_wire() or b""
            if len(data) >= 2:
                codes.add(int.from_bytes(data[:2], "big"))
    return bool(codes & set(EDE_DNSSEC_FAILURE))


# -- signed data -------------------------------------------------------------------------------

def rrs(name: str | dns.name.Name, rdtype: str, texts: Sequence[str], ttl: int = 300) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, ttl, "IN", rdtype, list(texts))


def signed(rrset: dns.rrset.RRset, zone: str, key: Key = ZSK, *,
           expired: bool = False) -> list[dns.rrset.RRset]:
    sig = dns.dnssec.sign(rrset, key.private, dns.name.from_text(zone), key.dnskey,
                          inception=NOW - (20 * 86400 if expired else 3600),
                          expiration=NOW - (10 * 86400 if expired else -86400))
    return [rrset, dns.rrset.from_rdata(rrset.name, rrset.ttl, sig)]


def colliding_rsa_keys(rng: random.Random, n: int, *, big: bool = False) -> list[DNSKEY]:
    """`n` distinct RSA DNSKEYs with one key tag (KeyTrap): exponent 01 AAAA BBBB R 01 with A + B
    and R fixed keeps the key-tag checksum (RFC 4034 App. B) the same; every one is a usable
    key. `big`: a ~2000-bit exponent, so each failed verification costs about a millisecond."""
    modulus = (rng.getrandbits(2048) | (1 << 2047) | 1).to_bytes(256, "big")
    total = rng.randrange(2000, 60000)
    middle = rng.randbytes(244) if big else b""
    out = []
    for a in rng.sample(range(total), n):
        exp = b"\x01" + a.to_bytes(2, "big") + (total - a).to_bytes(2, "big") + middle + b"\x01"
        out.append(DNSKEY(dns.rdataclass.IN, dns.rdatatype.DNSKEY, 256, 3, 8,
                          bytes([len(exp)]) + exp + modulus))
    return out


def fake_sigs(rng: random.Random, rrset: dns.rrset.RRset, zone: str, tag: int,
              n: int) -> dns.rrset.RRset:
    """`n` RRSIGs over `rrset` by key tag `tag` (RSASHA256) that verify under no key."""
    sigs = [RRSIG(dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype, 8,
                  len(rrset.name) - 1, rrset.ttl, int(NOW + 86400), int(NOW - 3600), tag,
                  dns.name.from_text(zone), rng.randbytes(256)) for _ in range(n)]
    return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, sigs)


# -- the cases ---------------------------------------------------------------------------------

MAIN_CONTENT = {"secure": 30, "servfail": 22, "servfail_bad_edns": 8, "other_owner": 7,
                "cname_loop": 4, "cname_ok": 2, "giant": 3, "nxdomain_ad": 2, "nodata_ad": 2,
                "markup": 5, "odd_rcode": 3, "no_edns": 2, "not_ad": 2}
# Mutations of a reply that the transport must drop: the check then times out.
DROPPED = {"silent", "random", "wrong_id", "qr0", "wrong_question", "wrong_type", "no_question"}
MUTATIONS = {
    "valid": 30, "silent": 1, "random": 2, "random_tail": 4, "truncate": 5, "bitflip": 4,
    "wrong_id": 1, "qr0": 1, "wrong_question": 1, "wrong_type": 1, "no_question": 1,
    "wrong_id_then_valid": 2, "qr0_then_valid": 2, "case_0x20": 2, "dup": 2,
    "mutant_then_valid": 4, "tc": 6, "ancount_max": 4, "counts_random": 2, "arcount_extra": 2,
    "multi_opt": 3, "opt_not_last": 2, "opt_in_answer": 3, "opt_in_authority": 2,
    "bad_opt_len": 3, "opt_rdlen_long": 2, "ext_rcode": 2, "opt_version": 1, "trailing": 2,
    "compression_loop": 4, "pointer_pair": 2, "forward_pointer": 3, "pointer_past_end": 3,
}
TCP_MUTATIONS = ["valid", "valid", "random", "raw_garbage", "raw_short", "wrong_id",
                 "wrong_id_then_valid", "truncate", "ancount_max", "silent", "compression_loop",
                 "dup", "tc_again", "multi_opt"]
THEMES = ["plain", "bytes", "bytes", "keytrap", "many_ds", "huge_ns", "hostile_addrs",
          "markup_ns", "cd_other_owner", "servfail_cd", "expired", "tc_tcp"]


def weighted(rng: random.Random, table: dict[str, int]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


@dataclass
class Case:
    """One zone and how everything about it is answered."""

    index: int
    mode: str  # "strict" (discovered, local not allowed) | "pinned" (ns= in zones) | "local"
    rng: random.Random = field(repr=False)
    zone_prefix: str = ""  # e.g. markup in the zone name (CLI table cases)
    label: str = ""
    answering: bool = False  # the main reply is never one the transport drops (CLI lanes)

    def __post_init__(self) -> None:
        rng = self.rng
        self.zone = f"{self.zone_prefix}c{self.index}.{SUFFIX}"
        self.qtype = rng.choice(["SOA", "PTR"])
        self.qname = self.zone if self.qtype == "SOA" else f"h.{self.zone}"
        self.theme = rng.choice(THEMES)
        muts = {k: v for k, v in MUTATIONS.items() if not (self.answering and k in DROPPED)}
        if self.theme not in ("plain", "bytes") and rng.random() < 0.7:
            # The theme is about the follow-ups: a SERVFAIL that arrives starts the diagnosis.
            self.main = rng.choice(["servfail", "servfail", "servfail", "servfail_bad_edns"])
            self.main_mut = rng.choice(["valid", "valid", "dup", "wrong_id_then_valid", "tc",
                                        "case_0x20"])
        else:
            self.main = weighted(rng, MAIN_CONTENT)
            self.main_mut = weighted(rng, muts)
        self.n_ns = rng.choice([2, 40, 300, 1200]) if self.theme == "huge_ns" else 2
        self.n_keys = rng.randrange(20, 48)
        self.n_sigs = rng.randrange(20, 48)
        self.seed = rng.randrange(1 << 30)

    def describe(self) -> str:
        return (f"case {self.index} [{self.mode} main={self.main}/{self.main_mut} "
                f"theme={self.theme} {self.qname} {self.qtype}]")

    def zone_line(self, auth_port: int) -> str:
        parts = [self.zone]
        if self.qtype == "PTR":
            parts.append("h")
        if self.mode == "pinned":
            parts.append(f"ns={HOST}:{auth_port}")
        if self.label:
            parts.append(f"label={self.label}")
        return " ".join(parts)

    # -- data (built once per case, on the fake's thread) ------------------------------------

    @cached_property
    def keytrap_keys(self) -> list[DNSKEY]:
        if self.theme == "keytrap":
            return colliding_rsa_keys(random.Random(self.seed), self.n_keys, big=True)
        return colliding_rsa_keys(random.Random(self.seed), 180)

    @property
    def trap_tag(self) -> int:
        return dns.dnssec.key_id(self.keytrap_keys[0])

    def data(self, owner: str, rdtype: str) -> dns.rrset.RRset:
        if rdtype == "SOA":
            return rrs(owner, "SOA", [f"ns1.{self.zone} hostmaster.{self.zone} 1 3600 600 86400 60"])
        return rrs(owner, rdtype, ["host.example."])

    def dnskey_rrsets(self, *, expired: bool = False) -> list[dns.rrset.RRset]:
        keys = [KSK.dnskey, ZSK.dnskey]
        if self.theme in ("keytrap", "many_ds"):
            keys += self.keytrap_keys
        rrset = dns.rrset.from_rdata_list(self.zone, 3600, keys)
        out = signed(rrset, self.zone, KSK, expired=expired)
        if self.theme == "keytrap":
            out.append(fake_sigs(random.Random(self.seed + 1), rrset, self.zone, self.trap_tag,
                                 self.n_sigs))
        return out

    def answer_rrsets(self, rng: random.Random, *, auth: bool) -> list[dns.rrset.RRset]:
        rrset = self.data(self.qname, self.qtype)
        out = signed(rrset, self.zone, expired=auth and self.theme == "expired")
        if self.theme == "keytrap":
            out.append(fake_sigs(rng, rrset, self.zone, self.trap_tag, self.n_sigs))
        return out

    def ns_names(self) -> list[str]:
        if self.theme == "markup_ns":
            return [f"{m}ns{k}.{self.zone}" for k, m in enumerate(MARKUP)]
        return [f"ns{k}.{self.zone}" for k in range(self.n_ns)]


@dataclass
class Content:
    rcode: int = 0
    ad: bool = False
    aa: bool = False
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    options: bytes = b""
    edns: bool = True


def main_content(case: Case, rng: random.Random) -> Content:
    z, qn, qt = case.zone, case.qname, case.qtype
    kind = case.main
    soa = signed(case.data(z, "SOA"), z)
    if kind in ("secure", "no_edns", "not_ad"):
        return Content(ad=kind != "not_ad", answer=case.answer_rrsets(rng, auth=False),
                       edns=kind != "no_edns")
    if kind == "servfail":
        opts = rng.choice([b"", ede(6, b"signature verification failed"), ede(9), ede(7, b"x"),
                           ede(10) + ede(6), ede(3, b"stale"), ede(22)])
        return Content(rcode=2, options=opts)
    if kind == "servfail_bad_edns":
        bad = [ede(6, b"\xff\xfe\xc3("), ede(9, b"\xed\xa0\x80"), option(10, b"\x01\x02\x03"),
               option(8, b"\x00\x07\x40"), option(10, b""), option(12, b"\x00" * 3), ede(6)[:5]]
        opts = b"".join(rng.sample(bad, rng.randrange(1, 4)))
        if not opts.startswith(b"\x00\x0f"):
            opts += ede(rng.choice([6, 7, 9, 10]), rng.choice([b"", b"\xff", b"ok"]))
        return Content(rcode=2, options=opts)
    if kind == "other_owner":
        other = rng.choice([f"other.{z}", "evil.example.", f"{rng.choice(MARKUP)}.{z}", z
                            if qn != z else f"h.{z}"])
        return Content(ad=True, answer=signed(case.data(other, qt), z))
    if kind == "cname_loop":
        a = f"loop.{z}"
        return Content(ad=True, answer=signed(rrs(qn, "CNAME", [a]), z)
                       + signed(rrs(a, "CNAME", [qn]), z))
    if kind == "cname_ok":
        t = f"target.{z}"
        return Content(ad=True, answer=signed(rrs(qn, "CNAME", [t]), z)
                       + signed(case.data(t, qt), z))
    if kind == "giant":
        n = rng.choice([200, 1500 if qt == "PTR" else 1000])
        texts = ([f"h{k}.example." for k in range(n)] if qt == "PTR" else
                 [f"ns1.{z} h.{z} {k} 3600 600 86400 60" for k in range(n)])
        return Content(ad=True, answer=signed(rrs(qn, qt, texts), z))
    if kind == "nxdomain_ad":
        return Content(rcode=3, ad=True, authority=soa)
    if kind == "nodata_ad":
        return Content(ad=True, authority=soa)
    if kind == "markup":
        m = rng.choice(MARKUP)
        return Content(ad=True, answer=case.answer_rrsets(rng, auth=False),
                       authority=[rrs(z, "NS", [f"{m}.{z}"])],
                       additional=[rrs(f"{m}.{z}", "A", ["127.0.0.2"])])
    # odd_rcode
    return Content(rcode=rng.choice([1, 4, 5, 6, 9, 15]), ad=rng.random() < 0.5,
                   answer=case.answer_rrsets(rng, auth=False) if rng.random() < 0.5 else [])


def follow_content(case: Case, kind: str, rdtype: str, name: dns.name.Name,
                   rng: random.Random) -> Content:
    z, theme = case.zone, case.theme
    if kind == "cd":
        if theme == "servfail_cd":
            return Content(rcode=2, options=ede(6))
        if theme == "cd_other_owner":
            return Content(answer=signed(case.data(f"other.{z}", case.qtype), z))
        return Content(answer=case.answer_rrsets(rng, auth=False))
    if kind == "dnskey":
        return Content(answer=case.dnskey_rrsets())
    if kind == "ds":
        ds = [dns.dnssec.make_ds(z, KSK.dnskey, "SHA256")]
        if theme == "many_ds":
            tag = case.trap_tag
            ds += [DS(dns.rdataclass.IN, dns.rdatatype.DS, tag, 8, 2, rng.randbytes(32))
                   for _ in range(250)]
        return Content(answer=[dns.rrset.from_rdata_list(z, 3600, ds)])
    if kind == "ns":
        return Content(answer=signed(rrs(z, "NS", case.ns_names()), z))
    if kind == "addr":
        if case.mode == "local":
            return Content(answer=[rrs(name, "A", ["127.0.0.1"])] if rdtype == "A" else [])
        pool = HOSTILE_V4 if rdtype == "A" else HOSTILE_V6
        return Content(answer=[rrs(name, rdtype, rng.sample(pool, rng.randrange(1, 6)))])
    if kind == "auth-dnskey":
        return Content(aa=True, answer=case.dnskey_rrsets(expired=theme == "expired"))
    if kind == "auth-answer":
        return Content(aa=True, answer=case.answer_rrsets(rng, auth=True))
    return Content(rcode=5)


# -- reply wire: a valid message, then the mutation ------------------------------------------

def build(query: bytes, c: Content, *, role: str) -> tuple[bytes, bytes]:
    """(wire without OPT, wire with the OPT last); OPT and options are written by hand so that
    options dnspython would refuse to build (bad UTF-8, bad lengths) can be sent."""
    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    r.use_edns(False)
    r.set_rcode(dns.rcode.Rcode(c.rcode))
    r.flags &= ~(dns.flags.AD | dns.flags.RA | dns.flags.AA)
    if role == "resolver":
        r.flags |= dns.flags.RA | (dns.flags.AD if c.ad else 0)
    if c.aa:
        r.flags |= dns.flags.AA
    r.answer.extend(c.answer)
    r.authority.extend(c.authority)
    r.additional.extend(c.additional)
    bare = r.to_wire(max_size=65535)
    if not c.edns:
        return bare, bare
    return bare, set_count(bare + opt_rr(c.options), 3, count(bare, 3) + 1)


def bad_name_reply(query: bytes, rng: random.Random, how: str) -> bytes:
    """A NOERROR/AD=1 reply whose answer owner is a broken compression pointer, OPT last."""
    end = question_end(query)
    head = query[:2] + b"\x81\xa0" + b"\x00\x01\x00\x01\x00\x00\x00\x01" + query[12:end]
    here = len(head)
    if how == "compression_loop":
        owner = bytes([0xC0 | here >> 8, here & 0xFF])
    elif how == "pointer_pair":
        owner = b"\x01a" + bytes([0xC0 | (here + 4) >> 8, (here + 4) & 0xFF]) + \
            bytes([0xC0 | here >> 8, here & 0xFF])
    elif how == "forward_pointer":
        to = here + 16
        owner = bytes([0xC0 | to >> 8, to & 0xFF])
    else:  # pointer_past_end
        to = rng.randrange(here + 40, 0x3FFF)
        owner = bytes([0xC0 | to >> 8, to & 0xFF])
    rr = owner + query[end - 4:end - 2] + b"\x00\x01\x00\x00\x01\x2c\x00\x06\x03abc\xc0\x0c"
    return head + rr + opt_rr()


def mutate(how: str, query: bytes, bare: bytes, wire: bytes, rng: random.Random) -> list[Reply]:
    qid = int.from_bytes(query[:2], "big")
    end = question_end(query)
    if how == "valid":
        return [wire]
    if how == "silent":
        return []
    if how == "random":
        return [rng.randbytes(rng.randrange(0, 600))]
    if how == "random_tail":
        head = bytearray(wire[:end])
        head[3] = rng.randrange(256) | 0x20
        for s in (1, 2, 3):
            head[4 + 2 * s: 6 + 2 * s] = rng.randrange(0, 8).to_bytes(2, "big")
        return [bytes(head) + rng.randbytes(rng.randrange(0, 600))]
    if how == "truncate":
        return [wire[:rng.randrange(end, len(wire))] if len(wire) > end else wire[:12]]
    if how == "bitflip":
        b = bytearray(wire)
        for _ in range(rng.randrange(1, 8)):
            if len(b) > end:
                i = rng.randrange(end, len(b))
                b[i] ^= 1 << rng.randrange(8)
        return [bytes(b)]
    if how == "wrong_id":
        return [with_id(wire, qid ^ rng.randrange(1, 1 << 16))]
    if how == "qr0":
        return [wire[:2] + bytes([wire[2] & 0x7F]) + wire[3:]]
    if how == "wrong_question":
        other = dns.name.from_text(f"x{rng.randrange(1000)}.evil.example.").to_wire() or b""
        return [wire[:12] + other + wire[end - 4:]]
    if how == "wrong_type":
        return [wire[:end - 4] + b"\x00\x10" + wire[end - 2:]]
    if how == "no_question":
        return [set_count(wire[:12], 0, 0) + wire[end:]]
    if how in ("wrong_id_then_valid", "qr0_then_valid"):
        return [*mutate(how.removesuffix("_then_valid"), query, bare, wire, rng), wire]
    if how == "case_0x20":
        name = bytes(c ^ 0x20 if 97 <= c <= 122 and rng.random() < 0.5 else c
                     for c in wire[12:end - 4])
        return [wire[:12] + name + wire[end - 4:]]
    if how == "dup":
        return [wire, wire]
    if how == "mutant_then_valid":
        first = rng.choice(["truncate", "ancount_max", "compression_loop", "multi_opt"])
        return [*mutate(first, query, bare, wire, rng), wire]
    if how == "tc":
        return [bytes([wire[0], wire[1], wire[2] | 0x02]) + wire[3:]]
    if how == "ancount_max":
        return [set_count(wire, 1, 0xFFFF)]
    if how == "counts_random":
        w = wire
        for s in (1, 2, 3):
            w = set_count(w, s, rng.randrange(0, 1 << 16))
        return [w]
    if how == "arcount_extra":
        return [set_count(wire, 3, count(wire, 3) + rng.randrange(1, 4))]
    if how == "multi_opt":
        return [set_count(bare + opt_rr() + opt_rr(ede(6)), 3, count(bare, 3) + 2)]
    if how == "opt_not_last":
        extra = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\x7f\x00\x00\x02"
        return [set_count(bare + opt_rr() + extra, 3, count(bare, 3) + 2)]
    if how in ("opt_in_answer", "opt_in_authority"):
        section = 1 if how == "opt_in_answer" else 2
        if any(count(bare, s) for s in range(section + 1, 4)):
            return mutate("multi_opt", query, bare, wire, rng)
        w = set_count(bare + opt_rr(), section, count(bare, section) + 1)
        return [set_count(w + opt_rr(), 3, 1)]
    if how == "bad_opt_len":
        opts = rng.choice([option(15, b"\x00\x06abc", length=200), option(10, b"\x01", length=9),
                           ede(6) + b"\x00"])
        return [set_count(bare + opt_rr(opts), 3, count(bare, 3) + 1)]
    if how == "opt_rdlen_long":
        return [set_count(bare + opt_rr(ede(6), rdlen=rng.randrange(7, 400)), 3, count(bare, 3) + 1)]
    if how == "ext_rcode":
        return [set_count(bare + opt_rr(ext_rcode=rng.randrange(1, 256)), 3, count(bare, 3) + 1)]
    if how == "opt_version":
        return [set_count(bare + opt_rr(version=1), 3, count(bare, 3) + 1)]
    if how == "trailing":
        return [wire + rng.randbytes(rng.randrange(1, 40))]
    if how in ("compression_loop", "pointer_pair", "forward_pointer", "pointer_past_end"):
        return [bad_name_reply(query, rng, how)]
    raise AssertionError(f"unknown mutation {how}")


def mutate_tcp(how: str, query: bytes, bare: bytes, wire: bytes, rng: random.Random) -> list[Reply]:
    if how == "raw_garbage":
        return [RawTcp(rng.randbytes(rng.randrange(1, 300)))]
    if how == "raw_short":  # a length prefix promising more than ever comes
        return [RawTcp(b"\xff\xf0" + wire[:rng.randrange(0, len(wire))])]
    if how == "tc_again":
        return mutate("tc", query, bare, wire, rng)
    return mutate(how, query, bare, wire, rng)


# -- the scripted servers ----------------------------------------------------------------------

class Script:
    """Answers for both fakes; records nothing itself (each Request keeps its replies)."""

    def __init__(self, cases: Sequence[Case]) -> None:
        self.cases = {f"c{c.index}": c for c in cases}
        self._seen: Counter[tuple[Any, ...]] = Counter()
        self._lock = threading.Lock()

    def case_for(self, name: dns.name.Name) -> Case | None:
        m = CASE_RE.search(name.to_text())
        return self.cases.get(m.group(1).lower()) if m else None

    def kind(self, case: Case, q: dns.message.Message, role: str) -> str:
        name, rdtype = q.question[0].name, q.question[0].rdtype
        zone, qname = dns.name.from_text(case.zone), dns.name.from_text(case.qname)
        cd = bool(q.flags & dns.flags.CD)
        if role == "auth":
            if name == zone and rdtype == dns.rdatatype.DNSKEY:
                return "auth-dnskey"
            if name == qname and dns.rdatatype.to_text(rdtype) == case.qtype:
                return "auth-answer"
            return "other"
        if name == qname and dns.rdatatype.to_text(rdtype) == case.qtype:
            return "cd" if cd else "main"
        if name == zone and rdtype in (dns.rdatatype.DNSKEY, dns.rdatatype.DS, dns.rdatatype.NS):
            return dns.rdatatype.to_text(rdtype).lower()
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            return "addr"
        return "other"

    def answer(self, req: Request, role: str) -> list[Reply] | None:
        q = req.message
        case = self.case_for(q.question[0].name)
        if case is None:
            return None
        kind = self.kind(case, q, role)
        if kind == "other" and role == "auth":
            return [make_auth_reply(q, rcode=dns.rcode.REFUSED, aa=False)]  # a lame server
        rdtype = dns.rdatatype.to_text(q.question[0].rdtype)
        key = (case.index, role, kind, q.question[0].name.to_text().lower(), rdtype,
               bool(q.flags & dns.flags.CD), req.transport)
        with self._lock:
            self._seen[key] += 1
            n = self._seen[key]
        rng = random.Random(f"{SEED}/{'/'.join(map(str, key))}/{n}")
        if kind == "main":
            content = main_content(case, rng)
        else:
            content = follow_content(case, kind, rdtype, q.question[0].name, rng)
        bare, wire = build(req.wire, content, role=role)
        if req.transport == "tcp":
            return mutate_tcp(rng.choice(TCP_MUTATIONS), req.wire, bare, wire, rng)
        if kind == "main":
            how = case.main_mut
        elif kind == "other":
            how = "valid"
        else:
            byte_level = case.theme == "bytes" or (case.theme == "tc_tcp" and rng.random() < 0.7)
            how = ("tc" if case.theme == "tc_tcp" else weighted(rng, MUTATIONS)) if byte_level \
                else ("valid" if rng.random() < 0.85 else weighted(rng, MUTATIONS))
            if kind == "addr" and how in ("bitflip", "random_tail"):
                how = "truncate"  # flipped address bits could name a public host
        return mutate(how, req.wire, bare, wire, rng)

    def resolver(self, req: Request) -> list[Reply] | None:
        return self.answer(req, "resolver")

    def auth(self, req: Request) -> list[Reply] | None:
        return self.answer(req, "auth")


# -- the send guard: every packet the probe sends, recorded and confined to the fakes ---------

class SendGuard:
    """Wraps socket connect/sendto (the transport's only ways out): records each (host, port)
    the probe sends to; anything not allowed is refused before a packet leaves (no route), and
    `redirect` maps an allowed address (127.0.0.1:53 learnt from DNS) onto a fake."""

    def __init__(self, allowed: set[tuple[str, int]],
                 redirect: dict[tuple[str, int], tuple[str, int]]) -> None:
        self.allowed = allowed | set(redirect)
        self.redirect = redirect
        self.seen: list[tuple[str, int]] = []
        self.refused: list[tuple[str, int]] = []

    def route(self, sock: socket.socket, address: Any) -> Any:
        if (sock.family not in (socket.AF_INET, socket.AF_INET6)
                or threading.current_thread().name == THREAD_NAME):
            return address
        key = (str(address[0]), int(address[1]))
        self.seen.append(key)
        if key not in self.allowed:
            self.refused.append(key)
            raise OSError(errno.ENETUNREACH, f"fuzz test: {key} is not an allowed address")
        to = self.redirect.get(key)
        return address if to is None else (*to, *address[2:])

    @contextmanager
    def installed(self) -> Iterator[SendGuard]:
        real_connect, real_sendto = socket.socket.connect, socket.socket.sendto
        guard = self

        def connect(sock: socket.socket, address: Any) -> None:
            real_connect(sock, guard.route(sock, address))

        def sendto(sock: socket.socket, data: Any, *args: Any) -> int:
            return real_sendto(sock, data, *args[:-1], guard.route(sock, args[-1]))  # type: ignore[call-overload, no-any-return]

        with mock.patch.object(socket.socket, "connect", connect), \
                mock.patch.object(socket.socket, "sendto", sendto):
            yield self


class WorkMeter:
    """Counts signature verifications and DS digests the probe computes, per case (found from
    the signer or zone name in the data): wraps dnspython's per-key verification and make_ds."""

    NAME = re.compile(rb"[\x02-\x07](c\d+)\x04fuzz\x07example\x00", re.IGNORECASE)

    def __init__(self) -> None:
        self.verifications: Counter[str] = Counter()
        self.digests: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[WorkMeter]:
        # dnspython's one-signature-one-key step (private, hence looked up with getattr).
        real_verify = getattr(dns.dnssec, "_validate_signature", None)
        real_make_ds = dns.dnssec.make_ds
        meter = self

        def verify(sig: bytes, data: bytes, key: DNSKEY) -> None:
            m = meter.NAME.search(data)
            with meter._lock:
                meter.verifications[m.group(1).decode().lower() if m else "?"] += 1
            assert real_verify is not None
            real_verify(sig, data, key)

        def make_ds(name: Any, key: Any, algorithm: Any, *args: Any, **kw: Any) -> DS:
            if threading.current_thread().name != THREAD_NAME:
                m = CASE_RE.search(str(name))
                with meter._lock:
                    meter.digests[m.group(1).lower() if m else "?"] += 1
            return real_make_ds(name, key, algorithm, *args, **kw)

        with contextlib.ExitStack() as stack:
            if real_verify is not None:
                stack.enter_context(mock.patch.object(dns.dnssec, "_validate_signature", verify))
            stack.enter_context(mock.patch.object(dns.dnssec, "make_ds", make_ds))
            yield self


# -- running and judging -----------------------------------------------------------------------

def make_cases(start: int, n: int, mode: Callable[[random.Random], str], **kw: Any) -> list[Case]:
    out = []
    for i in range(start, start + n):
        rng = random.Random(f"{SEED}/case/{i}")
        out.append(Case(i, mode(rng), rng, **kw))
    return out


@dataclass
class Graded:
    """What the probe said about one case (from the engine or the CLI's JSON)."""

    zone: str
    verdict: str
    reason: str
    elapsed: float | None = None


def taken(reqs: list[tuple[str, Request]], qname: dns.name.Name, rdtype: int, *,
          cd: bool) -> list[bytes]:
    """The replies the probe went on with for its question (CD as given): per attempt, the first
    one a correct transport accepts (not TC=1 over UDP: that one sends it to TCP)."""
    out = []
    for role, req in reqs:
        m = req.message
        if (role != "resolver" or m.question[0].name != qname or m.question[0].rdtype != rdtype
                or bool(m.flags & dns.flags.CD) != cd):
            continue
        first = next((r for r in req.replies if accepted(req.wire, r)), None)
        if first is not None and (req.transport == "tcp" or not first[2] & 0x02):
            out.append(first)
    return out


def parsed(wires: list[bytes]) -> list[dns.message.Message]:
    out = []
    for w in wires:
        try:
            out.append(structural_parse(w))
        except (dns.exception.DNSException, ValueError, UnicodeError):
            continue
    return out


def judge(cases: Sequence[Case], verdicts: Sequence[Graded], res: FakeDNS, auth: FakeDNS,
          guard: SendGuard, work: WorkMeter) -> tuple[list[str], Counter[str]]:
    """Every failed property, one line each; and a tally of verdicts."""
    problems: list[str] = []
    tally: Counter[str] = Counter(f"{v.verdict}/{v.reason}" for v in verdicts)
    by_zone = {c.zone: c for c in cases}
    got = Counter(v.zone for v in verdicts)
    for c in cases:
        if got[c.zone] != 1:
            problems.append(f"{c.describe()}: {got[c.zone]} results instead of 1")
    requests: dict[int, list[tuple[str, Request]]] = {}
    script = Script(cases)
    for role, srv in (("resolver", res), ("auth", auth)):
        for req in srv.requests:
            case = script.case_for(req.message.question[0].name)
            if case is not None:
                requests.setdefault(case.index, []).append((role, req))
    for v in verdicts:
        c = by_zone[v.zone]
        reqs = requests.get(c.index, [])
        qname = dns.name.from_text(c.qname)
        rdtype = dns.rdatatype.from_text(c.qtype)

        if v.elapsed is not None and v.elapsed > CASE_BOUND_S:
            problems.append(f"{c.describe()}: result after {v.elapsed:.1f} s (bound {CASE_BOUND_S} s)")
        main = parsed(taken(reqs, qname, rdtype, cd=False))
        if v.verdict == "secure":
            ok = [m for m in main if m.flags & dns.flags.AD and (
                (m.rcode() == 0 and answers_qname(m, qname, rdtype))
                or (v.reason in ("ad-denial", "stale-answer", "not-a-zone-apex")  # denials
                    and (m.rcode() == 3 or (m.rcode() == 0 and not m.answer))))]
            if not ok:
                why = ("no reply it got fully parses" if not main else
                       "no reply it got has AD=1, NOERROR and an answer for the qname")
                problems.append(f"{c.describe()}: graded secure ({v.reason}) but {why}")
        if v.reason == "cd-data":
            cd = [m for m in parsed(taken(reqs, qname, rdtype, cd=True))
                  if m.rcode() == 0 and answers_qname(m, qname, rdtype)]
            if not cd:
                problems.append(f"{c.describe()}: bogus/cd-data but no CD=1 reply holds data for "
                                f"{c.qname} {c.qtype}")
        if v.verdict not in ("bogus", "timeout") and any(
                m.rcode() == 2 and dnssec_ede(m) for m in main):
            problems.append(f"{c.describe()}: SERVFAIL with a DNSSEC EDE graded {v.verdict}/"
                            f"{v.reason}, not bogus")
        label = f"c{c.index}"
        if work.verifications[label] > MAX_VERIFICATIONS_PER_CASE:
            problems.append(f"{c.describe()}: {work.verifications[label]} signature verifications "
                            f"(bound {MAX_VERIFICATIONS_PER_CASE})")
        if work.digests[label] > MAX_DS_DIGESTS_PER_CASE:
            problems.append(f"{c.describe()}: {work.digests[label]} DS digests computed "
                            f"(bound {MAX_DS_DIGESTS_PER_CASE})")
        if len(reqs) > MAX_QUERIES_PER_CASE:
            problems.append(f"{c.describe()}: {len(reqs)} queries for one zone "
                            f"(bound {MAX_QUERIES_PER_CASE})")
    tally["replies sent"] = sum(len(r.replies) for srv in (res, auth) for r in srv.requests)
    tally["queries to the fake authoritative"] = len(auth.requests)
    tally["probe source ports seen by the fake resolver"] = len({r.peer for r in res.requests})
    for addr in sorted(set(guard.refused)):
        problems.append(f"packet to {addr[0]} port {addr[1]}: not a fake server "
                        f"({guard.refused.count(addr)} times)")
    return problems, tally


PROBLEM_KINDS = {"but no reply it got fully parses": "secure-but-malformed",
                 "but no reply it got has": "secure-without-answer-for-qname",
                 "no CD=1 reply holds data": "cd-data-without-data",
                 "DNSSEC EDE graded": "dnssec-ede-not-bogus", "packet to": "stray-packet",
                 "result after": "slow-check", "queries for one zone": "query-fan-out",
                 "results instead of 1": "missing-result", "signature verifications": "keytrap-work",
                 "DS digests": "ds-digest-work", "event loop error": "loop-error"}


def report(what: str, problems: list[str], tally: Counter[str], cases: Sequence[Case]) -> None:
    print(f"{what}: FUZZ_SEED={SEED}, {len(cases)} cases: {dict(tally.most_common())}")
    if problems:
        kinds = Counter(next((k for s, k in PROBLEM_KINDS.items() if s in p), "other")
                        for p in problems)
        shown = "\n".join(problems[:40])
        more = f"\n... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise AssertionError(f"{what}: {len(problems)} problem(s) {dict(kinds)} "
                             f"(replay with FUZZ_SEED={SEED}):\n{shown}{more}")


@contextmanager
def fakes(cases: Sequence[Case], *, local: bool
          ) -> Iterator[tuple[FakeDNS, FakeDNS, SendGuard, WorkMeter]]:
    script = Script(cases)
    with FakeDNS(script.resolver, script.resolver) as res, FakeDNS(script.auth, script.auth) as auth:
        allowed = {(HOST, res.port), (HOST, auth.port)}
        redirect = {(HOST, 53): (HOST, auth.port)} if local else {}
        with SendGuard(allowed, redirect).installed() as guard, WorkMeter().installed() as work:
            yield res, auth, guard, work


async def engine_sweep(cases: Sequence[Case], *, local: bool, retries: int
                       ) -> tuple[list[str], Counter[str]]:
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    done: dict[str, float] = {}
    try:
        with fakes(cases, local=local) as (res, auth, guard, work):
            zones: list[ZoneSpec] = parse_zones([c.zone_line(auth.port) for c in cases], path="fuzz")
            cfg = EngineConfig(qps=0, timeout=TIMEOUT, retries=retries, per_resolver=len(cases),
                               dead_after=1 << 20, allow_local_auth=local)
            start = time.monotonic()

            def progress(r: CheckResult) -> None:
                done[r.zone.name] = time.monotonic() - start

            try:
                results = await asyncio.wait_for(
                    Engine(cfg).sweep(zones, [ResolverSpec("fuzz", HOST, res.port)],
                                      progress=progress), SWEEP_BOUND_S)
            except Exception as exc:
                raise AssertionError(f"the sweep raised {exc!r} (FUZZ_SEED={SEED})") from exc
            await asyncio.sleep(0.05)  # late callbacks (stray replies) have run
        verdicts = [Graded(r.zone.name, r.classification.verdict.value, r.classification.reason,
                            done.get(r.zone.name)) for r in results]
        problems, tally = judge(cases, verdicts, res, auth, guard, work)
    finally:
        loop.set_exception_handler(old_handler)
    problems += [f"event loop error: {ctx.get('message')}: {ctx.get('exception')!r}"
                 for ctx in loop_errors]
    slowest = max(done.items(), key=lambda kv: kv[1], default=("-", 0.0))
    tally[f"slowest check {slowest[1]:.1f} s ({slowest[0]})"] = 1
    return problems, tally


def test_seed_is_reproducible() -> None:
    """The same seed makes the same cases and the same replies (so FUZZ_SEED replays a run)."""
    a, b = make_cases(0, 30, lambda r: "strict"), make_cases(0, 30, lambda r: "strict")
    assert [x.describe() for x in a] == [x.describe() for x in b]
    q = dns.message.make_query(a[0].qname, a[0].qtype, want_dnssec=True).to_wire()
    replies = []
    for _ in range(2):
        script = Script(a)
        req = Request(q, "udp", 0, None, lambda _d: None)  # type: ignore[arg-type]
        replies.append(script.answer(req, "resolver"))
    assert replies[0] == replies[1]


def test_oracle_rejects_what_it_must() -> None:
    """The judge itself: a compression loop does not parse, another owner is no answer, a CNAME
    loop is no answer, EDE with invalid UTF-8 is still read as a DNSSEC EDE."""
    case = make_cases(0, 1, lambda r: "strict")[0]
    q = dns.message.make_query(case.qname, case.qtype, want_dnssec=True)
    q.id = 4242
    query = q.to_wire()
    rng = random.Random(1)
    qname, rdtype = dns.name.from_text(case.qname), dns.rdatatype.from_text(case.qtype)
    for how in ("compression_loop", "pointer_pair", "forward_pointer", "ancount_max", "multi_opt",
                "opt_in_answer"):
        bare, wire = build(query, Content(ad=True, answer=case.answer_rrsets(rng, auth=False)),
                           role="resolver")
        (bad,) = mutate(how, query, bare, wire, rng)
        assert isinstance(bad, bytes) and accepted(query, bad)
        with pytest.raises(dns.exception.DNSException):
            structural_parse(bad)
    good = structural_parse(build(query, Content(ad=True, answer=case.answer_rrsets(rng, auth=False)),
                                  role="resolver")[1])
    assert answers_qname(good, qname, rdtype)
    case.main = "other_owner"
    other = structural_parse(build(query, main_content(case, rng), role="resolver")[1])
    assert not answers_qname(other, qname, rdtype)
    case.main = "cname_loop"
    loop = structural_parse(build(query, main_content(case, rng), role="resolver")[1])
    assert not answers_qname(loop, qname, rdtype)
    sf = structural_parse(build(query, Content(rcode=2, options=ede(6, b"\xff\xfe")),
                                role="resolver")[1])
    assert dnssec_ede(sf)
    for big in (False, True):
        keys = colliding_rsa_keys(rng, 5, big=big)
        assert len({dns.dnssec.key_id(k) for k in keys}) == 1 and len(set(keys)) == 5


async def test_engine_fuzz_strict_and_pinned() -> None:
    """Discovered servers at non-public addresses (not allowed) and pinned ns= servers."""
    n = max(1, N_CASES * 5 // 8)
    problems: list[str] = []
    tally: Counter[str] = Counter()
    cases: list[Case] = []
    began = time.monotonic()
    for start in range(0, n, 40):
        batch = make_cases(start, min(40, n - start),
                           lambda r: "pinned" if r.random() < 0.4 else "strict")
        more, counts = await engine_sweep(batch, local=False, retries=0)
        problems += more
        tally += counts
        cases += batch
    if time.monotonic() - began > TEST_BOUND_S:
        problems.append(f"the sweeps took {time.monotonic() - began:.0f} s (bound {TEST_BOUND_S:.0f} s)")
    report("engine sweep (strict/pinned)", problems, tally, cases)


async def test_engine_fuzz_local_auth() -> None:
    """--allow-local-auth: discovered servers at 127.0.0.1:53 reach the fake authoritative."""
    start = 10_000
    n = max(1, N_CASES * 3 // 8)
    problems: list[str] = []
    tally: Counter[str] = Counter()
    cases: list[Case] = []
    began = time.monotonic()
    for s in range(start, start + n, 30):
        batch = make_cases(s, min(30, start + n - s), lambda r: "local")
        more, counts = await engine_sweep(batch, local=True, retries=1)
        problems += more
        tally += counts
        cases += batch
    if time.monotonic() - began > TEST_BOUND_S:
        problems.append(f"the sweeps took {time.monotonic() - began:.0f} s (bound {TEST_BOUND_S:.0f} s)")
    report("engine sweep (local)", problems, tally, cases)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """In-process CLI: no uvloop (the send guard wraps Python sockets), a wide table."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DNSSEC_PROBE_ZONES", raising=False)
    monkeypatch.setenv("COLUMNS", "1000")  # no folding: names are looked for literally
    monkeypatch.setitem(sys.modules, "uvloop", None)
    policy = asyncio.get_event_loop_policy()
    yield tmp_path
    asyncio.set_event_loop_policy(policy)


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(["check", *args])
    code = info.value.code
    assert isinstance(code, int)
    return code


def cli_sweep(cases: Sequence[Case], tmp: Path, capsys: pytest.CaptureFixture[str], *,
              as_json: bool) -> tuple[int, str, list[str]]:
    with fakes(cases, local=True) as (res, auth, guard, work):
        zones = tmp / "zones.txt"
        zones.write_text("".join(c.zone_line(auth.port) + "\n" for c in cases))
        start = time.monotonic()
        code = run_cli(["--zones", str(zones), "--resolver", f"fuzz={HOST}:{res.port}",
                        "--qps", "0", "--timeout", str(TIMEOUT), "--retries", "0",
                        "--allow-local-auth", *(["--json"] if as_json else [])])
        elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    problems: list[str] = []
    if elapsed > SWEEP_BOUND_S:
        problems.append(f"the CLI took {elapsed:.1f} s")
    if "Traceback" in err or "internal error" in err:
        problems.append(f"the CLI printed a traceback: {err[-2000:]}")
    if code not in (0, 1, 2):
        problems.append(f"exit status {code}, not 0/1/2; stderr: {err[-500:]}")
    if as_json:
        doc = json.loads(out)
        verdicts = [Graded(r["zone"], r["verdict"], r["reason"]) for r in doc["results"]]
        more, tally = judge(cases, verdicts, res, auth, guard, work)
        problems += more
        report("CLI --json", problems, tally, cases)
    return code, out, problems


def test_cli_json_fuzz(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dnssec-probe check --json --allow-local-auth` in-process over hostile cases: one result
    per check, exit 0/1/2, and the same judgement as for the engine."""
    cases = make_cases(20_000, 24, lambda r: "local" if r.random() < 0.5 else "pinned",
                       answering=True)
    cli_sweep(cases, cli_env, capsys, as_json=True)


def test_cli_table_fuzz_with_markup(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table with markup in zone names, labels and reply names: shown literally, the table
    is printed and the exit status is a verdict (not 1 from a MarkupError)."""
    cases = []
    for k, i in enumerate(range(30_000, 30_016)):
        rng = random.Random(f"{SEED}/case/{i}")
        mark = MARKUP[k % len(MARKUP)]
        cases.append(Case(i, "local" if k % 2 else "pinned", rng, zone_prefix=mark if k < 6 else "",
                          label=mark if k >= 6 else "", answering=True))
    code, out, problems = cli_sweep(cases, cli_env, capsys, as_json=False)
    for c in cases:
        shown = c.zone_prefix or c.label
        if shown not in out:
            problems.append(f"{c.describe()}: {shown!r} is not shown literally in the table")
    if "checks (" not in out:
        problems.append("no summary line after the table")
    report("CLI table", problems, Counter({f"exit {code}": 1}), cases)
