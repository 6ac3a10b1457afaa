"""Benchmark: `dnssec-probe check --json` end to end — what a user runs — against dnsperf.

The whole command as a child process (`python -m probe check --qps 0 --json`), its CPU and
peak RSS from wait4(), against the lab's Unbound (warm cache, every answer secure) listening
on several 127.53.x.x addresses, so one sweep is names x addresses checks. Start-up is measured
apart: the same command over one name; the marginal cost of a check is
(big run - one-name run) / (checks - 1). dnsperf asks the same names of the same Unbound in the
same run (alternated with the command, --pairs times), so the ratios do not depend on how busy
this shared machine is today. Traffic goes to 127.53.x.x only.

    PYTHONPATH=tests python3 bench/check_vs_dnsperf.py [--names 5000] [--addresses 1] [--pairs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine_vs_dnsperf import BENCH_ZONE, bench_lab, run_dnsperf

TARGET_RATIO = 0.40  # of dnsperf's rate, marginal (start-up apart)
TARGET_CPU_US = 25.0  # CPU per check, marginal, whole process


@dataclass
class Run:
    checks: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float


def run_check(zones: Path, resolvers: Path, extra: list[str], out: Path) -> Run:
    t0 = time.perf_counter()
    # Output to a file, read back only as far as the summary: a parent holding a big parsed
    # document would show in the next child's peak RSS (fork copies it until exec).
    with open(out, "wb") as fh, open(os.devnull, "wb") as null:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probe", "check", "--zones", str(zones), "--resolvers",
             str(resolvers), "--qps", "0", "--json", *extra],
            stdout=fh, stderr=null, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(out, "rb") as fh:
        fh.seek(max(0, out.stat().st_size - 4096))
        last = fh.read().decode().rstrip("\n").rsplit("\n", 1)[-1]
    summary = json.loads('{"results": [' + last)["summary"]
    if code != 0 or set(summary) != {"secure"}:
        raise SystemExit(f"check exited {code}, summary {summary}: cache not warm?")
    return Run(sum(summary.values()), wall, usage.ru_utime + usage.ru_stime,
               usage.ru_maxrss / 1024)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--names", type=int, default=5000)
    ap.add_argument("--addresses", type=int, default=1, help="resolver addresses (1-100)")
    ap.add_argument("--pairs", type=int, default=3, help="dnsperf / check pairs")
    ap.add_argument("--seconds", type=float, default=3.0, help="each dnsperf run")
    args = ap.parse_args()
    if not 1 <= args.names <= 5000 or not 1 <= args.addresses <= 100:
        ap.error("1-5000 names, 1-100 addresses")

    with bench_lab("dnssec-probe-bench-check-", args.addresses, args.names) as (
            work, addrs, names):
        host = addrs[0]
        big = work / "zones.txt"
        big.write_text(BENCH_ZONE + " " + " ".join(p.qname for p in names) + "\n")
        one = work / "one.txt"
        one.write_text(f"{BENCH_ZONE} {names[0].qname}\n")
        resolvers = work / "resolvers.txt"
        resolvers.write_text("".join(f"r{i} {a}\n" for i, a in enumerate(addrs)))
        one_resolver = work / "one-resolver.txt"
        one_resolver.write_text(f"r0 {host}\n")
        run_dnsperf(host, 53, names, 1.0)  # warm the cache
        perf: list[float] = []
        runs: list[Run] = []
        starts: list[Run] = []
        for _ in range(args.pairs):
            perf.append(run_dnsperf(host, 53, names, args.seconds))
            starts.append(run_check(one, one_resolver, [], work / "one.json"))
            runs.append(run_check(big, resolvers, [], work / "big.json"))
        json.loads((work / "big.json").read_text())  # the last document is valid JSON

    start = min(starts, key=lambda r: r.cpu_s)
    print(f"check --json: {args.names} names x {args.addresses} address(es) = {runs[0].checks} "
          f"checks per run, {args.pairs} pairs, python {sys.version.split()[0]}")
    print(f"start-up (one check): {start.wall_s:.2f} s wall, {start.cpu_s:.2f} s CPU, "
          f"{start.maxrss_mb:.0f} MB")
    ratios, cpus = [], []
    for p, r in zip(perf, runs, strict=True):
        n = r.checks - 1
        rate = n / max(1e-9, r.wall_s - start.wall_s)
        cpu_us = (r.cpu_s - start.cpu_s) / n * 1e6
        ratios.append(rate / p)
        cpus.append(cpu_us)
        print(f"  dnsperf {p:9.0f} q/s | check {r.wall_s:5.2f} s wall, {r.cpu_s:5.2f} s CPU -> "
              f"marginal {rate:8.0f} checks/s = {rate / p:.2f} of dnsperf, {cpu_us:5.1f} us CPU"
              f"/check, peak RSS {r.maxrss_mb:.0f} MB")
    ratio, cpu = statistics.median(ratios), statistics.median(cpus)
    ok = ratio >= TARGET_RATIO and cpu <= TARGET_CPU_US
    print(f"median: {ratio:.2f} of dnsperf (target >= {TARGET_RATIO}), {cpu:.1f} us CPU/check "
          f"(target <= {TARGET_CPU_US}) -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
