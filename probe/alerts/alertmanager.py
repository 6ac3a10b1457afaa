"""Alertmanager channel: incidents as alerts through API v2 (POST /api/v2/alerts), refreshed every round."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from probe.errors import DeliveryRejected
from probe.http import INTERNAL_ERROR, HttpPoster, check_url
from probe.incidents import SOURCE_AUDIT, EventKind, Incident, IncidentEvent

ALERTNAME = "DNSSECValidationFailure"
AUDIT_ALERTNAME = "DNSSECSignerAudit"  # paged audit findings: unsafe-rollover, signer-key-mismatch
# Prometheus sends endsAt = now + 4 x its evaluation interval (at least 4 x 1 min); the daemon
# should pass about 4 x its round interval. 5 min is also Alertmanager's own resolve_timeout.
DEFAULT_RESEND_GRACE = 300.0


def rfc3339(t: float) -> str:
    """UTC, millisecond precision, `Z` suffix (what the API's date-time fields accept)."""
    d = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _resolvers(n: int) -> str:
    return f"{n} resolver" + ("" if n == 1 else "s")


class AlertmanagerChannel:
    """One alert per incident, identified by its labels (incident_id among them).

    Bodies are `{"alerts": [...]}`; send() POSTs the list itself, which is what the API takes.

    - open / update: the alert without endsAt. It may sit in the outbox past any endsAt we could
      pick now, and an endsAt in the past would arrive as "resolved"; without one Alertmanager
      applies its resolve_timeout until the next refresh sets an explicit endsAt.
    - update that changed the kind: `kind` is a label, so the alert under the old kind is another
      alert; the same body ends it (endsAt = the update's time).
    - every round (refresh): all open incidents with endsAt = now + resend_grace, so an alert
      lapses by itself if the probe stops refreshing it (Prometheus semantics).
    - resolve: the alert with endsAt = resolved_at.
    """

    name = "alertmanager"

    def __init__(self, url: str, *, timeout: float = 10.0,
                 resend_grace: float = DEFAULT_RESEND_GRACE) -> None:
        self.url = check_url(url, "Alertmanager URL")
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.timeout = timeout
        self.resend_grace = resend_grace
        self._http = HttpPoster(self.name, timeout=timeout)

    def __repr__(self) -> str:
        return (f"AlertmanagerChannel({self.url!r}, timeout={self.timeout}, "
                f"resend_grace={self.resend_grace})")

    def labels(self, incident: Incident, *, vantage: str, kind: str | None = None) -> dict[str, str]:
        """The alert's identity. incident_id is included: it is fixed for the life of an incident
        (zone + open time), so it never splits one incident, and it keeps a re-opened incident
        of the same zone a new alert with its own startsAt instead of merging into the last."""
        return {
            "alertname": AUDIT_ALERTNAME if incident.source == SOURCE_AUDIT else ALERTNAME,
            "zone": incident.zone,
            "vantage": vantage,
            "severity": "critical",
            "kind": kind or incident.kind,
            "incident_id": incident.id,
        }

    def alert(self, incident: Incident, *, vantage: str, ends_at: float | None = None,
              kind: str | None = None) -> dict[str, Any]:
        """One PostableAlert; firing when `ends_at` is None or in the future."""
        if incident.source == SOURCE_AUDIT:
            summary = (f"DNSSEC signer audit: {incident.kind} for {incident.zone}"
                       + ("" if incident.is_open else " cleared"))
        elif incident.is_open:
            summary = (f"DNSSEC validation failing for {incident.zone} at "
                       f"{_resolvers(incident.affected)}")
        else:
            summary = (f"DNSSEC validation recovered for {incident.zone} "
                       f"(failed at {_resolvers(incident.affected)})")
        out: dict[str, Any] = {
            "labels": self.labels(incident, vantage=vantage, kind=kind),
            "annotations": {"summary": summary, "description": incident.detail},
            "startsAt": rfc3339(incident.opened_at),
        }
        if ends_at is not None:
            out["endsAt"] = rfc3339(max(ends_at, incident.opened_at))  # never before startsAt
        return out

    def on_event(self, event: IncidentEvent, *, vantage: str) -> list[dict[str, Any]]:
        inc = event.incident
        if event.event is EventKind.RESOLVE:
            ends = inc.resolved_at if inc.resolved_at is not None else event.at
            return [{"alerts": [self.alert(inc, vantage=vantage, ends_at=ends)]}]
        alerts = [self.alert(inc, vantage=vantage)]
        old = event.previous_kind
        if event.event is EventKind.UPDATE and old is not None and old != inc.kind:
            alerts.append(self.alert(inc, vantage=vantage, ends_at=event.at, kind=old))
        return [{"alerts": alerts}]

    def refresh(self, open_incidents: Sequence[Incident], *, vantage: str,
                now: float) -> dict[str, Any] | None:
        alerts = [self.alert(i, vantage=vantage, ends_at=now + self.resend_grace)
                  for i in open_incidents]
        return {"alerts": alerts} if alerts else None

    async def send(self, body: dict[str, Any]) -> None:
        alerts = body.get("alerts")
        if not isinstance(alerts, list):  # we queued it: a bug, and sending it again cannot help
            raise DeliveryRejected(f"{self.name}: queued body has no alert list", code=INTERNAL_ERROR)
        await self._http.post_json(self.endpoint, alerts)

    async def close(self) -> None:
        await self._http.close()
