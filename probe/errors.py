"""The project's own small exception tree; library exceptions are translated into it once, at the edges."""

from __future__ import annotations


class ProbeError(Exception):
    """Base of every error dnssec-probe raises on purpose."""


class ConfigError(ProbeError):
    """Bad input (zones file, resolver list, option); carries file:line when there is one."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")


class TransportError(ProbeError):
    """A query could not be completed. `code` is a stable reason code (see probe.codes)."""

    code = "transport-error"


class QueryTimeout(TransportError):
    """No acceptable reply arrived before the deadline."""

    code = "timeout"


class Unreachable(TransportError):
    """The server cannot be reached from this host (no route, no IPv6, ICMP port unreachable)."""

    code = "unreachable"


class ConnectionFailed(TransportError):
    """A socket could not be set up or used (other than no route, see Unreachable)."""

    code = "io-error"


class PortUnreachable(ConnectionFailed):
    """ICMP port unreachable: the host is up but nothing serves DNS on that port."""

    code = "port-unreachable"


class TcpFailed(ConnectionFailed):
    """The TCP retry after a truncated UDP reply failed or was cut (RFC 7766)."""

    code = "tcp-failed"


class DeliveryError(ProbeError):
    """Points or an alert could not be delivered. `code` is a stable label for metrics and logs;
    the message is for people (it may quote the server) and never becomes a tag."""

    code = "delivery-failed"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.status = status  # HTTP status when there was one


class DeliveryRetryable(DeliveryError):
    """Worth trying again later: connection refused, timeout, HTTP 5xx or 429."""


class DeliveryRejected(DeliveryError):
    """The server refused the data itself (HTTP 4xx other than 429): keep it aside, never retry."""
