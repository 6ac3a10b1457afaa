"""Incidents: a pure state machine from per-zone round results to open/update/resolve events.

No I/O and no clock of its own: the daemon passes each round's view of every zone and the
round's time in, and stores what comes out. Recorded rounds replay through `step` in tests.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from probe.errors import ConfigError

if TYPE_CHECKING:
    from probe.audit.findings import Finding


SOURCE_RESOLVERS = "resolvers"
SOURCE_AUDIT = "audit"


class EventKind(StrEnum):
    """What happened to an incident (the `event` tag of dnssec_incident; webhook `event`)."""

    OPEN = "open"
    UPDATE = "update"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class BogusView:
    """One resolver's bogus answer for a zone in a round, as far as the incident cares."""

    kind: str  # diagnosis kind, or "none" when no diagnosis was made
    rrsig_keytags: tuple[int, ...] = ()
    cached_keytags: tuple[int, ...] = ()
    recovers_at: float | None = None


@dataclass(frozen=True, slots=True)
class ZoneRound:
    """What one round saw for one zone: resolvers that answered bogus, by name, and how many
    resolvers gave a definite answer (secure, insecure or bogus; not a timeout or SERVFAIL)."""

    zone: str
    bogus: Mapping[str, BogusView]
    answered: int = 0
    # What the signer-side audit says caused it (an unsafe-rollover finding), else "".
    cause: str = ""


@dataclass(frozen=True, slots=True)
class IncidentPolicy:
    """When to open and resolve; validated on construction."""

    open_min_resolvers: int = 2
    resolve_rounds: int = 3

    def __post_init__(self) -> None:
        if self.open_min_resolvers < 1:
            raise ConfigError("open_min_resolvers must be >= 1")
        if self.resolve_rounds < 1:
            raise ConfigError("resolve_rounds must be >= 1")


