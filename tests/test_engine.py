"""Engine behaviour that real resolvers cannot be made to show on demand: dead and closed
resolvers next to healthy ones, and follow-up questions shared between resolvers."""

from __future__ import annotations

import errno
import socket
import time

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from fakedns import HOST, FakeDNS, Request, default_answer, make_reply, rrset

from probe.codes import Verdict
from probe.engine import CheckResult, Engine, EngineConfig
from probe.report import exit_status, summary
from probe.resolvers import ResolverSpec
from probe.zones import parse_zones

ZONES = parse_zones([f"{n}.in-addr.arpa" for n in range(1, 21)], path="t")


def secure(req: Request) -> bytes:
    return make_reply(req.message, answer=default_answer(req.message))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def test_dead_resolver_does_not_delay_the_others() -> None:
    cfg = EngineConfig(qps=0, timeout=0.4, retries=1, per_resolver=2, dead_after=3)
    done: dict[str, list[float]] = {"ok": [], "dead": []}

    def progress(r: CheckResult) -> None:
        done[r.resolver.name].append(time.monotonic())

    with FakeDNS(secure) as good, FakeDNS(lambda req: None) as dead:
        start = time.monotonic()
        results = await Engine(cfg).sweep(
            ZONES, [ResolverSpec("ok", HOST, good.port), ResolverSpec("dead", HOST, dead.port)],
            progress=progress)
        elapsed = time.monotonic() - start
    by = {v: [r for r in results if r.resolver.name == v] for v in ("ok", "dead")}
    assert {r.classification.verdict for r in by["ok"]} == {Verdict.SECURE}
    # The healthy lane finished before the dead lane's first query had even timed out.
    assert max(done["ok"]) - start < cfg.timeout
    reasons = [r.classification.reason for r in by["dead"]]
    assert all(r.classification.verdict is Verdict.TIMEOUT for r in by["dead"])
    # The breaker stops sending after `dead_after` consecutive timeouts; the rest are skipped.
    assert reasons.count("timeout") <= cfg.dead_after + cfg.per_resolver
    assert reasons.count("resolver-dead") >= len(ZONES) - cfg.dead_after - cfg.per_resolver
    assert dead.udp_count <= (cfg.dead_after + cfg.per_resolver) * (cfg.retries + 1)
    assert elapsed < 4 * cfg.timeout * (cfg.retries + 1)


async def test_unreachable_resolver_is_not_a_zone_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect

    def connect(self: socket.socket, addr: tuple[str, int]) -> None:
        if addr[1] == 9:  # "no route" for this one resolver: a fault loopback cannot produce
            raise OSError(errno.ENETUNREACH, "injected")
        real_connect(self, addr)

    monkeypatch.setattr(socket.socket, "connect", connect)
    cfg = EngineConfig(qps=0, timeout=0.5, retries=0)
    with FakeDNS(secure) as good:
        results = await Engine(cfg).sweep(
            ZONES[:3], [ResolverSpec("ok", HOST, good.port), ResolverSpec("gone", HOST, 9)])
    gone = [r for r in results if r.resolver.name == "gone"]
    assert {r.classification.verdict for r in gone} == {Verdict.UNREACHABLE}
    assert all(r.observation.attempts == 0 for r in gone)  # nothing was sent
    assert exit_status(results) == 0
    assert "unreachable from this host (not a zone failure): gone" in summary(results)
    # All unreachable: nothing could be checked at all.
    assert exit_status(gone) == 3


async def test_closed_port_is_a_warning_not_unreachable() -> None:
    """ICMP port unreachable: the resolver's host is up but its DNS service is down."""
    cfg = EngineConfig(qps=0, timeout=0.5, retries=1)
    with FakeDNS(secure) as good:
        results = await Engine(cfg).sweep(
            ZONES[:3], [ResolverSpec("ok", HOST, good.port),
                        ResolverSpec("down", HOST, closed_port())])
    down = [r for r in results if r.resolver.name == "down"]
    assert {(r.classification.verdict, r.classification.reason) for r in down} == {
        (Verdict.ERROR, "port-unreachable")}
    assert exit_status(results) == 1


