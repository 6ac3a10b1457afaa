"""Every InfluxQL query of every dashboard and alert rule, run against real InfluxDB 1.6 data
that the daemon wrote through the lab's bad cut-over, with Grafana's macros rendered."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cutover_run import BASE, CUT, ROLL, CutoverRun
from test_grafana import BUILD

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ZONES = (BASE, CUT, ROLL)
RESOLVERS = ("unbound", "bind", "kresd", "pdns")
VANTAGES = ("lab",)
QUERIES: list[tuple[str, str]] = BUILD.all_queries()


def escape_regex(value: str) -> str:
    """Grafana's escapeRegex (@grafana/data), which the InfluxDB data source applies to each
    value of a multi-value variable inside a /regex/."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def render(query: str, t0: float, t1: float, interval: str = "2s",
           variables: dict[str, tuple[str, ...]] | None = None) -> str:
    """The query as Grafana's InfluxDB data source sends it: $timeFilter for the dashboard's
    range, $__interval, and multi-value variables ("All") as an escaped (a|b) alternation."""
    values = {"vantage": VANTAGES, "zone": ZONES, "resolver": RESOLVERS, **(variables or {})}
    out = query.replace("$timeFilter", f"time >= {int(t0 * 1000)}ms and time <= {int(t1 * 1000)}ms")
    out = out.replace("$__interval", interval)
    for name, vals in values.items():
        out = out.replace(f"${name}", "(" + "|".join(escape_regex(v) for v in vals) + ")")
    assert not re.search(r"\$(?!/)\w", out), f"unrendered macro in {out}"
    return out


def series(influxdb: Any, db: str, influxql: str) -> list[dict[str, Any]]:
    return [s for r in influxdb.query(influxql, db)["results"] for s in r.get("series", [])]


def test_render_matches_grafana() -> None:
    q = 'SELECT x FROM m WHERE $timeFilter AND "zone" =~ /^$zone$/ GROUP BY time($__interval)'
    assert render(q, 1.5, 2.0, "5s", {"zone": ("49.in-addr.arpa.", "a/b")}) == (
        'SELECT x FROM m WHERE time >= 1500ms and time <= 2000ms AND '
        '"zone" =~ /^(49\\.in-addr\\.arpa\\.|a\\/b)$/ GROUP BY time(5s)')


def test_every_query_is_listed() -> None:
    where = [w for w, _ in QUERIES]
    assert len(where) == len(set(where))
    for uid in ("dnssec-overview", "dnssec-zone", "dnssec-probe-health"):
        assert {f"{uid} variable {v}" for v in ("vantage", "zone", "resolver")} <= set(where)
    assert {"alert dnssec-bogus-spike", "alert dnssec-probe-silent"} <= set(where)
    assert sum(" panel " in w for w in where) >= 25


@pytest.mark.parametrize(("where", "query"), QUERIES, ids=[w for w, _ in QUERIES])
def test_query_returns_series(where: str, query: str, influxdb: Any,
                              cutover_run: CutoverRun) -> None:
    """Every panel target, variable, annotation and rule query is valid InfluxQL for 1.6 and
    has data over the run; with the dashboards' "All" selections."""
    run = cutover_run
    t0 = run.t_start - 5
    if where.startswith("alert "):  # a rule's range is its own, not the dashboard's
        t0 = min(t0, run.t_end - next(r.window_s for r in BUILD.ALERT_RULES
                                      if where == f"alert {r.uid}"))
    q = render(query, t0, run.t_end + 5)
    found = series(influxdb, run.db, q)
    assert found, f"{where}: no series for {q}"
    assert any(s["values"] for s in found), where


def test_variables_list_the_lab(influxdb: Any, cutover_run: CutoverRun) -> None:
    db = cutover_run.db
    listed = {w.split()[-1]: {row["value"] for s in series(influxdb, db, render(q, 0, 0))
                              for row in ({"value": v[1]} for v in s["values"])}
              for w, q in QUERIES if w.startswith("dnssec-overview variable")}
    assert listed == {"vantage": set(VANTAGES), "zone": set(ZONES), "resolver": set(RESOLVERS)}
    # The zone variable narrows the resolver list: a zone nobody probed has no resolvers.
    q = dict(QUERIES)["dnssec-overview variable resolver"]
    assert not series(influxdb, db, render(q, 0, 0, variables={"zone": ("nowhere.",)}))


def rule_rows(influxdb: Any, run: CutoverRun, uid: str, t_eval: float) -> list[dict[str, Any]]:
    """The rule's query as Grafana evaluates it at t_eval (its window ends there), each row
    with its series' tags."""
    rule = next(r for r in BUILD.ALERT_RULES if r.uid == uid)
    q = render(rule.query, t_eval - rule.window_s, t_eval, "60s")
    return [{**s.get("tags", {}), **dict(zip(s["columns"], v, strict=True))}
            for s in series(influxdb, run.db, q) for v in s["values"]]


