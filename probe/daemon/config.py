"""Daemon settings: a frozen dataclass loaded from TOML and flags (flags win), validated at load.

Every key has a flag of the same name (`influx_url` <-> `--influx-url`); the flag list is
generated from the fields below, so the two cannot drift apart. Unknown keys and bad values are
rejected with the file, the key and what was expected. Secrets are read from an environment
variable or a file named here, never from the command line, and never printed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import tomllib
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.controls import check_control_text
from probe.errors import ConfigError
from probe.resolvers import decode_utf8, parse_hostport

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def default_state_dir() -> str:
    """$XDG_STATE_HOME/dnssec-probe, else ~/.local/state/dnssec-probe."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "dnssec-probe")


def _positive(v: float) -> str | None:
    return None if v > 0 and math.isfinite(v) else "a number > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 and math.isfinite(v) else "a number >= 0"


def _at_least_one(v: int) -> str | None:
    return None if v >= 1 else "an integer >= 1"


def _url(v: str) -> str | None:
    if not v:
        return None
    parts = urllib.parse.urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        # They would show in process lists, --check-config and logs.
        return "a URL without user:password (use influx_username and influx_token_*)"
    return None


def _listen(v: str) -> str | None:
    if not v:
        return None
    try:
        parse_hostport(v, default_port=0)
    except ValueError:
        return "HOST:PORT with an IP address, e.g. 127.0.0.1:9153"
    return None


def _expiry_margin(v: str) -> str | None:
    from probe.audit.findings import ExpiryMargin

    try:
        ExpiryMargin.parse(v)
    except ConfigError:
        return "N% (0 < N < 100) or a time such as 5d, 12h, 30m, 90s"
    return None


