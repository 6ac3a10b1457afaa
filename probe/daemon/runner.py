"""The round loop: sweep -> points -> incidents (+ their alerts, one transaction) -> delivery.

Rounds start on a drift-free grid and never overlap. Writing and alerting run in their own
tasks, so a slow InfluxDB or pager never holds up a round. On SIGTERM / SIGINT the sweep in
progress stops, what it had collected is written as a partial round, the writer finishes its
current write and spools the rest, and run() returns.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, Protocol

from influxdb_client.client.write.point import Point
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probe.audit.auditor import AuditReport
from probe.audit.findings import cause_text
from probe.audit.snapshot import ZoneSnapshot
from probe.codes import FindingCode, FindingSeverity, Verdict
from probe.daemon.metrics import Metrics
from probe.daemon.schedule import next_slot
from probe.engine import CheckResult
from probe.incidents import (
    SOURCE_RESOLVERS,
    EventKind,
    Incident,
    IncidentEvent,
    IncidentPolicy,
    audit_step,
    retire,
    step,
)
from probe.points import (
    CheckLines,
    RoundInfo,
    Worst,
    finding_points,
    incident_points,
    round_point,
    stats_point,
    to_lines,
    zone_points,
    zone_rounds,
)
from probe.resolvers import ResolverSpec
from probe.state import OutboxItem, StateStore
from probe.zones import ZoneSpec

log = logging.getLogger("dnssec_probe.daemon")


class Sweeper(Protocol):
    async def sweep(self, zones: Sequence[ZoneSpec], resolvers: Sequence[ResolverSpec], *,
                    progress: Callable[[CheckResult], None] | None = None,
                    keep: bool = True) -> list[CheckResult]: ...


class RoundChecks:
    """What a round keeps of its checks, taken as they come: their dnssec_check lines, the
    worst check per zone and resolver, and counts — not the checks themselves (memory)."""

    def __init__(self, number: int, vantage: str) -> None:
        self.lines = CheckLines(number, vantage)
        self.worst = Worst()
        self.verdicts: Counter[Verdict] = Counter()
        self.followups = 0

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, r: CheckResult) -> None:
        self.lines.add(r)
        self.worst.add(r)
        self.verdicts[r.classification.verdict] += 1
        self.followups += r.evidence is not None


class AuditRunner(Protocol):
    async def collect(self, zones: Sequence[ZoneSpec]) -> list[ZoneSnapshot]: ...
    def record(self, snapshots: Sequence[ZoneSnapshot]) -> AuditReport: ...


class Writer(Protocol):
    def submit(self, lines: list[str]) -> None: ...
    async def run(self) -> None: ...
    async def shutdown(self, timeout: float) -> None: ...
    async def flush(self, timeout: float) -> bool: ...


class Pager(Protocol):
    def items(self, events: Sequence[IncidentEvent]) -> list[OutboxItem]: ...
    def kick(self, open_incidents: Sequence[Incident]) -> None: ...
    async def run(self) -> None: ...
    async def shutdown(self, timeout: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Schedule:
    interval: float
    rounds: int  # 0 = forever
    jitter: float


class Monitor:
    """Runs rounds until told to stop or `rounds` are done. Dependencies are passed in."""

    def __init__(self, *, zones: Sequence[ZoneSpec], resolvers: Sequence[ResolverSpec],
                 engine: Sweeper, store: StateStore, writer: Writer, pager: Pager,
                 metrics: Metrics, policy: IncidentPolicy, schedule: Schedule, vantage: str,
                 clock: Callable[[], float] = time.time, progress: bool = False,
                 auditor: AuditRunner | None = None) -> None:
        self.zones = list(zones)
        self.resolvers = list(resolvers)
        self.engine = engine
        self.store = store
        self.writer = writer
        self.pager = pager
        self.metrics = metrics
        self.policy = policy
        self.schedule = schedule
        self.vantage = vantage
        self.clock = clock
        self.progress = progress
        self.auditor = auditor
        self.open: dict[str, Incident] = {}
        self.audit_open: dict[str, Incident] = {}  # paged audit findings, by audit_key
        self._stop = asyncio.Event()
        self._sweep: asyncio.Task[list[CheckResult]] | None = None
        self.rounds_done = 0

    def request_stop(self) -> None:
        """Signal handler: stop the sweep in progress and leave the loop."""
        if not self._stop.is_set():
            log.info("stopping", extra={"event": "stop"})
        self._stop.set()
        if self._sweep is not None and not self._sweep.done():
            self._sweep.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        now = self.clock()
        restored = self.store.open_incidents()
        self.open, events = retire(restored, [z.name for z in self.zones], now=now)
        # Audit incidents of zones no longer watched resolve now; the others wait for a pass.
        self.audit_open, audit_events = audit_step(
            self.store.open_audit_incidents(), [], answered={},
            watched=[z.name for z in self.zones] if self.auditor else (), now=now)
        events += audit_events
        if events:
            number = self.store.last_round()
            self._commit(number, [e.incident for e in events], events, now)
            self.writer.submit(to_lines(incident_points(
                events, RoundInfo(number, self.vantage, now, 0.0, False))))
        if self.open or self.audit_open:
            log.info("open incidents restored", extra={
                "event": "restore", "incidents": sorted(i.id for i in self._all_open())})
            self.pager.kick(self._all_open())
        sched = self.schedule
        rng = random.Random(self.vantage)  # jitter differs between vantages, repeatable per one
        t0 = now
        done_k: int | None = None
        while not self.stopping and (sched.rounds == 0 or self.rounds_done < sched.rounds):
            slot = next_slot(t0, sched.interval, done_k, self.clock(), sched.jitter, rng)
            wait = slot.start - self.clock()
            if wait > 0 and not await self._sleep(wait):
                break
            # Overran = still sweeping when the next slot on the grid began.
            deadline = t0 + (slot.k + 1) * sched.interval
            try:
                await self._round(deadline)
            except Exception as exc:  # a bad round must not end the monitor
                self.metrics.round_errors.inc()
                self.metrics.health.last_round_ok = False
                log.error("round failed: %s: %s", exc.__class__.__name__, exc, exc_info=exc,
                          extra={"event": "round-error", "error": exc.__class__.__name__})
            done_k = slot.k

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless told to stop; False when stopping."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    async def _sweep_once(self, number: int) -> tuple[RoundChecks, bool]:
        """The sweep, with a progress bar on a terminal; (what it found, partial)."""
        found = RoundChecks(number, self.vantage)
        total = sum(len(z.probes) for z in self.zones) * len(self.resolvers)
        bar: Any = (Progress(TextColumn(f"round {number}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=True)
                    if self.progress else nullcontext())
        with bar:
            task = bar.add_task("sweep", total=total) if self.progress else None

            def progress(r: CheckResult) -> None:
                found.add(r)
                if task is not None:
                    bar.advance(task)

            self._sweep = asyncio.ensure_future(
                self.engine.sweep(self.zones, self.resolvers, progress=progress, keep=False))
            try:
                await self._sweep
                return found, False
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
                return found, True
            finally:
                self._sweep = None

    async def _round(self, deadline: float) -> None:
        started = self.clock()
        cpu0 = time.process_time()
        number = self.store.last_round() + 1
        # The signer-side audit asks the authoritative servers while the sweep asks resolvers.
        audit = (asyncio.ensure_future(self.auditor.collect(self.zones))
                 if self.auditor is not None else None)
        try:
            found, partial = await self._sweep_once(number)
        except BaseException:
            if audit is not None:
                audit.cancel()
            raise
        report = await self._audit(audit, partial)
        end = self.clock()
        rnd = RoundInfo(number, self.vantage, started, end - started, overrun=end > deadline,
                        partial=partial)
        worst = found.worst.by_zone
        lines = found.lines.lines()
        points: list[Point] = []
        events: list[IncidentEvent] = []
        if partial:
            # A partial round says nothing about the zones it did not reach: no zone counts,
            # and incidents wait for a full round.
            self.store.commit_round(number, [], [], now=end)
        else:
            points += zone_points(worst, rnd)
            causes = {f.zone: cause_text(f) for f in (report.findings if report else ())
                      if f.code is FindingCode.UNSAFE_ROLLOVER}
            rounds = [replace(zr, cause=causes.get(zr.zone, "")) for zr in zone_rounds(worst)]
            now_open, events = step(self.open, rounds, now=end, policy=self.policy)
            # Every changed incident is stored (the resolve countdown too), not only events.
            changed = [i for z, i in now_open.items() if self.open.get(z) != i]
            changed += [e.incident for e in events if e.event is EventKind.RESOLVE]
            audit_open = self.audit_open
            if report is not None:
                audit_open, audit_events = audit_step(
                    self.audit_open, report.findings,
                    answered={z.zone: z.answered for z in report.zones},
                    watched=[z.name for z in self.zones], now=end)
                changed += [i for k, i in audit_open.items() if self.audit_open.get(k) != i]
                changed += [e.incident for e in audit_events if e.event is EventKind.RESOLVE]
                events += audit_events
            try:
                # Stored first: only incidents (and their alerts) safely on disk count.
                self._commit(number, changed, events, end)
            except Exception:
                self.writer.submit(lines + to_lines([*points, round_point(rnd, len(found))]))
                raise
            self.open, self.audit_open = now_open, audit_open
            points += incident_points(events, rnd)
        if report is not None:
            points += finding_points(report.findings, rnd)
        m = self.metrics
        points += [round_point(rnd, len(found)),
                   stats_point(rnd, m.delivery, m.alerts, len(self.open))]
        self.writer.submit(lines + to_lines(points))
        self.pager.kick(self._all_open())
        self._account(found, rnd, time.process_time() - cpu0)

    def _all_open(self) -> list[Incident]:
        return [*self.open.values(), *self.audit_open.values()]

    async def _audit(self, task: asyncio.Future[list[ZoneSnapshot]] | None,
                     partial: bool) -> AuditReport | None:
        """The round's audit, judged and stored; None when stopped or failed (logged): a broken
        audit must not cost the round its checks."""
        if task is None:
            return None
        if partial:
            task.cancel()
        try:
            snaps = await task
            assert self.auditor is not None
            report = self.auditor.record(snaps)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            return None
        except Exception as exc:
            self.metrics.audit_errors.inc()
            log.error("audit failed: %s: %s", exc.__class__.__name__, exc, exc_info=exc,
                      extra={"event": "audit-error", "error": exc.__class__.__name__})
            return None
        for f in report.findings:
            self.metrics.audit_findings.labels(f.code.value).inc()
            level = (logging.WARNING if f.severity is not FindingSeverity.INFO else logging.INFO)
            log.log(level, f"audit {f.code.value} {f.zone}", extra={
                "event": "audit-finding", "code": f.code.value, "zone": f.zone,
                "severity": f.severity.value, "servers": list(f.servers),
                "keytags": list(f.keytags), "new_keytags": list(f.new_keytags),
                "at_risk_until": f.at_risk_until, "detail": f.detail})
        return report

    def _commit(self, number: int, incidents: Sequence[Incident],
                events: Sequence[IncidentEvent], now: float) -> None:
        self.store.commit_round(number, incidents, self.pager.items(events), now=now)
        for e in events:
            i = e.incident
            level = logging.WARNING if e.event is EventKind.OPEN else logging.INFO
            # Audit incidents log as audit-incident-*: "incident-open" stays what resolvers saw.
            prefix = "incident" if i.source == SOURCE_RESOLVERS else "audit-incident"
            log.log(level, f"{prefix} {e.event.value} {i.id}", extra={
                "event": f"{prefix}-{e.event.value}", "incident": i.id, "zone": i.zone,
                "kind": i.kind, "affected": i.affected, "resolvers": list(i.resolvers),
                "rrsig_keytags": list(i.rrsig_keytags), "cached_keytags": list(i.cached_keytags),
                "recovers_at": i.recovers_at, "detail": i.detail, "cause": i.cause})

    def _account(self, found: RoundChecks, rnd: RoundInfo, cpu_s: float) -> None:
        m = self.metrics
        verdicts = found.verdicts
        for v, n in verdicts.items():
            m.checks.labels(v.value).inc(n)
        m.followups.inc(found.followups)
        m.duration.observe(rnd.duration_s)
        if rnd.overrun:
            m.overruns.inc()
            log.warning("round overran its interval", extra={
                "event": "overrun", "round": rnd.number, "interval_s": self.schedule.interval,
                "duration_s": round(rnd.duration_s, 3)})
        m.last_round.set(rnd.started + rnd.duration_s)
        m.health.last_round_end = rnd.started + rnd.duration_s
        m.health.last_round_ok = not rnd.partial
        if not rnd.partial:
            m.rounds.inc()
            self.rounds_done += 1
        summary = ", ".join(f"{verdicts[v]} {v.value}" for v in Verdict if verdicts[v])
        log.info(f"round {rnd.number} done: {len(found)} checks ({summary or 'none'})", extra={
            "event": "round", "round": rnd.number, "checks": len(found),
            "duration_s": round(rnd.duration_s, 3),
            # the whole round: sweep, points, incidents, hand-over to the writer
            "total_s": round(self.clock() - rnd.started, 3), "cpu_s": round(cpu_s, 3),
            "partial": rnd.partial,
            "verdicts": {v.value: n for v, n in verdicts.items()},
            "open_incidents": len(self.open)})
