"""InfluxDB 1.x sink: POST line protocol to /write (works with 1.6, which has no /api/v2)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from probe.errors import DeliveryError, DeliveryRejected, DeliveryRetryable

MAX_MESSAGE = 500  # server text kept in an error message; a 400 can echo a whole batch back


def safe_url(url: str) -> str:
    """The URL without user:password@, query or fragment: fit for messages and reprs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _unquote(value: str | None) -> str | None:
    return unquote(value) if value is not None else None


def scrub(text: str, *secrets: str | None) -> str:
    """Replace every secret in text; used on anything a library or server says back."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def server_message(body: bytes | str | None) -> str:
    """The server's own error text: 1.x says {"error": ...}, 2.x {"message": ...}; else the raw body."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                text = doc[key]
                break
    text = " ".join(text.split())  # one log line, even when the server echoes several
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def http_failure(status: int, message: str, *, what: str) -> DeliveryError:
    """Map a non-2xx answer from an InfluxDB-compatible server to retryable or rejected."""
    text = f"{what}: HTTP {status}" + (f": {message}" if message else "")
    if status == 429:
        return DeliveryRetryable(text, code="http-429", status=status)
    if status == 408:
        return DeliveryRetryable(text, code="timeout", status=status)
    if status >= 500:
        return DeliveryRetryable(text, code="http-5xx", status=status)
    if status in (401, 403):
        # fixing credentials must not cost the data written meanwhile
        return DeliveryRetryable(text, code="http-auth", status=status)
    if status == 404:
        # database/bucket not found (or a wrong path): an operator can create it; keep the data
        return DeliveryRetryable(text, code="http-404", status=status)
    if 400 <= status < 500:
        return DeliveryRejected(text, code="http-4xx", status=status)
    # 1xx/3xx: a proxy or a wrong URL; nothing says the data is bad
    return DeliveryRetryable(text, code="http-unexpected", status=status)


def client_failure(exc: BaseException, *, what: str, secrets: Sequence[str | None] = ()) -> DeliveryError:
    """Map a transport-level exception (aiohttp, OS, timeout) to a retryable error."""
    detail = scrub(str(exc) or type(exc).__name__, *secrets)
    # aiohttp's ServerTimeoutError is both a ClientError and a TimeoutError: time wins
    if isinstance(exc, TimeoutError):
        return DeliveryRetryable(f"{what}: timed out ({detail})", code="timeout")
    return DeliveryRetryable(f"{what}: {type(exc).__name__}: {detail}", code="connect-failed")


class InfluxV1Sink:
    """Writes to InfluxDB 1.x `/write`; one aiohttp session, opened on first use."""

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
        self._password = password if password is not None else _unquote(parts.password)
        self.url = safe_url(url)
        self.db = db
        self.precision = precision
        self.timeout = timeout
        self.retention_policy = retention_policy
        self._session: aiohttp.ClientSession | None = None
        self._what = f"influx-v1 {self.url} db={db}"

    def __repr__(self) -> str:
        return f"InfluxV1Sink({self.url!r}, db={self.db!r}, user={self.username!r})"

    def _params(self) -> dict[str, str]:
        params = {"db": self.db, "precision": self.precision}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        return params

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # a basic-auth header, not ?u=&p=: the password never sits in a URL that errors quote
            headers = {"Content-Type": "text/plain; charset=utf-8"}
            if self.username or self._password:
                pair = f"{self.username or ''}:{self._password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode()
        try:
            async with self._get_session().post(
                f"{self.url}/write",
                params=self._params(),
                data=body,
                allow_redirects=False,
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                text = await resp.text(errors="replace")
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise client_failure(exc, what=self._what, secrets=(self._password,)) from None
        raise http_failure(status, scrub(server_message(text), self._password), what=self._what)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
