"""DNS wire work: build each query's wire once, triage replies on the fixed header, parse the rest.

The triage is the one place that reads DNS bytes without dnspython; it only ever says "plainly
secure" or "parse me", and every reply that is not plainly secure goes through dnspython.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from probe.observation import EdeObs, RRsetObs

EDNS_PAYLOAD = 1232  # DNS flag day 2020: avoids IP fragmentation


@dataclass(frozen=True, slots=True)
class QueryTemplate:
    """A query's wire form built once; only the 16-bit ID changes per send."""

    qname: str
    qtype: str
    rd: bool
    cd: bool
    wire: bytes  # ID bytes are zero; patched per send
    qname_wire_lower: bytes  # question name, lower case, for matching replies
    typeclass: bytes  # QTYPE + QCLASS wire

    @property
    def question_len(self) -> int:
        return len(self.qname_wire_lower) + 4

    def with_id(self, qid: int) -> bytes:
        return qid.to_bytes(2, "big") + self.wire[2:]

    def matches_question(self, reply: bytes) -> bool:
        """Does `reply` carry exactly our question (name compared case-insensitively, RFC 4343)?"""
        n = len(self.qname_wire_lower)
        return (
            reply[4:6] == b"\x00\x01"
            and reply[12 : 12 + n].lower() == self.qname_wire_lower
            and reply[12 + n : 16 + n] == self.typeclass
        )


def make_template(
    qname: str, qtype: str, *, rd: bool = True, cd: bool = False, payload: int = EDNS_PAYLOAD
) -> QueryTemplate:
    """Build an EDNS0 query with DO=1 (RFC 4035 §3.2.1) and the given RD/CD bits."""
    q = dns.message.make_query(
        qname, qtype, use_edns=0, want_dnssec=True, payload=payload
    )
    q.id = 0
    q.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    wire = q.to_wire()
    name = dns.name.from_text(qname)
    name_wire = name.to_wire()
    assert name_wire is not None
    rdtype = dns.rdatatype.from_text(qtype)
    typeclass = int(rdtype).to_bytes(2, "big") + int(dns.rdataclass.IN).to_bytes(2, "big")
    return QueryTemplate(
        qname=name.to_text(), qtype=dns.rdatatype.to_text(rdtype), rd=rd, cd=cd, wire=wire,
        qname_wire_lower=name_wire.lower(), typeclass=typeclass,
    )


class TemplateCache:
    """Query templates built once and reused: building costs far more than sending, and a
    daemon asks the same names every round."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str, bool, bool], QueryTemplate] = {}

    def get(self, qname: str, qtype: str, *, rd: bool = True, cd: bool = False) -> QueryTemplate:
        key = (qname, qtype, rd, cd)
        t = self._built.get(key)
        if t is None:
            t = self._built[key] = make_template(qname, qtype, rd=rd, cd=cd)
        return t


# Fixed-header masks (RFC 1035 §4.1.1): QR, OPCODE, TC in byte 2; AD, RCODE in byte 3.
_B2_CHECK = 0x80 | 0x78 | 0x02
_B2_EXPECT = 0x80  # QR=1, OPCODE=QUERY, TC=0
_B3_CHECK = 0x20 | 0x0F
_B3_EXPECT = 0x20  # AD=1, RCODE=NOERROR


def plainly_secure(reply: bytes) -> bool:
    """True only for NOERROR, AD=1, TC=0, an answer, and a final empty OPT (so no EDE to read).

    Anything else (errors, no AD, truncation, EDNS options, extended rcode) returns False and the
    caller must parse the reply fully. The question was already matched by the transport.
    """
    return (
        len(reply) >= 23
        and reply[2] & _B2_CHECK == _B2_EXPECT
        and reply[3] & _B3_CHECK == _B3_EXPECT
        and reply[6:8] != b"\x00\x00"  # ANCOUNT > 0
        and reply[10:12] != b"\x00\x00"  # ARCOUNT > 0 (the OPT)
        # last RR: root owner, TYPE=OPT(41), ext-rcode 0, version 0, RDLEN 0
        and reply[-11:-8] == b"\x00\x00\x29"
        and reply[-6:-4] == b"\x00\x00"
        and reply[-2:] == b"\x00\x00"
    )


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What the full dnspython parse extracts for an Observation."""

    rcode: int
    flags: int
    ede: tuple[EdeObs, ...]
    answer: tuple[RRsetObs, ...]
    authority: tuple[RRsetObs, ...]


def _section(rrsets: list[dns.rrset.RRset]) -> tuple[RRsetObs, ...]:
    sigs: dict[tuple[dns.name.Name, int], list[str]] = {}
    data: list[dns.rrset.RRset] = []
    for rrset in rrsets:
        if rrset.rdtype == dns.rdatatype.RRSIG:
            sigs.setdefault((rrset.name, int(rrset.covers)), []).extend(
                r.to_text() for r in rrset
            )
        else:
            data.append(rrset)
    out = [
        RRsetObs(
            name=r.name.to_text().lower(),
            rdtype=dns.rdatatype.to_text(r.rdtype),
            ttl=int(r.ttl),
            rdatas=tuple(sorted(x.to_text() for x in r)),
            rrsigs=tuple(sigs.pop((r.name, int(r.rdtype)), ())),
        )
        for r in data
    ]
    # Signatures whose data is absent (possible in a broken reply) are kept, under type RRSIG.
    for (name, covers), texts in sigs.items():
        covered = dns.rdatatype.to_text(dns.rdatatype.RdataType(covers))
        out.append(RRsetObs(name.to_text().lower(), f"RRSIG:{covered}", 0, (), tuple(texts)))
    return tuple(out)


def parse_reply(reply: bytes) -> ParsedReply:
    """Full parse with dnspython. Raises dns.exception.DNSException on malformed wire."""
    msg = dns.message.from_wire(reply, ignore_trailing=True)
    ede = tuple(
        EdeObs(int(opt.code), opt.text or "")
        for opt in msg.options
        if isinstance(opt, dns.edns.EDEOption)
    )
    return ParsedReply(
        rcode=int(msg.rcode()),
        flags=int(msg.flags),
        ede=ede,
        answer=_section(msg.answer),
        authority=_section(msg.authority),
    )


MalformedWire = dns.exception.DNSException
