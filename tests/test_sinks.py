"""Sinks, Spool and Delivery with real files and a scripted HTTP server on 127.0.0.1 (faults only)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from httpfault import Answer, FaultServer, closed_port

from probe.errors import DeliveryRejected, DeliveryRetryable
from probe.http import MAX_MESSAGE, backoff_delay, safe_url, server_message, status_error
from probe.sinks import DeliveryStats, Sink
from probe.sinks.delivery import MAX_INTERNAL_ERRORS, Delivery
from probe.sinks.files import FileSink
from probe.sinks.influx_v1 import InfluxV1Sink
from probe.sinks.influx_v2 import InfluxV2Sink
from probe.sinks.spool import Spool

PASSWORD = "pw-Zq81-secret"
TOKEN = "tok-Xy77-secret"
LOGGER = "dnssec_probe.delivery.test"


@pytest.fixture
async def server() -> AsyncIterator[FaultServer]:
    srv = await FaultServer().start()
    yield srv
    await srv.stop()


def rounds(n: int, per_round: int, *, width: int = 0) -> list[list[str]]:
    """n rounds of distinct, ordered lines (fixed length when `width` is set)."""
    return [
        [f"m,r={r:03d} i={i:0{width}d}i {1_700_000_000_000_000_000 + r * 1000 + i}" for i in range(per_round)]
        for r in range(n)
    ]


def flat(batches: Sequence[Sequence[str]]) -> list[str]:
    return [line for batch in batches for line in batch]


def v1(url: str, **kw: object) -> InfluxV1Sink:
    return InfluxV1Sink(url, "probe", password=PASSWORD, username="writer", **kw)  # type: ignore[arg-type]


def v2(url: str, **kw: object) -> InfluxV2Sink:
    return InfluxV2Sink(url, "org1", "bucket1", TOKEN, **kw)  # type: ignore[arg-type]


SINKS: dict[str, Callable[..., Sink]] = {"v1": v1, "v2": v2}


def delivery(sink: Sink, spool_dir: Path, **kw: object) -> Delivery:
    opts: dict[str, object] = {
        "max_batch_lines": 5,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "log": logging.getLogger(LOGGER),
    }
    opts.update(kw)
    max_bytes = int(opts.pop("max_bytes", 1 << 20))  # type: ignore[call-overload]
    return Delivery(sink, Spool(spool_dir, max_bytes=max_bytes), DeliveryStats(), **opts)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(d: Delivery, sink: Sink) -> AsyncIterator[Delivery]:
    """The delivery's run loop for the body of a with-block; then shut down and close."""
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        await d.shutdown(1.0)
        await task
        await sink.close()


async def wait_for(cond: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class MemorySink:
    """Stores in a list; raises `fail(lines)` when that returns an exception (a sink bug, say)."""

    name = "memory"

    def __init__(self, fail: Callable[[Sequence[str]], BaseException | None] = lambda _: None) -> None:
        self.fail = fail
        self.stored: list[str] = []
        self.calls: list[list[str]] = []

    async def write(self, lines: Sequence[str]) -> None:
        self.calls.append(list(lines))
        exc = self.fail(lines)
        if exc is not None:
            raise exc
        self.stored.extend(lines)

    async def close(self) -> None:
        pass


# -- the HTTP boundary (probe.http) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (100, DeliveryRetryable, "http-unexpected"),
        (301, DeliveryRetryable, "http-unexpected"),
        (302, DeliveryRetryable, "http-unexpected"),
        (400, DeliveryRejected, "http-4xx"),
        (401, DeliveryRetryable, "http-auth"),
        (403, DeliveryRetryable, "http-auth"),
        (404, DeliveryRetryable, "http-404"),
        (408, DeliveryRetryable, "timeout"),
        (413, DeliveryRejected, "http-4xx"),
        (422, DeliveryRejected, "http-4xx"),
        (429, DeliveryRetryable, "http-429"),
        (500, DeliveryRetryable, "http-5xx"),
        (503, DeliveryRetryable, "http-5xx"),
        (599, DeliveryRetryable, "http-5xx"),
    ],
)
def test_status_classes(status: int, error: type[Exception], code: str) -> None:
    exc = status_error(status, what="influx-v1 http://h db=d", message="said so")
    assert type(exc) is error
    assert (exc.code, exc.status) == (code, status)
    assert str(exc) == f"influx-v1 http://h db=d: HTTP {status}: said so"


