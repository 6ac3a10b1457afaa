"""The chain asked where each part lives (issue 8): the parent's DS at the parent's servers, every
server address of a zone with its SOA, the zone-apex check, and the zone that signed the data.

Fake resolvers and authoritative servers on 127.0.0.1 (tests/fakedns.py); learnt port-53
servers are routed to the fakes by the recording transport of tests/test_hostile_followups.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from fakedns import FakeDNS, Request, make_auth_reply, make_reply, rrset
from test_hostile_followups import Recorder, recorder, sweep

from probe.diagnose import Evidence
from probe.engine import CheckResult
from probe.investigate import apex_note, parent_from_ds, rrsig_signer
from probe.observation import FLAG_RD, Observation, Outcome, RRsetObs

__all__ = ["recorder"]  # the fixture, shared with test_hostile_followups

SOA_RDATA = "ns.example. admin.example. 7 3600 900 604800 300"


def sig(covered: str, signer: str, labels: int) -> str:
    return f"{covered} 8 {labels} 300 20300101000000 20200101000000 12345 {signer} AAAA"


def labels(name: str) -> int:
    return len(dns.name.from_text(name)) - 1


@dataclass
class World:
    """What the fake resolvers know with CD=1: zone apexes, their NS names, name server
    addresses and extra answers. Without CD every check fails (SERVFAIL)."""

    ns: dict[str, list[str]]  # zone apex -> NS names
    addrs: dict[str, list[str]]  # NS name -> IPv4 addresses
    records: dict[tuple[str, str], list[dns.rrset.RRset]] = field(default_factory=dict)
    ds: str = "signed"  # "signed": DS + RRSIG; "nodata": NODATA with the parent's SOA; "fail"

    def apex(self, name: str) -> str:
        """The closest enclosing zone apex of `name` (the root if none is known)."""
        n = dns.name.from_text(name)
        while n != dns.name.root and n.to_text() not in self.ns:
            n = n.parent()
        return n.to_text()

    def parent(self, zone: str) -> str:
        return self.apex(dns.name.from_text(zone).parent().to_text())

    def handle(self, req: Request) -> bytes:
        q = req.message
        name = q.question[0].name.to_text().lower()
        t = dns.rdatatype.to_text(q.question[0].rdtype)
        if not q.flags & dns.flags.CD:
            return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
        if (name, t) in self.records:
            return make_reply(q, ad=False, answer=self.records[(name, t)])
        nodata_soa = [rrset(self.apex(name), "SOA", SOA_RDATA)]
        if t == "NS" and name in self.ns:
            return make_reply(q, ad=False, answer=[rrset(name, "NS", *self.ns[name])])
        if t == "A" and name in self.addrs:
            return make_reply(q, ad=False, answer=[rrset(name, "A", *self.addrs[name])])
        if t == "SOA" and name in self.ns:
            return make_reply(q, ad=False, answer=[rrset(name, "SOA", SOA_RDATA)])
        if t == "DS" and name in self.ns and name != ".":
            parent = self.parent(name)
            if self.ds == "fail":  # PowerDNS: SERVFAIL even with CD=1 inside a bogus zone
                return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
            if self.ds == "signed":
                return make_reply(q, ad=False, answer=[
                    rrset(name, "DS", "12345 8 2 " + "ab" * 32),
                    rrset(name, "RRSIG", sig("DS", parent, labels(name)))])
            nodata_soa = [rrset(parent, "SOA", SOA_RDATA)]
        return make_reply(q, ad=False, authority=nodata_soa)


def auth_server(req: Request) -> bytes:
    """An authoritative server for any zone: a DS, an SOA or a PTR at the name asked."""
    q = req.message
    name = q.question[0].name
    t = dns.rdatatype.to_text(q.question[0].rdtype)
    data = {"DS": "12345 8 2 " + "cd" * 32, "SOA": SOA_RDATA, "PTR": "host.example."}
    answer = [rrset(name, t, data[t])] if t in data else []
    return make_auth_reply(q, answer=answer)


def asked_for(srv: FakeDNS, qname: str, qtype: str, *, cd: bool | None = None) -> int:
    """Queries `srv` received for (qname, qtype), optionally only those with CD as given."""
    n = 0
    for r in srv.requests:
        q = r.message
        if (q.question[0].name.to_text().lower() == qname
                and dns.rdatatype.to_text(q.question[0].rdtype) == qtype
                and (cd is None or bool(q.flags & dns.flags.CD) is cd)):
            n += 1
    return n


def evidence(results: list[CheckResult]) -> list[Evidence]:
    out = [r.evidence for r in results]
    assert all(e is not None for e in out)
    return [e for e in out if e is not None]


Routes = Callable[[FakeDNS, FakeDNS], dict[str, int]]


# -- the parent's DS, from the parent's own servers --------------------------------------------

@pytest.mark.parametrize("ds_mode", ["signed", "nodata", "fail"])
async def test_parent_ds_is_asked_at_the_parents_servers_once_per_zone(
        recorder: Recorder, ds_mode: str) -> None:
    """Two zones under one parent, two failing resolvers: the parent (found from the DS
    RRSIG signer, from the NODATA SOA, or by walking up with SOA) is discovered once and each
    of its servers is asked each zone's DS once, RD=0. Before: the parent was never asked."""
    world = World(ns={"in-addr.arpa.": ["pns.example."], "1.in-addr.arpa.": ["ns1.example."],
                      "2.in-addr.arpa.": ["ns1.example."]},
                  addrs={"pns.example.": ["127.0.0.20"], "ns1.example.": ["127.0.0.10"]},
                  ds=ds_mode)
    with FakeDNS(auth_server) as parent, FakeDNS(auth_server) as zone_auth, \
            FakeDNS(world.handle) as r1, FakeDNS(world.handle) as r2:
        recorder.routes = {"127.0.0.20": parent.port, "127.0.0.10": zone_auth.port}
        results = await sweep({"r1": r1, "r2": r2},
                              zones=["1.in-addr.arpa", "2.in-addr.arpa"])
        parent_ns = asked_for(r1, "in-addr.arpa.", "NS") + asked_for(r2, "in-addr.arpa.", "NS")
        ds_at_parent = [asked_for(parent, z, "DS") for z in ("1.in-addr.arpa.",
                                                                "2.in-addr.arpa.")]
        ds_at_zone = len([r for r in zone_auth.requests
                          if r.message.question[0].rdtype == dns.rdatatype.DS])
    evs = evidence(results)
    assert len(evs) == 4
    for ev in evs:
        assert ev.parent == "in-addr.arpa."
        assert [p.address for p in ev.parent_ds] == ["127.0.0.20"]
        ds = ev.parent_ds[0].ds
        assert ds is not None and ds.outcome is Outcome.REPLY and not ds.rd
        assert ds.rrsets("DS", ev.zone)[0].rdatas == ("12345 8 2 " + "cd" * 32,)
        assert ev.signer is None  # the data is the zone's own
        assert not any(n.startswith("not-a-zone-apex") for n in ev.notes)
    # 64 zones under one parent would cost one discovery too: the NS set asked once per
    # resolver that votes, and each zone's DS once per parent server, whichever resolvers fail.
    assert parent_ns == 2
    assert ds_at_parent == [1, 1]
    assert ds_at_zone == 0


