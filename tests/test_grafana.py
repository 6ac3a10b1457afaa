"""Static checks of the Grafana dashboards, alert rules and provisioning files (no server)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard
from test_compose import strings

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
PROVISIONING = GRAFANA / "provisioning"


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["grafana_build"] = mod
    spec.loader.exec_module(mod)
    return mod


BUILD = load_build()


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((GRAFANA / "dashboards").glob("*.json"))]


def provisioned(relpath: str) -> dict[str, Any]:
    doc = yaml.safe_load((PROVISIONING / relpath).read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and doc.get("apiVersion") == 1, relpath
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in doc["panels"]:
        yield p
        yield from p.get("panels", [])


def datasource_refs(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every "datasource" value anywhere in a JSON document, with where it is."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                yield f"{path}/{k}", v
            yield from datasource_refs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from datasource_refs(v, f"{path}/{i}")


def test_committed_files_are_what_the_code_generates() -> None:
    assert BUILD.main(["--check"]) == 0, "run: python grafana/build.py"
    for path, text in BUILD.rendered().items():
        assert path.read_text(encoding="utf-8") == text, path


def test_dashboards_have_unique_uids_and_the_sdk_schema_version() -> None:
    docs = dashboards()
    uids = [d["uid"] for d in docs]
    assert sorted(uids) == ["dnssec-overview", "dnssec-probe-health", "dnssec-zone"]
    assert len({d["title"] for d in docs}) == len(docs)
    for d in docs:
        assert d["schemaVersion"] == Dashboard().schema_version, d["uid"]
        assert d["tags"] == ["dnssec-probe"] and d["refresh"] == "1m"
        assert d["time"] == {"from": "now-6h", "to": "now"}
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert list(variables) == ["vantage", "zone", "resolver"], d["uid"]
        for v in variables.values():
            assert v["type"] == "query" and v["multi"] and v["includeAll"], (d["uid"], v["name"])
            assert v["query"].startswith("SHOW TAG VALUES FROM "), v["query"]
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), d["uid"]
        titles = [p["title"] for p in panels(d) if p["type"] != "row"]
        assert len(titles) == len(set(titles)), d["uid"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    for d in dashboards():
        cells: dict[tuple[int, int], str] = {}
        for p in panels(d):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (d["uid"], p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, (d["uid"], p["title"], cells.get((x, y)))
                    cells[(x, y)] = p["title"]


def test_every_datasource_reference_is_the_provisioned_one() -> None:
    sources = provisioned("datasources/influxdb.yaml")["datasources"]
    assert len(sources) == 1
    uid = sources[0]["uid"]
    assert uid == BUILD.DS_UID
    for d in dashboards():
        refs = list(datasource_refs(d))
        assert refs, d["uid"]
        for where, ref in refs:
            assert ref == {"type": "influxdb", "uid": uid}, (d["uid"], where, ref)
        for p in panels(d):
            if p["type"] != "row":
                assert p["datasource"]["uid"] == uid, (d["uid"], p["title"])
    for group in provisioned("alerting/rules.yaml")["groups"]:
        for rule in group["rules"]:
            for q in rule["data"]:
                want = BUILD.EXPR_UID if q["model"].get("type") in ("reduce", "threshold") else uid
                assert q["datasourceUid"] == want, (rule["uid"], q["refId"])
                assert q["model"]["datasource"]["uid"] == want, (rule["uid"], q["refId"])


def test_every_target_is_a_raw_influxql_query() -> None:
    for d in dashboards():
        for p in panels(d):
            if p["type"] == "row":
                continue
            assert p["targets"], (d["uid"], p["title"])
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
            for t in p["targets"]:
                assert t["rawQuery"] is True and t["query"].strip(), (d["uid"], p["title"])
                assert t["resultFormat"] in ("time_series", "table"), (d["uid"], p["title"])
        for a in d["annotations"].get("list", []):
            assert a["target"]["rawQuery"] is True and a["target"]["query"].strip()


def test_all_queries_lists_every_query_once_per_place() -> None:
    queries = BUILD.all_queries()
    expected = []
    for d in dashboards():
        expected += [v["query"] for v in d["templating"]["list"]]
        expected += [a["target"]["query"] for a in d["annotations"].get("list", [])]
        expected += [t["query"] for p in panels(d) for t in p.get("targets", [])]
    rules = provisioned("alerting/rules.yaml")["groups"][0]["rules"]
    expected += [q["model"]["query"] for r in rules for q in r["data"] if "query" in q["model"]]
    assert sorted(q for _, q in queries) == sorted(expected)
    places = [w for w, _ in queries]
    assert len(places) == len(set(places))


MACROS = {"timeFilter", "__interval", "vantage", "zone", "resolver"}
FORBIDDEN = re.compile(
    r"\b(SLIMIT|SOFFSET|CARDINALITY|SHOW\s+SERIES|SHOW\s+MEASUREMENTS|INTO)\b|from\(bucket|\|>",
    re.IGNORECASE)
# Tag and field names that clash with InfluxQL words or functions: always double-quoted.
NAMES = ("vantage", "zone", "resolver", "verdict", "diagnosis", "round", "event", "kind", "error")


@pytest.mark.parametrize(("where", "query"), BUILD.all_queries(),
                         ids=[w for w, _ in BUILD.all_queries()])
def test_query_uses_portable_influxql_and_known_macros(where: str, query: str) -> None:
    assert not FORBIDDEN.search(query), query
    assert set(re.findall(r"\$\{?(\w+)\}?", query)) <= MACROS, query
    # Template variables only as whole-value regex matches (Grafana's multi-value expansion).
    bare = re.sub(r"/\^\$(vantage|zone|resolver)\$/", "", query)
    assert not re.search(r"\$(vantage|zone|resolver)\b", bare), query
    if query.startswith("SELECT"):
        assert "WHERE $timeFilter" in query, query
        # Panels follow the dashboard's resolution; rules have a fixed one of their own.
        for m in re.finditer(r"GROUP BY time\(([^)]*)\)", query):
            assert m.group(1) == ("1m" if where.startswith("alert") else "$__interval"), query
    unquoted = re.sub(r'"[^"]*"|\'[^\']*\'|/[^/]*/', "", query)
    for name in NAMES:
        assert not re.search(rf"\b{name}\b", unquoted), (name, query)


def test_provisioned_datasource_and_dashboard_provider() -> None:
    ds = provisioned("datasources/influxdb.yaml")["datasources"][0]
    assert ds["type"] == "influxdb" and ds["url"] == "http://influxdb:8086"
    assert ds["name"] == "dnssec-probe InfluxDB"
    assert ds["jsonData"]["dbName"] == "dnssec" and ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["httpMode"] == "POST"
    assert ds["user"] == "${INFLUX_V1_USER}"
    assert ds["secureJsonData"]["password"] == "${INFLUX_V1_PASSWORD}"
    (provider,) = provisioned("dashboards/dnssec-probe.yaml")["providers"]
    assert provider["type"] == "file" and provider["folder"] == "DNSSEC"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["allowUiUpdates"] is False


def test_alert_rules_contact_point_and_policy() -> None:
    (group,) = provisioned("alerting/rules.yaml")["groups"]
    assert group["folder"] == "DNSSEC" and group["interval"] == "1m" and group["name"]
    rules = {r["uid"]: r for r in group["rules"]}
    assert set(rules) == set(BUILD.alert_queries())
    docs = {d["uid"]: {p["id"] for p in panels(d)} for d in dashboards()}
    for uid, r in rules.items():
        assert {"title", "condition", "data", "for", "noDataState", "execErrState",
                "annotations", "labels"} <= set(r), uid
        refs = [q["refId"] for q in r["data"]]
        assert r["condition"] in refs and len(refs) == len(set(refs)), uid
        (query,) = [q for q in r["data"] if q["datasourceUid"] == BUILD.DS_UID]
        assert query["model"]["rawQuery"] is True
        assert query["model"]["query"] == BUILD.alert_queries()[uid]
        assert query["relativeTimeRange"]["from"] > 0
        assert {"summary", "description"} <= set(r["annotations"]), uid
        assert r["panelId"] in docs[r["dashboardUid"]], uid
    spike, silent = rules["dnssec-bogus-spike"], rules["dnssec-probe-silent"]
    (cond,) = [q for q in spike["data"] if q["refId"] == spike["condition"]]
    assert cond["model"]["conditions"][0]["evaluator"] == {
        "type": "gt", "params": [BUILD.BOGUS_RATIO_THRESHOLD]}
    assert spike["for"] == "3m" and spike["labels"]["severity"] == "critical"
    assert spike["data"][0]["relativeTimeRange"] == {"from": 300, "to": 0}
    assert silent["noDataState"] == "Alerting"
    assert silent["data"][0]["relativeTimeRange"] == {"from": 86400, "to": 0}
    (cond,) = [q for q in silent["data"] if q["refId"] == silent["condition"]]
    assert cond["model"]["conditions"][0]["evaluator"] == {"type": "lt", "params": [0.1]}
    assert 'FROM "dnssec_round"' in silent["data"][0]["model"]["query"]

    (cp,) = provisioned("alerting/contact-points.yaml")["contactPoints"]
    (receiver,) = cp["receivers"]
    assert receiver["type"] == "webhook" and receiver["settings"]["url"] == "${ALERT_WEBHOOK_URL}"
    (policy,) = provisioned("alerting/policies.yaml")["policies"]
    assert policy["receiver"] == cp["name"]
    assert policy["group_by"] == ["alertname", "zone", "vantage"]




def test_provisioning_expands_exactly_the_required_env() -> None:
    used: set[str] = set()
    for path in sorted(PROVISIONING.rglob("*.yaml")):
        for value in strings(yaml.safe_load(path.read_text(encoding="utf-8"))):
            used |= set(re.findall(r"\$\{([A-Za-z_]\w*)\}", value))
            # Grafana also expands a bare $NAME: none may hide in a value.
            assert not re.findall(r"\$[A-Z_][A-Z0-9_]*\b", value), (path, value)
    assert used == set(BUILD.REQUIRED_ENV)
