"""Transport: a rotating pool of connected UDP sockets per server, queries multiplexed by ID; TCP on TC=1.

This is the only module that touches sockets; OS and asyncio errors are translated here, once,
into probe.errors. The receive path drains a socket until it is empty and does no parsing
beyond matching ID, QR and question, so one process keeps up with a fast resolver.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from typing import NamedTuple

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
# Source-port rotation (RFC 5452 §9.2): the ID alone is 16 bits of entropy against off-path
# spoofing; a few sockets per server, each on a kernel-chosen random port and replaced after
# a number of queries or an age, add the port's bits without a socket per query.
POOL_SIZE = 4
ROTATE_QUERIES = 100
ROTATE_SECONDS = 60.0
# Datagrams sent to one server per turn of the loop (Outbox): a burst must fit the server's
# receive buffer (Linux default ~208 KB, ~1 KB per small datagram), or it drops queries.
_BURST = 32
_MAX_IN_FLIGHT = 60000  # IDs are unique per channel: leave room to draw a free one


def _translate(exc: OSError, what: str) -> TransportError:
    name = errno.errorcode.get(exc.errno or 0, "error")
    if exc.errno in _UNREACHABLE_ERRNOS:
        return Unreachable(f"{what}: {name}")
    if exc.errno == errno.ECONNREFUSED:
        # The host answered with ICMP port unreachable: it is there, its DNS service is not.
        return PortUnreachable(f"{what}: port unreachable ({name})")
    return ConnectionFailed(f"{what}: {name}")


class RawReply(NamedTuple):
    """The bytes of a matching reply, how long it took and over what (a NamedTuple: one per
    query, built faster than a frozen dataclass)."""

    data: bytes
    rtt: float  # seconds
    transport: str  # "udp" | "tcp"


class _IdSource:
    """Unpredictable 16-bit values (query IDs, RFC 5452 §9.2), drawn from the OS in batches."""

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


class _Socket:
    """One connected UDP socket of a channel's pool."""

    __slots__ = ("inflight", "retire_at", "retired", "sent", "sock")

    def __init__(self, sock: socket.socket, retire_at: float) -> None:
        self.sock = sock
        self.inflight = 0  # queries sent on it and not yet answered, failed or expired
        self.sent = 0
        self.retire_at = retire_at  # loop time after which it takes no new queries
        self.retired = False


class _Pending:
    __slots__ = ("deadline", "fut", "sent", "sock", "tmpl")

    def __init__(self, fut: asyncio.Future[RawReply], tmpl: QueryTemplate, sent: float,
                 deadline: float, sock: _Socket) -> None:
        self.fut = fut
        self.tmpl = tmpl
        self.sent = sent
        self.deadline = deadline
        self.sock = sock


class Outbox:
    """Datagrams queued during one turn of the event loop, sent together at its end.

    A send() that wakes a sleeping resolver costs the sender ~15-30 us of kernel time on
    loopback (measured: 11k q/s one query per wake-up, 290k q/s in bursts of 4 or more, from
    the same Python loop); queries sent back to back find it awake. Every worker that a batch
    of replies woke queues its next query here, and one callback sends them all.
    """

    __slots__ = ("_loop", "_queue", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: list[tuple[UdpChannel, _Pending, int, bytes]] = []
        self._scheduled = False

    def put(self, ch: UdpChannel, p: _Pending, qid: int, wire: bytes) -> None:
        self._queue.append((ch, p, qid, wire))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        queue, self._queue = self._queue, []
        self._scheduled = False
        burst: dict[UdpChannel, int] = {}
        later: list[tuple[UdpChannel, _Pending, int, bytes]] = []
        perf_counter = time.perf_counter
        for item in queue:
            ch, p, qid, wire = item
            if ch._pending.get(qid) is not p:
                continue  # failed, expired or closed meanwhile (its ID may be reused since)
            n = burst.get(ch, 0)
            if n >= _BURST:
                later.append(item)  # next turn: the server drains its socket meanwhile
                continue
            burst[ch] = n + 1
            # Each its own: the RTT must not include the sends before it in the burst.
            # (loop.time() is only millisecond-grained under uvloop.)
            p.sent = perf_counter()
            try:
                p.sock.sock.send(wire)
            except BlockingIOError:
                pass  # like a lost datagram: the timeout and the caller's retry deal with it
            except OSError as exc:
                ch._send_failed(qid, p, _translate(exc, "send"))
        if later:
            self._queue[:0] = later  # before anything queued meanwhile: order kept
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self.flush)


