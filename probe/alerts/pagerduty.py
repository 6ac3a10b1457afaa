"""PagerDuty channel: Events API v2 trigger / resolve, one dedup_key per incident."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from probe.errors import ConfigError
from probe.http import HttpPoster, check_url
from probe.incidents import SOURCE_AUDIT, EventKind, Incident, IncidentEvent

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_MAX_SUMMARY = 1024  # Events API v2 limit
_MAX_DEDUP_KEY = 255  # Events API v2 limit


def dedup_key(incident: Incident) -> str:
    """The incident id; hashed down only when a very long zone name would exceed the limit."""
    if len(incident.id) <= _MAX_DEDUP_KEY:
        return incident.id
    digest = hashlib.sha256(incident.id.encode()).hexdigest()[:32]
    return incident.id[:_MAX_DEDUP_KEY - 33] + "#" + digest


def _summary(incident: Incident) -> str:
    if incident.source == SOURCE_AUDIT:
        state = "" if incident.is_open else " cleared"
        return (f"DNSSEC signer audit: {incident.kind} for {incident.zone}{state}: "
                f"{incident.detail}")[:_MAX_SUMMARY]
    n = incident.affected
    where = f"{n} resolver" + ("" if n == 1 else "s")
    if incident.is_open:
        text = f"DNSSEC validation failing for {incident.zone} at {where} ({incident.kind})"
    else:
        text = f"DNSSEC validation recovered for {incident.zone} (failed at {where})"
    return text[:_MAX_SUMMARY]


class PagerDutyChannel:
    """open and update trigger (same dedup_key, so PagerDuty pages once), resolve resolves.

    Queued bodies carry no routing key: send() adds it, so the secret is not stored in the
    state database and a rotated key applies to alerts already queued.
    """

    name = "pagerduty"

    def __init__(self, url: str = EVENTS_URL, routing_key: str = "", *,
                 timeout: float = 10.0) -> None:
        self.url = check_url(url, "PagerDuty URL")
        if not routing_key:
            raise ConfigError("PagerDuty routing key is empty")
        self.timeout = timeout
        self._routing_key = routing_key
        self._http = HttpPoster(self.name, timeout=timeout, secrets=[routing_key])

    def __repr__(self) -> str:
        return f"PagerDutyChannel({self.url!r}, routing_key=<redacted>, timeout={self.timeout})"

    def on_event(self, event: IncidentEvent, *, vantage: str) -> list[dict[str, Any]]:
        inc = event.incident
        action = "resolve" if event.event is EventKind.RESOLVE else "trigger"
        return [{
            "event_action": action,
            "dedup_key": dedup_key(inc),
            "payload": {
                "summary": _summary(inc),
                "source": vantage,
                "severity": "critical",
                "component": inc.zone,
                "group": "dnssec",
                "class": inc.kind,
                "custom_details": inc.to_dict(),
            },
        }]

    def refresh(self, open_incidents: Sequence[Incident], *, vantage: str,
                now: float) -> dict[str, Any] | None:
        return None  # PagerDuty keeps an incident open until it is resolved

    async def send(self, body: dict[str, Any]) -> None:
        await self._http.post_json(self.url, {**body, "routing_key": self._routing_key})

    async def close(self) -> None:
        await self._http.close()
