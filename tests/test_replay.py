"""Replay observations recorded from the lab (`dnssec-probe check --json --raw`) through the pure
classifier and diagnosis: no network, and the clock pinned to when they were recorded.

tests/data/lab-failures.json: Unbound, BIND, kresd and PowerDNS 3.5 s after the bad cut-over of
14.in-addr.arpa (standby ZSK published and used at once), plus 36 (expired signatures) and
39 (DS matching no key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from probe.classify import classify
from probe.codes import DiagnosisKind, Verdict
from probe.diagnose import Evidence, diagnose
from probe.observation import Observation

RECORDED = json.loads((Path(__file__).parent / "data" / "lab-failures.json").read_text())
RESULTS: list[dict[str, Any]] = RECORDED["results"]


def replay(r: dict[str, Any]) -> tuple[Observation, Evidence]:
    return Observation.from_dict(r["observation"]), Evidence.from_dict(r["evidence"])


@pytest.mark.parametrize("r", RESULTS, ids=lambda r: f"{r['zone']}{r['resolver']}")
def test_replay_reaches_the_recorded_verdict_and_diagnosis(r: dict[str, Any]) -> None:
    obs, ev = replay(r)
    d = diagnose(ev, now=r["time"])
    c = classify(obs, cd_answer=ev.cd_answer, diagnosis=d)
    assert c.verdict.value == r["verdict"] == "bogus"
    assert d.kind.value == r["diagnosis"]["kind"]
    assert list(d.rrsig_keytags) == r["diagnosis"]["rrsig_keytags"]
    assert list(d.cached_dnskey_keytags) == r["diagnosis"]["cached_dnskey_keytags"]


def test_cutover_needs_no_ede_and_no_cd_data() -> None:
    """BIND gave no EDE; PowerDNS gave no EDE and SERVFAIL even with CD=1."""
    cut = {r["resolver"]: r for r in RESULTS if r["zone"] == "14.in-addr.arpa."}
    assert cut["bind"]["ede"] == [] and cut["pdns"]["ede"] == []
    obs, ev = replay(cut["pdns"])
    assert ev.cd_answer is not None and ev.cd_answer.rcode == 2
    assert classify(obs).verdict is Verdict.SERVFAIL  # without the follow-ups: unexplained
    d = diagnose(ev, now=cut["pdns"]["time"])
    assert d.kind is DiagnosisKind.STALE_DNSKEY_CACHE
    assert set(d.rrsig_keytags).isdisjoint(d.cached_dnskey_keytags)
    assert set(d.rrsig_keytags) <= set(d.authoritative_dnskey_keytags)
    assert 0 < (d.recovers_in_s or 0) <= 24


def test_recovery_counts_down_with_the_clock() -> None:
    r = next(x for x in RESULTS if x["zone"] == "14.in-addr.arpa." and x["resolver"] == "unbound")
    _, ev = replay(r)
    first = diagnose(ev, now=r["time"])
    later = diagnose(ev, now=r["time"] + 10)
    assert first.recovers_at == later.recovers_at
    assert first.recovers_in_s is not None and later.recovers_in_s is not None
    assert first.recovers_in_s - later.recovers_in_s == 10


def test_broken_sources_keep_their_reasons() -> None:
    reasons = {r["zone"]: set(diagnose(replay(r)[1], now=r["time"]).reasons)
               for r in RESULTS if r["diagnosis"]["kind"] == "bogus-at-source"}
    assert "rrsig-expired" in reasons["36.in-addr.arpa."]
    assert "ds-no-matching-key" in reasons["39.in-addr.arpa."]
