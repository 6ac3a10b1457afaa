"""The docker compose stack, checked without a Docker engine: docker-compose.yml against the
Compose Specification's JSON schema, the variables it and Grafana's provisioning need against
.env.example, the probe's config file through the probe's own loader and command line, the
Dockerfile, .dockerignore, the InfluxDB init script and the Alertmanager example config.

The schema is the compose-spec project's own schema/compose-spec.json as vendored (with its
sha256) by the PyPI package check-jsonschema, a test dependency; it is not copied here."""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import urllib.parse
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from probe.cli import cli
from probe.daemon.config import FIELDS, build, load_file
from probe.resolvers import DEFAULT_RESOLVERS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROBE_TOML = ROOT / "docker" / "dnssec-probe.toml"
INIT_SCRIPT = ROOT / "docker" / "influxdb-init.sh"
ALERTMANAGER_YML = ROOT / "docker" / "alertmanager.yml"
GRAFANA = ROOT / "grafana"

# Secrets: compose must refuse to start without them rather than start with them empty.
SECRETS = ("DOCKER_INFLUXDB_INIT_PASSWORD", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", "INFLUX_V1_PASSWORD",
           "GF_SECURITY_ADMIN_PASSWORD")


# ---- Compose interpolation (https://docs.docker.com/reference/compose-file/interpolation/) ----

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<colon>:?)(?P<op>[-?+])(?P<arg>.*))?\Z",
                     re.DOTALL)


class MissingVariable(Exception):
    """A ${VAR:?message} / ${VAR?message} whose variable is unset (or empty, with the colon)."""


