"""probe.wire: query templates, question matching, the fixed-header triage and the full parse."""

from __future__ import annotations

import time

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fakedns import make_reply, rrset

from probe.observation import EdeObs
from probe.wire import (
    EDNS_PAYLOAD,
    QueryTemplate,
    TemplateCache,
    make_template,
    parse_reply,
    plainly_secure,
)

QNAME = "1.2.0.192.in-addr.arpa."
ZONE = "2.0.192.in-addr.arpa."


def _query(tmpl: QueryTemplate, qid: int = 0x1234) -> dns.message.Message:
    return dns.message.from_wire(tmpl.with_id(qid))


def _secure_reply(**kw: object) -> bytes:
    tmpl = make_template(QNAME, "PTR")
    q = _query(tmpl)
    kw.setdefault("answer", [rrset(QNAME, "PTR", "host.example.")])
    return make_reply(q, **kw)  # type: ignore[arg-type]


def _mixed_case(wire: bytes, start: int, length: int) -> bytes:
    """Flip the case of every other ASCII letter in wire[start:start+length] (DNS 0x20)."""
    b = bytearray(wire)
    flip = False
    for i in range(start, start + length):
        if chr(b[i]).isalpha():
            if flip:
                b[i] ^= 0x20
            flip = not flip
    return bytes(b)


# -- make_template / with_id -------------------------------------------------------------------

