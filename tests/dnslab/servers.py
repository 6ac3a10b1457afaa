"""Config rendering and process control for the lab's NSD and resolver daemons."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import string
import subprocess
import time
from collections.abc import Sequence
from typing import IO

TEMPLATES = pathlib.Path(__file__).with_name("templates")

RESOLVER_BINARIES = {
    "unbound": "unbound",
    "bind": "named",
    "kresd": "kresd",
    "pdns": "pdns_recursor",
}
AUTH_BINARIES = ("nsd", "nsd-control", "dnssec-keygen", "dnssec-signzone", "ip")


class ServerError(RuntimeError):
    """A daemon failed to start or to do what it was asked."""


def render(template: str, **values: object) -> str:
    """Fill a template from the templates/ directory ($name placeholders)."""
    text = (TEMPLATES / template).read_text()
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


def tail(path: pathlib.Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class Daemon:
    """One foreground daemon started by the lab; stop() only touches that process."""

    def __init__(self, name: str, cmd: Sequence[str], rundir: pathlib.Path, log: pathlib.Path) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.rundir = rundir
        self.log = log  # the daemon's own log file (shown on failure)
        self.console = rundir / f"{name}.console"  # stdout/stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self._console_fh: IO[bytes] | None = None

    def start(self) -> None:
        self._console_fh = open(self.console, "ab")  # noqa: SIM115 - closed in stop()
        # own session: a Ctrl-C in the terminal reaches the lab, which then stops us in order
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.rundir,
            stdin=subprocess.DEVNULL,
            stdout=self._console_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self, why: str) -> ServerError:
        return ServerError(
            f"{self.name}: {why}\ncommand: {' '.join(self.cmd)}\n"
            f"--- {self.console} ---\n{tail(self.console)}\n--- {self.log} ---\n{tail(self.log)}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # the process group is ours alone (start_new_session), so this kills only our daemon
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if self._console_fh is not None:
            self._console_fh.close()
            self._console_fh = None


def nsd_daemon(rundir: pathlib.Path, address: str, zones: dict[str, pathlib.Path]) -> Daemon:
    """Write an NSD config serving `zones` (name -> signed file) on address:53."""
    rundir.mkdir(parents=True, exist_ok=True)
    for stale in ("nsd.ctl", "zone.list", "xfrd.state", "nsd.pid"):
        (rundir / stale).unlink(missing_ok=True)
    blocks = "\n".join(f'zone:\n    name: "{n}"\n    zonefile: "{f}"\n' for n, f in zones.items())
    conf = rundir / "nsd.conf"
    conf.write_text(render("nsd.conf", address=address, rundir=rundir, zonesdir=rundir, zones=blocks))
    return Daemon(f"nsd-{address}", ["nsd", "-d", "-c", str(conf)], rundir, rundir / "nsd.log")


def nsd_reload(rundir: pathlib.Path, zone: str) -> None:
    """Force NSD to re-read one zone file regardless of its mtime."""
    proc = subprocess.run(
        ["nsd-control", "-c", str(rundir / "nsd.conf"), "reload", zone],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or "error" in proc.stdout:
        raise ServerError(f"nsd-control reload {zone}: {proc.stdout} {proc.stderr}")


def resolver_daemon(
    kind: str,
    rundir: pathlib.Path,
    address: str,
    *,
    hints: pathlib.Path,
    root_ds: str,
    root_ns: str,
    root_addr: str,
    bogus_ttl: int = 1,
    aliases: Sequence[str] = (),
    validate: bool = True,
) -> Daemon:
    """Write a fresh config (and empty cache) for one resolver (`validate`: Unbound only)."""
    if rundir.exists():
        shutil.rmtree(rundir)  # a restart must start with an empty cache
    rundir.mkdir(parents=True)
    anchor = f". IN DS {root_ds}"
    if kind == "unbound":
        conf = rundir / "unbound.conf"
        conf.write_text(
            render(
                "unbound.conf",
                address=address,
                rundir=rundir,
                hints=hints,
                anchor=anchor,
                bogus_ttl=bogus_ttl,
                modules="validator iterator" if validate else "iterator",
                # more addresses of the same resolver (benchmarks: many "resolvers", one cache)
                aliases="".join(f"    interface: {a}\n" for a in aliases),
            )
        )
        return Daemon(kind, ["unbound", "-d", "-c", str(conf)], rundir, rundir / "unbound.log")
    if not validate:
        raise ValueError("only the lab's Unbound can run without validation")
    if kind == "bind":
        tag, alg, dtype, digest = root_ds.split(maxsplit=3)
        anchors = f'. static-ds {tag} {alg} {dtype} "{digest.replace(" ", "")}";'
        conf = rundir / "named.conf"
        conf.write_text(
            render(
                "named.conf",
                address=address,
                rundir=rundir,
                hints=hints,
                anchors=anchors,
                bogus_ttl=bogus_ttl,
            )
        )
        return Daemon(kind, ["named", "-f", "-n", "1", "-c", str(conf)], rundir, rundir / "named.log")
    if kind == "kresd":
        conf = rundir / "config.lua"
        conf.write_text(
            render(
                "kresd.lua",
                address=address,
                rundir=rundir,
                anchor=anchor,
                root_ns=root_ns,
                root_addr=root_addr,
            )
        )
        return Daemon(kind, ["kresd", "-n", "-c", str(conf), str(rundir)], rundir, rundir / "kresd.console")
    if kind == "pdns":
        (rundir / "recursor.lua").write_text(render("recursor.lua", ds=root_ds))
        (rundir / "recursor.conf").write_text(
            render("recursor.conf", address=address, rundir=rundir, hints=hints, bogus_ttl=bogus_ttl)
        )
        return Daemon(kind, ["pdns_recursor", f"--config-dir={rundir}"], rundir, rundir / "pdns.console")
    raise ValueError(f"unknown resolver {kind!r}")


def wait_until(pred: object, timeout: float, interval: float = 0.1) -> bool:
    """Poll a zero-argument callable until it returns true or the timeout passes."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except Exception:  # still starting up; keep polling
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def loopback_addresses() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True
    ).stdout
    return {field.split("/")[0] for line in out.splitlines() for field in line.split()[3:4]}


def add_loopback(addresses: Sequence[str]) -> list[str]:
    """Add missing /32s to lo (BIND only binds configured addresses); return those added."""
    present = loopback_addresses()
    added = []
    for addr in addresses:
        if addr not in present:
            subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", "lo"], check=True, capture_output=True)
            added.append(addr)
    return added


def remove_loopback(addresses: Sequence[str]) -> None:
    for addr in addresses:
        subprocess.run(["ip", "addr", "del", f"{addr}/32", "dev", "lo"], check=False, capture_output=True)
