"""Transport: one long-lived connected UDP socket per server, queries multiplexed by ID; TCP on TC=1.

This is the only module that touches sockets; OS and asyncio errors are translated here, once,
into probe.errors. The receive path drains the socket until it is empty and does no parsing
beyond matching ID, QR and question, so one process keeps up with a fast resolver.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from dataclasses import dataclass

from probe.errors import (
    ConnectionFailed,
    PortUnreachable,
    QueryTimeout,
    TcpFailed,
    TransportError,
    Unreachable,
)
from probe.wire import QueryTemplate

# Errors that mean "this host cannot reach that address at all" (no route, no IPv6).
_UNREACHABLE_ERRNOS = frozenset({
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
    errno.ENETDOWN, errno.EHOSTDOWN, errno.EPERM,
})
_TICK = 0.05  # granularity of the timeout sweep; one timer per channel instead of one per query
# Datagrams read per readiness callback: enough to drain bursts, few enough that a flooding
# server cannot keep the event loop (and every other lane) to itself.
_MAX_DRAIN = 256


def _translate(exc: OSError, what: str) -> TransportError:
    name = errno.errorcode.get(exc.errno or 0, "error")
    if exc.errno in _UNREACHABLE_ERRNOS:
        return Unreachable(f"{what}: {name}")
    if exc.errno == errno.ECONNREFUSED:
        # The host answered with ICMP port unreachable: it is there, its DNS service is not.
        return PortUnreachable(f"{what}: port unreachable ({name})")
    return ConnectionFailed(f"{what}: {name}")


@dataclass(frozen=True, slots=True)
class RawReply:
    """The bytes of a matching reply, how long it took and over what."""

    data: bytes
    rtt: float  # seconds
    transport: str  # "udp" | "tcp"


class _IdSource:
    """Unpredictable 16-bit query IDs (RFC 5452 §9.2), drawn from the OS in batches."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def next(self) -> int:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf, pos = os.urandom(4096), 0
        self._pos = pos + 2
        return (self._buf[pos] << 8) | self._buf[pos + 1]


class _Pending:
    __slots__ = ("deadline", "fut", "sent", "tmpl")

    def __init__(self, fut: asyncio.Future[RawReply], tmpl: QueryTemplate, sent: float,
                 deadline: float) -> None:
        self.fut = fut
        self.tmpl = tmpl
        self.sent = sent
        self.deadline = deadline


