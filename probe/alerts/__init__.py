"""Pager alerts: Alertmanager API v2, PagerDuty Events API v2 and a generic JSON webhook.

A channel turns incident events into bodies (pure, no I/O) and sends one body (I/O only).
Bodies are queued durably in the state store's outbox in the same transaction as the incident
change; probe.alerts.dispatch sends them in order per channel, with retries and backoff, off
the round loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from probe.incidents import Incident, IncidentEvent


class Channel(Protocol):
    """One alert destination."""

    name: str  # "alertmanager" | "pagerduty" | "webhook": outbox channel and metric label

    def on_event(self, event: IncidentEvent, *, vantage: str) -> list[dict[str, Any]]:
        """Bodies to queue for an open / update / resolve event (pure)."""
        ...

    def refresh(self, open_incidents: Sequence[Incident], *, vantage: str,
                now: float) -> dict[str, Any] | None:
        """A body re-sent every round while incidents are open (Alertmanager), else None (pure)."""
        ...

    async def send(self, body: dict[str, Any]) -> None:
        """Deliver one body or raise DeliveryRetryable / DeliveryRejected (through probe.http)."""
        ...

    async def close(self) -> None: ...


@dataclass
class AlertStats:
    """Counters for /metrics (read, never reset)."""

    sent: Counter[str] = field(default_factory=Counter)  # by channel
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, error code)
    rejected: Counter[str] = field(default_factory=Counter)  # by channel: refused, kept as rejected
    pending: int = 0  # outbox size after the last pass