@pytest.mark.parametrize(("rd", "cd"), [(True, False), (False, False), (True, True), (False, True)])
def test_make_template_builds_edns0_do_query_with_given_rd_cd(rd: bool, cd: bool) -> None:
    tmpl = make_template(QNAME, "PTR", rd=rd, cd=cd)
    msg = dns.message.from_wire(tmpl.wire)
    assert msg.id == 0
    assert msg.opcode() == 0
    assert msg.flags == (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    assert msg.edns == 0
    assert msg.ednsflags & dns.flags.DO
    assert msg.payload == EDNS_PAYLOAD
    assert msg.options == ()
    assert len(msg.question) == 1
    question = msg.question[0]
    assert question.name == dns.name.from_text(QNAME)
    assert question.rdtype == dns.rdatatype.PTR
    assert question.rdclass == dns.rdataclass.IN
    assert (msg.answer, msg.authority, msg.additional) == ([], [], [])
    assert (tmpl.rd, tmpl.cd) == (rd, cd)


def test_make_template_normalises_name_and_type() -> None:
    tmpl = make_template("Host.Example.ORG", "aaaa", payload=4096)
    assert tmpl.qname == "Host.Example.ORG."
    assert tmpl.qtype == "AAAA"
    assert tmpl.qname_wire_lower == b"\x04host\x07example\x03org\x00"
    assert tmpl.typeclass == b"\x00\x1c\x00\x01"
    assert tmpl.question_len == len(tmpl.qname_wire_lower) + 4
    assert dns.message.from_wire(tmpl.wire).payload == 4096


@pytest.mark.parametrize("qid", [0, 1, 0x00FF, 0xFF00, 0xABCD, 0xFFFF])
def test_with_id_changes_only_the_first_two_bytes(qid: int) -> None:
    tmpl = make_template(QNAME, "PTR", cd=True)
    wire = tmpl.with_id(qid)
    assert len(wire) == len(tmpl.wire)
    assert wire[:2] == bytes([qid >> 8, qid & 0xFF])
    assert wire[2:] == tmpl.wire[2:]
    msg = dns.message.from_wire(wire)
    assert msg.id == qid
    assert msg.flags == dns.flags.RD | dns.flags.CD


# -- TemplateCache -----------------------------------------------------------------------------

def test_template_cache_builds_once_and_reuses() -> None:
    cache = TemplateCache()
    t = cache.get(QNAME, "PTR")
    assert cache.get(QNAME, "PTR") is t
    assert cache.get(QNAME, "PTR", cd=True) is not t
    assert cache.get(QNAME, "PTR", cd=True).cd
    assert len(cache) == 2
    assert cache.maxsize == 4096


def test_template_cache_is_bounded_least_recently_used_out() -> None:
    cache = TemplateCache(maxsize=3)
    a, b, c = (cache.get(f"{i}.example.", "A") for i in "abc")
    assert cache.get("a.example.", "A") is a  # used again: now the most recent
    d = cache.get("d.example.", "A")
    assert len(cache) == 3
    assert cache.get("a.example.", "A") is a and cache.get("c.example.", "A") is c
    assert cache.get("d.example.", "A") is d
    # b was the least recently used: gone, built again on demand
    b2 = cache.get("b.example.", "A")
    assert b2 is not b and b2 == b
    assert len(cache) == 3


def test_template_cache_stays_bounded_under_many_learnt_names() -> None:
    cache = TemplateCache(maxsize=64)
    for i in range(1000):  # e.g. name server names from hostile NS replies
        cache.get(f"ns{i}.example.", "A", rd=False)
        assert len(cache) <= 64
    assert len(cache) == 64


@pytest.mark.parametrize("size", [0, -1])
def test_template_cache_needs_room(size: int) -> None:
    with pytest.raises(ValueError):
        TemplateCache(maxsize=size)


# -- matches_question --------------------------------------------------------------------------

def test_matches_question_accepts_own_reply_and_0x20_mixed_case() -> None:
    tmpl = make_template(QNAME, "PTR")
    reply = _secure_reply()
    assert tmpl.matches_question(reply)
    n = len(tmpl.qname_wire_lower)
    mixed = _mixed_case(reply, 12, n)
    assert mixed != reply and mixed[12:12 + n].lower() == reply[12:12 + n]
    assert tmpl.matches_question(mixed)
    # A template built from an upper-case name matches a lower-case reply too.
    upper = make_template(QNAME.upper(), "PTR")
    assert upper.matches_question(reply)


def _reply_for(qname: str, qtype: str, rdclass: str = "IN") -> bytes:
    q = dns.message.make_query(qname, qtype, rdclass)
    return dns.message.make_response(q).to_wire()


@pytest.mark.parametrize(("qname", "qtype", "rdclass"), [
    ("2.2.0.192.in-addr.arpa.", "PTR", "IN"),  # other name, same length
    ("1.2.0.192.in-addr.arpa.example.", "PTR", "IN"),  # our name is a prefix of it
    ("2.0.192.in-addr.arpa.", "PTR", "IN"),  # parent
    (QNAME, "SOA", "IN"),  # other type
    (QNAME, "PTR", "CH"),  # other class
])
def test_matches_question_rejects_other_questions(qname: str, qtype: str, rdclass: str) -> None:
    tmpl = make_template(QNAME, "PTR")
    assert not tmpl.matches_question(_reply_for(qname, qtype, rdclass))


@pytest.mark.parametrize("qdcount", [0, 2, 0x0101])
def test_matches_question_rejects_qdcount_other_than_one(qdcount: int) -> None:
    tmpl = make_template(QNAME, "PTR")
    reply = _secure_reply()
    bad = reply[:4] + qdcount.to_bytes(2, "big") + reply[6:]
    assert not tmpl.matches_question(bad)


def test_matches_question_rejects_short_replies() -> None:
    tmpl = make_template(QNAME, "PTR")
    reply = _secure_reply()
    header_only = reply[:12]
    assert not tmpl.matches_question(header_only)
    # Question name complete but type/class cut off.
    assert not tmpl.matches_question(reply[:12 + len(tmpl.qname_wire_lower) + 2])


# -- plainly_secure ----------------------------------------------------------------------------

def test_plainly_secure_for_noerror_ad_answer_with_empty_opt() -> None:
    assert plainly_secure(_secure_reply())
    # Validators echo DO=1; RA/RD are set by every resolver: none of that matters.
    assert plainly_secure(_secure_reply(do=True))
    msg = dns.message.from_wire(_secure_reply())
    assert msg.flags & dns.flags.RA and msg.flags & dns.flags.RD


def test_plainly_secure_with_the_matched_template_remembers_the_shape() -> None:
    tmpl = make_template(QNAME, "PTR")
    reply = _secure_reply(do=True)
    assert tmpl.matches_question(reply)
    assert tmpl.shape[0] is None
    assert plainly_secure(reply, tmpl)
    assert tmpl.shape[0] is not None
    # Another ID, other TTLs (a cache counting down): the remembered shape.
    later = dns.message.from_wire(reply)
    later.id = 0x4321
    for r in later.answer:
        r.ttl = 17
    again = later.to_wire()
    assert again != reply and len(again) == len(reply)
    assert plainly_secure(again, tmpl)
    # The template is still equal to and hashes like a fresh one.
    fresh = make_template(QNAME, "PTR")
    assert fresh == tmpl and hash(fresh) == hash(tmpl)


def test_plainly_secure_for_a_signed_answer_with_ns_in_authority() -> None:
    q = _query(make_template(QNAME, "PTR"))
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), ALG)
    ptr = rrset(QNAME, "PTR", "host.example.")
    ns = rrset(ZONE, "NS", "ns1.example.", "ns2.example.")
    wire = make_reply(q, answer=[ptr, _sign(ptr, key, dnskey)],
                      authority=[ns, _sign(ns, key, dnskey)], do=True)
    assert plainly_secure(wire)
    assert plainly_secure(wire, make_template(QNAME, "PTR"))


