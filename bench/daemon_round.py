"""Benchmark: a `dnssec-probe run` round end to end — CPU, wall time and peak RSS per round.

What a user runs: the daemon process (`dnssec-probe run --rounds R`), 100 resolvers x 1,000
names by default, every answer secure (the lab's Unbound listening on many 127.53.x.x
addresses, warm cache), points written to the embedded line files. Measured in the same run as
a reference: dnsperf against the same Unbound and names. Start-up is reported apart: the
marginal cost of a round is (cost of R rounds - cost of 1 round) / (R - 1), whole process.

    PYTHONPATH=tests python3 bench/daemon_round.py [--resolvers 100] [--names 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine_vs_dnsperf import BENCH_ZONE, bench_lab, run_dnsperf


@dataclass
class Run:
    rounds: list[dict[str, float]]
    cpu_s: float  # user + sys of the whole process
    wall_s: float
    maxrss_mb: float
    startup_s: float  # process start to the first round's start


def run_daemon(workdir: Path, config: Path, rounds: int) -> Run:
    log = workdir / f"daemon-{rounds}.log"
    state = workdir / f"state-{rounds}"
    t0 = time.time()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probe", "run", "--config", str(config), "--rounds",
             str(rounds), "--state-dir", str(state), "--log-json"],
            stdout=fh, stderr=fh, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"daemon failed:\n{log.read_text()[-3000:]}")
    done = [e for e in events if e.get("event") == "round"]
    verdicts: dict[str, int] = {}
    for e in done:
        for v, n in e["verdicts"].items():
            verdicts[v] = verdicts.get(v, 0) + n
    if set(verdicts) != {"secure"}:
        raise SystemExit(f"not every answer was secure: {verdicts}")
    first_end = _epoch(done[0]["time"])
    startup = first_end - done[0]["total_s"] - t0
    return Run(done, usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, startup)


def _epoch(stamp: str) -> float:
    import datetime

    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--resolvers", type=int, default=100)
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="dnsperf run length")
    args = ap.parse_args()
    if not 1 <= args.resolvers <= 250 or not 1 <= args.names <= 5000 or args.rounds < 2:
        ap.error("1-250 resolvers, 1-5000 names, at least 2 rounds")

    with bench_lab("dnssec-probe-bench-round-", args.resolvers, args.names) as (
            work, addrs, names):
        main_addr = addrs[0]
        (work / "zones.txt").write_text(BENCH_ZONE + " " + " ".join(p.qname for p in names) + "\n")
        (work / "resolvers.txt").write_text("".join(f"r{i} {a}\n" for i, a in enumerate(addrs)))
        config = work / "bench.toml"
        config.write_text(
            f'zones = "{work / "zones.txt"}"\nresolvers = ["{work / "resolvers.txt"}"]\n'
            "interval = 1.0\njitter = 0.0\nqps = 0.0\ntimeout = 2.0\nretries = 1\n"
            'vantage = "bench"\n')
        # Warm the cache (one answer per name is enough: the aliases share it), then the
        # reference: dnsperf, same names, same resolver.
        run_dnsperf(main_addr, 53, names, 1.0)
        dnsperf = run_dnsperf(main_addr, 53, names, args.seconds)
        one = run_daemon(work, config, 1)
        many = run_daemon(work, config, args.rounds)

    checks = args.resolvers * args.names
    marginal_cpu = (many.cpu_s - one.cpu_s) / (args.rounds - 1)
    later = many.rounds[1:]  # the first round also warms the engine's templates
    sweep = sum(r["duration_s"] for r in later) / len(later)
    wall = sum(r["total_s"] for r in later) / len(later)
    in_round_cpu = sum(r["cpu_s"] for r in later) / len(later)
    rate = checks / wall
    print(f"{args.resolvers} resolvers x {args.names} names = {checks} checks per round, "
          f"{args.rounds} rounds, python {sys.version.split()[0]}, embedded line-file sink")
    print(f"dnsperf reference (same names, one address): {dnsperf:.0f} q/s")
    print(f"round wall time (rounds 2..{args.rounds}):     {wall:.2f} s  "
          f"= {rate:.0f} checks/s = {rate / dnsperf:.2f} of dnsperf (sweep alone {sweep:.2f} s)")
    print(f"CPU per round, round loop only:   {in_round_cpu:.2f} s  "
          f"= {in_round_cpu / checks * 1e6:.1f} us/check")
    print(f"CPU per round, whole process:     {marginal_cpu:.2f} s  "
          f"= {marginal_cpu / checks * 1e6:.1f} us/check  (apart: "
          f"{one.cpu_s - marginal_cpu:.2f} s CPU for start-up and the last writes at exit)")
    print(f"start-up to first round:          {many.startup_s:.2f} s")
    print(f"peak RSS: 1 round {one.maxrss_mb:.0f} MB, {args.rounds} rounds {many.maxrss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
