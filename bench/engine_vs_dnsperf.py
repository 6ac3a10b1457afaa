"""Benchmark: the engine's checks/s and CPU per check against dnsperf, same resolver, same names.

Starts the lab's Unbound (warm cache, every answer secure) unless --resolver is given, measures
dnsperf and the engine back to back in one run, and prints ratios, so the result does not depend
on how fast or busy this machine is today. Traffic goes to 127.53.x.x only.

    PYTHONPATH=tests python3 bench/engine_vs_dnsperf.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from probe.codes import Verdict
from probe.engine import Engine, EngineConfig
from probe.resolvers import ResolverSpec, parse_hostport
from probe.zones import ProbeName, ZoneSpec

TARGET_RATIO = 0.40
BENCH_ZONE = "101.in-addr.arpa."


@dataclass
class Rate:
    name: str
    checks: int
    wall: float
    cpu: float

    @property
    def per_s(self) -> float:
        return self.checks / self.wall

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.checks * 1e6


@contextlib.contextmanager
def bench_lab(prefix: str, addresses: int = 1,
              names: int | None = None) -> Iterator[tuple[Path, list[str], list[ProbeName]]]:
    """The test lab's Unbound listening on `addresses` loopback addresses (the lab's own first,
    then 127.53.2.x aliases sharing its cache), started for the `with` block and stopped after;
    yields a fresh work directory, the addresses and the bench zone's first `names` probe names
    (PYTHONPATH=tests)."""
    from dnslab import Lab  # the test lab

    work = Path(tempfile.mkdtemp(prefix=prefix))
    aliases = [f"127.53.2.{i}" for i in range(1, addresses)]
    lab = Lab(work / "lab", resolvers=("unbound",), unbound_aliases=aliases)
    lab.start()
    try:
        probes = [ProbeName(q.lower(), t) for q, t in lab.zones[BENCH_ZONE].probe_names]
        yield work, [lab.resolvers[0].host, *aliases], probes[:names]
    finally:
        lab.stop()


def run_dnsperf(host: str, port: int, names: list[ProbeName], seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.writelines(f"{p.qname} {p.qtype}\n" for p in names)
        path = f.name
    # -e/-D: EDNS0 with DO=1, exactly what the engine sends; -q: queries outstanding.
    out = subprocess.run(
        ["dnsperf", "-s", host, "-p", str(port), "-d", path, "-l", str(seconds), "-e", "-D",
         "-q", "500", "-c", "1"],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"could not read dnsperf output:\n{out}")
    return float(m.group(1))


async def run_engine(name: str, cfg: EngineConfig, zone: ZoneSpec, resolver: ResolverSpec,
                     seconds: float) -> Rate:
    engine = Engine(cfg)
    checks = 0
    verdicts: Counter[Verdict] = Counter()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        results = await engine.sweep([zone], [resolver])
        checks += len(results)
        verdicts.update(r.classification.verdict for r in results)
    rate = Rate(name, checks, time.perf_counter() - wall0, time.process_time() - cpu0)
    if set(verdicts) != {Verdict.SECURE}:
        raise SystemExit(f"{name}: not every answer was secure ({dict(verdicts)}): cache not warm?")
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    ap.add_argument("--resolver", help="HOST[:PORT] of a warm validating resolver (default: lab)")
    ap.add_argument("--names", help="file of 'QNAME QTYPE' lines (default: the lab bench zone)")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()

    with contextlib.ExitStack() as stack:
        if args.resolver:
            host, port = parse_hostport(args.resolver)
            if not args.names:
                ap.error("--resolver needs --names")
        else:
            _, addrs, lab_names = stack.enter_context(bench_lab("dnssec-probe-bench-"))
            host, port = addrs[0], 53
        if args.names:
            names = [ProbeName(*line.split()[:2]) for line in Path(args.names).read_text().splitlines()
                     if line.strip() and not line.startswith("#")]
        else:
            names = lab_names
        # Each sweep asks every name several times over so start-up and tail of a sweep are
        # small next to its steady state (a daemon sweeps zones x resolvers in one go too).
        zone = ZoneSpec(BENCH_ZONE, tuple(names) * max(1, 10000 // len(names)))
        resolver = ResolverSpec("bench", host, port)
        if not args.no_uvloop:
            try:
                import uvloop

                asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            except ImportError:
                pass
        cfg = EngineConfig(qps=0, max_inflight=1024, per_resolver=64, timeout=2.0, retries=1,
                           diagnose=False)
        # Warm the cache (and check every answer is secure) before anything is timed.
        asyncio.run(run_engine("warm-up", replace(cfg, full_parse=True), zone, resolver, 0.1))

        dnsperf = run_dnsperf(host, port, names, args.seconds)
        triage = asyncio.run(run_engine("engine (header triage)", cfg, zone, resolver, args.seconds))
        full = asyncio.run(run_engine("engine (full parse)", replace(cfg, full_parse=True), zone,
                                      resolver, args.seconds))

    print(f"resolver {host}:{port}, {len(names)} names, {args.seconds:g} s per run, "
          f"python {sys.version.split()[0]}")
    print(f"{'':28s}{'checks/s':>12s}{'vs dnsperf':>12s}{'CPU us/check':>14s}")
    print(f"{'dnsperf':28s}{dnsperf:12.0f}{1.0:12.2f}{'-':>14s}")
    for r in (triage, full):
        print(f"{r.name:28s}{r.per_s:12.0f}{r.per_s / dnsperf:12.2f}{r.cpu_us:14.1f}")
    ok = triage.per_s / dnsperf >= TARGET_RATIO
    print(f"target: engine >= {TARGET_RATIO:.0%} of dnsperf -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
