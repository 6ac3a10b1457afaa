"""Verdict codes from single observations (pure; no network, no clock)."""

from __future__ import annotations

import pytest

from probe.classify import classify, severity
from probe.codes import REASONS, SEVERITY, Severity, Verdict
from probe.observation import (
    FLAG_AD,
    FLAG_QR,
    FLAG_RA,
    FLAG_RD,
    EdeObs,
    Observation,
    Outcome,
    RRsetObs,
)

Q = "1.1.1.in-addr.arpa."


def reply(rcode: int, *, ad: bool, answer: bool = True, ede: tuple[int, ...] = (),
          parsed: bool = True) -> Observation:
    ans = (RRsetObs(Q, "PTR", 60, ("h.example.",)),) if answer else ()
    return Observation("r", "127.0.0.1", 53, Q, "PTR", True, False, 0.0, Outcome.REPLY,
                       rtt_ms=1.0, rcode=rcode, flags=FLAG_QR | FLAG_RD | FLAG_RA | (FLAG_AD if ad else 0),
                       ede=tuple(EdeObs(c) for c in ede), answer=ans if parsed else (),
                       parsed=parsed)


@pytest.mark.parametrize(("obs", "verdict", "reason"), [
    (reply(0, ad=True), Verdict.SECURE, "ad-answer"),
    (reply(0, ad=True, parsed=False), Verdict.SECURE, "ad-answer"),
    (reply(0, ad=True, answer=False), Verdict.SECURE, "ad-denial"),
    (reply(3, ad=True, answer=False), Verdict.SECURE, "ad-denial"),
    (reply(0, ad=False), Verdict.INSECURE, "no-ad"),
    (reply(3, ad=False, answer=False), Verdict.INSECURE, "no-ad"),
    (reply(2, ad=False, answer=False), Verdict.SERVFAIL, "servfail-unexplained"),
    (reply(2, ad=False, answer=False, ede=(6,)), Verdict.BOGUS, "ede-dnssec"),
    (reply(2, ad=False, answer=False, ede=(13, 7)), Verdict.BOGUS, "ede-dnssec"),
    (reply(5, ad=False, answer=False), Verdict.REFUSED, "refused"),
    (reply(4, ad=False, answer=False), Verdict.ERROR, "unexpected-rcode"),
])
def test_reply_verdicts(obs: Observation, verdict: Verdict, reason: str) -> None:
    c = classify(obs)
    assert (c.verdict, c.reason) == (verdict, reason)
    assert c.reason in REASONS


@pytest.mark.parametrize(("outcome", "verdict", "reason"), [
    (Outcome.TIMEOUT, Verdict.TIMEOUT, "timeout"),
    (Outcome.SKIPPED, Verdict.TIMEOUT, "resolver-dead"),
    (Outcome.UNREACHABLE, Verdict.UNREACHABLE, "unreachable"),
    (Outcome.MALFORMED, Verdict.ERROR, "malformed-reply"),
    (Outcome.TCP_FAILED, Verdict.ERROR, "tcp-failed"),
])
def test_no_reply_verdicts(outcome: Outcome, verdict: Verdict, reason: str) -> None:
    obs = Observation("r", "127.0.0.1", 53, Q, "PTR", True, False, 0.0, outcome)
    c = classify(obs)
    assert (c.verdict, c.reason) == (verdict, reason)
    assert c.reason in REASONS
    assert c.needs_diagnosis is False


def test_every_verdict_has_a_severity_and_unreachable_is_not_a_finding() -> None:
    assert set(SEVERITY) == set(Verdict)
    assert severity(Verdict.UNREACHABLE) is Severity.NOT_APPLICABLE
    assert severity(Verdict.BOGUS) is Severity.CRITICAL
    assert severity(Verdict.INSECURE) is Severity.WARNING
    assert severity(Verdict.INSECURE, Verdict.INSECURE) is Severity.OK


def test_every_reason_has_a_reference() -> None:
    for r in REASONS.values():
        assert r.reference.startswith("RFC"), r
