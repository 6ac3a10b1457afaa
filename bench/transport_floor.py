"""Benchmark: how much of dnsperf's rate is left for a check once the transport has had its share.

Three layers over the same names against the lab's Unbound (warm cache, every answer secure),
each against dnsperf measured in the same run, so the ratios do not depend on how busy this
shared machine is today:
  transport  asyncio + the project's UDP channel only: send, match the reply, wake the waiter
             (no triage, no observation, no verdict, no output) - the floor of any check
  engine     Engine.sweep with nothing kept or written (triage, observation, verdict)
The command itself (with its JSON output) is bench/check_vs_dnsperf.py. The last line says how
many microseconds a check may cost in all for a target ratio, and how many the floor leaves.
In-process, start-up apart. Traffic goes to 127.53.x.x only.

    PYTHONPATH=tests python3 bench/transport_floor.py [--names 5000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from engine_vs_dnsperf import BENCH_ZONE, bench_lab, run_dnsperf

from probe.cli import tune_gc
from probe.engine import Engine, EngineConfig
from probe.errors import TransportError
from probe.resolvers import ResolverSpec
from probe.transport import Transport
from probe.wire import TemplateCache
from probe.zones import ProbeName, ZoneSpec

TARGET_RATIO = 0.40


async def transport_only(host: str, names: list[ProbeName], rounds: int,
                         workers: int) -> tuple[float, float, int]:
    """(wall s, CPU s, answered) for `rounds` passes over `names`, `workers` in flight."""
    cache = TemplateCache(2 * len(names) + 16)
    tmpls = [cache.get(p.qname, p.qtype) for p in names]  # built before the clock starts
    tr = Transport(timeout=2.0)
    ch = tr.channel(host, 53)
    work = iter(tmpls * rounds)
    answered = 0

    async def worker() -> None:
        nonlocal answered
        for t in work:
            try:
                await ch.send(t)
                answered += 1
            except TransportError:
                pass
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tr.close()
    return wall, cpu, answered


async def engine_only(host: str, names: list[ProbeName], rounds: int,
                      workers: int) -> tuple[float, float, int]:
    zone = ZoneSpec(BENCH_ZONE, tuple(names))
    resolver = ResolverSpec("unbound", host)
    engine = Engine(EngineConfig(qps=0, max_inflight=workers, per_resolver=workers))
    await engine.sweep([zone], [resolver], keep=False)  # templates built, as in a daemon
    done = 0

    def count(_: object) -> None:
        nonlocal done
        done += 1
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        await engine.sweep([zone], [resolver], progress=count, keep=False)
    return time.perf_counter() - wall, time.process_time() - cpu, done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--names", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=4, help="passes over the names per measurement")
    ap.add_argument("--workers", type=int, default=256, help="queries in flight (check's default)")
    ap.add_argument("--seconds", type=float, default=3.0, help="each dnsperf run")
    args = ap.parse_args()

    try:
        import uvloop  # as the command runs when installed with [fast]

        uvloop.install()
    except ImportError:
        pass
    tune_gc()  # as the installed command does (probe.cli.entry)
    with bench_lab("dnssec-probe-bench-floor-", names=args.names) as (_, addrs, names):
        host = addrs[0]
        run_dnsperf(host, 53, names, 1.0)  # warm the cache
        rows = []
        for layer, fn in (("transport", transport_only), ("engine", engine_only)):
            perf = run_dnsperf(host, 53, names, args.seconds)
            wall, cpu, n = asyncio.run(fn(host, names, args.rounds, args.workers))
            rows.append((layer, perf, n / wall, cpu / n * 1e6, n))
    print(f"{args.names} names x {args.rounds} passes, {args.workers} in flight, python "
          f"{sys.version.split()[0]}, in-process (start-up apart)")
    for layer, perf, rate, cpu_us, n in rows:
        print(f"  {layer:9s} {rate:9.0f} q/s = {rate / perf:.2f} of dnsperf ({perf:.0f} q/s), "
              f"{cpu_us:5.1f} us CPU per query ({n} answered)")
    perf = rows[0][1]
    budget = 1e6 / (TARGET_RATIO * perf)
    print(f"for {TARGET_RATIO:.0%} of dnsperf a check may cost {budget:.1f} us in all, one process; "
          f"the transport floor takes {rows[0][3]:.1f}, leaving {budget - rows[0][3]:.1f} us for "
          f"the triage, the observation, the verdict and the output (the engine takes "
          f"{rows[1][3] - rows[0][3]:.1f} more without output)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
