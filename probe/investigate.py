"""Follow-up questions for a failed check: what the resolver caches, what the source serves.

Only I/O lives here; probe.diagnose decides. Authoritative evidence and server discovery are
shared by every resolver within one sweep, so a broken zone costs its servers a few queries,
not a few per resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence

from probe.diagnose import AuthEvidence, Evidence
from probe.observation import Observation, Outcome
from probe.query import Querier, Throttle
from probe.resolvers import ResolverSpec
from probe.wire import QueryTemplate, make_template
from probe.zones import ProbeName, ZoneSpec


class Investigator:
    """Collects Evidence for failed checks within one sweep."""

    def __init__(self, querier: Querier, resolvers: Sequence[ResolverSpec], *,
                 throttles: Mapping[str, Throttle | None] | None = None,
                 max_auth_servers: int = 3, allow_local_auth: bool = False) -> None:
        self.q = querier
        self.resolvers = list(resolvers)
        # Follow-ups to a resolver share its lane's rate limit, whichever lane asks.
        self.throttles = dict(throttles or {})
        self.max_auth_servers = max_auth_servers
        self.allow_local_auth = allow_local_auth
        self._templates: dict[tuple[str, str, bool, bool], QueryTemplate] = {}
        self._servers: dict[str, asyncio.Task[tuple[tuple[tuple[str, int], ...], str]]] = {}
        self._auth: dict[tuple[str, str, str], asyncio.Task[tuple[AuthEvidence, ...]]] = {}
        self._source_queries: dict[tuple[str, int, str, str], asyncio.Task[Observation]] = {}

    def _tmpl(self, qname: str, qtype: str, *, rd: bool = True, cd: bool = True) -> QueryTemplate:
        key = (qname, qtype, rd, cd)
        t = self._templates.get(key)
        if t is None:
            t = self._templates[key] = make_template(qname, qtype, rd=rd, cd=cd)
        return t

    async def _ask(self, r: ResolverSpec, qname: str, qtype: str) -> Observation:
        return await self.q.ask(r.name, r.host, r.port, self._tmpl(qname, qtype),
                                throttle=self.throttles.get(r.name), triage=False)

    async def collect(self, resolver: ResolverSpec, zone: ZoneSpec, probe: ProbeName) -> Evidence:
        cd_answer, cached_dnskey, cached_ds = await asyncio.gather(
            self._ask(resolver, probe.qname, probe.qtype),
            self._ask(resolver, zone.name, "DNSKEY"),
            self._ask(resolver, zone.name, "DS"),
        )
        servers, source = await self._servers_for(zone, resolver)
        notes: list[str] = []
        auth: tuple[AuthEvidence, ...] = ()
        if servers:
            auth = await self._auth_for(zone, probe, servers)
            if not any(a.dnskey and a.dnskey.outcome is Outcome.REPLY for a in auth):
                notes.append("no authoritative server answered")
        else:
            notes.append(f"no authoritative servers found for {zone.name}")
        return Evidence(zone.name, probe.qname, probe.qtype, cd_answer, cached_dnskey,
                        cached_ds, auth, source if servers else "none", tuple(notes))

    # -- authoritative servers -------------------------------------------------------------

    def _servers_for(self, zone: ZoneSpec, resolver: ResolverSpec
                     ) -> asyncio.Task[tuple[tuple[tuple[str, int], ...], str]]:
        task = self._servers.get(zone.name)
        if task is None:
            task = asyncio.ensure_future(self._discover(zone, resolver))
            self._servers[zone.name] = task
        return task

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

    def _auth_for(self, zone: ZoneSpec, probe: ProbeName, servers: tuple[tuple[str, int], ...]
                  ) -> asyncio.Task[tuple[AuthEvidence, ...]]:
        key = (zone.name, probe.qname, probe.qtype)
        task = self._auth.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ask_sources(zone, probe, servers))
            self._auth[key] = task
        return task

    async def _ask_sources(self, zone: ZoneSpec, probe: ProbeName,
                           servers: tuple[tuple[str, int], ...]) -> tuple[AuthEvidence, ...]:
        dnskey_t = self._tmpl(zone.name, "DNSKEY", rd=False, cd=False)
        answer_t = self._tmpl(probe.qname, probe.qtype, rd=False, cd=False)

        async def one(host: str, port: int) -> AuthEvidence | None:
            name = f"auth:{host}"

            def ask(t: QueryTemplate) -> Callable[[], Awaitable[Observation]]:
                return lambda: self.q.ask(name, host, port, t, triage=False)

            # The DNSKEY RRset is asked once per server and zone, however many names fail.
            dnskey, answer = await asyncio.gather(
                self._source_query((host, port, zone.name, "DNSKEY"), ask(dnskey_t)),
                self._source_query((host, port, probe.qname, probe.qtype), ask(answer_t)),
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

    def _source_query(self, key: tuple[str, int, str, str],
                      factory: Callable[[], Awaitable[Observation]]) -> asyncio.Task[Observation]:
        task = self._source_queries.get(key)
        if task is None:
            task = self._source_queries[key] = asyncio.ensure_future(factory())
        return task