def _patch_byte(wire: bytes, index: int, value: int) -> bytes:
    b = bytearray(wire)
    b[index] = value
    return bytes(b)


def _not_plainly_secure_cases() -> list[tuple[str, bytes]]:
    tmpl = make_template(QNAME, "PTR")
    q = _query(tmpl)
    ptr = [rrset(QNAME, "PTR", "host.example.")]
    soa = [rrset(ZONE, "SOA", "ns1.example. admin.example. 1 3600 900 604800 300")]
    base = make_reply(q, answer=ptr)
    aaaa_q = _query(make_template(QNAME, "AAAA"))
    assert make_reply(aaaa_q, edns=False, answer=[rrset(QNAME, "AAAA", "2001:db8:0:29:1000:0:1:0")])[
        -11:] == b"\x00\x00\x29\x10\x00\x00\x00\x00\x01\x00\x00"
    badvers = dns.message.make_response(q, recursion_available=True)
    badvers.flags |= dns.flags.AD
    badvers.answer.extend(ptr)
    badvers.use_edns(0, 0, 1232)
    badvers.set_rcode(dns.rcode.BADVERS)  # rcode 16: header says 0, OPT carries the high bits
    assert badvers.to_wire()[3] & 0x0F == 0
    return [
        ("ede", make_reply(q, answer=ptr, ede=[(3, "stale answer")])),
        ("ede-without-text", make_reply(q, answer=ptr, ede=[(0, None)])),
        ("servfail", make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)),
        ("servfail-with-ad-and-answer", make_reply(q, rcode=dns.rcode.SERVFAIL, answer=ptr)),
        ("nxdomain-ad", make_reply(q, rcode=dns.rcode.NXDOMAIN, authority=soa)),
        ("no-ad", make_reply(q, ad=False, answer=ptr)),
        ("truncated", make_reply(q, tc=True, answer=ptr)),
        ("nodata-ad", make_reply(q, authority=soa)),
        ("no-opt", make_reply(q, answer=ptr, edns=False)),
        ("extended-rcode", badvers.to_wire()),
        ("edns-version-1", _patch_byte(base, len(base) - 5, 1)),
        ("query-not-response", _patch_byte(base, 2, base[2] & 0x7F)),
        ("opcode-notify", _patch_byte(base, 2, base[2] | (4 << 3))),
        ("opt-not-last", _opt_then_a(q, ptr)),
        # Data that ends in the 11 bytes of an empty OPT must not pass for one.
        ("no-opt-aaaa-ending-like-opt", make_reply(
            aaaa_q, edns=False, answer=[rrset(QNAME, "AAAA", "2001:db8:0:29:1000:0:1:0")])),
        ("cookie-option", _with_option(base, 10, bytes(range(1, 25)))),
        ("header-only", base[:12]),
        ("empty", b""),
    ]