def _one_of(*allowed: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in allowed else " or ".join(repr(a) for a in allowed)
    return check


def _key(default: Any, help: str, check: Callable[[Any], str | None] | None = None,
         *, factory: Callable[[], Any] | None = None, secret_source: bool = False) -> Any:
    meta = {"help": help, "check": check, "secret_source": secret_source}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DaemonConfig:
    """Every setting of `dnssec-probe run`. Field names are the config keys (a contract)."""

    # what to watch
    zones: str = _key("", "zones file (default ./zones.txt)")
    resolver: tuple[str, ...] = _key((), "resolver NAME=ADDRESS[:PORT] (repeatable); replaces "
                                     "the built-in public set")
    resolvers: tuple[str, ...] = _key((), "file(s) of 'NAME ADDRESS[:PORT]' lines")
    with_defaults: bool = _key(False, "keep the built-in public resolvers next to resolver(s)")
    # rounds
    interval: float = _key(60.0, "seconds between round starts", _positive)
    rounds: int = _key(0, "stop after N rounds (0 = run forever)",
                       lambda v: None if v >= 0 else "an integer >= 0")
    jitter: float = _key(1.0, "up to this many seconds of random delay per round start "
                         "(capped at a tenth of the interval)", _non_negative)
    vantage: str = _key("", "name of this vantage point (default: the host name)")
    state_dir: str = _key("", "directory for incidents, the spool and the embedded line files")
    # engine
    qps: float = _key(20.0, "queries per second per resolver (0 = unlimited)", _non_negative)
    timeout: float = _key(2.0, "seconds per query attempt", _positive)
    retries: int = _key(2, "extra attempts after a timeout",
                        lambda v: None if 0 <= v <= 10 else "an integer from 0 to 10")
    inflight: int = _key(256, "queries in flight in total", _at_least_one)
    per_resolver: int = _key(0, "checks in flight per resolver; 0 = a share of inflight, "
                             "capped by what qps can keep busy (at least 8)",
                             lambda v: None if v >= 0 else "an integer >= 0 (0 = automatic)")
    allow_local_auth: bool = _key(False, "let the diagnosis ask name servers at non-public "
                                  "addresses found through NS lookups (labs)")
    control_bogus: str = _key("", "NAME[/TYPE] that must fail validation, asked once per "
                              "resolver to find non-validating ones ('' = dnssec-failed.org/A "
                              "for the built-in resolvers, none for others; 'off' = none)",
                              check_control_text)
    control_secure: str = _key("", "NAME[/TYPE] that must validate (AD=1), asked once per "
                               "resolver ('' = isc.org/SOA for the built-in resolvers, none "
                               "for others; 'off' = none)", check_control_text)
    clock_skew: float = _key(3600.0, "seconds of clock-skew allowance when judging signature "
                             "times", lambda v: None if 0 <= v <= 86400 and math.isfinite(v)
                             else "a number of seconds from 0 to 86400")
    # incidents
    open_min_resolvers: int = _key(2, "open an incident when this many resolvers answer bogus "
                                   "for a zone in one round", _at_least_one)
    resolve_rounds: int = _key(3, "resolve after this many rounds with no bogus resolver",
                               _at_least_one)
    # signer-side key audit (issue 9), every round
    audit: bool = _key(True, "audit the keys every zone's name servers and signers serve, each "
                       "round (dnssec_finding; unsafe-rollover and signer-key-mismatch page)")
    audit_margin: float = _key(300.0, "seconds of propagation margin added to a TTL before a new "
                               "key may be used", lambda v: None if 0 <= v <= 604800
                               and math.isfinite(v) else "a number of seconds from 0 to 604800")
    audit_inconsistent_window: float = _key(600.0, "seconds name servers may disagree before "
                                            "it is a finding", lambda v: None if 0 <= v <= 2592000
                                            and math.isfinite(v) else
                                            "a number of seconds from 0 to 2592000")
    audit_expiry_warning: str = _key("20%", "signature expiry warning margin: N% of the "
                                     "validity period left, or a time such as 5d, 12h",
                                     lambda v: _expiry_margin(v))
    audit_expiry_critical: str = _key("10%", "signature expiry critical margin (as "
                                      "audit_expiry_warning)", lambda v: _expiry_margin(v))
    # time series
    influx_url: str = _key("", "InfluxDB base URL; empty = embedded line files in state_dir",
                           _url)
    influx_api: str = _key("v1", "'v1' (/write, InfluxDB 1.x and 3.x) or 'v2' (/api/v2/write)",
                           _one_of("v1", "v2"))
    influx_db: str = _key("dnssec", "database (v1)")
    influx_bucket: str = _key("dnssec", "bucket (v2)")
    influx_org: str = _key("", "organisation (v2)")
    influx_username: str = _key("", "user name (v1 with authentication; the token is the "
                                "password)")
    influx_token_env: str = _key("DNSSEC_PROBE_INFLUX_TOKEN", "environment variable holding the "
                                 "InfluxDB token", secret_source=True)
    influx_token_file: str = _key("", "file holding the InfluxDB token", secret_source=True)
    spool_max_mb: float = _key(256.0, "on-disk spool bound; past it the oldest data is dropped",
                               _positive)
    lines_retention_hours: int = _key(168, "hours of embedded line files kept", _at_least_one)
    # alerts
    alertmanager_url: str = _key("", "Alertmanager base URL (API v2)", _url)
    webhook_url: str = _key("", "generic JSON webhook URL", _url)
    pagerduty_url: str = _key(PAGERDUTY_EVENTS_URL, "PagerDuty Events API v2 endpoint", _url)
    pagerduty_key_env: str = _key("DNSSEC_PROBE_PAGERDUTY_KEY", "environment variable holding "
                                  "the PagerDuty routing key", secret_source=True)
    pagerduty_key_file: str = _key("", "file holding the PagerDuty routing key",
                                   secret_source=True)
    # self-monitoring and logs
    metrics_listen: str = _key("", "HOST:PORT for /metrics and /healthz (off when empty)",
                               _listen)
    log_json: bool = _key(False, "log JSON lines instead of readable lines")

    @property
    def effective_vantage(self) -> str:
        return self.vantage or socket.gethostname()

    @property
    def effective_state_dir(self) -> Path:
        return Path(self.state_dir or default_state_dir()).expanduser()

    @property
    def effective_jitter(self) -> float:
        return min(self.jitter, self.interval / 10)

    def influx_token(self) -> Secret | None:
        return _secret(self.influx_token_file, self.influx_token_env, "influx_token_file")

    def pagerduty_key(self) -> Secret | None:
        return _secret(self.pagerduty_key_file, self.pagerduty_key_env, "pagerduty_key_file")


class Secret:
    """A token that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _secret(path: str, env: str, key: str) -> Secret | None:
    if path:
        try:
            value = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise ConfigError(f"{key}: cannot read {path} ({why})") from None
        if not value:
            raise ConfigError(f"{key}: {path} is empty")
        return Secret(value)
    value = os.environ.get(env, "").strip() if env else ""
    return Secret(value) if value else None


FIELDS = {f.name: f for f in dataclasses.fields(DaemonConfig)}
_TYPES = typing.get_type_hints(DaemonConfig)


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check one value against its field's type and rule; `where` names its origin."""
    want = _TYPES[key]

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: expected {expected}, got {_shown(value)!r}")

    if want is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
    elif want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif want is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            raise bad("a finite number") from None
        if not math.isfinite(value):  # TOML allows inf and nan
            raise bad("a finite number")
    elif want is str:
        if not isinstance(value, str):
            raise bad("a string")
    else:  # tuple[str, ...]: a list of strings (a single string is a one-item list)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        value = tuple(value)
    check = FIELDS[key].metadata["check"]
    if check is not None and (expected := check(value)) is not None:
        raise bad(expected)
    return value


def _shown(value: Any) -> Any:
    """A value for an error message: a password in a URL is never echoed."""
    if isinstance(value, str) and "@" in value and "://" in value:
        parts = urllib.parse.urlsplit(value)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return value


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into checked key/values (unknown keys rejected)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file ({exc.strerror})", path=str(p)) from None
    try:
        data = tomllib.loads(decode_utf8(raw, str(p), "config file"))
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line N, column M)": keep it, it is the file:line the user needs.
        raise ConfigError(f"not valid TOML: {exc}", path=str(p)) from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown key {key!r} (see dnssec-probe run --help for the keys)",
                              path=str(p))
        out[key] = _coerce(key, value, str(p))
    return out


