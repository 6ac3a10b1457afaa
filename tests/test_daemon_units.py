"""Pure parts of the daemon: schedule, InfluxDB points, config loading, state store, logs."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.classify import Classification
from probe.codes import DiagnosisKind, Verdict
from probe.daemon import logs
from probe.daemon.config import FIELDS, DaemonConfig, build, describe, flag_name, load_file
from probe.daemon.schedule import next_slot
from probe.diagnose import Diagnosis
from probe.engine import CheckResult
from probe.errors import ConfigError
from probe.incidents import BogusView, EventKind, IncidentEvent, IncidentPolicy, ZoneRound, step
from probe.observation import EdeObs, Observation, Outcome
from probe.points import (
    RoundInfo,
    check_lines,
    check_times,
    incident_points,
    resolver_verdicts,
    round_point,
    stats_point,
    to_lines,
    zone_points,
    zone_rounds,
)
from probe.resolvers import ResolverSpec
from probe.state import OutboxItem, StateLocked, StateStore
from probe.zones import ProbeName, ZoneSpec

# ---- schedule ---------------------------------------------------------------------------------


def test_rounds_stay_on_the_grid_whatever_they_take() -> None:
    rng = random.Random(1)
    s0 = next_slot(1000.0, 60.0, None, 1000.0, 0.0, rng)
    assert (s0.k, s0.start) == (0, 1000.0)
    s1 = next_slot(1000.0, 60.0, 0, 1037.3, 0.0, rng)  # round 0 took 37.3 s
    assert (s1.k, s1.start) == (1, 1060.0)
    s2 = next_slot(1000.0, 60.0, 1, 1061.0, 0.0, rng)
    assert (s2.k, s2.start) == (2, 1120.0)  # no drift from round durations


def test_an_overrun_starts_the_next_round_at_once_then_back_on_the_grid() -> None:
    rng = random.Random(1)
    late = next_slot(1000.0, 60.0, 0, 1150.0, 0.0, rng)  # round 0 ran 150 s
    assert late.start == 1150.0 and late.k == 2  # at once, slot 1 skipped
    after = next_slot(1000.0, 60.0, late.k, 1170.0, 0.0, rng)
    assert after.start == 1180.0


def test_jitter_is_bounded() -> None:
    rng = random.Random(7)
    starts = [next_slot(0.0, 60.0, k, 60.0 * k + 1, 2.0, rng).start - 60.0 * (k + 1)
              for k in range(200)]
    assert all(0 <= d <= 2.0 for d in starts) and max(starts) > 1.0


# ---- points -----------------------------------------------------------------------------------

RES = [ResolverSpec("unbound", "127.53.1.1"), ResolverSpec("bind", "127.53.1.2"),
       ResolverSpec("v6 only", "::1")]
ZONE = ZoneSpec("14.in-addr.arpa.", (ProbeName("1.0.0.14.in-addr.arpa.", "PTR"),
                                     ProbeName("2.0.0.14.in-addr.arpa.", "PTR")))


def result(res: ResolverSpec, probe: ProbeName, verdict: Verdict, *, t: float = 1700000000.5,
           diag: Diagnosis | None = None, rcode: int | None = 2) -> CheckResult:
    outcome = Outcome.UNREACHABLE if verdict is Verdict.UNREACHABLE else Outcome.REPLY
    obs = Observation(res.name, res.host, 53, probe.qname, "PTR", True, False, t, outcome,
                      rtt_ms=1.25 if outcome is Outcome.REPLY else None,
                      rcode=rcode if outcome is Outcome.REPLY else None,
                      flags=0x8180 if outcome is Outcome.REPLY else None,
                      ede=(EdeObs(6, "x"),) if verdict is Verdict.BOGUS else ())
    return CheckResult(res, ZONE, probe, obs, Classification(verdict, "x"), None, diag)


STALE = Diagnosis(DiagnosisKind.STALE_DNSKEY_CACHE, ("dnskey-not-cached",), (47941,),
                  (5510, 14201), (14201, 47941), 20, 20, 1700000020.0, "signed by key 47941")


def round_results() -> list[CheckResult]:
    p1, p2 = ZONE.probes
    return [
        result(RES[0], p1, Verdict.BOGUS, diag=STALE),
        result(RES[0], p2, Verdict.BOGUS, diag=STALE),  # same tag set, same microsecond
        result(RES[1], p1, Verdict.SECURE, rcode=0),
        result(RES[1], p2, Verdict.BOGUS, diag=STALE),
        result(RES[2], p1, Verdict.UNREACHABLE),
        result(RES[2], p2, Verdict.UNREACHABLE),
    ]


RND = RoundInfo(7, "lab host", 1700000000.0, 2.5, overrun=False)


def test_check_points_schema_and_distinct_timestamps() -> None:
    lines = check_lines(round_results(), RND)
    assert len(lines) == 6
    first, second = lines[0], lines[1]
    assert first.startswith("dnssec_check,diagnosis=stale-dnskey-cache,qtype=PTR,reason=x,"
                            "resolver=unbound,vantage=lab\\ host,verdict=bogus,zone=14.in-addr.arpa. ")
    assert 'qname="1.0.0.14.in-addr.arpa."' in first
    for field in ("ad=false", "cached_dnskey_ttl=20i", "ede=6i", "rcode=2i", "recovers_in_s=20i",
                  "round=7i", "rtt_ms=1.25"):
        assert field in first, field
    t1, t2 = int(first.rsplit(" ", 1)[1]), int(second.rsplit(" ", 1)[1])
    assert t1 == 1700000000500000000 and t2 == t1 + 1_000_000  # 1 ms later, not overwritten
    unreachable = lines[4]
    assert "verdict=unreachable" in unreachable and "diagnosis=none" in unreachable
    assert "rtt_ms" not in unreachable and "rcode" not in unreachable and "ede=-1i" in unreachable


def test_same_tag_checks_are_spread_in_send_order() -> None:
    """Results come in index order, sends in any order: spacing follows the send times."""
    p1, p2 = ZONE.probes
    late = result(RES[0], p1, Verdict.SECURE, t=1700000000.0002, rcode=0)
    early = result(RES[0], p2, Verdict.SECURE, t=1700000000.0001, rcode=0)
    t_late, t_early = check_times([late, early])
    assert abs(t_early - 1700000000000100000) < 1000  # the earlier send keeps its time (float)
    assert t_late == t_early + 1_000_000


def test_zone_points_count_resolvers_by_worst_verdict() -> None:
    worst = resolver_verdicts(round_results())
    (line,) = to_lines(zone_points(worst, RND))
    # unreachable is not counted; bind's worst is bogus
    for field in ("resolvers=2i", "bogus=2i", "secure=0i", "bogus_ratio=1", "round=7i"):
        assert field in line, (field, line)
    zr = zone_rounds(worst)
    assert zr == [ZoneRound(ZONE.name, {
        "unbound": BogusView("stale-dnskey-cache", (47941,), (5510, 14201), 1700000020.0),
        "bind": BogusView("stale-dnskey-cache", (47941,), (5510, 14201), 1700000020.0)}, 2)]


def test_incident_and_round_points() -> None:
    worst = resolver_verdicts(round_results())
    _, events = step({}, zone_rounds(worst), now=1700000003.0, policy=IncidentPolicy())
    assert [e.event for e in events] == [EventKind.OPEN]
    (line,) = to_lines(incident_points(events, RoundInfo(7, "lab", 1.0, 1.0, False)))
    assert line.startswith("dnssec_incident,event=open,kind=stale-dnskey-cache,vantage=lab,"
                           "zone=14.in-addr.arpa. ")
    for field in ('affected=2i', 'cached_keytags="5510,14201"', 'resolvers="bind,unbound"',
                  'rrsig_keytags="47941"', "recovers_at=1700000020i",
                  'id="14.in-addr.arpa@2023-11-14T22:13:23Z"', "round=7i"):
        assert field in line, (field, line)
    from probe.alerts import AlertStats
    from probe.sinks import DeliveryStats

    d = DeliveryStats(written_lines=10, spool_bytes=5)
    d.write_failures["timeout"] += 2
    sline = stats_point(RND, d, AlertStats(pending=1), 3).to_line_protocol()
    assert sline.startswith("dnssec_probe_stats,vantage=lab\\ host ")
    for field in ("written_lines=10i", "write_failures=2i", "spool_bytes=5i", "alerts_pending=1i",
                  "open_incidents=3i", "last_success=0i", "round=7i"):
        assert field in sline, (field, sline)
    rline = round_point(RND, 6).to_line_protocol()
    assert rline.startswith("dnssec_round,vantage=lab\\ host ")
    assert "checks=6i" in rline and "overrun=false" in rline and "duration_s=2.5" in rline


def _reference_check_lines(results: list[CheckResult], rnd: RoundInfo) -> list[str]:
    """dnssec_check through influxdb-client's Point, as the daemon wrote it before
    check_lines: the text the fast writer must match byte for byte."""
    from influxdb_client.client.write.point import Point
    from influxdb_client.domain.write_precision import WritePrecision

    out = []
    for r, t in zip(results, check_times(results), strict=True):
        o, d = r.observation, r.diagnosis
        p = (Point("dnssec_check").tag("vantage", rnd.vantage).tag("resolver", r.resolver.name)
             .tag("zone", r.zone.name).tag("qtype", r.probe.qtype)
             .tag("verdict", r.classification.verdict.value)
             .tag("diagnosis", d.kind.value if d else "none")
             .tag("reason", r.classification.reason).field("qname", r.probe.qname)
             .field("ede", o.ede[0].code if o.ede else -1).field("round", rnd.number)
             .time(t, WritePrecision.NS))
        if o.rtt_ms is not None:
            p.field("rtt_ms", float(o.rtt_ms))
        if o.rcode is not None:
            p.field("rcode", int(o.rcode)).field("ad", o.ad)
        if d is not None:
            for k, v in (("cached_dnskey_ttl", d.cached_dnskey_ttl),
                         ("recovers_in_s", d.recovers_in_s), ("cached_ds_ttl", d.cached_ds_ttl)):
                if v is not None:
                    p.field(k, int(v))
            if d.zone is not None:
                p.field("diagnosis_zone", d.zone)
        if o.nsid is not None:
            p.field("nsid", o.nsid)
        out.append(p.to_line_protocol())
    return out


def test_check_lines_equal_influxdb_client_lines() -> None:
    """The direct writer against the library, on ordinary and awkward values: spaces, commas,
    equals signs, quotes, backslashes and newlines in tags and string fields."""
    odd_res = ResolverSpec('a b,c=d\\', "127.0.0.1")
    odd_probe = ProbeName('x"y\\z.14.in-addr.arpa.', "PTR")
    odd = result(odd_res, odd_probe, Verdict.BOGUS, diag=dataclasses.replace(
        STALE, zone="63.in-addr.arpa.", cached_ds_ttl=5, recovers_in_s=None))
    odd = odd._replace(observation=odd.observation._replace(
        nsid='inst "1"\\\n', rtt_ms=2.0))
    p1 = ZONE.probes[0]
    fast = [x._replace(observation=x.observation._replace(
        flags=0x81A0, rtt_ms=rtt)) for x, rtt in (
        (result(RES[0], p1, Verdict.SECURE, rcode=0), 2.0),
        (result(odd_res, odd_probe, Verdict.SECURE, rcode=0), 0.123456789))]
    results = [*round_results(), odd, *fast]
    for rnd in (RND, RoundInfo(8, "v,=\\", 1.0, 1.0, False), RoundInfo(9, "", 1.0, 1.0, False)):
        assert check_lines(results, rnd) == _reference_check_lines(results, rnd)


def test_free_text_never_becomes_a_tag() -> None:
    event = IncidentEvent(EventKind.OPEN, step({}, zone_rounds(resolver_verdicts(
        round_results())), now=1.0, policy=IncidentPolicy())[0][ZONE.name], 1.0)
    lines = [*check_lines(round_results(), RND), *to_lines(incident_points([event], RND))]
    for line in lines:
        tagset = line.split(" ", 1)[0]
        keys = {kv.split("=", 1)[0] for kv in tagset.split(",")[1:]}
        assert keys <= {"vantage", "resolver", "zone", "qtype", "verdict", "diagnosis", "reason", "event",
                        "kind"}, keys


# ---- config -----------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "probe.toml"
    p.write_text(text)
    return p


def test_config_file_and_flags_flags_win(tmp_path: Path) -> None:
    p = write(tmp_path, 'interval = 30\nresolver = ["a=127.0.0.1"]\ninflux_url = "http://127.0.0.1:1"\n')
    cfg = build(load_file(p), {"interval": 5.0, "rounds": None, "resolver": ()})
    assert cfg.interval == 5.0 and cfg.resolver == ("a=127.0.0.1",)
    assert cfg.influx_url == "http://127.0.0.1:1" and cfg.rounds == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("intervall = 3\n", "unknown key 'intervall'"),
    ('interval = "soon"\n', "interval: expected a number, got 'soon'"),
    ("interval = -1\n", "interval: expected a number > 0"),
    ('influx_api = "v3"\n', "influx_api: expected 'v1' or 'v2'"),
    ('metrics_listen = "localhost:9"\n', "metrics_listen: expected HOST:PORT"),
    ("rounds = 1.5\n", "rounds: expected an integer"),
    ("interval = \n", "not valid TOML"),
])
def test_bad_config_names_file_key_and_expectation(tmp_path: Path, text: str,
                                                   expected: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        build(load_file(p), {})
    assert str(p) in str(info.value) and expected in str(info.value)


# The settings issue 5 names (scripts and dashboards use them): they must exist as keys.
CONTRACT_KEYS = {
    "zones", "resolver", "resolvers", "interval", "rounds", "vantage", "state_dir",
    "allow_local_auth", "influx_url", "influx_api", "influx_db", "influx_bucket", "influx_org",
    "alertmanager_url", "webhook_url", "pagerduty_url", "pagerduty_key_env", "metrics_listen",
    "influx_token_env", "influx_token_file", "open_min_resolvers", "resolve_rounds",
}


def test_contract_keys_exist_with_the_documented_defaults() -> None:
    assert set(FIELDS) >= CONTRACT_KEYS
    cfg = DaemonConfig()
    assert (cfg.interval, cfg.rounds, cfg.open_min_resolvers, cfg.resolve_rounds) == (60, 0, 2, 3)
    assert cfg.pagerduty_url == "https://events.pagerduty.com/v2/enqueue"
    assert cfg.metrics_listen == ""  # off by default
    assert cfg.influx_api in ("v1", "v2")


def test_every_key_has_a_flag_of_the_same_name() -> None:
    from click.testing import CliRunner

    from probe.cli import cli

    out = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
    for key in FIELDS:
        assert flag_name(key) in out, key


def test_secrets_come_from_env_or_file_and_never_show(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN", "s3cr3t-token")
    key_file = tmp_path / "pd.key"
    key_file.write_text("routing-key-123\n")
    cfg = build({}, {"influx_token_env": "MY_TOKEN", "pagerduty_key_file": str(key_file)})
    tok, key = cfg.influx_token(), cfg.pagerduty_key()
    assert tok is not None and tok.reveal() == "s3cr3t-token"
    assert key is not None and key.reveal() == "routing-key-123"
    shown = json.dumps(describe(cfg)) + repr(cfg) + repr(tok) + str(key)
    assert "s3cr3t" not in shown and "routing-key" not in shown
    with pytest.raises(ConfigError) as info:
        build({}, {"influx_token_file": str(tmp_path / "missing")})
    assert "influx_token_file" in str(info.value)


def test_v2_needs_an_org() -> None:
    with pytest.raises(ConfigError, match="influx_org"):
        build({}, {"influx_url": "http://127.0.0.1:8086", "influx_api": "v2"})
    assert DaemonConfig().effective_jitter == 1.0


# ---- state store ------------------------------------------------------------------------------


def test_state_survives_reopen_and_is_locked(tmp_path: Path) -> None:
    rounds = zone_rounds(resolver_verdicts(round_results()))
    open_, events = step({}, rounds, now=10.0, policy=IncidentPolicy())
    store = StateStore(tmp_path)
    with pytest.raises(StateLocked):
        StateStore(tmp_path)
    item = OutboxItem("webhook", f"{events[0].incident.id}:open", {"event": "open"})
    store.commit_round(3, [e.incident for e in events], [item, item], now=10.0)
    store.close()
    again = StateStore(tmp_path)
    assert again.open_incidents() == open_
    assert again.last_round() == 3
    rows = again.outbox_pending("webhook")
    assert len(rows) == 1 and rows[0].body == {"event": "open"}  # queued once
    again.outbox_retry(rows[0].seq, next_try=99.0, error="http-5xx")
    assert again.outbox_pending("webhook")[0].attempts == 1
    again.outbox_done(rows[0].seq)
    assert again.outbox_size() == 0
    again.close()


# ---- logs -------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """logs.setup() reconfigures the dnssec_probe logger; put it back for caplog users."""
    logger = logging.getLogger("dnssec_probe")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.usefixtures("restore_logging")
def test_json_and_text_log_lines() -> None:
    buf = io.StringIO()
    logs.setup(json_lines=True, stream=buf)
    logging.getLogger("dnssec_probe.daemon").warning("incident open x", extra={
        "event": "incident-open", "zone": "14.in-addr.arpa."})
    doc = json.loads(buf.getvalue())
    assert doc["msg"] == "incident open x" and doc["event"] == "incident-open"
    assert doc["level"] == "warning" and doc["zone"] == "14.in-addr.arpa."
    buf2 = io.StringIO()
    logs.setup(json_lines=False, stream=buf2)
    logging.getLogger("dnssec_probe.daemon").info("round 1 done", extra={"checks": 4})
    assert "INFO    round 1 done checks=4" in buf2.getvalue()


def test_example_config_lists_every_key_with_its_default() -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "dnssec-probe.example.toml"
    values = load_file(example)
    assert set(values) == set(FIELDS)
    cfg = build(values, {})
    assert cfg == DaemonConfig()


def test_healthz_turns_bad_on_a_failed_write_or_a_hung_round() -> None:
    from probe.alerts import AlertStats
    from probe.daemon.metrics import Metrics
    from probe.sinks import DeliveryStats

    now = [1000.0]
    d = DeliveryStats()
    m = Metrics(d, AlertStats(), lambda: 0, stale_after=100.0, clock=lambda: now[0])
    assert m.healthz()[0]  # starting: nothing failed yet
    m.health.last_round_ok, m.health.last_round_end = True, 1010.0
    d.last_write_ok = True
    now[0] = 1100.0
    assert m.healthz()[0]
    d.last_write_ok = False
    ok, body = m.healthz()
    assert not ok and body["last_write_ok"] is False
    d.last_write_ok = True
    now[0] = 1111.0  # no round ended for over 100 s: the sweep hangs
    ok, body = m.healthz()
    assert not ok and body["rounds_stale"] is True


def test_alerts_of_channels_no_longer_configured_are_dropped(tmp_path: Path) -> None:
    from probe.daemon.app import drop_orphan_alerts

    store = StateStore(tmp_path)
    store.commit_round(1, [], [OutboxItem("webhook", "a", {}), OutboxItem("pagerduty", "a", {})],
                       now=1.0)
    drop_orphan_alerts(store, {"webhook"})
    assert store.outbox_channels() == {"webhook"}
    store.close()


def test_the_worst_check_does_not_depend_on_arrival_order() -> None:
    p1, p2 = ZONE.probes
    other = dataclasses.replace(STALE, rrsig_keytags=(1,))
    a = result(RES[0], p1, Verdict.BOGUS, diag=STALE)
    b = result(RES[0], p2, Verdict.BOGUS, diag=other)
    for order in ([a, b], [b, a]):
        assert resolver_verdicts(order)[ZONE.name][RES[0].name] is a
