"""Grafana dashboards and alert rules of dnssec-probe, built in code; writes the provisioned files."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

HERE = Path(__file__).resolve().parent
DASHBOARD_DIR = HERE / "dashboards"
RULES_FILE = HERE / "provisioning" / "alerting" / "rules.yaml"

# The provisioned InfluxDB data source (provisioning/datasources/influxdb.yaml): every panel,
# target, variable, annotation and alert query names it by this uid.
DS_UID = "dnssec-influx"
DS_JSON: dict[str, object] = {"type": "influxdb", "uid": DS_UID}
DS = dm.DataSourceRef(type_val="influxdb", uid=DS_UID)
EXPR_UID = "__expr__"  # Grafana's server-side expressions in alert rules

# Environment variables that the provisioning files expand (${NAME}): the compose file must
# hand them to Grafana and .env.example must list them.
REQUIRED_ENV = frozenset({"INFLUX_V1_USER", "INFLUX_V1_PASSWORD", "ALERT_WEBHOOK_URL"})

TAGS = ["dnssec-probe"]
FOLDER = "DNSSEC"
BOGUS_RATIO_THRESHOLD = 0.25  # bogus-spike rule: share of a zone's resolvers answering bogus
BOGUS_WINDOW_S = 300
BOGUS_FOR = "3m"
# Probe-silent rule: no dnssec_round point from a vantage for this long. The query counts rounds
# per minute over a day (fill(0)), so a vantage that fell silent still has a series (of zeros)
# and fires on its own; the moving average spans the last SILENT_WINDOW_S.
SILENT_WINDOW_S = 300
SILENT_LOOKBACK_S = 86400  # a vantage silent for longer drops out (all silent: no data fires)
SILENT_FOR = "1m"  # two evaluations in a row: the current minute's bucket is still filling

T = TypeVar("T")


class Built(cogbuilder.Builder[T], Generic[T]):
    """Hands an object made outside the SDK's builders to an SDK builder method."""

    def __init__(self, model: T) -> None:
        self._model = model

    def build(self) -> T:
        return self._model


@dataclass(frozen=True)
class InfluxQL(cogvariants.Dataquery):
    """A raw InfluxQL panel target (the SDK has no InfluxDB query model)."""

    query: str
    alias: str = ""
    table: bool = False
    ref_id: str = "A"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id, "datasource": DS_JSON, "rawQuery": True, "query": self.query,
            "resultFormat": "table" if self.table else "time_series",
        }
        if self.alias:
            out["alias"] = self.alias
        return out


class InfluxAnnotation(dm.AnnotationTarget):
    """An InfluxQL annotation query: the event text, title and tags are columns of its rows."""

    def __init__(self, query: str, *, text: str, title: str, tags: str) -> None:
        super().__init__()
        self.query, self.text, self.title, self.tag_columns = query, text, title, tags

    def to_json(self) -> dict[str, object]:
        return {
            "refId": "Anno", "datasource": DS_JSON, "rawQuery": True, "fromAnnotations": True,
            "query": self.query, "resultFormat": "table", "textColumn": self.text,
            "titleColumn": self.title, "tagsColumn": self.tag_columns,
        }


def targets(*queries: InfluxQL) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    """The queries as panel targets, refIds A, B, ..."""
    return [Built[cogvariants.Dataquery](replace(q, ref_id=chr(ord("A") + i)))
            for i, q in enumerate(queries)]


# --- InfluxQL --------------------------------------------------------------------------------
# Template variables are multi-value: Grafana expands /^$zone$/ into an escaped (a|b) regex.

VANTAGE = '"vantage" =~ /^$vantage$/'
ZONE = '"zone" =~ /^$zone$/'
RESOLVER = '"resolver" =~ /^$resolver$/'
BY_TIME = "GROUP BY time($__interval)"


def where(*filters: str) -> str:
    return "WHERE " + " AND ".join(("$timeFilter", *filters))


def counter(field: str) -> str:
    """Per-interval increase of a counter since process start (a restart resets it)."""
    return (f'SELECT non_negative_difference(last("{field}")) FROM "dnssec_probe_stats" '
            f'{where(VANTAGE)} {BY_TIME}, "vantage" fill(none)')


def gauge(field: str, scale: str = "") -> str:
    return (f'SELECT last("{field}"){scale} FROM "dnssec_probe_stats" {where(VANTAGE)} '
            f'GROUP BY "vantage"')


# --- value mappings and colours --------------------------------------------------------------

VERDICT_COLORS = {
    "secure": "green", "insecure": "blue", "bogus": "red", "servfail": "orange",
    "timeout": "yellow", "refused": "purple", "error": "purple", "unreachable": "#8e8e8e",
}