class UdpChannel:
    """Connected UDP sockets to one server (the kernel drops datagrams from other sources).

    Each query goes out on a socket picked at random from a pool of up to `pool_size`; a
    socket is retired after `rotate_queries` queries or `rotate_seconds`, whichever comes
    first, and closed once its last query is answered or timed out. IDs are unique across the
    channel, and a reply counts only on the socket its query left from.
    """

    def __init__(self, host: str, port: int, *, timeout: float,
                 loop: asyncio.AbstractEventLoop, pool_size: int = POOL_SIZE,
                 rotate_queries: int = ROTATE_QUERIES,
                 rotate_seconds: float = ROTATE_SECONDS, outbox: Outbox | None = None) -> None:
        if pool_size < 1 or rotate_queries < 1 or not rotate_seconds > 0:
            raise ValueError("pool_size and rotate_queries must be >= 1, rotate_seconds > 0")
        self.host = host
        self.port = port
        self.timeout = timeout
        self._loop = loop
        self._outbox = outbox if outbox is not None else Outbox(loop)
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._pool_size = pool_size
        self._rotate_queries = rotate_queries
        self._rotate_seconds = rotate_seconds
        self._pending: dict[int, _Pending] = {}
        self._ids = _IdSource()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._retired: set[_Socket] = set()  # out of the pool, waiting for their last replies
        self.stray = 0  # replies for no pending ID on that socket (late or spoofed)
        self.mismatched = 0  # right ID, wrong question or not a response
        self.sockets_opened = 0
        # The first socket now: no route or no address family shows at once, before any send.
        self._pool: list[_Socket] = [self._open(loop.time())]

    def _open(self, now: float) -> _Socket:
        try:
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise _translate(exc, "socket") from None
        try:
            sock.setblocking(False)
            # A large receive buffer keeps bursts of replies from being dropped.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            # connect() binds an unbound socket to a random ephemeral port (kernel's choice).
            sock.connect((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise _translate(exc, "connect") from None
        s = _Socket(sock, now + self._rotate_seconds)
        self._loop.add_reader(sock.fileno(), self._on_readable, s)
        self.sockets_opened += 1
        return s

    def _close_socket(self, s: _Socket) -> None:
        self._loop.remove_reader(s.sock.fileno())
        s.sock.close()

    def _retire(self, s: _Socket) -> None:
        self._pool.remove(s)
        s.retired = True
        if s.inflight:
            self._retired.add(s)  # its replies may still arrive; closed after the last
        else:
            self._close_socket(s)

    def _finished(self, s: _Socket) -> None:
        """One query on `s` is over; close a retired socket after its last one."""
        s.inflight -= 1
        if s.retired and not s.inflight:
            self._retired.remove(s)
            self._close_socket(s)

    def _pick(self, now: float) -> _Socket:
        pool = self._pool
        while True:
            if pool and not pool[-1].sent:
                return pool[-1]  # the newest socket, not used yet
            if len(pool) < self._pool_size:
                try:
                    s = self._open(now)
                except TransportError:
                    if not pool:
                        raise
                    # Out of descriptors or similar: keep using the sockets we have.
                    s = pool[self._ids.next() % len(pool)]
                    return s
                pool.append(s)
                return s
            s = pool[self._ids.next() % len(pool)]
            if now < s.retire_at:
                return s
            self._retire(s)

    def send(self, tmpl: QueryTemplate) -> asyncio.Future[RawReply]:
        """Send one query; the future resolves to a RawReply or fails with a TransportError."""
        loop = self._loop
        fut: asyncio.Future[RawReply] = loop.create_future()
        if self._closed:
            fut.set_exception(ConnectionFailed("channel closed"))
            return fut
        pending = self._pending
        if len(pending) >= _MAX_IN_FLIGHT:
            fut.set_exception(ConnectionFailed("too many queries in flight on one channel"))
            return fut
        now = loop.time()
        ids = self._ids
        pool = self._pool
        # Hot path: a full pool and a socket young enough; else _pick grows or rotates it.
        s: _Socket | None = None
        if len(pool) == self._pool_size:
            s = pool[ids.next() % len(pool)]
            if now >= s.retire_at:
                self._retire(s)
                s = None
        if s is None:
            try:
                s = self._pick(now)
            except TransportError as exc:
                fut.set_exception(exc)
                return fut
        qid = ids.next()
        while qid in pending:  # unique across the channel's sockets
            qid = ids.next()
        # Sent at the end of this turn of the loop, with the others queued in it (Outbox);
        # sent=0.0 until then: no reply can be for it before.
        p = pending[qid] = _Pending(fut, tmpl, 0.0, now + self.timeout, s)
        self._outbox.put(self, p, qid, tmpl.with_id(qid))
        s.inflight += 1
        s.sent += 1
        if s.sent >= self._rotate_queries:
            self._retire(s)
        if self._timer is None:
            self._timer = loop.call_later(_TICK, self._expire)
        return fut

    def _send_failed(self, qid: int, p: _Pending, err: TransportError) -> None:
        del self._pending[qid]
        if not p.fut.done():
            p.fut.set_exception(err)
        self._finished(p.sock)
        if isinstance(err, Unreachable | PortUnreachable):
            # An ICMP error for an earlier query, reported here instead of on receive:
            # the queries still in flight went to the same dead port or host.
            self._fail_all(err)

    def _on_readable(self, s: _Socket) -> None:
        pending = self._pending
        sock = s.sock
        now = time.perf_counter()
        for _ in range(_MAX_DRAIN):
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                # ICMP port/host unreachable is reported on a connected socket: nobody serves
                # DNS there, so every query in flight to that server fails the same way, on
                # every socket of the pool (ICMP errors can be rate-limited: one is enough).
                self._fail_all(_translate(exc, "recv"))
                return
            if len(data) < 12:
                self.mismatched += 1
                continue
            qid = (data[0] << 8) | data[1]
            p = pending.get(qid)
            if p is None or p.sock is not s or not p.sent:
                self.stray += 1  # not pending there, or not even sent yet (a late reply)
                continue
            if not data[2] & 0x80 or not p.tmpl.matches_question(data):
                self.mismatched += 1
                continue
            del pending[qid]
            if not p.fut.done():
                p.fut.set_result(RawReply(data, now - p.sent, "udp"))
            s.inflight -= 1
            if s.retired and not s.inflight:
                self._retired.remove(s)
                self._close_socket(s)
                return  # closed: nothing more to read from it

    def _fail_all(self, err: TransportError) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        for waiting in pending:
            if not waiting.fut.done():
                waiting.fut.set_exception(err)
            self._finished(waiting.sock)

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
            self._finished(gone.sock)
        if pending:
            self._timer = self._loop.call_later(_TICK, self._expire)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def open_sockets(self) -> int:
        """Sockets still open: the pool and retired ones waiting for their last replies."""
        return 0 if self._closed else len(self._pool) + len(self._retired)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for s in (*self._pool, *self._retired):
            self._close_socket(s)
        self._pool.clear()
        self._retired.clear()
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

    def __init__(self, *, timeout: float, pool_size: int = POOL_SIZE,
                 rotate_queries: int = ROTATE_QUERIES,
                 rotate_seconds: float = ROTATE_SECONDS) -> None:
        self.timeout = timeout
        self.pool_size = pool_size
        self.rotate_queries = rotate_queries
        self.rotate_seconds = rotate_seconds
        self._channels: dict[tuple[str, int], UdpChannel] = {}
        self._outbox: Outbox | None = None  # one for all channels: one flush per loop turn

    def channel(self, host: str, port: int) -> UdpChannel:
        key = (host, port)
        ch = self._channels.get(key)
        if ch is None:
            loop = asyncio.get_running_loop()
            if self._outbox is None:
                self._outbox = Outbox(loop)
            ch = UdpChannel(host, port, timeout=self.timeout, loop=loop,
                            pool_size=self.pool_size, rotate_queries=self.rotate_queries,
                            rotate_seconds=self.rotate_seconds, outbox=self._outbox)
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
