"""Verdicts: a pure function from one observation (plus its diagnosis, if any) to a stable code."""

from __future__ import annotations

from dataclasses import dataclass

from probe.codes import (
    EDE_DNSSEC_FAILURE,
    EDE_INSECURE,
    EDE_STALE,
    SEVERITY,
    DiagnosisKind,
    Severity,
    Verdict,
)
from probe.diagnose import Diagnosis
from probe.observation import Observation, Outcome, RRsetObs

RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 2, 3, 5

_OUTCOME_VERDICT: dict[Outcome, tuple[Verdict, str]] = {
    Outcome.TIMEOUT: (Verdict.TIMEOUT, "timeout"),
    Outcome.SKIPPED: (Verdict.TIMEOUT, "resolver-dead"),
    Outcome.UNREACHABLE: (Verdict.UNREACHABLE, "unreachable"),
    Outcome.MALFORMED: (Verdict.ERROR, "malformed-reply"),
    Outcome.TCP_FAILED: (Verdict.ERROR, "tcp-failed"),
    Outcome.PORT_UNREACHABLE: (Verdict.ERROR, "port-unreachable"),
    Outcome.IO_ERROR: (Verdict.ERROR, "io-error"),
}


@dataclass(frozen=True, slots=True)
class Classification:
    verdict: Verdict
    reason: str  # a key of probe.codes.REASONS

    @property
    def needs_diagnosis(self) -> bool:
        return self.verdict in (Verdict.BOGUS, Verdict.SERVFAIL)


_TRIAGED_SECURE = _SECURE_ANSWER = Classification(Verdict.SECURE, "ad-answer")

MAX_CNAME_CHAIN = 8  # CNAME links followed from the question's name (RFC 1034 §3.6.2: loops)


@dataclass(frozen=True, slots=True)
class Chain:
    """The question's name and the CNAME targets followed from it in one answer section."""

    names: tuple[str, ...]  # lower case, qname first
    data: tuple[RRsetObs, ...]  # the qtype RRsets owned by the last name
    broken: bool  # a loop, a chain longer than MAX_CNAME_CHAIN, or a CNAME with several targets


def answer_chain(obs: Observation, qname: str, qtype: str) -> Chain:
    """Follow qname -> CNAME target -> ... in the answer; the data must sit at the end."""
    names = [qname.lower()]
    while True:
        data = obs.rrsets(qtype, names[-1])
        if data or qtype == "CNAME":
            return Chain(tuple(names), tuple(data), False)
        cnames = [rd for r in obs.rrsets("CNAME", names[-1]) for rd in r.rdatas]
        if not cnames:
            return Chain(tuple(names), (), False)
        target = cnames[0].lower()
        if len(set(cnames)) > 1 or target in names or len(names) > MAX_CNAME_CHAIN:
            return Chain(tuple(names), (), True)
        names.append(target)


_DENIAL_TYPES = frozenset({"SOA", "NSEC", "NSEC3"})


def _ad_noerror(obs: Observation) -> Classification:
    """AD=1 NOERROR: the data at the end of the CNAME chain, or a NODATA denial."""
    if obs.rrsets(obs.qtype, obs.qname):
        return _SECURE_ANSWER  # the common case: the data at the question's own name
    chain = answer_chain(obs, obs.qname, obs.qtype)
    if chain.broken:
        return Classification(Verdict.ERROR, "cname-loop")
    if chain.data:
        return _SECURE_ANSWER
    on_chain = set(chain.names)
    stray = [r for r in obs.answer if r.name.lower() not in on_chain
             or (r.rdtype not in ("CNAME", obs.qtype) and not r.rdtype.startswith("RRSIG"))]
    # Nothing but the chain (or nothing at all) is NODATA; records for other names are an
    # answer to another question unless the authority section says NODATA (RFC 2308 §2.2).
    if not stray or any(r.rdtype in _DENIAL_TYPES for r in obs.authority):
        return Classification(Verdict.SECURE, "ad-denial")
    return Classification(Verdict.ERROR, "answer-owner-mismatch")


# Diagnoses that explain a SERVFAIL as a validation failure (RFC 4035 §5).
VALIDATION_FAILURES: frozenset[DiagnosisKind] = frozenset({
    DiagnosisKind.STALE_DNSKEY_CACHE, DiagnosisKind.STALE_DS_CACHE,
    DiagnosisKind.STALE_DNSKEY_VS_DS, DiagnosisKind.INCONSISTENT_SOURCES,
    DiagnosisKind.BOGUS_AT_SOURCE,
})
# Diagnosis reasons that rule DNSSEC out: nothing was there to validate (RFC 4035 §4.3, §5.2).
RULED_OUT_REASONS: frozenset[str] = frozenset({"zone-unsigned", "no-ds-at-parent"})

# EDE (RFC 8914) is read by class, never by one exact code: implementations pick different
# codes for the same failure, and Unbound sets EDE 9 (DNSKEY Missing) when a DNSKEY fetch merely
# timed out. So a code only ever selects a class (failure / insecure / stale), and within a
# class every code leads to the same verdict and reason.


