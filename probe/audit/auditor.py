"""One audit pass: collect -> read what each server serves -> advance the history -> judge.

`assess` is pure (a recorded snapshot and a history in, findings and the new history out), so
recorded passes replay in unit tests; `Auditor` does the I/O around it: the questions, and
loading and saving each zone's history in the state database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from probe.audit.collect import Collector
from probe.audit.findings import AuditPolicy, Finding, exit_status, judge
from probe.audit.history import (
    AuditHistory,
    Version,
    ZoneMeta,
    advance,
    key_history,
    observed,
)
from probe.audit.served import ParentServed, Served, parent_served, served, tags, zone_keys
from probe.audit.snapshot import Role, ZoneSnapshot
from probe.codes import FindingSeverity
from probe.investigate import Investigator
from probe.query import InflightLimit, Querier
from probe.resolvers import ResolverSpec
from probe.transport import Transport
from probe.wire import TemplateCache
from probe.zones import ZoneSpec


@dataclass(frozen=True, slots=True)
class ZoneAudit:
    """One zone's pass: the raw snapshot, what each server served, and the findings."""

    snapshot: ZoneSnapshot
    servers: tuple[Served, ...]
    parents: tuple[ParentServed, ...]
    findings: tuple[Finding, ...]
    # Per server and key: first/last seen published and signing (history.key_history).
    keys: tuple[dict[str, object], ...] = ()

    @property
    def zone(self) -> str:
        return self.snapshot.zone

    @property
    def answered(self) -> frozenset[str]:
        """Servers (the parent's too) that answered this pass."""
        return frozenset({s.server for s in self.servers if s.answered}
                         | {p.server for p in self.parents if p.answered})

    @property
    def audited(self) -> bool:
        """Some name server or signer answered: the findings say something about the zone."""
        return any(s.answered and s.role is not Role.STANDBY for s in self.servers)

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "zone": self.zone,
            "audited": self.audited,
            "parent": self.snapshot.parent,
            "servers": [{"server": s.server, "role": s.role.value, "answered": s.answered,
                         "serial": s.serial, "keytags": list(tags(s.keys)),
                         "signing_keytags": list(tags(s.signers)),
                         "ksk_signing_keytags": list(tags(s.ksk_signers)),
                         "dnskey_ttl": s.dnskey_ttl} for s in self.servers],
            "parent_ds": [{"server": p.server, "answered": p.answered,
                           "ds_keytags": list(tags(p.ds)), "ttl": p.ttl} for p in self.parents],
            "keys": [dict(k) for k in self.keys],
            "notes": list(self.snapshot.notes),
        }
        if raw:
            out["snapshot"] = self.snapshot.to_dict()
        return out


def assess(snapshot: ZoneSnapshot, history: Sequence[Version], meta: ZoneMeta | None,
           policy: AuditPolicy) -> tuple[ZoneAudit, list[Version], ZoneMeta]:
    """Judge one recorded pass against the zone's history (pure)."""
    known = zone_keys(snapshot.servers, snapshot.zone)
    srv = tuple(served(s, snapshot.zone, known) for s in snapshot.servers)
    par = tuple(parent_served(p, snapshot.zone) for p in snapshot.parent_ds)
    now = snapshot.at
    changes: list[tuple[Version | None, Version]] = []
    if meta is not None and now < meta.last_pass:
        # Older than what the history already holds (the daemon's pass, collected while a cron
        # `audit` recorded a newer one): judged against the history, not recorded in it.
        versions = list(history)
    else:
        versions, changes = advance(history, observed(srv, par), now=now)
    judged = judge(snapshot.zone, now=now, servers=srv, parents=par, history=versions,
                   changes=changes, meta=meta, policy=policy)
    return (ZoneAudit(snapshot, srv, par, judged.findings, tuple(key_history(versions))),
            versions, judged.meta)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Every zone of one pass."""

    at: float
    zones: tuple[ZoneAudit, ...]

    @property
    def findings(self) -> list[Finding]:
        return [f for z in self.zones for f in z.findings]

    @property
    def exit_status(self) -> int:
        return exit_status(self.findings, audited=any(z.audited for z in self.zones))

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        """The `audit --json` document: findings, a summary, and what each zone's servers serve."""
        found = self.findings
        return {
            "findings": [f.to_dict() for f in found],
            "summary": {
                "time": self.at,
                "zones": len(self.zones),
                "audited": sum(z.audited for z in self.zones),
                "findings": {s.value: sum(f.severity is s for f in found)
                             for s in FindingSeverity},
                "exit_status": self.exit_status,
            },
            "zones": [z.to_json(raw=raw) for z in self.zones],
        }


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """How the audit asks: per-attempt timeout, retries, and whether lab addresses may be asked."""

    timeout: float = 2.0
    retries: int = 2
    allow_local_auth: bool = False
    max_inflight: int = 64


class Auditor:
    """Runs passes against the state database's history; dependencies are passed in."""

    def __init__(self, config: AuditConfig, resolvers: Sequence[ResolverSpec],
                 history: AuditHistory, policy: AuditPolicy, *,
                 clock: Callable[[], float] = time.time,
                 templates: TemplateCache | None = None) -> None:
        self.config = config
        self.resolvers = list(resolvers)
        self.history = history
        self.policy = policy
        self.clock = clock
        self.templates = templates or TemplateCache()

    async def collect(self, zones: Sequence[ZoneSpec]) -> list[ZoneSnapshot]:
        cfg = self.config
        transport = Transport(timeout=cfg.timeout)
        try:
            querier = Querier(transport, retries=cfg.retries, clock=self.clock,
                              inflight=InflightLimit(cfg.max_inflight))
            inv = Investigator(querier, self.resolvers, self.templates,
                               allow_local_auth=cfg.allow_local_auth)
            return await Collector(querier, inv, self.templates, clock=self.clock).collect(zones)
        finally:
            transport.close()

    def record(self, snapshots: Sequence[ZoneSnapshot]) -> AuditReport:
        """Judge and store each zone's pass (one transaction per zone)."""
        out = []
        for snap in snapshots:
            with self.history.transaction():
                versions, meta = self.history.load(snap.zone)
                audit, new_versions, new_meta = assess(snap, versions, meta, self.policy)
                if meta is None or snap.at >= meta.last_pass:
                    self.history.save(snap.zone, new_versions, new_meta)
            out.append(audit)
        return AuditReport(min((s.at for s in snapshots), default=self.clock()), tuple(out))

    async def run(self, zones: Sequence[ZoneSpec]) -> AuditReport:
        return self.record(await self.collect(zones))
