"""probe.transport and probe.query against a scripted DNS server on 127.0.0.1 (tests/fakedns.py)."""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import random
import select
import socket
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest
from fakedns import HOST, FakeDNS, RawTcp, Request, default_answer, make_reply, rrset, with_id

from probe.errors import ConnectionFailed, PortUnreachable, QueryTimeout, TcpFailed, Unreachable
from probe.observation import EdeObs, Outcome
from probe.query import Querier
from probe.transport import Transport, UdpChannel, tcp_exchange
from probe.wire import make_template

QNAME = "1.2.0.192.in-addr.arpa."
ZONE = "2.0.192.in-addr.arpa."
SOA = "ns1.example. admin.example. 1 3600 900 604800 300"


def secure(req: Request) -> bytes:
    q = req.message
    return make_reply(q, answer=default_answer(q))


def free_port(kind: int = socket.SOCK_DGRAM, host: str = HOST) -> int:
    """A port nothing listens on (bound, read, released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(timeout=2.0)
    yield t
    t.close()


def channel(server: FakeDNS, timeout: float = 2.0) -> UdpChannel:
    return UdpChannel(server.host, server.port, timeout=timeout, loop=asyncio.get_running_loop())


async def wait_for(cond: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- UdpChannel --------------------------------------------------------------------------------

async def test_normal_reply_and_rtt() -> None:
    tmpl = make_template(QNAME, "PTR")
    with FakeDNS(secure) as srv:
        ch = channel(srv)
        try:
            raw = await ch.send(tmpl)
        finally:
            ch.close()
    assert raw.transport == "udp"
    assert 0 < raw.rtt < 2.0
    msg = dns.message.from_wire(raw.data)
    assert msg.answer[0].name.to_text() == QNAME
    # The server saw exactly our template with some ID, and the reply carries that ID back.
    (req,) = srv.requests
    assert req.wire[2:] == tmpl.wire[2:]
    assert msg.id == req.qid
    assert (ch.stray, ch.mismatched, ch.in_flight) == (0, 0, 0)


async def test_rtt_measures_a_delayed_reply() -> None:
    def slow(req: Request) -> None:
        req.send(secure(req), delay=0.3)

    with FakeDNS(slow) as srv:
        ch = channel(srv)
        try:
            raw = await ch.send(make_template(QNAME, "PTR"))
        finally:
            ch.close()
    assert 0.25 <= raw.rtt < 2.0


async def test_wrong_id_and_wrong_question_are_ignored_until_the_right_reply() -> None:
    def tricky(req: Request) -> list[bytes]:
        right = secure(req)
        other_q = dns.message.make_query("9.9.9.9.in-addr.arpa.", "PTR", want_dnssec=True)
        other_q.id = req.qid
        return [
            with_id(right, req.qid ^ 0x5A5A),  # stray: no such ID pending
            make_reply(other_q),  # right ID, other question
            make_reply(make_template(QNAME, "SOA").with_id(req.qid)),  # right ID, other type
            req.wire,  # our own query echoed: QR=0
            b"\x00\x01",  # too short to be DNS
            right,
        ]

    tmpl = make_template(QNAME, "PTR")
    with FakeDNS(tricky) as srv:
        ch = channel(srv)
        try:
            raw = await ch.send(tmpl)
        finally:
            ch.close()
    assert tmpl.matches_question(raw.data)
    msg = dns.message.from_wire(raw.data)
    assert msg.id == srv.requests[0].qid
    assert msg.answer and msg.answer[0].to_text().endswith("PTR host.example.")
    assert ch.stray == 1
    assert ch.mismatched == 4


async def test_silent_server_times_out() -> None:
    timeout = 0.3
    with FakeDNS(lambda req: None) as srv:
        ch = channel(srv, timeout=timeout)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(QueryTimeout):
                await asyncio.wait_for(ch.send(make_template(QNAME, "PTR")), 10)
        finally:
            ch.close()
        elapsed = loop.time() - start
    assert elapsed >= timeout * 0.95
    assert elapsed < timeout + 5
    assert ch.in_flight == 0
    assert len(srv.requests) == 1


async def test_late_reply_after_timeout_counts_as_stray() -> None:
    def late(req: Request) -> None:
        req.send(secure(req), delay=0.6)

    with FakeDNS(late) as srv:
        ch = channel(srv, timeout=0.2)
        try:
            with pytest.raises(QueryTimeout):
                await ch.send(make_template(QNAME, "PTR"))
            await wait_for(lambda: ch.stray == 1)
        finally:
            ch.close()
    assert ch.mismatched == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_nothing_listening_gives_port_unreachable(host: str) -> None:
    """ICMP port unreachable: the host is there, its DNS service is not (a finding, unlike
    'no route', which only says something about this host)."""
    try:
        port = free_port(host=host)
    except OSError:
        pytest.skip(f"no {host} on this host")
    ch = UdpChannel(host, port, timeout=3.0, loop=asyncio.get_running_loop())
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(PortUnreachable, match="ECONNREFUSED"):
            await ch.send(make_template(QNAME, "PTR"))
        # ICMP port unreachable, not the timeout.
        assert loop.time() - start < 2.5
        assert ch.in_flight == 0
    finally:
        ch.close()


@pytest.mark.parametrize(("err", "expected"), [
    (errno.EAFNOSUPPORT, Unreachable),  # no IPv6 on this host
    (errno.ENETUNREACH, Unreachable),
    (errno.EMFILE, ConnectionFailed),
])
async def test_socket_errors_at_setup_are_translated(
    monkeypatch: pytest.MonkeyPatch, err: int, expected: type[Exception]
) -> None:
    class Broken:
        def __init__(self, *args: object) -> None:
            raise OSError(err, "injected")

    # probe.transport calls socket.socket(); the patch lives only for this test.
    monkeypatch.setattr("socket.socket", Broken)
    with pytest.raises(expected) as info:
        UdpChannel(HOST, 53, timeout=1.0, loop=asyncio.get_running_loop())
    assert type(info.value) is expected


async def test_close_fails_pending_and_later_sends() -> None:
    with FakeDNS(lambda req: None) as srv:
        ch = channel(srv, timeout=5.0)
        fut = ch.send(make_template(QNAME, "PTR"))
        await wait_for(lambda: len(srv.requests) == 1)
        ch.close()
        with pytest.raises(ConnectionFailed):
            await fut
        with pytest.raises(ConnectionFailed):
            await ch.send(make_template(QNAME, "PTR"))
        ch.close()  # idempotent


async def test_500_concurrent_queries_are_matched_to_their_futures() -> None:
    n = 500
    held: list[Request] = []

    def hold(req: Request) -> None:
        held.append(req)
        if len(held) == n:
            random.Random(7).shuffle(held)
            for r in held:
                q = r.message
                name = q.question[0].name.to_text()
                r.send(make_reply(q, answer=[rrset(q.question[0].name, "TXT", f'"{name}"')]))

    names = [f"{i}.2.0.192.in-addr.arpa." for i in range(n)]
    templates = [make_template(name, "TXT") for name in names]
    with FakeDNS(hold) as srv:
        ch = channel(srv, timeout=10.0)
        try:
            futures = [ch.send(t) for t in templates]
            assert ch.in_flight == n
            replies = await asyncio.wait_for(asyncio.gather(*futures), 20)
        finally:
            ch.close()
    order = [r.message.question[0].name.to_text() for r in held]
    assert order != names  # really answered out of order
    for name, raw in zip(names, replies, strict=True):
        msg = dns.message.from_wire(raw.data)
        assert msg.question[0].name.to_text() == name
        assert msg.answer[0][0].strings == (name.encode(),)
    assert (ch.stray, ch.mismatched, ch.in_flight) == (0, 0, 0)
    assert len({r.qid for r in srv.requests}) == n  # IDs unique among queries in flight


# -- TCP fallback ------------------------------------------------------------------------------

def _truncated(req: Request) -> bytes:
    return make_reply(req.message, tc=True, ad=False)


def _full_over_tcp(req: Request) -> bytes:
    q = req.message
    big = [rrset(q.question[0].name, "PTR", *(f"host{i}.example." for i in range(40)))]
    return make_reply(q, answer=big)


async def test_truncated_udp_reply_is_retried_over_tcp(transport: Transport) -> None:
    tmpl = make_template(QNAME, "PTR")
    with FakeDNS(_truncated, _full_over_tcp) as srv:
        raw = await transport.exchange(srv.host, srv.port, tmpl)
    assert raw.transport == "tcp"
    msg = dns.message.from_wire(raw.data)
    assert not msg.flags & 0x0200
    assert len(msg.answer[0]) == 40
    assert [r.transport for r in srv.requests] == ["udp", "tcp"]
    tcp_req = srv.requests[1]
    assert tcp_req.wire[2:] == tmpl.wire[2:]


async def test_untruncated_reply_stays_on_udp(transport: Transport) -> None:
    with FakeDNS(secure, _full_over_tcp) as srv:
        raw = await transport.exchange(srv.host, srv.port, make_template(QNAME, "PTR"))
    assert raw.transport == "udp"
    assert [r.transport for r in srv.requests] == ["udp"]


async def test_tcp_skips_replies_with_wrong_id_or_question() -> None:
    def tcp(req: Request) -> list[bytes]:
        right = _full_over_tcp(req)
        return [with_id(right, req.qid ^ 1), make_reply(make_template(ZONE, "PTR").with_id(req.qid)),
                right]

    tmpl = make_template(QNAME, "PTR")
    with FakeDNS(None, tcp) as srv:
        raw = await tcp_exchange(srv.host, srv.port, tmpl, timeout=2.0)
    assert raw.transport == "tcp"
    assert tmpl.matches_question(raw.data)
    assert int.from_bytes(raw.data[:2], "big") == srv.requests[0].qid


async def test_tcp_connection_cut_mid_reply_is_connection_failed() -> None:
    def cut(req: Request) -> RawTcp:
        return RawTcp(b"\x01\x00" + _full_over_tcp(req)[:40])  # says 256 bytes, sends 40

    with FakeDNS(None, cut) as srv, pytest.raises(TcpFailed):
        await tcp_exchange(srv.host, srv.port, make_template(QNAME, "PTR"), timeout=2.0)


async def test_silent_tcp_server_times_out() -> None:
    with FakeDNS(None, lambda req: None) as srv, pytest.raises(QueryTimeout):
        await tcp_exchange(srv.host, srv.port, make_template(QNAME, "PTR"), timeout=0.3)


async def test_tcp_refused_after_truncated_udp_reply_is_tcp_failure(transport: Transport) -> None:
    # tcp=None: nothing listens on TCP at that port. The server answered over UDP, so this is a
    # TCP failure (a warning), not "unreachable" (which would not count as a finding).
    with FakeDNS(_truncated, None) as srv, pytest.raises(TcpFailed):
        await transport.exchange(srv.host, srv.port, make_template(QNAME, "PTR"))


# -- Querier -----------------------------------------------------------------------------------

def querier(timeout: float = 2.0, retries: int = 0, *, full_parse: bool = False) -> Querier:
    return Querier(Transport(timeout=timeout), retries=retries, clock=time.time,
                   full_parse=full_parse)


async def test_querier_retries_after_a_timeout() -> None:
    def drop_first(req: Request) -> bytes | None:
        return None if req.index == 0 else secure(req)

    q = querier(timeout=0.3, retries=2)
    try:
        with FakeDNS(drop_first) as srv:
            before = time.time()
            obs = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.REPLY
    assert obs.attempts == 2
    assert len(srv.requests) == 2
    assert obs.ad and obs.rcode == 0
    assert before <= obs.started <= time.time()
    assert obs.rtt_ms is not None and obs.rtt_ms < 300  # RTT of the answered attempt only


async def test_querier_gives_up_after_all_retries() -> None:
    q = querier(timeout=0.2, retries=2)
    try:
        with FakeDNS(lambda req: None) as srv:
            obs = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.TIMEOUT
    assert obs.attempts == 3
    assert len(srv.requests) == 3
    assert obs.rcode is None and obs.rtt_ms is None
    assert "no reply" in obs.detail


async def test_querier_retries_a_closed_port_then_reports_it() -> None:
    q = querier(timeout=3.0, retries=2)
    try:
        obs = await q.ask("nobody", HOST, free_port(), make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.PORT_UNREACHABLE  # a restarting service gets its retries
    assert obs.attempts == 3


async def test_querier_no_route_does_not_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_route(self: socket.socket, addr: object) -> None:
        raise OSError(errno.ENETUNREACH, "injected")

    # A host without a route (e.g. no IPv6) is a fault loopback cannot produce: inject it.
    monkeypatch.setattr(socket.socket, "connect", no_route)
    q = querier(timeout=3.0, retries=2)
    try:
        obs = await q.ask("nobody", HOST, 53, make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.UNREACHABLE
    assert obs.attempts == 1


async def test_started_is_taken_after_the_rate_limit_wait() -> None:
    """TTLs count down from the send; queueing behind the throttle must not shift that."""
    from probe.engine import make_throttle

    received: list[float] = []

    def stamp(req: Request) -> bytes:
        received.append(time.time())
        return secure(req)

    throttle = make_throttle(2.0)  # one query per 0.5 s
    q = querier(timeout=3.0, retries=0)
    with FakeDNS(stamp) as srv:
        try:
            obs = await asyncio.gather(*(
                q.ask("r", srv.host, srv.port, make_template(QNAME, "PTR"), throttle=throttle)
                for _ in range(3)))
        finally:
            q.transport.close()
    assert len(received) == 3
    for o, at in zip(sorted(obs, key=lambda o: o.started), sorted(received), strict=True):
        assert abs(o.started - at) < 0.2, (o.started, at)


async def test_querier_turns_matching_garbage_into_malformed() -> None:
    def garbage(req: Request) -> bytes:
        # Our header with QR, one answer claimed, the exact question, then junk.
        question = req.wire[12:len(req.wire) - 11]  # drop the query's (empty) OPT RR
        header = req.wire[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
        return header + question + b"\xc0\x0c\x00\x0c\x00\x01\x00\x00\x01\x2c\x00\x40junk"

    q = querier()
    tmpl = make_template(QNAME, "PTR")
    try:
        with FakeDNS(garbage) as srv:
            obs = await q.ask("fake", srv.host, srv.port, tmpl)
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.MALFORMED
    assert obs.attempts == 1
    assert obs.rtt_ms is not None
    assert obs.detail  # the dnspython exception's name


async def test_querier_reads_only_the_header_of_a_plainly_secure_reply() -> None:
    q = querier()
    tmpl = make_template(QNAME, "PTR")
    try:
        with FakeDNS(secure) as srv:
            obs = await q.ask("fake", srv.host, srv.port, tmpl)
            full = await q.ask("fake", srv.host, srv.port, tmpl, triage=False)
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.REPLY
    assert obs.parsed is False
    assert obs.rcode == 0 and obs.ad
    assert obs.answer == ()
    assert (obs.server_name, obs.address, obs.port) == ("fake", srv.host, srv.port)
    assert (obs.qname, obs.qtype, obs.rd, obs.cd) == (QNAME, "PTR", True, False)
    assert obs.transport == "udp"
    # triage=False parses the same reply fully and sees the same header.
    assert full.parsed is True
    assert full.flags == obs.flags
    assert [r.rdtype for r in full.answer] == ["PTR"]


async def test_querier_full_parse_option_parses_secure_replies() -> None:
    q = querier(full_parse=True)
    try:
        with FakeDNS(secure) as srv:
            obs = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.parsed is True
    assert obs.answer[0].rdatas == ("host.example.",)


async def test_querier_parses_servfail_with_ede_fully() -> None:
    def bogus(req: Request) -> bytes:
        return make_reply(req.message, rcode=dns.rcode.SERVFAIL, ad=False,
                          authority=[rrset(ZONE, "SOA", SOA)], ede=[(6, "signature invalid")])

    q = querier()
    try:
        with FakeDNS(bogus) as srv:
            obs = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"))
    finally:
        q.transport.close()
    assert obs.outcome is Outcome.REPLY
    assert obs.parsed is True
    assert obs.rcode == dns.rcode.SERVFAIL
    assert not obs.ad
    assert obs.ede == (EdeObs(6, "signature invalid"),)
    assert obs.answer == ()
    assert [(r.name, r.rdtype, r.rdatas) for r in obs.authority] == [(ZONE, "SOA", (SOA,))]


async def test_querier_reports_tcp_after_truncation() -> None:
    q = querier()
    try:
        with FakeDNS(_truncated, _full_over_tcp) as srv:
            obs = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"))
            full = await q.ask("fake", srv.host, srv.port, make_template(QNAME, "PTR"),
                               triage=False)
    finally:
        q.transport.close()
    for o in (obs, full):
        assert o.outcome is Outcome.REPLY
        assert o.transport == "tcp"
        assert o.attempts == 1
        assert o.ad and not o.tc  # the flags of the TCP reply, not of the truncated one
    assert obs.parsed is False
    assert len(full.answer[0].rdatas) == 40


# -- source-port rotation (RFC 5452 §9.2) ------------------------------------------------------

class PortRecorder(asyncio.DatagramProtocol):
    """A loopback DNS server on the test's own loop that records each query's source port
    (fakedns's Request does not expose the peer). With `hold`, replies wait until that many
    queries arrived, then go out shuffled; `silent` query indexes get no reply."""

    def __init__(self, hold: int = 0, silent: frozenset[int] = frozenset()) -> None:
        self.hold = hold
        self.silent = silent
        self.seen: list[tuple[int, bytes]] = []  # (source port, query wire)
        self.held: list[tuple[tuple[str, int], bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Bursts of hundreds of queries overflow the default buffer (as in fakedns).
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        index = len(self.seen)
        self.seen.append((addr[1], data))
        if index in self.silent:
            return
        self.held.append((addr, secure_wire(data)))
        if len(self.held) >= self.hold:
            random.Random(5).shuffle(self.held)
            for to, reply in self.held:
                assert self.transport is not None
                self.transport.sendto(reply, to)
            self.held.clear()

    @property
    def ports(self) -> list[int]:
        return [p for p, _ in self.seen]


def secure_wire(query: bytes) -> bytes:
    q = dns.message.from_wire(query)
    return make_reply(q, answer=default_answer(q))


async def recorder(hold: int = 0, silent: frozenset[int] = frozenset()
                   ) -> tuple[PortRecorder, asyncio.DatagramTransport, int]:
    proto = PortRecorder(hold, silent)
    t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: proto, local_addr=(HOST, 0))
    return proto, t, int(t.get_extra_info("sockname")[1])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_queries_to_one_server_leave_from_a_random_pool_of_ports() -> None:
    srv, t, port = await recorder()
    ch = UdpChannel(HOST, port, timeout=5.0, loop=asyncio.get_running_loop(), pool_size=4,
                    rotate_queries=10**6)
    try:
        for _ in range(400):
            await ch.send(make_template(QNAME, "PTR"))
    finally:
        ch.close()
        t.close()
    counts = sorted(collections.Counter(srv.ports).values())
    # Four sockets, each picked at random per query (binomial 400 x 1/4: 100 +- 9 each).
    assert len(counts) == 4
    assert counts[0] >= 40


async def test_sockets_are_replaced_after_n_queries() -> None:
    srv, t, port = await recorder()
    ch = UdpChannel(HOST, port, timeout=5.0, loop=asyncio.get_running_loop(), pool_size=2,
                    rotate_queries=10)
    try:
        for _ in range(200):
            await ch.send(make_template(QNAME, "PTR"))
        assert ch.open_sockets <= 2
    finally:
        ch.close()
        t.close()
    assert ch.sockets_opened >= 20  # each socket carries at most 10 queries
    assert len(set(srv.ports)) >= 10  # kernel-chosen random ports (a reuse now and then is fine)
    assert (ch.stray, ch.mismatched) == (0, 0)


async def test_sockets_are_replaced_after_t_seconds() -> None:
    srv, t, port = await recorder()
    ch = UdpChannel(HOST, port, timeout=5.0, loop=asyncio.get_running_loop(), pool_size=1,
                    rotate_queries=10**6, rotate_seconds=0.2)
    try:
        await ch.send(make_template(QNAME, "PTR"))
        await ch.send(make_template(QNAME, "PTR"))
        await asyncio.sleep(0.3)
        await ch.send(make_template(QNAME, "PTR"))
    finally:
        ch.close()
        t.close()
    assert ch.sockets_opened == 2
    assert srv.ports[0] == srv.ports[1] != srv.ports[2]


async def test_replies_on_retired_sockets_still_complete_then_they_close() -> None:
    n = 30
    baseline = open_fds()
    srv, t, port = await recorder(hold=n)  # every reply waits until all 30 were sent
    ch = UdpChannel(HOST, port, timeout=10.0, loop=asyncio.get_running_loop(), pool_size=2,
                    rotate_queries=3)
    names = [f"{i}.2.0.192.in-addr.arpa." for i in range(n)]
    try:
        futures = [ch.send(make_template(name, "PTR")) for name in names]
        # All 30 in flight on at least 10 sockets, most of them retired already and still open.
        assert ch.in_flight == n and ch.open_sockets >= 10
        replies = await asyncio.wait_for(asyncio.gather(*futures), 20)
        # Each retired socket closed after its last reply; only the pool is left.
        assert ch.open_sockets <= 2
        assert open_fds() <= baseline + 1 + 2  # the recorder's socket and the pool
    finally:
        ch.close()
        t.close()
    for name, raw in zip(names, replies, strict=True):
        assert dns.message.from_wire(raw.data).question[0].name.to_text() == name
    assert (ch.stray, ch.mismatched, ch.in_flight) == (0, 0, 0)
    assert len(set(srv.ports)) >= 10
    await asyncio.sleep(0)  # let the recorder's transport finish closing
    assert open_fds() == baseline


async def test_retired_socket_closes_after_its_last_query_times_out() -> None:
    baseline = open_fds()
    srv, t, port = await recorder(silent=frozenset({0, 1}))  # the first socket's queries
    ch = UdpChannel(HOST, port, timeout=0.2, loop=asyncio.get_running_loop(), pool_size=1,
                    rotate_queries=2)
    try:
        lost = [ch.send(make_template(QNAME, "PTR")) for _ in range(2)]  # retires socket 1
        answered = await ch.send(make_template(QNAME, "PTR"))
        assert answered.transport == "udp"
        assert ch.open_sockets == 2  # socket 1 waits for its two queries
        for fut in lost:
            with pytest.raises(QueryTimeout):
                await asyncio.wait_for(fut, 10)
        assert ch.open_sockets == 1
    finally:
        ch.close()
        t.close()
    assert srv.ports[0] == srv.ports[1] != srv.ports[2]
    await asyncio.sleep(0)
    assert open_fds() == baseline


async def test_reply_sent_to_another_socket_of_the_pool_is_stray() -> None:
    """A reply counts only on the port its query left from: the port is part of the match."""
    tmpl = make_template(QNAME, "PTR")
    loop = asyncio.get_running_loop()
    srv, t, port = await recorder(hold=10**6)  # holds everything; the test replies by hand
    ch = UdpChannel(HOST, port, timeout=5.0, loop=loop, pool_size=4, rotate_queries=10**6)
    try:
        futures = [ch.send(tmpl) for _ in range(40)]
        await wait_for(lambda: len(srv.seen) == 40)
        (p1, q1), other = srv.seen[0], next(p for p, _ in srv.seen if p != srv.seen[0][0])
        t.sendto(secure_wire(q1), (HOST, other))  # right ID and question, wrong port
        await wait_for(lambda: ch.stray == 1)
        assert not futures[0].done()
        t.sendto(secure_wire(q1), (HOST, p1))
        raw = await asyncio.wait_for(futures[0], 5)
        assert int.from_bytes(raw.data[:2], "big") == int.from_bytes(q1[:2], "big")
    finally:
        ch.close()
        t.close()
    assert len({qid for qid in (int.from_bytes(w[:2], "big") for _, w in srv.seen)}) == 40


async def test_closing_a_transport_leaks_no_descriptor() -> None:
    baseline = open_fds()
    srv, t, port = await recorder(silent=frozenset(range(0, 300, 7)))
    tr = Transport(timeout=1.0, pool_size=4, rotate_queries=5)
    try:
        results = await asyncio.gather(
            *(tr.exchange(HOST, port, make_template(QNAME, "PTR")) for _ in range(300)),
            return_exceptions=True)
    finally:
        tr.close()
        t.close()
    assert len(srv.seen) == 300
    # Some retired sockets closed on a timeout, the others on their last reply.
    assert sum(isinstance(r, QueryTimeout) for r in results) >= len(range(0, 300, 7))
    await asyncio.sleep(0)
    assert open_fds() == baseline


async def test_port_unreachable_fails_queries_on_every_socket_of_the_pool() -> None:
    """One ICMP error is enough (they can be rate-limited): nobody serves DNS at that port."""
    ch = UdpChannel(HOST, free_port(), timeout=5.0, loop=asyncio.get_running_loop(),
                    pool_size=4, rotate_queries=10**6)
    try:
        futures = [ch.send(make_template(f"{i}.2.0.192.in-addr.arpa.", "PTR"))
                   for i in range(12)]
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        assert ch.sockets_opened == 4
    finally:
        ch.close()
    assert all(isinstance(r, PortUnreachable) for r in results), results
    assert ch.in_flight == 0


async def test_queries_queued_in_one_turn_of_the_loop_leave_together_at_its_end() -> None:
    """The Outbox: a send() that wakes a sleeping resolver is costly, queries back to back are
    not; every query asked in one turn leaves in one burst after it, and the RTT counts from
    the burst."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((HOST, 0))
    server.setblocking(False)
    tr = Transport(timeout=2.0)
    try:
        ch = tr.channel(HOST, server.getsockname()[1])
        futures = [ch.send(make_template(f"{i}.2.0.192.in-addr.arpa.", "PTR")) for i in range(5)]
        with pytest.raises(BlockingIOError):
            server.recv(512)  # nothing sent yet: still this turn
        await asyncio.sleep(0)  # the flush runs in the next turn
        got = []
        for _ in range(5):
            data, peer = server.recvfrom(512)
            got.append(dns.message.from_wire(data).question[0].name.to_text())
        assert got == [f"{i}.2.0.192.in-addr.arpa." for i in range(5)]  # in order
        start = time.perf_counter()
        await asyncio.sleep(0.05)
        q = dns.message.from_wire(data)
        reply = make_reply(q, answer=default_answer(q))
        server.sendto(reply, peer)
        raw = await futures[-1]
        # From the burst (about `start`), not from an earlier clock.
        assert raw.rtt >= time.perf_counter() - start - 0.01
        assert raw.rtt < 1.0
    finally:
        tr.close()
        server.close()


async def test_a_send_that_fails_at_the_end_of_the_turn_fails_its_query(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors of the deferred send reach the query's future, translated, and an ICMP error
    reported on send fails the channel's other queries too."""
    failed: list[Exception] = []
    real = UdpChannel._send_failed

    def spy(self: UdpChannel, qid: int, p: object, err: Exception) -> None:
        failed.append(err)
        real(self, qid, p, err)  # type: ignore[arg-type]
    monkeypatch.setattr(UdpChannel, "_send_failed", spy)
    ch = UdpChannel(HOST, free_port(), timeout=5.0, loop=asyncio.get_running_loop(),
                    pool_size=1, rotate_queries=10**6)
    try:
        first = ch.send(make_template(QNAME, "PTR"))
        with pytest.raises(PortUnreachable):
            await asyncio.wait_for(first, 5)  # ICMP error on receive
        # The kernel keeps a second ICMP error for the next send on the socket: provoke one.
        more = [ch.send(make_template(QNAME, "PTR")) for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*more, return_exceptions=True), 10)
        assert all(isinstance(r, PortUnreachable) for r in results), results
        assert ch.in_flight == 0
        # On loopback the ICMP error of the first of the three is reported by the next send.
        assert failed and all(isinstance(e, PortUnreachable) for e in failed)
    finally:
        ch.close()


async def test_a_reply_before_its_query_left_is_stray_not_an_answer() -> None:
    """Queued in the Outbox, the query has not been sent: a datagram with its ID (a late reply
    to an earlier attempt that drew the same ID) is not its answer, and no RTT is made up."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((HOST, 0))
    server.settimeout(3.0)
    ch = UdpChannel(HOST, server.getsockname()[1], timeout=2.0,
                    loop=asyncio.get_running_loop(), pool_size=1)
    try:
        tmpl = make_template(QNAME, "PTR")
        fut = ch.send(tmpl)
        (qid,) = list(ch._pending)
        early = dns.message.from_wire(tmpl.with_id(qid))
        s = ch._pool[0]
        server.sendto(make_reply(early, answer=default_answer(early)), s.sock.getsockname())
        # Waited for without yielding to the loop: this turn's flush has not run yet.
        assert select.select([s.sock], [], [], 2.0)[0]
        ch._on_readable(s)
        assert not fut.done() and ch.stray == 1
        await asyncio.sleep(0)  # the flush
        data, peer = server.recvfrom(512)  # the query itself
        q = dns.message.from_wire(data)
        server.sendto(make_reply(q, answer=default_answer(q)), peer)
        raw = await asyncio.wait_for(fut, 3)
        assert 0 <= raw.rtt < 1.0
    finally:
        ch.close()
        server.close()

