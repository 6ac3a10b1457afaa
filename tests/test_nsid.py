"""NSID (RFC 5001): every query asks for it, every parsed reply records it, hostile ones too."""

from __future__ import annotations

import json
import random
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from fakedns import (
    HOST,
    FakeDNS,
    Request,
    default_answer,
    edns_options,
    make_reply,
    rrset,
    with_options,
)

from probe.engine import Engine, EngineConfig
from probe.observation import NSID_SHOWN, Observation, Outcome, nsid_text
from probe.query import Querier
from probe.resolvers import ResolverSpec
from probe.transport import Transport
from probe.wire import (
    MalformedWire,
    TemplateCache,
    id_server_text,
    make_id_server_template,
    make_template,
    parse_reply,
    plainly_secure,
)
from probe.zones import parse_zones

QNAME = "1.2.0.192.in-addr.arpa."
ZONE = "2.0.192.in-addr.arpa."
SOA = "ns1.example. admin.example. 1 3600 900 604800 300"
NSID = 3  # EDNS option code (RFC 5001 §2.3)
EDE = 15  # RFC 8914
BAD_UTF8 = b"\xff\xfe not utf-8"


def _query(qtype: str = "PTR") -> dns.message.Message:
    return dns.message.from_wire(TemplateCache().get(QNAME, qtype).with_id(0x1234))


def _secure(q: dns.message.Message) -> bytes:
    return make_reply(q, answer=default_answer(q))


def _ede(code: int, text: bytes) -> tuple[int, bytes]:
    return EDE, code.to_bytes(2, "big") + text


def _servfail(q: dns.message.Message, *options: tuple[int, bytes]) -> bytes:
    """A validation failure (EDE 6) with more raw EDNS `options` after the EDE."""
    wire = make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False, authority=[rrset(ZONE, "SOA", SOA)])
    return with_options(wire, _ede(6, b"signature invalid"), *options)


async def _ask(reply: bytes, *, triage: bool = True) -> tuple[Observation, list[Request]]:
    """Ask a fake server that answers every query with `reply` (its ID patched)."""
    q = Querier(Transport(timeout=2.0), retries=0, clock=time.time)
    try:
        with FakeDNS(lambda req: req.wire[:2] + reply[2:]) as srv:
            obs = await q.ask("fake", srv.host, srv.port, TemplateCache().get(QNAME, "PTR"),
                              triage=triage)
    finally:
        q.transport.close()
    return obs, srv.requests


# -- the query side ----------------------------------------------------------------------------

def test_template_cache_asks_for_nsid_make_template_only_when_told() -> None:
    for tmpl in (TemplateCache().get(QNAME, "PTR"), TemplateCache().get(QNAME, "A", cd=True),
                 make_template(QNAME, "PTR", nsid=True)):
        assert edns_options(tmpl.wire) == [(NSID, b"")]
        assert tmpl.wire.endswith(b"\x00\x04\x00\x03\x00\x00")  # RDLENGTH 4: one empty option
        msg = dns.message.from_wire(tmpl.wire)
        assert msg.ednsflags & dns.flags.DO and msg.payload == 1232
    assert edns_options(make_template(QNAME, "PTR").wire) == []
    assert edns_options(TemplateCache(nsid=False).get(QNAME, "PTR").wire) == []


async def test_query_on_the_wire_carries_an_empty_nsid_option() -> None:
    obs, requests = await _ask(_secure(_query()))
    assert obs.outcome is Outcome.REPLY
    assert [edns_options(r.wire) for r in requests] == [[(NSID, b"")]]


async def test_every_query_of_a_check_and_its_follow_ups_asks_for_nsid() -> None:
    def failing_resolver(req: Request) -> bytes:
        q = req.message
        if q.flags & dns.flags.CD:  # CD=1: hand out the (bogus) data it holds
            return make_reply(q, ad=False, answer=default_answer(q))
        return with_options(make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False),
                            (NSID, b"res7.ams"))

    def authoritative(req: Request) -> bytes:
        wire = bytearray(make_reply(req.message, ad=False, answer=default_answer(req.message)))
        wire[2] = (wire[2] | 0x04) & ~0x01  # AA=1, RD=0
        return bytes(wire)

    cfg = EngineConfig(qps=0, timeout=0.5, retries=0)
    with FakeDNS(authoritative) as auth, FakeDNS(failing_resolver) as res:
        zones = parse_zones([f"1.in-addr.arpa ns=127.0.0.1:{auth.port}"], path="t")
        (result,) = await Engine(cfg).sweep(zones, [ResolverSpec("r", HOST, res.port)])
    asked = res.requests + auth.requests
    # The first query, the CD=1 retry and the follow-ups to the resolver and the source.
    assert len(res.requests) >= 2 and len(auth.requests) >= 1
    assert all(edns_options(r.wire) == [(NSID, b"")] for r in asked)
    assert result.observation.nsid == "res7.ams"


