"""Stable codes for verdicts, reasons and diagnoses, each with the RFC / EDE reference it rests on.

These strings are an interface: they appear in --json output and become InfluxDB tags, so they
never change meaning and never carry exception text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    """What one (resolver, qname, qtype) check concluded."""

    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    ERROR = "error"


class Severity(StrEnum):
    """Monitoring-plugin style severity of a verdict."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    # Not a finding about the zone: the resolver cannot be reached from here (e.g. no IPv6).
    NOT_APPLICABLE = "n/a"


SEVERITY: dict[Verdict, Severity] = {
    Verdict.SECURE: Severity.OK,
    Verdict.INSECURE: Severity.WARNING,
    Verdict.BOGUS: Severity.CRITICAL,
    Verdict.SERVFAIL: Severity.CRITICAL,
    Verdict.TIMEOUT: Severity.WARNING,
    Verdict.REFUSED: Severity.WARNING,
    Verdict.ERROR: Severity.WARNING,
    Verdict.UNREACHABLE: Severity.NOT_APPLICABLE,
}


class DiagnosisKind(StrEnum):
    """Why a validating resolver failed, as far as the follow-up questions can tell."""

    STALE_DNSKEY_CACHE = "stale-dnskey-cache"
    # The resolver's cached DS matches no KSK the zone now publishes; the parent's DS does.
    STALE_DS_CACHE = "stale-ds-cache"
    # The resolver's cached DNSKEY set has no key the parent's current DS points to.
    STALE_DNSKEY_VS_DS = "stale-dnskey-vs-ds"
    # The zone's authoritative servers serve different DNSKEY sets (a partial cut-over).
    INCONSISTENT_SOURCES = "inconsistent-sources"
    # No DS at the parent: an insecure delegation (or an island), never a stale-key case.
    INSECURE_DELEGATION = "insecure-delegation"
    BOGUS_AT_SOURCE = "bogus-at-source"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Reason:
    """A stable reason code, a one-line meaning and the document that defines the behaviour."""

    code: str
    meaning: str
    reference: str


def _r(code: str, meaning: str, reference: str) -> Reason:
    return Reason(code, meaning, reference)


