"""Issue 8 verdict rules, replayed offline: EDE classes, ruled-out over cd-data, new kinds."""

from __future__ import annotations

import pytest
from signedzone import servfail

from probe.classify import classify, severity
from probe.codes import REASONS, DiagnosisKind, Severity, Verdict
from probe.diagnose import Diagnosis
from probe.observation import FLAG_AD, FLAG_QR, FLAG_RA, FLAG_RD, EdeObs, Observation, Outcome, RRsetObs

Q = "www.example.org."


def answer(*, ad: bool, ede: tuple[int, ...] = (), rcode: int = 0, data: bool = True) -> Observation:
    ans = (RRsetObs(Q, "A", 60, ("192.0.2.1",)),) if data else ()
    return Observation("r", "127.0.0.1", 53, Q, "A", True, False, 0.0, Outcome.REPLY,
                       rtt_ms=1.0, rcode=rcode,
                       flags=FLAG_QR | FLAG_RD | FLAG_RA | (FLAG_AD if ad else 0),
                       ede=tuple(EdeObs(c, "") for c in ede), answer=ans)


def cd_data() -> Observation:
    """The CD=1 retry of the same question, answered with data."""
    return answer(ad=False)


def diag(kind: DiagnosisKind, *reasons: str) -> Diagnosis:
    return Diagnosis(kind, reasons, (), (), (), None, None, None, "test")


@pytest.mark.parametrize(("obs", "verdict", "reason"), [
    # EDE 25 and 27 are DNSSEC failures now, not servfail-unexplained.
    (servfail(Q, "A", ede=(25,)), Verdict.BOGUS, "ede-dnssec"),
    (servfail(Q, "A", ede=(27,)), Verdict.BOGUS, "ede-dnssec"),
    # Unbound's EDE 9 next to 22 (No Reachable Authority) means a fetch timed out: no
    # validation verdict; without a diagnosis or CD=1 data it stays an unexplained SERVFAIL.
    (servfail(Q, "A", ede=(22, 9)), Verdict.SERVFAIL, "servfail-unexplained"),
    (servfail(Q, "A", ede=(23, 10)), Verdict.SERVFAIL, "servfail-unexplained"),
    (servfail(Q, "A", ede=(22, 6)), Verdict.BOGUS, "ede-dnssec"),  # DNSSEC Bogus still counts
    # EDE 1/2 on an answer without AD: the resolver treated the zone as insecure.
    (answer(ad=False, ede=(1,)), Verdict.INSECURE, "ede-insecure"),
    (answer(ad=False, ede=(2,)), Verdict.INSECURE, "ede-insecure"),
    (answer(ad=False, ede=(2,), rcode=3, data=False), Verdict.INSECURE, "ede-insecure"),
    # A SERVFAIL with only EDE 1/2: not a validation failure, but the client got nothing.
    (servfail(Q, "A", ede=(1,)), Verdict.SERVFAIL, "ede-insecure"),
    # A failure-class code beside an insecure one still means validation failed.
    (servfail(Q, "A", ede=(1, 6)), Verdict.BOGUS, "ede-dnssec"),
    # Serve-stale: a distinct reason; the verdict stays what the flags say.
    (answer(ad=True, ede=(3,)), Verdict.SECURE, "stale-answer"),
    (answer(ad=True, ede=(19,), rcode=3, data=False), Verdict.SECURE, "stale-answer"),
    (answer(ad=False, ede=(3,)), Verdict.INSECURE, "stale-answer"),
    # Unrelated codes change nothing.
    (answer(ad=True, ede=(22,)), Verdict.SECURE, "ad-answer"),
    (answer(ad=False, ede=(29,)), Verdict.INSECURE, "no-ad"),
])
def test_ede_classes(obs: Observation, verdict: Verdict, reason: str) -> None:
    c = classify(obs)
    assert (c.verdict, c.reason) == (verdict, reason)
    assert c.reason in REASONS


def test_every_failure_class_code_gives_the_same_verdict() -> None:
    """No decision rests on one exact code: each code of a class leads to the same result."""
    failure = {classify(servfail(Q, "A", ede=(code,))) for code in (5, 6, 7, 8, 9, 10, 11, 12, 25, 27)}
    assert len(failure) == 1
    insecure = {classify(answer(ad=False, ede=(code,))) for code in (1, 2)}
    stale = {classify(answer(ad=True, ede=(code,))) for code in (3, 19)}
    assert len(insecure) == 1 and len(stale) == 1


def test_stale_answer_is_a_warning_even_when_validated() -> None:
    c = classify(answer(ad=True, ede=(3,)))
    assert c.verdict is Verdict.SECURE
    assert severity(c.verdict, Verdict.SECURE, c.reason) is Severity.WARNING
    # Without the reason (older callers) and for a fresh answer it stays ok.
    assert severity(c.verdict) is Severity.OK
    fresh = classify(answer(ad=True))
    assert severity(fresh.verdict, Verdict.SECURE, fresh.reason) is Severity.OK
    # An insecure-expected zone answered stale is still worth a look.
    insecure = classify(answer(ad=False, ede=(3,)))
    assert severity(insecure.verdict, Verdict.INSECURE, insecure.reason) is Severity.WARNING


@pytest.mark.parametrize("d", [
    diag(DiagnosisKind.UNKNOWN, "zone-unsigned"),
    diag(DiagnosisKind.INSECURE_DELEGATION, "no-ds-at-parent"),
])
def test_ruled_out_wins_over_cd_data(d: Diagnosis) -> None:
    obs = servfail(Q, "A")
    # Before: the CD=1 data alone made it bogus.
    assert classify(obs, cd_answer=cd_data()).reason == "cd-data"
    c = classify(obs, cd_answer=cd_data(), diagnosis=d)
    assert (c.verdict, c.reason) == (Verdict.SERVFAIL, "ruled-out")
    assert severity(c.verdict, Verdict.SECURE, c.reason) is Severity.CRITICAL


def test_unknown_diagnosis_still_lets_cd_data_decide() -> None:
    c = classify(servfail(Q, "A"), cd_answer=cd_data(),
                 diagnosis=diag(DiagnosisKind.UNKNOWN, "cache-matches-source"))
    assert (c.verdict, c.reason) == (Verdict.BOGUS, "cd-data")


@pytest.mark.parametrize("kind", [
    DiagnosisKind.STALE_DS_CACHE, DiagnosisKind.STALE_DNSKEY_VS_DS,
    DiagnosisKind.INCONSISTENT_SOURCES, DiagnosisKind.STALE_DNSKEY_CACHE,
    DiagnosisKind.BOGUS_AT_SOURCE,
])
def test_validation_failure_kinds_are_bogus(kind: DiagnosisKind) -> None:
    c = classify(servfail(Q, "A"), diagnosis=diag(kind, "ds-stale-cached"))
    assert (c.verdict, c.reason) == (Verdict.BOGUS, "diagnosed")


def test_servfail_with_insecure_ede_but_diagnosed_failure_is_bogus() -> None:
    """Evidence beats a single class of code: a diagnosed stale cache is bogus."""
    c = classify(servfail(Q, "A", ede=(1,)), diagnosis=diag(DiagnosisKind.STALE_DS_CACHE))
    assert (c.verdict, c.reason) == (Verdict.BOGUS, "diagnosed")
    # And the insecure EDE keeps the CD=1 data from calling it bogus.
    c = classify(servfail(Q, "A", ede=(2,)), cd_answer=cd_data())
    assert (c.verdict, c.reason) == (Verdict.SERVFAIL, "ede-insecure")