# -- the reply side ----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "text"), [
    (b"res100.ams.rrdns.pch.net", "res100.ams.rrdns.pch.net"),
    (b"", ""),  # the server supports NSID but says nothing: not None
    (b" a~", " a~"),
    (b"\x00\x01\xab", "0001ab"),
    (b"caf\xc3\xa9", "636166c3a9"),  # UTF-8 is not printable ASCII: hex, no separators
    (b"tab\there", "7461620968657265"),
    (b"\x7f", "7f"),
])
def test_nsid_text_ascii_as_is_else_lower_hex(raw: bytes, text: str) -> None:
    assert nsid_text(raw) == text


def test_nsid_text_caps_length_with_a_marker() -> None:
    assert nsid_text(b"a" * NSID_SHOWN) == "a" * NSID_SHOWN
    long_ascii = nsid_text(b"b" * 300)
    assert long_ascii == "b" * NSID_SHOWN + "...(300 octets)"
    long_binary = nsid_text(bytes(range(256)) * 256)  # 64 KiB: the most an option can carry
    assert long_binary == bytes(range(NSID_SHOWN)).hex() + "...(65536 octets)"


@pytest.mark.parametrize(("raw", "text"), [
    (b"ams-2.anycast", "ams-2.anycast"),
    (b"\x02\x00\xfe\x80", "0200fe80"),
])
async def test_nsid_of_a_parsed_reply_lands_in_the_observation_and_json(raw: bytes,
                                                                        text: str) -> None:
    obs, _ = await _ask(_servfail(_query(), (NSID, raw)))
    assert obs.outcome is Outcome.REPLY and obs.parsed
    assert obs.rcode == dns.rcode.SERVFAIL and [e.code for e in obs.ede] == [6]
    assert obs.nsid == text
    d = json.loads(json.dumps(obs.to_dict()))
    assert d["nsid"] == text
    assert Observation.from_dict(d) == obs
    assert Observation.from_dict(d).nsid == text


async def test_no_nsid_option_is_none_and_old_json_without_the_key_still_loads() -> None:
    obs, _ = await _ask(_servfail(_query()))
    assert obs.parsed and obs.nsid is None
    d = obs.to_dict()
    assert d["nsid"] is None
    del d["nsid"]
    assert Observation.from_dict(d).nsid is None


def test_only_the_first_of_several_nsid_options_is_kept() -> None:
    p = parse_reply(_servfail(_query(), (NSID, b"first"), (NSID, b"second")))
    assert p.nsid == "first"


async def test_oversized_nsid_is_cut_not_fatal() -> None:
    obs, _ = await _ask(_servfail(_query(), (NSID, b"\xee" * 1000)))
    assert obs.outcome is Outcome.REPLY
    assert obs.nsid == "ee" * NSID_SHOWN + "...(1000 octets)"


def test_lenient_option_path_decodes_nsid_too() -> None:
    # dnspython rejects the EDE text (not UTF-8): the options are decoded by hand.
    wire = _servfail(_query(), (NSID, b"lenient-1"), _ede(6, BAD_UTF8))
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(wire)
    p = parse_reply(wire)
    assert p.options_malformed
    assert p.nsid == "lenient-1"
    assert [e.code for e in p.ede] == [6, 6]  # the one make_reply put there, and ours
    binary = parse_reply(_servfail(_query(), _ede(9, BAD_UTF8), (NSID, b"\x01")))
    assert binary.options_malformed and binary.nsid == "01"


async def test_lenient_path_nsid_reaches_the_observation_also_when_malformed() -> None:
    servfail, _ = await _ask(_servfail(_query(), _ede(6, BAD_UTF8), (NSID, b"site-9")))
    assert servfail.outcome is Outcome.REPLY and servfail.nsid == "site-9"
    # NOERROR with a malformed option is not an answer (MALFORMED), but says who sent it.
    noerror, _ = await _ask(with_options(_secure(_query()), _ede(6, BAD_UTF8),
                                         (NSID, b"site-9")))
    assert noerror.outcome is Outcome.MALFORMED and noerror.detail == "MalformedOptions"
    assert noerror.nsid == "site-9"