REASONS: dict[str, Reason] = {
    r.code: r
    for r in (
        # verdict reasons
        _r("ad-answer", "answer carries AD=1: validated", "RFC 4035 §3.2.3"),
        _r("ad-denial", "NXDOMAIN/NODATA carries AD=1: validated denial", "RFC 4035 §3.2.3"),
        _r("no-ad", "answer without AD: the resolver did not validate it", "RFC 4035 §3.2.3"),
        _r("ede-dnssec", "SERVFAIL with a DNSSEC extended error", "RFC 8914 §4.2-4.13"),
        _r("cd-data", "SERVFAIL, but the same query with CD=1 returns data", "RFC 4035 §3.2.2"),
        _r("diagnosed", "SERVFAIL explained by the diagnosis (validation failure)", "RFC 4035 §5"),
        _r("servfail-unexplained", "SERVFAIL with no sign of a validation failure", "RFC 1035 §4.1.1"),
        _r("ede-insecure", "the resolver treated the zone as insecure: unsupported DNSKEY "
           "algorithm or DS digest type (EDE 1, 2)", "RFC 8914 §4.2-4.3; RFC 4035 §5.2"),
        _r("stale-answer", "an answer served from cache past its TTL (serve-stale, EDE 3): "
           "the resolver could not refresh it", "RFC 8767 §4; RFC 8914 §4.4"),
        _r("not-validating", "the resolver answered a name that must fail validation: it does "
           "not validate, so an answer without AD says nothing about the zone",
           "RFC 4035 §4.9.3, §5"),
        _r("ruled-out", "SERVFAIL that the diagnosis shows is not a validation failure (e.g. "
           "the zone is unsigned), even though the CD=1 query returned data", "RFC 4035 §3.2.2"),
        _r("refused", "the resolver answered REFUSED", "RFC 1035 §4.1.1"),
        _r("unexpected-rcode", "an rcode other than NOERROR/NXDOMAIN/SERVFAIL/REFUSED", "RFC 6895 §2.3"),
        _r("answer-owner-mismatch",
           "AD=1 NOERROR whose records are for names outside the question and its CNAME chain, "
           "and no denial in the authority section: not an answer", "RFC 1034 §4.3.2; RFC 2308 §2.2"),
        _r("cname-loop", "the answer's CNAME chain loops, forks or is longer than 8 links",
           "RFC 1034 §3.6.2, §5.2.2"),
        _r("timeout", "no acceptable reply before the deadline, after retries", "RFC 1035 §7.2"),
        _r("resolver-dead", "not sent: the resolver answered none of the last queries", "RFC 1035 §7.2"),
        _r("unreachable", "no route to the resolver from this host (e.g. no IPv6)", "RFC 1122 §3.2.2.1"),
        _r("malformed-reply", "a matching reply that could not be parsed", "RFC 1035 §4.1"),
        _r("tcp-failed", "TCP retry after truncation failed", "RFC 7766 §5"),
        _r("port-unreachable", "ICMP port unreachable: the host is up, its DNS service is not",
           "RFC 1122 §4.1.3.1"),
        _r("io-error", "a socket could not be set up or used", "RFC 1035 §4.2"),
        # diagnosis reasons
        _r("dnskey-not-cached", "signatures use a key the resolver's cached DNSKEY set lacks",
           "RFC 4035 §5.3.1; RFC 6781 §4.1.1.1"),
        _r("ds-no-matching-key", "no DS in the parent matches a DNSKEY of the zone",
           "RFC 4035 §5.2; EDE 9"),
        _r("dnskey-rrsig-invalid", "the DNSKEY RRset is not signed by a key the DS points to",
           "RFC 4035 §5.2; EDE 6"),
        _r("rrsig-expired", "a signature's expiration is in the past", "RFC 4035 §5.3.1; EDE 7"),
        _r("rrsig-not-yet-valid", "a signature's inception is in the future",
           "RFC 4035 §5.3.1; EDE 8"),
        _r("rrsig-missing", "the signed zone returned the data without RRSIG",
           "RFC 4035 §3.1.1; EDE 10"),
        _r("rrsig-unknown-key", "a signature's key tag is not in the zone's DNSKEY set",
           "RFC 4035 §5.3.1; EDE 9"),
        _r("signature-invalid", "a signature does not verify with the key it names",
           "RFC 4035 §5.3.3; EDE 6"),
        _r("dnskey-missing", "the parent has a DS, but the zone serves no DNSKEY RRset",
           "RFC 4035 §5.2; EDE 9"),
        _r("zone-unsigned", "no DNSKEY at the source and no DS in the parent",
           "RFC 4035 §4.3"),
        _r("ds-stale-cached", "the resolver's cached DS matches no KSK the zone publishes; the "
           "parent's current DS does", "RFC 4035 §5.2; RFC 7583 §3.3.3; EDE 9"),
        _r("dnskey-stale-for-ds", "the resolver's cached DNSKEY set has no key that the "
           "parent's current DS matches", "RFC 4035 §5.2; RFC 7583 §3.3.4"),
        _r("sources-disagree", "the zone's authoritative servers serve different DNSKEY sets "
           "(signing with different keys of one set is multi-signer, RFC 8901, not this)",
           "RFC 1034 §4.3.5; RFC 6781 §4.1; RFC 8901"),
        _r("no-ds-at-parent", "the parent's servers hold no DS for the zone: an insecure "
           "delegation, so a validator does not use the zone's keys", "RFC 4035 §5.2; RFC 4033 §5"),
        _r("keytag-collision", "two different keys share one key tag; keys were compared by "
           "their full RDATA", "RFC 4034 Appendix B; RFC 4035 §5.3.1"),
        _r("via-cname", "the answer is a CNAME (or DNAME) into another zone: diagnosed where the "
           "validated data lives", "RFC 1034 §3.6.2; RFC 2317; RFC 6672"),
        _r("not-a-zone-apex", "the zones.txt entry has no SOA of its own: it is not a zone apex",
           "RFC 1034 §4.2.1"),
        _r("probe-clock-skew", "signature times were judged with the clock-skew allowance; the "
           "probe's clock differs from the signer's", "RFC 6781 §4.4.2.1; RFC 4035 §5.3.1"),
        _r("instances-differ", "the follow-up questions were answered by different instances "
           "(NSID) of an anycast resolver", "RFC 5001 §2; RFC 4786"),
        _r("no-authoritative-data", "the authoritative servers could not be asked", "RFC 1034 §4.3.2"),
        _r("cache-hidden", "the resolver would not show its cached DNSKEY set (CD=1)",
           "RFC 4035 §3.2.2"),
        _r("cache-matches-source", "the resolver caches the same keys that sign the data",
           "RFC 4035 §5"),
        _r("validation-budget-exceeded",
           "too many keys, signatures or DS records to check within the per-diagnosis bound "
           "(KeyTrap guard); nothing is concluded from what was left unchecked",
           "RFC 4033 §12; RFC 9276 §3.2-style work limit; CVE-2023-50387 (KeyTrap), "
           "CVE-2023-50868"),
    )
}

