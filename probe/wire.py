"""DNS wire work: build each query's wire once, triage replies structurally, parse the rest.

The triage is the one place that reads DNS bytes without dnspython; it only ever says "plainly
secure" or "parse me", and every reply that is not plainly secure goes through dnspython.
"""

from __future__ import annotations

import functools
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from probe.observation import EdeObs, RRsetObs, nsid_text

EDNS_PAYLOAD = 1232  # DNS flag day 2020: avoids IP fragmentation

# A reply the structural walk accepted: (length, reply, offsets of its TTL fields, once
# compared against: ((offset, bytes), ...) covering every byte from the counts to the end
# except the TTL fields and the last `tail` bytes, tail: 11 (an empty final OPT, checked
# apart) or 0 (a final OPT holding an NSID, compared with the rest)).
_Segments = tuple[tuple[int, bytes], ...]
_Shape = tuple[int, bytes, list[int], _Segments | None, int]


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
    # Last reply shape plainly_secure accepted for this question (a one-slot memo; see there).
    shape: list[_Shape | None] = field(default_factory=lambda: [None], compare=False, repr=False)

    @property
    def question_len(self) -> int:
        return len(self.qname_wire_lower) + 4

    def with_id(self, qid: int) -> bytes:
        return qid.to_bytes(2, "big") + self.wire[2:]

    def matches_question(self, reply: bytes) -> bool:
        """Does `reply` carry exactly our question (name compared case-insensitively, RFC 4343)?"""
        q = self.qname_wire_lower
        n = len(q)
        return (
            len(reply) > 12 and reply[4] == 0 and reply[5] == 1  # QDCOUNT 1
            # Resolvers echo the question as sent (lower case): compare without a copy first.
            and (reply.startswith(q, 12) or reply[12 : 12 + n].lower() == q)
            and reply.startswith(self.typeclass, 12 + n)
        )


# A name in presentation form that needs no escaping or conversion: lower-case LDH labels
# (and '_', as in SRV-style names), absolute. Anything else goes through dnspython.
_PLAIN_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+\Z")
_TYPES = {"PTR": 12, "SOA": 6, "A": 1, "AAAA": 28, "NS": 2, "DS": 43, "DNSKEY": 48, "TXT": 16,
          "CNAME": 5, "MX": 15, "SRV": 33}
_FLAG_RD, _FLAG_CD = 0x0100, 0x0010
_DO = 0x8000


_LENGTH_OCTET = [bytes((n,)) for n in range(64)]


@functools.lru_cache(maxsize=64)
def _query_parts(code: int, rd: bool, cd: bool, payload: int,
                 nsid: bool) -> tuple[bytes, bytes, bytes]:
    """(header, QTYPE+QCLASS, OPT record) of a plain query: the same for every name."""
    flags = (_FLAG_RD if rd else 0) | (_FLAG_CD if cd else 0)
    typeclass = code.to_bytes(2, "big") + b"\x00\x01"
    rdata = b"\x00\x03\x00\x00" if nsid else b""  # NSID, empty (RFC 5001 §2.1)
    opt = (b"\x00\x00\x29" + payload.to_bytes(2, "big") + b"\x00\x00"
           + _DO.to_bytes(2, "big") + len(rdata).to_bytes(2, "big") + rdata)
    header = b"\x00\x00" + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x01"
    return header, typeclass, opt


def _plain_template(qname: str, qtype: str, *, rd: bool, cd: bool, payload: int,
                    nsid: bool) -> QueryTemplate | None:
    """The IN-class query of make_template, built from bytes for a plain name and a common type
    (the per-name cost of a sweep: ~100x cheaper than dnspython); None when not plain."""
    code = _TYPES.get(qtype)
    if code is None or len(qname) > 254 or _PLAIN_NAME.match(qname) is None:
        return None
    octet = _LENGTH_OCTET
    name_wire = b"".join([octet[len(label)] + label
                          for label in qname.encode("ascii").split(b".")[:-1]]) + b"\x00"
    header, typeclass, opt = _query_parts(code, rd, cd, payload, nsid)
    return QueryTemplate(qname, qtype, rd, cd, header + name_wire + typeclass + opt,
                         name_wire, typeclass)


