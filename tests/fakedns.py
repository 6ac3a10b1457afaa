"""Test helper: a tiny scripted DNS server on 127.0.0.1 (UDP and TCP on one ephemeral port).

Each instance runs its own asyncio loop in a background thread, so it serves both async tests
(running on pytest-asyncio's loop) and sync tests that call `asyncio.run` (the CLI). Behaviour is
a callback per transport: it gets a `Request` and returns the reply wire(s) to send, or None to
stay silent; `Request.send` replies later or out of order (e.g. shuffled, or delayed).

Use it only for faults real servers don't make on demand (wrong IDs, silence, truncation, garbage).

For hostile-reply tests: every `Request` records its `peer` (the probe's source address) and
`replies` (each datagram or framed TCP message sent for it, in order, so a test can check what
a verdict was based on); the server thread is named `THREAD_NAME` (so socket hooks can tell the
fake's own sends from the probe's); `make_auth_reply` builds an authoritative server's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

HOST = "127.0.0.1"
THREAD_NAME = "fakedns"  # every FakeDNS serves from a thread of this name


@dataclass(frozen=True)
class RawTcp:
    """A TCP reply item written as-is, without the 2-byte length prefix (to break framing)."""

    data: bytes


Reply = bytes | RawTcp
Handler = Callable[["Request"], Reply | Sequence[Reply] | None]


@dataclass
class Request:
    """One query the fake server received."""

    wire: bytes
    transport: str  # "udp" | "tcp"
    index: int  # 0-based, per transport
    _server: FakeDNS = field(repr=False)
    _send: Callable[[bytes], None] = field(repr=False)
    peer: Any = None  # the sender's socket address (host, port[, ...])
    # Replies sent for this query, in order (RawTcp items are not DNS messages: not recorded).
    replies: list[bytes] = field(default_factory=list, repr=False)

    @property
    def message(self) -> dns.message.Message:
        return dns.message.from_wire(self.wire)

    @property
    def qid(self) -> int:
        return int.from_bytes(self.wire[:2], "big")

    def send(self, data: bytes, *, delay: float = 0.0) -> None:
        """Reply now or after `delay` seconds; callable from any thread."""
        loop = self._server.loop
        if delay > 0:
            loop.call_soon_threadsafe(loop.call_later, delay, self._send, data)
        else:
            loop.call_soon_threadsafe(self._send, data)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        t = self.transport
        assert t is not None

        replies: list[bytes] = []

        def send(reply: bytes) -> None:
            if not t.is_closing():
                t.sendto(reply, addr)
                replies.append(reply)

        srv = self.server
        req = Request(data, "udp", srv.udp_count, srv, send, addr, replies)
        srv.udp_count += 1
        srv.requests.append(req)
        for item in srv.call(srv.udp_handler, req):
            assert isinstance(item, bytes), "RawTcp makes no sense over UDP"
            send(item)


class FakeDNS:
    """Scripted DNS server; use as a context manager. `tcp=None` leaves the TCP port closed."""

    def __init__(self, udp: Handler | None = None, tcp: Handler | None = None, *,
                 host: str = HOST) -> None:
        self.udp_handler = udp or (lambda req: None)
        self.tcp_handler = tcp
        self.host = host
        self.port = 0
        self.udp_count = 0
        self.tcp_count = 0
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=THREAD_NAME)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    # -- handler plumbing ------------------------------------------------------------------

    def call(self, handler: Handler | None, req: Request) -> list[Reply]:
        if handler is None:
            return []
        try:
            out = handler(req)
        except Exception as exc:  # surfaced by stop(), so a broken handler fails the test
            self.errors.append(exc)
            return []
        if out is None:
            return []
        if isinstance(out, bytes | RawTcp):
            return [out]
        return list(out)

    async def _tcp_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._tcp_serve(reader, writer)
        except asyncio.CancelledError:
            pass  # our own teardown; swallowed so asyncio does not log the handler as failed
        finally:
            self._conns.discard(task)

    async def _tcp_serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")

        def sender(replies: list[bytes]) -> Callable[[bytes], None]:
            def send(data: bytes) -> None:
                if not writer.is_closing():
                    writer.write(len(data).to_bytes(2, "big") + data)
                    replies.append(data)
            return send

        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
                replies: list[bytes] = []
                send = sender(replies)
                req = Request(data, "tcp", self.tcp_count, self, send, peer, replies)
                self.tcp_count += 1
                self.requests.append(req)
                for item in self.call(self.tcp_handler, req):
                    if isinstance(item, RawTcp):
                        writer.write(item.data)
                        await writer.drain()
                        writer.close()  # a raw item ends the connection (broken framing)
                        return
                    send(item)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _setup(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _proto = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, 0))
            port = udp.get_extra_info("sockname")[1]
            if self.tcp_handler is None:
                self._udp, self.port = udp, port
                return
            try:
                self._tcp = await asyncio.start_server(self._tcp_conn, self.host, port)
            except OSError:
                udp.close()  # TCP side of this port is taken; try another
                continue
            self._udp, self.port = udp, port
            return
        raise RuntimeError("no port free for both UDP and TCP")

    async def _teardown(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            # Connection handlers still waiting for a next query: end them here, on this loop.
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)

    def start(self) -> FakeDNS:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._setup(), self.loop).result(5)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._teardown(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self.loop.close()
        if self.errors:
            raise AssertionError(f"fake DNS handler failed: {self.errors[0]!r}") from self.errors[0]

    def __enter__(self) -> FakeDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- reply builders ----------------------------------------------------------------------------

def make_reply(
    query: dns.message.Message | bytes,
    *,
    rcode: int = dns.rcode.NOERROR,
    ad: bool = True,
    tc: bool = False,
    answer: Iterable[dns.rrset.RRset] = (),
    authority: Iterable[dns.rrset.RRset] = (),
    ede: Iterable[tuple[int, str | None]] = (),
    edns: bool = True,
    do: bool = False,
) -> bytes:
    """A recursive resolver's reply to `query` (RA set; AD/TC/rcode/EDE as asked)."""
    q = dns.message.from_wire(query) if isinstance(query, bytes) else query
    r = dns.message.make_response(q, recursion_available=True)
    r.set_rcode(dns.rcode.Rcode(rcode))
    if ad:
        r.flags |= dns.flags.AD
    if tc:
        r.flags |= dns.flags.TC
    r.answer.extend(answer)
    r.authority.extend(authority)
    options: list[dns.edns.Option] = [
        dns.edns.EDEOption(dns.edns.EDECode(code), text) for code, text in ede
    ]
    if edns:
        r.use_edns(0, dns.flags.DO if do else 0, 1232, options=options)
    else:
        r.use_edns(False)
    return r.to_wire()


