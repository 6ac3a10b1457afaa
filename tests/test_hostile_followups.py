"""Hostile follow-ups: the learnt-address filter, bounded NS fan-out, and authoritative servers
found independently of the resolver under test (fake resolvers on 127.0.0.1, tests/fakedns.py).

Authoritative servers learnt from DNS are asked on port 53; a recording transport sends those
queries to a fake authoritative server's port instead, or refuses them (nothing is sent), so no
packet leaves what a test allows and the test can list every destination.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from fakedns import HOST, FakeDNS, Request, default_answer, make_reply, rrset, with_id

from probe.engine import CheckResult, Engine, EngineConfig
from probe.errors import Unreachable
from probe.investigate import (
    MAX_NS_NAMES,
    MAX_NS_RESOLVERS,
    MAX_SWEEP_LOOKUPS,
    MAX_ZONE_LOOKUPS,
    FollowUpBudget,
    Investigator,
    embedded_ipv4,
    may_ask,
)
from probe.query import Querier
from probe.resolvers import ResolverSpec
from probe.transport import RawReply, Transport
from probe.wire import QueryTemplate, TemplateCache
from probe.zones import parse_zones

# -- the address filter -------------------------------------------------------------------------

# (address, allowed without --allow-local-auth, allowed with it)
ADDRESSES = [
    ("8.8.8.8", True, True),
    ("2606:4700::1111", True, True),
    ("127.77.0.9", False, True),
    ("10.1.2.3", False, True),
    ("::1", False, True),
    ("fc00::1", False, True),
    ("192.0.2.1", False, True),  # documentation: not global
    # IPv6 forms that embed an IPv4 address are judged by that address (issue 7).
    ("::127.77.0.9", False, True),  # IPv4-compatible (deprecated)
    ("::8.8.8.8", True, True),
    ("::ffff:127.77.0.9", False, True),  # IPv4-mapped
    ("::ffff:10.0.0.1", False, True),
    ("::ffff:8.8.8.8", True, True),
    ("64:ff9b::7f4d:9", False, True),  # NAT64 well-known prefix, 127.77.0.9
    ("64:ff9b::a00:1", False, True),  # 10.0.0.1
    ("64:ff9b::808:808", True, True),
    ("64:ff9b:1::808:808", False, True),  # RFC 8215 local-use prefix: a local network's own
    ("2002:7f4d:9::1", False, True),  # 6to4, 127.77.0.9 in bits 16-48
    ("2002:c0a8:101::1", False, True),  # 192.168.1.1
    ("2002:808:808::1", True, True),
    ("2001:0:7f4d:9:0:0:f7f7:f7f7", False, True),  # Teredo, server 127.77.0.9
    ("2001:0:808:808::1", False, False),  # Teredo client 255.255.255.254: broadcast range
    ("2001:0:808:808:0:0:f5ff:fffe", False, True),  # client 10.0.0.1 (obfuscated)
    ("2001:0:808:808:0:0:f7f7:f7f7", True, True),  # server and client 8.8.8.8
    # Never, whatever the flag: multicast, unspecified, broadcast, link-local, "this network".
    ("224.0.0.1", False, False),
    ("255.255.255.255", False, False),
    ("240.0.0.1", False, False),
    ("0.0.0.0", False, False),
    ("0.1.2.3", False, False),
    ("169.254.169.254", False, False),  # cloud metadata
    ("::", False, False),
    ("ff02::1", False, False),
    ("fe80::1", False, False),
    ("fe80::1%eth0", False, False),
    ("::ffff:224.0.0.1", False, False),
    ("::ffff:169.254.169.254", False, False),
    ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 of 169.254.169.254
    ("2002:e000:1::1", False, False),  # 6to4 of 224.0.0.1
    ("2001:0:808:808::ffff:ffff", False, False),  # Teredo client 0.0.0.0
    ("::0.0.0.2", False, False),  # IPv4-compatible "this network"
    # Not addresses at all.
    ("", False, False),
    ("ns1.example.", False, False),
    ("127.0.0.1:53", False, False),
    ("1.2.3", False, False),
]


@pytest.mark.parametrize(("address", "public", "lab"), ADDRESSES)
def test_may_ask(address: str, public: bool, lab: bool) -> None:
    assert may_ask(address, allow_local=False) is public
    assert may_ask(address, allow_local=True) is lab


def test_embedded_ipv4_is_found_in_every_form() -> None:
    import ipaddress

    def v4(a: str) -> list[str]:
        return [str(x) for x in embedded_ipv4(ipaddress.IPv6Address(a))]

    assert v4("::ffff:1.2.3.4") == ["1.2.3.4"]
    assert v4("::1.2.3.4") == ["1.2.3.4"]
    assert v4("64:ff9b::1.2.3.4") == ["1.2.3.4"]
    assert v4("2002:102:304::1") == ["1.2.3.4"]
    assert v4("2001:0:102:304::fefd:fcfb") == ["1.2.3.4", "1.2.3.4"]
    assert v4("::1") == v4("::") == v4("2606:4700::1111") == []


# -- helpers: fake resolvers, a recording transport ------------------------------------------

Addrs = Callable[[str, str], list[str]]  # (name, "A" | "AAAA") -> addresses


def fake_resolver(ns: Callable[[str], list[str] | None], addrs: Addrs) -> Callable[
        [Request], bytes]:
    """SERVFAIL without CD (the check fails); with CD=1 the NS set `ns(zone)` (None: SERVFAIL,
    as PowerDNS answers for a zone it finds bogus), `addrs` for A/AAAA, else plain data."""

    ns_replies: dict[str, bytes] = {}  # 2,000-name replies are built once per zone

    def handle(req: Request) -> bytes:
        q = req.message
        name = q.question[0].name.to_text().lower()
        rdtype = q.question[0].rdtype
        if not q.flags & dns.flags.CD:
            return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
        if rdtype == dns.rdatatype.NS:
            names = ns(name)
            if names is None:
                return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
            if name not in ns_replies:
                ns_replies[name] = big_reply(q, [rrset(name, "NS", *names)] if names else [])
            return with_id(ns_replies[name], req.qid)
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            t = dns.rdatatype.to_text(rdtype)
            found = addrs(name, t)
            return make_reply(q, ad=False, answer=[rrset(name, t, *found)] if found else [])
        return make_reply(q, ad=False, answer=default_answer(q))

    return handle


def big_reply(q: dns.message.Message, answer: list[dns.rrset.RRset]) -> bytes:
    """A reply over the 1,232 bytes the probe offers (a hostile resolver sends it anyway)."""
    r = dns.message.make_response(q, recursion_available=True)
    r.answer.extend(answer)
    return r.to_wire(max_size=65535)


def authoritative(req: Request) -> bytes:
    wire = bytearray(make_reply(req.message, ad=False, answer=default_answer(req.message)))
    wire[2] = (wire[2] | 0x04) & ~0x01  # AA=1, RD=0
    return bytes(wire)


class Recorder:
    """Every destination the probe sends to; port-53 servers go to `routes` or nowhere."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.routes: dict[str, int] = {}  # learnt server address -> fake server's port

    def transport_class(self) -> type[Transport]:
        rec = self

        class Recording(Transport):
            async def exchange(self, host: str, port: int, tmpl: QueryTemplate) -> RawReply:
                rec.sent.append((host, port))
                if port == 53:
                    if host not in rec.routes:
                        raise Unreachable("not allowed in this test")  # nothing is sent
                    host, port = HOST, rec.routes[host]
                return await super().exchange(host, port, tmpl)

        return Recording


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    monkeypatch.setattr("probe.engine.Transport", rec.transport_class())
    yield rec


