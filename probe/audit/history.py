"""Audit history: what each server served over time, as versions, kept in the state directory.

A version is one continuous stretch in which a server served the same content of one kind:
`dnskey` (the key ids of its DNSKEY RRset), `signing` (keys signing the zone's data),
`ksk-signing` (keys signing the DNSKEY RRset) or `ds` (a parent server's DS ids). Contents are
compared, never TTLs. `advance` (pure) extends the latest version or starts a new one; the SQLite
tables live in the daemon's state.sqlite3, so `run` and a cron `audit` share one history.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from probe.audit.served import ParentServed, Served, group_keys, tag_of
from probe.errors import ConfigError

DNSKEY = "dnskey"
SIGNING = "signing"
KSK_SIGNING = "ksk-signing"
DS = "ds"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_versions (
    zone TEXT NOT NULL,
    server TEXT NOT NULL,
    kind TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    ttl INTEGER,
    content TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'ns',
    gone_at REAL,
    PRIMARY KEY (zone, server, kind, first_seen)
);
CREATE TABLE IF NOT EXISTS audit_zones (
    zone TEXT PRIMARY KEY,
    first_pass REAL NOT NULL,
    last_pass REAL NOT NULL,
    inconsistent_since REAL
);
"""

# Versions older than this (by last_seen) are dropped, except each server's latest of a kind;
# and at most MAX_VERSIONS per server and kind are kept (a server flapping between two answers
# every pass must not grow the history without bound).
KEEP_S = 90 * 86400.0
MAX_VERSIONS = 200


@dataclass(frozen=True, slots=True)
class Version:
    """One server serving one content of one kind, in one role, from first_seen to last_seen.

    A server's role is part of a version: what a standby signed before it became a name server
    (a failover) is not use of its keys by a server resolvers ask."""

    server: str
    kind: str
    content: frozenset[str]
    ttl: int | None  # the largest capped TTL seen while it was served
    first_seen: float
    last_seen: float
    role: str = "ns"
    # The first pass after last_seen that did not hear it from this server (it stopped
    # answering, or left the NS set): the latest it may have been served. None while heard.
    gone_at: float | None = None


@dataclass(frozen=True, slots=True)
class ZoneMeta:
    """When the zone's history began, its last pass, and since when its servers disagree."""

    first_pass: float
    last_pass: float
    inconsistent_since: float | None = None


Seen = tuple[str, str, frozenset[str], int | None, str]  # server, kind, content, ttl, role
PARENT = "parent"  # the role of a parent zone's server


def observed(servers: Iterable[Served], parents: Iterable[ParentServed]) -> list[Seen]:
    """What this pass saw; servers that did not answer say nothing. Signing is recorded as
    signer groups (the keys signing each RRset)."""
    out: list[Seen] = []
    for s in servers:
        if s.answered:
            r = s.role.value
            out += [(s.server, DNSKEY, s.keys, s.dnskey_ttl, r),
                    (s.server, SIGNING, s.signer_groups, None, r),
                    (s.server, KSK_SIGNING, s.ksk_signers, None, r)]
    for p in parents:
        if p.answered:
            out.append((p.server, DS, p.ds, p.ttl, PARENT))
    return out


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def advance(history: Sequence[Version], seen: Iterable[Seen], *, now: float
            ) -> tuple[list[Version], list[tuple[Version | None, Version]]]:
    """The history after this pass, and the changes it made: (previous latest, new version) for
    each server and kind whose content changed (previous None on first sight)."""
    latest: dict[tuple[str, str], int] = {}
    out = list(history)
    for i, v in enumerate(out):
        j = latest.get((v.server, v.kind))
        if j is None or out[j].first_seen < v.first_seen:
            latest[(v.server, v.kind)] = i
    changes: list[tuple[Version | None, Version]] = []
    for server, kind, content, ttl, role in seen:
        j = latest.get((server, kind))
        prev = None if j is None else out[j]
        if j is not None and prev is not None and (prev.content, prev.role) == (content, role):
            out[j] = replace(prev, last_seen=max(prev.last_seen, now), ttl=_max(prev.ttl, ttl),
                             gone_at=None)
            continue
        new = Version(server, kind, content, ttl, now, now, role)
        latest[(server, kind)] = len(out)
        out.append(new)
        if prev is None or prev.content != content:  # a role change alone is no key change
            changes.append((prev, new))
    for i in latest.values():  # not heard this pass: mark when it was first missed
        v = out[i]
        if v.last_seen < now and v.gone_at is None:
            out[i] = replace(v, gone_at=now)
    return out, changes


class AuditHistory:
    """The audit tables on a state database connection (autocommit; one transaction per save)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute("PRAGMA busy_timeout = 10000")  # `run` and a cron `audit` may share it
        db.executescript(_SCHEMA)

    @classmethod
    def open(cls, state_dir: Path) -> AuditHistory:
        """The history in state_dir/state.sqlite3 (created if missing), without the daemon's
        lock: `audit` from cron may run beside `dnssec-probe run` on the same directory."""
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(state_dir / "state.sqlite3", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            return cls(db)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the audit history ({exc})",
                              path=str(state_dir)) from None

    def close(self) -> None:
        self.db.close()

    def load(self, zone: str) -> tuple[list[Version], ZoneMeta | None]:
        rows = self.db.execute(
            "SELECT server, kind, content, ttl, first_seen, last_seen, role, gone_at"
            " FROM audit_versions WHERE zone = ? ORDER BY first_seen", (zone,)).fetchall()
        versions = [Version(r[0], r[1], frozenset(json.loads(r[2])), r[3], r[4], r[5], r[6], r[7])
                    for r in rows]
        m = self.db.execute("SELECT first_pass, last_pass, inconsistent_since FROM audit_zones"
                            " WHERE zone = ?", (zone,)).fetchone()
        return versions, (None if m is None else ZoneMeta(m[0], m[1], m[2]))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Load, advance and save of one zone in one write transaction: a cron `audit` and the
        daemon recording passes of the same zone at once must not lose one."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def save(self, zone: str, versions: Sequence[Version], meta: ZoneMeta) -> None:
        """Write the zone's history after a pass (inside transaction()), dropping versions past
        KEEP_S and beyond MAX_VERSIONS per server and kind."""
        db = self.db
        db.execute("DELETE FROM audit_versions WHERE zone = ?", (zone,))
        db.executemany(
            "INSERT INTO audit_versions (zone, server, kind, first_seen, last_seen, ttl,"
            " content, role, gone_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [(zone, v.server, v.kind, v.first_seen, v.last_seen, v.ttl,
              json.dumps(sorted(v.content)), v.role, v.gone_at)
             for v in prune(versions, meta.last_pass)])
        db.execute(
            "INSERT INTO audit_zones (zone, first_pass, last_pass, inconsistent_since)"
            " VALUES (?,?,?,?) ON CONFLICT(zone) DO UPDATE SET last_pass=excluded.last_pass,"
            " inconsistent_since=excluded.inconsistent_since",
            (zone, meta.first_pass, meta.last_pass, meta.inconsistent_since))


def prune(versions: Sequence[Version], now: float) -> list[Version]:
    """Versions to keep: seen within KEEP_S, and the latest MAX_VERSIONS per server and kind
    (each server's latest always)."""
    by: dict[tuple[str, str], list[Version]] = {}
    for v in versions:
        by.setdefault((v.server, v.kind), []).append(v)
    keep: list[Version] = []
    for vs in by.values():
        vs.sort(key=lambda v: v.first_seen)
        recent = [v for v in vs[:-1] if now - v.last_seen < KEEP_S][-(MAX_VERSIONS - 1):]
        keep += [*recent, vs[-1]]
    return sorted(keep, key=lambda v: v.first_seen)


def key_history(versions: Sequence[Version]) -> list[dict[str, object]]:
    """Each key (by full key, tag for display) per server: first and last seen published and
    signing, derived from the versions."""
    what = {DNSKEY: "published", SIGNING: "signing", KSK_SIGNING: "signing"}
    times: dict[tuple[str, str], dict[str, float]] = {}
    for v in versions:
        if v.kind not in what:
            continue
        keys = {k for g in v.content for k in group_keys(g)} if v.kind == SIGNING else v.content
        for k in keys:
            row = times.setdefault((v.server, k), {})
            first, last = f"{what[v.kind]}_first", f"{what[v.kind]}_last"
            row[first] = min(row.get(first, v.first_seen), v.first_seen)
            row[last] = max(row.get(last, v.last_seen), v.last_seen)
    return [{"server": server, "keytag": tag_of(key), "key": key, **row}
            for (server, key), row in sorted(times.items(), key=lambda kv: (kv[0][0], tag_of(kv[0][1])))]
