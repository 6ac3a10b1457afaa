"""Hostile reply wire: the triage never calls a malformed reply secure; EDNS options decode leniently."""

from __future__ import annotations

import random
import struct
import time

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest
from fakedns import FakeDNS, Request, make_reply, rrset

from probe.observation import EdeObs, Outcome
from probe.query import Querier
from probe.transport import Transport
from probe.wire import MalformedWire, QueryTemplate, make_template, parse_reply, plainly_secure

QNAME = "1.2.0.192.in-addr.arpa."
ZONE = "2.0.192.in-addr.arpa."
PTR, NS, A, SOA, RRSIG, OPT, CNAME = 12, 2, 1, 6, 46, 41, 5
TMPL = make_template(QNAME, "PTR")
QNAME_WIRE = TMPL.qname_wire_lower
QUESTION = QNAME_WIRE + TMPL.typeclass  # starts at offset 12
ZONE_AT = 12 + 2  # "2.0.192.in-addr.arpa." inside the question name
TO_QNAME = b"\xc0\x0c"
TO_ZONE = bytes([0xC0, ZONE_AT])
HOST_EXAMPLE = b"\x04host\x07example\x00"


def _opt(options: bytes = b"", *, rcode_high: int = 0) -> bytes:
    return b"\x00" + struct.pack("!HHBBHH", OPT, 1232, rcode_high, 0, 0x8000, len(options)) + options