def asked(srv: FakeDNS, *types: str) -> int:
    want = {dns.rdatatype.from_text(t) for t in types}
    return sum(1 for r in srv.requests if r.message.question[0].rdtype in want)


def one_address(name: str, t: str) -> list[str]:
    return ["127.0.0.10"] if t == "A" and name == "ns1.example." else []


ZONE = parse_zones(["1.in-addr.arpa"], path="t")


async def sweep(resolvers: dict[str, FakeDNS], *, allow_local: bool = True,
                zones: str | list[str] = "1.in-addr.arpa") -> list[CheckResult]:
    cfg = EngineConfig(qps=0, timeout=2.0, retries=0, allow_local_auth=allow_local)
    zs = parse_zones([zones] if isinstance(zones, str) else zones, path="t")
    return await Engine(cfg).sweep(
        zs, [ResolverSpec(name, HOST, srv.port) for name, srv in resolvers.items()])


# -- bounded fan-out -----------------------------------------------------------------------------

def many_names(zone: str, n: int = 2000) -> list[str]:
    # Short names, so 2,000 of them fit one 64 KB message: "17.n1."
    return [f"{i}.n{zone.split('.')[0]}." for i in range(n)]


def counted_address(name: str, t: str) -> list[str]:
    i = int(name.split(".", 1)[0])
    return [f"127.0.1.{i % 250 + 1}"] if t == "A" else [f"::ffff:127.0.2.{i % 250 + 1}"]