def make_template(
    qname: str, qtype: str, *, rd: bool = True, cd: bool = False, payload: int = EDNS_PAYLOAD,
    nsid: bool = False, rdclass: str = "IN", dnssec: bool = True,
) -> QueryTemplate:
    """Build an EDNS0 query with DO=1 (RFC 4035 §3.2.1; `dnssec=False`: DO=0) and the given
    RD/CD bits; `nsid`: also ask which server instance answers (an empty NSID option, RFC 5001
    §2.1)."""
    if rdclass == "IN" and dnssec:
        fast = _plain_template(qname, qtype, rd=rd, cd=cd, payload=payload, nsid=nsid)
        if fast is not None:
            return fast
    return dnspython_template(qname, qtype, rd=rd, cd=cd, payload=payload, nsid=nsid,
                              rdclass=rdclass, dnssec=dnssec)


def dnspython_template(
    qname: str, qtype: str, *, rd: bool = True, cd: bool = False, payload: int = EDNS_PAYLOAD,
    nsid: bool = False, rdclass: str = "IN", dnssec: bool = True,
) -> QueryTemplate:
    """make_template through dnspython: any name, type and class (and the reference the fast
    path is tested against)."""
    options: list[dns.edns.Option] = [dns.edns.NSIDOption(b"")] if nsid else []
    q = dns.message.make_query(
        qname, qtype, rdclass=rdclass, use_edns=0, want_dnssec=dnssec, payload=payload,
        options=options,
    )
    q.id = 0
    q.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    wire = q.to_wire()
    name = dns.name.from_text(qname)
    name_wire = name.to_wire()
    assert name_wire is not None
    rdtype = dns.rdatatype.from_text(qtype)
    typeclass = int(rdtype).to_bytes(2, "big") + int(
        dns.rdataclass.from_text(rdclass)).to_bytes(2, "big")
    return QueryTemplate(
        qname=name.to_text(), qtype=dns.rdatatype.to_text(rdtype), rd=rd, cd=cd, wire=wire,
        qname_wire_lower=name_wire.lower(), typeclass=typeclass,
    )


def make_id_server_template(qname: str = "id.server.", *, nsid: bool = True) -> QueryTemplate:
    """A CHAOS-class TXT query for the answering server's own identity (`id.server.`, RFC 4892
    §2.3; BIND and Unbound also answer `hostname.bind.`): RD=0, EDNS0 without DO, and NSID."""
    return make_template(qname, "TXT", rd=False, nsid=nsid, rdclass="CH", dnssec=False)


def id_server_text(reply: bytes, qname: str = "id.server.") -> str | None:
    """The identity in a reply to make_id_server_template: the first CH TXT record owned by
    `qname`, its strings joined, shown as nsid_text shows an NSID (ASCII or hex, capped).
    None for anything else (refused, no such record, malformed); never raises."""
    try:
        msg = dns.message.from_wire(reply, ignore_trailing=True)
        want = dns.name.from_text(qname)
    except (dns.exception.DNSException, ValueError):
        return None
    if msg.rcode() != dns.rcode.NOERROR:
        return None
    for rrset in msg.answer:
        if (rrset.rdtype == dns.rdatatype.TXT and rrset.rdclass == dns.rdataclass.CH
                and rrset.name == want and len(rrset)):
            return nsid_text(b"".join(rrset[0].strings))
    return None


