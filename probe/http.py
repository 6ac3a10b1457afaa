"""The one place aiohttp exceptions and HTTP statuses become probe.errors delivery errors."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import yarl

from probe.errors import ConfigError, DeliveryError, DeliveryRejected, DeliveryRetryable

# DeliveryError.code values: metric labels (sink write failures, alert send failures), stable.
#   connect-failed   no usable connection (refused, DNS, TLS, lost, broken reply)            retry
#   timeout          no complete answer within the timeout, or HTTP 408                     retry
#   http-5xx         the server failed (InfluxDB 1.x says "retention policy not found" so)  retry
#   http-429         the server asked us to slow down                                       retry
#   http-auth        401/403: credentials, token or key wrong; an operator can fix them     retry
#   http-404         database, bucket or URL path not found; an operator can fix it         retry
#   http-unexpected  1xx/3xx: a proxy or a wrong URL; nothing says the data is bad          retry
#   http-4xx         any other 4xx: the server refused the data itself                      rejected
#   internal-error   our own code raised something it should have translated (a bug)
#   io-error         a local file (file sink, spool) could not be written
CONNECT_FAILED = "connect-failed"
TIMEOUT = "timeout"
INTERNAL_ERROR = "internal-error"
IO_ERROR = "io-error"

USER_AGENT = "dnssec-probe"
MAX_MESSAGE = 500  # server text kept in an error message; a 400 can echo a whole batch back
_ERROR_BODY_BYTES = 64 * 1024  # read at most this much of an error reply
REDACTED = "[redacted]"


def check_url(url: str, what: str) -> str:
    """An http(s) URL with a host, else ConfigError; returned unchanged."""
    try:
        u = yarl.URL(url)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: not a URL") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise ConfigError(f"{what}: needs an http:// or https:// URL with a host")
    return url


def safe_url(url: str) -> str:
    """The URL without user:password@, query or fragment: fit for messages and reprs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def scrub(text: str, secrets: Sequence[str | None]) -> str:
    """Replace every secret in text; used on anything a library or server says back."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def server_message(body: bytes | str | None, secrets: Sequence[str | None] = ()) -> str:
    """The server's own error text on one line, secrets masked, at most MAX_MESSAGE characters.

    JSON replies are unwrapped: InfluxDB 1.x says {"error": ...}, 2.x and Alertmanager
    {"message": ...}, PagerDuty adds {"errors": [...]}; anything else is quoted as it is.
    """
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        parts = [doc[k] for k in ("error", "message") if isinstance(doc.get(k), str)][:1]
        if isinstance(doc.get("errors"), list):
            parts += [str(e) for e in doc["errors"]]
        if parts:
            text = "; ".join(parts)
    # masked before it is cut: a cut must not leave half a secret behind
    text = scrub(" ".join(text.split()), secrets)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def classify_status(status: int) -> tuple[str, bool]:
    """(code, retryable) for a non-2xx HTTP status; see the code table above."""
    if status == 408:
        return TIMEOUT, True
    if status == 429:
        return "http-429", True
    if status in (401, 403):
        return "http-auth", True  # fixing credentials must not cost what was queued meanwhile
    if status == 404:
        return "http-404", True
    if 400 <= status < 500:
        return "http-4xx", False
    if 500 <= status < 600:
        return "http-5xx", True
    return "http-unexpected", True


def status_error(status: int, *, what: str, message: str = "") -> DeliveryError:
    """The DeliveryRetryable / DeliveryRejected for a non-2xx answer; `message` is the server's."""
    code, retryable = classify_status(status)
    text = f"{what}: HTTP {status}" + (f": {message}" if message else "")
    kind = DeliveryRetryable if retryable else DeliveryRejected
    return kind(text, code=code, status=status)


def client_error(exc: BaseException, *, what: str, secrets: Sequence[str | None] = (),
                 timeout: float | None = None) -> DeliveryRetryable:
    """A transport-level exception (aiohttp, OS, timeout) as a retryable error."""
    detail = scrub(str(exc) or type(exc).__name__, secrets)
    # aiohttp's ServerTimeoutError is both a ClientError and a TimeoutError: time wins
    if isinstance(exc, TimeoutError):
        limit = f" within {timeout:g}s" if timeout is not None else ""
        return DeliveryRetryable(f"{what}: no complete reply{limit} ({detail})", code=TIMEOUT)
    return DeliveryRetryable(f"{what}: {type(exc).__name__}: {detail}", code=CONNECT_FAILED)


# What client_error translates; anything else escaping a send is a bug (internal-error).
CLIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, TimeoutError)


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait after `failures` consecutive failures (1: the first): `initial`, doubling
    up to `maximum`, times a random 0.5-1.0 so that clients of one dead server do not retry in step."""
    base = min(maximum, initial * 2.0 ** min(max(failures, 1) - 1, 60))
    return base * rng.uniform(0.5, 1.0)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = await resp.content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data


class HttpPoster:
    """POSTs bodies over one aiohttp session and turns every outcome into success,
    DeliveryRetryable or DeliveryRejected. The session is made on first use, inside the running
    event loop. `what` starts every error message; `secrets` never appear in one."""

    def __init__(self, what: str, *, timeout: float, headers: Mapping[str, str] | None = None,
                 secrets: Sequence[str | None] = ()) -> None:
        self.what = what
        self.timeout = timeout
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._secrets = tuple(s for s in secrets if s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpPoster({self.what!r}, timeout={self.timeout})"

    async def post(self, url: str, data: bytes, *, content_type: str,
                   params: Mapping[str, str] | None = None) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            # no redirects: following a 301/302 would turn the POST into a GET without the body
            async with self._session.post(url, data=data, params=params, allow_redirects=False,
                                          headers={"Content-Type": content_type}) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return
                raw = await _read_capped(resp, _ERROR_BODY_BYTES)
        except CLIENT_EXCEPTIONS as exc:
            raise client_error(exc, what=self.what, secrets=self._secrets,
                               timeout=self.timeout) from None
        raise status_error(status, what=self.what, message=server_message(raw, self._secrets))

    async def post_json(self, url: str, payload: Any) -> None:
        """POST `payload` as compact JSON (what every alert channel sends)."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        await self.post(url, data, content_type="application/json")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            await asyncio.sleep(0)  # lets the connector close its transports (no "unclosed" warning)