async def test_ns_reply_with_2000_names_costs_a_bounded_number_of_queries(
        recorder: Recorder) -> None:
    handler = fake_resolver(lambda zone: many_names(zone), counted_address)
    with FakeDNS(authoritative) as auth, FakeDNS(handler) as r1, FakeDNS(handler) as r2:
        recorder.routes = {f"127.0.1.{i}": auth.port for i in range(1, 251)}
        start = time.monotonic()
        results = await sweep({"r1": r1, "r2": r2})
        elapsed = time.monotonic() - start
        ns = asked(r1, "NS") + asked(r2, "NS")
        lookups = asked(r1, "A", "AAAA") + asked(r2, "A", "AAAA")
        zone_lookups = sum(1 for srv in (r1, r2) for r in srv.requests
                           if r.message.question[0].name.to_text().endswith(".n1."))
        auth_queries = len(auth.requests)
    # Before: 8,029 follow-up queries for one such reply. The parent zone (in-addr.arpa.,
    # whose DS is asked at its own servers) is discovered under the same bounds.
    assert 2 <= ns <= 2 * MAX_NS_RESOLVERS
    assert 0 < zone_lookups <= MAX_ZONE_LOOKUPS == 2 * 2 * MAX_NS_NAMES
    assert zone_lookups < lookups <= 2 * MAX_ZONE_LOOKUPS
    # Up to twice max_auth_servers (16) addresses: DNSKEY, SOA and the name; the parent's DS.
    assert 0 < auth_queries <= 2 * 16 * 3 + 2 * 16
    assert elapsed < 20
    for r in results:
        ev = r.evidence
        assert ev is not None
        assert (ev.auth_source, ev.auth_resolvers) == ("discovered", ("r1", "r2"))
        assert "NS set of 1.in-addr.arpa. has 2000 names: looked up the first 8 (sorted)" \
            in ev.notes
        assert len(ev.auth) == 6  # every distinct reachable address of the 8 names
    # Only the resolvers and the servers both resolvers named: nothing else was tried (the
    # IPv6 forms are tried too now that every address is asked; the recorder refuses them).
    named = {str(ipaddress.ip_address(f"::ffff:127.0.2.{i}")) for i in range(1, 251)}
    assert {h for h, _ in recorder.sent} <= {HOST} | set(recorder.routes) | named


