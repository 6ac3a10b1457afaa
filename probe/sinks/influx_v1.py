"""InfluxDB 1.x sink: POST line protocol to /write (works with 1.6, which has no /api/v2)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from probe.http import HttpPoster, safe_url


def _unquote(value: str | None) -> str | None:
    return unquote(value) if value is not None else None


class InfluxV1Sink:
    """Writes to InfluxDB 1.x `/write`; one HTTP session, opened on first use."""

    name: str = "influx-v1"

    def __init__(
        self,
        url: str,
        db: str,
        *,
        precision: str = "ns",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        retention_policy: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        # credentials in the URL move to basic auth so that the URL itself holds no secret
        self.username = username if username is not None else _unquote(parts.username)
        password = password if password is not None else _unquote(parts.password)
        self.url = safe_url(url)
        self.db = db
        self.precision = precision
        self.timeout = timeout
        self.retention_policy = retention_policy
        # a basic-auth header, not ?u=&p=: the password never sits in a URL that errors quote
        headers = {}
        if self.username or password:
            pair = f"{self.username or ''}:{password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._http = HttpPoster(f"influx-v1 {self.url} db={db}", timeout=timeout, headers=headers,
                                secrets=(password,))

    def __repr__(self) -> str:
        return f"InfluxV1Sink({self.url!r}, db={self.db!r}, user={self.username!r})"

    def _params(self) -> dict[str, str]:
        params = {"db": self.db, "precision": self.precision}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        return params

    async def write(self, lines: Sequence[str]) -> None:
        if lines:
            await self._http.post(f"{self.url}/write", "\n".join(lines).encode(), params=self._params(),
                                  content_type="text/plain; charset=utf-8")

    async def close(self) -> None:
        await self._http.close()
