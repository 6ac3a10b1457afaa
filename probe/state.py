"""Daemon state in SQLite (state_dir/state.sqlite3): incidents, the alert outbox, round counter.

An incident transition and the alerts it causes are committed in one transaction, so a crash or
a restart neither loses an open incident nor opens or pages it a second time.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.errors import ConfigError
from probe.incidents import SOURCE_AUDIT, SOURCE_RESOLVERS, Incident, audit_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    opened_at REAL NOT NULL,
    resolved_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (resolved_at);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    rejected INTEGER NOT NULL DEFAULT 0,  -- refused by the receiver: kept, never retried
    UNIQUE (channel, key)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An alert to deliver on one channel; `key` makes enqueueing the same alert twice a no-op."""

    channel: str
    key: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    channel: str
    key: str
    body: dict[str, Any]
    created: float
    attempts: int
    next_try: float
    last_error: str


class StateLocked(ConfigError):
    """Another dnssec-probe process holds this state directory."""


class StateStore:
    """One daemon's state; the directory is locked for the life of the store."""

    def __init__(self, state_dir: Path, *, lock: bool = True) -> None:
        self.dir = state_dir
        self._lock_fd: int | None = None
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create state directory ({exc.strerror})",
                              path=str(state_dir)) from None
        if lock:
            fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StateLocked("another dnssec-probe run uses this state directory",
                                  path=str(state_dir)) from None
            self._lock_fd = fd
        self.db = sqlite3.connect(state_dir / "state.sqlite3", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout = 10000")  # a cron `audit` may write beside us
        self.db.executescript(_SCHEMA)

    @classmethod
    def reader(cls, state_dir: Path) -> StateStore:
        """Read-only access for `dnssec-probe incidents`, beside a running daemon, as any user
        who may read the files: no lock, no schema changes."""
        path = state_dir / "state.sqlite3"
        if not path.is_file():
            raise ConfigError("no daemon state here (state.sqlite3 missing)", path=str(state_dir))
        store = cls.__new__(cls)
        store.dir, store._lock_fd = state_dir, None
        try:
            store.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            store.db.execute("SELECT 1 FROM incidents LIMIT 1")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the daemon state ({exc})", path=str(path)) from None
        return store

    def close(self) -> None:
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- incidents ---------------------------------------------------------------------------

    def open_incidents(self) -> dict[str, Incident]:
        """Open validation incidents by zone (the audit's are in open_audit_incidents)."""
        return {i.zone: i for i in self._open() if i.source == SOURCE_RESOLVERS}

    def open_audit_incidents(self) -> dict[str, Incident]:
        """Open paged audit findings by audit_key (zone and finding code)."""
        return {audit_key(i.zone, i.kind): i for i in self._open() if i.source == SOURCE_AUDIT}

    def _open(self) -> list[Incident]:
        rows = self.db.execute("SELECT data FROM incidents WHERE resolved_at IS NULL").fetchall()
        return [Incident.from_dict(json.loads(r[0])) for r in rows]

    def incidents(self, *, include_resolved: bool = False, limit: int = 1000) -> list[Incident]:
        where = "" if include_resolved else "WHERE resolved_at IS NULL"
        rows = self.db.execute(
            f"SELECT data FROM incidents {where} ORDER BY opened_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [Incident.from_dict(json.loads(r[0])) for r in rows]

    def commit_round(self, round_no: int, incidents: Iterable[Incident],
                     outbox: Iterable[OutboxItem], *, now: float) -> None:
        """Store changed incidents, queue their alerts and the round number, atomically."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO incidents (id, zone, opened_at, resolved_at, data) VALUES (?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET resolved_at=excluded.resolved_at, data=excluded.data",
                [(i.id, i.zone, i.opened_at, i.resolved_at, json.dumps(i.to_dict()))
                 for i in incidents],
            )
            db.executemany(
                "INSERT OR IGNORE INTO outbox (channel, key, body, created, next_try)"
                " VALUES (?,?,?,?,?)",
                [(o.channel, o.key, json.dumps(o.body), now, now) for o in outbox],
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_round', ?)",
                       (str(round_no),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def last_round(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='last_round'").fetchone()
        return int(row[0]) if row else 0

    # -- alert outbox ------------------------------------------------------------------------

    def outbox_pending(self, channel: str, *, limit: int = 100) -> list[OutboxRow]:
        """A channel's queued alerts, oldest first, due or not: a channel sends in order, so
        an alert waiting for its retry holds back the later ones (no resolve before its open)."""
        rows = self.db.execute(
            "SELECT seq, channel, key, body, created, attempts, next_try, last_error FROM outbox"
            " WHERE channel = ? AND rejected = 0 ORDER BY seq LIMIT ?", (channel, limit)).fetchall()
        return [OutboxRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def outbox_done(self, seq: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def outbox_retry(self, seq: int, *, next_try: float, error: str) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_try = ?, last_error = ? WHERE seq = ?",
            (next_try, error, seq),
        )

    def outbox_reject(self, seq: int, *, error: str) -> None:
        """The receiver refused this alert as a bad request: keep it (for people), stop trying."""
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, rejected = 1, last_error = ? WHERE seq = ?",
            (error, seq))

    def outbox_size(self) -> int:
        """Alerts still to deliver (rejected ones not counted)."""
        return int(self.db.execute("SELECT count(*) FROM outbox WHERE rejected = 0").fetchone()[0])

    def outbox_rejected(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox WHERE rejected = 1").fetchone()[0])

    def outbox_channels(self) -> set[str]:
        """Channels that still have alerts to deliver."""
        rows = self.db.execute("SELECT DISTINCT channel FROM outbox WHERE rejected = 0")
        return {r[0] for r in rows}

    def outbox_drop_channel(self, channel: str) -> int:
        """Forget the queued alerts of a channel no longer configured; how many there were."""
        cur = self.db.execute("DELETE FROM outbox WHERE channel = ? AND rejected = 0", (channel,))
        return int(cur.rowcount)