# RFC 8914 section 4: Extended DNS Error codes; -1 is the probe's "none".
EDE_NAMES = {
    0: "Other", 1: "Unsupported DNSKEY Algorithm", 2: "Unsupported DS Digest Type",
    3: "Stale Answer", 4: "Forged Answer", 5: "DNSSEC Indeterminate", 6: "DNSSEC Bogus",
    7: "Signature Expired", 8: "Signature Not Yet Valid", 9: "DNSKEY Missing",
    10: "RRSIGs Missing", 11: "No Zone Key Bit Set", 12: "NSEC Missing", 13: "Cached Error",
    14: "Not Ready", 15: "Blocked", 16: "Censored", 17: "Filtered", 18: "Prohibited",
    19: "Stale NXDOMAIN Answer", 20: "Not Authoritative", 21: "Not Supported",
    22: "No Reachable Authority", 23: "Network Error", 24: "Invalid Data",
}
EDE_DNSSEC = range(1, 13)  # the codes that name a validation failure

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def value_map(entries: Mapping[str, tuple[str, str | None]]) -> dm.ValueMap:
    return dm.ValueMap(options={
        key: dm.ValueMappingResult(text=text, color=color, index=i)
        for i, (key, (text, color)) in enumerate(entries.items())})


VERDICT_MAP = value_map({v: (v, c) for v, c in VERDICT_COLORS.items()})
EDE_MAP = value_map({"-1": ("none", "green")} | {
    str(code): (f"{code} {name}", "red" if code in EDE_DNSSEC else "orange")
    for code, name in EDE_NAMES.items()})
SEVERITY_MAPPING = {"type": "value", "options": {
    s: {"text": s, "color": c, "index": i}
    for i, (s, c) in enumerate((("critical", "red"), ("warning", "orange"), ("info", "blue")))}}
RCODE_MAP = value_map({str(c): (n, None) for c, n in RCODE_NAMES.items()})


def steps(base: str, *above: tuple[float, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=None, color=base), *(dm.Threshold(value=v, color=c) for v, c in above)])


def prop(id_: str, value: object) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val=id_, value=value)


def fixed_color(color: str) -> dm.DynamicConfigValue:
    return prop("color", {"mode": "fixed", "fixedColor": color})


def transform(id_: str, options: dict[str, Any]) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(id_val=id_, options=options)


def legend(*calcs: str, right: bool = True) -> cb.VizLegendOptions:
    """A legend table with the given calculations, right of the graph or below it."""
    return (cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT if right else cm.LegendPlacement.BOTTOM)
            .calcs(list(calcs)))


def zone_link() -> dm.DynamicConfigValue:
    return prop("links", [{
        "title": "Zone drill-down",
        "url": "/d/dnssec-zone?var-zone=${__value.raw}&${vantage:queryparam}&${__url_time_range}",
    }])


# --- panel shapes ----------------------------------------------------------------------------

def graph(title: str, description: str, *queries: InfluxQL, unit: str, w: int = 12,
          h: int = 8, bars: bool = False) -> timeseries.Panel:
    """A time series panel; bars are stacked (counts per interval)."""
    p = (timeseries.Panel().title(title).description(description).datasource(DS)
         .targets(targets(*queries)).unit(unit).min(0).span(w).height(h)
         .legend(legend("lastNotNull", "max"))
         .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI)
                  .sort(cm.SortOrder.DESCENDING)))
    if bars:
        return (p.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80).line_width(0)
                .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
                .legend(legend("sum", right=False)))
    return p.line_width(2).fill_opacity(10).show_points(cm.VisibilityMode.AUTO)


def verdict_colored(p: timeseries.Panel) -> timeseries.Panel:
    for verdict, color in VERDICT_COLORS.items():
        p = p.override_by_name(verdict, [fixed_color(color)])
    return p


def single(title: str, description: str, query: InfluxQL, *, unit: str,
           thresholds: db.ThresholdsConfig, calc: str = "lastNotNull", w: int = 4) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DS)
            .targets(targets(query)).unit(unit).thresholds(thresholds).span(w).height(4)
            .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
            .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
            .reduce_options(cb.ReduceDataOptions().calcs([calc]).values(False)))


def timeline(title: str, description: str, query: InfluxQL, *, mappings: list[dm.ValueMapping],
             thresholds: db.ThresholdsConfig, unit: str = "none", w: int = 24,
             h: int = 8) -> statetimeline.Panel:
    return (statetimeline.Panel().title(title).description(description).datasource(DS)
            .targets(targets(query)).unit(unit).mappings(mappings).thresholds(thresholds)
            .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
            .show_value(cm.VisibilityMode.NEVER).merge_values(True).fill_opacity(80)
            .row_height(0.8).span(w).height(h)
            .legend(cb.VizLegendOptions().show_legend(True)
                    .display_mode(cm.LegendDisplayMode.LIST)
                    .placement(cm.LegendPlacement.BOTTOM)))


