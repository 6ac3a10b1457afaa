"""Zones to probe: parse zones.txt into frozen ZoneSpec / ProbeName values, with file:line errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdatatype

from probe.codes import Verdict
from probe.errors import ConfigError
from probe.resolvers import parse_hostport


@dataclass(frozen=True, slots=True)
class ProbeName:
    """One question to ask about a zone: absolute qname (lower case, trailing dot) and type."""

    qname: str
    qtype: str


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A zone to watch, the names to ask in it and what state it is expected to be in."""

    name: str
    probes: tuple[ProbeName, ...]
    expect: Verdict = Verdict.SECURE
    ns: tuple[tuple[str, int], ...] = ()
    label: str = ""
    source: str = ""


ZONE_OPTIONS = ("expect", "ns", "label")
_EXPECTABLE = (Verdict.SECURE, Verdict.INSECURE)


def _absolute(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def zone_from_tokens(
    tokens: list[str], *, path: str | None = None, line: int | None = None
) -> ZoneSpec:
    """Build a ZoneSpec from one line's tokens: ZONE [NAME[/TYPE] ...] [key=value ...]."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(msg, path=path, line=line)

    if not tokens:
        raise fail("expected a zone name")
    try:
        zone = _absolute(tokens[0])
    except dns.exception.DNSException as exc:
        raise fail(f"expected a zone name, got {tokens[0]!r} ({exc.__class__.__name__})") from None
    if zone == dns.name.root:
        raise fail("the root zone is not a reverse zone to probe")
    zone_text = zone.to_text().lower()

    probes: list[ProbeName] = []
    expect = Verdict.SECURE
    ns: list[tuple[str, int]] = []
    label = ""
    for tok in tokens[1:]:
        if "=" in tok:
            key, _, value = tok.partition("=")
            if key not in ZONE_OPTIONS:
                raise fail(f"unknown option {key!r}; expected one of {', '.join(ZONE_OPTIONS)}")
            if not value:
                raise fail(f"option {key!r} needs a value")
            if key == "expect":
                if value not in _EXPECTABLE:
                    raise fail(f"expect={value!r}: expected 'secure' or 'insecure'")
                expect = Verdict(value)
            elif key == "ns":
                for item in value.split(","):
                    try:
                        ns.append(parse_hostport(item, default_port=53))
                    except ValueError as exc:
                        raise fail(f"ns={item!r}: {exc}") from None
            else:
                label = value
            continue
        name_text, _, type_text = tok.partition("/")
        try:
            rdtype = dns.rdatatype.from_text(type_text or "PTR")
        except dns.exception.DNSException:
            raise fail(f"{tok!r}: unknown record type {type_text!r}") from None
        try:
            qname = zone if name_text == "@" else dns.name.from_text(name_text, origin=zone)
        except dns.exception.DNSException as exc:
            raise fail(f"{tok!r}: not a valid name ({exc.__class__.__name__})") from None
        if not qname.is_subdomain(zone):
            raise fail(f"{tok!r}: {qname} is not inside zone {zone_text}")
        probes.append(ProbeName(qname.to_text().lower(), dns.rdatatype.to_text(rdtype)))

    if not probes:
        # The apex SOA always exists, so aggressive NSEC use cannot answer it from old denials.
        probes.append(ProbeName(zone_text, "SOA"))
    where = f"{path}:{line}" if path and line else ""
    return ZoneSpec(zone_text, tuple(probes), expect, tuple(ns), label, where)


def parse_zones(lines: Iterable[str], *, path: str = "<zones>") -> list[ZoneSpec]:
    """Parse zones.txt content; every problem names path:line."""
    zones: list[ZoneSpec] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        spec = zone_from_tokens(text.split(), path=path, line=lineno)
        if spec.name in seen:
            raise ConfigError(
                f"zone {spec.name} already listed at line {seen[spec.name]}", path=path, line=lineno
            )
        seen[spec.name] = lineno
        zones.append(spec)
    return zones


def load_zones(path: str | Path) -> list[ZoneSpec]:
    """Read and parse a zones file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read zones file ({exc.strerror})", path=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError("zones file is not UTF-8 text", path=str(p)) from None
    zones = parse_zones(text.splitlines(), path=str(p))
    if not zones:
        raise ConfigError("no zones in file", path=str(p))
    return zones


def select_zones(all_zones: list[ZoneSpec], wanted: Iterable[str]) -> list[ZoneSpec]:
    """Zones named on the command line: taken from the file when listed there, else built plain."""
    by_name = {z.name: z for z in all_zones}
    out: list[ZoneSpec] = []
    for w in wanted:
        spec = zone_from_tokens(w.split(), path="command line")
        out.append(by_name.get(spec.name, spec) if len(w.split()) == 1 else spec)
    return out