async def test_socket_failure_at_setup_keeps_the_other_lanes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_connect = socket.socket.connect

    def connect(self: socket.socket, addr: tuple[str, int]) -> None:
        if addr[1] == 9:
            raise OSError(errno.EACCES, "injected")
        real_connect(self, addr)

    monkeypatch.setattr(socket.socket, "connect", connect)
    with FakeDNS(secure) as good:
        results = await Engine(EngineConfig(qps=0, timeout=0.5, retries=0)).sweep(
            ZONES[:2], [ResolverSpec("ok", HOST, good.port), ResolverSpec("bad", HOST, 9)])
    assert {(r.resolver.name, r.classification.verdict.value) for r in results} == {
        ("ok", "secure"), ("bad", "error")}


async def test_follow_ups_share_authoritative_questions_between_resolvers() -> None:
    def failing_resolver(req: Request) -> bytes:
        q = req.message
        if q.flags & dns.flags.CD:  # CD=1: hand out the (bogus) data it holds
            return make_reply(q, ad=False, answer=default_answer(q))
        return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)

    def authoritative(req: Request) -> bytes:
        wire = bytearray(make_reply(req.message, ad=False, answer=default_answer(req.message)))
        wire[2] = (wire[2] | 0x04) & ~0x01  # AA=1, RD=0: the zone's own answer
        return bytes(wire)

    cfg = EngineConfig(qps=0, timeout=0.5, retries=0)
    with FakeDNS(authoritative) as auth, FakeDNS(failing_resolver) as r1, \
            FakeDNS(failing_resolver) as r2:
        zones = parse_zones([f"1.in-addr.arpa ns=127.0.0.1:{auth.port}"], path="t")
        results = await Engine(cfg).sweep(
            zones, [ResolverSpec("r1", HOST, r1.port), ResolverSpec("r2", HOST, r2.port)])
        asked = sorted((r.message.question[0].rdtype, bool(r.message.flags & dns.flags.RD))
                       for r in auth.requests)
    # One DNSKEY and one SOA question to the source, RD=0, however many resolvers failed.
    assert asked == [(dns.rdatatype.SOA, False), (dns.rdatatype.DNSKEY, False)]
    for r in results:
        # CD=1 had data, but the diagnosis rules DNSSEC out (no keys, no DS): not bogus.
        assert r.classification.verdict is Verdict.SERVFAIL
        assert r.classification.reason == "ruled-out"
        assert r.evidence is not None and r.evidence.auth_source == "zones-file"
        assert r.diagnosis is not None
        # The fake source serves no DNSKEY and the parent no DS: not a signing fault there.
        assert r.diagnosis.kind.value == "unknown"
        assert r.diagnosis.reasons == ("zone-unsigned",)


@pytest.mark.parametrize("allow", [False, True])
async def test_discovered_local_addresses_need_permission(allow: bool) -> None:
    """A resolver's answer must not point the probe at this host's own network unasked."""

    def resolver(req: Request) -> bytes:
        q = req.message
        name, rdtype = q.question[0].name.to_text(), q.question[0].rdtype
        if rdtype == dns.rdatatype.NS:
            return make_reply(q, ad=False, answer=[rrset(name, "NS", "ns1.example.")])
        if rdtype == dns.rdatatype.A and name == "ns1.example.":
            return make_reply(q, ad=False, answer=[rrset(name, "A", "127.0.0.1")])
        if q.flags & dns.flags.CD:
            return make_reply(q, ad=False, answer=default_answer(q))
        return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)

    cfg = EngineConfig(qps=0, timeout=0.3, retries=0, allow_local_auth=allow)
    with FakeDNS(resolver) as r1:
        (res,) = await Engine(cfg).sweep(ZONES[:1], [ResolverSpec("r1", HOST, r1.port)])
    assert res.evidence is not None
    assert res.evidence.auth_source == ("discovered" if allow else "none")


