"""File sink: line protocol appended to hourly files, gzipped once their hour is over.

The embedded default when no InfluxDB is configured. `DIR/YYYYMMDDTHH.lp` holds the lines
written during that UTC hour (of the write clock, not of the points), one point per line,
ns-precision timestamps, flushed and fsynced per write. Past hours become `YYYYMMDDTHH.lp.gz`;
files whose hour ended more than `retention_hours` ago are deleted.

Each file starts with the comment lines `# DML` and `# CONTEXT-DATABASE: <database>`, which
line protocol parsers skip and which InfluxDB 1.x's importer needs:

    influx -import -path=DIR/20250101T13.lp.gz -compressed -precision=ns     # 1.x, into <database>
    influx write --bucket B --precision ns --file DIR/20250101T13.lp.gz      # 2.x CLI
    curl --data-binary @DIR/20250101T13.lp 'http://HOST:8086/write?db=D&precision=ns'
"""

from __future__ import annotations

import asyncio
import calendar
import gzip
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from probe.errors import DeliveryRetryable
from probe.http import IO_ERROR

_HOURLY = re.compile(r"^(\d{8}T\d{2})\.lp(\.gz)?$")
_HOUR_FORMAT = "%Y%m%dT%H"


def hour_key(when: float) -> str:
    """`YYYYMMDDTHH` of the UTC hour containing `when` (seconds since the epoch)."""
    return time.strftime(_HOUR_FORMAT, time.gmtime(when))


def _hour_start(key: str) -> float:
    return float(calendar.timegm(time.strptime(key, _HOUR_FORMAT)))


class FileSink:
    """Appends to `directory/YYYYMMDDTHH.lp`; rotation and retention happen when the hour changes."""

    name: str = "files"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        retention_hours: float = 168,
        database: str = "dnssec_probe",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.retention_hours = retention_hours
        self.database = database
        self._clock = clock
        self._hour: str | None = None
        self._fh: BinaryIO | None = None
        # a thread lock, not an asyncio one: a cancelled to_thread() call keeps running
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileSink({str(self.directory)!r})"

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        data = "".join(f"{line}\n" for line in lines).encode()
        now = self._clock()
        try:
            await asyncio.to_thread(self._write, data, now)
        except OSError as exc:
            raise DeliveryRetryable(f"files {self.directory}: {exc}", code=IO_ERROR) from None

    def _write(self, data: bytes, now: float) -> None:
        with self._lock:
            key = hour_key(now)
            if key != self._hour or self._fh is None:
                self._close_file()
                self.directory.mkdir(parents=True, exist_ok=True)
                self.maintain(now)
                self._fh = open(self.directory / f"{key}.lp", "ab")  # noqa: SIM115 - kept open for the hour
                self._hour = key
                if self._fh.tell() == 0:
                    self._fh.write(f"# DML\n# CONTEXT-DATABASE: {self.database}\n".encode())
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def maintain(self, now: float) -> None:
        """Gzip every .lp file of another hour than `now`'s, delete files past retention."""
        current = hour_key(now)
        horizon = now - self.retention_hours * 3600
        for tmp in self.directory.glob(".*.tmp"):  # a compression cut short by a crash
            tmp.unlink(missing_ok=True)
        for path in sorted(self.directory.iterdir()):
            m = _HOURLY.match(path.name)
            if not m:
                continue
            key, gz = m.group(1), m.group(2)
            if _hour_start(key) + 3600 <= horizon:
                path.unlink(missing_ok=True)
            elif not gz and key != current and path.exists():
                self._compress(path)

    def _compress(self, path: Path) -> None:
        target = path.with_name(path.name + ".gz")
        tmp = path.with_name(f".{target.name}.tmp")
        with open(tmp, "wb") as out:
            if target.exists():
                # the clock stepped back into an hour already compressed (or a crash hit between
                # rename and unlink): keep both as gzip members; re-importing a point overwrites
                with open(target, "rb") as old:
                    shutil.copyfileobj(old, out)
            with open(path, "rb") as src, gzip.GzipFile(filename=path.name, mode="wb", fileobj=out) as gz:
                shutil.copyfileobj(src, gz)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the .gz must be on disk before its source disappears
        finally:
            os.close(fd)
        path.unlink()

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._hour = None

    async def close(self) -> None:
        with self._lock:
            self._close_file()