def grid(title: str, description: str, query: InfluxQL, *, w: int, h: int) -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(DS)
            .targets(targets(query)).span(w).height(h).filterable(False)
            .cell_height(cm.TableCellHeight.SM))


def variables(d: db.Dashboard, shown: frozenset[str]) -> db.Dashboard:
    """vantage, zone and resolver, chained (each narrows the next), multi-value, default All;
    those a dashboard does not use are hidden but kept, so links carry them on."""
    sources = (
        ("vantage", "Vantage", 'SHOW TAG VALUES FROM "dnssec_round" WITH KEY = "vantage"'),
        ("zone", "Zone",
         f'SHOW TAG VALUES FROM "dnssec_zone" WITH KEY = "zone" WHERE {VANTAGE}'),
        ("resolver", "Resolver",
         f'SHOW TAG VALUES FROM "dnssec_check" WITH KEY = "resolver" WHERE {VANTAGE} AND {ZONE}'),
    )
    for name, label, query in sources:
        d = d.with_variable(
            db.QueryVariable(name).label(label).datasource(DS).query(query)
            .multi(True).include_all(True)
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .hide(dm.VariableHide.DONT_HIDE if name in shown else dm.VariableHide.HIDE_VARIABLE))
    return d


def dashboard(uid: str, title: str, description: str,
              shown: frozenset[str] = frozenset({"vantage", "zone", "resolver"})) -> db.Dashboard:
    d = (db.Dashboard(title).uid(uid).description(description).tags(TAGS).refresh("1m")
         .time("now-6h", "now").timezone("browser").editable()
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .link(db.DashboardLink("DNSSEC dashboards").type(dm.DashboardLinkType.DASHBOARDS)
               .tags(TAGS).as_dropdown(True).include_vars(True).keep_time(True)))
    return variables(d, shown)


# --- Overview --------------------------------------------------------------------------------

def incident_annotation() -> db.AnnotationQuery:
    query = (f'SELECT "detail", "id", "zone", "event", "kind", "affected" FROM "dnssec_incident" '
             f'{where(VANTAGE, ZONE)}')
    return (db.AnnotationQuery().name("Incidents").datasource(DS).enable(True).icon_color("red")
            .target(Built(InfluxAnnotation(query, text="detail", title="id",
                                           tags="zone,event,kind"))))


def key_change_annotation() -> db.AnnotationQuery:
    """The signer-side audit's key-change findings: written once, in the round that saw them."""
    key_change = "\"code\" = 'key-change'"
    query = (f'SELECT "detail", "zone", "code", "new_keytags" FROM "dnssec_finding" '
             f"{where(VANTAGE, ZONE, key_change)}")
    return (db.AnnotationQuery().name("Key changes").datasource(DS).enable(True)
            .icon_color("blue")
            .target(Built(InfluxAnnotation(query, text="detail", title="code",
                                           tags="zone,code"))))


def audit_findings() -> table.Panel:
    """The signer-side audit's findings of the last few rounds (a lasting finding is written
    every round, so an old one drops out once it ends)."""
    return (
        grid("Signer audit findings (last 5 min)",
             "What `dnssec-probe audit` finds at the source each round: unsafe-rollover "
             "(critical: resolvers holding the old key set fail until 'at risk until'), "
             "signer-key-mismatch (a standby with other keys), inconsistent-servers, "
             "signature-expiry, key-change.",
             InfluxQL('SELECT last("detail") AS "detail", last("new_keytags") AS "new keys", '
                      'last("keytags") AS "keys", last("at_risk_until") AS "at_risk_until" '
                      f'FROM "dnssec_finding" {where(VANTAGE, ZONE)} '
                      'GROUP BY "zone", "code", "severity", "vantage"', table=True),
             w=24, h=7)
        .time_from("5m").cell_height(cm.TableCellHeight.MD)
        .transformations([
            transform("merge", {}),
            transform("calculateField", {
                "mode": "binary", "alias": "at risk until", "timeSeries": False,
                "binary": {"left": {"matcher": {"id": "byName", "options": "at_risk_until"}},
                           "operator": "*", "right": {"fixed": "1000"}}}),
            transform("organize", {
                "excludeByName": {"at_risk_until": True},
                "renameByName": {"Time": "seen"},
                "indexByName": {"severity": 0, "code": 1, "zone": 2, "vantage": 3,
                                "new keys": 4, "keys": 5, "at risk until": 6, "Time": 7,
                                "detail": 8}}),
        ])
        .override_by_name("at risk until", [prop("unit", "dateTimeAsIso")])
        .override_by_name("severity", [prop("custom.cellOptions", {"type": "color-text"}),
                                       prop("mappings", [SEVERITY_MAPPING])])
        .override_by_name("detail", [prop("custom.cellOptions", {"type": "auto", "wrapText": True}),
                                     prop("custom.minWidth", 400)]))