def _rr(owner: bytes, rtype: int, rdata: bytes, *, ttl: int = 300, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def _rrsig(covered: int, signer: bytes = QNAME_WIRE[2:], sig: bytes = bytes(range(64))) -> bytes:
    now = int(time.time())
    return struct.pack("!HBBIIIH", covered, 13, 6, 300, now + 86400, now - 3600, 4711) + signer + sig


def _msg(answer: list[bytes], authority: list[bytes] = (), additional: list[bytes] = (),  # type: ignore[assignment]
         *, opt: bytes | None = None, flags: int = 0x81A0,
         counts: tuple[int, int, int, int] | None = None, question: bytes = QUESTION) -> bytes:
    """A reply from parts; `opt` is appended last to the additional section (an empty OPT by
    default, none if b""); `counts` overrides the header counts."""
    extra = [*additional, _opt() if opt is None else opt]
    if not extra[-1]:
        extra.pop()
    if counts is None:
        counts = (1, len(answer), len(authority), len(extra))
    return (struct.pack("!HHHHHH", 0x1234, flags, *counts) + question + b"".join(answer)
            + b"".join(authority) + b"".join(extra))


PTR_RR = _rr(TO_QNAME, PTR, HOST_EXAMPLE)
SIG_RR = _rr(TO_QNAME, RRSIG, _rrsig(PTR))
GOOD = _msg([PTR_RR, SIG_RR])


def _parses(wire: bytes) -> bool:
    try:
        dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return False
    return True


def _triage(wire: bytes) -> bool:
    """plainly_secure as the Querier calls it (with the matched template) and without it;
    both must agree."""
    fresh = make_template(QNAME, "PTR")  # no remembered shape
    verdicts = {plainly_secure(wire)}
    if fresh.matches_question(wire):
        verdicts.add(plainly_secure(wire, fresh))
        verdicts.add(plainly_secure(wire, TMPL))  # remembers GOOD's shape (see the fixture)
    assert len(verdicts) == 1, verdicts
    return verdicts.pop()


@pytest.fixture(autouse=True)
def _remember_good_shape() -> None:
    """Every test starts with TMPL having accepted GOOD (and a second reply of its shape)."""
    TMPL.shape[0] = None
    assert plainly_secure(GOOD, TMPL) and plainly_secure(GOOD, TMPL)


def test_hand_built_reply_is_plainly_secure_and_dnspython_agrees() -> None:
    assert _triage(GOOD)
    msg = dns.message.from_wire(GOOD)
    assert msg.flags & dns.flags.AD and msg.rcode() == 0
    assert [r.rdtype for r in msg.answer] == [PTR, RRSIG]


def _patched(wire: bytes, at: int, data: bytes) -> bytes:
    return wire[:at] + data + wire[at + len(data):]


ANSWER_AT = 12 + len(QUESTION)
PTR_RDLEN_AT = ANSWER_AT + 2 + 8
TWO_OPTS = _msg([PTR_RR, SIG_RR], additional=[_opt()])


def _ns_chain(count: int) -> bytes:
    """`count` NS records whose targets each add a label to the previous one by a pointer: the
    last target is reached through count - 1 pointers."""
    authority = []
    at = ANSWER_AT + len(PTR_RR) + len(SIG_RR) + 12  # the first NS RDATA
    for i in range(count):
        rdata = b"\x01x\x00" if i == 0 else b"\x01x" + bytes([0xC0 | at >> 8, at & 0xFF])
        if i:
            at += len(authority[-1])
        authority.append(_rr(TO_ZONE, NS, rdata))
    return _msg([PTR_RR, SIG_RR], authority)


def _malformed() -> list[tuple[str, bytes]]:
    own = ANSWER_AT  # offset of the first answer owner
    return [
        # a pointer to itself, and two pointers pointing at each other
        ("compression-loop-owner", _msg([_rr(bytes([0xC0, own]), PTR, HOST_EXAMPLE), SIG_RR])),
        ("compression-loop-rdata", _msg([_rr(TO_QNAME, PTR, bytes([0xC0, own + 12])), SIG_RR])),
        ("pointer-past-the-end", _msg([_rr(b"\xc0\xff", PTR, HOST_EXAMPLE), SIG_RR])),
        ("pointer-far-past-the-end", _msg([_rr(TO_QNAME, PTR, b"\xff\xff"), SIG_RR])),
        ("pointer-forward", _msg([PTR_RR, _rr(TO_QNAME, RRSIG, _rrsig(PTR))],
                                 [_rr(bytes([0xC0, len(GOOD) - 1]), NS, HOST_EXAMPLE)])),
        ("pointer-into-own-name", _msg([PTR_RR, SIG_RR], [
            _rr(TO_ZONE, NS, b"\x02ns" + bytes([0xC0, ANSWER_AT + len(PTR_RR + SIG_RR) + 12]))])),
        ("ancount-65535", _msg([PTR_RR, SIG_RR], counts=(1, 65535, 0, 1))),
        ("ancount-one-more", _msg([PTR_RR, SIG_RR], counts=(1, 3, 0, 1))),
        ("arcount-one-more", _msg([PTR_RR, SIG_RR], counts=(1, 2, 0, 2))),
        ("two-opt-records", TWO_OPTS),
        ("opt-in-answer", _msg([PTR_RR, _opt(), SIG_RR])),
        ("opt-in-authority", _msg([PTR_RR, SIG_RR], [_opt()])),
        ("rdlength-past-the-end", _patched(GOOD, PTR_RDLEN_AT, b"\xff\xf0")),
        ("rdlength-short", _patched(GOOD, PTR_RDLEN_AT, b"\x00\x05")),
        ("label-past-rdata", _msg([_rr(TO_QNAME, PTR, b"\x3fhost\x00"), SIG_RR])),
        ("extended-label-type", _msg([_rr(TO_QNAME, PTR, b"\x41host\x00"), SIG_RR])),
        ("name-longer-than-255", _msg([_rr(TO_QNAME, PTR, (b"\x3f" + b"a" * 63) * 4 + b"\x00"),
                                       SIG_RR])),
        ("compressed-rrsig-signer", _msg([PTR_RR, _rr(TO_QNAME, RRSIG, _rrsig(PTR, TO_ZONE))])),
        ("rrsig-too-short", _msg([PTR_RR, _rr(TO_QNAME, RRSIG, _rrsig(PTR)[:17])])),
        ("a-record-wrong-length", _msg([PTR_RR, SIG_RR], additional=[_rr(TO_QNAME, A, b"\x01\x02")])),
        ("pointer-chain-17-hops", _ns_chain(18)),
        ("header-only", GOOD[:12]),
        *((f"truncated-{cut}", GOOD[:cut]) for cut in range(14, len(GOOD) - 11, 9)),
    ]


@pytest.mark.parametrize(("case", "wire"), _malformed(), ids=[c for c, _ in _malformed()])
def test_malformed_reply_is_never_plainly_secure_and_the_full_parse_rejects_it(
        case: str, wire: bytes) -> None:
    assert not _parses(wire), f"{case}: the case is not malformed"
    assert not _triage(wire), case
    with pytest.raises(MalformedWire):
        parse_reply(wire)


def test_trailing_bytes_are_not_plainly_secure_but_parse() -> None:
    # Looks like an empty OPT at the end, but it is not counted: trailing junk.
    wire = GOOD + _opt()
    assert not _triage(wire)
    p = parse_reply(wire)  # the full parse tolerates trailing junk and then decides
    assert p.rcode == 0 and [a.rdtype for a in p.answer] == ["PTR"]


def test_counts_that_cannot_fit_the_bytes_are_rejected_without_walking() -> None:
    wire = _msg([PTR_RR, SIG_RR], counts=(1, 65535, 65535, 65535))
    assert not _triage(wire)


UNUSUAL = [
    ("answer-for-another-owner", _msg([_rr(TO_ZONE, PTR, HOST_EXAMPLE),
                                       _rr(TO_ZONE, RRSIG, _rrsig(PTR))])),
    ("answer-only-rrsig", _msg([SIG_RR])),
    ("answer-cname", _msg([_rr(TO_QNAME, CNAME, HOST_EXAMPLE), SIG_RR])),
    ("answer-other-type-too", _msg([PTR_RR, _rr(TO_QNAME, A, b"\xc0\x00\x02\x01"), SIG_RR])),
    ("class-ch", _msg([_rr(TO_QNAME, PTR, HOST_EXAMPLE, rclass=3), SIG_RR])),
    ("unchecked-rdata-type", _msg([PTR_RR, SIG_RR], [_rr(TO_ZONE, 48, b"\x01\x01\x03\x0d")])),
    ("qdcount-2", _msg([PTR_RR, SIG_RR], counts=(2, 2, 0, 1), question=QUESTION * 2)),
]


@pytest.mark.parametrize(("case", "wire"), UNUSUAL, ids=[c for c, _ in UNUSUAL])
def test_unusual_but_wellformed_replies_take_the_full_parse(case: str, wire: bytes) -> None:
    assert _parses(wire), case
    assert not _triage(wire), case


def _sig_rr(owner: bytes, covered: int) -> bytes:
    return _rr(owner, RRSIG, _rrsig(covered))


COMPRESSED = [
    ("two-ptrs-compressed-target", _msg([
        _rr(TO_QNAME, PTR, b"\x01a" + TO_ZONE), PTR_RR, SIG_RR])),
    ("authority-ns-and-glue", _msg(
        [PTR_RR, SIG_RR],
        [_rr(TO_ZONE, NS, b"\x03ns1\x07example\x00"),
         _rr(TO_ZONE, NS, b"\x03ns2" + bytes([0xC0, ANSWER_AT + len(PTR_RR + SIG_RR) + 12 + 4]))],
        [_rr(bytes([0xC0, ANSWER_AT + len(PTR_RR + SIG_RR) + 12]), A, b"\xc0\x00\x02\x01")])),
    ("pointer-chain-16-hops", _ns_chain(17)),
    ("glue-owner-points-into-ptr-target", _msg(
        [PTR_RR, SIG_RR], additional=[_rr(bytes([0xC0, ANSWER_AT + 12]), A, b"\xc0\x00\x02\x01")])),
]


@pytest.mark.parametrize(("case", "wire"), COMPRESSED, ids=[c for c, _ in COMPRESSED])
def test_compression_against_earlier_names_is_walked(case: str, wire: bytes) -> None:
    assert _parses(wire), case
    assert _triage(wire), case


def test_signed_apex_soa_with_compressed_rname_is_plainly_secure() -> None:
    tmpl = make_template(ZONE, "SOA")
    q = dns.message.from_wire(tmpl.with_id(7))
    soa = rrset(ZONE, "SOA", "ns1.apnic.net. read-txt-record.apnic.net. 1 3600 900 604800 300")
    sig = dns.rrset.from_text(ZONE, 300, "IN", "RRSIG",
                              f"SOA 13 5 300 20300101000000 20200101000000 4711 {ZONE} "
                              + "A" * 88)
    wire = make_reply(q, answer=[soa, sig], do=True)
    assert wire.count(b"apnic") == 1  # rname is compressed against mname
    assert plainly_secure(wire) and plainly_secure(wire, tmpl)


# -- the remembered shape --------------------------------------------------------------------

def _ttl_patched(wire: bytes, ttl: int) -> bytes:
    at = ANSWER_AT + 2 + 4
    out = _patched(wire, at, ttl.to_bytes(4, "big"))
    at2 = ANSWER_AT + len(PTR_RR) + 2 + 4
    return _patched(out, at2, ttl.to_bytes(4, "big"))


def test_remembered_shape_accepts_other_ttls_and_ids_only() -> None:
    for ttl in (0, 1, 299, 0x7FFFFFFF, 0xFFFFFFFF):
        wire = b"\xab\xcd" + _ttl_patched(GOOD, ttl)[2:]
        assert plainly_secure(wire, TMPL)
        assert _parses(wire)
    # Same length, one structural byte changed: not taken from memory, walked and rejected.
    bad_label = _patched(GOOD, ANSWER_AT + 12, b"\x41")
    assert len(bad_label) == len(GOOD) and not _parses(bad_label)
    assert not plainly_secure(bad_label, TMPL)
    bad_count = _patched(GOOD, 6, b"\x00\x03")
    assert not plainly_secure(bad_count, TMPL)
    # A same-shape reply with another signature is walked, accepted and remembered.
    other_sig = _patched(GOOD, len(GOOD) - 20, b"\x00")
    assert plainly_secure(other_sig, TMPL)
    assert TMPL.shape[0] is not None and TMPL.shape[0][1] == other_sig


# -- property: plainly secure implies dnspython agrees -------------------------------------------

def _bases() -> list[tuple[QueryTemplate, bytes]]:
    """Plainly secure replies: hand-built, one with compression against several names, and an
    apex SOA built by dnspython."""
    answer = [_rr(TO_QNAME, PTR, b"\x01a" + TO_ZONE), PTR_RR, SIG_RR]
    ns_rdata_at = ANSWER_AT + len(b"".join(answer)) + 12
    wire = _msg(answer, [_rr(TO_ZONE, NS, b"\x03ns1\x07example\x00")],
                [_rr(bytes([0xC0, ns_rdata_at]), A, b"\xc0\x00\x02\x01")])
    assert _triage(wire)
    out = [(TMPL, GOOD), (make_template(QNAME, "PTR"), wire)]
    tmpl = make_template(ZONE, "SOA")
    q = dns.message.from_wire(tmpl.with_id(9))
    soa = rrset(ZONE, "SOA", "ns1.apnic.net. hostmaster.apnic.net. 1 3600 900 604800 300")
    out.append((tmpl, make_reply(q, answer=[soa], do=True)))
    return out


def _mutate(rng: random.Random, wire: bytes) -> bytes:
    b = bytearray(wire)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.45:
            b[i] = rng.choice((0, 1, 0x3F, 0x40, 0xC0, 0xC0 | rng.randrange(64), rng.randrange(256),
                               b[i] ^ (1 << rng.randrange(8))))
        elif op < 0.6:
            del b[i:i + rng.randrange(1, 4)]
        elif op < 0.7:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif op < 0.85:
            j = rng.randrange(4, 12)
            b[j] = rng.choice((0, 1, 2, 3, 0xFF, (b[j] + 1) & 0xFF, (b[j] - 1) & 0xFF))
        elif i + 1 < len(b):
            v = 0xC000 | rng.randrange(len(b) + 4)
            b[i], b[i + 1] = v >> 8, v & 0xFF
        if not b:
            break
    return bytes(b)


def test_fuzz_plainly_secure_implies_dnspython_accepts_a_secure_answer() -> None:
    rng = random.Random(20261202)
    bases = _bases()
    accepted = rejected = 0
    deadline = time.monotonic() + 30  # hang bound only; a run takes about a second
    for _ in range(4000):
        tmpl, base = rng.choice(bases)
        wire = _mutate(rng, base)
        verdicts = [plainly_secure(wire)]
        if tmpl.matches_question(wire):
            verdicts.append(plainly_secure(wire, tmpl))  # remembers shapes as it goes
        if not any(verdicts):
            rejected += 1
            continue
        accepted += 1
        msg = dns.message.from_wire(wire)  # must not raise
        assert msg.flags & dns.flags.AD and msg.rcode() == dns.rcode.NOERROR
        assert not msg.flags & dns.flags.TC
        assert msg.answer and msg.options == ()
        assert all(r.name == msg.question[0].name for r in msg.answer)
        assert time.monotonic() < deadline
    # Both outcomes happen (TTL and signature bytes are free to change; most others are not).
    assert accepted > 200 and rejected > 1000


# -- lenient EDNS options ---------------------------------------------------------------------

def _option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _ede(code: int, text: bytes = b"") -> bytes:
    return _option(15, code.to_bytes(2, "big") + text)


SERVFAIL = 0x8182  # QR RD RA, rcode 2
BAD_UTF8 = b"validation failure \xff\xfe <1.2.0.192.in-addr.arpa. PTR>"


def _servfail(options: bytes, **kw: object) -> bytes:
    return _msg([], opt=_opt(options), flags=SERVFAIL, **kw)  # type: ignore[arg-type]


def test_ede_with_invalid_utf8_keeps_rcode_and_code() -> None:
    wire = _servfail(_ede(6, BAD_UTF8))
    assert not _parses(wire)  # dnspython alone calls it malformed
    p = parse_reply(wire)
    assert p.rcode == dns.rcode.SERVFAIL
    assert p.flags & dns.flags.QR and not p.flags & dns.flags.AD
    (ede,) = p.ede
    assert ede.code == 6
    assert ede.text == BAD_UTF8.decode("utf-8", errors="replace")
    assert "\ufffd" in ede.text and ede.text.endswith("PTR>")


BAD_OPTIONS = [
    ("cookie-too-short", _option(10, b"\x01\x02\x03")),
    ("ecs-bad-family", _option(8, b"\x00\x03\x18\x00\xc0\x00\x02")),
    ("ecs-prefix-too-long", _option(8, b"\x00\x01\x40\x00\xc0\x00\x02\x01")),
    ("ede-without-info-code", _option(15, b"\x00")),
    ("ede-bad-utf8", _ede(22, b"\xc3\x28")),
]


@pytest.mark.parametrize(("case", "bad"), BAD_OPTIONS, ids=[c for c, _ in BAD_OPTIONS])
def test_one_bad_option_does_not_hide_the_others(case: str, bad: bytes) -> None:
    wire = _servfail(_ede(9, b"DNSKEY missing") + bad + _ede(6, b"signature invalid\x00"))
    assert not _parses(wire), case
    p = parse_reply(wire)
    assert p.rcode == dns.rcode.SERVFAIL
    codes = [e.code for e in p.ede]
    assert codes[0] == 9 and codes[-1] == 6
    assert p.ede[0] == EdeObs(9, "DNSKEY missing")
    assert p.ede[-1] == EdeObs(6, "signature invalid")  # NUL terminator dropped, as dnspython


def test_option_running_past_the_opt_stops_option_decoding_only() -> None:
    broken = struct.pack("!HH", 10, 40) + b"\x01" * 8  # says 40 octets, has 8
    p = parse_reply(_servfail(_ede(6, b"bogus") + broken))
    assert p.rcode == dns.rcode.SERVFAIL
    assert p.ede == (EdeObs(6, "bogus"),)


def test_secure_answer_with_a_bad_cookie_still_reads_the_answer() -> None:
    wire = _msg([PTR_RR, SIG_RR], opt=_opt(_option(10, b"\x01\x02\x03")))
    assert not _triage(wire)  # an option: not plainly secure, full parse
    p = parse_reply(wire)
    assert p.rcode == 0 and p.flags & dns.flags.AD and p.ede == ()
    assert [(a.name, a.rdtype, a.rdatas) for a in p.answer] == [(QNAME, "PTR", ("host.example.",))]


def test_bad_option_in_an_opt_that_is_not_last_keeps_later_names_intact() -> None:
    # An A record after the OPT whose owner points back at a name after the OPT's options:
    # the options are blanked in place, so that pointer still means what it meant.
    opt = _opt(_ede(6, BAD_UTF8))
    glue_at = ANSWER_AT + len(PTR_RR) + len(SIG_RR) + len(opt)
    glue = _rr(b"\x03ns1\x07example\x00", A, b"\xc0\x00\x02\x01")
    glue6 = _rr(bytes([0xC0, glue_at]), 28, bytes(15) + b"\x01")
    wire = _msg([PTR_RR, SIG_RR], [], [opt, glue, glue6], opt=b"")
    assert _parses(wire.replace(b"\xff\xfe", b"ab"))  # only the EDE text is bad
    # Cutting the options out would turn glue6's owner into a pointer to the wrong offset.
    p = parse_reply(wire)
    assert p.rcode == 0 and p.flags & dns.flags.AD
    assert [e.code for e in p.ede] == [6]
    assert [a.rdtype for a in p.answer] == ["PTR"]


STILL_MALFORMED = [
    ("bad-option-and-answer-past-the-end", _patched(
        _msg([PTR_RR, SIG_RR], opt=_opt(_ede(6, BAD_UTF8))), PTR_RDLEN_AT, b"\xff\xf0")),
    ("bad-option-and-two-opts", _msg([PTR_RR], additional=[_opt()], opt=_opt(_ede(6, BAD_UTF8)))),
    ("bad-option-and-compression-loop", _msg(
        [_rr(bytes([0xC0, ANSWER_AT]), PTR, HOST_EXAMPLE)], opt=_opt(_ede(6, BAD_UTF8)))),
    ("opt-rdlength-past-the-end", _servfail(b"")[:-2] + b"\x00\x10" + _ede(6)),
    ("bad-option-in-opt-not-in-additional", _msg([PTR_RR, _opt(_ede(6, BAD_UTF8))], [])),
]


@pytest.mark.parametrize(("case", "wire"), STILL_MALFORMED, ids=[c for c, _ in STILL_MALFORMED])
def test_a_genuinely_malformed_reply_stays_malformed(case: str, wire: bytes) -> None:
    with pytest.raises(MalformedWire):
        parse_reply(wire)


def test_lenient_decoding_registers_no_option_class() -> None:
    codes = [dns.edns.OptionType(c) for c in (8, 10, 15, 65535)]
    before = {code: dns.edns.get_option_class(code) for code in codes}
    parse_reply(_servfail(_ede(6, BAD_UTF8) + _option(10, b"\x01")))
    after = {code: dns.edns.get_option_class(code) for code in codes}
    assert before == after
    assert after[dns.edns.OptionType.EDE] is dns.edns.EDEOption


# -- through the Querier, from a server on loopback ------------------------------------------

def _querier() -> Querier:
    return Querier(Transport(timeout=2.0), retries=0, clock=time.time)


def _as_reply_to(req: Request, wire: bytes) -> bytes:
    """`wire` (built for QUESTION) as the reply to `req`: its ID."""
    return req.wire[:2] + wire[2:]


async def test_querier_reads_servfail_with_undecodable_ede_as_a_reply() -> None:
    q = _querier()
    try:
        with FakeDNS(lambda req: _as_reply_to(req, _servfail(_ede(6, BAD_UTF8)))) as srv:
            obs = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.REPLY
    assert obs.parsed is True
    assert obs.rcode == dns.rcode.SERVFAIL
    assert [e.code for e in obs.ede] == [6]


@pytest.mark.parametrize("case", ["two-opt-records", "compression-loop-owner", "ancount-one-more"])
async def test_querier_does_not_take_a_malformed_secure_looking_reply_as_secure(case: str) -> None:
    wire = dict(_malformed())[case]
    q = _querier()
    try:
        with FakeDNS(lambda req: _as_reply_to(req, wire)) as srv:
            obs = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.MALFORMED, case
    assert obs.detail