def _closing_brace(text: str, start: int) -> int:
    """Index of the '}' closing the '${' whose body starts at `start` (nested ${...} allowed)."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed '${{' in {text!r}")


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """('text', s), ('braced', body) or ('bare', name) pieces of a Compose string ($$ = '$')."""
    i = 0
    while i < len(text):
        j = text.find("$", i)
        if j < 0:
            yield "text", text[i:]
            return
        if j > i:
            yield "text", text[i:j]
        if text.startswith("$$", j):
            yield "text", "$"
            i = j + 2
        elif text.startswith("${", j):
            end = _closing_brace(text, j + 2)
            yield "braced", text[j + 2:end]
            i = end + 1
        elif m := _NAME.match(text, j + 1):
            yield "bare", m.group()
            i = m.end()
        else:
            yield "text", "$"
            i = j + 1


def interpolate(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    for kind, value in _tokens(text):
        if kind == "text":
            out.append(value)
        elif kind == "bare":
            out.append(env.get(value, ""))
        else:
            m = _BRACED.match(value)
            if m is None:
                raise ValueError(f"not a Compose interpolation: ${{{value}}}")
            name, colon, op, arg = m.group("name", "colon", "op", "arg")
            current = env.get(name)
            present = current is not None and (current != "" or not colon)
            if op is None:
                out.append(current or "")
            elif op == "-":
                out.append(current if present and current is not None else interpolate(arg, env))
            elif op == "+":
                out.append(interpolate(arg, env) if present else "")
            elif present and current is not None:
                out.append(current)
            else:
                raise MissingVariable(f"{name}: {interpolate(arg, env)}")
    return "".join(out)


def variables(text: str) -> set[str]:
    """Every variable a Compose string can read, nested defaults included."""
    found: set[str] = set()
    for kind, value in _tokens(text):
        if kind == "bare":
            found.add(value)
        elif kind == "braced":
            m = _BRACED.match(value)
            assert m is not None, value
            found.add(m.group("name"))
            if m.group("arg"):
                found |= variables(m.group("arg"))
    return found


def strings(node: Any) -> Iterator[str]:
    """Every string value of a YAML document (Compose interpolates values, never keys)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as .env.example is written."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and _NAME.fullmatch(key), f"{path.name}:{n}: not KEY=VALUE: {line!r}"
        assert key not in out, f"{path.name}:{n}: {key} set twice"
        out[key] = value
    return out


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it after `cp .env.example .env`."""
    out = interpolated(compose, env)
    assert isinstance(out, dict)
    return out


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    """compose-spec.json as check-jsonschema ships it, checked against the digest it ships with."""
    try:
        dist = importlib.metadata.distribution("check-jsonschema")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("check-jsonschema is not installed: it ships the Compose Specification's JSON "
                    "schema (pip install -e '.[test]')")
    vendor = Path(str(dist.locate_file("check_jsonschema/builtin_schemas/vendor")))
    raw = (vendor / "compose-spec.json").read_bytes()
    digest = (vendor / "sha256" / "compose-spec.sha256").read_text(encoding="ascii").strip()
    assert hashlib.sha256(raw).hexdigest() == digest, "vendored compose-spec.json was altered"
    schema = json.loads(raw)
    assert schema["$id"] == "compose_spec.json" and schema["title"] == "Compose Specification"
    return schema


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _service(doc: dict[str, Any], name: str) -> dict[str, Any]:
    svc = doc["services"][name]
    assert isinstance(svc, dict)
    return svc


def _mounts(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, options) of a service's short-syntax volumes."""
    out: dict[str, tuple[str, str]] = {}
    for v in svc.get("volumes", []):
        assert isinstance(v, str), f"use the short volume syntax: {v!r}"
        source, target, *opts = v.split(":")
        out[target] = (source, ":".join(opts))
    return out


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def _load_grafana_build() -> Any:
    """grafana/build.py by path (as tests/test_grafana_queries.py does), or None before it exists."""
    path = GRAFANA / "build.py"
    if not path.exists():
        return None
    if (mod := sys.modules.get("grafana_build")) is not None:
        return mod
    spec = importlib.util.spec_from_file_location("grafana_build", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["grafana_build"] = mod
    spec.loader.exec_module(mod)
    return mod


def _grafana_yaml(kind: str) -> list[dict[str, Any]]:
    out = []
    for p in sorted((GRAFANA / "provisioning" / kind).glob("*.y*ml")):
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            out.append(doc)
    return out


# Grafana expands $VAR / ${VAR} from its environment in provisioning files; its own macros and
# dashboard variables ($__interval, $timeFilter, ${zone}) start lower-case or with '_'.
_GRAFANA_ENV = re.compile(r"(?<!\$)\$\{?([A-Z][A-Z0-9_]*)\b")


def grafana_env_names() -> set[str]:
    names: set[str] = set()
    mod = _load_grafana_build()
    if mod is not None and hasattr(mod, "REQUIRED_ENV"):
        names |= set(mod.REQUIRED_ENV)
    for p in sorted((GRAFANA / "provisioning").rglob("*.y*ml")):
        for value in strings(yaml.safe_load(p.read_text(encoding="utf-8"))):  # values, not comments
            names |= set(_GRAFANA_ENV.findall(value))
    return names


# ---- the compose file: schema --------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(
        compose: dict[str, Any], resolved: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    validator = _validator(compose_schema)
    for doc, what in ((compose, "as written"), (resolved, "after interpolation from .env.example")):
        errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                  for e in validator.iter_errors(doc)]
        assert not errors, f"docker-compose.yml {what}:\n" + "\n".join(errors)
    assert "version" not in compose, "the Compose Specification has no top-level version"


