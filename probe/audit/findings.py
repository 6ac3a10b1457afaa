"""Audit findings: a pure function of what the servers serve now and what they served before.

Nothing here awaits or reads a clock: `judge` gets the pass's time, the servers' reading
(probe.audit.served) and the zone's history after this pass (probe.audit.history.advance).
Evidence is judged conservatively: a key set counts as served at a time only where an audit saw
it (never a guess between two audits), while `at_risk_until` counts from the latest moment the
old set may still have been served (the next audit that saw it gone).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from probe.audit.history import DNSKEY, DS, KSK_SIGNING, SIGNING, Version, ZoneMeta
from probe.audit.served import (
    ParentServed,
    Served,
    SigSeen,
    ds_matches,
    ds_usable,
    group_keys,
    tags,
)
from probe.audit.snapshot import Role
from probe.codes import FINDINGS, FindingCode, FindingSeverity
from probe.errors import ConfigError
from probe.incidents import iso

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class ExpiryMargin:
    """When a signature counts as expiring: a share of its validity period left (check_dnssec
    style "20%"), or a time left ("5d", "12h", "30m", "90s")."""

    seconds: float | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str, *, what: str = "expiry margin") -> ExpiryMargin:
        t = text.strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%|[smhdw]?)", t)
        if m is None:
            raise ConfigError(f"{what}: {text!r} is not a margin; expected N% of the signature "
                              "validity period or a time such as 5d, 12h, 30m, 90s")
        n, unit = float(m.group(1)), m.group(2)
        if unit == "%":
            if not 0 < n < 100:
                raise ConfigError(f"{what}: {text!r}: a percentage must be between 0 and 100")
            return cls(percent=n)
        return cls(seconds=n * _UNITS.get(unit or "s", 1))

    def reached(self, left: float, lifetime: float) -> bool:
        if self.percent is not None:
            return left < lifetime * self.percent / 100.0
        return left < (self.seconds or 0.0)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    """Audit knobs; validated on construction."""

    # Added to a TTL before a new key may be used: zone transfers and clock differences.
    margin: float = 300.0
    # How long name servers may disagree (serial or DNSKEY set) before it is a finding.
    inconsistent_window: float = 600.0
    expiry_warning: ExpiryMargin = field(default_factory=lambda: ExpiryMargin(percent=20.0))
    expiry_critical: ExpiryMargin = field(default_factory=lambda: ExpiryMargin(percent=10.0))

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 7 * 86400:
            raise ConfigError("the propagation margin must be in [0, 604800] seconds")
        if not 0 <= self.inconsistent_window <= 30 * 86400:
            raise ConfigError("the inconsistency window must be in [0, 2592000] seconds")


@dataclass(frozen=True, slots=True)
class Finding:
    """One audit finding about one zone; the JSON shape (`audit --json`) is a contract."""

    code: FindingCode
    zone: str
    severity: FindingSeverity
    detail: str
    servers: tuple[str, ...] = ()
    keytags: tuple[int, ...] = ()  # the keys concerned (for unsafe-rollover: the old set's)
    new_keytags: tuple[int, ...] = ()  # keys added / newly used
    at_risk_until: float | None = None
    old_set_last_served: float | None = None
    published_before_use_s: float | None = None

    @property
    def reference(self) -> str:
        return FINDINGS[self.code].reference

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code.value, "zone": self.zone, "severity": self.severity.value,
            "detail": self.detail, "servers": list(self.servers), "keytags": list(self.keytags),
            "new_keytags": list(self.new_keytags),
            "at_risk_until": None if self.at_risk_until is None else int(self.at_risk_until),
            "old_set_last_served": (None if self.old_set_last_served is None
                                    else round(self.old_set_last_served, 3)),
            "published_before_use_s": (None if self.published_before_use_s is None
                                       else round(self.published_before_use_s, 1)),
            "reference": self.reference,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        def opt(k: str) -> float | None:
            return None if d.get(k) is None else float(d[k])
        return cls(FindingCode(d["code"]), str(d["zone"]), FindingSeverity(d["severity"]),
                   str(d["detail"]), tuple(str(s) for s in d.get("servers", ())),
                   tuple(int(t) for t in d.get("keytags", ())),
                   tuple(int(t) for t in d.get("new_keytags", ())), opt("at_risk_until"),
                   opt("old_set_last_served"), opt("published_before_use_s"))


def _tags(ids: Iterable[str]) -> str:
    return ", ".join(str(t) for t in tags(ids)) or "none"


def _span(seconds: float) -> str:
    s = abs(seconds)
    text = (f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200
            else f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} d")
    return text if seconds >= 0 else f"-{text}"


# -- history helpers ---------------------------------------------------------------------------

def _by_server(history: Sequence[Version], kind: str) -> dict[str, list[Version]]:
    out: dict[str, list[Version]] = {}
    for v in history:
        if v.kind == kind:
            out.setdefault(v.server, []).append(v)
    for vs in out.values():
        vs.sort(key=lambda v: v.first_seen)
    return out


def _run_start(versions: Sequence[Version], holds: Any) -> float | None:
    """first_seen of the trailing run of versions for which `holds(v)` is true; None when the
    latest version does not hold."""
    start = None
    for v in reversed(versions):
        if not holds(v):
            break
        start = v.first_seen
    return start


# Roles whose DNSKEY sets resolvers use (a name server) or that feed them (the primary).
_FACING = frozenset({Role.NS.value, Role.PRIMARY.value})


def _facing(versions: Sequence[Version]) -> list[Version]:
    return [v for v in versions if v.role in _FACING]


@dataclass(frozen=True, slots=True)
class _Clock:
    """The pass's time, and how long ago the pass before it was (0 on the first)."""

    now: float
    gap: float

    def end(self, versions: Sequence[Version], i: int) -> float:
        """The latest moment version i may have been served: until the next one was first seen;
        the latest version until now if this pass heard it, else until the first pass that
        did not (a server that left the NS set or stopped answering)."""
        if i + 1 < len(versions):
            return versions[i + 1].first_seen
        v = versions[i]
        if v.last_seen >= self.now:
            return self.now
        return min(self.now, v.gone_at if v.gone_at is not None else v.last_seen)


# -- the judge ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Judged:
    findings: tuple[Finding, ...]
    meta: ZoneMeta


def judge(zone: str, *, now: float, servers: Sequence[Served], parents: Sequence[ParentServed],
          history: Sequence[Version], changes: Sequence[tuple[Version | None, Version]],
          meta: ZoneMeta | None, policy: AuditPolicy) -> Judged:
    """Findings for one zone after one pass; `history` and `changes` come from advance()."""
    clock = _Clock(now, 0.0 if meta is None else max(0.0, now - meta.last_pass))
    meta = meta or ZoneMeta(now, now)
    meta = replace(meta, last_pass=max(now, meta.last_pass))
    active = [s for s in servers if s.answered and s.role is not Role.STANDBY]
    findings: list[Finding] = []
    if not active:
        who = ", ".join(f"{s.server} ({s.role.value})" for s in servers) or "none found"
        findings.append(Finding(FindingCode.NO_SERVER_ANSWERED, zone, FindingSeverity.WARNING,
                                f"{zone}: no name server or signer gave authoritative DNSKEY and "
                                f"SOA answers (servers: {who})", tuple(s.server for s in servers)))
    else:
        findings += _no_history(zone, clock, active, parents, meta, policy)
        findings += _unsafe(zone, clock, active, history, policy)
    findings += _mismatch(zone, now, servers, history, policy)
    inconsistent, since = _inconsistent(zone, now, servers, meta, policy)
    meta = replace(meta, inconsistent_since=since)
    findings += inconsistent
    findings += _key_changes(zone, changes)
    findings += _expiry(zone, now, servers, policy)
    return Judged(tuple(findings), meta)


def _no_history(zone: str, clock: _Clock, active: Sequence[Served],
                parents: Sequence[ParentServed], meta: ZoneMeta,
                policy: AuditPolicy) -> list[Finding]:
    ttls = [s.dnskey_ttl or 0 for s in active] + [p.ttl or 0 for p in parents if p.answered]
    needed = max(ttls, default=0) + policy.margin
    have = clock.now - meta.first_pass
    if have < needed:
        return [Finding(FindingCode.NO_HISTORY, zone, FindingSeverity.INFO,
                        f"{zone}: the audit history began {iso(meta.first_pass)} and covers "
                        f"{_span(have)} of the {_span(needed)} (largest TTL + margin) needed: a "
                        "key change before it began cannot be judged, so none is reported")]
    if clock.gap > needed:
        return [Finding(FindingCode.NO_HISTORY, zone, FindingSeverity.INFO,
                        f"{zone}: the previous audit was {_span(clock.gap)} ago, longer than the "
                        f"largest TTL + margin ({_span(needed)}): a key change in between "
                        "cannot be judged; audit more often")]
    return []


def _unsafe(zone: str, clock: _Clock, active: Sequence[Served], history: Sequence[Version],
            policy: AuditPolicy) -> list[Finding]:
    """unsafe-rollover, every side, merged into one finding for the zone."""
    parts: list[_Risk] = _zsk_side(clock, active, history, policy)
    parts += _ksk_side(zone, clock, active, history, policy)
    parts += _ds_side(zone, clock, history, policy)
    parts = [p for p in parts if p.at_risk_until > clock.now]  # a risk that has passed is over
    if not parts:
        return []
    return [Finding(
        FindingCode.UNSAFE_ROLLOVER, zone, FindingSeverity.CRITICAL,
        f"{zone}: " + "; ".join(p.detail for p in parts),
        tuple(sorted({s for p in parts for s in p.servers})),
        tuple(sorted({t for p in parts for t in p.old_tags})),
        tuple(sorted({t for p in parts for t in p.new_tags})),
        max(p.at_risk_until for p in parts), max(p.last_served for p in parts),
        min((p.lead for p in parts if p.lead is not None), default=None))]


@dataclass(frozen=True, slots=True)
class _Risk:
    detail: str
    servers: tuple[str, ...]
    old_tags: tuple[int, ...]
    new_tags: tuple[int, ...]
    at_risk_until: float
    last_served: float
    lead: float | None


def _stale_sets(clock: _Clock, sets: dict[str, list[Version]], lacks: Any, since: float,
                policy: AuditPolicy) -> list[tuple[str, Version, float]]:
    """(server, version, end) of every DNSKEY set a name server or the primary was seen serving
    within its TTL + margin before `since` (or after) for which `lacks(content)` holds."""
    out = []
    for server, vs in sets.items():
        for i, v in enumerate(vs):
            if v.role in _FACING and lacks(v.content) \
                    and v.last_seen >= since - ((v.ttl or 0) + policy.margin):
                out.append((server, v, clock.end(vs, i)))
    return out


def _zsk_side(clock: _Clock, active: Sequence[Served], history: Sequence[Version],
              policy: AuditPolicy) -> list[_Risk]:
    """An RRset signed only by keys missing from a DNSKEY set a name server (or the primary) was
    seen serving within the set's TTL + margin before their first use (RFC 6781 §4.1.1.1
    pre-publication). An RRset also signed by a key every such set held validates anyway
    (double signature, RFC 6781 §4.1.1.2)."""
    sets = _by_server(history, DNSKEY)
    signing = {s: _facing(vs) for s, vs in _by_server(history, SIGNING).items()}
    out: list[_Risk] = []
    for group in sorted({g for s in active for g in s.signer_groups}):
        keys = group_keys(group)
        starts = [_run_start(signing.get(s.server, []), lambda v, g=group: g in v.content)
                  for s in active if group in s.signer_groups]
        used = min((t for t in starts if t is not None), default=None)
        if used is None:
            continue
        old = _stale_sets(clock, sets, lambda c, k=keys: not (k & c), used, policy)
        if not old:
            continue
        pubs = [_run_start(_facing(sets.get(s.server, [])), lambda v, k=keys: bool(k & v.content))
                for s in active]
        published = None if any(p is None for p in pubs) else max(p for p in pubs if p is not None)
        lead = None if published is None else max(0.0, used - published)
        last = max(end for _, _, end in old)
        risk = max(end + (v.ttl or 0) for _, v, end in old)
        old_keys = {k for _, v, _ in old for k in v.content}
        ttl = max(v.ttl or 0 for _, v, _ in old)
        when = (f"published {_span(lead)} before use" if lead is not None
                else "not published by every server")
        out.append(_Risk(
            f"re-signed with key {_tags(keys)} {when} (needs the DNSKEY TTL {ttl} s + margin "
            f"{policy.margin:g} s); the old key set ({_tags(old_keys)}) was last served "
            f"{iso(last)}, so resolvers holding it fail until {iso(risk)}",
            tuple(sorted({srv for srv, _, _ in old})), tags(old_keys), tags(keys), risk, last,
            lead))
    return out


