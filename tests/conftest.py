"""Shared fixtures: the real-resolver lab (session-wide) and helpers to point the probe at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslab import Lab, LabZone, lab_available

from probe.engine import Engine, EngineConfig
from probe.resolvers import ResolverSpec
from probe.zones import ProbeName, ZoneSpec

# Real InfluxDB / VictoriaMetrics / Alertmanager fixtures live in their own plugin modules.
pytest_plugins = ["influx_fixtures", "alert_fixtures", "cutover_run"]

# Lab tests wait for short TTLs; queries go only to 127.53.x.x.
LAB_CONFIG = EngineConfig(qps=0, timeout=1.0, retries=1, per_resolver=8, allow_local_auth=True)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    ok, why = lab_available()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"the lab must run in CI: {why}")
        pytest.skip(why)
    workdir = Path(tmp_path_factory.mktemp("dnslab"))
    with Lab(workdir) as the_lab:
        yield the_lab


def lab_resolvers(lab: Lab) -> list[ResolverSpec]:
    return [ResolverSpec(r.name, r.host, r.port, "lab") for r in lab.resolvers]


def lab_zone(lab: Lab, name: str, *, ns: bool = False) -> ZoneSpec:
    """A ZoneSpec probing the lab zone's existing names; `ns` pins its servers (else discovered)."""
    z: LabZone = lab.zones[name]
    return ZoneSpec(
        z.name,
        tuple(ProbeName(q.lower(), t) for q, t in z.probe_names[:1]),
        ns=tuple((a, 53) for a in z.auth_addresses) if ns else (),
    )


@pytest.fixture
def engine() -> Engine:
    return Engine(LAB_CONFIG)
