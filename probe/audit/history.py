"""Audit history: what each server served over time, as versions, kept in the state directory.

A version is one continuous stretch in which a server served the same content of one kind:
`dnskey` (the key ids of its DNSKEY RRset), `signing` (keys signing the zone's data),
`ksk-signing` (keys signing the DNSKEY RRset) or `ds` (a parent server's DS ids). Contents are
compared, never TTLs. `advance` (pure) extends the latest version or starts a new one; the SQLite
tables live in the daemon's state.sqlite3, so `run` and a cron `audit` share one history.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from probe.audit.served import ParentServed, Served, tag_of
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
    PRIMARY KEY (zone, server, kind, first_seen)
);
CREATE TABLE IF NOT EXISTS audit_zones (
    zone TEXT PRIMARY KEY,
    first_pass REAL NOT NULL,
    last_pass REAL NOT NULL,
    inconsistent_since REAL
);
"""

# Versions older than this (by last_seen) are dropped, except each server's latest of a kind.
KEEP_S = 90 * 86400.0


@dataclass(frozen=True, slots=True)
class Version:
    """One server serving one content of one kind from first_seen to last_seen."""

    server: str
    kind: str
    content: frozenset[str]
    ttl: int | None  # the largest capped TTL seen while it was served
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class ZoneMeta:
    """When the zone's history began, its last pass, and since when its servers disagree."""

    first_pass: float
    last_pass: float
    inconsistent_since: float | None = None


def observed(servers: Iterable[Served], parents: Iterable[ParentServed]
             ) -> list[tuple[str, str, frozenset[str], int | None]]:
    """(server, kind, content, ttl) this pass saw; servers that did not answer say nothing."""
    out: list[tuple[str, str, frozenset[str], int | None]] = []
    for s in servers:
        if s.answered:
            out += [(s.server, DNSKEY, s.keys, s.dnskey_ttl), (s.server, SIGNING, s.signers, None),
                    (s.server, KSK_SIGNING, s.ksk_signers, None)]
    for p in parents:
        if p.answered:
            out.append((p.server, DS, p.ds, p.ttl))
    return out


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def advance(history: Sequence[Version],
            seen: Iterable[tuple[str, str, frozenset[str], int | None]], *, now: float
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
    for server, kind, content, ttl in seen:
        j = latest.get((server, kind))
        prev = None if j is None else out[j]
        if j is not None and prev is not None and prev.content == content:
            out[j] = replace(prev, last_seen=max(prev.last_seen, now), ttl=_max(prev.ttl, ttl))
            continue
        new = Version(server, kind, content, ttl, now, now)
        latest[(server, kind)] = len(out)
        out.append(new)
        changes.append((prev, new))
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
            "SELECT server, kind, content, ttl, first_seen, last_seen FROM audit_versions"
            " WHERE zone = ? ORDER BY first_seen", (zone,)).fetchall()
        versions = [Version(r[0], r[1], frozenset(json.loads(r[2])), r[3], r[4], r[5])
                    for r in rows]
        m = self.db.execute("SELECT first_pass, last_pass, inconsistent_since FROM audit_zones"
                            " WHERE zone = ?", (zone,)).fetchone()
        return versions, (None if m is None else ZoneMeta(m[0], m[1], m[2]))

    def save(self, zone: str, versions: Sequence[Version], meta: ZoneMeta) -> None:
        """Write the zone's history after a pass, dropping versions past KEEP_S (atomically)."""
        latest: dict[tuple[str, str], float] = {}
        for v in versions:
            latest[(v.server, v.kind)] = max(latest.get((v.server, v.kind), 0.0), v.first_seen)
        keep = [v for v in versions
                if meta.last_pass - v.last_seen < KEEP_S or latest[(v.server, v.kind)] == v.first_seen]
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM audit_versions WHERE zone = ?", (zone,))
            db.executemany(
                "INSERT INTO audit_versions (zone, server, kind, first_seen, last_seen, ttl,"
                " content) VALUES (?,?,?,?,?,?,?)",
                [(zone, v.server, v.kind, v.first_seen, v.last_seen, v.ttl,
                  json.dumps(sorted(v.content))) for v in keep])
            db.execute(
                "INSERT INTO audit_zones (zone, first_pass, last_pass, inconsistent_since)"
                " VALUES (?,?,?,?) ON CONFLICT(zone) DO UPDATE SET last_pass=excluded.last_pass,"
                " inconsistent_since=excluded.inconsistent_since",
                (zone, meta.first_pass, meta.last_pass, meta.inconsistent_since))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def key_history(self, zone: str) -> list[dict[str, object]]:
        """Per server and key: first/last seen published and signing (from the versions)."""
        versions, _ = self.load(zone)
        return key_history(versions)


def key_history(versions: Sequence[Version]) -> list[dict[str, object]]:
    """Each key (by full key, tag for display) per server: first and last seen published and
    signing, derived from the versions."""
    what = {DNSKEY: "published", SIGNING: "signing", KSK_SIGNING: "signing"}
    times: dict[tuple[str, str], dict[str, float]] = {}
    for v in versions:
        if v.kind not in what:
            continue
        for k in v.content:
            row = times.setdefault((v.server, k), {})
            first, last = f"{what[v.kind]}_first", f"{what[v.kind]}_last"
            row[first] = min(row.get(first, v.first_seen), v.first_seen)
            row[last] = max(row.get(last, v.last_seen), v.last_seen)
    return [{"server": server, "keytag": tag_of(key), "key": key, **row}
            for (server, key), row in sorted(times.items(), key=lambda kv: (kv[0][0], tag_of(kv[0][1])))]
