"""Raw audit observations: what every server of a zone (and its parent's) served in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from probe.observation import Observation


class Role(StrEnum):
    """Why a server is asked: a name server of the zone, the active signer, or a standby."""

    NS = "ns"
    PRIMARY = "primary"
    STANDBY = "standby"


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """One server's answers (RD=0, DO=1) for the zone's DNSKEY, SOA and probe names."""

    server: str  # address, with the port when it is not 53
    role: Role
    dnskey: Observation
    soa: Observation
    answers: tuple[Observation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "role": self.role.value, "dnskey": self.dnskey.to_dict(),
                "soa": self.soa.to_dict(), "answers": [a.to_dict() for a in self.answers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServerSnapshot:
        return cls(str(d["server"]), Role(d["role"]), Observation.from_dict(d["dnskey"]),
                   Observation.from_dict(d["soa"]),
                   tuple(Observation.from_dict(a) for a in d.get("answers", ())))


@dataclass(frozen=True, slots=True)
class ParentSnapshot:
    """The zone's DS RRset as one server of the parent zone serves it (RD=0)."""

    server: str
    ds: Observation

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "ds": self.ds.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParentSnapshot:
        return cls(str(d["server"]), Observation.from_dict(d["ds"]))


@dataclass(frozen=True, slots=True)
class ZoneSnapshot:
    """One audit pass over one zone: every server's answers, the parent's DS, and notes."""

    zone: str
    at: float  # when the pass started (wall clock)
    servers: tuple[ServerSnapshot, ...]
    parent: str | None = None
    parent_ds: tuple[ParentSnapshot, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"zone": self.zone, "at": self.at, "servers": [s.to_dict() for s in self.servers],
                "parent": self.parent, "parent_ds": [p.to_dict() for p in self.parent_ds],
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ZoneSnapshot:
        return cls(str(d["zone"]), float(d["at"]),
                   tuple(ServerSnapshot.from_dict(s) for s in d["servers"]),
                   None if d.get("parent") is None else str(d["parent"]),
                   tuple(ParentSnapshot.from_dict(p) for p in d.get("parent_ds", ())),
                   tuple(str(n) for n in d.get("notes", ())))