def test_nsid_option_running_past_the_opt_does_not_crash() -> None:
    base = _servfail(_query(), (NSID, b"abcd"))
    # OPTION-LENGTH 200 where 4 octets follow: dnspython rejects; the lenient walk stops.
    bad = base[:-6] + (200).to_bytes(2, "big") + base[-4:]
    p = parse_reply(bad)
    assert p.options_malformed and p.nsid is None and p.rcode == dns.rcode.SERVFAIL


def test_random_nsid_bytes_never_raise_anything_but_malformed_wire() -> None:
    rng = random.Random(5001)
    base = _servfail(_query(), (NSID, b"x" * 40))
    for _ in range(3000):
        wire = bytearray(base)
        for _ in range(rng.randint(1, 4)):  # flip bytes in and around the OPT
            wire[rng.randrange(len(wire) - 60, len(wire))] = rng.randrange(256)
        cut = bytes(wire[: rng.randint(len(wire) - 60, len(wire))]) if rng.random() < 0.3 \
            else bytes(wire)
        try:
            p = parse_reply(cut)
        except MalformedWire:
            continue
        assert p.nsid is None or len(p.nsid) <= 2 * NSID_SHOWN + 20


# -- the triage fast path ----------------------------------------------------------------------

async def test_plainly_secure_reply_still_skips_the_parse_nsid_stays_none() -> None:
    for reply in (_secure(_query()), with_options(_secure(_query()), (NSID, b"fast-1"))):
        obs, requests = await _ask(reply)
        assert obs.outcome is Outcome.REPLY and obs.ad
        assert obs.parsed is False  # fixed header read only
        assert obs.nsid is None
        assert edns_options(requests[0].wire) == [(NSID, b"")]
    # The same reply parsed on request does carry the NSID.
    full, _ = await _ask(with_options(_secure(_query()), (NSID, b"fast-1")), triage=False)
    assert full.parsed and full.nsid == "fast-1"


def test_triage_accepts_an_opt_holding_only_an_nsid_and_nothing_else() -> None:
    q = _query()
    tmpl = TemplateCache().get(QNAME, "PTR")
    base = _secure(q)
    ok = [with_options(base, (NSID, b"")), with_options(base, (NSID, b"ams")),
          with_options(base, (NSID, bytes(range(256))))]
    for wire in ok:
        dns.message.from_wire(wire)  # what the triage accepts, dnspython accepts
        assert plainly_secure(wire) and plainly_secure(wire, tmpl)
    # Offsets from the end of "...OPT(ext-rcode, version, flags, RDLENGTH) 00 03 00 03 ams".
    not_plain = {
        "nsid-and-ede": with_options(base, (NSID, b"ams"), _ede(3, b"stale")),
        "ede-then-nsid": with_options(base, _ede(3, b"stale"), (NSID, b"ams")),
        "cookie": with_options(base, (10, bytes(range(1, 25)))),
        "two-nsids": with_options(base, (NSID, b"a"), (NSID, b"b")),
        "nsid-length-short": _patch(with_options(base, (NSID, b"ams")), -4, 2),
        "nsid-length-long": _patch(with_options(base, (NSID, b"ams")), -4, 4),
        "rdlength-long": _patch(with_options(base, (NSID, b"ams")), -8, 8),
        "extended-rcode": _patch(with_options(base, (NSID, b"ams")), -13, 1),
        "edns-version-1": _patch(with_options(base, (NSID, b"ams")), -12, 1),
        "no-ad": with_options(make_reply(q, ad=False, answer=default_answer(q)), (NSID, b"a")),
        "servfail": _servfail(q, (NSID, b"ams")),
    }
    for case, wire in not_plain.items():
        assert not plainly_secure(wire), case
        assert not plainly_secure(wire, TemplateCache().get(QNAME, "PTR")), case


