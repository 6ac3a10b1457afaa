"""Sinks: where the daemon's InfluxDB line protocol goes (InfluxDB v1, v2, or hourly files).

Every sink takes finished line-protocol lines (built with influxdb-client's `Point`, ns
timestamps) and either stores all of them or raises DeliveryRetryable / DeliveryRejected
(probe.errors; HTTP outcomes are translated in probe.http). Spooling, replay and the size
bound live in probe.sinks.delivery, not in sinks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Sink(Protocol):
    """One destination for line protocol."""

    name: str  # "influx-v1" | "influx-v2" | "files": a metric label

    async def write(self, lines: Sequence[str]) -> None:
        """Store every line or raise DeliveryRetryable / DeliveryRejected."""
        ...

    async def close(self) -> None: ...


@dataclass
class DeliveryStats:
    """Counters the delivery keeps for /metrics and /healthz (read, never reset)."""

    written_lines: int = 0
    write_failures: Counter[str] = field(default_factory=Counter)  # by DeliveryError.code
    spooled_lines: int = 0  # lines that went to the on-disk spool (ever)
    replayed_lines: int = 0  # lines written from the spool (ever)
    dropped_lines: int = 0  # lines dropped because the spool was full (oldest first)
    rejected_lines: int = 0  # lines set aside in rejected/: refused as bad data, or a sink bug (ever)
    rejected_pruned_lines: int = 0  # lines deleted from rejected/ to keep it under its bound (ever)
    spool_bytes: int = 0  # current size of the spool
    spool_batches: int = 0  # current number of spooled batches
    last_success: float | None = None  # wall clock of the last successful write
    last_write_ok: bool | None = None  # None until the first write was tried