class UdpChannel:
    """A connected UDP socket to one server (the kernel drops datagrams from other sources)."""

    def __init__(self, host: str, port: int, *, timeout: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._loop = loop
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise _translate(exc, "socket") from None
        try:
            sock.setblocking(False)
            # A large receive buffer keeps bursts of replies from being dropped.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            sock.connect((host, port))
        except OSError as exc:
            sock.close()
            raise _translate(exc, "connect") from None
        self._sock = sock
        self._pending: dict[int, _Pending] = {}
        self._ids = _IdSource()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.stray = 0  # replies for no pending ID (late or spoofed)
        self.mismatched = 0  # right ID, wrong question or not a response
        loop.add_reader(sock.fileno(), self._on_readable)

    def _new_id(self) -> int:
        pending = self._pending
        while True:
            qid = self._ids.next()
            if qid not in pending:
                return qid

    def send(self, tmpl: QueryTemplate) -> asyncio.Future[RawReply]:
        """Send one query; the future resolves to a RawReply or fails with a TransportError."""
        fut: asyncio.Future[RawReply] = self._loop.create_future()
        if self._closed:
            fut.set_exception(ConnectionFailed("channel closed"))
            return fut
        if len(self._pending) >= 60000:
            fut.set_exception(ConnectionFailed("too many queries in flight on one channel"))
            return fut
        qid = self._new_id()
        now = self._loop.time()
        sent = time.perf_counter()  # loop.time() is only millisecond-grained under uvloop
        try:
            self._sock.send(tmpl.with_id(qid))
        except BlockingIOError:
            pass  # like a lost datagram: the timeout and the caller's retry deal with it
        except OSError as exc:
            fut.set_exception(_translate(exc, "send"))
            return fut
        self._pending[qid] = _Pending(fut, tmpl, sent, now + self.timeout)
        if self._timer is None:
            self._timer = self._loop.call_later(_TICK, self._expire)
        return fut

    def _on_readable(self) -> None:
        pending = self._pending
        now = time.perf_counter()
        for _ in range(_MAX_DRAIN):
            try:
                data = self._sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                # ICMP port/host unreachable is reported on a connected socket: nobody serves
                # DNS there, so every query in flight fails the same way.
                err = _translate(exc, "recv")
                for waiting in pending.values():
                    if not waiting.fut.done():
                        waiting.fut.set_exception(err)
                pending.clear()
                return
            if len(data) < 12:
                self.mismatched += 1
                continue
            qid = (data[0] << 8) | data[1]
            p = pending.get(qid)
            if p is None:
                self.stray += 1
                continue
            if not data[2] & 0x80 or not p.tmpl.matches_question(data):
                self.mismatched += 1
                continue
            del pending[qid]
            if not p.fut.done():
                p.fut.set_result(RawReply(data, now - p.sent, "udp"))

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        pending = self._pending
        expired = []
        # Insertion order is send order and the timeout is fixed, so deadlines are ascending.
        for qid, p in pending.items():
            if p.deadline > now:
                break
            expired.append(qid)
        for qid in expired:
            gone = pending.pop(qid)
            if not gone.fut.done():
                gone.fut.set_exception(QueryTimeout(f"no reply within {self.timeout:g}s"))
        if pending:
            self._timer = self._loop.call_later(_TICK, self._expire)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for p in self._pending.values():
            if not p.fut.done():
                p.fut.set_exception(ConnectionFailed("channel closed"))
        self._pending.clear()


async def tcp_exchange(host: str, port: int, tmpl: QueryTemplate, *, timeout: float) -> RawReply:
    """One query over a fresh TCP connection (RFC 7766), used after a truncated UDP reply."""
    qid = int.from_bytes(os.urandom(2), "big")
    wire = tmpl.with_id(qid)
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
                if (
                    len(data) >= 12
                    and (data[0] << 8 | data[1]) == qid
                    and data[2] & 0x80
                    and tmpl.matches_question(data)
                ):
                    return RawReply(data, time.perf_counter() - start, "tcp")
    except TimeoutError:
        raise QueryTimeout(f"no TCP reply within {timeout:g}s") from None
    except asyncio.IncompleteReadError:
        raise TcpFailed("TCP connection closed mid-reply") from None
    except OSError as exc:
        # The server just answered over UDP, so a refused TCP connection is a TCP failure
        # (RFC 7766 requires TCP), not "unreachable".
        raise TcpFailed(f"tcp: {errno.errorcode.get(exc.errno or 0, 'error')}") from None
    finally:
        if writer is not None:
            writer.close()


class Transport:
    """Owns the per-server channels for one sweep or daemon; explicitly created and closed."""

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self._channels: dict[tuple[str, int], UdpChannel] = {}

    def channel(self, host: str, port: int) -> UdpChannel:
        key = (host, port)
        ch = self._channels.get(key)
        if ch is None:
            ch = UdpChannel(host, port, timeout=self.timeout, loop=asyncio.get_running_loop())
            self._channels[key] = ch
        return ch

    async def exchange(self, host: str, port: int, tmpl: QueryTemplate) -> RawReply:
        """One attempt: UDP, then TCP when the UDP reply is truncated."""
        reply = await self.channel(host, port).send(tmpl)
        if reply.data[2] & 0x02:  # TC
            tcp = await tcp_exchange(host, port, tmpl, timeout=self.timeout)
            # Count from the UDP send: TTLs in the reply run from about then.
            return RawReply(tcp.data, reply.rtt + tcp.rtt, "tcp")
        return reply

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