def test_parent_from_ds_answer() -> None:
    def obs(answer: tuple[RRsetObs, ...] = (), authority: tuple[RRsetObs, ...] = ()
            ) -> Observation:
        return Observation("r", "127.0.0.1", 53, "a.b.", "DS", True, True, 0.0,
                           Outcome.REPLY, rcode=0, flags=0, answer=answer,
                           authority=authority)

    ds = RRsetObs("a.b.", "DS", 300, ("1 8 2 AB",), (sig("DS", "b.", 2),))
    assert rrsig_signer(ds) == "b."
    assert parent_from_ds("a.b.", obs((ds,))) == "b."
    # A signer that is not a proper ancestor (a hostile or broken answer) is not the parent.
    bad = RRsetObs("a.b.", "DS", 300, ("1 8 2 AB",), (sig("DS", "a.b.", 2),))
    assert parent_from_ds("a.b.", obs((bad,))) is None
    soa = RRsetObs("b.", "SOA", 300, (SOA_RDATA,))
    assert parent_from_ds("a.b.", obs(authority=(soa,))) == "b."
    other = RRsetObs("c.", "SOA", 300, (SOA_RDATA,))
    assert parent_from_ds("a.b.", obs(authority=(other,))) is None


# -- every address of every NS, and its SOA ----------------------------------------------------