def overview() -> db.Dashboard:
    verdicts_now = (
        grid("Verdicts now: zones x resolvers",
             "The latest verdict of each resolver for each zone (its last check in the time "
             "range). Click a zone for its drill-down.",
             InfluxQL(f'SELECT last("round") AS "round", "verdict" FROM "dnssec_check" '
                      f'{where(VANTAGE, ZONE, RESOLVER)} GROUP BY "zone", "resolver"', table=True),
             w=14, h=9)
        .mappings([VERDICT_MAP]).thresholds(steps("transparent"))
        .cell_options(cm.TableColoredBackgroundCellOptions(
            mode=cm.TableCellBackgroundDisplayMode.BASIC))
        .override_by_name("zone\\resolver", [prop("displayName", "zone"), zone_link()])
        .transformations([
            transform("merge", {}),
            transform("sortBy", {"sort": [{"field": "Time", "desc": True}]}),
            transform("groupBy", {"fields": {
                "zone": {"operation": "groupby", "aggregations": []},
                "resolver": {"operation": "groupby", "aggregations": []},
                "verdict": {"operation": "aggregate", "aggregations": ["first"]},
            }}),
            transform("groupingToMatrix", {"columnField": "resolver", "rowField": "zone",
                                           "valueField": "verdict (first)"}),
        ]))
    zones_now = (
        grid("Zones now",
             "Per zone and vantage, the last round's count of resolvers by (worst) verdict.",
             InfluxQL(
                 'SELECT last("resolvers") AS "resolvers", last("secure") AS "secure", '
                 'last("insecure") AS "insecure", last("bogus") AS "bogus", '
                 'last("servfail") AS "servfail", last("timeout") AS "timeout", '
                 'last("error") AS "error", last("bogus_ratio") AS "bogus_ratio" '
                 f'FROM "dnssec_zone" {where(VANTAGE, ZONE)} GROUP BY "zone", "vantage"',
                 table=True),
             w=10, h=9)
        .transformations([
            transform("merge", {}),
            transform("organize", {"excludeByName": {"Time": True},
                                   "renameByName": {"bogus_ratio": "bogus share"}}),
        ])
        .override_by_name("zone", [zone_link()])
        .override_by_name("bogus", [prop("custom.cellOptions", {"type": "color-text"}),
                                    prop("thresholds", steps("green", (1, "red")).build())])
        .override_by_name("servfail", [prop("custom.cellOptions", {"type": "color-text"}),
                                       prop("thresholds", steps("green", (1, "orange")).build())])
        .override_by_name("bogus share", [
            prop("unit", "percentunit"),
            prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
            prop("thresholds", steps("green", (0.01, "orange"),
                                     (BOGUS_RATIO_THRESHOLD, "red")).build())]))
    ratio = f'SELECT max("bogus_ratio") FROM "dnssec_zone" {where(VANTAGE, ZONE)} {BY_TIME}, "zone"'
    zone_state = timeline(
        "Zone state (bogus share)",
        "Per zone: green while no resolver answers bogus, red while some do (worst vantage).",
        InfluxQL(f"{ratio} fill(none)", alias="$tag_zone"),
        mappings=[], thresholds=steps("green", (0.01, "red")), unit="percentunit", h=7)
    ratio_graph = (
        graph("Bogus share by zone",
              "Share of the zone's resolvers answering bogus, worst vantage; the dashed line is "
              "the bogus-spike alert threshold.",
              InfluxQL(f"{ratio} fill(none)", alias="$tag_zone"), unit="percentunit", w=24)
        .max(1).thresholds(steps("transparent", (BOGUS_RATIO_THRESHOLD, "red")))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(
            cm.GraphThresholdsStyleMode.DASHED)))
    incidents = (
        grid("Open incidents",
             "The last event of each zone's incident in the last 7 days, resolved ones left out: "
             "diagnosis, affected resolvers, key tags signed with and cached, predicted recovery.",
             InfluxQL(
                 'SELECT last("id") AS "id", "event", "kind", "affected", "resolvers", '
                 '"rrsig_keytags", "cached_keytags", "recovers_at", "detail" '
                 f'FROM "dnssec_incident" {where(VANTAGE, ZONE)} GROUP BY "zone", "vantage"',
                 table=True),
             w=24, h=8)
        .time_from("7d").cell_height(cm.TableCellHeight.MD)
        .transformations([
            transform("merge", {}),
            transform("filterByValue", {"type": "exclude", "match": "any", "filters": [
                {"fieldName": "event", "config": {"id": "equal", "options": {"value": "resolve"}}},
            ]}),
            transform("calculateField", {
                "mode": "binary", "alias": "recovers by", "timeSeries": False,
                "binary": {"left": {"matcher": {"id": "byName", "options": "recovers_at"}},
                           "operator": "*", "right": {"fixed": "1000"}}}),
            transform("organize", {
                "excludeByName": {"recovers_at": True},
                "renameByName": {"Time": "last event", "rrsig_keytags": "signed by",
                                 "cached_keytags": "cached keys"},
                "indexByName": {"zone": 0, "vantage": 1, "id": 2, "event": 3, "kind": 4,
                                "affected": 5, "resolvers": 6, "rrsig_keytags": 7,
                                "cached_keytags": 8, "recovers by": 9, "Time": 10, "detail": 11}}),
        ])
        .override_by_name("recovers by", [prop("unit", "dateTimeAsIso")])
        .override_by_name("kind", [prop("custom.cellOptions", {"type": "color-text"}),
                                   fixed_color("red")])
        .override_by_name("detail", [prop("custom.cellOptions", {"type": "auto", "wrapText": True}),
                                     prop("custom.minWidth", 400)]))
    return (dashboard("dnssec-overview", "DNSSEC overview",
                      "What the world's validating resolvers say about our zones, now and over time.")
            .annotation(incident_annotation())
            # Unsafe rollovers page as audit incidents, so the Incidents annotation shows them.
            .annotation(key_change_annotation())
            .with_row(db.Row("Now"))
            .with_panel(verdicts_now).with_panel(zones_now)
            .with_row(db.Row("Over time"))
            .with_panel(zone_state).with_panel(ratio_graph)
            .with_row(db.Row("Incidents"))
            .with_panel(incidents)
            .with_row(db.Row("Signer audit"))
            .with_panel(audit_findings()))


