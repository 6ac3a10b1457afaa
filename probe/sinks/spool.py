"""On-disk FIFO of line-protocol batches: one atomically written file per batch, oldest dropped first."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_BATCH = re.compile(r"^(\d{12})\.lp$")
# First line of every batch file. Line protocol treats `#` lines as comments, so a batch file
# (or a rejected one) can still be fed to `influx write` by hand; the count stays exact even
# when a string field holds a raw newline (which line protocol allows inside quotes).
_HEADER = "# dnssec-probe batch lines="


@dataclass(frozen=True)
class _Entry:
    nbytes: int
    nlines: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """tmp file, fsync, rename, fsync dir: after a crash the file is either whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _encode(lines: Sequence[str]) -> bytes:
    return (f"{_HEADER}{len(lines)}\n" + "".join(f"{line}\n" for line in lines)).encode()


def _decode(data: bytes) -> tuple[int, list[str]]:
    """(line count, lines); a file without our header counts its physical lines."""
    text = data.decode("utf-8", "surrogateescape")
    body = text
    count: int | None = None
    if text.startswith(_HEADER):
        head, _, body = text.partition("\n")
        with contextlib.suppress(ValueError):
            count = int(head[len(_HEADER):])
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return (count if count is not None else len(lines)), lines


def _count(path: Path) -> _Entry:
    data = path.read_bytes()
    return _Entry(len(data), _decode(data)[0])


def _count_rejected(path: Path) -> _Entry:
    """Size of a rejected batch with its .why; the line count from the header alone when it has one."""
    why = path.with_suffix(".why")
    extra = why.stat().st_size if why.exists() else 0
    with open(path, "rb") as fh:
        head = fh.readline(len(_HEADER) + 24)
    if head.startswith(_HEADER.encode()):
        with contextlib.suppress(ValueError):
            return _Entry(path.stat().st_size + extra, int(head[len(_HEADER):]))
    entry = _count(path)
    return _Entry(entry.nbytes + extra, entry.nlines)


