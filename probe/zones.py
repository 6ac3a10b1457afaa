"""Zones to probe: parse zones.txt into frozen ZoneSpec / ProbeName values, with file:line errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdatatype

from probe.codes import Verdict
from probe.errors import ConfigError
from probe.resolvers import parse_hostport, read_lines


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
    # Signers outside the NS set, for the key audit: the active signer / hidden primary and
    # standby signers (issue 9). Never asked by `check`.
    primary: tuple[tuple[str, int], ...] = ()
    standby: tuple[tuple[str, int], ...] = ()


ZONE_OPTIONS = ("expect", "ns", "label", "primary", "standby")
_EXPECTABLE = (Verdict.SECURE, Verdict.INSECURE)


# Types that are not data one can ask a resolver to validate: meta and question-only types
# (RFC 6895 §3.1: OPT, TKEY, TSIG, IXFR, AXFR, MAILA, MAILB, ANY), RRSIG (asked alone it is not
# a validated answer, RFC 4035 §3.1.8.1) and the reserved values 0 and 65535.
_NOT_PROBE_TYPES = frozenset({
    dns.rdatatype.OPT, dns.rdatatype.TKEY, dns.rdatatype.TSIG, dns.rdatatype.IXFR,
    dns.rdatatype.AXFR, dns.rdatatype.MAILA, dns.rdatatype.MAILB, dns.rdatatype.ANY,
    dns.rdatatype.RRSIG, dns.rdatatype.NONE, 65535,
})


def probe_type(text: str) -> dns.rdatatype.RdataType:
    """A record type to probe: a mnemonic or TYPEnnn (RFC 3597); ValueError says why not."""
    try:
        rdtype = dns.rdatatype.from_text(text)
    except (dns.exception.DNSException, ValueError):
        raise ValueError(f"unknown record type {text!r}; expected a mnemonic such as PTR, SOA "
                         "or AAAA, or TYPEnnn with nnn from 1 to 65534") from None
    if rdtype in _NOT_PROBE_TYPES or dns.rdatatype.is_metatype(rdtype):
        raise ValueError(f"{dns.rdatatype.to_text(rdtype)} is a meta or question-only type, not "
                         "data to probe; expected a data type such as PTR, SOA or AAAA")
    return rdtype


_PLAIN_RELATIVE = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}\Z")
_PLAIN_ABSOLUTE = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+\Z")


def _plain_qname(text: str, zone: str) -> str | None:
    """The absolute lower-case name of a plain LDH `text` inside `zone` (presentation form,
    which is what dnspython gives for such names), without dnspython's per-name cost; None
    for anything else (escapes, '@', names outside the zone, too long): the slow path judges."""
    t = text.lower()
    if t.endswith("."):  # absolute: one pattern tried, not two
        if not (_PLAIN_ABSOLUTE.match(t) and (t == zone or t.endswith("." + zone))):
            return None
        q = t
    elif _PLAIN_RELATIVE.match(t):
        q = f"{t}.{zone}"
    else:
        return None
    return q if len(q) <= 254 else None


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
    except (dns.exception.DNSException, ValueError) as exc:
        raise fail(f"expected a zone name, got {tokens[0]!r} ({exc.__class__.__name__})") from None
    if zone == dns.name.root:
        raise fail("the root zone is not a reverse zone to probe")
    zone_text = zone.to_text().lower()

    probes: list[ProbeName] = []
    types: dict[str, str] = {}  # type text as written -> its mnemonic, checked once per line
    expect = Verdict.SECURE
    servers: dict[str, list[tuple[str, int]]] = {"ns": [], "primary": [], "standby": []}
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
            elif key in servers:
                for item in value.split(","):
                    try:
                        servers[key].append(parse_hostport(item, default_port=53))
                    except ValueError as exc:
                        raise fail(f"{key}={item!r}: {exc}") from None
            else:
                label = value
            continue
        name_text, _, type_text = tok.partition("/")
        type_text = type_text or "PTR"
        qtype = types.get(type_text)
        if qtype is None:
            try:
                qtype = types[type_text] = dns.rdatatype.to_text(probe_type(type_text))
            except ValueError as exc:
                raise fail(f"{tok!r}: {exc}") from None
        qname_text = _plain_qname(name_text, zone_text)
        if qname_text is None:
            try:
                qname = zone if name_text == "@" else dns.name.from_text(name_text, origin=zone)
            except (dns.exception.DNSException, ValueError) as exc:
                raise fail(f"{tok!r}: not a valid name ({exc.__class__.__name__})") from None
            if not qname.is_subdomain(zone):
                raise fail(f"{tok!r}: {qname} is not inside zone {zone_text}")
            qname_text = qname.to_text().lower()
        probes.append(ProbeName(qname_text, qtype))

    if not probes:
        # The apex SOA always exists, so aggressive NSEC use cannot answer it from old denials.
        probes.append(ProbeName(zone_text, "SOA"))
    where = f"{path}:{line}" if path and line else ""
    return ZoneSpec(zone_text, tuple(probes), expect, tuple(servers["ns"]), label, where,
                    tuple(servers["primary"]), tuple(servers["standby"]))


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
    zones = parse_zones(read_lines(p, "zones file"), path=str(p))
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