async def test_sweep_budget_bounds_lookups_across_zones(recorder: Recorder) -> None:
    """Each of 10 zones names 50 other servers: the sweep stops looking up at its budget."""
    handler = fake_resolver(lambda zone: many_names(zone, 50), counted_address)
    zones = [f"{n}.in-addr.arpa" for n in range(1, 11)]
    with FakeDNS(authoritative) as auth, FakeDNS(handler) as r1, FakeDNS(handler) as r2:
        recorder.routes = {f"127.0.1.{i}": auth.port for i in range(1, 251)}
        results = await asyncio.wait_for(sweep({"r1": r1, "r2": r2}, zones=zones), 60)
        lookups = asked(r1, "A", "AAAA") + asked(r2, "A", "AAAA")
        ns = asked(r1, "NS") + asked(r2, "NS")
    assert lookups <= MAX_SWEEP_LOOKUPS
    assert ns <= MAX_NS_RESOLVERS * len(zones)
    notes = [n for r in results if r.evidence for n in r.evidence.notes]
    assert any(f"per-sweep limit of {MAX_SWEEP_LOOKUPS} address lookups reached" in n
               for n in notes)


async def test_per_zone_lookup_cap() -> None:
    handler = fake_resolver(lambda zone: many_names(zone, 50), counted_address)
    with FakeDNS(handler) as r1, FakeDNS(handler) as r2:
        resolvers = [ResolverSpec("r1", HOST, r1.port), ResolverSpec("r2", HOST, r2.port)]
        transport = Transport(timeout=0.5)
        inv = Investigator(Querier(transport, retries=0, clock=time.time), resolvers,
                           TemplateCache(), max_zone_lookups=5, allow_local_auth=True)
        try:
            found = await inv._discover(ZONE[0], resolvers[0])
        finally:
            transport.close()
        assert asked(r1, "A", "AAAA") + asked(r2, "A", "AAAA") == 5
    assert "per-zone limit of 5 address lookups reached: 27 not sent" in found.notes
    # Name by name: the first name's four lookups are whole, so its address is agreed on.
    assert found.servers[0] == ("127.0.1.1", 53)


async def test_budget_object_is_shared_and_counted() -> None:
    budget = FollowUpBudget(10)
    handler = fake_resolver(lambda zone: many_names(zone, 50), counted_address)
    with FakeDNS(handler) as r1, FakeDNS(handler) as r2:
        resolvers = [ResolverSpec("r1", HOST, r1.port), ResolverSpec("r2", HOST, r2.port)]
        transport = Transport(timeout=0.5)
        inv = Investigator(Querier(transport, retries=0, clock=time.time), resolvers,
                           TemplateCache(), budget=budget, allow_local_auth=False)
        try:
            zones = parse_zones(["1.in-addr.arpa", "2.in-addr.arpa"], path="t")
            found = [await inv._discover(z, resolvers[0]) for z in zones]
        finally:
            transport.close()
        lookups = asked(r1, "A", "AAAA") + asked(r2, "A", "AAAA")
    assert budget.used == lookups == 10
    # Zone 1: 8 names x 2 types x 2 resolvers wanted, 10 sent; zone 2: none left.
    assert "per-sweep limit of 10 address lookups reached: 22 not sent" in found[0].notes
    assert "per-sweep limit of 10 address lookups reached: 32 not sent" in found[1].notes
    # 127.x without --allow-local-auth: nothing to ask, whatever the resolvers agree on.
    assert all(f.servers == () for f in found)


# -- independent server discovery ----------------------------------------------------------------

def honest() -> Callable[[Request], bytes]:
    return fake_resolver(lambda zone: ["ns1.example.", "ns2.example."], one_address)


def liar() -> Callable[[Request], bytes]:
    return fake_resolver(lambda zone: ["ns.evil.example."],
                         lambda name, t: ["127.0.0.66"] if t == "A" else [])