def test_server_message_unwraps_masks_then_cuts() -> None:
    assert server_message(b'{"error":"partial write:\\n  bad"}') == "partial write: bad"  # one line
    assert server_message('{"code":"invalid","message":"conflict"}') == "conflict"
    assert server_message('{"message":"Event object is invalid","errors":["routing_key K1 unknown"]}',
                          ["K1"]) == "Event object is invalid; routing_key [redacted] unknown"
    assert server_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert server_message(None) == ""
    secret = "S" * 20
    cut = server_message("x" * (MAX_MESSAGE - 5) + secret, [secret])  # the secret straddles the cut
    assert "SSSS" not in cut and len(cut) == MAX_MESSAGE and cut.endswith("x[red…")


def test_safe_url_drops_credentials_query_and_fragment() -> None:
    assert safe_url(f"https://u:{PASSWORD}@[::1]:8086/base/?u=x&p={PASSWORD}#f") == "https://[::1]:8086/base"


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    for failures, base in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10_000, 60.0)]:
        delays = [backoff_delay(failures, 1.0, 60.0, rng) for _ in range(200)]
        assert all(0.5 * base <= d <= base for d in delays), (failures, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.3 * base  # jittered, not in step


# -- HTTP sinks -------------------------------------------------------------------------------


async def test_v1_posts_lines_to_write(server: FaultServer) -> None:
    sink = InfluxV1Sink(server.url + "/", "probe", username="writer", password=PASSWORD,
                        retention_policy="weekly")
    try:
        await sink.write(["a f=1i 1", "b f=2i 2"])
    finally:
        await sink.close()
    (req,) = server.received
    assert (req.method, req.path, req.body) == ("POST", "/write", b"a f=1i 1\nb f=2i 2")
    assert req.query == {"db": "probe", "precision": "ns", "rp": "weekly"}
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(f"writer:{PASSWORD}".encode()).decode()
    assert PASSWORD not in repr(sink)


async def test_v1_credentials_in_url_become_basic_auth(server: FaultServer) -> None:
    sink = InfluxV1Sink(server.url.replace("//", f"//writer:{PASSWORD}@"), "probe")
    try:
        await sink.write(["a f=1i 1"])
    finally:
        await sink.close()
    assert server.received[0].headers["Authorization"].startswith("Basic ")
    assert PASSWORD not in repr(sink) and PASSWORD not in sink.url


async def test_v2_posts_lines_to_api_v2_write(server: FaultServer) -> None:
    sink = v2(server.url)
    try:
        await sink.write(["a f=1i 1", "b f=2i 2"])
    finally:
        await sink.close()
    (req,) = server.received
    assert (req.method, req.path, req.body) == ("POST", "/api/v2/write", b"a f=1i 1\nb f=2i 2")
    assert req.query == {"org": "org1", "bucket": "bucket1", "precision": "ns"}
    assert req.headers["Authorization"] == f"Token {TOKEN}"
    assert TOKEN not in repr(sink)


@pytest.mark.parametrize("kind", SINKS)
@pytest.mark.parametrize(
    ("answer", "error", "code", "said"),
    [
        (Answer(503, '{"error":"overloaded"}'), DeliveryRetryable, "http-5xx", ": overloaded"),
        (Answer(500, '{"error":"retention policy not found: x"}'), DeliveryRetryable, "http-5xx",
         ": retention policy not found: x"),
        (Answer(429, ""), DeliveryRetryable, "http-429", "HTTP 429"),
        (Answer(401, '{"error":"bad credentials SECRET"}'), DeliveryRetryable, "http-auth",
         ": bad credentials [redacted]"),
        (Answer(403, ""), DeliveryRetryable, "http-auth", "HTTP 403"),
        (Answer(404, '{"error":"database not found: \\"probe\\""}'), DeliveryRetryable, "http-404",
         ': database not found: "probe"'),
        (Answer(400, '{"error":"partial write: unable to parse \'m f=\': missing field value"}'),
         DeliveryRejected, "http-4xx", ": partial write: unable to parse 'm f=': missing field value"),
        (Answer(400, '{"code":"invalid","message":"field type conflict"}'), DeliveryRejected, "http-4xx",
         ": field type conflict"),
    ],
    ids=["503", "500", "429", "401", "403", "404", "400-v1", "400-v2"],
)
async def test_http_status_mapping(server: FaultServer, kind: str, answer: Answer,
                                   error: type[Exception], code: str, said: str) -> None:
    # a server quoting the secret back (it happens): the message must mask it
    server.default = replace(answer, body=answer.body.replace("SECRET", PASSWORD if kind == "v1" else TOKEN))
    sink = SINKS[kind](server.url)
    try:
        with pytest.raises(error) as info:
            await sink.write(["m f=1i 1"])
    finally:
        await sink.close()
    exc = info.value
    assert type(exc) is error
    assert (exc.code, exc.status) == (code, answer.status)  # type: ignore[attr-defined]
    # the server's own words, without the JSON wrapping, secrets masked
    assert str(exc).endswith(said), str(exc)
    assert PASSWORD not in str(exc) and TOKEN not in str(exc)


@pytest.mark.parametrize("kind", SINKS)
async def test_long_server_message_is_truncated(server: FaultServer, kind: str) -> None:
    server.default = Answer(400, '{"error":"' + "x" * 5000 + '"}')
    sink = SINKS[kind](server.url)
    try:
        with pytest.raises(DeliveryRejected) as info:
            await sink.write(["m f=1i 1"])
    finally:
        await sink.close()
    assert "x" * (MAX_MESSAGE - 1) in str(info.value)
    assert len(str(info.value)) < MAX_MESSAGE + 100


@pytest.mark.parametrize("kind", SINKS)
async def test_closed_port_is_connect_failed(kind: str) -> None:
    sink = SINKS[kind](f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(DeliveryRetryable) as info:
            await sink.write(["m f=1i 1"])
    finally:
        await sink.close()
    assert info.value.code == "connect-failed"
    assert PASSWORD not in str(info.value) and TOKEN not in str(info.value)


@pytest.mark.parametrize("kind", SINKS)
async def test_slow_server_is_timeout(server: FaultServer, kind: str) -> None:
    server.default = Answer(204, delay=60.0)  # stop() cuts it short
    sink = SINKS[kind](server.url, timeout=0.2)
    t0 = time.monotonic()
    try:
        with pytest.raises(DeliveryRetryable) as info:
            await sink.write(["m f=1i 1"])
    finally:
        await sink.close()
    assert info.value.code == "timeout"
    assert time.monotonic() - t0 < 30  # the client's 0.2 s ended it, not the server's 60 s


# -- Spool ------------------------------------------------------------------------------------


def test_spool_fifo_survives_restart_and_ignores_crash_leftovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    s1 = spool.append(["a 1", "b 2"])
    s2 = spool.append(["c 3"])
    assert s1 is not None and s2 is not None and s1 < s2
    (tmp_path / f".{s2 + 1:012d}.lp.tmp").write_bytes(b"# dnssec-probe batch lines=9\nhalf a li")
    spool.remove(s1)

    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.oldest() == (s2, ["c 3"])
    assert (again.batches, again.lines, again.bytes) == (1, 1, spool.bytes)
    assert not list(tmp_path.glob(".*.tmp"))
    s3 = again.append(["d 4"])
    assert s3 is not None and s3 > s2  # numbers never go back, even after the oldest is gone
    again.remove(s2)
    again.remove(s3)
    assert again.oldest() is None and again.bytes == 0


def test_spool_counts_a_line_with_a_raw_newline_once(tmp_path: Path) -> None:
    lines = ['m s="two\nlines" 1', "m f=1i 2"]  # line protocol allows a raw newline in a string field
    Spool(tmp_path, max_bytes=1 << 20).append(lines)
    spool = Spool(tmp_path, max_bytes=1 << 20)
    head = spool.oldest()
    assert head is not None
    seq, got = head
    assert "\n".join(got) == "\n".join(lines)  # what a sink sends is byte-identical
    assert spool.lines_in(seq) == 2 and spool.lines == 2


def test_spool_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    batches = rounds(6, 4)
    one = len(("# dnssec-probe batch lines=4\n" + "".join(f"{x}\n" for x in batches[0])).encode())
    spool = Spool(tmp_path, max_bytes=3 * one + one // 2)
    for b in batches:
        spool.append(b)
    assert (spool.batches, spool.dropped_batches, spool.dropped_lines) == (3, 3, 12)
    kept = []
    while (head := spool.oldest()) is not None:
        kept.append(head[1])
        spool.remove(head[0])
    assert kept == batches[3:]
    assert spool.append(["x" * (4 * one)]) is None  # larger than the whole bound on its own
    assert spool.dropped_lines == 13


def test_spool_reject_keeps_batch_and_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    path = spool.reject(["bad line", "m f=1i 1"], "HTTP 400: unable to parse 'bad line'")
    seq = spool.append(["m f=2i 2"])
    assert seq is not None
    moved = spool.reject_seq(seq, "HTTP 400: field type conflict")
    assert path.parent == moved.parent == tmp_path / "rejected"
    assert path.with_suffix(".why").read_text() == "HTTP 400: unable to parse 'bad line'\n"
    assert "m f=2i 2" in moved.read_text() and spool.batches == 0
    assert Spool(tmp_path, max_bytes=1 << 20).append(["n 1"]) == seq + 1  # rejected/ numbers count too


def test_rejected_dir_has_its_own_bound_and_counts_pruned_lines_across_restarts(tmp_path: Path) -> None:
    why = "HTTP 400: field type conflict"
    batches = rounds(5, 4, width=3)
    one = len(("# dnssec-probe batch lines=4\n" + "".join(f"{x}\n" for x in batches[0])).encode())
    bound = 3 * (one + len(why) + 1) + 10  # three rejected batches with their .why files
    spool = Spool(tmp_path, max_bytes=bound)
    for b in batches[:3]:
        spool.reject(b, why)
    spooled = spool.append(batches[3])  # the spool proper is bounded apart: nothing pruned for it
    assert spooled is not None and spool.pruned_rejected_lines == 0

    again = Spool(tmp_path, max_bytes=bound)  # sizes and line counts come back from disk
    again.reject(batches[4], why)
    assert (again.pruned_rejected_lines, again.pruned_rejected_batches) == (4, 1)
    kept = sorted((tmp_path / "rejected").glob("*.lp"))
    assert [p.read_text().splitlines()[1:] for p in kept] == [batches[1], batches[2], batches[4]]
    assert len(list((tmp_path / "rejected").glob("*.why"))) == 3
    assert again.oldest() == (spooled, batches[3]) and again.dropped_lines == 0


# -- Delivery ---------------------------------------------------------------------------------


async def test_503_then_ok_delivers_everything_once_in_order(server: FaultServer, tmp_path: Path) -> None:
    server.then(Answer(503), Answer(503))
    sink = v1(server.url)
    d = delivery(sink, tmp_path)
    data = rounds(3, 7)  # 7 lines per round in chunks of 5: 6 chunks
    async with running(d, sink):
        for r in data:
            d.submit(r)
            await asyncio.sleep(0)
        assert await d.flush(5.0)
    assert server.accepted_lines() == flat(data)
    assert all(len(r.lines) <= 5 for r in server.received)
    s = d.stats
    assert (s.written_lines, s.write_failures["http-5xx"], s.dropped_lines, s.rejected_lines) == (21, 2, 0, 0)
    assert s.spooled_lines > 0 and s.replayed_lines == s.spooled_lines
    assert (s.spool_batches, s.spool_bytes, s.last_write_ok) == (0, 0, True)
    assert s.last_success is not None


async def test_rejected_chunk_is_kept_aside_counted_and_the_rest_delivered(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.decide = lambda body: (
        Answer(400, '{"error":"partial write: unable to parse \'bad\': invalid field format dropped=1"}')
        if b"bad" in body else Answer(204)
    )
    good1, bad, good2 = ["m f=1i 1", "m f=2i 2"], ["m f=3i 3", "bad", "m f=4i 4"], ["m f=5i 5"]
    sink = v1(server.url)
    d = delivery(sink, tmp_path)
    async with running(d, sink):
        with caplog.at_level(logging.INFO, logger=LOGGER):
            for r in (good1, bad, good2):
                d.submit(r)
            assert await d.flush(5.0)
    assert server.accepted_lines() == good1 + good2
    assert (d.stats.rejected_lines, d.stats.write_failures["http-4xx"], d.stats.written_lines) == (3, 1, 3)
    (kept,) = (tmp_path / "rejected").glob("*.lp")
    assert kept.read_text().splitlines()[1:] == bad
    assert "unable to parse 'bad'" in kept.with_suffix(".why").read_text()
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "rejected 3 lines" in record.getMessage() and "unable to parse 'bad'" in record.getMessage()
    assert record.code == "http-4xx" and record.lines == 3  # type: ignore[attr-defined]


async def test_full_spool_drops_oldest_counts_and_delivers_the_rest(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = rounds(10, 5, width=3)  # equal-length lines: every batch file has the same size
    one = len(("# dnssec-probe batch lines=5\n" + "".join(f"{x}\n" for x in data[0])).encode())
    sink = v1(server.url)
    d = delivery(sink, tmp_path, max_queue_lines=5, max_bytes=3 * one + one // 2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for r in data:  # the loop is not running: like a long outage
            d.submit(r)
    assert (d.stats.dropped_lines, d.stats.spool_batches, d.stats.spool_bytes) == (35, 3, 3 * one)
    assert d.spool.lines == 15
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert sum(r.dropped_lines for r in drops) == 35  # type: ignore[attr-defined]
    async with running(d, sink):
        assert await d.flush(5.0)
    assert server.accepted_lines() == flat(data[7:])
    assert (d.stats.written_lines, d.stats.replayed_lines) == (15, 15)


async def test_restart_replays_existing_spool_first(server: FaultServer, tmp_path: Path) -> None:
    old = rounds(2, 3)
    dead = v1(f"http://127.0.0.1:{closed_port()}")
    first = delivery(dead, tmp_path)
    task = asyncio.create_task(first.run())
    first.submit(old[0])
    await wait_for(lambda: first.stats.write_failures["connect-failed"] >= 1)
    first.submit(old[1])
    await first.shutdown(1.0)
    await task
    await dead.close()
    assert first.stats.spool_batches == 2 and first.stats.written_lines == 0
    (tmp_path / ".000000000099.lp.tmp").write_bytes(b"# dnssec-probe batch lines=3\nm,cut")  # crash leftover

    sink = v1(server.url)
    second = delivery(sink, tmp_path)
    assert second.stats.spool_batches == 2  # known before the loop starts (for /metrics)
    new = ["m,r=new f=1i 99"]
    second.submit(new)  # goes behind the spooled rounds
    async with running(second, sink):
        assert await second.flush(5.0)
    assert server.accepted_lines() == flat(old) + new
    assert (second.stats.replayed_lines, second.stats.written_lines) == (7, 7)


async def test_replay_counts_a_raw_newline_line_once(server: FaultServer, tmp_path: Path) -> None:
    lines = ['m s="two\nlines" 1', "m f=1i 2"]
    Spool(tmp_path, max_bytes=1 << 20).append(lines)  # left by an earlier run
    sink = v1(server.url)
    d = delivery(sink, tmp_path)
    async with running(d, sink):
        assert await d.flush(5.0)
    assert [r.body for r in server.received] == ["\n".join(lines).encode()]
    assert (d.stats.replayed_lines, d.stats.written_lines) == (2, 2)


async def test_shutdown_during_slow_write_returns_in_time_and_spools_the_rest(
    server: FaultServer, tmp_path: Path
) -> None:
    server.default = Answer(204, delay=60.0)  # stop() cuts it short
    data = rounds(3, 5)
    sink = v1(server.url, timeout=120.0)
    d = delivery(sink, tmp_path)
    task = asyncio.create_task(d.run())
    d.submit(data[0])
    await asyncio.wait_for(server.started.wait(), 10.0)
    for r in data[1:]:
        d.submit(r)  # plain calls while the write hangs: the rounds never wait for the server
    assert len(server.received) == 1 and d.stats.spool_batches == 0  # still in memory
    t0 = time.monotonic()
    await d.shutdown(timeout=0.3)
    took = time.monotonic() - t0
    await asyncio.wait_for(task, 10.0)
    await sink.close()
    # waited out its timeout, then cut the write: far less than the server's 60 s or the 120 s
    # client timeout (the upper bound is loose so that a loaded machine does not fail it)
    assert 0.3 <= took < 20
    assert d.stats.written_lines == 0 and d.stats.spool_batches == 3
    d.submit(["m,r=late f=1i 1"])  # after shutdown: straight to the spool, not lost
    assert d.stats.spool_batches == 4

    server.default = Answer(204)
    server.received.clear()
    sink = v1(server.url)
    again = delivery(sink, tmp_path)
    async with running(again, sink):
        assert await again.flush(5.0)
    assert server.accepted_lines() == [*flat(data), "m,r=late f=1i 1"]


async def test_shutdown_lets_a_write_in_progress_finish(server: FaultServer, tmp_path: Path) -> None:
    server.default = Answer(204, delay=0.2)
    sink = v1(server.url)
    d = delivery(sink, tmp_path)
    task = asyncio.create_task(d.run())
    d.submit(["a f=1i 1"])
    await asyncio.wait_for(server.started.wait(), 10.0)
    d.submit(["b f=1i 2"])
    t0 = time.monotonic()
    await d.shutdown(timeout=60.0)
    await task
    await sink.close()
    assert time.monotonic() - t0 < 30  # returned when the write ended, not at the 60 s timeout
    assert d.stats.written_lines == 1 and d.stats.spool_batches == 1
    head = d.spool.oldest()
    assert head is not None and head[1] == ["b f=1i 2"]


async def test_outage_logs_once_backs_off_and_reports_recovery(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.then(*[Answer(503)] * 4)
    sink = v1(server.url)
    d = delivery(sink, tmp_path, backoff_initial=0.02, backoff_max=0.1)
    task = asyncio.create_task(d.run())
    t0 = time.monotonic()
    try:
        with caplog.at_level(logging.DEBUG, logger=LOGGER):
            d.submit(["a f=1i 1"])
            assert await d.flush(5.0)
    finally:
        await d.shutdown(1.0)
        await task
        await sink.close()
    # 4 waits of 0.02, 0.04, 0.08, 0.1 (less up to 50 % jitter)
    assert time.monotonic() - t0 >= 0.5 * (0.02 + 0.04 + 0.08 + 0.1)
    # an outage is retried for as long as it lasts: nothing set aside
    assert d.stats.write_failures["http-5xx"] == 4 and d.stats.written_lines == 1
    assert d.stats.rejected_lines == 0 and not list((tmp_path / "rejected").iterdir())
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("write to")]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 3
    assert any("works again after 4 failed attempts" in r.getMessage() for r in caplog.records)


async def test_flush_times_out_while_the_server_is_down(tmp_path: Path) -> None:
    sink = v1(f"http://127.0.0.1:{closed_port()}")
    d = delivery(sink, tmp_path)
    task = asyncio.create_task(d.run())
    d.submit(["a f=1i 1"])
    t0 = time.monotonic()
    assert not await d.flush(0.2)
    assert 0.2 <= time.monotonic() - t0 < 20  # loose: a loaded machine may wake it late
    await d.shutdown(1.0)
    await task
    await sink.close()
    assert d.stats.last_write_ok is False and d.stats.spool_batches == 1
    assert d.stats.write_failures["connect-failed"] >= 1


async def test_a_sink_bug_is_retried_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink(fail=lambda _: KeyError("oops") if len(sink.calls) == 1 else None)
    d = delivery(sink, tmp_path)
    task = asyncio.create_task(d.run())
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        d.submit(["a f=1i 1"])
        assert await d.flush(5.0)
    await d.shutdown(1.0)
    await task
    assert sink.stored == ["a f=1i 1"] and d.stats.write_failures["internal-error"] == 1
    assert d.stats.rejected_lines == 0
    assert any("KeyError" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bug", [
    lambda: KeyError("oops"),  # escaped the sink untranslated
    lambda: DeliveryRetryable("client refused to send", code="internal-error"),  # translated as a bug
], ids=["raised", "translated"])
async def test_a_chunk_a_sink_bug_keeps_failing_on_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bug: Callable[[], Exception]
) -> None:
    sink = MemorySink(fail=lambda lines: bug() if "poison" in lines[0] else None)
    d = delivery(sink, tmp_path)
    task = asyncio.create_task(d.run())
    first, poison, last = ["a f=1i 1"], ["poison f=1i 2", "m f=1i 3"], ["z f=1i 4"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for r in (first, poison, last):
            d.submit(r)
        assert await d.flush(5.0)  # not blocked behind the poison chunk for ever
    await d.shutdown(1.0)
    await task
    assert sink.stored == first + last
    assert sink.calls.count(poison) == MAX_INTERNAL_ERRORS == 3
    assert d.stats.write_failures["internal-error"] == 3 and d.stats.rejected_lines == 2
    (kept,) = (tmp_path / "rejected").glob("*.lp")
    assert kept.read_text().splitlines()[1:] == poison
    assert ("oops" if "oops" in str(bug()) else "client refused") in kept.with_suffix(".why").read_text()
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "delivery-rejected"]
    assert "3 times in a row" in record.getMessage() and record.code == "internal-error"  # type: ignore[attr-defined]


async def test_a_healthy_server_takes_big_rounds_without_the_spool(tmp_path: Path) -> None:
    sink = MemorySink()
    d = Delivery(sink, Spool(tmp_path, max_bytes=1 << 30), DeliveryStats())  # the daemon's defaults
    big = [f"m,i={i} f=1i {i}" for i in range(120_000)]  # 24 chunks of 5000: 3 x what 8 chunks held
    d.submit(big)
    d.submit(big[:1000])
    assert d.stats.spool_batches == 0 and not list(tmp_path.glob("*.lp"))
    task = asyncio.create_task(d.run())
    try:
        assert await d.flush(30.0)
    finally:
        await d.shutdown(1.0)
        await task
    assert sink.stored == big + big[:1000]
    assert (d.stats.spooled_lines, d.stats.written_lines) == (0, 121_000)
    assert max(len(c) for c in sink.calls) == 5000


async def test_memory_is_bounded_in_lines_and_spills_in_order(tmp_path: Path) -> None:
    sink = MemorySink()
    d = delivery(sink, tmp_path, max_queue_lines=10)
    data = rounds(3, 5)
    d.submit(data[0])
    d.submit(data[1])  # 10 lines: still all in memory
    assert d.stats.spooled_lines == 0
    d.submit(data[2])  # 15 > 10: everything goes to disk, oldest first
    assert (d.stats.spooled_lines, d.stats.spool_batches) == (15, 3)
    task = asyncio.create_task(d.run())
    try:
        assert await d.flush(5.0)
    finally:
        await d.shutdown(1.0)
        await task
    assert sink.stored == flat(data) and d.stats.replayed_lines == 15


async def test_pruning_rejected_is_logged_and_counted(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.default = Answer(400, '{"error":"field type conflict"}')
    data = rounds(4, 5, width=3)
    one = len(("# dnssec-probe batch lines=5\n" + "".join(f"{x}\n" for x in data[0])).encode())
    sink = v1(server.url)
    d = delivery(sink, tmp_path, max_bytes=2 * one + 150)  # two rejected batches and one .why, not more
    async with running(d, sink):
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            for r in data:
                d.submit(r)
            assert await d.flush(5.0)
    assert (d.stats.rejected_lines, d.stats.rejected_pruned_lines) == (20, 10)
    assert [p.read_text().splitlines()[1:] for p in sorted((tmp_path / "rejected").glob("*.lp"))] == data[2:]
    pruned = [r for r in caplog.records if getattr(r, "event", "") == "rejected-pruned"]
    assert [(r.pruned_lines, r.pruned_batches) for r in pruned] == [(5, 1), (5, 1)]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.WARNING and "deleted the 5 oldest" in r.getMessage() for r in pruned)


# -- FileSink ---------------------------------------------------------------------------------

HOUR = 1_700_002_800.0  # 2023-11-14T23:00:00Z


async def test_file_sink_hourly_files_gzip_and_retention(tmp_path: Path) -> None:
    now = [HOUR + 10]
    sink = FileSink(tmp_path, retention_hours=2, clock=lambda: now[0])
    await sink.write(["a f=1i 1", "b f=2i 2"])
    await sink.write(["c f=3i 3"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20231114T23.lp"]
    header = "# DML\n# CONTEXT-DATABASE: dnssec_probe\n"
    assert (tmp_path / "20231114T23.lp").read_text() == header + "a f=1i 1\nb f=2i 2\nc f=3i 3\n"

    now[0] = HOUR + 3600 + 5
    await sink.write(["d f=4i 4"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20231114T23.lp.gz", "20231115T00.lp"]
    assert gzip.decompress((tmp_path / "20231114T23.lp.gz").read_bytes()).decode() == (
        header + "a f=1i 1\nb f=2i 2\nc f=3i 3\n"
    )

    now[0] = HOUR + 2 * 3600  # 23h ended 1 h ago: kept (retention 2 h)
    await sink.write(["e f=5i 5"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20231114T23.lp.gz", "20231115T00.lp.gz", "20231115T01.lp"]

    now[0] = HOUR + 3 * 3600  # 23h ended exactly 2 h ago: deleted
    await sink.write(["f f=6i 6"])
    await sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20231115T00.lp.gz", "20231115T01.lp.gz", "20231115T02.lp"]
    assert not list(tmp_path.glob(".*"))


async def test_file_sink_rotates_files_left_by_a_previous_run(tmp_path: Path) -> None:
    (tmp_path / "20231114T22.lp").write_text("old f=1i 1\n")
    (tmp_path / ".20231114T21.lp.gz.tmp").write_bytes(b"\x1f\x8b cut")  # crash during compression
    sink = FileSink(tmp_path, clock=lambda: HOUR)
    await sink.write(["new f=1i 2"])
    await sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20231114T22.lp.gz", "20231114T23.lp"]
    assert gzip.decompress((tmp_path / "20231114T22.lp.gz").read_bytes()) == b"old f=1i 1\n"


async def test_file_sink_clock_stepping_back_keeps_both_parts(tmp_path: Path) -> None:
    now = [HOUR]
    sink = FileSink(tmp_path, clock=lambda: now[0])
    await sink.write(["a f=1i 1"])
    now[0] = HOUR + 3600
    await sink.write(["b f=1i 2"])
    now[0] = HOUR + 60  # NTP step back into a compressed hour
    await sink.write(["c f=1i 3"])
    now[0] = HOUR + 3600
    await sink.write(["d f=1i 4"])
    await sink.close()
    text = gzip.decompress((tmp_path / "20231114T23.lp.gz").read_bytes()).decode()
    assert [x for x in text.splitlines() if not x.startswith("#")] == ["a f=1i 1", "c f=1i 3"]


async def test_file_sink_os_error_is_retryable_io_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink(blocker / "lp")
    with pytest.raises(DeliveryRetryable) as info:
        await sink.write(["a f=1i 1"])
    await sink.close()
    assert info.value.code == "io-error"
