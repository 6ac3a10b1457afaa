"""Session fixtures: a real Alertmanager on loopback and receivers it delivers to (pytest plugin)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dnslab.servers import Daemon

ALERTMANAGER_BIN = "prometheus-alertmanager"
AMTOOL_BIN = "amtool"
# Where the Alertmanager fixture's receivers listen (paths on its own recorder).
WEBHOOK_PATH = "/webhook"
PAGERDUTY_PATH = "/pagerduty"
PAGERDUTY_TEST_KEY = "am-fixture-routing-key"


@dataclass(frozen=True)
class Recorded:
    """One request the recorder answered."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it was not JSON
    status: int  # what the recorder answered
    at: float  # time.time() on arrival


@dataclass
class _Fault:
    path: str | None  # None: any path
    status: int
    body: str
    remaining: int


class HttpReceiver:
    """A loopback HTTP server in its own thread that records every request.

    Answers 200 `{"status": "success"}` unless told to fail (`fail_next`) or to be slow
    (`set_delay`). Independent of any event loop, so async tests and Alertmanager alike can
    use it; all methods are thread-safe.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._records: list[Recorded] = []
        self._faults: list[_Fault] = []
        self._delays: dict[str | None, float] = {}
        self._release = threading.Event()  # set on clear/close: slow handlers stop waiting
        self._generation = 0  # bumped by clear(): a slow handler of an earlier test records nothing
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-receiver",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    # -- test API ------------------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[Recorded]:
        """Every request so far (any answer), oldest first; only `path` when given."""
        with self._lock:
            return [r for r in self._records if path is None or r.path == path]

    def received(self, path: str | None = None) -> list[Any]:
        """The JSON bodies of requests answered with 2xx (delivered), oldest first."""
        return [r.body for r in self.requests(path) if 200 <= r.status < 300]

    def fail_next(self, n: int, status: int = 503, *, path: str | None = None,
                  body: str = "") -> None:
        """Answer `status` (with `body`) to the next `n` requests (to `path`, or to any)."""
        with self._lock:
            self._faults.append(_Fault(path, status, body or f"injected {status}", n))

    def set_delay(self, seconds: float, *, path: str | None = None) -> None:
        """Wait this long before answering (requests to `path`, or all); 0 turns it off."""
        with self._lock:
            self._delays[path] = seconds

    def clear(self) -> None:
        """Forget recorded requests, pending failures and delays; release slow handlers."""
        with self._lock:
            self._records.clear()
            self._faults.clear()
            self._delays.clear()
            self._generation += 1
            self._release.set()
            self._release = threading.Event()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll until `predicate()` is true (blocking; for sync code); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; {self.describe()}")
            time.sleep(0.05)
        return True

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """wait_for for async tests: the event loop keeps running while we poll."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; {self.describe()}")
            await asyncio.sleep(0.02)
        return True

    def describe(self) -> str:
        recs = self.requests()
        return f"{len(recs)} request(s): " + "; ".join(f"{r.path} -> {r.status}" for r in recs[-20:])

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- server side ---------------------------------------------------------------------------

    def _answer(self, path: str) -> tuple[int, str, float, threading.Event, int]:
        with self._lock:
            delay = self._delays.get(path, self._delays.get(None, 0.0))
            for f in self._faults:
                if f.remaining > 0 and (f.path is None or f.path == path):
                    f.remaining -= 1
                    return f.status, f.body, delay, self._release, self._generation
        return 200, '{"status": "success"}', delay, self._release, self._generation

    def _record(self, rec: Recorded, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._records.append(rec)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_GET(self) -> None:
                self._handle()

            def _handle(self) -> None:
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                text = raw.decode("utf-8", "replace")
                try:
                    body: Any = json.loads(text) if text else None
                except ValueError:
                    body = text
                path = urllib.parse.urlsplit(self.path).path
                status, reply, delay, release, generation = receiver._answer(path)
                if delay > 0:
                    release.wait(delay)
                receiver._record(Recorded(self.command, path, dict(self.headers.items()), body,
                                          status, arrived), generation)
                data = reply.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test); nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