class TemplateCache:
    """Query templates built once and reused: building costs far more than sending, and a
    daemon asks the same names every round. Bounded (least recently used out), because the
    follow-up questions are about names learnt from replies. Every template asks for the NSID
    (RFC 5001) unless `nsid=False`: an anycast resolver's replies then name the instance."""

    def __init__(self, maxsize: int = 4096, *, nsid: bool = True) -> None:
        if maxsize < 1:
            raise ValueError("TemplateCache needs room for at least one template")
        self.maxsize = maxsize
        self.nsid = nsid
        self._built: OrderedDict[tuple[str, str, bool, bool], QueryTemplate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._built)

    def get(self, qname: str, qtype: str, *, rd: bool = True, cd: bool = False) -> QueryTemplate:
        key = (qname, qtype, rd, cd)
        built = self._built
        t = built.get(key)
        if t is None:
            t = built[key] = make_template(qname, qtype, rd=rd, cd=cd, nsid=self.nsid)
            if len(built) > self.maxsize:
                built.popitem(last=False)
        else:
            built.move_to_end(key)
        return t


# Fixed-header masks (RFC 1035 §4.1.1): QR, OPCODE, TC in byte 2; AD, RCODE in byte 3.
_B2_CHECK = 0x80 | 0x78 | 0x02
_B2_EXPECT = 0x80  # QR=1, OPCODE=QUERY, TC=0
_B3_CHECK = 0x20 | 0x0F
_B3_EXPECT = 0x20  # AD=1, RCODE=NOERROR

_COUNTS = struct.Struct("!HHHH").unpack_from  # QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT
_RR = struct.Struct("!HHIH").unpack_from  # TYPE, CLASS, TTL, RDLENGTH
_OWNED_RR = struct.Struct("!HHHIH").unpack_from  # a 2-octet owner (a pointer), then as _RR
_OPT_LEN = 11  # root owner + fixed RR fields, RDLENGTH 0
_NSID_OPT_LEN = 15  # an OPT holding one empty NSID option (RFC 5001)
_OPT_NSID = struct.Struct("!HHH").unpack_from  # RDLENGTH, OPTION-CODE, OPTION-LENGTH
_MIN_RR = 11  # the shortest RR: root owner + fixed fields

# RDATA the walk can check exactly as dnspython parses it (class IN only); any other type
# means "parse me". Positive: a fixed length.
_NAME, _SOA, _RRSIG = -1, -2, -3
_RDATA: dict[int, int] = {
    dns.rdatatype.A: 4, dns.rdatatype.AAAA: 16, dns.rdatatype.NS: _NAME,
    dns.rdatatype.PTR: _NAME, dns.rdatatype.SOA: _SOA, dns.rdatatype.RRSIG: _RRSIG,
}


# Names walked so far, as (offset, length of the name, pointers in it): where compression
# pointers may point, unfolded into `seen` label by label only when a pointer needs it.
_Walked = list[tuple[int, int, int]]


def _name_end(reply: bytes, p: int, limit: int, seen: dict[int, tuple[int, int]],
              walked: _Walked | None) -> int:
    """End of the name at `p`, which must end by `limit`; -1 if dnspython might reject it.

    Labels of 1-63 octets ending in the root label or in a compression pointer to a label of a
    name already walked (`seen`: offset -> (length of the name from there, pointers in it)), so
    the pointer points backwards, never into the name itself, the chain is at most 16 pointers
    and the whole name at most 255 octets (RFC 1035 §4.1.4; dnspython's rules). The name is
    then added to `walked`. `walked=None`: compression not allowed (RRSIG signer), not added.
    """
    start = p
    length = reply[p]
    while length:
        if length > 63:
            if length < 0xC0 or walked is None:
                return -1
            target = ((length & 0x3F) << 8) | reply[p + 1]
            tail = seen.get(target)
            if tail is None and walked:
                _unfold(reply, seen, walked)
                tail = seen.get(target)
            if tail is None or tail[1] >= 16:
                return -1
            size = p - start + tail[0]
            hops = tail[1] + 1
            p += 2
            break
        p += length + 1
        length = reply[p]
    else:
        p += 1
        size = p - start
        hops = 0
    if p > limit or size > 255:
        return -1
    if walked is not None:
        walked.append((start, size, hops))
    return p


def _unfold(reply: bytes, seen: dict[int, tuple[int, int]], walked: _Walked) -> None:
    for start, size, hops in walked:
        k = start
        length = reply[k]
        while 0 < length < 64:
            seen[k] = (size - (k - start), hops)
            k += length + 1
            length = reply[k]
    walked.clear()