async def test_every_ns_address_is_asked_with_its_soa(recorder: Recorder) -> None:
    """Five addresses over four NS names: all five are asked DNSKEY, SOA and the data, each
    SOA once per server and zone although two resolvers fail. Before: the first three only,
    and no SOA."""
    addresses = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"]
    world = World(ns={"in-addr.arpa.": ["pns.example."],
                      "1.in-addr.arpa.": ["ns1.example.", "ns2.example.", "ns3.example.",
                                          "ns4.example."]},
                  addrs={"pns.example.": ["127.0.0.20"],
                         "ns1.example.": addresses[:2], "ns2.example.": [addresses[2]],
                         "ns3.example.": [addresses[3]], "ns4.example.": [addresses[4]]})
    with FakeDNS(auth_server) as parent, FakeDNS(auth_server) as zone_auth, \
            FakeDNS(world.handle) as r1, FakeDNS(world.handle) as r2:
        recorder.routes = {"127.0.0.20": parent.port, **{a: zone_auth.port for a in addresses}}
        results = await sweep({"r1": r1, "r2": r2}, zones="1.in-addr.arpa 5/PTR")
        soa_queries = [r for r in zone_auth.requests
                       if r.message.question[0].rdtype == dns.rdatatype.SOA]
    sent = {h for h, p in recorder.sent if p == 53}
    assert set(addresses) <= sent
    for ev in evidence(results):
        assert sorted(a.address for a in ev.auth) == addresses
        for a in ev.auth:
            assert a.soa is not None and a.soa.outcome is Outcome.REPLY
            assert a.soa.flags is not None and not a.soa.flags & FLAG_RD
            assert a.soa.rrsets("SOA", "1.in-addr.arpa.")[0].rdatas == (SOA_RDATA,)
            assert a.answer is not None and a.answer.qname == "5.1.in-addr.arpa."
    assert len(soa_queries) == len(addresses)
    assert all(q.message.question[0].name.to_text() == "1.in-addr.arpa." for q in soa_queries)


# -- is the zones.txt entry a zone apex? --------------------------------------------------------

async def test_zone_that_is_not_an_apex_is_noted(recorder: Recorder) -> None:
    world = World(ns={"in-addr.arpa.": ["pns.example."], "1.in-addr.arpa.": ["ns1.example."]},
                  addrs={"pns.example.": ["127.0.0.20"], "ns1.example.": ["127.0.0.10"]})
    with FakeDNS(auth_server) as parent, FakeDNS(auth_server) as zone_auth, \
            FakeDNS(world.handle) as r1, FakeDNS(world.handle) as r2:
        recorder.routes = {"127.0.0.20": parent.port, "127.0.0.10": zone_auth.port}
        results = await sweep({"r1": r1, "r2": r2}, zones="5.1.in-addr.arpa 1/PTR")
        soa_asked = (asked_for(r1, "5.1.in-addr.arpa.", "SOA", cd=True)
                     + asked_for(r2, "5.1.in-addr.arpa.", "SOA", cd=True))
    note = ("not-a-zone-apex: 5.1.in-addr.arpa. is not a zone apex; "
            "the apex is 1.in-addr.arpa.")
    for ev in evidence(results):
        assert note in ev.notes
        assert ev.zone_soa is not None and ev.zone_soa.cd
        # The enclosing zone, asked for the DS of a name that is not a zone, is its "parent".
        assert ev.parent == "1.in-addr.arpa."
    assert soa_asked == 1  # once per zone and sweep, not once per failing resolver