async def test_failing_hostile_resolver_does_not_choose_the_servers(recorder: Recorder) -> None:
    with FakeDNS(authoritative) as auth, FakeDNS(liar()) as bad, FakeDNS(honest()) as g1, \
            FakeDNS(honest()) as g2:
        recorder.routes = {"127.0.0.10": auth.port, "127.0.0.66": auth.port}
        results = await sweep({"bad": bad, "g1": g1, "g2": g2})
        bad_ns = asked(bad, "A", "AAAA") + sum(
            1 for r in bad.requests if r.message.question[0].rdtype == dns.rdatatype.NS
            and r.message.question[0].name.to_text() == "1.in-addr.arpa.")
    for r in results:
        assert r.evidence is not None
        assert (r.evidence.auth_source, r.evidence.auth_resolvers) == ("discovered", ("g1", "g2"))
        assert [a.address for a in r.evidence.auth] == ["127.0.0.10"]
    assert ("127.0.0.66", 53) not in recorder.sent
    # One discovery for the zone, shared by the three failing resolvers; when "bad" failed
    # first it went last and was never needed.
    assert bad_ns in (0, 1)


async def test_hostile_resolver_asked_first_is_outvoted() -> None:
    """Whichever resolver fails first, the NS names must be named by two resolvers."""
    with FakeDNS(liar()) as bad, FakeDNS(honest()) as g1, FakeDNS(honest()) as g2:
        resolvers = [ResolverSpec("bad", HOST, bad.port), ResolverSpec("g1", HOST, g1.port),
                     ResolverSpec("g2", HOST, g2.port)]
        transport = Transport(timeout=0.5)
        inv = Investigator(Querier(transport, retries=0, clock=time.time), resolvers,
                           TemplateCache(), allow_local_auth=True)
        try:
            # g2 failed first: bad and g1 are asked first, disagree, then g2 settles it.
            found = await inv._discover(ZONE[0], resolvers[2])
        finally:
            transport.close()
        assert asked(bad, "A", "AAAA") == 0  # its names were never agreed on
    assert (found.source, found.resolvers) == ("discovered", ("g1", "g2"))
    assert found.servers == (("127.0.0.10", 53),)


async def test_disagreeing_resolvers_give_no_servers(recorder: Recorder) -> None:
    with FakeDNS(liar()) as bad, FakeDNS(honest()) as good:
        results = await sweep({"bad": bad, "good": good})
    for r in results:
        assert r.evidence is not None
        assert r.evidence.auth_source == "none"
        assert any("disagree on the NS set" in n for n in r.evidence.notes)
    assert not [d for d in recorder.sent if d[1] == 53]


async def test_address_lie_by_one_of_two_resolvers_is_not_used(recorder: Recorder) -> None:
    lying = fake_resolver(lambda zone: ["ns1.example."],
                          lambda name, t: ["127.0.0.66"] if t == "A" else [])
    with FakeDNS(lying) as bad, FakeDNS(honest()) as good:
        results = await sweep({"bad": bad, "good": good})
    for r in results:
        assert r.evidence is not None and r.evidence.auth_source == "none"
        assert any("no usable address agreed" in n for n in r.evidence.notes)
    assert not [d for d in recorder.sent if d[1] == 53]


async def test_resolver_failing_address_lookup_abstains(recorder: Recorder) -> None:
    """Name servers inside a zone PowerDNS finds bogus: it gave the NS set (cached before the
    cut-over) but SERVFAILs the address lookup. It abstains; it does not veto the other."""
    def refuse_addresses(req: Request) -> bytes:
        q = req.message
        if q.question[0].rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
        return fake_resolver(lambda zone: ["ns1.example."], one_address)(req)

    with FakeDNS(authoritative) as auth, FakeDNS(refuse_addresses) as p, \
            FakeDNS(honest()) as g1:
        recorder.routes = {"127.0.0.10": auth.port}
        results = await sweep({"pdns": p, "g1": g1})
    for r in results:
        assert r.evidence is not None
        assert (r.evidence.auth_source, r.evidence.auth_resolvers) == ("discovered", ("g1",))
        assert [a.address for a in r.evidence.auth] == ["127.0.0.10"]
        assert any("pdns could not look up ns1.example." in n
                   and "not confirmed by a second resolver" in n for n in r.evidence.notes)


