"""`check` at the scale of its defaults: problems grouped, a verdict matrix, silent resolvers once."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fakedns import FakeDNS
from rich.console import Console
from test_hostile_input import FAST, MARKUP_OWNERS, ZONE, hostile, hostile_zones

import probe.cli
from probe.classify import Classification
from probe.cli import main, show_progress
from probe.codes import DiagnosisKind, Verdict
from probe.diagnose import Diagnosis
from probe.engine import CheckResult, EngineConfig
from probe.observation import EdeObs, Observation, Outcome
from probe.report import (
    MARKS,
    matrix_lines,
    problem_groups,
    render_table,
    render_view,
    silent_resolvers,
    worst_per_row,
)
from probe.resolvers import ResolverSpec
from probe.zones import ProbeName, ZoneSpec

T0 = 1700000000.0
EVIL = "[bold red]evil[/]\x1b[2J"  # a resolver name from a file: markup and a control sequence
RESOLVERS = [ResolverSpec(f"r{i:02d}", f"127.0.0.{i + 1}") for i in range(13)] + [
    ResolverSpec(EVIL, "127.0.0.99"),
    ResolverSpec("dead-v4", "127.0.0.100"),
    ResolverSpec("quad9-v6", "::1"),
]
ZONES = [ZoneSpec(f"{i}.in-addr.arpa.", (ProbeName(f"1.0.0.{i}.in-addr.arpa.", "PTR"),))
         for i in range(64)]
ZONES[5] = ZoneSpec("5.in-addr.arpa.", ZONES[5].probes, label="[link=https://x]l[/link]")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No zones.txt or env from the checkout; `check` may install uvloop's policy."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DNSSEC_PROBE_ZONES", raising=False)
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def stale(recovers: int) -> Diagnosis:
    return Diagnosis(DiagnosisKind.STALE_DNSKEY_CACHE, ("dnskey-not-cached",), (47941,),
                     (5510, 14201), (14201, 47941), recovers, recovers, T0 + recovers,
                     "signed by key 47941")


BOGUS_AT_SOURCE = Diagnosis(DiagnosisKind.BOGUS_AT_SOURCE, ("rrsig-expired",), (47941,), (47941,),
                            (47941,), 300, None, None, "RRSIG expired")


def result(res: ResolverSpec, zone: ZoneSpec, verdict: Verdict, *, diag: Diagnosis | None = None,
           outcome: Outcome = Outcome.REPLY, detail: str = "",
           reason: str = "x") -> CheckResult:
    reply = outcome is Outcome.REPLY
    rcode = 0 if verdict in (Verdict.SECURE, Verdict.INSECURE) else 2
    flags = (0x81A0 if verdict is Verdict.SECURE else 0x8180) if reply else None
    obs = Observation(res.name, res.host, 53, zone.probes[0].qname, "PTR", True, False, T0,
                      outcome, attempts=1 if reply else 0, rtt_ms=1.5 if reply else None,
                      rcode=rcode if reply else None, flags=flags,
                      ede=(EdeObs(6, "x"),) if verdict is Verdict.BOGUS else (), detail=detail)
    return CheckResult(res, zone, zone.probes[0], obs, Classification(verdict, reason), None, diag)


# Problems planted in an otherwise secure 64 x 16 sweep.
STALE_ZONE, MIXED_ZONE, INSECURE_ZONE = 3, 10, 20


def sweep() -> list[CheckResult]:
    out: list[CheckResult] = []
    for zi, z in enumerate(ZONES):
        for ri, r in enumerate(RESOLVERS):
            if r.name == "quad9-v6":
                out.append(result(r, z, Verdict.UNREACHABLE, outcome=Outcome.UNREACHABLE,
                                  detail="Network is unreachable", reason="unreachable"))
            elif r.name == "dead-v4":
                # The lane's breaker: 6 timeouts, then nothing more is sent.
                if zi < 6:
                    out.append(result(r, z, Verdict.TIMEOUT, outcome=Outcome.TIMEOUT,
                                      detail="no reply after 3 attempts", reason="timeout"))
                else:
                    out.append(result(r, z, Verdict.TIMEOUT, outcome=Outcome.SKIPPED,
                                      detail="6 consecutive timeouts", reason="resolver-dead"))
            elif zi == STALE_ZONE and 1 <= ri <= 4:
                # Unbound and kresd send an EDE, BIND and PowerDNS do not: one group all the same.
                out.append(result(r, z, Verdict.BOGUS, diag=stale(15 + 5 * ri),
                                  reason="ede-dnssec" if ri <= 2 else "diagnosed"))
            elif zi == MIXED_ZONE and ri == 5:
                out.append(result(r, z, Verdict.SERVFAIL, diag=BOGUS_AT_SOURCE))
            elif zi == MIXED_ZONE and ri in (6, 7):
                out.append(result(r, z, Verdict.BOGUS, diag=stale(40)))
            elif zi == INSECURE_ZONE and ri == 8:
                out.append(result(r, z, Verdict.INSECURE, reason="no-ad"))
            elif zi == 5 and r.name == EVIL:
                out.append(result(r, z, Verdict.BOGUS, diag=stale(7)))
            else:
                out.append(result(r, z, Verdict.SECURE, reason="ad-answer"))
    return out


def view(results: Sequence[CheckResult], **kw: Any) -> str:
    buf = io.StringIO()
    render_view(results, Console(file=buf, width=160, color_system=None), **kw)
    return buf.getvalue()


def test_problems_are_grouped_by_zone_and_how_they_failed() -> None:
    groups = problem_groups(sweep())
    got = [(g.first.zone.name, g.first.classification.verdict, g.resolvers) for g in groups]
    assert got == [
        ("3.in-addr.arpa.", Verdict.BOGUS, ["r01", "r02", "r03", "r04"]),
        ("5.in-addr.arpa.", Verdict.BOGUS, [EVIL]),
        ("10.in-addr.arpa.", Verdict.SERVFAIL, ["r05"]),
        ("10.in-addr.arpa.", Verdict.BOGUS, ["r06", "r07"]),
        ("20.in-addr.arpa.", Verdict.INSECURE, ["r08"]),
    ]
    out = view(sweep())
    assert "problems: 9 rows in 5 groups" in out
    head = out.splitlines()[1]
    assert head.split() == ["3.in-addr.arpa", "bogus", "stale-dnskey-cache", "4", "resolvers:",
                            "r01,", "r02,", "r03,", "r04"]
    assert ("stale DNSKEY cache: signed by key 47941, resolver caches 5510, 14201; "
            "recovers in 20 to 35 s") in out
    assert "bogus at source: RRSIG expired; recovers in about 300 s" not in out  # None: no time
    assert "bogus at source: RRSIG expired" in out
    assert "recovers in about 40 s" in out  # the two resolvers of zone 10 agree


def test_silent_resolvers_are_listed_once_not_per_zone() -> None:
    results = sweep()
    assert silent_resolvers(results) == {
        "dead-v4": "no answer for all 64 zones (6 consecutive timeouts)",
        "quad9-v6": "unreachable for all 64 zones (Network is unreachable)",
    }
    out = view(results)
    assert out.count("quad9-v6: unreachable for all 64 zones (Network is unreachable)") == 1
    assert out.count("dead-v4: no answer for all 64 zones (6 consecutive timeouts)") == 1
    # Nowhere else but the legend and today's summary line: no row per zone for them.
    lines = [ln for ln in out.splitlines() if "quad9-v6" in ln or "dead-v4" in ln]
    assert len(lines) == 4, lines
    assert lines[-1].startswith("unreachable from this host (not a zone failure): quad9-v6")
    assert all(name not in g.resolvers for g in problem_groups(results)
               for name in ("quad9-v6", "dead-v4"))


def test_a_resolver_with_one_answer_is_not_silent() -> None:
    results = sweep()
    i = next(i for i, r in enumerate(results) if r.resolver.name == "dead-v4")
    results[i] = result(RESOLVERS[14], ZONES[0], Verdict.SECURE)
    assert "dead-v4" not in silent_resolvers(results)
    assert any("dead-v4" in g.resolvers for g in problem_groups(results))


def test_matrix_is_zones_by_resolvers_one_mark_per_cell() -> None:
    results = sweep()
    lines = [ln.plain for ln in matrix_lines(results, width=160)]
    assert len(lines) == 1 + 64  # header of resolver numbers, then one line per zone
    assert lines[0].split() == [str(i) for i in range(1, 17)]
    cells = {ln.split()[0]: ln.split()[1:] for ln in lines[1:]}
    assert len(cells) == 64 and all(len(c) == 16 for c in cells.values())
    assert cells["3.in-addr.arpa"] == ["."] + ["B"] * 4 + ["."] * 8 + [".", "T", "-"]
    assert cells["10.in-addr.arpa"][5:8] == ["S", "B", "B"]
    assert cells["20.in-addr.arpa"][8] == "i"
    assert cells["0.in-addr.arpa"] == ["."] * 14 + ["T", "-"]
    assert set(MARKS.values()) >= {".", "B", "S", "T", "-", "i"}


def test_matrix_fits_a_narrow_terminal_and_marks_unchecked_pairs() -> None:
    results = [r for r in sweep() if not (r.zone.name == "7.in-addr.arpa." and
                                          r.resolver.name == "r00")]
    lines = [ln.plain for ln in matrix_lines(results, width=60)]
    assert all(len(ln) <= 60 for ln in lines)
    zw = 60 - 3 * 16 - 1  # what is left for the zone column, its distinctive start kept
    assert lines[8][:zw] == "7.in-addr.\u2026" and lines[8][zw:zw + 3] == "   "
    assert lines[9][:zw + 3] == "8.in-addr.\u2026  ."


def test_markup_in_names_stays_literal() -> None:
    out = view(sweep())
    assert "[bold red]evil[/]\\x1b[2J" in out  # escaped once, printed, not obeyed
    assert "5.in-addr.arpa ([link=https://x]l[/link])" in out
    assert "\x1b" not in out
    buf = io.StringIO()
    render_view(sweep(), Console(file=buf, width=160, force_terminal=True))
    assert "\x1b[2J" not in buf.getvalue() and "\x1b]8;" not in buf.getvalue()  # no hyperlink


def test_not_validating_resolver_is_listed_once() -> None:
    results = [r if r.resolver.name != "r12" or r.classification.verdict is not Verdict.SECURE
               else result(r.resolver, r.zone, Verdict.INSECURE, reason="no-ad")
               for r in sweep()]
    plain_groups = problem_groups(results)
    assert sum("r12" in g.resolvers for g in plain_groups) == 64  # what the issue complains of
    nv = {"r12": "answered bogus control dnssec-failed.org"}
    assert not any("r12" in g.resolvers for g in problem_groups(results, not_validating=nv))
    out = view(results, not_validating=nv)
    assert out.count("r12: does not validate (answered bogus control dnssec-failed.org); "
                     "64 zones marked n") == 1
    cells = {ln.plain.split()[0]: ln.plain.split()[1:]
             for ln in matrix_lines(results, not_validating=nv)[1:]}
    assert cells["0.in-addr.arpa"][12] == "n"


def test_all_rows_table_has_every_row() -> None:
    results = sweep()
    buf = io.StringIO()
    render_table(results, Console(file=buf, width=250, color_system=None))
    rows = [ln for ln in buf.getvalue().splitlines() if ".in-addr.arpa" in ln and "\u2502" in ln]
    assert len(rows) == len(worst_per_row(results)) == 64 * 16


# ---- through the command line, with the sweep replaced ---------------------------------------

class FakeEngine:
    """Stands in for Engine: records its config and hands back a prepared sweep."""

    configs: ClassVar[list[EngineConfig]] = []
    results: ClassVar[list[CheckResult]] = []
    planned_not_validating: ClassVar[dict[str, str]] = {}

    def __init__(self, config: EngineConfig) -> None:
        FakeEngine.configs.append(config)
        self.not_validating = FakeEngine.planned_not_validating

    async def sweep(self, zones: Any, resolvers: Any, *, progress: Any = None,
                    keep: bool = True) -> list[CheckResult]:
        for r in FakeEngine.results:
            if progress:
                progress(r)
        return list(FakeEngine.results) if keep else []


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setattr(probe.cli, "Engine", FakeEngine)
    monkeypatch.setenv("COLUMNS", "160")
    FakeEngine.configs, FakeEngine.results = [], sweep()
    FakeEngine.planned_not_validating = {}
    zones = tmp_path / "zones.txt"
    zones.write_text("".join(f"{z.name}\n" for z in ZONES))
    yield zones


def cli(zones: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(["check", "--zones", str(zones), "--resolver", "x=127.0.0.1:9", *args])
    assert isinstance(info.value.code, int)
    return info.value.code


def test_cli_default_view_and_all(fake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(fake) == 2  # bogus is critical: exit status as before
    captured = capsys.readouterr()
    assert captured.err == ""  # not a TTY: no progress bar, nothing else on stderr
    out = captured.out
    assert "problems: 9 rows in 5 groups" in out and "matrix" in out
    assert "1024 checks (64 zones x 16 resolvers)" in out
    assert sum("\u2502" in ln for ln in out.splitlines()) == 0  # no table
    assert len(out.splitlines()) < 120  # the picture, not 1024 rows
    assert cli(fake, "--all") == 2
    captured = capsys.readouterr()
    assert captured.err == ""
    rows = [ln for ln in captured.out.splitlines() if ".in-addr.arpa" in ln and "\u2502" in ln]
    assert len(rows) == 1024
    assert "1024 checks (64 zones x 16 resolvers)" in captured.out


def test_cli_json_is_unchanged_but_for_additions(fake: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(fake, "--json") == 2
    captured = capsys.readouterr()
    assert captured.err == ""
    doc = json.loads(captured.out)
    assert set(doc) == {"results", "summary", "exit_status"}
    assert len(doc["results"]) == 1024
    FakeEngine.planned_not_validating = {"r12": "answered the bogus control"}
    assert cli(fake, "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["not_validating"] == {"r12": "answered the bogus control"}
    assert cli(fake) == 2
    assert "r12: does not validate (answered the bogus control)" in capsys.readouterr().out


def test_progress_bar_only_on_a_terminal_and_never_for_json() -> None:
    tty = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert show_progress(tty, as_json=False)
    assert not show_progress(tty, as_json=True)
    assert not show_progress(pipe, as_json=False)


def test_control_and_clock_skew_flags_reach_the_engine(
        fake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(fake, "--control-bogus", "dnssec-failed.org/A",
               "--control-secure", "0/26.2.0.192.in-addr.arpa", "--clock-skew", "120") == 2
    cfg = FakeEngine.configs[-1]
    assert (cfg.control_bogus, cfg.control_secure, cfg.clock_skew) == (
        "dnssec-failed.org/A", "0/26.2.0.192.in-addr.arpa", 120.0)
    assert cli(fake) == 2
    cfg = FakeEngine.configs[-1]
    assert (cfg.control_bogus, cfg.control_secure, cfg.clock_skew) == (None, None, 3600.0)
    capsys.readouterr()


@pytest.mark.parametrize(("flag", "value"), [
    ("--clock-skew", "-1"), ("--clock-skew", "inf"), ("--clock-skew", "nan"),
    ("--control-bogus", "x.example/NOTATYPE"), ("--control-bogus", "a..b"),
    ("--control-secure", "."), ("--control-secure", "x\x1b[2J.example"),
])
def test_bad_control_or_skew_flags_exit_3(fake: Path, flag: str, value: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(fake, flag, value) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and flag in captured.err and "\x1b" not in captured.err
    assert FakeEngine.configs == []  # refused before a sweep


def test_default_view_of_a_real_sweep_keeps_hostile_names_literal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "4000")
    label = "[link=https://evil]x[/link]\x1b[2J"
    with FakeDNS(hostile) as srv, pytest.raises(SystemExit) as info:
        main(["check", "--zones", str(hostile_zones(tmp_path, srv.port, label)),
              "--resolver", f"[/r]=127.0.0.1:{srv.port}", *FAST])
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    assert "MarkupError" not in captured.err and captured.err == ""
    out = captured.out
    assert (f"{ZONE.rstrip('.')} ([link=https://evil]x[/link]\\x1b[2J)  bogus  bogus-at-source  "
            "1 resolver: [/r]") in out
    for owner in MARKUP_OWNERS:
        assert owner in out  # the diagnosis detail, as the reply spelled it
    assert "1=[/r]" in out and "\x1b" not in out


def test_optional_config_keys_take_a_flag_like_their_type() -> None:
    from probe.cli import _unwrap_optional

    assert _unwrap_optional(str | None) is str
    assert _unwrap_optional(float) is float
    assert _unwrap_optional(tuple[str, ...]) == tuple[str, ...]


def test_run_takes_the_control_and_skew_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from probe.daemon.config import FIELDS

    if not {"control_bogus", "control_secure", "clock_skew"} <= set(FIELDS):
        pytest.skip("probe/daemon/config.py has no control_bogus/control_secure/clock_skew yet")
    with pytest.raises(SystemExit) as info:
        main(["run", "--resolver", "x=127.0.0.1:9", "--check-config",
              "--control-bogus", "dnssec-failed.org/A", "--control-secure", "example.org",
              "--clock-skew", "120"])
    assert info.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["control_bogus"], doc["control_secure"], doc["clock_skew"]) == (
        "dnssec-failed.org/A", "example.org", 120.0)


def test_json_stream_is_one_document_whatever_is_written() -> None:
    from probe.report import JsonStream

    for n, extra in ((0, {}), (3, {"interrupted": True}), (2, {"not_validating": {"x": "y"}})):
        buf = io.StringIO()
        s = JsonStream(buf)
        for r in sweep()[:n]:
            s.add(r)
        status = s.finish(interrupted=bool(extra.get("interrupted")),
                          not_validating=extra.get("not_validating"))
        doc = json.loads(buf.getvalue())
        assert len(doc["results"]) == n and sum(doc["summary"].values()) == n
        assert doc["exit_status"] == status == (3 if n == 0 else status)
        assert {k: doc[k] for k in extra} == extra
        assert buf.getvalue().count("\n") == (n + 2 if n else 1)  # one result per line


def test_workers_per_resolver_follow_inflight_and_rate() -> None:
    assert EngineConfig(max_inflight=1024, qps=0).workers_per_resolver(1) == 1024
    assert EngineConfig(max_inflight=256, qps=0).workers_per_resolver(100) == 8
    assert EngineConfig(max_inflight=256, qps=20, timeout=2).workers_per_resolver(4) == 40
    assert EngineConfig(max_inflight=256, qps=1, timeout=2).workers_per_resolver(1) == 8
    assert EngineConfig(max_inflight=4, qps=0).workers_per_resolver(1) == 4
    assert EngineConfig(per_resolver=3).workers_per_resolver(1) == 3


def test_the_row_encoder_writes_what_json_dumps_writes() -> None:
    """The fast row encoding against json.dumps(to_json()) on every kind of row: secure,
    bogus with a diagnosis, timeouts (no rcode, no RTT), EDE, odd names and labels."""
    import dataclasses

    from test_daemon_units import round_results

    from probe.report import RowEncoder

    rows = [*sweep(), *round_results()]
    odd = rows[0]._replace(zone=dataclasses.replace(rows[0].zone, label='l"\\x'),
                           resolver=ResolverSpec('n"\\u00e9\\n', "::1", 53, "op é"))
    odd = odd._replace(observation=odd.observation._replace(
        rtt_ms=1e-7, started=1e16, transport="tcp", attempts=3))
    odd_name = odd._replace(probe=ProbeName('a"\\065\u00e9\t.x.', "TYPE65"))
    rows += [odd, odd_name]
    enc = RowEncoder()
    for r in rows * 2:  # the second time from the caches
        text, sev = enc.encode(r)
        assert text == json.dumps(r.to_json()) and sev is r.severity