def test_triage_memo_never_lets_a_different_tail_through() -> None:
    q = _query()
    base = _secure(q)
    tmpl = TemplateCache().get(QNAME, "PTR")
    with_nsid = with_options(base, (NSID, b"ams"))
    assert plainly_secure(with_nsid, tmpl) and plainly_secure(with_nsid, tmpl)  # memo built
    # Same length, same bytes up to the NSID's last octet, but a cookie option instead.
    cookie = with_nsid[:-7] + b"\x00\x0a" + with_nsid[-5:]
    assert len(cookie) == len(with_nsid) and not plainly_secure(cookie, tmpl)
    other_site = with_nsid[:-3] + b"fra"  # another instance: still plainly secure
    assert plainly_secure(other_site, tmpl)
    # An empty-OPT shape remembered; a same-length reply whose tail is not an empty OPT.
    assert plainly_secure(base, tmpl) and plainly_secure(base, tmpl)
    tail = base[:-2] + b"\x00\x01"  # RDLENGTH 1 that nothing fills
    assert not plainly_secure(tail, tmpl)


def _patch(wire: bytes, at: int, value: int) -> bytes:
    b = bytearray(wire)
    b[at] = value
    return bytes(b)


def test_triage_nsid_fuzz_accepts_only_what_dnspython_parses() -> None:
    rng = random.Random(3)
    q = _query()
    base = with_options(_secure(q), (NSID, b"nsid-fuzz"))
    tmpl = TemplateCache().get(QNAME, "PTR")
    accepted = 0
    for _ in range(5000):
        wire = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            wire[rng.randrange(len(wire) - 30, len(wire))] = rng.randrange(256)
        data = bytes(wire)
        for t in (None, tmpl):
            if plainly_secure(data, t):
                accepted += 1
                msg = dns.message.from_wire(data)
                assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AD
                assert [o.otype for o in msg.options] == [NSID]
                assert msg.answer and msg.answer[0].rdtype == dns.rdatatype.PTR
    assert accepted  # flips inside the NSID payload keep the reply plainly secure


# -- id.server CH TXT (RFC 4892): a pure builder and decoder, used nowhere yet -----------------

def _id_reply(query: bytes, *strings: bytes, owner: str = "id.server.", rdclass: str = "CH",
              rcode: int = dns.rcode.NOERROR) -> bytes:
    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    if strings:
        text = " ".join('"' + "".join(f"\\{b:03d}" for b in s) + '"' for s in strings)
        r.answer.append(dns.rrset.from_text(owner, 0, rdclass, "TXT", text))
    return r.to_wire()


def test_id_server_template_is_a_chaos_txt_query_with_nsid() -> None:
    tmpl = make_id_server_template()
    msg = dns.message.from_wire(tmpl.wire)
    (question,) = msg.question
    assert question.name == dns.name.from_text("id.server.")
    assert question.rdtype == dns.rdatatype.TXT and question.rdclass == dns.rdataclass.CH
    assert msg.flags == 0 and not msg.ednsflags & dns.flags.DO
    assert edns_options(tmpl.wire) == [(NSID, b"")]
    reply = _id_reply(tmpl.with_id(7), b"unbound-3")
    assert tmpl.matches_question(reply)
    assert not make_template("id.server.", "TXT").matches_question(reply)  # class IN: not ours


def test_id_server_text_decodes_and_never_raises() -> None:
    query = make_id_server_template().with_id(9)
    assert id_server_text(_id_reply(query, b"fra-7.res")) == "fra-7.res"
    assert id_server_text(_id_reply(query, b"a", b"b")) == "ab"
    assert id_server_text(_id_reply(query, b"\x00\xff")) == "00ff"
    assert id_server_text(_id_reply(query, b"z" * 200)) == "z" * NSID_SHOWN + "...(200 octets)"
    assert id_server_text(_id_reply(query)) is None  # no answer
    assert id_server_text(_id_reply(query, b"x", rcode=dns.rcode.REFUSED)) is None
    assert id_server_text(_id_reply(query, b"x", owner="version.bind.")) is None
    assert id_server_text(_id_reply(query, b"x", rdclass="IN")) is None
    assert id_server_text(b"") is None and id_server_text(b"\xff" * 40) is None
    assert id_server_text(_id_reply(query, b"x"), qname="not a..name") is None


async def test_id_server_query_goes_through_the_transport() -> None:
    def chaos(req: Request) -> bytes:
        return _id_reply(req.wire, b"lab-unbound")

    t = Transport(timeout=2.0)
    try:
        with FakeDNS(chaos) as srv:
            raw = await t.exchange(srv.host, srv.port, make_id_server_template())
    finally:
        t.close()
    assert id_server_text(raw.data) == "lab-unbound"
