"""probe.cli: exit codes, config errors with FILE:LINE, JSON and table output against a fake resolver."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from fakedns import FakeDNS, Request, default_answer, make_reply

from probe.cli import main

ZONES = """\
# test zones (documentation ranges; only the fake resolver on 127.0.0.1 is ever asked)
2.0.192.in-addr.arpa. 1 2/PTR
100.51.198.in-addr.arpa.
"""
EXPECTED_CHECKS = {
    ("2.0.192.in-addr.arpa.", "1.2.0.192.in-addr.arpa.", "PTR"),
    ("2.0.192.in-addr.arpa.", "2.2.0.192.in-addr.arpa.", "PTR"),
    ("100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa.", "SOA"),
}
FAST = ["--qps", "0", "--timeout", "0.5", "--retries", "0"]
RESULT_KEYS = {"resolver", "address", "zone", "qname", "qtype", "verdict", "rcode", "ad", "ede",
               "rtt_ms", "diagnosis"}


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No zones.txt or env from the checkout; wide table; undo the CLI's uvloop policy."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DNSSEC_PROBE_ZONES", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


@pytest.fixture
def zones_file(tmp_path: Path) -> Path:
    p = tmp_path / "zones.txt"
    p.write_text(ZONES)
    return p


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(["check", *args])
    code = info.value.code
    assert isinstance(code, int)
    return code


def resolver_args(srv: FakeDNS, name: str = "fake") -> list[str]:
    return ["--resolver", f"{name}={srv.host}:{srv.port}"]


# -- fake resolvers ------------------------------------------------------------------------

def validating(req: Request) -> bytes:
    q = req.message
    return make_reply(q, answer=default_answer(q))


def not_validating(req: Request) -> bytes:
    q = req.message
    return make_reply(q, ad=False, answer=default_answer(q))


def bogus(req: Request) -> bytes:
    """A validator that finds everything bogus, even with CD=1 (like PowerDNS)."""
    return make_reply(req.message, rcode=dns.rcode.SERVFAIL, ad=False,
                      ede=[(6, "signature verification failed")])


def sweep_json(handler: Callable[[Request], bytes], zones_file: Path,
               capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any], FakeDNS]:
    with FakeDNS(handler) as srv:
        code = run(["--zones", str(zones_file), *resolver_args(srv), "--json", *FAST, *extra])
    out = capsys.readouterr().out
    return code, json.loads(out), srv


# -- configuration errors ------------------------------------------------------------------

def test_unknown_zone_option_names_file_and_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad-zones.txt"
    bad.write_text("# header\n2.0.192.in-addr.arpa.\n100.51.198.in-addr.arpa. colour=blue\n"
                   "113.0.203.in-addr.arpa.\n")
    code = run(["--zones", str(bad), "--resolver", "x=127.0.0.1:9", *FAST])
    assert code == 3
    captured = capsys.readouterr()
    assert f"{bad}:3" in captured.err
    assert "colour" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("spec", [
    "noequals",
    "x=not-an-address",
    "x=999.1.1.1",
    "x=127.0.0.1:0",
    "x=127.0.0.1:70000",
    "=127.0.0.1",
    "x=[::1",
])
def test_bad_resolver_exits_3(spec: str, zones_file: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["--zones", str(zones_file), "--resolver", spec, *FAST])
    assert code == 3
    captured = capsys.readouterr()
    assert "error" in captured.err.lower()
    assert captured.out == ""


@pytest.mark.parametrize("args", [
    ["--timeout", "0"],
    ["--retries", "11"],
    ["--qps", "-1"],
    ["--qps", "inf"],
    ["--timeout", "nan"],
    ["--raw"],
    ["-4", "-6"],
    ["--no-such-option"],
])
def test_bad_options_exit_3_before_asking_anyone(args: list[str], zones_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with FakeDNS(validating) as srv:
        code = run(["--zones", str(zones_file), *resolver_args(srv), *FAST, *args])
    assert code == 3
    assert capsys.readouterr().err
    assert srv.requests == []


def test_bad_resolver_via_python_m_probe(zones_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "probe", "check", "--zones", str(zones_file),
         "--resolver", "x=nowhere", *FAST],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 3
    assert "--resolver" in proc.stderr
    assert proc.stdout == ""


# -- sweeps against a fake resolver ----------------------------------------------------------

def test_all_secure_exits_0_with_json_results(zones_file: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, srv = sweep_json(validating, zones_file, capsys)
    assert code == 0
    assert doc["exit_status"] == 0
    results = doc["results"]
    assert isinstance(results, list) and len(results) == 3
    for r in results:
        assert set(r) >= RESULT_KEYS
        assert r["resolver"] == "fake"
        assert r["address"] == f"127.0.0.1:{srv.port}"
        assert r["verdict"] == "secure"
        assert r["rcode"] == "NOERROR"
        assert r["ad"] is True
        assert r["ede"] == []
        assert isinstance(r["rtt_ms"], float) and r["rtt_ms"] >= 0
        assert r["diagnosis"] is None
    assert {(r["zone"], r["qname"], r["qtype"]) for r in results} == EXPECTED_CHECKS
    assert doc["summary"] == {"secure": 3}
    # One DO=1, RD=1, CD=0 query per check and nothing else.
    assert len(srv.requests) == 3
    for req in srv.requests:
        msg = req.message
        assert msg.ednsflags & dns.flags.DO
        assert msg.flags & dns.flags.RD and not msg.flags & dns.flags.CD


def test_python_m_probe_json_sweep(zones_file: Path) -> None:
    with FakeDNS(validating) as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "probe", "check", "--zones", str(zones_file),
             *resolver_args(srv), "--json", *FAST],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["verdict"] for r in doc["results"]] == ["secure"] * 3


def test_servfail_with_ede_6_is_bogus_exit_2(zones_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, srv = sweep_json(bogus, zones_file, capsys, "--no-diagnose")
    assert code == 2
    assert doc["exit_status"] == 2
    for r in doc["results"]:
        assert r["verdict"] == "bogus"
        assert r["rcode"] == "SERVFAIL"
        assert r["ad"] is False
        assert r["ede"] == [{"code": 6, "text": "signature verification failed"}]
        assert r["diagnosis"] is None
    assert len(srv.requests) == 3  # --no-diagnose: no follow-up questions


def test_bogus_with_diagnosis_but_no_authoritative_servers_is_unknown(
        zones_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, srv = sweep_json(bogus, zones_file, capsys)
    assert code == 2
    for r in doc["results"]:
        assert r["verdict"] == "bogus"
        d = r["diagnosis"]
        assert isinstance(d, dict)
        assert d["kind"] == "unknown"
        assert "no authoritative servers found" in d["detail"]
    # Follow-ups went to the resolver (CD=1) and to nobody else.
    follow_ups = [req.message for req in srv.requests if req.message.flags & dns.flags.CD]
    asked = {(m.question[0].name.to_text(), dns.rdatatype.to_text(m.question[0].rdtype))
             for m in follow_ups}
    for zone in ("2.0.192.in-addr.arpa.", "100.51.198.in-addr.arpa."):
        assert {(zone, "DNSKEY"), (zone, "DS"), (zone, "NS")} <= asked


def test_no_ad_is_insecure_exit_1(zones_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = sweep_json(not_validating, zones_file, capsys)
    assert code == 1
    assert doc["exit_status"] == 1
    assert [r["verdict"] for r in doc["results"]] == ["insecure"] * 3
    assert all(r["ad"] is False and r["rcode"] == "NOERROR" for r in doc["results"])


@pytest.mark.parametrize(("handler", "verdict", "code", "words"), [
    (validating, "secure", 0, []),
    (not_validating, "insecure", 1, ["no AD bit"]),
    (bogus, "bogus", 2, ["SERVFAIL"]),
])
def test_table_output_shows_zones_and_verdicts(
        handler: Callable[[Request], bytes], verdict: str, code: int, words: list[str],
        zones_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeDNS(handler) as srv:
        got = run(["--zones", str(zones_file), *resolver_args(srv), "--no-diagnose", "--all",
                   *FAST])
    assert got == code
    out = capsys.readouterr().out
    # --all: one row per (zone, resolver): zone, resolver, address, verdict, ... cells.
    rows = [[c.strip() for c in line.split("\u2502")[1:-1]]
            for line in out.splitlines() if "in-addr.arpa" in line]
    assert [row[:4] for row in rows] == [
        ["2.0.192.in-addr.arpa", "fake", f"127.0.0.1:{srv.port}", verdict],
        ["100.51.198.in-addr.arpa", "fake", f"127.0.0.1:{srv.port}", verdict],
    ]
    assert f"3 checks (2 zones x 1 resolvers): 3 {verdict}" in out
    for w in words:
        assert w in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
