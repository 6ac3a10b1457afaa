"""Raw observations: everything a reply said, as plain frozen data that serialises to JSON and back.

Observations are collected by the engine and never interpreted here; the classifier and the
diagnosis read them, so a recorded sweep replays through the same decisions in unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class Outcome(StrEnum):
    """How a single query ended, before any interpretation."""

    REPLY = "reply"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    MALFORMED = "malformed-reply"
    TCP_FAILED = "tcp-failed"
    PORT_UNREACHABLE = "port-unreachable"
    IO_ERROR = "io-error"
    SKIPPED = "resolver-dead"


@dataclass(frozen=True, slots=True)
class EdeObs:
    """One Extended DNS Error option (RFC 8914)."""

    code: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class RRsetObs:
    """An RRset as received: owner, type, TTL, rdata and covering RRSIGs in presentation format."""

    name: str
    rdtype: str
    ttl: int
    rdatas: tuple[str, ...]
    rrsigs: tuple[str, ...] = ()


# Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2).
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_AD = 0x0020
FLAG_CD = 0x0010


class Observation(NamedTuple):
    """One query to one server and what came back (or that nothing did).

    A NamedTuple, not a frozen dataclass: just as immutable, and built ~5x faster (0.35 against
    1.8 us, measured), which counts on the hot path where one is made per check."""

    server_name: str  # resolver name, or "auth:<host>" for an authoritative server
    address: str
    port: int
    qname: str
    qtype: str
    rd: bool
    cd: bool
    # wall-clock seconds (epoch) when the answered attempt was sent (else the first attempt)
    started: float
    outcome: Outcome
    transport: str = "udp"
    attempts: int = 1
    rtt_ms: float | None = None
    rcode: int | None = None
    flags: int | None = None
    ede: tuple[EdeObs, ...] = ()
    answer: tuple[RRsetObs, ...] = ()
    authority: tuple[RRsetObs, ...] = ()
    # False when only the fixed header was read (plainly secure reply on the hot path).
    parsed: bool = True
    detail: str = ""
    # NSID (RFC 5001) of the instance that answered: printable ASCII as is, else hex.
    nsid: str | None = None

    @property
    def ad(self) -> bool:
        return self.flags is not None and bool(self.flags & FLAG_AD)

    @property
    def tc(self) -> bool:
        return self.flags is not None and bool(self.flags & FLAG_TC)

    @property
    def received(self) -> float | None:
        """Wall-clock time the reply arrived (TTLs in it count down from here)."""
        if self.rtt_ms is None:
            return None
        return self.started + self.rtt_ms / 1000.0

    def rrsets(self, rdtype: str, name: str | None = None) -> list[RRsetObs]:
        """Answer RRsets of `rdtype` (optionally owned by `name`, case-insensitive)."""
        want = name.lower() if name else None
        return [
            r for r in self.answer
            if r.rdtype == rdtype and (want is None or r.name.lower() == want)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "server_name": self.server_name,
            "address": self.address,
            "port": self.port,
            "qname": self.qname,
            "qtype": self.qtype,
            "rd": self.rd,
            "cd": self.cd,
            "started": self.started,
            "outcome": self.outcome.value,
            "transport": self.transport,
            "attempts": self.attempts,
            "rtt_ms": self.rtt_ms,
            "rcode": self.rcode,
            "flags": self.flags,
            "ede": [{"code": e.code, "text": e.text} for e in self.ede],
            "answer": [_rrset_to_dict(r) for r in self.answer],
            "authority": [_rrset_to_dict(r) for r in self.authority],
            "parsed": self.parsed,
            "detail": self.detail,
            "nsid": self.nsid,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        return cls(
            server_name=str(d["server_name"]),
            address=str(d["address"]),
            port=int(d["port"]),
            qname=str(d["qname"]),
            qtype=str(d["qtype"]),
            rd=bool(d["rd"]),
            cd=bool(d["cd"]),
            started=float(d["started"]),
            outcome=Outcome(d["outcome"]),
            transport=str(d.get("transport", "udp")),
            attempts=int(d.get("attempts", 1)),
            rtt_ms=None if d.get("rtt_ms") is None else float(d["rtt_ms"]),
            rcode=None if d.get("rcode") is None else int(d["rcode"]),
            flags=None if d.get("flags") is None else int(d["flags"]),
            ede=tuple(EdeObs(int(e["code"]), str(e.get("text", ""))) for e in d.get("ede", ())),
            answer=tuple(_rrset_from_dict(r) for r in d.get("answer", ())),
            authority=tuple(_rrset_from_dict(r) for r in d.get("authority", ())),
            parsed=bool(d.get("parsed", True)),
            detail=str(d.get("detail", "")),
            nsid=None if d.get("nsid") is None else str(d["nsid"]),
        )


def _rrset_to_dict(r: RRsetObs) -> dict[str, Any]:
    return {"name": r.name, "rdtype": r.rdtype, "ttl": r.ttl,
            "rdatas": list(r.rdatas), "rrsigs": list(r.rrsigs)}


def _rrset_from_dict(d: dict[str, Any]) -> RRsetObs:
    return RRsetObs(str(d["name"]), str(d["rdtype"]), int(d["ttl"]),
                    tuple(str(x) for x in d["rdatas"]), tuple(str(x) for x in d.get("rrsigs", ())))


# NSID (RFC 5001 §2.3: opaque octets) as shown: at most this many octets, longer ones cut.
NSID_SHOWN = 64


def nsid_text(raw: bytes) -> str:
    """An NSID payload as text: printable ASCII as is, otherwise lower-case hex; never raises.

    Only the first NSID_SHOWN octets are shown; a longer payload (a hostile reply may carry
    up to 64 KiB) is cut and marked with its full length, e.g. "...(300 octets)".
    """
    shown = raw[:NSID_SHOWN]
    text = shown.decode("ascii") if all(0x20 <= b < 0x7F for b in shown) else shown.hex()
    if len(raw) > NSID_SHOWN:
        text += f"...({len(raw)} octets)"
    return text