def test_apex_note_only_for_an_enclosing_apex() -> None:
    def obs(answer: tuple[RRsetObs, ...] = (), authority: tuple[RRsetObs, ...] = (),
            rcode: int = 0) -> Observation:
        return Observation("r", "127.0.0.1", 53, "a.b.", "SOA", True, True, 0.0,
                           Outcome.REPLY, rcode=rcode, flags=0, answer=answer,
                           authority=authority)

    at_b = RRsetObs("b.", "SOA", 300, (SOA_RDATA,))
    assert apex_note("a.b.", obs(authority=(at_b,))) == \
        "not-a-zone-apex: a.b. is not a zone apex; the apex is b."
    assert apex_note("a.b.", obs(authority=(at_b,), rcode=3)) is not None  # NXDOMAIN too
    assert apex_note("a.b.", obs((RRsetObs("a.b.", "SOA", 300, (SOA_RDATA,)),))) is None
    assert apex_note("a.b.", obs(authority=(at_b,), rcode=2)) is None  # SERVFAIL: unknown
    unrelated = RRsetObs("c.", "SOA", 300, (SOA_RDATA,))
    assert apex_note("a.b.", obs(authority=(unrelated,))) is None
    assert apex_note("a.b.", None) is None


# -- following the validated data into another zone --------------------------------------------

@pytest.mark.parametrize(("target", "target_zone", "target_parent", "parent_ns", "signed"), [
    # CNAME out of the zone, signed there; unsigned (the SOA at the target finds its zone)
    ("5.rev.example.", "rev.example.", "example.", "127.0.0.20", True),
    ("5.rev.example.", "rev.example.", "example.", "127.0.0.20", False),
    # RFC 2317: the target is inside the zone name but signed below a further cut
    ("5.0-25.1.in-addr.arpa.", "0-25.1.in-addr.arpa.", "1.in-addr.arpa.", "127.0.0.10", True),
])
async def test_cname_into_another_zone_gives_signer_evidence(
        recorder: Recorder, target: str, target_zone: str, target_parent: str,
        parent_ns: str, signed: bool) -> None:
    """Before: the follow-ups stopped at the check's zone; the data's own zone was never
    asked."""
    qname = "5.1.in-addr.arpa."
    ptr = [rrset(qname, "CNAME", target), rrset(target, "PTR", "host.example.")]
    if signed:
        ptr.append(rrset(target, "RRSIG", sig("PTR", target_zone, labels(target))))
    world = World(ns={"in-addr.arpa.": ["pns.example."], "example.": ["pns.example."],
                      "1.in-addr.arpa.": ["ns1.example."], target_zone: ["ns3.example."]},
                  addrs={"pns.example.": ["127.0.0.20"], "ns1.example.": ["127.0.0.10"],
                         "ns3.example.": ["127.0.0.30"]},
                  records={(qname, "PTR"): ptr})
    with FakeDNS(auth_server) as parent, FakeDNS(auth_server) as zone_auth, \
            FakeDNS(auth_server) as target_auth, FakeDNS(world.handle) as r1, \
            FakeDNS(world.handle) as r2:
        recorder.routes = {"127.0.0.20": parent.port, "127.0.0.10": zone_auth.port,
                           "127.0.0.30": target_auth.port}
        results = await sweep({"r1": r1, "r2": r2}, zones="1.in-addr.arpa 5/PTR")
        data_at_target = asked_for(target_auth, target, "PTR")
        dnskey_at_target = asked_for(target_auth, target_zone, "DNSKEY")
        ds_at_parent = asked_for(parent, target_zone, "DS") \
            + asked_for(zone_auth, target_zone, "DS")
    for ev in evidence(results):
        assert ev.zone == "1.in-addr.arpa."
        s = ev.signer
        assert s is not None
        assert (s.zone, s.qname, s.qtype) == (target_zone, target, "PTR")
        assert [a.address for a in s.auth] == ["127.0.0.30"]
        assert s.parent == target_parent
        assert [p.address for p in s.parent_ds] == [parent_ns]
        assert s.cached_dnskey is not None and s.cached_dnskey.qname == target_zone
        assert s.signer is None
    # Shared within the sweep like the check's own zone: once per server, not per resolver.
    assert (data_at_target, dnskey_at_target, ds_at_parent) == (1, 1, 1)