def _nsid_opt_at(reply: bytes, p: int) -> bool:
    """Is everything from `p` to the end one OPT RR (root owner, extended RCODE 0, version 0)
    whose RDATA is exactly one NSID option (RFC 5001 §2.3: any octets) filling it?"""
    size = len(reply) - p - _NSID_OPT_LEN
    return (
        size >= 0
        and reply[p : p + 3] == b"\x00\x00\x29"
        and reply[p + 5 : p + 7] == b"\x00\x00"
        and _OPT_NSID(reply, p + 9) == (size + 4, 3, size)
    )


def _walk(reply: bytes, pos: int, empty_opt: bool = True) -> list[int] | None:
    """Structural walk of a reply whose fixed header passed the triage, and whose final 11
    bytes did too (an empty OPT) if `empty_opt`; else its final OPT must hold exactly one NSID
    option (an anycast resolver answering our NSID request: no EDE, so still plainly secure).

    Returns the offsets of the TTL fields if every byte is accounted for exactly as dnspython
    would parse it: one question; ANCOUNT+NSCOUNT+ARCOUNT RRs that end exactly where the final
    OPT starts (so no trailing bytes, no other OPT, counts that fit the bytes); answer RRs
    owned by the question name (a pointer to it), of the question type or RRSIG, at least one
    of the question type; only RDATA types whose wire it checks (A, AAAA, NS, PTR, SOA, RRSIG)
    in class IN. `pos`: where the question ends if the caller matched it, else 0 (walked here).
    """
    n = len(reply)
    try:
        qd, an, ns, ar = _COUNTS(reply, 4)
        if qd != 1 or not an or not ar:
            return None
        seen: dict[int, tuple[int, int]] = {}
        if not pos:
            pos = _name_end(reply, 12, n, seen, None)
            if pos < 0:
                return None
            pos += 4
        qname_end = pos - 4
        walked: _Walked = [(12, qname_end - 12, 0)]
        qtype = (reply[qname_end] << 8) | reply[qname_end + 1]
        end = n - (_OPT_LEN if empty_opt else _NSID_OPT_LEN)
        rrs = an + ns + ar - 1
        if rrs * _MIN_RR > end - pos:  # counts that cannot fit the bytes (ANCOUNT=65535)
            return None
        ttls: list[int] = []
        answered = False
        for i in range(rrs):
            # (12 octets are there: at least the final OPT follows)
            owner, rtype, rclass, _ttl, rdlen = _OWNED_RR(reply, pos)
            if owner == 0xC00C:  # a pointer to the question name
                pos += 2
            elif i < an:
                return None
            else:
                pos = _name_end(reply, pos, end, seen, walked)
                if pos < 0:
                    return None
                rtype, rclass, _ttl, rdlen = _RR(reply, pos)
            ttls.append(pos + 4)
            pos += 10
            r = pos + rdlen
            kind = _RDATA.get(rtype)
            if kind is None or rclass != 1 or r > end:
                return None
            if i < an:
                if rtype == qtype:
                    answered = True
                elif kind != _RRSIG:
                    return None
            if kind > 0:
                ok = rdlen == kind
            elif kind == _RRSIG:  # 18 fixed octets, uncompressed signer, signature
                ok = rdlen > 18 and _name_end(reply, pos + 18, r, seen, None) > 0
            elif kind == _NAME:
                ok = _name_end(reply, pos, r, seen, walked) == r
            else:  # SOA: two names, five 32-bit fields
                q = _name_end(reply, pos, r, seen, walked)
                ok = q > 0 and _name_end(reply, q, r, seen, walked) == r - 20
            if not ok:
                return None
            pos = r
        if not answered:
            return None
        return ttls if (pos == end if empty_opt else _nsid_opt_at(reply, pos)) else None
    except (IndexError, struct.error):
        return None


