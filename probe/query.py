"""One question to one server, with retries, turned into an Observation (the I/O front-end)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from probe.errors import TransportError, Unreachable
from probe.observation import Observation, Outcome
from probe.transport import RawReply, Transport
from probe.wire import MalformedWire, QueryTemplate, parse_reply, plainly_secure

_SERVFAIL = 2


class Throttle(Protocol):
    async def acquire(self) -> None: ...


class InflightLimit:
    """A counting semaphore whose uncontended path is one synchronous call (hot path)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # we were handed a slot we will not use
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot over directly
                return
        self._free += 1


class Querier:
    """Asks with retries; reads only the fixed header of plainly secure replies unless told not to."""

    def __init__(
        self,
        transport: Transport,
        *,
        retries: int,
        clock: Callable[[], float],
        inflight: InflightLimit | None = None,
        full_parse: bool = False,
    ) -> None:
        self.transport = transport
        self.retries = retries
        self.clock = clock
        self.inflight = inflight
        self.full_parse = full_parse

    async def ask(
        self,
        server_name: str,
        host: str,
        port: int,
        tmpl: QueryTemplate,
        *,
        throttle: Throttle | None = None,
        triage: bool = True,
    ) -> Observation:
        first = 0.0
        attempts = 0
        detail = ""
        outcome = Outcome.TIMEOUT
        for _ in range(self.retries + 1):
            if throttle is not None:
                await throttle.acquire()
            attempts += 1
            limit = self.inflight
            if limit is not None and not limit.try_acquire():
                await limit.acquire()
            # Taken after the waits, just before sending: TTLs in the reply count down from here.
            started = self.clock()
            if attempts == 1:
                first = started
            try:
                raw = await self.transport.exchange(host, port, tmpl)
            except Unreachable as exc:
                outcome, detail = Outcome.UNREACHABLE, str(exc)
                break  # no route: retrying cannot help
            except TransportError as exc:
                # Timeouts, ICMP port unreachable (a restarting service) and TCP failures retry.
                outcome, detail = Outcome(exc.code), str(exc)
                continue
            finally:
                if limit is not None:
                    limit.release()
            return self._observe(server_name, host, port, tmpl, started, attempts, raw,
                                 triage and not self.full_parse)
        return Observation(server_name, host, port, tmpl.qname, tmpl.qtype, tmpl.rd, tmpl.cd,
                           first, outcome, attempts=attempts, detail=detail)

    @staticmethod
    def _observe(server_name: str, host: str, port: int, tmpl: QueryTemplate, started: float,
                 attempts: int, raw: RawReply, triage: bool) -> Observation:
        data = raw.data
        rtt_ms = raw.rtt * 1000.0
        if triage and plainly_secure(data, tmpl):  # the transport matched the question
            return Observation(
                server_name, host, port, tmpl.qname, tmpl.qtype, tmpl.rd, tmpl.cd, started,
                Outcome.REPLY, raw.transport, attempts, rtt_ms, 0, (data[2] << 8) | data[3],
                parsed=False,
            )
        try:
            p = parse_reply(data)
        except MalformedWire as exc:
            return Observation(
                server_name, host, port, tmpl.qname, tmpl.qtype, tmpl.rd, tmpl.cd, started,
                Outcome.MALFORMED, raw.transport, attempts, rtt_ms,
                detail=exc.__class__.__name__,
            )
        if p.options_malformed and p.rcode != _SERVFAIL:
            # Lenient option decoding exists to read the EDE of a SERVFAIL; it must never let
            # a reply that dnspython rejects count as an answer (secure, insecure, CD=1 data).
            return Observation(
                server_name, host, port, tmpl.qname, tmpl.qtype, tmpl.rd, tmpl.cd, started,
                Outcome.MALFORMED, raw.transport, attempts, rtt_ms, detail="MalformedOptions",
                nsid=p.nsid,
            )
        return Observation(
            server_name, host, port, tmpl.qname, tmpl.qtype, tmpl.rd, tmpl.cd, started,
            Outcome.REPLY, raw.transport, attempts, rtt_ms, p.rcode, p.flags, p.ede,
            p.answer, p.authority, nsid=p.nsid,
        )