# --- Zone drill-down -------------------------------------------------------------------------

def zone_drilldown() -> db.Dashboard:
    checks = f'FROM "dnssec_check" {where(VANTAGE, ZONE, RESOLVER)}'
    latest = (
        grid("Latest check per resolver",
             "Each resolver's last check of the zone: verdict, diagnosis, Extended DNS Error, "
             "rcode, AD bit, RTT and, for diagnosed failures, the cached DNSKEY TTL and the "
             "predicted recovery.",
             InfluxQL(f'SELECT last("round") AS "round", "qname", "verdict", "diagnosis", "ede", '
                      f'"rcode", "ad", "rtt_ms", "cached_dnskey_ttl", "recovers_in_s" {checks} '
                      f'GROUP BY "zone", "resolver"', table=True),
             w=24, h=8)
        .transformations([
            transform("merge", {}),
            transform("organize", {"excludeByName": {"Time": True}, "indexByName": {
                "zone": 0, "resolver": 1, "verdict": 2, "diagnosis": 3, "ede": 4, "rcode": 5,
                "ad": 6, "rtt_ms": 7, "cached_dnskey_ttl": 8, "recovers_in_s": 9, "qname": 10,
                "round": 11}}),
        ])
        .override_by_name("verdict", [
            prop("mappings", [VERDICT_MAP]),
            prop("custom.cellOptions", {"type": "color-background", "mode": "basic"})])
        .override_by_name("ede", [prop("mappings", [EDE_MAP]),
                                  prop("custom.cellOptions", {"type": "color-text"})])
        .override_by_name("rcode", [prop("mappings", [RCODE_MAP])])
        .override_by_name("rtt_ms", [prop("unit", "ms")])
        .override_by_name("cached_dnskey_ttl", [prop("unit", "s")])
        .override_by_name("recovers_in_s", [prop("unit", "s")]))
    verdicts = verdict_colored(
        graph("Verdicts of $resolver",
              "Checks of the zone through this resolver per interval, by verdict.",
              InfluxQL(f'SELECT count("qname") {checks} {BY_TIME}, "resolver", "verdict" '
                       'fill(none)', alias="$tag_verdict"),
              unit="short", w=6, h=7, bars=True)
        .repeat("resolver").repeat_direction("h").max_per_row(4))
    ede = timeline(
        "Extended DNS Errors",
        "The EDE code (RFC 8914) of each resolver's answers; red: a DNSSEC validation error.",
        InfluxQL(f'SELECT last("ede") {checks} {BY_TIME}, "resolver" fill(none)',
                 alias="$tag_resolver"),
        mappings=[EDE_MAP], thresholds=steps("green"), w=12)
    diagnoses = graph(
        "Diagnosis kinds",
        "Checks per interval with a diagnosed validation failure, by kind (why the resolver "
        "answers bogus).",
        InfluxQL(f'SELECT count("qname") {checks} AND "diagnosis" != \'none\' {BY_TIME}, '
                 '"diagnosis" fill(none)', alias="$tag_diagnosis"),
        unit="short", bars=True)
    ttl = graph(
        "Cached DNSKEY TTL and predicted recovery",
        "For resolvers that fail validation: the remaining TTL of the DNSKEY set they cache, "
        "and the seconds until they are predicted to recover; both count down to zero.",
        InfluxQL(f'SELECT last("cached_dnskey_ttl") {checks} {BY_TIME}, "resolver" fill(none)',
                 alias="$tag_resolver cached DNSKEY TTL"),
        InfluxQL(f'SELECT last("recovers_in_s") {checks} {BY_TIME}, "resolver" fill(none)',
                 alias="$tag_resolver recovers in"),
        unit="s")
    rtt = graph(
        "Round-trip time",
        "Mean round-trip time of the answered queries, per resolver.",
        InfluxQL(f'SELECT mean("rtt_ms") {checks} {BY_TIME}, "resolver" fill(none)',
                 alias="$tag_resolver"),
        unit="ms")
    return (dashboard("dnssec-zone", "DNSSEC zone drill-down",
                      "One zone through every resolver: verdicts, EDE codes, diagnosis, cached "
                      "DNSKEY TTLs counting down to recovery, RTT.")
            .annotation(incident_annotation())
            .annotation(key_change_annotation())
            .with_row(db.Row("Now")).with_panel(latest)
            .with_row(db.Row("Verdicts per resolver")).with_panel(verdicts)
            .with_row(db.Row("Failures")).with_panel(ede).with_panel(diagnoses).with_panel(ttl)
            .with_panel(rtt))


