"""What README.md and .ci/run promise stays true of the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from probe.classify import _OUTCOME_VERDICT
from probe.cli import main
from probe.codes import FINDINGS, REASONS, DiagnosisKind, FindingCode, Verdict
from probe.observation import Outcome

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert len(blocks) >= 2, "README must show the install/run and the test command"
    install, test = blocks[0].strip(), blocks[1].strip()
    assert "pip install ." in install and "dnssec-probe run" in install
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines


def test_readme_names_every_verdict_diagnosis_and_finding() -> None:
    for code in [*Verdict, *DiagnosisKind, *FindingCode]:
        assert f"`{code.value}`" in README, code


def test_every_outcome_has_a_documented_reason() -> None:
    for outcome in Outcome:
        if outcome is not Outcome.REPLY:
            assert _OUTCOME_VERDICT[outcome][1] in REASONS, outcome


def test_codes_command_lists_every_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["codes", "--json"])
    assert info.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["reasons"]) == set(REASONS)
    assert set(doc["findings"]) == {c.value for c in FindingCode} == {c.value for c in FINDINGS}
    assert doc["findings"]["unsafe-rollover"]["severity"] == "critical"
    assert doc["verdicts"]["bogus"] == "critical"
    assert doc["verdicts"]["unreachable"] == "n/a"
