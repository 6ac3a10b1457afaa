"""Session fixtures: a real InfluxDB 1.6 and a real VictoriaMetrics on loopback (pytest plugin).

Fixtures (all bound to 127.0.0.1, random free ports, stopped by pid at session end):
  influxdb          session  InfluxDB1: .url .http_port .start() .stop() .running .ensure_running()
                             .create_db(name) .drop_db(name)
                             .query(influxql, db) -> {"results": [...]} (parsed JSON, epoch=ns)
                             .rows(influxql, db) -> [{tag/column: value}]
  influx_db         function a fresh database name on `influxdb` (server restarted first if a
                             previous test left it stopped), dropped afterwards
  victoriametrics   session  VictoriaMetrics: .url .start() .stop() .running .ensure_running()
                             .force_flush() .export(selector) .wait_export(selector, samples=N)
  vm                function `victoriametrics`, running
A missing binary skips these tests, except when CI is set: then it fails them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dnslab.servers import Daemon, wait_until

HOST = "127.0.0.1"
INFLUXD = "/usr/bin/influxd"
VICTORIA = "/usr/bin/victoria-metrics"
START_TIMEOUT = 30.0

# urllib honours http_proxy; these requests must go straight to loopback
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_db_names = itertools.count(1)


def free_port() -> int:
    """A TCP port nothing listens on right now (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, *, params: dict[str, str] | None = None, body: bytes | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are answers here, not exceptions."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())


def need_binary(path: str) -> str:
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(Path(path).name)
    if found:
        return found
    why = f"{path} is not installed (tests/setup.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"must run in CI: {why}")
    pytest.skip(why)


INFLUXDB_CONF = """\
# Written by tests/influx_fixtures.py: loopback only, nothing in the background.
reporting-disabled = true
reporting-enabled = false   # Debian's build renamed the key above; unknown keys are ignored
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{workdir}/meta"
  logging-enabled = false

[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[shard-precreation]
  enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


class _Server:
    """A daemon started by the tests, ready when `ready()` says so; stop() keeps its data."""

    daemon: Daemon

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.daemon.alive()

    def start(self) -> None:
        self.daemon.start()
        wait_until(lambda: self.ready() or not self.daemon.alive(), START_TIMEOUT)
        if not self.ready():
            failure = self.daemon.failure("not ready")
            self.daemon.stop()
            raise failure

    def stop(self) -> None:
        self.daemon.stop(timeout=15.0)

    def ensure_running(self) -> None:
        if not (self.running and self.ready()):
            self.stop()
            self.start()


class InfluxDB1(_Server):
    """One influxd with its own data dir; stop() and start() keep the data and the ports."""

    def __init__(self, workdir: Path, binary: str = INFLUXD) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://{HOST}:{self.http_port}"
        self.config = workdir / "influxdb.conf"
        self.config.write_text(
            INFLUXDB_CONF.format(host=HOST, rpc_port=self.rpc_port, http_port=self.http_port, workdir=workdir)
        )
        self.daemon = Daemon("influxd", [binary, "-config", str(self.config)], workdir,
                             workdir / "influxd.console")

    def ping(self) -> bool:
        try:
            return http("GET", f"{self.url}/ping", timeout=1.0)[0] == 204
        except OSError:
            return False

    def ready(self) -> bool:
        return self.ping()

    def query(self, influxql: str, db: str | None = None) -> dict[str, Any]:
        """The parsed JSON answer of /query (epoch=ns): {"results": [...]}; AssertionError on any error."""
        params = {"q": influxql, "epoch": "ns"}
        if db:
            params["db"] = db
        status, body = http("POST", f"{self.url}/query", params=params)
        doc: dict[str, Any] = json.loads(body)
        assert status == 200 and "error" not in doc, f"{influxql}: {status} {body!r}"
        errors = [r["error"] for r in doc["results"] if "error" in r]
        assert not errors, f"{influxql}: {errors}"
        return doc

    def rows(self, influxql: str, db: str) -> list[dict[str, Any]]:
        """Every row of every series as {column: value}, with the series' tags (GROUP BY) merged in."""
        return [
            {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
            for result in self.query(influxql, db)["results"]
            for series in result.get("series", [])
            for values in series["values"]
        ]

    def create_db(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def drop_db(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"')


class VictoriaMetrics(_Server):
    """One victoria-metrics; it takes InfluxDB line protocol on /write and /api/v2/write."""

    def __init__(self, workdir: Path, binary: str = VICTORIA) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [
            binary,
            f"-httpListenAddr={HOST}:{self.port}",
            f"-storageDataPath={workdir / 'data'}",
            "-search.latencyOffset=0s",  # points are readable at once, not 30 s later
            "-retentionPeriod=100y",  # test timestamps may be years old
            "-loggerLevel=WARN",
        ]
        self.daemon = Daemon("victoria-metrics", cmd, workdir, workdir / "victoria-metrics.console")

    def healthy(self) -> bool:
        try:
            return http("GET", f"{self.url}/health", timeout=1.0)[0] == 200
        except OSError:
            return False

    def ready(self) -> bool:
        return self.healthy()

    def force_flush(self) -> None:
        status, body = http("GET", f"{self.url}/internal/force_flush")
        assert status == 200, body

    def export(self, selector: str) -> list[dict[str, Any]]:
        """/api/v1/export of every series matching `selector`: [{metric, values, timestamps}]."""
        self.force_flush()
        status, body = http("GET", f"{self.url}/api/v1/export", params={"match[]": selector})
        assert status == 200, body
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def wait_export(self, selector: str, *, samples: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """export() once at least `samples` samples are visible (ingestion is buffered ~1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            series = self.export(selector)
            if sum(len(s["values"]) for s in series) >= samples or time.monotonic() > deadline:
                return series
            time.sleep(0.1)


S = TypeVar("S", bound=_Server)


def _served(server: S) -> Iterator[S]:
    """Started for the session, stopped by pid at its end."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    yield from _served(InfluxDB1(Path(tmp_path_factory.mktemp("influxdb")), need_binary(INFLUXD)))


@pytest.fixture
def influx_db(influxdb: InfluxDB1) -> Iterator[str]:
    influxdb.ensure_running()
    name = f"t{os.getpid()}_{next(_db_names)}"
    influxdb.create_db(name)
    yield name
    if influxdb.running:
        influxdb.drop_db(name)


@pytest.fixture(scope="session")
def victoriametrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    workdir = Path(tmp_path_factory.mktemp("victoriametrics"))
    yield from _served(VictoriaMetrics(workdir, need_binary(VICTORIA)))


@pytest.fixture
def vm(victoriametrics: VictoriaMetrics) -> VictoriaMetrics:
    victoriametrics.ensure_running()
    return victoriametrics
