"""The round loop in-process: rounds never overlap, overruns are counted, a stop writes a partial
round and leaves incidents alone, a restart restores open incidents without a new event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from test_daemon_units import round_results

from probe.alerts import AlertStats
from probe.alerts.dispatch import Alerter
from probe.daemon.metrics import Metrics
from probe.daemon.runner import Monitor, Schedule
from probe.engine import CheckResult
from probe.incidents import IncidentPolicy
from probe.resolvers import ResolverSpec
from probe.sinks import DeliveryStats
from probe.state import StateStore
from probe.zones import ZoneSpec


class FakeSweep:
    """Stands in for the engine: takes `delay` seconds, reports results one by one."""

    def __init__(self, delay: float, results: list[CheckResult], *, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.delay = delay
        self.results = results
        self.active = 0
        self.max_active = 0
        self.calls = 0

    async def sweep(self, zones: Sequence[ZoneSpec], resolvers: Sequence[ResolverSpec], *,
                    progress: Callable[[CheckResult], None] | None = None,
                    keep: bool = True) -> list[CheckResult]:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("engine bug")
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for r in self.results:
                await asyncio.sleep(self.delay / len(self.results))
                if progress:
                    progress(r)
            return list(self.results) if keep else []
        finally:
            self.active -= 1


class ListWriter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def submit(self, lines: list[str]) -> None:
        self.lines += lines

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def shutdown(self, timeout: float) -> None:
        return None

    async def flush(self, timeout: float) -> bool:
        return True


def monitor(store: StateStore, sweep: FakeSweep, writer: ListWriter, *, interval: float,
            rounds: int) -> Monitor:
    results = sweep.results
    metrics = Metrics(DeliveryStats(), AlertStats(), lambda: 0)
    return Monitor(
        zones=[results[0].zone], resolvers=sorted({r.resolver for r in results},
                                                  key=lambda r: r.name),
        engine=sweep, store=store, writer=writer,
        pager=Alerter([], store, AlertStats(), vantage="t"), metrics=metrics,
        policy=IncidentPolicy(), schedule=Schedule(interval, rounds, 0.0), vantage="t")


async def test_overrunning_rounds_never_overlap_and_are_counted(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    sweep, writer = FakeSweep(0.3, round_results()), ListWriter()
    m = monitor(store, sweep, writer, interval=0.1, rounds=3)
    await m.run()
    assert sweep.calls == 3 and sweep.max_active == 1
    assert m.metrics.registry.get_sample_value("dnssec_probe_round_overruns_total") == 3
    rounds = [ln for ln in writer.lines if ln.startswith("dnssec_round,")]
    assert len(rounds) == 3 and all("overrun=true" in ln for ln in rounds)
    assert store.last_round() == 3 and len(m.open) == 1  # 2 bogus resolvers: one incident
    store.close()


async def test_rounds_keep_the_grid(tmp_path: Path) -> None:
    """Round k starts at t0 + k*interval: a late wake-up (a busy machine) is not carried into
    the next round, so lateness never accumulates."""
    store = StateStore(tmp_path)
    sweep, writer = FakeSweep(0.05, round_results()), ListWriter()
    m = monitor(store, sweep, writer, interval=0.25, rounds=5)
    await m.run()
    starts = [int(ln.rsplit(" ", 1)[1]) / 1e9 for ln in writer.lines
              if ln.startswith("dnssec_round,")]
    late = [s - (starts[0] + k * 0.25) for k, s in enumerate(starts)]
    assert len(starts) == 5 and all(-0.001 <= x < 0.2 for x in late), late
    assert m.metrics.registry.get_sample_value("dnssec_probe_round_overruns_total") == 0
    store.close()


async def test_stop_mid_round_writes_a_partial_round_and_leaves_incidents(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    sweep, writer = FakeSweep(2.0, round_results()), ListWriter()
    m = monitor(store, sweep, writer, interval=10.0, rounds=0)
    task = asyncio.create_task(m.run())
    await asyncio.sleep(0.8)  # 2 of 6 checks reported
    m.request_stop()
    await asyncio.wait_for(task, 2)
    checks = [ln for ln in writer.lines if ln.startswith("dnssec_check,")]
    (rnd,) = [ln for ln in writer.lines if ln.startswith("dnssec_round,")]
    assert 1 <= len(checks) < 6 and f"checks={len(checks)}i" in rnd and "partial=true" in rnd
    assert not m.open and not store.open_incidents()  # a partial round decides nothing
    assert m.metrics.health.last_round_ok is False
    store.close()


async def test_restart_restores_open_incidents_without_a_new_event(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    writer = ListWriter()
    await monitor(store, FakeSweep(0.01, round_results()), writer, interval=0.05, rounds=1).run()
    opened = [ln for ln in writer.lines if ln.startswith("dnssec_incident,")]
    assert len(opened) == 1 and "event=open" in opened[0]
    store.close()
    store = StateStore(tmp_path)
    writer2 = ListWriter()
    m = monitor(store, FakeSweep(0.01, round_results()), writer2, interval=0.05, rounds=2)
    await m.run()
    assert not [ln for ln in writer2.lines if ln.startswith("dnssec_incident,")]
    assert len(m.open) == 1 and store.last_round() == 3
    store.close()


async def test_a_failing_round_is_logged_counted_and_the_next_one_runs(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    sweep, writer = FakeSweep(0.01, round_results(), fail_first=1), ListWriter()
    m = monitor(store, sweep, writer, interval=0.05, rounds=2)
    await m.run()
    assert sweep.calls == 3 and m.rounds_done == 2
    assert m.metrics.registry.get_sample_value("dnssec_probe_round_errors_total") == 1
    assert len([ln for ln in writer.lines if ln.startswith("dnssec_round,")]) == 2
    store.close()