class Alertmanager:
    """A running prometheus-alertmanager whose webhook and PagerDuty receivers record to
    `receiver` (paths WEBHOOK_PATH and PAGERDUTY_PATH)."""

    def __init__(self, url: str, receiver: HttpReceiver, daemon: Daemon, version: str,
                 config: Path) -> None:
        self.url = url
        self.receiver = receiver
        self.daemon = daemon
        self.version = version
        self.config = config

    def received(self, path: str) -> list[dict[str, Any]]:
        """Notification bodies Alertmanager delivered to WEBHOOK_PATH or PAGERDUTY_PATH."""
        return [b for b in self.receiver.received(path) if isinstance(b, dict)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        return self.receiver.wait_for(predicate, timeout)

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        return await self.receiver.wait_for_async(predicate, timeout)

    def clear(self) -> None:
        self.receiver.clear()

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (active, silenced and inhibited), filtered by label equality."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in labels.items()])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as resp:
            data: list[dict[str, Any]] = json.load(resp)
        return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(receiver: HttpReceiver) -> str:
    # Alertmanager 0.25 schema. Both receivers get every alert (continue: true); one group per
    # zone; 1 s waits so tests see notifications quickly; repeats never within a test run.
    return f"""\
route:
  receiver: blackhole
  group_by: ['alertname', 'zone']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 24h
  routes:
    - receiver: webhook
      continue: true
    - receiver: pagerduty
      continue: true
receivers:
  - name: blackhole
  - name: webhook
    webhook_configs:
      - url: '{receiver.url}{WEBHOOK_PATH}'
        send_resolved: true
  - name: pagerduty
    pagerduty_configs:
      - routing_key: '{PAGERDUTY_TEST_KEY}'
        url: '{receiver.url}{PAGERDUTY_PATH}'
        send_resolved: true
"""


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        why = f"{binary} is not installed (tests/setup.sh installs prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def _recorder() -> Iterator[HttpReceiver]:
    rec = HttpReceiver()
    yield rec
    rec.close()


@pytest.fixture
def http_receiver(_recorder: HttpReceiver) -> Iterator[HttpReceiver]:
    """A loopback HTTP recorder, clean for each test (one server for the session)."""
    _recorder.clear()
    yield _recorder
    _recorder.clear()


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """A real Alertmanager on 127.0.0.1 (clustering off) with recording receivers."""
    binary = _need(ALERTMANAGER_BIN)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=False).stdout.split("\n", 1)[0].strip()
    rundir = Path(tmp_path_factory.mktemp("alertmanager"))
    receiver = HttpReceiver()
    config = rundir / "alertmanager.yml"
    config.write_text(_config(receiver))
    amtool = shutil.which(AMTOOL_BIN)
    if amtool is not None:
        check = subprocess.run([amtool, "check-config", str(config)], capture_output=True,
                               text=True, check=False)
        assert check.returncode == 0, f"alertmanager config rejected:\n{check.stdout}{check.stderr}"
    daemon: Daemon | None = None
    try:
        for _ in range(3):  # the free port may be taken between probing and binding
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            storage = rundir / f"data-{port}"
            daemon = Daemon("alertmanager", [
                binary, f"--config.file={config}", f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                "--log.level=info",
            ], rundir, rundir / "alertmanager.console")
            daemon.start()
            deadline = time.monotonic() + 20
            while daemon.alive() and not _ready(url) and time.monotonic() < deadline:
                time.sleep(0.1)
            if daemon.alive() and _ready(url):
                break
            daemon.stop()
        else:
            assert daemon is not None
            raise daemon.failure("did not become ready")
        yield Alertmanager(url, receiver, daemon, version, config)
    finally:
        if daemon is not None:
            daemon.stop()
        receiver.close()
