"""Alert dispatch: sends each channel's outbox in order, off the round loop, with retries and backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from probe.alerts import AlertStats, Channel
from probe.errors import ConfigError, DeliveryRejected, DeliveryRetryable
from probe.http import backoff_delay
from probe.incidents import Incident, IncidentEvent
from probe.state import OutboxItem, OutboxRow, StateStore

LOG = logging.getLogger("dnssec_probe.alerts")


def outbox_key(event: IncidentEvent) -> str:
    """`{incident id}:{event}:{updated_at in ms}`: the same event queued twice is one row."""
    inc = event.incident
    return f"{inc.id}:{event.event.value}:{int(inc.updated_at * 1000)}"


def _describe(key: str) -> tuple[str, str]:
    """(incident id, event) back from an outbox key, for log lines."""
    parts = key.rsplit(":", 2)  # ids contain ':' (the time), the last two fields do not
    return (parts[0], parts[1]) if len(parts) == 3 else (key, "?")


class Alerter:
    """Owns alert delivery for the daemon.

    Per round the daemon calls items() and commits the result with the incident changes
    (StateStore.commit_round), then kick(). run() is a background task with one worker per
    channel, so a dead channel holds back only itself. shutdown() bounds the exit; whatever was
    not sent stays in the outbox for the next start. Channels are closed by their owner.
    """

    def __init__(self, channels: Sequence[Channel], store: StateStore, stats: AlertStats, *,
                 vantage: str, clock: Callable[[], float] = time.time,
                 backoff_initial: float = 2.0, backoff_max: float = 300.0,
                 log: logging.Logger = LOG) -> None:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ConfigError(f"alert channels must be distinct: {', '.join(names)}")
        self.channels = list(channels)
        self.store = store
        self.stats = stats
        self.vantage = vantage
        self.clock = clock
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.log = log
        self._wake = {n: asyncio.Event() for n in names}
        self._forced: set[str] = set()  # channels kicked since their last pass
        self._refresh: dict[str, dict[str, Any]] = {}  # latest refresh body per channel
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._rng = random.Random()

    # -- called by the round loop (never blocks) ---------------------------------------------

    def items(self, events: Sequence[IncidentEvent]) -> list[OutboxItem]:
        """Outbox rows for these events on every channel (pure)."""
        out: list[OutboxItem] = []
        for ev in events:
            key = outbox_key(ev)
            for ch in self.channels:
                bodies = ch.on_event(ev, vantage=self.vantage)
                for n, body in enumerate(bodies):
                    out.append(OutboxItem(ch.name, key if len(bodies) == 1 else f"{key}/{n}", body))
        return out

    def kick(self, open_incidents: Sequence[Incident]) -> None:
        """After a round's commit: send what is queued now (even rows waiting for their backoff)
        and this round's refresh bodies. Call it right after commit_round, with no await between:
        a refresh computed before a resolve was queued must not be sent after it."""
        if self._stopping:
            return
        now = self.clock()
        for ch in self.channels:
            body = ch.refresh(open_incidents, vantage=self.vantage, now=now)
            if body is None:
                self._refresh.pop(ch.name, None)
            else:
                self._refresh[ch.name] = body
            self._forced.add(ch.name)
            self._wake[ch.name].set()

    # -- background ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until shutdown(): deliver every channel's outbox."""
        self._tasks = [asyncio.create_task(self._worker(ch), name=f"alerts-{ch.name}")
                       for ch in self.channels]
        try:
            if self._tasks:
                await asyncio.wait(self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def shutdown(self, timeout: float) -> None:
        """Stop within `timeout` seconds: due rows are still tried until then, a send still in
        flight at the deadline is abandoned (its row stays queued: sent at least once)."""
        self._stopping = True
        for ev in self._wake.values():
            ev.set()
        busy = [t for t in self._tasks if not t.done()]
        if busy:
            _, late = await asyncio.wait(busy, timeout=timeout)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        left = self.store.outbox_size()
        self.stats.pending = left
        if left:
            self.log.info(f"{left} alert(s) left queued for the next start",
                          extra={"event": "alert-queued", "pending": left})

    async def _worker(self, ch: Channel) -> None:
        wake = self._wake[ch.name]
        while True:
            wake.clear()
            last = self._stopping  # one more pass after shutdown() was called, then out
            forced = ch.name in self._forced
            self._forced.discard(ch.name)
            try:
                retry_at = await self._pass(ch, forced=forced)
                self.stats.pending = self.store.outbox_size()
            except Exception as exc:  # a bug or a broken state DB: keep the daemon, retry later
                self.stats.failures[(ch.name, "internal-error")] += 1
                self.log.exception(f"alert delivery on {ch.name} failed",
                                   extra={"event": "alert-error", "channel": ch.name,
                                          "error": str(exc)})
                retry_at = self.clock() + self.backoff_max
            if last:
                return
            delay = None if retry_at is None else max(0.0, retry_at - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)

    async def _pass(self, ch: Channel, *, forced: bool) -> float | None:
        """Send the channel's queue in order, then its refresh. Returns when to try again if a
        row is waiting (backoff), None when the queue is empty."""
        while rows := self.store.outbox_pending(ch.name):
            for row in rows:
                if row.next_try > self.clock() and not forced:
                    return row.next_try
                forced = False  # only the head can be waiting, and it was just tried
                retry_at = await self._deliver(ch, row)
                if retry_at is not None:
                    return retry_at
        # Queue empty. The refresh is taken only now (no await since the last read), so it is
        # never sent ahead of an open or resolve queued before it was computed.
        body = None if self._stopping else self._refresh.pop(ch.name, None)
        if body is not None:
            await self._send_refresh(ch, body)
        return None

    async def _deliver(self, ch: Channel, row: OutboxRow) -> float | None:
        """Try one row; None when it left the queue (sent, or rejected and kept), else its next try."""
        incident, event = _describe(row.key)
        fields = {"channel": ch.name, "alert_event": event, "incident": incident,
                  "attempt": row.attempts + 1}
        try:
            await ch.send(row.body)
        except DeliveryRetryable as exc:
            delay = backoff_delay(row.attempts + 1, self.backoff_initial, self.backoff_max, self._rng)
            retry_at = self.clock() + delay
            self.store.outbox_retry(row.seq, next_try=retry_at, error=f"{exc.code}: {exc}"[:500])
            self.stats.failures[(ch.name, exc.code)] += 1
            self.log.warning(f"alert send failed, retrying in {delay:.1f}s: {exc}", extra={
                **fields, "event": "alert-retry", "code": exc.code, "status": exc.status,
                "retry_in_s": round(delay, 3)})
            return retry_at
        except DeliveryRejected as exc:
            # kept (marked rejected) for people to look at; never retried, never counted as pending
            self.store.outbox_reject(row.seq, error=f"{exc.code}: {exc}"[:500])
            self.stats.rejected[ch.name] += 1
            self.log.error(f"alert rejected, kept in the outbox as rejected: {exc}", extra={
                **fields, "event": "alert-rejected", "code": exc.code, "status": exc.status})
            return None
        self.store.outbox_done(row.seq)
        self.stats.sent[ch.name] += 1
        self.log.info("alert sent", extra={**fields, "event": "alert-sent"})
        return None

    async def _send_refresh(self, ch: Channel, body: dict[str, Any]) -> None:
        """Best effort: a failure is counted and logged; the next round sends a fresh one."""
        fields = {"channel": ch.name, "alert_event": "refresh"}
        try:
            await ch.send(body)
        except DeliveryRetryable as exc:
            self.stats.failures[(ch.name, exc.code)] += 1
            self.log.warning(f"alert refresh failed: {exc}", extra={
                **fields, "event": "alert-refresh-failed", "code": exc.code, "status": exc.status})
        except DeliveryRejected as exc:
            self.stats.rejected[ch.name] += 1
            self.log.error(f"alert refresh rejected: {exc}", extra={
                **fields, "event": "alert-rejected", "code": exc.code, "status": exc.status})
        else:
            self.log.debug("alert refresh sent", extra={**fields, "event": "alert-refresh"})
