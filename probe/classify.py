"""Verdicts: a pure function from one observation (plus its diagnosis, if any) to a stable code."""

from __future__ import annotations

from dataclasses import dataclass

from probe.codes import EDE_DNSSEC_FAILURE, SEVERITY, DiagnosisKind, Severity, Verdict
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
    if rcode in (RCODE_NOERROR, RCODE_NXDOMAIN):
        if obs.ad:
            if rcode == RCODE_NXDOMAIN:
                return Classification(Verdict.SECURE, "ad-denial")
            return _ad_noerror(obs)
        return Classification(Verdict.INSECURE, "no-ad")
    if rcode == RCODE_REFUSED:
        return Classification(Verdict.REFUSED, "refused")
    if rcode == RCODE_SERVFAIL:
        # EDE is a bonus, not a requirement: BIND 9.18 and PowerDNS 4.8 send none on a bogus answer.
        if any(e.code in EDE_DNSSEC_FAILURE for e in obs.ede):
            return Classification(Verdict.BOGUS, "ede-dnssec")
        if diagnosis is not None and diagnosis.kind in (
            DiagnosisKind.STALE_DNSKEY_CACHE, DiagnosisKind.BOGUS_AT_SOURCE
        ):
            return Classification(Verdict.BOGUS, "diagnosed")
        if (
            cd_answer is not None
            and cd_answer.outcome is Outcome.REPLY
            and cd_answer.rcode == RCODE_NOERROR
            and answer_chain(cd_answer, obs.qname, obs.qtype).data
        ):
            return Classification(Verdict.BOGUS, "cd-data")
        return Classification(Verdict.SERVFAIL, "servfail-unexplained")
    return Classification(Verdict.ERROR, "unexpected-rcode")


def severity(verdict: Verdict, expect: Verdict = Verdict.SECURE) -> Severity:
    """Monitoring severity; a zone expected to be insecure is fine when it is insecure."""
    if verdict is Verdict.INSECURE and expect is Verdict.INSECURE:
        return Severity.OK
    if verdict is Verdict.SECURE and expect is Verdict.INSECURE:
        return Severity.OK
    return SEVERITY[verdict]
