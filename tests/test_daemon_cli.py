"""`dnssec-probe run` / `incidents` on the command line: bad settings exit 3 naming file and key,
--check-config validates without printing secrets, the embedded default runs with no server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakedns import FakeDNS

from probe.cli import main

ZONES = "2.0.192.in-addr.arpa. 1\n"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.mark.parametrize(("config", "flags", "expected"), [
    ("intervall = 60\n", [], "unknown key 'intervall'"),
    ('influx_url = "influx:8086"\n', [], "influx_url: expected an http:// or https:// URL"),
    ("open_min_resolvers = 0\n", [], "open_min_resolvers: expected an integer >= 1"),
    ('influx_url = "http://probe:hunter2@127.0.0.1:8086"\n', [], "without user:password"),
    ("", ["--interval", "0"], "--interval: interval: expected a number > 0"),
    ("", ["--influx-api", "v9"], "--influx-api: influx_api: expected 'v1' or 'v2'"),
    ("", ["--influx-token-file", "/nonexistent/token"], "influx_token_file: cannot read"),
])
def test_bad_settings_exit_3_with_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              config: str, flags: list[str],
                                              expected: str) -> None:
    cfg = tmp_path / "probe.toml"
    cfg.write_text(config)
    code, _, err = run_cli(["run", "--config", str(cfg), "--check-config", *flags], capsys)
    assert code == 3, err
    assert expected in err and "hunter2" not in err
    if config:
        assert str(cfg) in err


def test_check_config_prints_settings_not_secrets(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zones.txt").write_text(ZONES)
    monkeypatch.setenv("DNSSEC_PROBE_INFLUX_TOKEN", "tok-very-secret")
    monkeypatch.setenv("DNSSEC_PROBE_PAGERDUTY_KEY", "pd-very-secret")
    cfg = tmp_path / "probe.toml"
    cfg.write_text(f'zones = "{tmp_path / "zones.txt"}"\ninterval = 30\n'
                   'influx_url = "http://127.0.0.1:8086"\n')
    code, out, err = run_cli(["run", "--config", str(cfg), "--check-config", "--interval", "15",
                              "--resolver", "lab=127.0.0.1"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["interval"] == 15.0 and doc["resolver"] == ["lab=127.0.0.1"]
    assert doc["influx_token"] == "set" and doc["pagerduty_key"] == "set"
    assert doc["zones_loaded"] == 1 and doc["resolvers_loaded"] == ["lab"]
    assert "very-secret" not in out + err


def test_bad_zones_file_is_named_with_its_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    zones = tmp_path / "zones.txt"
    zones.write_text("2.0.192.in-addr.arpa.\n2.0.192.in-addr.arpa. expect=maybe\n")
    code, _, err = run_cli(["run", "--zones", str(zones), "--resolver", "x=127.0.0.1",
                            "--check-config"], capsys)
    assert code == 3 and f"{zones}:2:" in err


def test_incidents_without_state_exits_3(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["incidents", "--state-dir", str(tmp_path / "none")], capsys)
    assert code == 3 and "state.sqlite3 missing" in err


def test_embedded_default_runs_rounds_with_no_server(tmp_path: Path) -> None:
    """No influx_url: a laptop gets line files and incident state, nothing else needed."""
    with FakeDNS(lambda req: None) as silent:  # a resolver that never answers: timeouts
        (tmp_path / "zones.txt").write_text(ZONES)
        proc = subprocess.run(
            [sys.executable, "-m", "probe", "run", "--zones", str(tmp_path / "zones.txt"),
             "--resolver", f"silent={silent.host}:{silent.port}", "--rounds", "2",
             "--interval", "0.5", "--timeout", "0.2", "--retries", "0", "--qps", "0",
             "--state-dir", str(tmp_path / "state"), "--log-json"],
            capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    rounds = [e for e in events if e.get("event") == "round"]
    assert [r["verdicts"] for r in rounds] == [{"timeout": 1}, {"timeout": 1}]
    (lines_file,) = (tmp_path / "state" / "lines").glob("*.lp")
    text = lines_file.read_text()
    assert text.count("dnssec_check,") == 2 and "verdict=timeout" in text
    assert (tmp_path / "state" / "state.sqlite3").is_file()
