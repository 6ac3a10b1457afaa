"""Audit collection (I/O only): ask every server of each zone, and the parent's, what they serve.

Name servers and the parent's servers are found as the follow-up questions find them (probe.
investigate: zones.txt `ns=`, else the NS addresses two resolvers agree on); `primary=` and
`standby=` signers come from zones.txt only. Every server is asked directly, RD=0 with DO, for the
DNSKEY RRset, the SOA and the zone's probe names; the parent's servers for the zone's DS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from probe.audit.snapshot import ParentSnapshot, Role, ServerSnapshot, ZoneSnapshot
from probe.investigate import Investigator, server_label
from probe.observation import Observation, Outcome
from probe.query import Querier
from probe.wire import TemplateCache
from probe.zones import ZoneSpec

MAX_ZONES_AT_ONCE = 16  # zones audited concurrently (each asks a handful of servers)
# Probe names asked per server beside the SOA: enough to see which keys sign the data; a zone
# probed through thousands of names (the benchmark's) must not cost thousands per server.
MAX_AUDIT_NAMES = 8


class Collector:
    """One audit pass's questions; discovery is shared by the zones of the pass."""

    def __init__(self, querier: Querier, investigator: Investigator, templates: TemplateCache,
                 *, clock: Callable[[], float], max_servers: int = 16) -> None:
        self.q = querier
        self.investigator = investigator
        self.templates = templates
        self.clock = clock
        self.max_servers = max_servers

    async def collect(self, zones: Sequence[ZoneSpec]) -> list[ZoneSnapshot]:
        gate = asyncio.Semaphore(MAX_ZONES_AT_ONCE)

        async def one(z: ZoneSpec) -> ZoneSnapshot:
            async with gate:
                return await self.zone(z)
        return list(await asyncio.gather(*(one(z) for z in zones)))

    async def zone(self, zone: ZoneSpec) -> ZoneSnapshot:
        at = self.clock()
        # Every NS address the resolvers agree on, plus zones.txt's ns= (for `check` ns= stands
        # in for discovery; the audit wants every server resolvers may ask).
        found, (parent, parent_ds, parent_notes) = await asyncio.gather(
            self.investigator.name_servers(zone.name),
            self.investigator.parent_ds(zone.name))
        notes = list(found.notes) + list(parent_notes)
        servers: dict[tuple[str, int], Role] = {}
        for role, addrs in ((Role.NS, (*zone.ns, *found.servers[: self.max_servers])),
                            (Role.PRIMARY, zone.primary), (Role.STANDBY, zone.standby)):
            for hp in addrs:
                servers.setdefault(hp, role)  # a signer that is also a name server serves resolvers
        if not found.servers:
            notes.append(f"no name servers found for {zone.name}")
        asked = await asyncio.gather(*(self._server(zone, h, p, role)
                                       for (h, p), role in servers.items()))
        snaps = tuple(s for s in asked if s is not None)
        parents = tuple(ParentSnapshot(p.address, p.ds) for p in parent_ds if p.ds is not None)
        return ZoneSnapshot(zone.name, at, snaps, parent, parents, tuple(notes))

    async def _server(self, zone: ZoneSpec, host: str, port: int, role: Role
                      ) -> ServerSnapshot | None:
        name = f"auth:{host}"

        async def ask(qname: str, qtype: str) -> Observation:
            t = self.templates.get(qname, qtype, rd=False)
            return await self.q.ask(name, host, port, t, triage=False)

        probes = [p for p in zone.probes
                  if (p.qname, p.qtype) != (zone.name, "SOA")][:MAX_AUDIT_NAMES]
        dnskey, soa, *answers = await asyncio.gather(
            ask(zone.name, "DNSKEY"), ask(zone.name, "SOA"),
            *(ask(p.qname, p.qtype) for p in probes))
        if dnskey.outcome is Outcome.UNREACHABLE:
            return None  # e.g. an IPv6 server seen from a host without IPv6
        return ServerSnapshot(server_label(host, port), role, dnskey, soa, tuple(answers))
