"""Delivery: hands rounds of line protocol to a sink off the round loop, spooling what cannot go yet.

Contract: nothing is lost and order is kept. Lines are written in chunks of at most
`max_batch_lines`; up to `max_queue_lines` wait in memory, everything else waits in the on-disk
Spool. Invariant: while the spool holds anything, memory is empty and new chunks go behind it,
so the run loop always writes the oldest data first. Retryable failures put the chunk in the
spool and back off; rejected chunks (and a chunk a sink bug fails on again and again) go to
spool/rejected/ with the reason; only the size bounds ever delete data (oldest first, counted in
DeliveryStats.dropped_lines and rejected_pruned_lines).

A chunk whose write timed out may have been stored anyway and is written again later. InfluxDB
overwrites a point with the same series and timestamp, so there it is harmless; VictoriaMetrics
may keep a duplicate sample for such a batch (unless it runs with -dedup.minScrapeInterval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from probe.errors import DeliveryError, DeliveryRejected, DeliveryRetryable
from probe.http import INTERNAL_ERROR, IO_ERROR, backoff_delay
from probe.sinks import DeliveryStats, Sink
from probe.sinks.spool import Spool

_GRACE = 0.5  # after shutdown's timeout: time for a cancelled write to unwind
# A chunk a sink keeps failing on with internal-error (a bug, not an outage) is set aside after
# this many consecutive attempts, so that it does not block everything queued behind it.
MAX_INTERNAL_ERRORS = 3


@dataclass
class _Chunk:
    lines: list[str]
    nlines: int
    seq: int | None = None  # its spool batch, once spooled
    replay: bool = False  # read back from the spool (else it came from memory)


class Delivery:
    """Owns the order of delivery for one sink; `submit` never blocks on the network.

    The daemon calls submit() once per round, runs `await run()` as a background task, and on
    SIGTERM calls `await shutdown(timeout)`. Does not close the sink.
    """

    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        stats: DeliveryStats,
        *,
        max_batch_lines: int = 5000,
        max_queue_lines: int = 250_000,
        clock: Callable[[], float] = time.time,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        log: logging.Logger = logging.getLogger("dnssec_probe.delivery"),  # noqa: B008 - a shared singleton
    ) -> None:
        if max_batch_lines < 1 or max_queue_lines < 1:
            raise ValueError("max_batch_lines and max_queue_lines must be positive")
        self.sink = sink
        self.spool = spool
        self.stats = stats
        self.max_batch_lines = max_batch_lines
        # in memory, a healthy server gets a whole round without a single fsync on the event loop
        self.max_queue_lines = max_queue_lines
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._log = log
        self._memory: deque[_Chunk] = deque()
        self._current: _Chunk | None = None  # the chunk being written
        self._write_task: asyncio.Future[None] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()  # new work or stop
        self._stop = asyncio.Event()  # cuts a backoff wait short
        self._drained = asyncio.Event()
        self._failures = 0  # consecutive failed attempts
        self._failing_since: float | None = None
        self._last_code: str | None = None
        self._bug_seq: int | None = None  # spooled chunk the last internal-error failure was on
        self._bug_count = 0  # consecutive internal-error failures of that chunk
        self._rng = random.Random()
        self._sync_stats()

    # -- the daemon's side -----------------------------------------------------------------

    def submit(self, lines: Sequence[str]) -> None:
        """Queue one round's lines (no awaiting; at most a spool file write)."""
        if not lines:
            return
        for i in range(0, len(lines), self.max_batch_lines):
            part = list(lines[i : i + self.max_batch_lines])
            self._memory.append(_Chunk(part, len(part)))
        if self._stopping or len(self.spool) or self._memory_lines() > self.max_queue_lines:
            # behind older spooled data, or too much in memory, or no more writes: all to disk
            self._spill()
        self._drained.clear()
        self._wake.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until memory and spool are empty; False if time ran out first."""
        self._update_drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        return self._is_drained()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop writing, let a write in progress finish (up to `timeout`), spool the rest."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        run_task = self._run_task
        if run_task is not None and not run_task.done() and run_task is not asyncio.current_task():
            done, _ = await asyncio.wait({run_task}, timeout=timeout)
            if not done:
                # the write is cut; its chunk stays first in memory or in the spool
                if self._write_task is not None:
                    self._write_task.cancel()
                done, _ = await asyncio.wait({run_task}, timeout=_GRACE)
                if not done:
                    run_task.cancel()
        self._spill()
        self._log.info(
            "delivery stopped; %d lines wait in the spool",
            self.spool.lines,
            extra={"event": "delivery-stopped", "sink": self.sink.name,
                   "spool_batches": self.spool.batches, "spool_bytes": self.spool.bytes},
        )

    async def run(self) -> None:
        """The write loop: spool first (oldest first), then memory; returns after shutdown()."""
        self._run_task = asyncio.current_task()
        while not self._stopping:
            chunk = self._next_chunk()
            if chunk is None:
                self._update_drained()
                self._wake.clear()
                await self._wake.wait()
                continue
            failed = await self._attempt(chunk)
            if failed and not self._stopping:
                await self._backoff()

    # -- internals -------------------------------------------------------------------------

    def _memory_lines(self) -> int:
        return sum(c.nlines for c in self._memory)

    def _next_chunk(self) -> _Chunk | None:
        head = self.spool.oldest()
        if head is not None:
            seq, lines = head
            self.spool.busy = seq  # the size bound must not delete what is being written
            return _Chunk(lines, self.spool.lines_in(seq), seq=seq, replay=True)
        return self._memory[0] if self._memory else None

    async def _attempt(self, chunk: _Chunk) -> bool:
        """Write one chunk and account for it; True if it failed and is waiting for a retry."""
        self._current = chunk
        task = self._write_task = asyncio.ensure_future(self.sink.write(chunk.lines))
        try:
            await asyncio.wait({task})  # unlike `await task`, tells our cancellation from the write's
        except asyncio.CancelledError:
            task.cancel()
            self._current = None
            self.spool.busy = None
            raise
        finally:
            self._write_task = None
        try:
            if task.cancelled():
                return False  # shutdown cut it: the chunk stays where it is
            exc = task.exception()
            if exc is None:
                self._written(chunk)
                return False
            if isinstance(exc, DeliveryRejected):
                self._bug_seq, self._bug_count = None, 0
                self._rejected(chunk, exc)
                return False
            if not isinstance(exc, DeliveryRetryable):
                self._log.error(
                    "sink %s raised %s (a bug): %s",
                    self.sink.name,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                    extra={"event": "delivery-error", "sink": self.sink.name, "code": INTERNAL_ERROR},
                )
                exc = DeliveryRetryable(f"{type(exc).__name__}: {exc}", code=INTERNAL_ERROR)
            if self._count_bug(chunk, exc) >= MAX_INTERNAL_ERRORS:
                self._bug_seq, self._bug_count = None, 0
                self._rejected(chunk, exc)
                return False
            self._retry_later(chunk, exc)
            self._bug_seq = chunk.seq  # spooled by now: the next attempt reads it back by seq
            return True
        finally:
            self._current = None
            self.spool.busy = None
            self._sync_stats()
            self._update_drained()

    def _count_bug(self, chunk: _Chunk, exc: DeliveryError) -> int:
        """Consecutive internal-error failures of this chunk, this one included (0: another error)."""
        if exc.code != INTERNAL_ERROR:
            self._bug_count = 0
        elif chunk.seq is not None and chunk.seq == self._bug_seq:
            self._bug_count += 1
        else:
            self._bug_count = 1
        return self._bug_count

    def _written(self, chunk: _Chunk) -> None:
        self._bug_seq, self._bug_count = None, 0
        if chunk.seq is not None:
            self.spool.remove(chunk.seq)
        if chunk.replay:
            self.stats.replayed_lines += chunk.nlines
        elif chunk.seq is None and self._memory and self._memory[0] is chunk:
            self._memory.popleft()
        self.stats.written_lines += chunk.nlines
        self.stats.last_success = self._clock()
        self.stats.last_write_ok = True
        if self._failures:
            self._log.info(
                "delivery to %s works again after %d failed attempts",
                self.sink.name,
                self._failures,
                extra={"event": "delivery-recovered", "sink": self.sink.name,
                       "failed_attempts": self._failures,
                       "outage_seconds": round(self._clock() - (self._failing_since or self._clock()), 3)},
            )
        self._failures = 0
        self._failing_since = None
        self._last_code = None

    def _rejected(self, chunk: _Chunk, exc: DeliveryError) -> None:
        """Set the chunk aside in rejected/: the server refused it, or a sink bug keeps failing on it."""
        self.stats.write_failures[exc.code] += 1
        self.stats.last_write_ok = False
        why = str(exc)
        pruned_lines = self.spool.pruned_rejected_lines
        pruned_batches = self.spool.pruned_rejected_batches
        try:
            if chunk.seq is not None and chunk.seq in self.spool:
                path = str(self.spool.reject_seq(chunk.seq, why))
            else:
                if not chunk.replay and self._memory and self._memory[0] is chunk:
                    self._memory.popleft()
                path = str(self.spool.reject(chunk.lines, why))
        except OSError as err:
            path = f"(not kept: {err})"
        self.stats.rejected_lines += chunk.nlines
        if isinstance(exc, DeliveryRejected):
            message = "%s rejected %d lines, kept in %s: %s"
        else:
            message = (f"%s failed {MAX_INTERNAL_ERRORS} times in a row on the same %d lines (a bug), "
                       "set aside in %s: %s")
        self._log.error(
            message,
            self.sink.name,
            chunk.nlines,
            path,
            why,
            extra={"event": "delivery-rejected", "sink": self.sink.name, "code": exc.code,
                   "status": exc.status, "lines": chunk.nlines, "path": path},
        )
        pruned = self.spool.pruned_rejected_lines - pruned_lines
        if pruned:
            self.stats.rejected_pruned_lines += pruned
            batches = self.spool.pruned_rejected_batches - pruned_batches
            self._log.warning(
                "rejected/ over %d bytes: deleted the %d oldest rejected lines (%d batch(es))",
                self.spool.max_bytes,
                pruned,
                batches,
                extra={"event": "rejected-pruned", "sink": self.sink.name,
                       "pruned_lines": pruned, "pruned_batches": batches},
            )

    def _retry_later(self, chunk: _Chunk, exc: DeliveryError) -> None:
        self.stats.write_failures[exc.code] += 1
        self.stats.last_write_ok = False
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = self._clock()
        if chunk.seq is None:
            self._spill()  # chunk is memory[0]: it leads the spool, the rest follows in order
        # one warning per outage (and per change of reason), details at debug: no log floods
        level = logging.WARNING if exc.code != self._last_code else logging.DEBUG
        self._last_code = exc.code
        self._log.log(
            level,
            "write to %s failed, %d lines wait in the spool: %s",
            self.sink.name,
            self.spool.lines,
            exc,
            extra={"event": "delivery-failed", "sink": self.sink.name, "code": exc.code,
                   "status": exc.status, "lines": chunk.nlines, "failed_attempts": self._failures,
                   "spool_batches": self.spool.batches},
        )

    async def _backoff(self) -> None:
        delay = backoff_delay(self._failures, self.backoff_initial, self.backoff_max, self._rng)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def _spill(self) -> None:
        """Move every memory chunk to the spool, oldest first (memory ends up empty)."""
        dropped_lines, dropped_batches = self.spool.dropped_lines, self.spool.dropped_batches
        lost = 0
        while self._memory:
            chunk = self._memory.popleft()
            try:
                seq = self.spool.append(chunk.lines)
            except OSError as err:
                lost += chunk.nlines
                self._log.error(
                    "spool write failed, %d lines lost: %s",
                    chunk.nlines,
                    err,
                    extra={"event": "spool-lost", "sink": self.sink.name,
                           "code": IO_ERROR, "lines": chunk.nlines},
                )
                continue
            if seq is not None:
                chunk.seq = seq
                self.stats.spooled_lines += chunk.nlines
                if chunk is self._current:
                    self.spool.busy = seq
        dropped = self.spool.dropped_lines - dropped_lines
        if dropped:
            self._log.warning(
                "spool over %d bytes: dropped the %d oldest lines (%d batches)",
                self.spool.max_bytes,
                dropped,
                self.spool.dropped_batches - dropped_batches,
                extra={"event": "spool-dropped", "sink": self.sink.name, "dropped_lines": dropped,
                       "dropped_batches": self.spool.dropped_batches - dropped_batches},
            )
        self.stats.dropped_lines += dropped + lost
        self._sync_stats()

    def _sync_stats(self) -> None:
        self.stats.spool_bytes = self.spool.bytes
        self.stats.spool_batches = self.spool.batches

    def _is_drained(self) -> bool:
        return not self._memory and not len(self.spool) and self._current is None

    def _update_drained(self) -> None:
        if self._is_drained():
            self._drained.set()
        else:
            self._drained.clear()