def build(file_values: Mapping[str, Any], flag_values: Mapping[str, Any]) -> DaemonConfig:
    """Merge file values and flags (flags win; None means a flag was not given)."""
    merged: dict[str, Any] = dict(file_values)
    for key, value in flag_values.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown setting {key!r}")
        if value is None or (isinstance(value, tuple) and not value):
            continue
        merged[key] = _coerce(key, value, flag_name(key))
    cfg = DaemonConfig(**merged)
    # Secrets are read now so a missing token file fails at start, not at the first write.
    cfg.influx_token()
    cfg.pagerduty_key()
    if cfg.influx_url and cfg.influx_api == "v2" and not cfg.influx_org:
        raise ConfigError("influx_api = 'v2' needs influx_org")
    return cfg


def describe(cfg: DaemonConfig) -> dict[str, Any]:
    """Every setting as it is in force (secrets only as set / not set), for --check-config."""
    out = {k: (list(v) if isinstance(v, tuple) else v)
           for k, v in dataclasses.asdict(cfg).items()}
    out["vantage"] = cfg.effective_vantage
    out["state_dir"] = str(cfg.effective_state_dir)
    out["influx_token"] = "set" if cfg.influx_token() else "not set"
    out["pagerduty_key"] = "set" if cfg.pagerduty_key() else "not set"
    return out