def make_auth_reply(
    query: dns.message.Message | bytes,
    *,
    rcode: int = dns.rcode.NOERROR,
    aa: bool = True,
    answer: Iterable[dns.rrset.RRset] = (),
    authority: Iterable[dns.rrset.RRset] = (),
    additional: Iterable[dns.rrset.RRset] = (),
    edns: bool = True,
    do: bool = True,
) -> bytes:
    """An authoritative server's reply to `query`: AA as asked, no RA, no AD, RD echoed."""
    q = dns.message.from_wire(query) if isinstance(query, bytes) else query
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    r.flags &= ~dns.flags.RA
    if aa:
        r.flags |= dns.flags.AA
    r.answer.extend(answer)
    r.authority.extend(authority)
    r.additional.extend(additional)
    if edns:
        r.use_edns(0, dns.flags.DO if do else 0, 1232)
    else:
        r.use_edns(False)
    return r.to_wire()


def rrset(name: str | dns.name.Name, rdtype: str, *rdatas: str, ttl: int = 300) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas)


def default_answer(q: dns.message.Message) -> list[dns.rrset.RRset]:
    """A plausible answer for the question: PTR, SOA, A or AAAA data (nothing for other types)."""
    question = q.question[0]
    name, rdtype = question.name, question.rdtype
    if rdtype == dns.rdatatype.PTR:
        return [rrset(name, "PTR", "host.example.")]
    if rdtype == dns.rdatatype.SOA:
        return [rrset(name, "SOA", "ns1.example. admin.example. 1 3600 900 604800 300")]
    if rdtype == dns.rdatatype.A:
        return [rrset(name, "A", "192.0.2.1")]
    if rdtype == dns.rdatatype.AAAA:
        return [rrset(name, "AAAA", "2001:db8::1")]
    return []


def with_id(wire: bytes, qid: int) -> bytes:
    return (qid & 0xFFFF).to_bytes(2, "big") + wire[2:]


def with_options(wire: bytes, *options: tuple[int, bytes]) -> bytes:
    """`wire` (ending in an empty OPT, as make_reply builds it) with raw EDNS options appended
    to that OPT, e.g. `(3, b"res1.ams")` for an NSID (RFC 5001); any bytes, even hostile ones."""
    assert wire[-11:-8] == b"\x00\x00\x29" and wire[-2:] == b"\x00\x00", "no empty final OPT"
    rdata = b"".join(code.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
                     for code, data in options)
    return wire[:-2] + len(rdata).to_bytes(2, "big") + rdata


def edns_options(wire: bytes) -> list[tuple[int, bytes]]:
    """The raw EDNS options of a query or reply (dnspython parses, so the OPT must be sane)."""
    msg = dns.message.from_wire(wire)
    return [(int(o.otype), o.to_wire() or b"") for o in msg.options]
