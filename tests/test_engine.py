"""Engine behaviour that real resolvers cannot be made to show on demand: dead and closed
resolvers next to healthy ones, and follow-up questions shared between resolvers."""

from __future__ import annotations

import socket
import time

import dns.flags
import dns.rcode
import dns.rdatatype
from fakedns import HOST, FakeDNS, Request, default_answer, make_reply

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


async def test_unreachable_resolver_is_not_a_zone_failure() -> None:
    cfg = EngineConfig(qps=0, timeout=0.5, retries=0)
    with FakeDNS(secure) as good:
        results = await Engine(cfg).sweep(
            ZONES[:3], [ResolverSpec("ok", HOST, good.port),
                        ResolverSpec("gone", HOST, closed_port())])
    gone = [r for r in results if r.resolver.name == "gone"]
    assert {r.classification.verdict for r in gone} == {Verdict.UNREACHABLE}
    assert exit_status(results) == 0
    assert "unreachable from this host (not a zone failure): gone" in summary(results)
    # All unreachable: nothing could be checked at all.
    assert exit_status(gone) == 3


async def test_follow_ups_share_authoritative_questions_between_resolvers() -> None:
    def failing_resolver(req: Request) -> bytes:
        q = req.message
        if q.flags & dns.flags.CD:  # CD=1: hand out the (bogus) data it holds
            return make_reply(q, ad=False, answer=default_answer(q))
        return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)

    def authoritative(req: Request) -> bytes:
        return make_reply(req.message, ad=False, answer=default_answer(req.message))

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
        assert r.classification.verdict is Verdict.BOGUS  # CD=1 had data: validation failed
        assert r.classification.reason == "cd-data"
        assert r.evidence is not None and r.evidence.auth_source == "zones-file"
        assert r.diagnosis is not None
        # The fake source serves no DNSKEY and the parent no DS: not a signing fault there.
        assert r.diagnosis.kind.value == "unknown"
        assert r.diagnosis.reasons == ("zone-unsigned",)
