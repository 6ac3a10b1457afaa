"""Command line: `python -m dnslab up [--workdir D]` runs the lab until Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import sys
import tempfile
import threading
from types import FrameType

from . import ALL_RESOLVERS, Lab, LabError, lab_available


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnslab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the lab and keep it running until Ctrl-C / SIGTERM")
    up.add_argument("--workdir", type=pathlib.Path, default=None, help="default: a new temporary directory")
    up.add_argument("--resolvers", default=",".join(ALL_RESOLVERS), help="comma-separated subset")
    args = parser.parse_args(argv)

    ok, why = lab_available()
    if not ok:
        print(why, file=sys.stderr)
        return 2
    workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="dnslab-"))
    lab = Lab(workdir, resolvers=tuple(r for r in args.resolvers.split(",") if r))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        lab.start()
    except LabError as exc:
        print(f"lab failed to start: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(lab.describe(), indent=2), flush=True)
        print("lab is up; Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        lab.stop()
        print("lab stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
