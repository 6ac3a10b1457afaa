"""Non-validating resolvers: control names (parsing, decision) and the engine's relabelling."""

from __future__ import annotations

from typing import Any

import dns.flags
import dns.rcode
import pytest
from fakedns import HOST, FakeDNS, Request, default_answer, make_reply

from probe.classify import severity
from probe.codes import Severity, Verdict
from probe.controls import Answered, Control, infer_not_validating, judge_controls, parse_control
from probe.engine import CheckResult, Engine, EngineConfig
from probe.errors import ConfigError
from probe.observation import FLAG_AD, FLAG_QR, FLAG_RA, FLAG_RD, Observation, Outcome, RRsetObs
from probe.resolvers import DEFAULT_RESOLVERS, ResolverSpec
from probe.zones import parse_zones

BOGUS = "broken.test."
SECURE = "healthy.test."
ZONES = parse_zones(["1.in-addr.arpa", "2.in-addr.arpa"], path="t")


# -- pure parts --------------------------------------------------------------------------------

def test_parse_control() -> None:
    assert parse_control("dnssec-failed.org/A") == Control("dnssec-failed.org.", "A")
    assert parse_control("ISC.org/soa") == Control("isc.org.", "SOA")
    assert parse_control("example.net") == Control("example.net.", "A")
    # RFC 2317: a slash inside a label belongs to the name.
    assert parse_control("0/26.2.0.192.in-addr.arpa/PTR") == Control(
        "0/26.2.0.192.in-addr.arpa.", "PTR")
    assert parse_control("0/26.2.0.192.in-addr.arpa") == Control("0/26.2.0.192.in-addr.arpa.", "A")
    assert parse_control("off") is None and parse_control("") is None
    for bad in ("example.net/NOPE", "example.net/ANY", ".", "a..b/A", "x\x1b[2J.example"):
        with pytest.raises(ConfigError):
            parse_control(bad)


def obs(qname: str, *, rcode: int = 0, ad: bool, data: bool = True,
        outcome: Outcome = Outcome.REPLY) -> Observation:
    ans = (RRsetObs(qname, "A", 60, ("192.0.2.1",)),) if data else ()
    return Observation("r", HOST, 53, qname, "A", True, False, 0.0, outcome, rcode=rcode,
                       flags=FLAG_QR | FLAG_RD | FLAG_RA | (FLAG_AD if ad else 0), answer=ans)


B, S = Control(BOGUS, "A"), Control(SECURE, "A")


def test_judge_controls() -> None:
    validating = judge_controls((B, obs(BOGUS, rcode=2, ad=False, data=False)),
                                (S, obs(SECURE, ad=True)))
    assert validating.validating is True
    assert judge_controls((B, obs(BOGUS, ad=False)), (S, obs(SECURE, ad=False))).validating is False
    assert judge_controls((B, obs(BOGUS, ad=False)), None).validating is False
    # AD=1 on the secure name while the bogus name answers AD=0: this resolver validates, and
    # the bogus control has gone insecure. Before: marked not-validating for the engine's life.
    broken = judge_controls((B, obs(BOGUS, ad=False)), (S, obs(SECURE, ad=True)))
    assert broken.validating is None and "no longer broken" in broken.detail
    # A secure control answered without AD next to a SERVFAIL for the bogus one: validating
    # (a negative trust anchor, or the control zone gone insecure).
    assert judge_controls((B, obs(BOGUS, rcode=2, ad=False, data=False)),
                          (S, obs(SECURE, ad=False))).validating is True
    assert judge_controls(None, (S, obs(SECURE, ad=False))).validating is False
    # Timeouts decide nothing (asked again next sweep); nor does a control that validated.
    assert judge_controls((B, obs(BOGUS, ad=False, outcome=Outcome.TIMEOUT, data=False)),
                          None).validating is None
    assert judge_controls((B, obs(BOGUS, ad=True)), None).validating is None
    assert judge_controls(None, None).validating is None


