"""Generic JSON webhook channel: every incident event POSTed as JSON to one URL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from probe.http import HttpPoster, check_url
from probe.incidents import Incident, IncidentEvent


def webhook_body(event: IncidentEvent, *, vantage: str) -> dict[str, Any]:
    """`{"event", "vantage", "incident": Incident.to_dict()}`: the documented webhook shape."""
    return {"event": event.event.value, "vantage": vantage, "incident": event.incident.to_dict()}


class WebhookChannel:
    """POSTs every open / update / resolve as JSON to one URL; any 2xx is success."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = check_url(url, "webhook URL")
        self.timeout = timeout
        self._http = HttpPoster(self.name, timeout=timeout)

    def __repr__(self) -> str:
        return f"WebhookChannel({self.url!r}, timeout={self.timeout})"

    def on_event(self, event: IncidentEvent, *, vantage: str) -> list[dict[str, Any]]:
        return [webhook_body(event, vantage=vantage)]

    def refresh(self, open_incidents: Sequence[Incident], *, vantage: str,
                now: float) -> dict[str, Any] | None:
        return None  # a webhook hears each change once; there is nothing to keep alive

    async def send(self, body: dict[str, Any]) -> None:
        await self._http.post_json(self.url, body)

    async def close(self) -> None:
        await self._http.close()