class Spool:
    """Batches `NNNNNNNNNNNN.lp` in `directory`, refused ones in `directory/rejected/`.

    Sequence numbers keep increasing across restarts (the directory is scanned at start), so
    file order is delivery order. Each directory is bounded by `max_bytes` on its own (so the
    disk holds at most twice that): the oldest batches go first; spool drops are counted in
    `dropped_lines` / `dropped_batches`, rejected/ prunes in `pruned_rejected_*`.
    Not thread-safe; one Delivery owns it.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.rejected_dir = self.directory / "rejected"
        self.max_bytes = max_bytes
        self.dropped_lines = 0  # spooled lines deleted to stay under max_bytes (ever)
        self.dropped_batches = 0
        self.pruned_rejected_lines = 0  # rejected lines deleted to keep rejected/ under max_bytes (ever)
        self.pruned_rejected_batches = 0
        self.busy: int | None = None  # the batch being replayed right now: never dropped
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[int, _Entry] = {}  # insertion order == sequence order
        self._rejected: dict[int, _Entry] = {}  # bytes of .lp + .why
        for folder in (self.directory, self.rejected_dir):
            for tmp in folder.glob(".*.tmp"):  # a write cut by a crash: never renamed, never valid
                tmp.unlink(missing_ok=True)
        for seq, path in self._scan(self.directory):
            try:
                self._index[seq] = _count(path)
            except OSError:
                continue
        for seq, path in self._scan(self.rejected_dir):
            with contextlib.suppress(OSError):
                self._rejected[seq] = _count_rejected(path)
        self._next = max([0, *self._index, *self._rejected]) + 1
        self._bytes = sum(e.nbytes for e in self._index.values())
        self._rejected_bytes = sum(e.nbytes for e in self._rejected.values())

    @staticmethod
    def _scan(folder: Path) -> list[tuple[int, Path]]:
        found = []
        for path in folder.iterdir():
            m = _BATCH.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
        return sorted(found)

    def _path(self, seq: int, folder: Path | None = None) -> Path:
        return (folder or self.directory) / f"{seq:012d}.lp"

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def batches(self) -> int:
        return len(self._index)

    @property
    def lines(self) -> int:
        return sum(e.nlines for e in self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, seq: object) -> bool:
        return seq in self._index

    def lines_in(self, seq: int) -> int:
        """Line count of a spooled batch (0 if it is gone)."""
        entry = self._index.get(seq)
        return entry.nlines if entry else 0

    def append(self, lines: Sequence[str]) -> int | None:
        """Store one batch behind the others; returns its sequence number.

        Older batches are deleted first when the new one would not fit under max_bytes; a
        batch larger than max_bytes on its own is not stored (None) and counted as dropped.
        Raises OSError when the disk refuses (nothing is half-written).
        """
        if not lines:
            return None
        data = _encode(lines)
        if len(data) > self.max_bytes:
            self.dropped_lines += len(lines)
            self.dropped_batches += 1
            return None
        for seq in list(self._index):
            if self._bytes + len(data) <= self.max_bytes:
                break
            if seq != self.busy:
                self.dropped_lines += self._index[seq].nlines
                self.dropped_batches += 1
                self.remove(seq)
        seq = self._next
        _write_atomic(self._path(seq), data)
        self._next += 1
        self._index[seq] = _Entry(len(data), len(lines))
        self._bytes += len(data)
        return seq

    def oldest(self) -> tuple[int, list[str]] | None:
        """(seq, lines) of the oldest batch; unreadable files are skipped and forgotten."""
        for seq in list(self._index):
            try:
                _, lines = _decode(self._path(seq).read_bytes())
            except OSError:
                self._forget(seq)
                continue
            return seq, lines
        return None

    def _forget(self, seq: int) -> None:
        entry = self._index.pop(seq, None)
        if entry is not None:
            self._bytes -= entry.nbytes

    def remove(self, seq: int) -> None:
        """Delete a delivered (or dropped) batch; unknown seqs are ignored."""
        self._forget(seq)
        self._path(seq).unlink(missing_ok=True)

    def reject(self, lines: Sequence[str], why: str) -> Path:
        """Keep a batch the server refused in rejected/, with the server's message next to it."""
        seq = self._next
        self._next += 1
        data = _encode(lines)
        self._prune_rejected(len(data))
        path = self._path(seq, self.rejected_dir)
        _write_atomic(path.with_suffix(".why"), why.encode() + b"\n")
        _write_atomic(path, data)
        self._keep_rejected(seq, _Entry(len(data) + len(why.encode()) + 1, len(lines)))
        return path

    def reject_seq(self, seq: int, why: str) -> Path:
        """Move a spooled batch to rejected/ (a rename, no copy); KeyError if it is not spooled."""
        entry = self._index[seq]
        self._prune_rejected(entry.nbytes)
        path = self._path(seq, self.rejected_dir)
        _write_atomic(path.with_suffix(".why"), why.encode() + b"\n")
        os.replace(self._path(seq), path)
        _fsync_dir(self.rejected_dir)
        self._forget(seq)
        self._keep_rejected(seq, _Entry(entry.nbytes + len(why.encode()) + 1, entry.nlines))
        return path

    def _keep_rejected(self, seq: int, entry: _Entry) -> None:
        self._rejected[seq] = entry
        self._rejected_bytes += entry.nbytes

    def _prune_rejected(self, incoming: int) -> None:
        # A schema conflict can refuse every round, so rejected/ needs a bound too. It is its own
        # bound, not a share of the spool's: refused data must never push out deliverable data,
        # and a long outage must not erase the evidence of what was refused.
        for seq in list(self._rejected):
            if self._rejected_bytes + incoming <= self.max_bytes:
                break
            path = self._path(seq, self.rejected_dir)
            path.unlink(missing_ok=True)
            path.with_suffix(".why").unlink(missing_ok=True)
            entry = self._rejected.pop(seq)
            self._rejected_bytes -= entry.nbytes
            self.pruned_rejected_lines += entry.nlines
            self.pruned_rejected_batches += 1