@dataclass(frozen=True, slots=True)
class Incident:
    """A zone's validation failure seen through several resolvers, from open to resolve."""

    id: str
    zone: str
    opened_at: float
    updated_at: float
    kind: str  # the dominant diagnosis kind among the affected resolvers
    kinds: tuple[str, ...]
    resolvers: tuple[str, ...]  # affected in the latest round that had any, sorted
    rrsig_keytags: tuple[int, ...]
    cached_keytags: tuple[int, ...]
    recovers_at: float | None  # latest predicted recovery among the affected resolvers
    clean_rounds: int = 0  # consecutive rounds with no bogus resolver
    resolved_at: float | None = None
    max_affected: int = 0  # the most resolvers bogus at once while it was open
    cause: str = ""  # the audit finding that explains it, once known (kept while open)
    # "resolvers": bogus answers seen through resolvers; "audit": a paged signer-audit finding
    # (kind = finding code, resolvers = the servers it names, recovers_at = at_risk_until).
    source: str = "resolvers"
    note: str = ""  # an audit finding's own words

    @property
    def affected(self) -> int:
        return len(self.resolvers)

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def detail(self) -> str:
        """The diagnosis in words, for alerts and the dnssec_incident `detail` field."""
        if self.source == SOURCE_AUDIT:
            return self.note + (f"; cleared at {iso(self.resolved_at)}"
                                if self.resolved_at is not None else "")
        text = (f"{self.zone}: {self.affected} resolver(s) answer bogus "
                f"({', '.join(self.resolvers)}); diagnosis {', '.join(self.kinds)}")
        if self.rrsig_keytags:
            text += f"; signed by key {_tags(self.rrsig_keytags)}"
        if self.cached_keytags:
            text += f"; resolvers cache keys {_tags(self.cached_keytags)}"
        if self.recovers_at is not None:
            text += f"; predicted recovery by {iso(self.recovers_at)}"
        if self.cause:
            text += f"; cause: {self.cause}"
        if self.resolved_at is not None:
            text += f"; resolved at {iso(self.resolved_at)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape (webhook `incident`, `incidents --json`); scripts rely on it."""
        return {
            "id": self.id,
            "zone": self.zone,
            "kind": self.kind,
            "kinds": list(self.kinds),
            "affected": self.affected,
            "resolvers": list(self.resolvers),
            "rrsig_keytags": list(self.rrsig_keytags),
            "cached_keytags": list(self.cached_keytags),
            "recovers_at": None if self.recovers_at is None else int(self.recovers_at),
            "detail": self.detail,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "resolved_at": self.resolved_at,
            "clean_rounds": self.clean_rounds,
            "max_affected": self.max_affected,
            "cause": self.cause,
            "source": self.source,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Incident:
        rec = d.get("recovers_at")
        res = d.get("resolved_at")
        return cls(
            id=str(d["id"]), zone=str(d["zone"]), opened_at=float(d["opened_at"]),
            updated_at=float(d.get("updated_at", d["opened_at"])), kind=str(d["kind"]),
            kinds=tuple(str(k) for k in d.get("kinds", (d["kind"],))),
            resolvers=tuple(str(r) for r in d["resolvers"]),
            rrsig_keytags=tuple(int(t) for t in d.get("rrsig_keytags", ())),
            cached_keytags=tuple(int(t) for t in d.get("cached_keytags", ())),
            recovers_at=None if rec is None else float(rec),
            clean_rounds=int(d.get("clean_rounds", 0)),
            resolved_at=None if res is None else float(res),
            max_affected=int(d.get("max_affected", len(d["resolvers"]))),
            cause=str(d.get("cause", "")),
            source=str(d.get("source", SOURCE_RESOLVERS)),
            note=str(d.get("note", "")),
        )


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One transition, with the incident as it is after it."""

    event: EventKind
    incident: Incident
    at: float
    previous_kind: str | None = None  # on an update that changed the dominant kind


def iso(t: float) -> str:
    """UTC time for people and ids, to the second."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incident_id(zone: str, opened_at: float, code: str = "") -> str:
    """Stable id from the zone and the open time, e.g. 14.in-addr.arpa@2026-12-02T18:30:00Z;
    an audit finding's carries its code: 14.in-addr.arpa#unsafe-rollover@2026-12-02T18:30:00Z."""
    return f"{zone.rstrip('.') or '.'}{'#' + code if code else ''}@{iso(opened_at)}"


def _tags(ts: Iterable[int]) -> str:
    return ", ".join(str(t) for t in sorted(ts)) or "none"


def _dominant(kinds: Counter[str]) -> str:
    # A real diagnosis beats "unknown"/"none"; then the most frequent; ties alphabetically.
    return min(kinds.items(), key=lambda kv: (kv[0] in ("unknown", "none"), -kv[1], kv[0]))[0]


def _summarise(bogus: Mapping[str, BogusView]) -> dict[str, Any]:
    kinds = Counter(v.kind for v in bogus.values())
    recovers = [v.recovers_at for v in bogus.values() if v.recovers_at is not None]
    return {
        "kind": _dominant(kinds),
        "kinds": tuple(sorted(kinds)),
        "resolvers": tuple(sorted(bogus)),
        "rrsig_keytags": tuple(sorted({t for v in bogus.values() for t in v.rrsig_keytags})),
        "cached_keytags": tuple(sorted({t for v in bogus.values() for t in v.cached_keytags})),
        "recovers_at": max(recovers) if recovers else None,
    }


def _changed(inc: Incident, s: Mapping[str, Any]) -> bool:
    # A recovery estimate that moves by a second each round is not news: compare the facts.
    return (inc.resolvers, inc.kinds, inc.rrsig_keytags, inc.cached_keytags, inc.cause) != (
        s["resolvers"], s["kinds"], s["rrsig_keytags"], s["cached_keytags"], s["cause"])


def step(
    open_incidents: Mapping[str, Incident],
    rounds: Sequence[ZoneRound],
    *,
    now: float,
    policy: IncidentPolicy,
) -> tuple[dict[str, Incident], list[IncidentEvent]]:
    """Advance the open incidents (by zone) by one round; return the new open set and events.

    A zone opens when at least `open_min_resolvers` resolvers answer bogus in one round; an open
    incident follows the affected set and the diagnosis, and resolves after `resolve_rounds`
    consecutive clean rounds: no resolver answered bogus and at least `open_min_resolvers` gave
    a definite answer. Zones absent from `rounds` (not checked) keep their incident unchanged.
    """
    out = dict(open_incidents)
    events: list[IncidentEvent] = []
    for zr in rounds:
        inc = out.get(zr.zone)
        if inc is None:
            if len(zr.bogus) >= policy.open_min_resolvers:
                s = {**_summarise(zr.bogus), "cause": zr.cause}
                new = Incident(incident_id(zr.zone, now), zr.zone, now, now, **s,
                               max_affected=len(zr.bogus))
                out[zr.zone] = new
                events.append(IncidentEvent(EventKind.OPEN, new, now))
            continue
        if not zr.bogus:
            if zr.answered < policy.open_min_resolvers:
                # Blind, not clean (say the vantage lost its uplink): too few resolvers answered
                # to tell that the zone recovered, so the countdown to resolve does not move.
                continue
            clean = inc.clean_rounds + 1
            if clean >= policy.resolve_rounds:
                done = replace(inc, clean_rounds=clean, resolved_at=now, updated_at=now)
                del out[zr.zone]
                events.append(IncidentEvent(EventKind.RESOLVE, done, now))
            else:
                out[zr.zone] = replace(inc, clean_rounds=clean)
            continue
        # A cause, once found, stays as first worded: the finding ends when the risk does, the
        # incident later, and a moving at-risk time must not send an update every round.
        s = {**_summarise(zr.bogus), "cause": inc.cause or zr.cause}
        if _changed(inc, s):
            upd = replace(inc, **s, clean_rounds=0, updated_at=now,
                          max_affected=max(inc.max_affected, len(zr.bogus)))
            out[zr.zone] = upd
            events.append(IncidentEvent(EventKind.UPDATE, upd, now,
                                        inc.kind if upd.kind != inc.kind else None))
        else:
            out[zr.zone] = replace(inc, clean_rounds=0, recovers_at=s["recovers_at"])
    return out, events


def retire(open_incidents: Mapping[str, Incident], watched: Iterable[str], *,
           now: float) -> tuple[dict[str, Incident], list[IncidentEvent]]:
    """Resolve open incidents of zones no longer watched (they could never resolve otherwise)."""
    keep = set(watched)
    out: dict[str, Incident] = {}
    events: list[IncidentEvent] = []
    for zone, inc in open_incidents.items():
        if zone in keep:
            out[zone] = inc
        else:
            events.append(IncidentEvent(EventKind.RESOLVE,
                                        replace(inc, resolved_at=now, updated_at=now), now))
    return out, events


def audit_key(zone: str, code: str) -> str:
    """How open audit incidents are keyed: one per zone and finding code."""
    return f"{zone}#{code}"


def audit_step(open_incidents: Mapping[str, Incident], findings: Sequence[Finding], *,
               answered: Mapping[str, Iterable[str]], watched: Iterable[str], now: float
               ) -> tuple[dict[str, Incident], list[IncidentEvent]]:
    """Advance the paged audit findings (unsafe-rollover, signer-key-mismatch) by one pass.

    A finding opens an incident (keyed by audit_key); new servers or key tags update it. It
    resolves when a pass of its zone, in which every server it names answered, no longer has
    it — or, for an unsafe rollover, once its at_risk_until has passed — or when the zone is no
    longer watched. A server that timed out this pass resolves nothing (no page twice)."""
    from probe.audit.findings import PAGED

    current = {audit_key(f.zone, f.code.value): f for f in findings if f.code in PAGED}
    keep = set(watched)
    out: dict[str, Incident] = {}
    events: list[IncidentEvent] = []
    for key, f in current.items():
        inc = open_incidents.get(key)
        if inc is None:
            new = _with_finding(Incident(incident_id(f.zone, now, f.code.value), f.zone, now, now,
                                         f.code.value, (f.code.value,), (), (), (), None,
                                         source=SOURCE_AUDIT), f)
            out[key] = new
            events.append(IncidentEvent(EventKind.OPEN, new, now))
        elif (inc.resolvers, inc.rrsig_keytags, inc.cached_keytags) != (
                f.servers, f.new_keytags, f.keytags):
            out[key] = _with_finding(replace(inc, updated_at=now), f)
            events.append(IncidentEvent(EventKind.UPDATE, out[key], now))
        else:
            out[key] = _with_finding(inc, f)
    for key, inc in open_incidents.items():
        if key in current:
            continue
        heard = set(answered.get(inc.zone, ()))
        over = (inc.kind == "unsafe-rollover" and inc.recovers_at is not None
                and now >= inc.recovers_at)
        if inc.zone not in keep or over or (heard and set(inc.resolvers) <= heard):
            events.append(IncidentEvent(EventKind.RESOLVE,
                                        replace(inc, resolved_at=now, updated_at=now), now))
        else:
            out[key] = inc  # not audited this pass (no answer): nothing is known, nothing changes
    return out, events


def _with_finding(inc: Incident, f: Finding) -> Incident:
    return replace(inc, resolvers=f.servers, rrsig_keytags=f.new_keytags,
                   cached_keytags=f.keytags, recovers_at=f.at_risk_until, note=f.detail,
                   max_affected=max(inc.max_affected, len(f.servers)))