async def test_signer_chain_is_depth_bounded(recorder: Recorder) -> None:
    """A CNAME chain through three further zones: evidence follows two of them, no more."""
    chain = ["5.1.in-addr.arpa.", "5.z1.example.", "5.z2.example.", "5.z3.example."]
    zones = ["1.in-addr.arpa.", "z1.example.", "z2.example.", "z3.example."]
    records = {(a, "PTR"): [rrset(a, "CNAME", b), rrset(b, "PTR", "host.example."),
                            rrset(b, "RRSIG", sig("PTR", z, 3))]
               for a, b, z in zip(chain, chain[1:], zones[1:], strict=False)}
    world = World(ns={"in-addr.arpa.": ["pns.example."], "example.": ["pns.example."],
                      **{z: ["ns1.example."] for z in zones}},
                  addrs={"pns.example.": ["127.0.0.20"], "ns1.example.": ["127.0.0.10"]},
                  records=records)
    with FakeDNS(auth_server) as auth, FakeDNS(world.handle) as r1:
        recorder.routes = {"127.0.0.20": auth.port, "127.0.0.10": auth.port}
        (res,) = await sweep({"r1": r1}, zones="1.in-addr.arpa 5/PTR")
        asked_z3 = asked_for(r1, "z3.example.", "DNSKEY")
    ev = res.evidence
    assert ev is not None and ev.signer is not None and ev.signer.signer is not None
    assert (ev.signer.zone, ev.signer.signer.zone) == ("z1.example.", "z2.example.")
    assert ev.signer.signer.signer is None
    assert asked_z3 == 0


async def test_cname_target_zone_found_through_another_resolver(recorder: Recorder) -> None:
    """PowerDNS answers SERVFAIL with only the CNAME, even with CD=1, and SERVFAILs every
    question inside the (bogus) target zone: the target's apex comes from another resolver.
    Before: no apex, no signer evidence, and the failure stayed unexplained (lab zone 63)."""
    qname, target, target_zone = "5.1.in-addr.arpa.", "5.0-25.2.in-addr.arpa.", "2.in-addr.arpa."
    world = World(ns={"in-addr.arpa.": ["pns.example."], "example.": ["pns.example."],
                      "1.in-addr.arpa.": ["ns1.example."], target_zone: ["ns3.example."]},
                  addrs={"pns.example.": ["127.0.0.20"], "ns1.example.": ["127.0.0.10"],
                         "ns3.example.": ["127.0.0.30"]},
                  records={(qname, "PTR"): [rrset(qname, "CNAME", target),
                                            rrset(target, "PTR", "host.example.")]})

    def pdns(req: Request) -> bytes:
        q = req.message
        name = q.question[0].name.to_text().lower()
        if name == qname:
            return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False,
                              answer=[rrset(qname, "CNAME", target)])
        if name.endswith(target_zone):
            return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
        return world.handle(req)

    with FakeDNS(auth_server) as parent, FakeDNS(auth_server) as zone_auth, \
            FakeDNS(auth_server) as target_auth, FakeDNS(pdns) as r1, \
            FakeDNS(world.handle) as r2:
        recorder.routes = {"127.0.0.20": parent.port, "127.0.0.10": zone_auth.port,
                           "127.0.0.30": target_auth.port}
        results = await sweep({"pdns": r1, "r2": r2}, zones="1.in-addr.arpa 5/PTR")
    pdns_ev = next(r.evidence for r in results if r.resolver.name == "pdns")
    assert pdns_ev is not None and pdns_ev.signer is not None
    assert (pdns_ev.signer.zone, pdns_ev.signer.qname) == (target_zone, target)
    assert [a.address for a in pdns_ev.signer.auth] == ["127.0.0.30"]