def plainly_secure(reply: bytes, tmpl: QueryTemplate | None = None) -> bool:
    """True only for NOERROR, AD=1, TC=0, an answer of the question's type owned by the
    question name, and a final OPT that is empty or holds only an NSID (so no EDE to read), in
    a reply dnspython accepts. The NSID of such a reply is not read (the fast path).

    Anything else (errors, no AD, truncation, other EDNS options, extended rcode, anything
    unusual or malformed) returns False and the caller must parse the reply fully. `tmpl`: the
    template the transport already matched the reply's question against (its question is then
    not walked again, and the accepted shape is remembered); without it the question is walked.
    """
    n = len(reply)
    if not (
        n >= 23
        and reply[2] & _B2_CHECK == _B2_EXPECT
        and reply[3] & _B3_CHECK == _B3_EXPECT
    ):
        return False
    # last RR: root owner, TYPE=OPT(41), ext-rcode 0, version 0, RDLEN 0; anything else at the
    # end is walked (an NSID option is the one thing it may hold; the rest is "parse me").
    empty = (
        reply[-11:-8] == b"\x00\x00\x29"
        and reply[-6:-4] == b"\x00\x00"
        and reply[-2:] == b"\x00\x00"
    )
    if tmpl is None:
        return _walk(reply, 0, empty) is not None
    # Replies to one question differ mostly in ID and TTLs, which neither dnspython nor this
    # verdict depends on (flags and an empty final OPT were checked above; an NSID OPT is
    # compared with the rest): a reply equal to an accepted one outside those fields is
    # accepted without walking it again.
    memo = tmpl.shape
    shape = memo[0]
    if shape is not None and shape[0] == n and (empty or not shape[4]):
        segs = shape[3]
        if segs is None:  # cut only when a second reply comes: a one-off costs no more
            segs = _segments(shape[1], shape[2], shape[4])
            memo[0] = (n, shape[1], shape[2], segs, shape[4])
        for off, seg in segs:
            if not reply.startswith(seg, off):
                break
        else:
            return True
    ttls = _walk(reply, 12 + tmpl.question_len, empty)
    if ttls is None:
        return False
    memo[0] = (n, reply, ttls, None, _OPT_LEN if empty else 0)
    return True


