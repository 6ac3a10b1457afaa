"""Test helper: `dnssec-probe run` as a real process, its JSON log lines read as they come."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


class DaemonProc:
    """One daemon process with a config file of its own; logs go to a file we tail."""

    def __init__(self, workdir: Path, settings: Mapping[str, Any],
                 env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "dnssec-probe.toml"
        self.config.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items()))
        self.env = {**os.environ, **(env or {})}
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._pos = 0
        self._rounds = 0
        self.events: list[dict[str, Any]] = []

    def start(self, *extra: str) -> DaemonProc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "probe", "run", "--config", str(self.config), "--log-json",
             *extra],
            cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        return self

    def read(self) -> list[dict[str, Any]]:
        """New log lines since the last read (JSON only; anything else is kept as text)."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._pos)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self._pos += cut
        for line in data[:cut].decode(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                doc = {"msg": line, "event": "text"}
            if doc.get("event") == "round":
                self._rounds += 1
                doc["round_seq"] = self._rounds
            self.events.append(doc)
        return self.events

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float,
                 what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            self.read()
            for e in self.events[seen:]:
                if pred(e):
                    return e
            seen = len(self.events)
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:"
                                     f"\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")
            time.sleep(0.1)

    def wait_rounds(self, n: int, timeout: float) -> None:
        """Wait until `n` more rounds (full or partial) have finished."""
        self.read()
        target = self._rounds + n
        self.wait_for(lambda e: e.get("event") == "round" and e["round_seq"] >= target,
                      timeout, f"round {target}")

    def of(self, event: str) -> list[dict[str, Any]]:
        self.read()
        return [e for e in self.events if e.get("event") == event]

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not stop within {timeout} s:\n{self.tail()}"
                                 ) from None
        self.read()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