# --- Probe health ----------------------------------------------------------------------------

def probe_health() -> db.Dashboard:
    rounds = f'FROM "dnssec_round" {where(VANTAGE)}'
    ok_red = steps("green", (1, "red"))
    stats = [
        single("Rounds", "Rounds written in the time range, per vantage.",
               InfluxQL(f'SELECT count("round") {rounds} GROUP BY "vantage"', alias="$tag_vantage"),
               unit="short", thresholds=steps("red", (1, "green"))),
        single("Last successful write",
               "When the probe last delivered points to InfluxDB (its own clock).",
               InfluxQL(gauge("last_success", " * 1000"), alias="$tag_vantage"),
               unit="dateTimeFromNow", thresholds=steps("blue")),
        single("Write failures", "Failed writes to InfluxDB in the time range.",
               InfluxQL(counter("write_failures"), alias="$tag_vantage"),
               unit="short", thresholds=ok_red, calc="sum"),
        single("Spool size", "Bytes waiting in the on-disk spool for InfluxDB to answer.",
               InfluxQL(gauge("spool_bytes"), alias="$tag_vantage"),
               unit="bytes", thresholds=steps("green", (1, "orange"))),
        single("Open incidents", "Incidents open now, per vantage.",
               InfluxQL(gauge("open_incidents"), alias="$tag_vantage"),
               unit="short", thresholds=ok_red),
        single("Alerts pending", "Alert notifications waiting in the probe's outbox.",
               InfluxQL(gauge("alerts_pending"), alias="$tag_vantage"),
               unit="short", thresholds=steps("green", (1, "orange"))),
    ]
    duration = graph(
        "Round duration", "Time a round took to sweep every zone through every resolver.",
        InfluxQL(f'SELECT max("duration_s") {rounds} {BY_TIME}, "vantage" fill(none)',
                 alias="$tag_vantage"),
        unit="s")
    checks_per_round = graph(
        "Checks per round", "Checks made in each round.",
        InfluxQL(f'SELECT last("checks") {rounds} {BY_TIME}, "vantage" fill(none)',
                 alias="$tag_vantage"),
        unit="short")
    overrun = timeline(
        "Overrun and partial rounds",
        "Red: a round took longer than the interval (overrun) or was stopped before every "
        "check was made (partial).",
        InfluxQL(f'SELECT last("overrun") AS "overrun", last("partial") AS "partial" {rounds} '
                 f'{BY_TIME}, "vantage" fill(none)', alias="$tag_vantage $col"),
        mappings=[value_map({"false": ("ok", "green"), "true": ("yes", "red")})],
        thresholds=steps("green"), h=5)
    per_verdict = verdict_colored(graph(
        "Checks per verdict", "Checks per interval, all zones and resolvers, by verdict.",
        InfluxQL(f'SELECT count("qname") FROM "dnssec_check" {where(VANTAGE)} {BY_TIME}, '
                 '"verdict" fill(none)', alias="$tag_verdict"),
        unit="short", w=24, bars=True))
    delivery = graph(
        "Lines written and spooled", "Line-protocol lines per interval: delivered to InfluxDB, "
        "and put in the spool because a write failed.",
        InfluxQL(counter("written_lines"), alias="$tag_vantage written"),
        InfluxQL(counter("spooled_lines"), alias="$tag_vantage spooled"),
        unit="short", bars=True)
    failures = (graph(
        "Write failures, drops and rejects",
        "Per interval: failed writes, lines dropped because the spool was full, lines InfluxDB "
        "rejected as bad data, failed alert notifications.",
        InfluxQL(counter("write_failures"), alias="$tag_vantage write failures"),
        InfluxQL(counter("dropped_lines"), alias="$tag_vantage dropped lines"),
        InfluxQL(counter("rejected_lines"), alias="$tag_vantage rejected lines"),
        InfluxQL(counter("alert_failures"), alias="$tag_vantage alert failures"),
        unit="short", bars=True))
    spool = (graph(
        "Spool", "Bytes and batches waiting in the spool.",
        InfluxQL(f'SELECT last("spool_bytes") FROM "dnssec_probe_stats" {where(VANTAGE)} '
                 f'{BY_TIME}, "vantage" fill(none)', alias="$tag_vantage bytes"),
        InfluxQL(f'SELECT last("spool_batches") FROM "dnssec_probe_stats" {where(VANTAGE)} '
                 f'{BY_TIME}, "vantage" fill(none)', alias="$tag_vantage batches"),
        unit="bytes")
        .override_by_regexp(".* batches$", [prop("unit", "short"),
                                            prop("custom.axisPlacement", "right")]))
    alerts = graph(
        "Incidents and alerts",
        "Open incidents and pending alert notifications (now), alerts sent per interval.",
        InfluxQL(f'SELECT last("open_incidents") FROM "dnssec_probe_stats" {where(VANTAGE)} '
                 f'{BY_TIME}, "vantage" fill(none)', alias="$tag_vantage open incidents"),
        InfluxQL(f'SELECT last("alerts_pending") FROM "dnssec_probe_stats" {where(VANTAGE)} '
                 f'{BY_TIME}, "vantage" fill(none)', alias="$tag_vantage alerts pending"),
        InfluxQL(counter("alerts_sent"), alias="$tag_vantage alerts sent"),
        unit="short")
    d = (dashboard("dnssec-probe-health", "DNSSEC probe health",
                   "The probe itself: rounds, checks, delivery to InfluxDB, spool, alerts.",
                   shown=frozenset({"vantage"}))
         .with_row(db.Row("Now")))
    for s in stats:
        d = d.with_panel(s)
    return (d.with_row(db.Row("Rounds and checks")).with_panel(duration).with_panel(checks_per_round)
            .with_panel(overrun).with_panel(per_verdict)
            .with_row(db.Row("Delivery and alerts")).with_panel(delivery).with_panel(failures)
            .with_panel(spool).with_panel(alerts))