def firing(rows: list[dict[str, Any]], threshold: float) -> set[str]:
    return {r["zone"] for r in rows if r["max"] is not None and r["max"] > threshold}


def test_bogus_spike_fires_for_the_cutover_only(influxdb: Any, cutover_run: CutoverRun) -> None:
    run, threshold = cutover_run, BUILD.BOGUS_RATIO_THRESHOLD
    # Steady state: rows for every zone (the rule sees data: not "no data"), none above.
    steady = rule_rows(influxdb, run, "dnssec-bogus-spike", run.t_cut - 0.5)
    assert {r["zone"] for r in steady} == set(ZONES)
    assert not firing(steady, threshold), steady
    # During the cut-over: zone 49 only (58's correct rollover never goes bogus).
    during = rule_rows(influxdb, run, "dnssec-bogus-spike", run.t_open + 1)
    assert firing(during, threshold) == {CUT}, during
    # After the resolve (a window shorter than the rule's, which the run cannot outlast).
    rule = next(r for r in BUILD.ALERT_RULES if r.uid == "dnssec-bogus-spike")
    after = [{**s.get("tags", {}), **dict(zip(s["columns"], v, strict=True))} for s in series(
        influxdb, run.db, render(rule.query, run.t_resolve + 0.5, run.t_end, "60s"))
        for v in s["values"]]
    assert CUT in {r["zone"] for r in after} and not firing(after, threshold), after


def test_probe_silent(influxdb: Any, cutover_run: CutoverRun) -> None:
    """While the daemon runs its vantage's value is above the threshold; once it stopped, the
    vantage keeps a series (zeros) that is below it, so the rule fires for that vantage alone
    (not only through no-data when every vantage is silent)."""
    run = cutover_run
    rule = next(r for r in BUILD.ALERT_RULES if r.uid == "dnssec-probe-silent")
    assert (rule.reducer, rule.op, rule.no_data) == ("last", "lt", "Alerting")

    def last(t_eval: float) -> dict[str, float]:
        rows = rule_rows(influxdb, run, rule.uid, t_eval)
        return {v: [r for r in rows if r["vantage"] == v][-1]["moving_average"]
                for v in {r["vantage"] for r in rows}}

    for t in (run.t_cut, run.t_resolve, run.t_end):
        assert last(t)["lab"] > rule.threshold, t
    assert last(run.t_end + BUILD.SILENT_WINDOW_S + 61) == {"lab": 0}
    # Under a minute of silence (a round may still be on its way) does not fire.
    assert last(run.t_end + 30)["lab"] > rule.threshold


def panel_rows(influxdb: Any, run: CutoverRun, where: str, t0: float, t1: float
               ) -> list[dict[str, Any]]:
    q = render(dict(QUERIES)[where], t0, t1)
    return [{**s.get("tags", {}), **dict(zip(s["columns"], v, strict=True))}
            for s in series(influxdb, run.db, q) for v in s["values"]]


def test_overview_tables_show_the_cutover(influxdb: Any, cutover_run: CutoverRun) -> None:
    """What the NOC reads in the overview's tables, before, during and after the cut-over."""
    run = cutover_run
    verdicts = "dnssec-overview panel Verdicts now: zones x resolvers A"
    before = {(r["zone"], r["resolver"]): r["verdict"]
              for r in panel_rows(influxdb, run, verdicts, run.t_start - 5, run.t_cut - 0.5)}
    assert before == {(z, r): "secure" for z in ZONES for r in RESOLVERS}
    during = {(r["zone"], r["resolver"]): r["verdict"]
              for r in panel_rows(influxdb, run, verdicts, run.t_start - 5, run.t_open)}
    assert sum(during[(CUT, r)] == "bogus" for r in RESOLVERS) >= 2, during
    assert all(during[(z, r)] == "secure" for z in (BASE, ROLL) for r in RESOLVERS), during

    incidents = "dnssec-overview panel Open incidents A"
    opened = panel_rows(influxdb, run, incidents, run.t_start - 5, run.t_open + 0.5)
    assert [(r["zone"], r["event"], r["kind"]) for r in opened] == [
        (CUT, "open", "stale-dnskey-cache")], opened
    assert opened[0]["id"].startswith(CUT.rstrip(".") + "@")
    assert opened[0]["rrsig_keytags"] and opened[0]["cached_keytags"]
    assert opened[0]["rrsig_keytags"] != opened[0]["cached_keytags"]
    assert opened[0]["recovers_at"] > run.t_cut
    # At the end the zone's last event is its resolve, which the panel's transform leaves out.
    ended = panel_rows(influxdb, run, incidents, run.t_start - 5, run.t_end + 5)
    assert [(r["zone"], r["event"]) for r in ended] == [(CUT, "resolve")]
