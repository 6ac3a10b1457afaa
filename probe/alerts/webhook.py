"""Generic JSON webhook channel, and the JSON POST all alert channels use (aiohttp errors translated here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import yarl

from probe.errors import ConfigError, DeliveryRejected, DeliveryRetryable
from probe.incidents import Incident, IncidentEvent

USER_AGENT = "dnssec-probe"
_ERROR_TEXT_BYTES = 4096  # read this much of an error reply: enough for the server's message
_ERROR_TEXT_CHARS = 300  # and quote at most this much of it in logs


def check_url(url: str, what: str) -> str:
    """An http(s) URL with a host, else ConfigError; returned unchanged."""
    try:
        u = yarl.URL(url)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: not a URL") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise ConfigError(f"{what}: needs an http:// or https:// URL with a host")
    return url


class JsonPoster:
    """POSTs JSON for one channel and turns every outcome into success, DeliveryRetryable or
    DeliveryRejected. The session is made on first use, inside the running event loop."""

    def __init__(self, channel: str, *, timeout: float, redact: Sequence[str] = ()) -> None:
        self.channel = channel
        self.timeout = timeout
        self._redact = tuple(s for s in redact if s)  # secrets never quoted back in messages
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"JsonPoster(channel={self.channel!r}, timeout={self.timeout})"

    def _clean(self, text: str) -> str:
        for secret in self._redact:
            text = text.replace(secret, "[redacted]")
        return text

    async def post(self, url: str, payload: Any) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        data = json.dumps(payload, separators=(",", ":")).encode()
        try:
            # No redirects: following a 301/302 would turn the POST into a GET and drop the body.
            async with self._session.post(url, data=data, allow_redirects=False,
                                          headers={"Content-Type": "application/json"}) as resp:
                status = resp.status
                raw = await resp.content.read(_ERROR_TEXT_BYTES)
        except TimeoutError:
            raise DeliveryRetryable(f"{self.channel}: no reply within {self.timeout:g}s",
                                    code="timeout") from None
        except aiohttp.ClientConnectorError as exc:
            raise DeliveryRetryable(f"{self.channel}: cannot connect: {self._clean(str(exc))}",
                                    code="connect-failed") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Disconnects, broken replies, TLS trouble: the next attempt may well work.
            raise DeliveryRetryable(
                f"{self.channel}: {type(exc).__name__}: {self._clean(str(exc))}",
                code="io-error") from None
        if 200 <= status < 300:
            return
        text = " ".join(raw.decode("utf-8", "replace").split())[:_ERROR_TEXT_CHARS]
        message = f"{self.channel}: HTTP {status}" + (f": {self._clean(text)}" if text else "")
        if status in (408, 429) or status >= 500:
            raise DeliveryRetryable(message, code=f"http-{status}", status=status)
        raise DeliveryRejected(message, code=f"http-{status}", status=status)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            # let the connector finish closing its transports (avoids "unclosed" warnings)
            await asyncio.sleep(0)


def webhook_body(event: IncidentEvent, *, vantage: str) -> dict[str, Any]:
    """`{"event", "vantage", "incident": Incident.to_dict()}`: the documented webhook shape."""
    return {"event": event.event.value, "vantage": vantage, "incident": event.incident.to_dict()}


class WebhookChannel:
    """POSTs every open / update / resolve as JSON to one URL; any 2xx is success."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = check_url(url, "webhook URL")
        self.timeout = timeout
        self._http = JsonPoster(self.name, timeout=timeout)

    def __repr__(self) -> str:
        return f"WebhookChannel({self.url!r}, timeout={self.timeout})"

    def on_event(self, event: IncidentEvent, *, vantage: str) -> list[dict[str, Any]]:
        return [webhook_body(event, vantage=vantage)]

    def refresh(self, open_incidents: Sequence[Incident], *, vantage: str,
                now: float) -> dict[str, Any] | None:
        return None  # a webhook hears each change once; there is nothing to keep alive

    async def send(self, body: dict[str, Any]) -> None:
        await self._http.post(self.url, body)

    async def close(self) -> None:
        await self._http.close()