def test_infer_not_validating() -> None:
    rows = [Answered("v", "a.", "A", True, False), Answered("n", "a.", "A", False, True),
            Answered("n", "b.", "A", False, True), Answered("m", "b.", "A", False, True),
            # "p" validates c. but not a. (say an algorithm it lacks): a per-zone matter.
            Answered("p", "c.", "A", True, False), Answered("p", "a.", "A", False, True)]
    found = infer_not_validating(rows)
    assert set(found) == {"n"}  # "m" was AD=0 only where nobody validated
    assert "a./A" in found["n"]


def test_defaults_only_for_builtin_resolvers() -> None:
    cfg = EngineConfig()
    assert cfg.controls_for(DEFAULT_RESOLVERS[0]) == (Control("dnssec-failed.org.", "A"),
                                                      Control("isc.org.", "SOA"))
    assert cfg.controls_for(ResolverSpec("lab", HOST, 5300)) == (None, None)
    off = EngineConfig(control_bogus="off", control_secure="off")
    assert off.controls_for(DEFAULT_RESOLVERS[0]) == (None, None)
    with pytest.raises(ConfigError):
        EngineConfig(control_bogus="x/NOPE")


# -- engine, against fake resolvers on 127.0.0.1 ----------------------------------------------

def validator(req: Request) -> bytes:
    """Validates: SERVFAIL for the bogus control, AD=1 otherwise (zones and secure control)."""
    q = req.message
    if q.question[0].name.to_text() == BOGUS and not q.flags & dns.flags.CD:
        return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
    return make_reply(q, answer=default_answer(q))


def non_validator(req: Request) -> bytes:
    """Does not validate: data, AD=0, for everything (the bogus control included)."""
    return make_reply(req.message, ad=False, answer=default_answer(req.message))


def insecure_everywhere(req: Request) -> bytes:
    """Validates the controls, but the zones are (truly) unsigned: AD=0 data."""
    q = req.message
    name = q.question[0].name.to_text()
    if name == BOGUS:
        return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False)
    return make_reply(q, ad=name == SECURE, answer=default_answer(q))


def asked(server: FakeDNS, qname: str) -> int:
    return sum(1 for r in server.requests if r.message.question[0].name.to_text() == qname)


async def _sweep(engine: Engine, zones: Any, resolvers: list[ResolverSpec], keep: bool
                 ) -> list[CheckResult]:
    """engine.sweep as `check` (kept, ordered) or as `check --json` streams it (keep=False:
    each result passed on as decided); the same verdicts either way."""
    if keep:
        return await engine.sweep(zones, resolvers)
    got: list[CheckResult] = []
    assert await engine.sweep(zones, resolvers, progress=got.append, keep=False) == []
    return got


@pytest.mark.parametrize("keep", [True, False])
async def test_controls_mark_only_the_non_validating_resolver(keep: bool) -> None:
    cfg = EngineConfig(qps=0, timeout=0.5, retries=0, diagnose=False,
                       control_bogus=f"{BOGUS}/A", control_secure=f"{SECURE}/A")
    engine = Engine(cfg)
    with FakeDNS(validator) as v, FakeDNS(non_validator) as n, \
            FakeDNS(insecure_everywhere) as i:
        resolvers = [ResolverSpec("v", HOST, v.port), ResolverSpec("n", HOST, n.port),
                     ResolverSpec("i", HOST, i.port)]
        results = await _sweep(engine, ZONES, resolvers, keep)
        again = await engine.sweep(ZONES, resolvers)
        # Once per Engine: the second sweep asked no control again.
        assert [asked(s, BOGUS) for s in (v, n, i)] == [1, 1, 1]
        assert [asked(s, SECURE) for s in (v, n, i)] == [1, 1, 1]
    reasons = {(r.resolver.name, r.classification.verdict, r.classification.reason)
               for r in results}
    assert reasons == {("v", Verdict.SECURE, "ad-answer"),
                       ("n", Verdict.INSECURE, "not-validating"),
                       ("i", Verdict.INSECURE, "no-ad")}
    assert set(engine.not_validating) == {"n"}
    assert "bogus control" in engine.not_validating["n"]
    assert sorted(map(str, (r.classification for r in again))) == sorted(
        map(str, (r.classification for r in results)))
    row = next(r for r in results if r.resolver.name == "n")
    assert row.severity is Severity.WARNING
    assert severity(Verdict.INSECURE, Verdict.SECURE, "not-validating") is Severity.WARNING