def _segments(reply: bytes, ttls: list[int], tail: int) -> _Segments:
    segs = []
    start = 4
    for t in ttls:
        segs.append((start, reply[start:t]))
        start = t + 4
    segs.append((start, reply[start : len(reply) - tail]))
    return tuple(segs)


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What the full dnspython parse extracts for an Observation."""

    rcode: int
    flags: int
    ede: tuple[EdeObs, ...]
    answer: tuple[RRsetObs, ...]
    authority: tuple[RRsetObs, ...]
    # dnspython rejected the EDNS options; they were decoded leniently (EDE, NSID kept).
    options_malformed: bool = False
    # The first NSID option (RFC 5001) as text (see observation.nsid_text); None: no NSID.
    nsid: str | None = None


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


_OPTION = struct.Struct("!HH").unpack_from  # OPTION-CODE, OPTION-LENGTH
_EDE = dns.edns.OptionType.EDE  # RFC 8914
_NSID = dns.edns.OptionType.NSID  # RFC 5001
# RFC 6891 §9: 65535 is reserved, so no EDNS option class decodes it (a neutral filler).
_FILLER_OPTION = 65535


def _opt_rdata(reply: bytes) -> tuple[int, int, bool] | None:
    """Where the OPT RR's RDATA is: (RDLENGTH offset, RDATA end, OPT is the last RR).

    A loose walk over the RR headers only (dnspython checks the rest); None unless there is
    exactly one OPT, in the additional section.
    """
    n = len(reply)
    try:
        qd, an, ns, ar = _COUNTS(reply, 4)
        if (qd + an + ns + ar) * 5 > n:
            return None
        pos = 12
        for _ in range(qd):
            pos = _skip_name(reply, pos)
            if pos < 0:
                return None
            pos += 4
        found: tuple[int, int, bool] | None = None
        total = an + ns + ar
        for i in range(total):
            pos = _skip_name(reply, pos)
            if pos < 0:
                return None
            rtype, _rclass, _ttl, rdlen = _RR(reply, pos)
            end = pos + 10 + rdlen
            if end > n:
                return None
            if rtype == dns.rdatatype.OPT:
                if found is not None or i < an + ns:
                    return None
                found = (pos + 8, end, i == total - 1)
            pos = end
        return found
    except (IndexError, struct.error):
        return None


def _skip_name(reply: bytes, p: int) -> int:
    """End of the name at `p` as dnspython frames it (labels, then root or a pointer); -1 for a
    label type dnspython rejects."""
    length = reply[p]
    while length:
        if length > 63:
            return p + 2 if length >= 0xC0 else -1
        p += length + 1
        length = reply[p]
    return p + 1


def _lenient_options(options: bytes) -> tuple[tuple[EdeObs, ...], str | None]:
    """EDE and NSID options from raw OPT RDATA, each on its own: EDE text decoded with
    replacement characters, EDE options too short to hold an INFO-CODE skipped, the first NSID
    kept (any octets, shown by nsid_text), other options ignored."""
    out: list[EdeObs] = []
    nsid: str | None = None
    p = 0
    while p + 4 <= len(options):
        code, size = _OPTION(options, p)
        p += 4
        body = options[p : p + size]
        p += size
        if len(body) < size:
            break  # runs past the OPT RDATA: nothing after it can be located
        if code == _EDE and size >= 2:
            text = body[2:]
            if text.endswith(b"\x00"):  # EXTRA-TEXT MAY be NUL-terminated (as dnspython)
                text = text[:-1]
            out.append(EdeObs((body[0] << 8) | body[1], text.decode("utf-8", errors="replace")))
        elif code == _NSID and nsid is None:
            nsid = nsid_text(body)
    return tuple(out), nsid


def _parse_without_options(
    reply: bytes, exc: dns.exception.DNSException
) -> tuple[dns.message.Message, tuple[EdeObs, ...], str | None]:
    """Parse `reply` again with its OPT's options blanked; re-raise `exc` if that does not help.

    A malformed option (EDE text that is not UTF-8, a short COOKIE, a bad ECS, ...) must not make
    the whole reply malformed: the rcode, flags and sections still say what the resolver did.
    """
    where = _opt_rdata(reply)
    if where is None:
        raise exc
    rdlen_at, rdata_end, last = where
    options = reply[rdlen_at + 2 : rdata_end]
    if not options:
        raise exc
    if last:
        wire = reply[:rdlen_at] + b"\x00\x00" + reply[rdata_end:]
    elif len(options) >= 4:
        # RRs follow whose compression pointers may point past the OPT: keep every offset.
        filler = _FILLER_OPTION.to_bytes(2, "big") + (len(options) - 4).to_bytes(2, "big")
        wire = reply[: rdlen_at + 2] + filler + bytes(len(options) - 4) + reply[rdata_end:]
    else:
        raise exc
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=True)
    except dns.exception.DNSException:
        raise exc from None
    return msg, *_lenient_options(options)


def parse_reply(reply: bytes) -> ParsedReply:
    """Full parse with dnspython. Raises dns.exception.DNSException on malformed wire; a
    malformed EDNS option alone is not that (options are then decoded leniently)."""
    lenient = False
    try:
        msg = dns.message.from_wire(reply, ignore_trailing=True)
    except dns.exception.DNSException as exc:
        msg, ede, nsid = _parse_without_options(reply, exc)
        lenient = True
    else:
        ede = tuple(
            EdeObs(int(opt.code), opt.text or "")
            for opt in msg.options
            if isinstance(opt, dns.edns.EDEOption)
        )
        nsid = next(
            (nsid_text(opt.nsid) for opt in msg.options if isinstance(opt, dns.edns.NSIDOption)),
            None,
        )
    return ParsedReply(
        rcode=int(msg.rcode()),
        flags=int(msg.flags),
        ede=ede,
        answer=_section(msg.answer),
        authority=_section(msg.authority),
        options_malformed=lenient,
        nsid=nsid,
    )


MalformedWire = dns.exception.DNSException
