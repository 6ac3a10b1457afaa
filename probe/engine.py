"""The sweep: every probe name of every zone against every resolver, concurrently and politely.

Each resolver gets its own lane (rate limit, a few workers, its own dead-resolver breaker), so a
dead or slow resolver only slows its own lane. A global semaphore bounds queries in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.rcode
from asyncio_throttle.throttler import Throttler

from probe.classify import Classification, classify, severity
from probe.codes import Severity
from probe.diagnose import Diagnosis, Evidence, diagnose
from probe.errors import ConfigError, TransportError, Unreachable
from probe.investigate import Investigator
from probe.observation import Observation, Outcome
from probe.query import InflightLimit, Querier, Throttle
from probe.resolvers import ResolverSpec
from probe.transport import Transport
from probe.wire import QueryTemplate, TemplateCache
from probe.zones import ProbeName, ZoneSpec


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine knobs; validated on construction."""

    qps: float = 20.0  # per resolver; 0 = unlimited (lab and benchmarks only)
    max_inflight: int = 256  # queries in flight across all resolvers
    per_resolver: int = 8  # concurrent checks per resolver
    timeout: float = 2.0  # per attempt, seconds
    retries: int = 2  # extra attempts after a timeout
    dead_after: int = 6  # consecutive timeouts before a lane stops sending
    diagnose: bool = True
    full_parse: bool = False  # parse every reply, even plainly secure ones
    max_auth_servers: int = 16  # every address of every NS, bounded (issue 8)
    # Ask authoritative servers at non-public addresses learnt from NS lookups (labs only).
    allow_local_auth: bool = False
    # Once per run and resolver: a name that must fail validation and one that must validate,
    # "NAME" or "NAME/TYPE" (None: the built-in default for known resolvers, or none).
    control_bogus: str | None = None
    control_secure: str | None = None
    # Signature inception/expiration are judged with this allowance (resolvers allow similar).
    clock_skew: float = 3600.0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.qps >= 0, "qps must be >= 0"),
            (self.max_inflight >= 1, "max_inflight must be >= 1"),
            (self.per_resolver >= 1, "per_resolver must be >= 1"),
            (0 < self.timeout <= 60, "timeout must be in (0, 60] seconds"),
            (0 <= self.retries <= 10, "retries must be in [0, 10]"),
            (self.dead_after >= 1, "dead_after must be >= 1"),
            (self.max_auth_servers >= 1, "max_auth_servers must be >= 1"),
            (0 <= self.clock_skew <= 86400, "clock_skew must be in [0, 86400] seconds"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One (resolver, qname, qtype) check: raw observation, verdict, and evidence if it failed."""

    resolver: ResolverSpec
    zone: ZoneSpec
    probe: ProbeName
    observation: Observation
    classification: Classification
    evidence: Evidence | None = None
    diagnosis: Diagnosis | None = None

    @property
    def severity(self) -> Severity:
        return severity(self.classification.verdict, self.zone.expect)

    @property
    def rcode_text(self) -> str | None:
        rcode = self.observation.rcode
        return None if rcode is None else dns.rcode.to_text(dns.rcode.Rcode(rcode))

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


def make_throttle(qps: float) -> Throttle | None:
    """asyncio-throttle wants an integer count per period; express fractional rates via period."""
    if qps <= 0:
        return None
    count = max(1, round(qps))
    throttler: Throttle = Throttler(rate_limit=count, period=count / qps)
    return throttler


class _Lane:
    __slots__ = ("consecutive_timeouts", "dead")

    def __init__(self) -> None:
        self.consecutive_timeouts = 0
        self.dead = False


Progress = Callable[[CheckResult], None]


class Engine:
    """Runs sweeps. The clock (wall seconds) is passed in so tests can pin it."""

    def __init__(self, config: EngineConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        # Kept for the engine's life, shared by the sweep and its follow-up questions.
        self.templates = TemplateCache()

    async def sweep(
        self,
        zones: Sequence[ZoneSpec],
        resolvers: Sequence[ResolverSpec],
        *,
        progress: Progress | None = None,
    ) -> list[CheckResult]:
        cfg = self.config
        transport = Transport(timeout=cfg.timeout)
        querier = Querier(transport, retries=cfg.retries, clock=self.clock,
                          inflight=InflightLimit(cfg.max_inflight), full_parse=cfg.full_parse)
        throttles = {r.name: make_throttle(cfg.qps) for r in resolvers}
        investigator = Investigator(querier, resolvers, self.templates, throttles=throttles,
                                    max_auth_servers=cfg.max_auth_servers,
                                    allow_local_auth=cfg.allow_local_auth)
        checks = [(z, p) for z in zones for p in z.probes]
        # Room for every probe name plus follow-ups, so a large zones file does not evict
        # (and rebuild) its own templates every round; names learnt from replies stay bounded.
        self.templates.maxsize = max(self.templates.maxsize, 2 * len(checks) + 1024)
        templates = {(p.qname, p.qtype): self.templates.get(p.qname, p.qtype) for _, p in checks}
        try:
            lanes = await asyncio.gather(*(
                self._lane(r, checks, templates, throttles[r.name], querier, investigator,
                           progress)
                for r in resolvers
            ))
        finally:
            transport.close()
        # Zone order first (as in zones.txt), then resolver order.
        n = len(checks)
        return [lanes[ri][ci] for ci in range(n) for ri in range(len(resolvers))]

    async def _lane(
        self,
        r: ResolverSpec,
        checks: list[tuple[ZoneSpec, ProbeName]],
        templates: dict[tuple[str, str], QueryTemplate],
        throttle: Throttle | None,
        querier: Querier,
        investigator: Investigator,
        progress: Progress | None,
    ) -> list[CheckResult]:
        cfg = self.config
        results: list[CheckResult | None] = [None] * len(checks)
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

        async def worker() -> None:
            for i, (zone, probe) in work:
                if unsendable is not None:
                    obs = unsent(probe, *unsendable)
                elif lane.dead:
                    obs = unsent(probe, Outcome.SKIPPED, f"{cfg.dead_after} consecutive timeouts")
                else:
                    obs = await querier.ask(r.name, r.host, r.port,
                                            templates[(probe.qname, probe.qtype)],
                                            throttle=throttle)
                    if obs.outcome is Outcome.TIMEOUT:
                        lane.consecutive_timeouts += 1
                        lane.dead = lane.consecutive_timeouts >= cfg.dead_after
                    else:
                        lane.consecutive_timeouts = 0
                cls = classify(obs)
                evidence = diag = None
                if cls.needs_diagnosis and cfg.diagnose:
                    evidence = await investigator.collect(r, zone, probe)
                    # Pure and bounded (KeyTrap guard), but up to ~0.3 s of crypto on hostile
                    # data: a worker thread keeps the other lanes' timers and RTTs honest.
                    diag = await asyncio.to_thread(diagnose, evidence, now=self.clock())
                    cls = classify(obs, cd_answer=evidence.cd_answer, diagnosis=diag)
                res = CheckResult(r, zone, probe, obs, cls, evidence, diag)
                results[i] = res
                if progress:
                    progress(res)

        await asyncio.gather(*(worker() for _ in range(min(cfg.per_resolver, len(checks)))))
        return [x for x in results if x is not None]
