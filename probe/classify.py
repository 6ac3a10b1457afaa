"""Verdicts: a pure function from one observation (plus its diagnosis, if any) to a stable code."""

from __future__ import annotations

from dataclasses import dataclass

from probe.codes import EDE_DNSSEC_FAILURE, SEVERITY, DiagnosisKind, Severity, Verdict
from probe.diagnose import Diagnosis
from probe.observation import Observation, Outcome

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


_TRIAGED_SECURE = Classification(Verdict.SECURE, "ad-answer")


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
            has_data = bool(obs.rrsets(obs.qtype)) or not obs.parsed
            denial = rcode == RCODE_NXDOMAIN or not has_data
            return Classification(Verdict.SECURE, "ad-denial" if denial else "ad-answer")
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
            and cd_answer.rrsets(obs.qtype)
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