def _with_option(wire: bytes, code: int, data: bytes) -> bytes:
    """`wire` (ending in an empty OPT) with one EDNS option `code` carrying `data`."""
    assert wire[-2:] == b"\x00\x00"
    option = code.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
    return wire[:-2] + len(option).to_bytes(2, "big") + option


def _opt_then_a(q: dns.message.Message, answer: list[dns.rrset.RRset]) -> bytes:
    """OPT followed by another additional RR: the final 11 bytes are not an empty OPT."""
    wire = make_reply(q, answer=answer)
    extra = b"\x00" + b"\x00\x01\x00\x01" + (300).to_bytes(4, "big") + b"\x00\x04\xc0\x00\x02\x01"
    arcount = int.from_bytes(wire[10:12], "big") + 1
    return wire[:10] + arcount.to_bytes(2, "big") + wire[12:] + extra


@pytest.mark.parametrize(("case", "wire"), _not_plainly_secure_cases(),
                         ids=[c for c, _ in _not_plainly_secure_cases()])
def test_plainly_secure_is_false_for_anything_else(case: str, wire: bytes) -> None:
    assert not plainly_secure(wire), case


# -- parse_reply -------------------------------------------------------------------------------

def test_parse_reply_extracts_ede_codes_and_texts() -> None:
    tmpl = make_template(QNAME, "PTR")
    wire = make_reply(_query(tmpl), rcode=dns.rcode.SERVFAIL, ad=False,
                      ede=[(6, "validation failure <1.2.0.192.in-addr.arpa. PTR>"), (9, None)])
    p = parse_reply(wire)
    assert p.rcode == dns.rcode.SERVFAIL
    assert not p.flags & dns.flags.AD
    assert p.flags & dns.flags.QR
    assert p.ede == (EdeObs(6, "validation failure <1.2.0.192.in-addr.arpa. PTR>"), EdeObs(9, ""))
    assert p.answer == () and p.authority == ()


ALG = dns.dnssectypes.Algorithm.ECDSAP256SHA256


def _sign(rrs: dns.rrset.RRset, key: ec.EllipticCurvePrivateKey,
          dnskey: dns.rdata.Rdata) -> dns.rrset.RRset:
    now = int(time.time())
    sig = dns.dnssec.sign(rrs, key, dns.name.from_text(ZONE), dnskey,  # type: ignore[arg-type]
                          inception=now - 3600, expiration=now + 86400)
    return dns.rrset.from_rdata(rrs.name, rrs.ttl, sig)


