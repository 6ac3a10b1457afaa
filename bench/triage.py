"""Benchmark: CPU cost of the reply triage (probe.wire.plainly_secure) per reply, old and new.

The old triage read only the fixed header and the final 11 bytes; the new one also walks the
reply's structure (so a malformed reply can no longer pass for secure) and remembers the last
accepted shape per question. Both run here in the same process on the same replies, so the
ratios do not depend on how fast or busy this machine is; the full dnspython parse of the
same reply is printed for scale (it is what every reply that is not plainly secure costs).

    PYTHONPATH=tests python3 bench/triage.py [--iterations 200000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import dns.dnssec
import dns.dnssectypes
import dns.message
import dns.name
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec
from fakedns import make_reply, rrset

from probe.wire import QueryTemplate, make_template, parse_reply, plainly_secure

QNAME = "1.2.0.192.in-addr.arpa."
ZONE = "2.0.192.in-addr.arpa."

# -- the reference: plainly_secure as it was before the structural walk (fixed header only) --
_B2_CHECK = 0x80 | 0x78 | 0x02
_B2_EXPECT = 0x80
_B3_CHECK = 0x20 | 0x0F
_B3_EXPECT = 0x20


def old_plainly_secure(reply: bytes) -> bool:
    return (
        len(reply) >= 23
        and reply[2] & _B2_CHECK == _B2_EXPECT
        and reply[3] & _B3_CHECK == _B3_EXPECT
        and reply[6:8] != b"\x00\x00"
        and reply[10:12] != b"\x00\x00"
        and reply[-11:-8] == b"\x00\x00\x29"
        and reply[-6:-4] == b"\x00\x00"
        and reply[-2:] == b"\x00\x00"
    )


def signed_replies(qname: str, qtype: str, zone: str, *rdatas: str) -> tuple[QueryTemplate,
                                                                             list[bytes]]:
    """A validating resolver's replies to one question: the data and its RRSIG (ECDSA P-256,
    as most signed zones), DO=1, an empty OPT; the same reply at a few TTLs (as a cache
    counts them down), so the triage cannot win by seeing identical bytes."""
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256)
    tmpl = make_template(qname, qtype)
    query = dns.message.from_wire(tmpl.with_id(0x4A4A))
    now = int(time.time())
    data = rrset(qname, qtype, *rdatas, ttl=3600)
    sig = dns.dnssec.sign(data, key, dns.name.from_text(zone), dnskey,
                          inception=now - 3600, expiration=now + 86400)
    replies = []
    for ttl in (3600, 3599, 2871, 17):
        data.ttl = ttl
        replies.append(make_reply(query, answer=[data, dns.rrset.from_rdata(data.name, ttl, sig)],
                                  do=True))
    return tmpl, replies


def per_call_ns(body: Callable[[list[bytes]], None], replies: list[bytes], iterations: int,
                repeat: int) -> float:
    """Best of `repeat` runs of `iterations` calls, in ns per call (loop overhead included)."""
    seq = (replies * (iterations // len(replies) + 1))[:iterations]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        body(seq)
        best = min(best, (time.perf_counter_ns() - t0) / iterations)
    return best


def full_parse(seq: list[bytes]) -> None:
    for r in seq:
        parse_reply(r)


def bodies(tmpl: QueryTemplate) -> dict[str, Callable[[list[bytes]], None]]:
    memo = tmpl.shape

    def noop(seq: list[bytes]) -> None:
        for r in seq:
            len(r)

    def old(seq: list[bytes]) -> None:
        for r in seq:
            old_plainly_secure(r)

    def new_warm(seq: list[bytes]) -> None:
        for r in seq:
            plainly_secure(r, tmpl)

    def old_cold(seq: list[bytes]) -> None:  # reference for new_cold: the same extra store
        for r in seq:
            memo[0] = None
            old_plainly_secure(r)

    def new_cold(seq: list[bytes]) -> None:
        for r in seq:
            memo[0] = None
            plainly_secure(r, tmpl)

    def new_untemplated(seq: list[bytes]) -> None:
        for r in seq:
            plainly_secure(r)

    return {"noop": noop, "old": old, "new_warm": new_warm, "old_cold": old_cold,
            "new_cold": new_cold, "new_untemplated": new_untemplated}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iterations", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    cases = {
        "PTR + RRSIG": signed_replies(QNAME, "PTR", ZONE, "host.example."),
        "apex SOA + RRSIG": signed_replies(
            ZONE, "SOA", ZONE, "ns1.apnic.net. read-txt-record-of-zone-first.apnic.net. "
            "1 3600 900 604800 300"),
    }
    print(f"python {sys.version.split()[0]}, {args.iterations} calls x best of {args.repeat}; "
          "ns per reply (loop overhead included: 'loop' line)")
    for label, (tmpl, replies) in cases.items():
        assert all(old_plainly_secure(r) and plainly_secure(r) and plainly_secure(r, tmpl)
                   for r in replies), label
        b = bodies(tmpl)
        ns = {k: per_call_ns(f, replies, args.iterations, args.repeat) for k, f in b.items()}
        full = per_call_ns(full_parse, replies, max(args.iterations // 100, 100), args.repeat)
        old = ns["old"]
        print(f"\n{label} ({len(replies[0])} bytes)")
        print(f"  {'loop':42s}{ns['noop']:8.0f} ns")
        print(f"  {'old: fixed header only (reference)':42s}{old:8.0f} ns   x1.00")
        for key, text, ref in (
            ("new_warm", "new, shape seen before (TTLs differ)", "old"),
            ("new_cold", "new, first reply of its shape (walk)", "old_cold"),
            ("new_untemplated", "new, no template (walks the question too)", "old"),
        ):
            added = ns[key] - ns[ref]
            print(f"  {text:42s}{ns[key]:8.0f} ns   x{ns[key] / ns[ref]:.2f}   "
                  f"added {added:5.0f} ns")
        print(f"  {'full dnspython parse_reply (for scale)':42s}{full:8.0f} ns   "
              f"x{full / old:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