def _ede_classes(obs: Observation) -> tuple[bool, bool, bool]:
    """(a DNSSEC-failure EDE, an insecure EDE (1, 2), a stale EDE (3, 19)) in the reply."""
    codes = {e.code for e in obs.ede}
    failed = codes & EDE_DNSSEC_FAILURE
    # "DNSKEY/RRSIGs missing" next to "No Reachable Authority" / "Network Error" is what Unbound
    # says when the fetch merely timed out: an unreachable server, not a validation verdict.
    if failed <= _FETCH_FAILED and codes & _UNREACHABLE_EDE:
        failed = set()
    return bool(failed), bool(codes & EDE_INSECURE), bool(codes & EDE_STALE)


_FETCH_FAILED = frozenset({9, 10})  # DNSKEY Missing, RRSIGs Missing
_UNREACHABLE_EDE = frozenset({22, 23})  # No Reachable Authority, Network Error


def rules_out_dnssec(diagnosis: Diagnosis | None) -> bool:
    """The diagnosis shows there was nothing to validate: unsigned zone or insecure delegation."""
    if diagnosis is None:
        return False
    return (diagnosis.kind is DiagnosisKind.INSECURE_DELEGATION
            or bool(RULED_OUT_REASONS.intersection(diagnosis.reasons)))


def classify(
    obs: Observation,
    *,
    cd_answer: Observation | None = None,
    diagnosis: Diagnosis | None = None,
) -> Classification:
    """Decide the verdict of one check. Never awaits, never looks at the clock."""
    if not obs.parsed and obs.outcome is Outcome.REPLY:
        return _TRIAGED_SECURE  # only plainly secure replies skip the parse
    if obs.outcome is not Outcome.REPLY:
        verdict, reason = _OUTCOME_VERDICT[obs.outcome]
        return Classification(verdict, reason)
    rcode = obs.rcode
    failed_ede, insecure_ede, stale_ede = _ede_classes(obs)
    if rcode in (RCODE_NOERROR, RCODE_NXDOMAIN):
        if obs.ad:
            cls = (Classification(Verdict.SECURE, "ad-denial") if rcode == RCODE_NXDOMAIN
                   else _ad_noerror(obs))
            # Serve-stale (RFC 8767): validated once, but the resolver could not refresh it.
            if stale_ede and cls.verdict is Verdict.SECURE:
                return Classification(Verdict.SECURE, "stale-answer")
            return cls
        if insecure_ede:
            # Unsupported algorithm / digest: the resolver treats the zone as insecure (RFC 4035
            # §5.2) - an answer about the resolver's algorithm support, not a plain "no AD".
            return Classification(Verdict.INSECURE, "ede-insecure")
        if stale_ede:
            return Classification(Verdict.INSECURE, "stale-answer")
        return Classification(Verdict.INSECURE, "no-ad")
    if rcode == RCODE_REFUSED:
        return Classification(Verdict.REFUSED, "refused")
    if rcode == RCODE_SERVFAIL:
        # EDE is a bonus, not a requirement: BIND 9.18 and PowerDNS 4.8 send none on a bogus answer.
        # Any code of the failure class counts (see the EDE comment above).
        if failed_ede:
            return Classification(Verdict.BOGUS, "ede-dnssec")
        if diagnosis is not None and diagnosis.kind in VALIDATION_FAILURES:
            return Classification(Verdict.BOGUS, "diagnosed")
        if insecure_ede:
            # The resolver says it treated the zone as insecure, so this SERVFAIL is not a
            # validation failure; but the client got no answer, so it stays a (critical)
            # SERVFAIL rather than "insecure" - and a CD=1 answer does not make it bogus.
            return Classification(Verdict.SERVFAIL, "ede-insecure")
        if rules_out_dnssec(diagnosis):
            # An unsigned zone cannot fail validation: the CD=1 data proves only that the
            # upstream answered the second time (a transient failure), not that DNSSEC failed.
            return Classification(Verdict.SERVFAIL, "ruled-out")
        if (
            cd_answer is not None
            and cd_answer.outcome is Outcome.REPLY
            and cd_answer.rcode == RCODE_NOERROR
            and answer_chain(cd_answer, obs.qname, obs.qtype).data
        ):
            return Classification(Verdict.BOGUS, "cd-data")
        return Classification(Verdict.SERVFAIL, "servfail-unexplained")
    return Classification(Verdict.ERROR, "unexpected-rcode")


def severity(verdict: Verdict, expect: Verdict = Verdict.SECURE,
             reason: str | None = None) -> Severity:
    """Monitoring severity; a zone expected to be insecure is fine when it is insecure.

    A stale answer (serve-stale) is a warning even when it validated: the resolver could not
    refresh the data. (A non-validating resolver is reported once per resolver, not here.)
    """
    if verdict in (Verdict.INSECURE, Verdict.SECURE) and expect is Verdict.INSECURE:
        base = Severity.OK
    else:
        base = SEVERITY[verdict]
    if reason in _WARN_EVEN_IF_FINE and base is Severity.OK:
        return Severity.WARNING
    return base


# Reasons that are a warning even when the answer validated: the data is stale, or the zones
# file names something that is not a zone.
_WARN_EVEN_IF_FINE = frozenset({"stale-answer", "not-a-zone-apex"})


def apex_check(cls: Classification, obs: Observation, zone: str) -> Classification:
    """A check of the zone's own SOA that ends in a validated denial: the zones.txt entry is
    not a zone apex (NODATA: a name inside another zone; NXDOMAIN: no such name)."""
    if (cls.reason == "ad-denial" and obs.qtype == "SOA"
            and obs.qname.lower() == zone.lower()):
        return Classification(cls.verdict, "not-a-zone-apex")
    return cls
