"""Follow-up questions for a failed check: what the resolver caches, what the source serves.

Only I/O lives here; probe.diagnose decides. Authoritative evidence and server discovery are
shared by every resolver within one sweep, so a broken zone costs its servers a few queries,
not a few per resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from probe.diagnose import AuthEvidence, Evidence
from probe.observation import Observation, Outcome
from probe.query import Querier, Throttle
from probe.resolvers import ResolverSpec
from probe.wire import QueryTemplate, TemplateCache
from probe.zones import ProbeName, ZoneSpec

K = TypeVar("K")
T = TypeVar("T")


def _once(cache: dict[K, asyncio.Task[T]], key: K,
          start: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
    """The task for `key`, started on first use: concurrent callers share one piece of I/O."""
    task = cache.get(key)
    if task is None:
        task = cache[key] = asyncio.ensure_future(start())
    return task


class Investigator:
    """Collects Evidence for failed checks within one sweep."""

    def __init__(self, querier: Querier, resolvers: Sequence[ResolverSpec],
                 templates: TemplateCache, *,
                 throttles: Mapping[str, Throttle | None] | None = None,
                 max_auth_servers: int = 3, allow_local_auth: bool = False) -> None:
        self.q = querier
        self.resolvers = list(resolvers)
        # Follow-ups to a resolver share its lane's rate limit, whichever lane asks.
        self.throttles = dict(throttles or {})
        self.max_auth_servers = max_auth_servers
        self.allow_local_auth = allow_local_auth
        self.templates = templates
        self._servers: dict[str, asyncio.Task[tuple[tuple[tuple[str, int], ...], str]]] = {}
        self._auth: dict[tuple[str, str, str], asyncio.Task[tuple[AuthEvidence, ...]]] = {}
        self._source_queries: dict[tuple[str, int, str, str], asyncio.Task[Observation]] = {}

    async def _ask(self, r: ResolverSpec, qname: str, qtype: str) -> Observation:
        # Follow-ups to a resolver use CD=1: show what it holds, validated or not.
        tmpl = self.templates.get(qname, qtype, cd=True)
        return await self.q.ask(r.name, r.host, r.port, tmpl,
                                throttle=self.throttles.get(r.name), triage=False)

    async def collect(self, resolver: ResolverSpec, zone: ZoneSpec, probe: ProbeName) -> Evidence:
        cd_answer, cached_dnskey, cached_ds = await asyncio.gather(
            self._ask(resolver, probe.qname, probe.qtype),
            self._ask(resolver, zone.name, "DNSKEY"),
            self._ask(resolver, zone.name, "DS"),
        )
        servers, source = await _once(self._servers, zone.name,
                                      lambda: self._discover(zone, resolver))
        notes: list[str] = []
        auth: tuple[AuthEvidence, ...] = ()
        if servers:
            auth = await _once(self._auth, (zone.name, probe.qname, probe.qtype),
                               lambda: self._ask_sources(zone, probe, servers))
            if not any(a.dnskey and a.dnskey.outcome is Outcome.REPLY for a in auth):
                notes.append("no authoritative server answered")
        else:
            notes.append(f"no authoritative servers found for {zone.name}")
        return Evidence(zone.name, probe.qname, probe.qtype, cd_answer, cached_dnskey,
                        cached_ds, auth, source if servers else "none", tuple(notes))

    # -- authoritative servers -------------------------------------------------------------

    async def _discover(self, zone: ZoneSpec, first: ResolverSpec
                        ) -> tuple[tuple[tuple[str, int], ...], str]:
        if zone.ns:
            return zone.ns, "zones-file"
        # The failing resolver first; others in case it refuses even CD=1 answers (PowerDNS).
        order = [first, *[r for r in self.resolvers if r != first][:2]]
        for r in order:
            ns_obs = await self._ask(r, zone.name, "NS")
            names = sorted({rd for rr in ns_obs.rrsets("NS", zone.name) for rd in rr.rdatas})
            if not names:
                continue
            lookups = await asyncio.gather(*(
                self._ask(r, name, rtype) for name in names for rtype in ("A", "AAAA")
            ))
            addrs: list[tuple[str, int]] = []
            for obs in lookups:
                for rr in obs.rrsets(obs.qtype, obs.qname):
                    addrs.extend((a, 53) for a in rr.rdatas if self._may_ask(a))
            if addrs:
                # IPv4 first: more hosts have it; unreachable IPv6 servers are simply skipped.
                addrs.sort(key=lambda a: ":" in a[0])
                return tuple(dict.fromkeys(addrs)), "discovered"
        return (), "none"

    def _may_ask(self, address: str) -> bool:
        """Addresses learnt from DNS answers are only asked when public (a resolver's answer
        must not point this host at its own network), unless the operator allows it (labs)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.is_multicast or ip.is_unspecified:
            return False
        return ip.is_global or self.allow_local_auth

    async def _ask_sources(self, zone: ZoneSpec, probe: ProbeName,
                           servers: tuple[tuple[str, int], ...]) -> tuple[AuthEvidence, ...]:
        dnskey_t = self.templates.get(zone.name, "DNSKEY", rd=False)
        answer_t = self.templates.get(probe.qname, probe.qtype, rd=False)

        async def one(host: str, port: int) -> AuthEvidence | None:
            name = f"auth:{host}"

            def ask(t: QueryTemplate) -> Callable[[], Coroutine[Any, Any, Observation]]:
                return lambda: self.q.ask(name, host, port, t, triage=False)

            # The DNSKEY RRset is asked once per server and zone, however many names fail.
            dnskey, answer = await asyncio.gather(
                _once(self._source_queries, (host, port, zone.name, "DNSKEY"), ask(dnskey_t)),
                _once(self._source_queries, (host, port, probe.qname, probe.qtype),
                      ask(answer_t)),
            )
            if dnskey.outcome is Outcome.UNREACHABLE:
                return None  # e.g. an IPv6 server seen from a host without IPv6
            return AuthEvidence(host if port == 53 else f"{host}:{port}", dnskey, answer)

        # In parallel, so a dead server costs one timeout, not one per server; twice the
        # wanted count because some addresses may be unreachable from here.
        asked = await asyncio.gather(*(
            one(h, p) for h, p in servers[: 2 * self.max_auth_servers]
        ))
        return tuple(a for a in asked if a is not None)[: self.max_auth_servers]