async def test_resolver_refusing_ns_is_passed_over(recorder: Recorder) -> None:
    """PowerDNS answers SERVFAIL even with CD=1 for a zone it finds bogus: ask the next."""
    pdns = fake_resolver(lambda zone: None, one_address)
    with FakeDNS(authoritative) as auth, FakeDNS(pdns) as p, FakeDNS(honest()) as g1, \
            FakeDNS(honest()) as g2:
        recorder.routes = {"127.0.0.10": auth.port}
        results = await sweep({"pdns": p, "g1": g1, "g2": g2})
    sources = {(r.evidence.auth_source, r.evidence.auth_resolvers) for r in results if r.evidence}
    assert sources == {("discovered", ("g1", "g2"))}
    assert all(r.evidence and [a.address for a in r.evidence.auth] == ["127.0.0.10"]
               for r in results)


async def test_only_one_resolver_answering_is_marked(recorder: Recorder) -> None:
    pdns = fake_resolver(lambda zone: None, one_address)
    with FakeDNS(authoritative) as auth, FakeDNS(pdns) as p, FakeDNS(honest()) as g1:
        recorder.routes = {"127.0.0.10": auth.port}
        results = await sweep({"pdns": p, "g1": g1})
    for r in results:
        assert r.evidence is not None
        assert (r.evidence.auth_source, r.evidence.auth_resolvers) == ("discovered", ("g1",))
        assert any("not confirmed by a second resolver" in n for n in r.evidence.notes)
        assert [a.address for a in r.evidence.auth] == ["127.0.0.10"]


async def test_single_configured_resolver_is_marked(recorder: Recorder) -> None:
    with FakeDNS(authoritative) as auth, FakeDNS(honest()) as g1:
        recorder.routes = {"127.0.0.10": auth.port}
        (res,) = await sweep({"g1": g1})
    assert res.evidence is not None
    assert (res.evidence.auth_source, res.evidence.auth_resolvers) == ("discovered", ("g1",))
    assert [a.address for a in res.evidence.auth] == ["127.0.0.10"]


async def test_embedded_loopback_forms_are_not_asked(recorder: Recorder) -> None:
    """AAAA answers in IPv6 forms that stand for 127.77.0.9 (issue 7): none is asked."""
    forms = ["::127.77.0.9", "64:ff9b::7f4d:9", "2002:7f4d:9::1", "::ffff:127.77.0.9",
             "2001:0:7f4d:9::1"]
    resolver = fake_resolver(lambda zone: ["ns1.example."],
                             lambda name, t: forms if t == "AAAA" else [])
    with FakeDNS(resolver) as r1, FakeDNS(resolver) as r2:
        results = await sweep({"r1": r1, "r2": r2}, allow_local=False)
    assert all(r.evidence and r.evidence.auth_source == "none" for r in results)
    assert not [d for d in recorder.sent if d[1] == 53]
    assert {h for h, _ in recorder.sent} == {HOST}


async def test_zones_file_servers_are_unchanged(recorder: Recorder) -> None:
    with FakeDNS(authoritative) as auth, FakeDNS(liar()) as bad:
        cfg = EngineConfig(qps=0, timeout=0.5, retries=0)
        zones = parse_zones([f"1.in-addr.arpa ns=127.0.0.1:{auth.port}"], path="t")
        (res,) = await Engine(cfg).sweep(zones, [ResolverSpec("bad", HOST, bad.port)])
        ns_asked = [r.message.question[0].name.to_text() for r in bad.requests
                    if r.message.question[0].rdtype == dns.rdatatype.NS]
    # zones.txt names the zone's servers, not its parent's: only the parent is discovered.
    assert ns_asked == ["in-addr.arpa."]
    assert res.evidence is not None and res.evidence.auth_source == "zones-file"