class _Matcher:
    """DS-to-key matching, each pair computed once per judgement."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.memo: dict[tuple[str, str], bool] = {}

    def __call__(self, ds: frozenset[str], keys: Iterable[str]) -> bool:
        for d in ds:
            for k in keys:
                if (d, k) not in self.memo:
                    self.memo[(d, k)] = ds_matches(d, k, self.zone)
                if self.memo[(d, k)]:
                    return True
        return False


def _usable(ds: frozenset[str]) -> bool:
    # No DS (an insecure delegation) or none a validator can use: never a stale-key case.
    return any(ds_usable(d) for d in ds)


def _ksk_side(zone: str, clock: _Clock, active: Sequence[Served], history: Sequence[Version],
              policy: AuditPolicy) -> list[_Risk]:
    """The DNSKEY RRset signed only by KSKs that no DS a parent server was seen serving within
    the DS TTL + margin before the switch points to (RFC 7583 §3.3.2 double-DS, §3.3.3)."""
    ksk = {s: _facing(vs) for s, vs in _by_server(history, KSK_SIGNING).items()}
    ds_versions = _by_server(history, DS)
    covers = _Matcher(zone)
    # One risk per DS set that was served too recently: (servers, parents, end, ttl).
    found: dict[frozenset[str], tuple[set[str], set[str], float, int]] = {}
    ever = [v.content for vs in ksk.values() for v in vs]
    for s in active:
        if not s.ksk_signers:
            continue
        for parent, vs in ds_versions.items():
            for i, d in enumerate(vs):
                if not _usable(d.content) or covers(d.content, s.ksk_signers):
                    continue
                if not any(covers(d.content, c) for c in ever):
                    continue  # a DS that never matched a signing KSK: a broken chain, no rollover
                switched = _run_start(ksk.get(s.server, []),
                                      lambda v, ds=d.content: not covers(ds, v.content))
                if switched is None or d.last_seen < switched - ((d.ttl or 0) + policy.margin):
                    continue
                srv, par, end, ttl = found.get(d.content, (set(), set(), 0.0, 0))
                found[d.content] = (srv | {s.server}, par | {parent},
                                    max(end, clock.end(vs, i)), max(ttl, d.ttl or 0))
    out: list[_Risk] = []
    for ds, (srv, par, end, ttl) in sorted(found.items(), key=lambda kv: sorted(kv[0])):
        signers = {k for s in active if s.server in srv for k in s.ksk_signers}
        risk = end + ttl
        out.append(_Risk(
            f"the DNSKEY RRset at {', '.join(sorted(srv))} is signed by KSK {_tags(signers)}, "
            f"but the parent ({', '.join(sorted(par))}) served a DS set ({_tags(ds)}) matching "
            f"none of them until {iso(end)} (DS TTL {ttl} s + margin {policy.margin:g} s): "
            f"resolvers holding that DS fail until {iso(risk)}",
            tuple(sorted(srv | par)), tags(ds), tags(signers), risk, end, None))
    return out


def _ds_side(zone: str, clock: _Clock, history: Sequence[Version],
             policy: AuditPolicy) -> list[_Risk]:
    """A DS set at the parent that points only to KSKs missing from a DNSKEY set a name server
    was seen serving within its TTL + margin before the DS set appeared: resolvers holding that
    DNSKEY set cannot validate it with the new DS (RFC 7583 §3.3.4 double-KSK)."""
    sets = _by_server(history, DNSKEY)
    known = {k for vs in sets.values() for v in vs for k in v.content}
    covers = _Matcher(zone)
    out: list[_Risk] = []
    for parent, vs in sorted(_by_server(history, DS).items()):
        d = vs[-1]
        if not _usable(d.content) or clock.end(vs, len(vs) - 1) < clock.now:
            continue  # only what the parent serves now
        matched = frozenset(k for k in known if covers(d.content, [k]))
        if not matched:
            continue  # a DS matching no key ever published is a broken chain, not a rollover
        since = _run_start(vs, lambda v, c=d.content: v.content == c)
        if since is None:
            continue
        old = _stale_sets(clock, sets, lambda c, m=matched: not (m & c), since, policy)
        if not old:
            continue
        end = max(e for _, _, e in old)
        risk = max(e + (v.ttl or 0) for _, v, e in old)
        old_keys = {k for _, v, _ in old for k in v.content}
        out.append(_Risk(
            f"the parent ({parent}) serves a DS set ({_tags(d.content)}) pointing only to KSK "
            f"{_tags(matched)}, which a DNSKEY set served until {iso(end)} lacks: resolvers "
            f"holding that set fail until {iso(risk)}",
            tuple(sorted({parent, *(s for s, _, _ in old)})), tags(old_keys), tags(matched),
            risk, end, None))
    return out


def _mismatch(zone: str, now: float, servers: Sequence[Served], history: Sequence[Version],
              policy: AuditPolicy) -> list[Finding]:
    """Standby / primary signers whose keys differ from the name servers' (a failover risk).
    A primary ahead of its secondaries in a correct rollover is given the inconsistency window
    for the zone transfer; a standby never is: it must match before the failover, not after."""
    ns = [s for s in servers if s.answered and s.role is Role.NS]
    ref = ns or [s for s in servers if s.answered and s.role is Role.PRIMARY]
    if not ref:
        return []
    keys = Counter(s.keys for s in ref).most_common(1)[0][0]
    signers = Counter(s.signers for s in ref).most_common(1)[0][0]
    others = [s for s in servers if s.answered and s.role is not Role.NS and s not in ref]
    current = {(v.server, v.kind): v for v in sorted(history, key=lambda v: v.first_seen)}

    def settled(s: Served) -> bool:
        if s.role is not Role.PRIMARY:
            return True
        since = max((v.first_seen for kind in (DNSKEY, SIGNING)
                     if (v := current.get((s.server, kind))) is not None), default=now)
        return now - since >= policy.inconsistent_window

    # Signing with another key that every resolver already has is a safe switch.
    bad = [s for s in others if (s.keys != keys or not s.signers <= keys) and settled(s)]
    if not bad:
        return []
    each = "; ".join(f"{s.role.value} {s.server} publishes {_tags(s.keys)} and signs with "
                     f"{_tags(s.signers)}" for s in bad)
    return [Finding(FindingCode.SIGNER_KEY_MISMATCH, zone, FindingSeverity.CRITICAL,
                    f"{zone}: the name servers publish {_tags(keys)} and sign with "
                    f"{_tags(signers)}, but {each}: a failover now would be an unsafe rollover",
                    tuple(s.server for s in bad), tags(keys),
                    tags(k for s in bad for k in s.keys | s.signers))]


def _inconsistent(zone: str, now: float, servers: Sequence[Served], meta: ZoneMeta,
                  policy: AuditPolicy) -> tuple[list[Finding], float | None]:
    ns = [s for s in servers if s.answered and s.role is Role.NS]
    if len({(s.serial, s.keys) for s in ns}) <= 1:
        return [], None
    since = meta.inconsistent_since if meta.inconsistent_since is not None else now
    if now - since < policy.inconsistent_window:
        return [], since
    each = "; ".join(f"{s.server} serial {s.serial} keys {_tags(s.keys)}"
                     for s in sorted(ns, key=lambda s: s.server))
    return [Finding(FindingCode.INCONSISTENT_SERVERS, zone, FindingSeverity.WARNING,
                    f"{zone}: name servers disagree since {iso(since)} ({_span(now - since)}): "
                    f"{each}", tuple(sorted(s.server for s in ns)),
                    tags(k for s in ns for k in s.keys))], since


def _key_changes(zone: str, changes: Sequence[tuple[Version | None, Version]]) -> list[Finding]:
    groups: dict[tuple[frozenset[str], frozenset[str]], list[str]] = {}
    for prev, new in changes:
        if new.kind != DNSKEY or prev is None:
            continue
        groups.setdefault((new.content - prev.content, prev.content - new.content),
                          []).append(new.server)
    if not groups:
        return []
    parts = [f"{', '.join(sorted(srv))}: added {_tags(a)}, removed {_tags(r)}"
             for (a, r), srv in sorted(groups.items(), key=lambda kv: sorted(kv[1]))]
    new_keys = {k for (a, _) in groups for k in a}
    all_keys = {k for prev, new in changes if new.kind == DNSKEY and prev is not None
                for k in new.content}
    return [Finding(FindingCode.KEY_CHANGE, zone, FindingSeverity.INFO,
                    f"{zone}: DNSKEY RRset changed: " + "; ".join(parts),
                    tuple(sorted({s for srv in groups.values() for s in srv})),
                    tags(all_keys), tags(new_keys))]


def _expiry(zone: str, now: float, servers: Sequence[Served],
            policy: AuditPolicy) -> list[Finding]:
    worst: tuple[int, float, Served, SigSeen, str] | None = None
    hit: set[str] = set()
    keys: set[int] = set()
    for s in servers:
        if not s.answered:
            continue
        for sig in s.sigs:
            left = sig.expiration - now
            lifetime = max(1.0, float(sig.expiration - sig.inception))
            if left <= 0 or policy.expiry_critical.reached(left, lifetime):
                level, why = 2, "critical margin " + str(policy.expiry_critical)
            elif policy.expiry_warning.reached(left, lifetime):
                level, why = 1, "warning margin " + str(policy.expiry_warning)
            elif left < sig.ttl:
                level, why = 1, f"shorter than the TTL {sig.ttl} s of what it signs"
            else:
                continue
            hit.add(s.server)
            keys.add(sig.tag)
            if worst is None or (level, -left) > (worst[0], -worst[1]):
                worst = (level, left, s, sig, why)
    if worst is None:
        return []
    level, left, s, sig, why = worst
    state = "expired" if left <= 0 else "expires"
    return [Finding(FindingCode.SIGNATURE_EXPIRY, zone,
                    FindingSeverity.CRITICAL if level == 2 else FindingSeverity.WARNING,
                    f"{zone}: RRSIG over {sig.covers} by key {sig.tag} at {s.server} {state} "
                    f"{iso(sig.expiration)} ({_span(left)} left; {why})",
                    tuple(sorted(hit)), tuple(sorted(keys)))]


def cause_text(f: Finding) -> str:
    """How a resolver-side incident names the unsafe-rollover that explains it."""
    until = f" at risk until {iso(f.at_risk_until)}" if f.at_risk_until is not None else ""
    if f.published_before_use_s is not None:
        return (f"{f.zone} re-signed with key {', '.join(map(str, f.new_keytags))} published "
                f"{_span(f.published_before_use_s)} before use;{until}")
    return (f"{f.zone} unsafe rollover to key {', '.join(map(str, f.new_keytags))} "
            f"(unsafe-rollover finding);{until}")


# Paged through the alert channels (as incidents); the others are written and shown only.
PAGED: frozenset[FindingCode] = frozenset({FindingCode.UNSAFE_ROLLOVER,
                                           FindingCode.SIGNER_KEY_MISMATCH})


def exit_status(findings: Iterable[Finding], *, audited: bool) -> int:
    """Monitoring-plugin exit code: 2 critical, 1 warning, 0 otherwise; 3 if nothing audited."""
    sev = {f.severity for f in findings}
    if FindingSeverity.CRITICAL in sev:
        return 2
    if FindingSeverity.WARNING in sev:
        return 1
    return 0 if audited else 3