# --- alert rules -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertRule:
    """A Grafana-managed rule: one InfluxQL query, reduced per series, compared to a threshold."""

    uid: str
    title: str
    query: str
    window_s: int
    reducer: str
    op: str  # "gt" | "lt"
    threshold: float
    for_: str
    no_data: str
    labels: dict[str, str]
    summary: str
    description: str
    dashboard_uid: str
    panel_title: str


ALERT_RULES = (
    AlertRule(
        uid="dnssec-bogus-spike", title="DNSSEC bogus spike",
        query='SELECT max("bogus_ratio") FROM "dnssec_zone" WHERE $timeFilter '
              'GROUP BY "zone", "vantage"',
        window_s=BOGUS_WINDOW_S, reducer="max", op="gt", threshold=BOGUS_RATIO_THRESHOLD,
        for_=BOGUS_FOR, no_data="OK", labels={"severity": "critical"},
        summary="{{ $labels.zone }}: resolvers answer bogus (seen from {{ $labels.vantage }})",
        description=(
            "Up to {{ humanizePercentage $values.B.Value }} of the validating resolvers answered "
            f"bogus for {{{{ $labels.zone }}}} in the last {BOGUS_WINDOW_S // 60} minutes (threshold "
            f"{BOGUS_RATIO_THRESHOLD:.0%}). Open incidents, diagnosis and predicted recovery: "
            "the DNSSEC overview dashboard."),
        dashboard_uid="dnssec-overview", panel_title="Bogus share by zone"),
    AlertRule(
        uid="dnssec-probe-silent", title="DNSSEC probe silent",
        query=(f'SELECT moving_average(count("round"), {SILENT_WINDOW_S // 60}) '
               'FROM "dnssec_round" WHERE $timeFilter GROUP BY time(1m), "vantage" fill(0)'),
        # Rounds per minute over the last minutes; any round in them makes it >= 1/5.
        window_s=SILENT_LOOKBACK_S, reducer="last", op="lt", threshold=0.1, for_=SILENT_FOR,
        no_data="Alerting", labels={"severity": "critical"},
        summary=f"dnssec-probe silent: no round in {SILENT_WINDOW_S // 60} minutes",
        description=(
            f"No dnssec_round point for {SILENT_WINDOW_S // 60} minutes "
            "{{ if $labels.vantage }}from vantage {{ $labels.vantage }}{{ else }}from any "
            "vantage{{ end }}: the probe is down, stuck or cannot write to InfluxDB, and "
            "nothing watches the zones from there."),
        dashboard_uid="dnssec-probe-health", panel_title="Rounds"),
)