async def test_undecided_controls_are_asked_again_next_sweep() -> None:
    cfg = EngineConfig(qps=0, timeout=0.3, retries=0, diagnose=False,
                       control_bogus=f"{BOGUS}/A")
    engine = Engine(cfg)
    silent = {"on": True}

    def flaky(req: Request) -> bytes | None:
        if req.message.question[0].name.to_text() == BOGUS and silent["on"]:
            return None  # the control times out this round
        return non_validator(req)

    with FakeDNS(flaky) as f:
        r = [ResolverSpec("f", HOST, f.port)]
        first = await engine.sweep(ZONES, r)
        assert {x.classification.reason for x in first} == {"no-ad"}
        silent["on"] = False
        second = await engine.sweep(ZONES, r)
        assert asked(f, BOGUS) == 2
    assert {x.classification.reason for x in second} == {"not-validating"}


@pytest.mark.parametrize("keep", [True, False])
async def test_without_controls_the_sweep_itself_proves_it(keep: bool) -> None:
    cfg = EngineConfig(qps=0, timeout=0.5, retries=0, diagnose=False)
    engine = Engine(cfg)
    with FakeDNS(validator) as v, FakeDNS(non_validator) as n:
        results = await _sweep(
            engine, ZONES, [ResolverSpec("v", HOST, v.port), ResolverSpec("n", HOST, n.port)],
            keep)
        assert len(results) == 2 * sum(len(z.probes) for z in ZONES)
        # No control configured for lab resolvers: nothing beyond the zones was asked.
        assert asked(v, BOGUS) == asked(n, BOGUS) == 0
    by = {(r.resolver.name, r.classification.reason) for r in results}
    assert by == {("v", "ad-answer"), ("n", "not-validating")}
    assert set(engine.not_validating) == {"n"}
    # Alone, an AD=0 resolver proves nothing: nobody validated those names.
    engine2 = Engine(cfg)
    with FakeDNS(non_validator) as n2:
        alone = await engine2.sweep(ZONES, [ResolverSpec("n", HOST, n2.port)])
    assert {r.classification.reason for r in alone} == {"no-ad"}
    assert engine2.not_validating == {}


def test_daemon_config_keys_are_checked() -> None:
    from probe.daemon.config import build, describe

    cfg = build({"control_bogus": "0/26.2.0.192.in-addr.arpa/PTR"},
                {"control_secure": "off", "clock_skew": 120})
    assert (cfg.control_bogus, cfg.control_secure, cfg.clock_skew) == (
        "0/26.2.0.192.in-addr.arpa/PTR", "off", 120.0)
    assert describe(build({}, {}))["control_bogus"] == ""  # unset: the engine picks the default
    for key, value in (("control_bogus", "x.example/NOPE"), ("control_secure", "."),
                       ("clock_skew", -1), ("clock_skew", 90000)):
        with pytest.raises(ConfigError, match=key):
            build({}, {key: value})


async def test_decided_controls_are_asked_again_after_an_hour() -> None:
    """A daemon keeps one Engine for months: a verdict is re-checked hourly, so a resolver
    that starts validating loses its `not-validating` mark (before: kept for ever)."""
    now = [1_800_000_000.0]
    cfg = EngineConfig(qps=0, timeout=0.5, retries=0, diagnose=False,
                       control_bogus=f"{BOGUS}/A", control_secure=f"{SECURE}/A")
    engine = Engine(cfg, clock=lambda: now[0])
    validates = {"on": False}

    def changing(req: Request) -> bytes | None:
        return validator(req) if validates["on"] else non_validator(req)

    with FakeDNS(changing) as srv:
        r = [ResolverSpec("c", HOST, srv.port)]
        first = await engine.sweep(ZONES, r)
        validates["on"] = True
        now[0] += 600
        await engine.sweep(ZONES, r)  # within the hour: not asked again
        assert asked(srv, BOGUS) == 1 and "c" in engine.not_validating
        now[0] += 3600
        later = await engine.sweep(ZONES, r)
        assert asked(srv, BOGUS) == 2
    assert {x.classification.reason for x in first} == {"not-validating"}
    assert "not-validating" not in {x.classification.reason for x in later}
    assert "c" not in engine.not_validating
