"""The sinks against a real InfluxDB 1.6 and a real VictoriaMetrics on 127.0.0.1 (influx_fixtures)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from influx_fixtures import InfluxDB1, VictoriaMetrics
from influxdb_client.client.write.point import Point as _Point
from influxdb_client.domain.write_precision import WritePrecision

from probe.errors import DeliveryRejected, DeliveryRetryable
from probe.sinks import DeliveryStats
from probe.sinks.delivery import Delivery
from probe.sinks.files import FileSink
from probe.sinks.influx_v1 import InfluxV1Sink
from probe.sinks.influx_v2 import InfluxV2Sink
from probe.sinks.spool import Spool

T0 = 1_700_000_000_123_456_789  # ns; every digit must come back
_names = itertools.count(1)
Point: Any = _Point  # influxdb-client's builder is untyped

# Tags with the characters line protocol escapes; string fields with quotes and backslashes.
AWKWARD = [
    {"zone": "ex ample.com.", "resolver": "a,b=c", "why": 'said "no"', "rtt": 0.1, "n": 2**62 + 1,
     "ok": True, "t": T0},
    {"zone": "ex ample.com.", "resolver": "a,b=c", "why": "C:\\dir\\", "rtt": 1 / 3, "n": -7,
     "ok": False, "t": T0 + 1},
    {"zone": "x=y z,w", "resolver": "plain", "why": 'mixed \\" both \\\\ "', "rtt": -2.5e-9, "n": 0,
     "ok": True, "t": T0 + 2},
]


def awkward_lines(measurement: str) -> list[str]:
    return [
        Point(measurement)
        .tag("zone", p["zone"])
        .tag("resolver", p["resolver"])
        .field("why", p["why"])
        .field("rtt", p["rtt"])
        .field("n", p["n"])
        .field("ok", p["ok"])
        .time(p["t"], WritePrecision.NS)
        .to_line_protocol()
        for p in AWKWARD
    ]


def as_rows(points: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{"zone": p["zone"], "resolver": p["resolver"], "why": p["why"], "rtt": p["rtt"], "n": p["n"],
             "ok": p["ok"], "time": p["t"]} for p in points]


def by_time(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(rows, key=lambda r: int(r["time"]))  # type: ignore[call-overload]


# -- InfluxDB 1.6 -----------------------------------------------------------------------------


async def test_v1_round_trip_is_exact(influxdb: InfluxDB1, influx_db: str) -> None:
    sink = InfluxV1Sink(influxdb.url, influx_db)
    try:
        await sink.write(awkward_lines("probe result"))
    finally:
        await sink.close()
    rows = influxdb.rows('SELECT * FROM "probe result" GROUP BY *', influx_db)
    assert by_time(rows) == as_rows(AWKWARD)
    assert all(type(r["rtt"]) is float and type(r["n"]) is int for r in rows)


@pytest.mark.parametrize(
    ("lines", "error", "code", "said"),
    [
        (["conflict f=1.5 2"], DeliveryRejected, "http-4xx",
         'field type conflict: input field "f" on measurement "conflict" is type float, '
         "already exists as type integer"),
        (["conflict f=2i 2", "conflict,t=x f= 3"], DeliveryRejected, "http-4xx", "unable to parse"),
    ],
    ids=["type-conflict", "bad-line"],
)
async def test_v1_refused_data_is_rejected_with_the_servers_words(
    influxdb: InfluxDB1, influx_db: str, lines: list[str], error: type[Exception], code: str, said: str
) -> None:
    sink = InfluxV1Sink(influxdb.url, influx_db)
    try:
        await sink.write(["conflict f=1i 1"])
        with pytest.raises(error) as info:
            await sink.write(lines)
    finally:
        await sink.close()
    assert (info.value.code, info.value.status) == (code, 400)  # type: ignore[attr-defined]
    assert said in str(info.value)


async def test_v1_missing_database_is_retryable(influxdb: InfluxDB1, influx_db: str) -> None:
    sink = InfluxV1Sink(influxdb.url, influx_db + "_absent")
    try:
        with pytest.raises(DeliveryRetryable) as info:
            await sink.write(["m f=1i 1"])
    finally:
        await sink.close()
    assert (info.value.code, info.value.status) == ("http-404", 404)
    assert "database not found" in str(info.value)


async def test_v1_outage_spools_then_replays_exactly_once(
    influxdb: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    def round_lines(r: int) -> list[str]:
        return [f"outage,round={r} i={i}i {T0 + r * 1000 + i}" for i in range(120)]

    sink = InfluxV1Sink(influxdb.url, influx_db, timeout=2.0)
    spool = Spool(tmp_path / "spool", max_bytes=10 << 20)
    d = Delivery(sink, spool, DeliveryStats(), max_batch_lines=50, backoff_initial=0.05, backoff_max=0.3,
                 log=logging.getLogger("dnssec_probe.delivery.test"))
    task = asyncio.create_task(d.run())
    try:
        d.submit(round_lines(0))
        assert await d.flush(5.0)
        await asyncio.to_thread(influxdb.stop)
        for r in range(1, 4):
            d.submit(round_lines(r))
            await asyncio.sleep(0.05)
        assert not await d.flush(0.3)
        assert d.stats.spool_batches == 9 and d.stats.write_failures["connect-failed"] >= 1
        await asyncio.to_thread(influxdb.start)  # same data dir, same port
        assert await d.flush(10.0)
    finally:
        await d.shutdown(2.0)
        await task
        await sink.close()
    s = d.stats
    assert (s.written_lines, s.spooled_lines, s.replayed_lines, s.dropped_lines) == (480, 360, 360, 0)
    rows = influxdb.rows("SELECT * FROM outage GROUP BY *", influx_db)
    assert sorted((int(r["round"]), r["i"], r["time"]) for r in rows) == [
        (r, i, T0 + r * 1000 + i) for r in range(4) for i in range(120)
    ]


async def test_file_sink_output_loads_with_influx_import(influxdb: InfluxDB1, influx_db: str,
                                                         tmp_path: Path) -> None:
    influx = shutil.which("influx")
    if influx is None:
        if os.environ.get("CI"):
            pytest.fail("the influx CLI (Debian influxdb-client) must be installed in CI")
        pytest.skip("no influx CLI")
    now = [1_700_002_800.0]
    sink = FileSink(tmp_path, database=influx_db, clock=lambda: now[0])
    lines = awkward_lines("from files")
    await sink.write(lines[:2])
    now[0] += 3600
    await sink.write(lines[2:])  # rotates the first hour into .lp.gz
    await sink.close()
    server = ["-host", "127.0.0.1", "-port", str(influxdb.http_port)]
    for path, extra in ((tmp_path / "20231114T23.lp.gz", ["-compressed"]), (tmp_path / "20231115T00.lp", [])):
        proc = subprocess.run(
            [influx, *server, "-import", f"-path={path}", "-precision=ns", *extra],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert proc.returncode == 0 and "Failed 0 inserts" in proc.stdout + proc.stderr, proc.stderr
    rows = influxdb.rows('SELECT * FROM "from files" GROUP BY *', influx_db)
    assert by_time(rows) == as_rows(AWKWARD)


# -- VictoriaMetrics --------------------------------------------------------------------------


async def test_v2_sink_writes_to_victoriametrics(vm: VictoriaMetrics) -> None:
    name = f"vmprobe{os.getpid()}x{next(_names)}"
    sink = InfluxV2Sink(vm.url, "any-org", "any-bucket", "dummy-token")
    try:
        await sink.write(awkward_lines(name))
        # VictoriaMetrics answers 204 even when it skips a line it cannot parse
        await sink.write([f"{name} n=99i {T0 + 10}", f"{name},t=x n= {T0 + 11}"])
    finally:
        await sink.close()
    series = vm.wait_export(f'{{__name__=~"{name}_.*"}}', samples=13)
    got = sorted(
        ((s["metric"]["__name__"].removeprefix(name + "_"), s["metric"].get("zone", ""),
          s["metric"].get("resolver", ""), ts), v)
        for s in series for ts, v in zip(s["timestamps"], s["values"], strict=True)
    )
    # one metric per field ({measurement}_{field}), tags become labels, no label for the bucket;
    # timestamps are cut to ms (two points of a series within 1 ms both stay); bools are 1/0;
    # string fields are stored as 0 (values are numbers)
    want: list[tuple[tuple[object, ...], float]] = []
    for p in AWKWARD:
        key = (p["zone"], p["resolver"], int(p["t"]) // 1_000_000)  # type: ignore[call-overload]
        want += [
            (("n", *key), float(p["n"])),  # type: ignore[arg-type]
            (("ok", *key), 1.0 if p["ok"] else 0.0),
            (("rtt", *key), float(p["rtt"])),  # type: ignore[arg-type]
            (("why", *key), 0.0),
        ]
    want.append((("n", "", "", (T0 + 10) // 1_000_000), 99.0))
    want.sort()
    assert [k for k, _ in got] == [k for k, _ in want]
    # VictoriaMetrics keeps about 12 significant digits (1/3 -> 0.333333333333, 2**62+1 rounded)
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-11, abs=0)


async def test_stopped_victoriametrics_is_retryable(vm: VictoriaMetrics) -> None:
    sink = InfluxV2Sink(vm.url, "org", "bucket", "dummy-token", timeout=2.0)
    try:
        await asyncio.to_thread(vm.stop)
        with pytest.raises(DeliveryRetryable) as info:
            await sink.write(["stopped n=1i 1"])
        assert info.value.code == "connect-failed"
        assert "dummy-token" not in str(info.value)
    finally:
        await sink.close()
        await asyncio.to_thread(vm.start)
