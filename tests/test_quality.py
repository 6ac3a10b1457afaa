"""The code stays ruff-clean and mypy-strict-clean (run as tests so CI enforces them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cmd", [
    [sys.executable, "-m", "ruff", "check", "probe", "tests", "bench", "grafana"],
    [sys.executable, "-m", "mypy", "probe", "grafana/build.py"],
], ids=["ruff", "mypy"])
def test_static_checks(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