def test_the_schema_check_does_reject_a_broken_file(
        compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    validator = _validator(compose_schema)
    for mutate in (
        lambda d: d["services"]["probe"].update(helthcheck={"test": ["CMD", "true"]}),
        lambda d: d["services"]["grafana"].update(depends_on={"influxdb": {"condition": "healthy"}}),
        lambda d: d["services"]["influxdb"].update(ports="8086:8086"),
        lambda d: d.update(volume={"x": {}}),
    ):
        broken = copy.deepcopy(compose)
        mutate(broken)
        assert not validator.is_valid(broken)


# ---- variables -------------------------------------------------------------------------------


def test_every_variable_the_stack_needs_is_in_env_example(
        compose: dict[str, Any], env: dict[str, str]) -> None:
    used = set().union(*(variables(s) for s in strings(compose)))
    assert used, "docker-compose.yml reads no variable at all?"
    assert not used - env.keys(), f"missing from .env.example: {sorted(used - env.keys())}"
    grafana = grafana_env_names()
    assert not grafana - env.keys(), \
        f"Grafana provisioning needs, missing from .env.example: {sorted(grafana - env.keys())}"
    unused = env.keys() - used - grafana
    assert not unused, f".env.example sets what nothing reads: {sorted(unused)}"


def test_grafana_container_gets_what_its_provisioning_reads(compose: dict[str, Any]) -> None:
    names = grafana_env_names()
    if not names:
        pytest.skip("grafana/ has no provisioning yet")
    missing = names - _environment(_service(compose, "grafana")).keys()
    assert not missing, f"grafana service environment lacks {sorted(missing)}"


def test_env_example_values_are_safe_placeholders(env: dict[str, str]) -> None:
    for key, value in env.items():
        # Compose reads $ in .env as a variable, and so does Grafana in provisioning values.
        assert "$" not in value, key
        assert value == value.strip() and not value.startswith(("'", '"')), key
    for key in SECRETS:
        assert env[key].startswith("change-me"), f"{key} must be an obvious placeholder"
    assert len(env["DOCKER_INFLUXDB_INIT_PASSWORD"]) >= 8  # InfluxDB refuses shorter ones
    # The placeholder webhook goes nowhere: .invalid never resolves.
    assert (urllib.parse.urlsplit(env["ALERT_WEBHOOK_URL"]).hostname or "").endswith(".invalid")


def test_compose_file_holds_no_secret(compose: dict[str, Any], env: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for key in SECRETS:
        assert env[key] not in text
    for name, svc in compose["services"].items():
        for key, value in _environment(svc).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|_KEY$", key):
                assert re.fullmatch(r"\$\{[^}]+\}+", value), f"{name}: {key} is not from .env"


def test_compose_refuses_to_start_without_the_secrets(
        compose: dict[str, Any], env: dict[str, str]) -> None:
    for key in SECRETS:
        without = {k: v for k, v in env.items() if k != key}
        with pytest.raises(MissingVariable, match=key):
            interpolated(compose, without)
        with pytest.raises(MissingVariable, match=key):
            interpolated(compose, {**env, key: ""})


def test_interpolation_as_compose_does_it() -> None:
    e = {"A": "a", "E": ""}
    assert interpolate("${A}-$A-${B}-$$A", e) == "a-a--$A"
    assert interpolate("${E:-d}|${E-d}|${B-d}|${A:+x}|${E+x}", e) == "d||d|x|x"
    assert interpolate("${B:-${A}}|${B:-${C:-z}}", e) == "a|z"
    with pytest.raises(MissingVariable, match="B: need b"):
        interpolate("${B:?need b}", e)
    assert variables("${X:-${Y:-$Z}} $$W") == {"X", "Y", "Z"}


# ---- services --------------------------------------------------------------------------------


def test_services_and_pinned_images(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"influxdb", "grafana", "probe", "alertmanager"}
    images = {n: s.get("image", "") for n, s in compose["services"].items()}
    assert re.fullmatch(r"influxdb:2\.\d+\.\d+", images["influxdb"])
    assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", images["grafana"])
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", images["alertmanager"])
    assert compose["services"]["probe"]["build"] == {"context": ".", "dockerfile": "Dockerfile"}


def test_named_volumes_keep_the_data(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for svc in compose["services"].values():
        for target, (source, _) in _mounts(svc).items():
            if not source.startswith((".", "/")):
                used.add(source)
            else:
                assert (ROOT / source).exists(), f"bind mount source {source} for {target}"
    assert used == declared
    want = {"influxdb": ["/var/lib/influxdb2", "/etc/influxdb2"], "grafana": ["/var/lib/grafana"],
            "probe": ["/var/lib/dnssec-probe"], "alertmanager": ["/alertmanager"]}
    for name, targets in want.items():
        mounts = _mounts(_service(compose, name))
        for target in targets:
            assert mounts[target][0] in declared, f"{name}:{target} is not a named volume"


def test_ports_are_published_on_loopback_by_default(
        compose: dict[str, Any], resolved: dict[str, Any], env: dict[str, str]) -> None:
    defaults_only = interpolated(compose, {k: v for k, v in env.items() if not k.endswith("_LISTEN")})
    for doc in (resolved, defaults_only):
        for name, svc in doc["services"].items():
            for port in svc.get("ports", []):
                host, _, rest = port.partition(":")
                assert ipaddress.ip_address(host).is_loopback, f"{name}: {port}"
                assert rest.count(":") == 1, f"{name}: {port} is not ADDRESS:PORT:PORT"


def test_influxdb_service(compose: dict[str, Any]) -> None:
    influx = _service(compose, "influxdb")
    e = _environment(influx)
    assert e["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN", "RETENTION"):
        name = f"DOCKER_INFLUXDB_INIT_{key}"
        assert variables(e[name]) == {name}, name
    mounts = _mounts(influx)
    inits = {t: s for t, (s, _) in mounts.items() if t.startswith("/docker-entrypoint-initdb.d/")}
    assert inits == {"/docker-entrypoint-initdb.d/influxdb-init.sh": "./docker/influxdb-init.sh"}
    assert influx["healthcheck"]["test"][:3] == ["CMD", "influx", "ping"]


def test_grafana_service(compose: dict[str, Any]) -> None:
    grafana = _service(compose, "grafana")
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == ("./grafana/provisioning", "ro")
    assert mounts["/var/lib/grafana/dashboards"] == ("./grafana/dashboards", "ro")
    assert grafana["depends_on"]["influxdb"]["condition"] == "service_healthy"
    e = _environment(grafana)
    for name in ("INFLUX_V1_USER", "INFLUX_V1_PASSWORD", "ALERT_WEBHOOK_URL",
                 "GF_SECURITY_ADMIN_PASSWORD"):
        assert variables(e[name]) == {name}, name
    assert [p.rsplit(":", 1)[1] for p in grafana["ports"]] == ["3000"]


def test_grafana_provisioning_matches_the_stack(compose: dict[str, Any]) -> None:
    """The dashboards provider reads where compose mounts them; the datasource asks the
    influxdb service, in the database the init script maps to the bucket, as the v1 user."""
    providers = [p for d in _grafana_yaml("dashboards") for p in d.get("providers", [])]
    datasources = [s for d in _grafana_yaml("datasources") for s in d.get("datasources", [])
                   if s.get("type") == "influxdb"]
    if not providers and not datasources:
        pytest.skip("grafana/provisioning not there yet")
    mounts = _mounts(_service(compose, "grafana"))
    for p in providers:
        path = p["options"]["path"]
        assert path in mounts and mounts[path][0] == "./grafana/dashboards", path
    assert len(datasources) == 1
    ds = datasources[0]
    url = urllib.parse.urlsplit(ds["url"])
    assert (url.hostname, url.port) == ("influxdb", 8086)
    database = ds.get("jsonData", {}).get("dbName") or ds.get("database")
    assert database == _init_script_settings()["V1_DATABASE"]
    assert "INFLUX_V1_USER" in json.dumps(ds) and "INFLUX_V1_PASSWORD" in json.dumps(ds)


def test_alertmanager_config_passes_amtool() -> None:
    if shutil.which("amtool") is None:
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager)")
    out = subprocess.run(["amtool", "check-config", str(ALERTMANAGER_YML)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alertmanager_config_is_mounted_where_it_is_read(compose: dict[str, Any]) -> None:
    am = _service(compose, "alertmanager")
    flags = dict(f.split("=", 1) for f in am["command"])
    assert _mounts(am)[flags["--config.file"]] == ("./docker/alertmanager.yml", "ro")
    assert _mounts(am)[flags["--storage.path"]][0] in compose["volumes"]
    url = yaml.safe_load(ALERTMANAGER_YML.read_text())["receivers"][0]["webhook_configs"][0]["url"]
    assert ipaddress.ip_address(urllib.parse.urlsplit(url).hostname or "").is_loopback


# ---- the probe -------------------------------------------------------------------------------


def _probe_command(resolved: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(--config FILE, {key: value}) of the probe's interpolated command line."""
    cmd = list(_service(resolved, "probe")["command"])
    assert cmd[0] == "run"
    args = cmd[1:]
    assert len(args) % 2 == 0, args
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    config = pairs.pop("--config")
    flags = {}
    for flag, value in pairs.items():
        key = flag.removeprefix("--").replace("-", "_")
        assert flag.startswith("--") and key in FIELDS, f"{flag} is no dnssec-probe run flag"
        flags[key] = value
    return config, flags


def _container_to_host(compose: dict[str, Any], path: str) -> Path:
    """The repository file that the probe container sees at `path` (a bind mount)."""
    source, _ = _mounts(_service(compose, "probe"))[path]
    assert source.startswith("./"), f"{path} is no bind mount of a repository file"
    return ROOT / source


def test_probe_config_loads_with_the_probes_own_loader(
        compose: dict[str, Any], resolved: dict[str, Any], env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config_path, flags = _probe_command(resolved)
    assert _container_to_host(compose, config_path) == PROBE_TOML
    values = load_file(PROBE_TOML)  # unknown keys and bad values raise ConfigError
    assert set(values) <= set(FIELDS)
    probe_env = _environment(_service(resolved, "probe"))
    for key in list(os.environ):
        if key.startswith("DNSSEC_PROBE_"):
            monkeypatch.delenv(key)
    for key, value in probe_env.items():
        monkeypatch.setenv(key, value)
    cfg = build(values, flags)
    assert cfg.influx_url == "http://influxdb:8086" and cfg.influx_api == "v2"
    assert cfg.influx_org == env["DOCKER_INFLUXDB_INIT_ORG"]
    assert cfg.influx_bucket == env["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert cfg.vantage == env["DNSSEC_PROBE_VANTAGE"]
    token = cfg.influx_token()
    assert token is not None and token.reveal() == env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert cfg.pagerduty_key() is None and cfg.webhook_url == ""
    assert cfg.state_dir == "/var/lib/dnssec-probe"
    assert _mounts(_service(compose, "probe"))[cfg.state_dir][0] in compose["volumes"]
    assert _container_to_host(compose, cfg.zones) == ROOT / "zones.txt"
    # No resolver settings: the built-in public set, by IP address (never Docker's 127.0.0.11).
    assert not cfg.resolver and not cfg.resolvers and not cfg.with_defaults


def test_probe_check_config_through_its_command_line(
        tmp_path: Path, compose: dict[str, Any], resolved: dict[str, Any], env: dict[str, str]) -> None:
    """`dnssec-probe run ... --check-config` as the container runs it, with the container's
    paths mapped to the repository files compose mounts there."""
    _, flags = _probe_command(resolved)
    text = PROBE_TOML.read_text(encoding="utf-8")
    zones = tomllib.loads(text)["zones"]
    toml = tmp_path / "dnssec-probe.toml"
    toml.write_text(text.replace(json.dumps(zones), json.dumps(str(_container_to_host(compose, zones)))),
                    encoding="utf-8")
    args = ["run", "--config", str(toml)]
    for key, value in flags.items():
        args += ["--" + key.replace("_", "-"), value]
    process_env = {k: None for k in os.environ if k.startswith("DNSSEC_PROBE_")}
    process_env.update(_environment(_service(resolved, "probe")))
    result = CliRunner().invoke(cli, [*args, "--check-config"], env=process_env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["influx_token"] == "set" and doc["pagerduty_key"] == "not set"
    assert doc["vantage"] == env["DNSSEC_PROBE_VANTAGE"]
    assert doc["zones_loaded"] > 10
    assert doc["resolvers_loaded"] == [r.name for r in DEFAULT_RESOLVERS]
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] not in result.output
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] not in " ".join(args)


def test_probe_asks_public_resolvers_never_dockers_embedded_dns(compose: dict[str, Any]) -> None:
    """No resolver setting anywhere: the built-in set, public addresses only, so neither
    Docker's embedded DNS (127.0.0.11) nor any private address is ever a probe target."""
    for r in DEFAULT_RESOLVERS:
        assert ipaddress.ip_address(r.host).is_global, r
    probe = _service(compose, "probe")
    assert "dns" not in probe and "network_mode" not in probe
    assert not any(a.startswith(("--resolver", "--with-defaults")) for a in probe["command"])
    assert not {"resolver", "resolvers", "with_defaults"} & set(load_file(PROBE_TOML))


def test_probe_service_urls_name_compose_services(compose: dict[str, Any]) -> None:
    values = load_file(PROBE_TOML)
    for key, service, port in (("influx_url", "influxdb", 8086),
                               ("alertmanager_url", "alertmanager", 9093)):
        url = urllib.parse.urlsplit(values[key])
        assert (url.hostname, url.port) == (service, port), key
        assert service in _service(compose, "probe")["depends_on"]
        published = _service(compose, service).get("ports", [])
        assert all(p.endswith(f":{port}") for p in published)


def test_probe_service_health_restart_and_metrics(compose: dict[str, Any]) -> None:
    probe = _service(compose, "probe")
    assert probe["restart"] == "unless-stopped"
    assert probe["depends_on"]["influxdb"]["condition"] == "service_healthy"
    host, port = load_file(PROBE_TOML)["metrics_listen"].rsplit(":", 1)
    assert host == "0.0.0.0"  # reachable through the published port
    test = " ".join(probe["healthcheck"]["test"])
    assert probe["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert f"http://127.0.0.1:{port}/healthz" in test
    assert [p.rsplit(":", 1)[1] for p in probe["ports"]] == [port]
    # The token goes by environment only, named as the config file names it.
    assert load_file(PROBE_TOML).get("influx_token_env", "DNSSEC_PROBE_INFLUX_TOKEN") in probe["environment"]
    assert not any("token" in a.lower() for a in probe["command"])


# ---- Dockerfile and .dockerignore ----------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        instr, _, args = full.partition(" ")
        out.append((instr.upper(), args.strip()))
    assert not pending
    return out


def _one(instrs: list[tuple[str, str]], name: str) -> str:
    found = [a for i, a in instrs if i == name]
    assert found, f"Dockerfile has no {name}"
    return found[-1]


def test_dockerfile(resolved: dict[str, Any]) -> None:
    instrs = dockerfile_instructions()
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", _one(instrs, "FROM"))
    user = _one(instrs, "USER").split(":")[0]
    assert user not in ("root", "0") and instrs.index(("USER", _one(instrs, "USER"))) > max(
        n for n, (i, _) in enumerate(instrs) if i == "RUN"), "USER after the last RUN"
    health = _one(instrs, "HEALTHCHECK")
    values = load_file(PROBE_TOML)
    port = values["metrics_listen"].rsplit(":", 1)[1]
    assert f"http://127.0.0.1:{port}/healthz" in health and '"python"' in health
    assert "curl" not in health
    assert json.loads(_one(instrs, "ENTRYPOINT")) == ["dnssec-probe"]
    cmd = json.loads(_one(instrs, "CMD"))
    assert cmd == ["run", "--config", _probe_command(resolved)[0]]
    assert _one(instrs, "VOLUME") == values["state_dir"]
    assert _one(instrs, "EXPOSE") == port
    installs = [a for i, a in instrs if i == "RUN" and "pip install" in a]
    assert installs and all("--no-cache-dir" in a for a in installs)
    assert any(re.search(r'pip install --no-cache-dir "\.', a) for a in installs)


def test_dockerfile_copies_what_the_package_build_reads() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    sources: set[str] = set()
    for instr, args in dockerfile_instructions():
        if instr == "COPY":
            parts = [a for a in shlex.split(args) if not a.startswith("--")]
            sources |= set(parts[:-1])
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= sources
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in sources
    ignore = dockerignore_patterns()
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source, ignore), f"{source} is in .dockerignore"
    for name in ("probe/cli.py", "probe/daemon/config.py"):
        assert not dockerignored(name, ignore)


def dockerignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            out.append((negated, str(PurePosixPath(line.lstrip("!")))))
    return out


def _glob_match(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        rest = pattern[3:]
        parts = path.split("/")
        return any(_glob_match(rest, "/".join(parts[i:])) for i in range(len(parts)))
    p_parts, parts = pattern.split("/"), path.split("/")
    return len(p_parts) == len(parts) and all(fnmatchcase(s, p) for p, s in zip(p_parts, parts,
                                                                                  strict=True))


def dockerignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for negated, pattern in patterns:
        if any(_glob_match(pattern, c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_tests_git_caches_and_env_out() -> None:
    ignore = dockerignore_patterns()
    for path in (".env", ".git/config", "tests/test_compose.py", ".pytest_cache/x",
                 "probe/__pycache__/cli.cpython-311.pyc", "dnssec_probe.egg-info/PKG-INFO",
                 "docker/influxdb-init.sh", "grafana/build.py", "lab-work/x", ".mypy_cache/x"):
        assert dockerignored(path, ignore), path


# ---- InfluxDB init script --------------------------------------------------------------------


def _init_script_commands() -> list[list[str]]:
    text = INIT_SCRIPT.read_text(encoding="utf-8").replace("\\\n", " ")
    cmds = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("influx "):
            cmds.append(shlex.split(line))
    return cmds


def _init_script_settings() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(\S+)", INIT_SCRIPT.read_text(encoding="utf-8"), re.M))


def _flags(cmd: list[str]) -> dict[str, str]:
    out = {}
    for i, a in enumerate(cmd):
        if a.startswith("--"):
            nxt = cmd[i + 1] if i + 1 < len(cmd) else ""
            out[a] = "" if nxt.startswith("--") else nxt
    return out


def test_init_script_creates_dbrp_and_v1_auth(compose: dict[str, Any]) -> None:
    cmds = {" ".join(c[:4]): _flags(c) for c in _init_script_commands()}
    settings = _init_script_settings()
    dbrp = cmds["influx v1 dbrp create"]
    assert dbrp["--bucket-id"] == "${DOCKER_INFLUXDB_INIT_BUCKET_ID}"
    assert dbrp["--db"] == "${V1_DATABASE}" and settings["V1_DATABASE"] == "dnssec"
    assert dbrp["--rp"] == "${V1_RETENTION_POLICY}" and settings["V1_RETENTION_POLICY"] == "autogen"
    assert "--default" in dbrp
    auth = cmds["influx v1 auth create"]
    assert auth["--username"] == "${INFLUX_V1_USER}"
    assert auth["--password"] == "${INFLUX_V1_PASSWORD}"
    assert auth["--read-bucket"] == "${DOCKER_INFLUXDB_INIT_BUCKET_ID}"
    assert "--write-bucket" not in auth  # Grafana only reads
    # Every variable it reads is given to the influxdb container (the image sets the *_ID ones).
    text = INIT_SCRIPT.read_text(encoding="utf-8")
    read = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text)) - set(settings)
    given = set(_environment(_service(compose, "influxdb"))) | {"DOCKER_INFLUXDB_INIT_BUCKET_ID"}
    assert read <= given, sorted(read - given)


def test_init_script_is_executable() -> None:
    # The influxdb image runs /docker-entrypoint-initdb.d with run-parts: executable files only.
    mode = INIT_SCRIPT.stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IXOTH, oct(mode)
    assert INIT_SCRIPT.read_text(encoding="utf-8").startswith("#!/bin/bash\n")
    if shutil.which("git") and (ROOT / ".git").exists():
        staged = subprocess.run(["git", "ls-files", "-s", "--", str(INIT_SCRIPT.relative_to(ROOT))],
                                cwd=ROOT, capture_output=True, text=True, check=False).stdout
        if staged:
            assert staged.startswith("100755"), "git add --chmod=+x docker/influxdb-init.sh"


def test_init_script_is_valid_shell() -> None:
    out = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):  # tests/setup.sh installs it
            pytest.fail("shellcheck is missing")
        pytest.skip("shellcheck is not installed (tests/setup.sh installs it)")
    out = subprocess.run(["shellcheck", str(INIT_SCRIPT)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout
