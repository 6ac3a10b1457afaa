"""InfluxDB 2.x sink (also VictoriaMetrics' /api/v2/write) through influxdb-client's async API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from probe.errors import DeliveryRetryable
from probe.sinks.influx_v1 import client_failure, http_failure, safe_url, scrub, server_message


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
        try:
            await self._writer().write(
                bucket=self.bucket, org=self.org, record=list(lines), write_precision=WritePrecision.NS
            )
        except ApiException as exc:
            if not exc.status:  # status 0: the client refused to build the request
                raise DeliveryRetryable(
                    f"{self._what}: client error: {scrub(str(exc.reason), self._token)}", code="client-error"
                ) from None
            message = scrub(server_message(exc.body), self._token)
            raise http_failure(int(exc.status), message, what=self._what) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise client_failure(exc, what=self._what, secrets=(self._token,)) from None
        except InfluxDBError as exc:
            raise DeliveryRetryable(
                f"{self._what}: client error: {scrub(str(exc.message), self._token)}", code="client-error"
            ) from None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._write_api = self._client, None, None
            await client.close()
