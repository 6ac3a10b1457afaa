"""The sweep: every probe name of every zone against every resolver, concurrently and politely.

Each resolver gets its own lane (rate limit, a few workers, its own dead-resolver breaker), so a
dead or slow resolver only slows its own lane. A global semaphore bounds queries in flight.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import dns.rcode
from asyncio_throttle.throttler import Throttler

from probe.classify import Classification, apex_check, classify, severity
from probe.codes import Severity, Verdict
from probe.controls import (
    Answered,
    Control,
    ControlVerdict,
    infer_not_validating,
    judge_controls,
    parse_control,
)
from probe.diagnose import Diagnosis, Evidence, diagnose
from probe.errors import ConfigError, TransportError, Unreachable
from probe.investigate import Investigator
from probe.observation import Observation, Outcome
from probe.query import InflightLimit, Querier, Throttle
from probe.resolvers import (
    DEFAULT_CONTROL_BOGUS,
    DEFAULT_CONTROL_SECURE,
    ResolverSpec,
    is_builtin,
)
from probe.transport import Transport
from probe.wire import QueryTemplate, TemplateCache
from probe.zones import ProbeName, ZoneSpec


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine knobs; validated on construction."""

    qps: float = 20.0  # per resolver; 0 = unlimited (lab and benchmarks only)
    max_inflight: int = 256  # queries in flight across all resolvers
    # Concurrent checks per resolver; 0 = follow the in-flight budget and the rate limit
    # (workers_per_resolver).
    per_resolver: int = 0
    timeout: float = 2.0  # per attempt, seconds
    retries: int = 2  # extra attempts after a timeout
    dead_after: int = 6  # consecutive timeouts before a lane stops sending
    diagnose: bool = True
    full_parse: bool = False  # parse every reply, even plainly secure ones
    max_auth_servers: int = 16  # every address of every NS, bounded (issue 8)
    # Ask authoritative servers at non-public addresses learnt from NS lookups (labs only).
    allow_local_auth: bool = False
    # Once per run and resolver: a name that must fail validation and one that must validate,
    # "NAME" or "NAME/TYPE" (None or "": the built-in default for the built-in resolvers,
    # none for others; "off": none at all).
    control_bogus: str | None = None
    control_secure: str | None = None
    # Signature inception/expiration are judged with this allowance (resolvers allow similar).
    clock_skew: float = 3600.0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.qps >= 0, "qps must be >= 0"),
            (self.max_inflight >= 1, "max_inflight must be >= 1"),
            (self.per_resolver >= 0, "per_resolver must be >= 0 (0 = automatic)"),
            (0 < self.timeout <= 60, "timeout must be in (0, 60] seconds"),
            (0 <= self.retries <= 10, "retries must be in [0, 10]"),
            (self.dead_after >= 1, "dead_after must be >= 1"),
            (self.max_auth_servers >= 1, "max_auth_servers must be >= 1"),
            (0 <= self.clock_skew <= 86400, "clock_skew must be in [0, 86400] seconds"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        for what, text in (("control_bogus", self.control_bogus),
                           ("control_secure", self.control_secure)):
            if text is not None:
                parse_control(text, what=what)  # raises ConfigError

    def workers_per_resolver(self, resolvers: int) -> int:
        """Checks in flight per resolver: as set, else a fair share of the in-flight budget
        (so --inflight counts with few resolvers), but never more than a rate-limited lane
        can keep busy (qps x the timeout: more would only wait in the throttle), at least 8."""
        if self.per_resolver:
            return self.per_resolver
        share = max(1, self.max_inflight // max(1, resolvers))
        if self.qps > 0:
            share = min(share, max(1, math.ceil(self.qps * self.timeout)))
        return max(min(8, self.max_inflight), share)

    def controls_for(self, r: ResolverSpec) -> tuple[Control | None, Control | None]:
        """(bogus, secure) controls for one resolver: configured, else built-in defaults for
        the built-in public set only (a lab or private resolver may not reach public names)."""
        builtin = is_builtin(r)

        def pick(text: str | None, default: str) -> Control | None:
            if not text:  # None or "" (an unset config key): the default
                return parse_control(default) if builtin else None
            return parse_control(text)
        return (pick(self.control_bogus, DEFAULT_CONTROL_BOGUS),
                pick(self.control_secure, DEFAULT_CONTROL_SECURE))


CONTROL_RECHECK_S = 3600.0  # how long a decided control verdict is trusted


class CheckResult(NamedTuple):
    """One (resolver, qname, qtype) check: raw observation, verdict, and evidence if it failed.
    (A NamedTuple, like Observation: one per check, built faster than a frozen dataclass.)"""

    resolver: ResolverSpec
    zone: ZoneSpec
    probe: ProbeName
    observation: Observation
    classification: Classification
    evidence: Evidence | None = None
    diagnosis: Diagnosis | None = None

    @property
    def severity(self) -> Severity:
        return severity(self.classification.verdict, self.zone.expect,
                        self.classification.reason)

    @property
    def rcode_text(self) -> str | None:
        rcode = self.observation.rcode
        return None if rcode is None else _rcode_text(rcode)

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        """The stable --json shape; scripts depend on these names."""
        o = self.observation
        out: dict[str, Any] = {
            "resolver": self.resolver.name,
            "address": self.resolver.address,
            "operator": self.resolver.operator,
            "zone": self.zone.name,
            "label": self.zone.label,
            "qname": self.probe.qname,
            "qtype": self.probe.qtype,
            "verdict": self.classification.verdict.value,
            "reason": self.classification.reason,
            "severity": self.severity.value,
            "rcode": self.rcode_text,
            "ad": o.ad if o.outcome is Outcome.REPLY else None,
            "ede": [{"code": e.code, "text": e.text} for e in o.ede],
            "rtt_ms": None if o.rtt_ms is None else round(o.rtt_ms, 3),
            "transport": o.transport,
            "attempts": o.attempts,
            "time": o.started,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
        }
        if raw:
            out["observation"] = o.to_dict()
            out["evidence"] = self.evidence.to_dict() if self.evidence else None
        return out


@functools.lru_cache(maxsize=64)
def _rcode_text(rcode: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode(rcode))


def make_throttle(qps: float) -> Throttle | None:
    """asyncio-throttle wants an integer count per period; express fractional rates via period."""
    if qps <= 0:
        return None
    count = max(1, round(qps))
    throttler: Throttle = Throttler(rate_limit=count, period=count / qps)
    return throttler


class _Lane:
    """A resolver's lane: its breaker, and the slow start of its workers.

    The first SLOW_START workers send at once; each one beyond waits for an answer from the
    resolver, one answer letting one more worker in (the window doubles per round trip, as in
    TCP's slow start). So a dead resolver costs few timeouts, not one per worker, and a large
    in-flight budget reaches a resolver in steps its receive buffer takes, not as one burst
    (measured: --inflight 4096 against one Unbound, 56,821 dropped queries in 8 sweeps with
    every worker let in on the first answer, none with the ramp)."""

    __slots__ = ("consecutive_timeouts", "dead", "gate", "open", "waiting")

    def __init__(self) -> None:
        self.consecutive_timeouts = 0
        self.dead = False
        self.gate = asyncio.Semaphore(0)
        self.waiting = 0  # workers waiting at the gate and not yet let in
        self.open = False  # everyone may send (the resolver is given up, or the work is done)

    async def enter(self) -> None:
        if not self.open:
            self.waiting += 1
            await self.gate.acquire()

    def answered(self) -> None:
        """One answer: one more worker in."""
        if self.waiting:
            self.waiting -= 1
            self.gate.release()

    def open_all(self) -> None:
        if not self.open:
            self.open = True
            for _ in range(self.waiting):
                self.gate.release()
            self.waiting = 0


SLOW_START = 8


Progress = Callable[[CheckResult], None]


class Engine:
    """Runs sweeps. The clock (wall seconds) is passed in so tests can pin it."""

    def __init__(self, config: EngineConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        # Kept for the engine's life, shared by the sweep and its follow-up questions.
        self.templates = TemplateCache()
        # Control answers and when they were decided, per resolver; undecided ones are asked
        # again next sweep, decided ones after CONTROL_RECHECK_S. Keyed by (name, host, port)
        # so a changed resolver list is asked anew.
        self.controls: dict[tuple[str, str, int], tuple[ControlVerdict, float]] = {}
        # Resolvers found not validating (from controls or this sweep): name -> detail.
        self.not_validating: dict[str, str] = {}

    async def sweep(
        self,
        zones: Sequence[ZoneSpec],
        resolvers: Sequence[ResolverSpec],
        *,
        progress: Progress | None = None,
        keep: bool = True,
    ) -> list[CheckResult]:
        """Every check; `progress` sees each result as it is decided. With keep=False nothing
        is kept and [] is returned: results reach `progress` only, in the order they are
        decided (streaming output, bounded memory); a `no-ad` row waits for the end of the
        sweep, where it may become `not-validating`."""
        if not keep:
            return await self._stream(zones, resolvers, progress)
        lanes = await self._sweep(zones, resolvers, progress, keep=True)
        # Zone order first (as in zones.txt), then resolver order.
        n = sum(len(z.probes) for z in zones)
        rows = [lanes[ri][ci] for ci in range(n) for ri in range(len(resolvers))]
        return self._mark_not_validating(rows, resolvers)

    async def _sweep(self, zones: Sequence[ZoneSpec], resolvers: Sequence[ResolverSpec],
                     progress: Progress | None, *, keep: bool) -> list[list[CheckResult]]:
        cfg = self.config
        transport = Transport(timeout=cfg.timeout)
        querier = Querier(transport, retries=cfg.retries, clock=self.clock,
                          inflight=InflightLimit(cfg.max_inflight), full_parse=cfg.full_parse)
        throttles = {r.name: make_throttle(cfg.qps) for r in resolvers}
        investigator = Investigator(querier, resolvers, self.templates, throttles=throttles,
                                    max_auth_servers=cfg.max_auth_servers,
                                    allow_local_auth=cfg.allow_local_auth)
        # Room for every probe name plus follow-ups, so a large zones file does not evict
        # (and rebuild) its own templates every round; names learnt from replies stay bounded.
        n = sum(len(z.probes) for z in zones)
        self.templates.maxsize = max(self.templates.maxsize, 2 * n + 1024)
        get = self.templates.get
        checks = [(z, p, get(p.qname, p.qtype)) for z in zones for p in z.probes]
        workers = self.config.workers_per_resolver(len(resolvers))
        try:
            lanes, _ = await asyncio.gather(
                asyncio.gather(*(
                    self._lane(r, checks, throttles[r.name], querier, investigator,
                               progress, keep=keep, workers=workers)
                    for r in resolvers
                )),
                asyncio.gather(*(self._ask_controls(r, querier, throttles[r.name])
                                 for r in resolvers)),
            )
        finally:
            transport.close()
        return list(lanes)

    async def _stream(self, zones: Sequence[ZoneSpec], resolvers: Sequence[ResolverSpec],
                      progress: Progress | None) -> list[CheckResult]:
        held: deque[CheckResult] = deque()
        # What inference needs of the rows already passed on: one AD=1 row per question, and
        # one per resolver that validated anything (infer_not_validating's two uses).
        first_by_question: dict[tuple[str, str], Answered] = {}
        first_by_resolver: dict[str, Answered] = {}

        def route(r: CheckResult) -> None:
            if r.classification.reason == "no-ad":
                held.append(r)
                return
            if r.classification.verdict is Verdict.SECURE and r.observation.ad:
                q, name = (r.probe.qname, r.probe.qtype), r.resolver.name
                if q not in first_by_question or name not in first_by_resolver:
                    a = Answered(name, q[0], q[1], True, False)
                    first_by_question.setdefault(q, a)
                    first_by_resolver.setdefault(name, a)
            if progress is not None:
                progress(r)

        try:
            await self._sweep(zones, resolvers, route, keep=False)
            seen = [*first_by_question.values(), *first_by_resolver.values()]
            rows = self._mark_not_validating(list(held), resolvers, also=seen)
            held.clear()
            held.extend(rows)
        finally:
            # Each held row is passed on once: relabelled after a full sweep, as it is when
            # the sweep was cancelled (Ctrl-C, SIGTERM) or failed — decided rows are not lost.
            while held:
                r = held.popleft()
                if progress is not None:
                    progress(r)
        return []

    async def _ask_controls(self, r: ResolverSpec, querier: Querier,
                            throttle: Throttle | None) -> None:
        """Ask the control names once per Engine (again next sweep while undecided)."""
        key = (r.name, r.host, r.port)
        known, decided_at = self.controls.get(key, (None, 0.0))
        bogus, secure = self.config.controls_for(r)
        # A decided verdict holds for an hour: a daemon runs for months, and a resolver (or
        # the control zone) can change; asking two names an hour costs nothing.
        fresh = self.clock() - decided_at < CONTROL_RECHECK_S
        if (known is not None and known.validating is not None and fresh) \
                or (bogus, secure) == (None, None):
            return
        try:
            querier.transport.channel(r.host, r.port)
        except TransportError:
            return  # the lane reports it; nothing to ask

        async def ask(c: Control | None) -> tuple[Control, Observation] | None:
            if c is None:
                return None
            # RD=1, DO=1, through the lane's throttle; fully parsed (no fast-path triage).
            obs = await querier.ask(r.name, r.host, r.port, self.templates.get(c.qname, c.qtype),
                                    throttle=throttle, triage=False)
            return c, obs
        b, s = await asyncio.gather(ask(bogus), ask(secure))
        verdict = judge_controls(b, s)
        if verdict.validating is None and known is not None and known.validating is not None:
            return  # a timeout on a re-check keeps the last decided verdict
        self.controls[key] = (verdict, self.clock())

    def _mark_not_validating(self, rows: list[CheckResult], resolvers: Sequence[ResolverSpec],
                             *, also: Sequence[Answered] = ()) -> list[CheckResult]:
        """no-ad rows of a resolver that does not validate say `not-validating` instead."""
        found: dict[str, str] = {}
        uncontrolled: set[str] = set()
        for r in resolvers:
            v, _ = self.controls.get((r.name, r.host, r.port), (None, 0.0))
            if v is not None and v.validating is False:
                found[r.name] = v.detail
            elif self.config.controls_for(r) == (None, None):
                uncontrolled.add(r.name)
        # Without controls, use what the sweep proved: AD=0 where another resolver had AD=1.
        inferred = infer_not_validating([*also, *(
            Answered(x.resolver.name, x.probe.qname, x.probe.qtype,
                     x.classification.verdict is Verdict.SECURE and x.observation.ad,
                     x.classification.reason == "no-ad") for x in rows)])
        found.update({k: v for k, v in inferred.items() if k in uncontrolled})
        self.not_validating = found
        if not found:
            return rows
        relabel = Classification(Verdict.INSECURE, "not-validating")
        return [x._replace(classification=relabel)
                if x.resolver.name in found and x.classification.reason == "no-ad" else x
                for x in rows]

    async def _lane(
        self,
        r: ResolverSpec,
        checks: list[tuple[ZoneSpec, ProbeName, QueryTemplate]],
        throttle: Throttle | None,
        querier: Querier,
        investigator: Investigator,
        progress: Progress | None,
        *,
        keep: bool = True,
        workers: int = 8,
    ) -> list[CheckResult]:
        cfg = self.config
        results: list[CheckResult | None] = [None] * (len(checks) if keep else 0)
        lane = _Lane()
        unsendable: tuple[Outcome, str] | None = None
        try:
            querier.transport.channel(r.host, r.port)
        except TransportError as exc:
            # No route, no address family, no socket: say so for every check, sending nothing.
            outcome = Outcome.UNREACHABLE if isinstance(exc, Unreachable) else Outcome(exc.code)
            unsendable = (outcome, str(exc))

        def unsent(probe: ProbeName, outcome: Outcome, detail: str) -> Observation:
            return Observation(r.name, r.host, r.port, probe.qname, probe.qtype, True, False,
                               self.clock(), outcome, attempts=0, detail=detail)

        work = iter(enumerate(checks))

        async def worker(n: int) -> None:
            if n >= SLOW_START and unsendable is None:
                await lane.enter()
            for i, (zone, probe, tmpl) in work:
                if unsendable is not None:
                    obs = unsent(probe, *unsendable)
                elif lane.dead:
                    obs = unsent(probe, Outcome.SKIPPED, f"{cfg.dead_after} consecutive timeouts")
                else:
                    obs = await querier.ask(r.name, r.host, r.port, tmpl, throttle=throttle)
                    if obs.outcome is Outcome.TIMEOUT:
                        lane.consecutive_timeouts += 1
                        lane.dead = lane.consecutive_timeouts >= cfg.dead_after
                        if lane.dead:
                            lane.open_all()
                    else:
                        lane.consecutive_timeouts = 0
                        lane.answered()
                cls = apex_check(classify(obs), obs, zone.name)
                evidence = diag = None
                if cls.needs_diagnosis and cfg.diagnose:
                    evidence = await investigator.collect(r, zone, probe)
                    # Pure and bounded (KeyTrap guard), but up to ~0.3 s of crypto on hostile
                    # data: a worker thread keeps the other lanes' timers and RTTs honest.
                    diag = await asyncio.to_thread(diagnose, evidence, now=self.clock(),
                                                  clock_skew=cfg.clock_skew)
                    cls = classify(obs, cd_answer=evidence.cd_answer, diagnosis=diag)
                res = CheckResult(r, zone, probe, obs, cls, evidence, diag)
                if keep:
                    results[i] = res
                if progress:
                    progress(res)

        async def run(n: int) -> None:
            try:
                await worker(n)
            finally:
                # A first worker done (the checks ran out, or it failed): nothing is left to
                # wait for, the others must not wait for ever.
                if n < SLOW_START:
                    lane.open_all()

        await asyncio.gather(*(run(n) for n in range(min(workers, len(checks)))))
        return [x for x in results if x is not None]
