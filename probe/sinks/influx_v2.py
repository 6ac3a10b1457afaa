"""InfluxDB 2.x sink (also VictoriaMetrics' /api/v2/write) through influxdb-client's async API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from probe.errors import DeliveryRetryable
from probe.http import (
    CLIENT_EXCEPTIONS,
    INTERNAL_ERROR,
    client_error,
    safe_url,
    scrub,
    server_message,
    status_error,
)


class InfluxV2Sink:
    """Writes with InfluxDBClientAsync; the client makes no retries, Delivery does."""

    name: str = "influx-v2"

    def __init__(self, url: str, org: str, bucket: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self._token = token
        self.timeout = timeout
        self._client: Any = None  # InfluxDBClientAsync: must be built inside the running loop
        self._write_api: Any = None
        self._what = f"influx-v2 {safe_url(self.url)} org={org} bucket={bucket}"

    def __repr__(self) -> str:
        return f"InfluxV2Sink({safe_url(self.url)!r}, org={self.org!r}, bucket={self.bucket!r})"

    def _writer(self) -> Any:
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url, token=self._token, org=self.org, timeout=int(self.timeout * 1000)
            )
            self._write_api = self._client.write_api()
        return self._write_api

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        secrets = (self._token,)
        try:
            await self._writer().write(
                bucket=self.bucket, org=self.org, record=list(lines), write_precision=WritePrecision.NS
            )
        except ApiException as exc:
            if exc.status:
                message = server_message(exc.body, secrets)
                raise status_error(int(exc.status), what=self._what, message=message) from None
            # status 0: the client refused to build the request from what we gave it
            reason = scrub(str(exc.reason), secrets)
            raise DeliveryRetryable(f"{self._what}: client refused to send: {reason}",
                                    code=INTERNAL_ERROR) from None
        except CLIENT_EXCEPTIONS as exc:
            raise client_error(exc, what=self._what, secrets=secrets, timeout=self.timeout) from None
        except InfluxDBError as exc:  # no HTTP answer behind it: misuse of the client
            raise DeliveryRetryable(f"{self._what}: client error: {scrub(str(exc.message), secrets)}",
                                    code=INTERNAL_ERROR) from None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._write_api = self._client, None, None
            await client.close()