@pytest.mark.parametrize("rcode", [dns.rcode.NOERROR, dns.rcode.NXDOMAIN])
async def test_zones_file_entry_that_is_not_a_zone_apex_is_a_warning(rcode: int) -> None:
    """The zone's own SOA answered by a validated denial: the entry names no zone (NODATA: a
    name inside 1.in-addr.arpa; NXDOMAIN: nothing). Before: graded secure, `ad-denial`."""
    soa = "ns1.example. host.example. 1 3600 600 86400 300"

    def handle(req: Request) -> bytes:
        q = req.message
        if q.question[0].name.to_text() == "5.1.in-addr.arpa.":
            return make_reply(q, rcode=rcode, ad=True,
                              authority=[rrset("1.in-addr.arpa.", "SOA", soa)])
        return make_reply(q, ad=True, answer=default_answer(q))

    with FakeDNS(handle) as srv:
        zones = parse_zones(["5.1.in-addr.arpa", "1.in-addr.arpa"], path="t")
        results = await Engine(EngineConfig(qps=0, timeout=1.0, retries=0)).sweep(
            zones, [ResolverSpec("r1", HOST, srv.port)])
    wrong, right = results
    assert (wrong.classification.verdict, wrong.classification.reason) == (
        Verdict.SECURE, "not-a-zone-apex")
    assert wrong.severity.value == "warning"
    assert right.classification.reason == "ad-answer" and right.severity.value == "ok"
    assert exit_status(results) == 1


async def test_a_dead_resolver_costs_the_slow_start_not_every_worker() -> None:
    """40 workers may run per resolver, but only the first 8 send until it has answered: a
    dead one gets about 8 queries before the breaker gives it up, not 40."""
    from probe.engine import SLOW_START

    cfg = EngineConfig(qps=0, timeout=0.2, retries=0, per_resolver=40, diagnose=False)
    with FakeDNS(lambda req: None) as dead, FakeDNS(secure) as live:
        results = await Engine(cfg).sweep(ZONES, [ResolverSpec("dead", HOST, dead.port),
                                                  ResolverSpec("live", HOST, live.port)])
        # the first 8, and a next one from each worker whose timeout came before the 6th
        assert len(dead.requests) <= SLOW_START + cfg.dead_after - 1 < 40
        assert len(live.requests) == len(ZONES)
    dead_rows = [r for r in results if r.resolver.name == "dead"]
    assert {r.observation.outcome.value for r in dead_rows} == {"timeout", "resolver-dead"}


async def test_a_cancelled_stream_still_passes_on_held_rows_once() -> None:
    """keep=False holds no-ad rows for the relabel at the end; a sweep cancelled before then
    (Ctrl-C, SIGTERM) passes them on as they are, each once."""
    import asyncio

    def slow_for_some(req: Request) -> bytes | None:
        name = req.message.question[0].name.to_text()
        if name.startswith("1"):  # 1., 10.-19.in-addr.arpa: never answered
            return None
        return make_reply(req.message, ad=False, answer=default_answer(req.message))

    got: list[CheckResult] = []
    cfg = EngineConfig(qps=0, timeout=5.0, retries=0, diagnose=False)
    with FakeDNS(slow_for_some) as n:
        task = asyncio.ensure_future(Engine(cfg).sweep(
            ZONES, [ResolverSpec("n", HOST, n.port)], progress=got.append, keep=False))
        await asyncio.sleep(0.5)
        assert got == []  # every answered row is no-ad: held back so far
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    names = [r.zone.name for r in got]
    assert len(names) == len(set(names)) == 9  # 2-9 and 20
    assert {r.classification.reason for r in got} == {"no-ad"}


async def test_each_answer_lets_one_more_waiting_worker_send() -> None:
    """The slow start ramps: workers beyond the first wait at the lane's gate, one answer lets
    exactly one in (the window doubles per round trip), and giving up or finishing lets all in."""
    import asyncio

    from probe.engine import _Lane

    lane = _Lane()
    entered: list[int] = []

    async def worker(n: int) -> None:
        await lane.enter()
        entered.append(n)
    tasks = [asyncio.create_task(worker(n)) for n in range(20)]
    await asyncio.sleep(0)
    assert entered == [] and lane.waiting == 20
    for _ in range(3):
        lane.answered()
    await asyncio.sleep(0)
    assert len(entered) == 3 and lane.waiting == 17
    lane.open_all()
    await asyncio.gather(*tasks)
    assert sorted(entered) == list(range(20)) and lane.waiting == 0
    await lane.enter()  # once open, nobody waits
    lane.answered()  # and answers are no-ops
    assert lane.waiting == 0