def alert_queries() -> dict[str, str]:
    """Rule uid -> its InfluxQL query ($timeFilter is the rule's relative time range)."""
    return {r.uid: r.query for r in ALERT_RULES}


def rule_doc(r: AlertRule, panel_ids: dict[tuple[str, str], int]) -> dict[str, Any]:
    def expr(ref: str, **model: object) -> dict[str, Any]:
        return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": EXPR_UID,
                "model": {"refId": ref, "datasource": {"type": EXPR_UID, "uid": EXPR_UID}, **model}}

    return {
        "uid": r.uid,
        "title": r.title,
        "condition": "C",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": r.window_s, "to": 0},
             "datasourceUid": DS_UID,
             "model": {"refId": "A", "datasource": dict(DS_JSON), "rawQuery": True,
                       "query": r.query, "resultFormat": "time_series", "intervalMs": 60000,
                       "maxDataPoints": 43200}},
            expr("B", type="reduce", expression="A", reducer=r.reducer),
            expr("C", type="threshold", expression="B",
                 conditions=[{"evaluator": {"type": r.op, "params": [r.threshold]}}]),
        ],
        "dashboardUid": r.dashboard_uid,
        "panelId": panel_ids[(r.dashboard_uid, r.panel_title)],
        "noDataState": r.no_data,
        "execErrState": "Error",
        "for": r.for_,
        "annotations": {"summary": r.summary, "description": r.description},
        "labels": r.labels,
        "isPaused": False,
    }


# --- output ----------------------------------------------------------------------------------

def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows and the panels of collapsed rows included."""
    for p in doc.get("panels", []):
        yield p
        yield from p.get("panels", [])


@functools.cache
def dashboard_docs() -> tuple[dict[str, Any], ...]:
    """The dashboards as JSON documents, panel ids numbered in order."""
    docs = []
    for d in (overview(), zone_drilldown(), probe_health()):
        doc: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
        for i, p in enumerate(panels(doc), 1):
            p["id"] = i
        docs.append(doc)
    return tuple(docs)


def rules_doc() -> dict[str, Any]:
    ids = {(d["uid"], p["title"]): p["id"] for d in dashboard_docs() for p in panels(d)
           if p["type"] != "row"}
    return {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": "dnssec-probe", "folder": FOLDER, "interval": "1m",
        "rules": [rule_doc(r, ids) for r in ALERT_RULES],
    }]}


def all_queries() -> list[tuple[str, str]]:
    """(where, InfluxQL) for every query: panel targets, variables, annotations, alert rules."""
    out: list[tuple[str, str]] = []
    for d in dashboard_docs():
        uid = d["uid"]
        out += [(f"{uid} variable {v['name']}", v["query"]) for v in d["templating"]["list"]]
        out += [(f"{uid} annotation {a['name']}", a["target"]["query"])
                for a in d["annotations"].get("list", [])]
        out += [(f"{uid} panel {p['title']} {t['refId']}", t["query"])
                for p in panels(d) for t in p.get("targets", [])]
    out += [(f"alert {uid}", q) for uid, q in alert_queries().items()]
    return out


def rendered() -> dict[Path, str]:
    """Every generated file and its content."""
    out = {DASHBOARD_DIR / f"{d['uid']}.json": json.dumps(d, indent=2, ensure_ascii=False) + "\n"
           for d in dashboard_docs()}
    out[RULES_FILE] = (
        "# Generated by grafana/build.py: do not edit, run `python grafana/build.py`.\n"
        + yaml.safe_dump(rules_doc(), sort_keys=False, allow_unicode=True, width=100))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the committed files differ from what the code generates")
    args = ap.parse_args(argv)
    files = rendered()
    stale = sorted(set(DASHBOARD_DIR.glob("*.json")) - set(files))
    differ = [p for p, text in files.items()
              if not p.exists() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in [*differ, *stale]:
            print(f"out of date: {p.relative_to(HERE.parent)}", file=sys.stderr)
        return 1 if differ or stale else 0
    for p in stale:
        p.unlink()
    for p in differ:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(files[p], encoding="utf-8")
        print(f"wrote {p.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