class FindingCode(StrEnum):
    """What the signer-side key audit (`dnssec-probe audit`, issue 9) found about a zone."""

    UNSAFE_ROLLOVER = "unsafe-rollover"
    SIGNER_KEY_MISMATCH = "signer-key-mismatch"
    INCONSISTENT_SERVERS = "inconsistent-servers"
    KEY_CHANGE = "key-change"
    SIGNATURE_EXPIRY = "signature-expiry"
    NO_HISTORY = "no-history"
    NO_SERVER_ANSWERED = "no-server-answered"


class FindingSeverity(StrEnum):
    """How loud a finding is: critical pages, warning shows, info only annotates."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class FindingInfo:
    """A finding code, its usual severity, a one-line meaning and its reference."""

    code: FindingCode
    severity: FindingSeverity
    meaning: str
    reference: str


FINDINGS: dict[FindingCode, FindingInfo] = {
    f.code: f
    for f in (
        FindingInfo(FindingCode.UNSAFE_ROLLOVER, FindingSeverity.CRITICAL,
                    "data (or the DNSKEY RRset) is signed by a key that was missing from a "
                    "DNSKEY RRset served within the preceding DNSKEY TTL plus margin, or the "
                    "DNSKEY RRset by a KSK no DS served within the preceding DS TTL matches: "
                    "resolvers holding the old set fail until at_risk_until",
                    "RFC 6781 §4.1.1-4.1.2; RFC 7583 §3.3.1-3.3.3"),
        FindingInfo(FindingCode.SIGNER_KEY_MISMATCH, FindingSeverity.CRITICAL,
                    "a standby or primary signer serves or signs with other keys than the "
                    "zone's name servers: a failover to it now would be an unsafe rollover",
                    "RFC 6781 §4.1.1; RFC 7583 §3.3"),
        FindingInfo(FindingCode.INCONSISTENT_SERVERS, FindingSeverity.WARNING,
                    "the zone's name servers serve different SOA serials or DNSKEY sets for "
                    "longer than the configured window (data compared, never TTLs)",
                    "RFC 1034 §4.3.5; RFC 1996"),
        FindingInfo(FindingCode.KEY_CHANGE, FindingSeverity.INFO,
                    "the DNSKEY RRset a server serves changed: keys added and removed",
                    "RFC 7583 §3"),
        FindingInfo(FindingCode.SIGNATURE_EXPIRY, FindingSeverity.WARNING,
                    "signatures expire within the warning (critical) margin, or their remaining "
                    "validity is shorter than the TTL of what they sign",
                    "RFC 4034 §3.1.5; RFC 6781 §4.4.2"),
        FindingInfo(FindingCode.NO_HISTORY, FindingSeverity.INFO,
                    "the audit history of the zone is shorter than its DNSKEY TTL plus margin: "
                    "a key change before the history began cannot be judged",
                    "RFC 7583 §3.3.1"),
        FindingInfo(FindingCode.NO_SERVER_ANSWERED, FindingSeverity.WARNING,
                    "no name server or signer of the zone gave an authoritative DNSKEY answer: "
                    "nothing could be audited", "RFC 1034 §4.3.2"),
    )
}


# Extended DNS Error codes that mean "DNSSEC validation failed" (RFC 8914 §4).
# 1 and 2 (unsupported algorithm / digest) mean the zone is treated as insecure (RFC 4035 §5.2),
# not failed; 27 (NSEC3 iterations, RFC 9276 §3.2) fails only when the rcode is SERVFAIL.
EDE_DNSSEC_FAILURE: frozenset[int] = frozenset({5, 6, 7, 8, 9, 10, 11, 12, 25, 27})
EDE_INSECURE: frozenset[int] = frozenset({1, 2})
EDE_STALE: frozenset[int] = frozenset({3, 19})

EDE_NAMES: dict[int, str] = {
    0: "Other Error",
    1: "Unsupported DNSKEY Algorithm",
    2: "Unsupported DS Digest Type",
    3: "Stale Answer",
    4: "Forged Answer",
    5: "DNSSEC Indeterminate",
    6: "DNSSEC Bogus",
    7: "Signature Expired",
    8: "Signature Not Yet Valid",
    9: "DNSKEY Missing",
    10: "RRSIGs Missing",
    11: "No Zone Key Bit Set",
    12: "NSEC Missing",
    13: "Cached Error",
    14: "Not Ready",
    15: "Blocked",
    16: "Censored",
    17: "Filtered",
    18: "Prohibited",
    19: "Stale NXDOMAIN Answer",
    20: "Not Authoritative",
    21: "Not Supported",
    22: "No Reachable Authority",
    23: "Network Error",
    24: "Invalid Data",
    25: "Signature Expired before Valid",
    26: "Too Early",
    27: "Unsupported NSEC3 Iterations Value",
    28: "Unable to conform to policy",
    29: "Synthesized",
    30: "Invalid Query Type",
}