def test_parse_reply_attaches_rrsigs_to_the_rrsets_they_cover() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), ALG, flags=257)
    dnskey_rrset = dns.rrset.from_rdata(ZONE, 3600, dnskey)

    ptr = rrset(QNAME.upper(), "PTR", "b.example.", "a.example.", ttl=600)
    soa = rrset(ZONE, "SOA", "ns1.example. admin.example. 1 3600 900 604800 300", ttl=300)
    nsec = rrset(ZONE, "NSEC", f"{QNAME} SOA NS RRSIG NSEC DNSKEY", ttl=300)
    ptr_sig, soa_sig, nsec_sig = (_sign(r, key, dnskey) for r in (ptr, soa, nsec))

    tmpl = make_template(QNAME, "PTR")
    wire = make_reply(_query(tmpl), answer=[ptr, ptr_sig],
                      authority=[soa, soa_sig, nsec, nsec_sig], do=True)
    p = parse_reply(wire)
    assert p.rcode == 0 and p.flags & dns.flags.AD and p.ede == ()

    assert len(p.answer) == 1
    a = p.answer[0]
    assert a.name == QNAME  # lower-cased
    assert a.rdtype == "PTR"
    assert a.ttl == 600
    assert a.rdatas == ("a.example.", "b.example.")  # sorted
    assert a.rrsigs == (ptr_sig[0].to_text(),)

    by_type = {r.rdtype: r for r in p.authority}
    assert set(by_type) == {"SOA", "NSEC"}  # RRSIGs are not rrsets of their own
    assert by_type["SOA"].rrsigs == (soa_sig[0].to_text(),)
    assert by_type["NSEC"].rrsigs == (nsec_sig[0].to_text(),)

    # The recorded texts are complete: the signature still validates from them.
    keys = {dns.name.from_text(ZONE): dnskey_rrset}
    for obs, data in ((a, ptr), (by_type["SOA"], soa), (by_type["NSEC"], nsec)):
        (text,) = obs.rrsigs
        rrsig = dns.rdata.from_text("IN", "RRSIG", text)
        dns.dnssec.validate_rrsig(data, rrsig, keys)  # type: ignore[arg-type]


def test_parse_reply_keeps_signatures_without_data() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), ALG)
    ptr = rrset(QNAME, "PTR", "host.example.")
    sig = _sign(ptr, key, dnskey)
    tmpl = make_template(QNAME, "PTR")
    p = parse_reply(make_reply(_query(tmpl), answer=[sig]))
    assert len(p.answer) == 1
    orphan = p.answer[0]
    assert (orphan.name, orphan.rdtype, orphan.rdatas) == (QNAME, "RRSIG:PTR", ())
    assert orphan.rrsigs == (sig[0].to_text(),)


@pytest.mark.parametrize("garbage", [
    b"",
    b"\x12\x34\x81",  # shorter than a header
    bytes(range(7)) * 3,
    # header says one answer RR, none follows
    b"\x12\x34\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00",
    # question name with a label running past the end
    b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc",
    # compression pointer loop in the question
    b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x0c\x00\x01",
])
def test_parse_reply_raises_dns_exception_on_garbage(garbage: bytes) -> None:
    with pytest.raises(dns.exception.DNSException):
        parse_reply(garbage)


def test_parse_reply_raises_on_truncated_real_reply() -> None:
    wire = _secure_reply()
    for cut in range(13, len(wire) - 1, 7):
        with pytest.raises(dns.exception.DNSException):
            parse_reply(wire[:cut])


@pytest.mark.parametrize("qname", [
    "1.0.0.14.in-addr.arpa.", "14.in-addr.arpa.", "_dmarc.example.", "a-b.c_d.", "x.",
    "b.a.9.8.7.6.5.4.3.2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.2.ip6.arpa.",
    ("a" * 63 + ".") * 3 + "b" * 61 + ".",  # 255 octets on the wire: the longest name
    # not plain: dnspython builds these (escapes, upper case, the root, non-LDH octets)
    "Mixed.Case.example.", "a\\.b.example.", "\\255.example.", ".", "sp\\032ace.example.",
])
@pytest.mark.parametrize("qtype", ["PTR", "SOA", "DNSKEY", "DS", "AAAA", "TYPE65280", "NAPTR"])
def test_built_templates_equal_dnspython(qname: str, qtype: str) -> None:
    """The byte-built fast path must be the same query dnspython builds, field for field."""
    from probe.wire import dnspython_template

    for rd, cd, nsid in [(True, False, True), (False, True, False), (False, False, True)]:
        fast = make_template(qname, qtype, rd=rd, cd=cd, nsid=nsid)
        ref = dnspython_template(qname, qtype, rd=rd, cd=cd, nsid=nsid)
        assert (fast.wire, fast.qname, fast.qtype, fast.qname_wire_lower, fast.typeclass) == (
            ref.wire, ref.qname, ref.qtype, ref.qname_wire_lower, ref.typeclass), (rd, cd, nsid)
