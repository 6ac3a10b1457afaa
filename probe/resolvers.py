"""Resolvers to ask: the built-in public validating set, NAME=ADDRESS[:PORT] parsing, resolver files."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ResolverSpec:
    """One validating resolver address to probe."""

    name: str
    host: str
    port: int = 53
    operator: str = ""

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.host).version

    @property
    def address(self) -> str:
        """Printable ADDRESS[:PORT] ([ADDR]:PORT for IPv6)."""
        if self.port == 53:
            return self.host
        return f"[{self.host}]:{self.port}" if self.family == 6 else f"{self.host}:{self.port}"


# Public resolvers that validate DNSSEC. Quad9's 9.9.9.10 is deliberately absent: it does not validate.
DEFAULT_RESOLVERS: tuple[ResolverSpec, ...] = (
    ResolverSpec("google-a", "8.8.8.8", 53, "Google"),
    ResolverSpec("google-b", "8.8.4.4", 53, "Google"),
    ResolverSpec("google-a6", "2001:4860:4860::8888", 53, "Google"),
    ResolverSpec("google-b6", "2001:4860:4860::8844", 53, "Google"),
    ResolverSpec("cloudflare-a", "1.1.1.1", 53, "Cloudflare"),
    ResolverSpec("cloudflare-b", "1.0.0.1", 53, "Cloudflare"),
    ResolverSpec("cloudflare-a6", "2606:4700:4700::1111", 53, "Cloudflare"),
    ResolverSpec("cloudflare-b6", "2606:4700:4700::1001", 53, "Cloudflare"),
    ResolverSpec("quad9-a", "9.9.9.9", 53, "Quad9"),
    ResolverSpec("quad9-b", "149.112.112.112", 53, "Quad9"),
    ResolverSpec("quad9-a6", "2620:fe::fe", 53, "Quad9"),
    ResolverSpec("quad9-b6", "2620:fe::9", 53, "Quad9"),
    ResolverSpec("opendns-a", "208.67.222.222", 53, "OpenDNS"),
    ResolverSpec("opendns-b", "208.67.220.220", 53, "OpenDNS"),
    ResolverSpec("opendns-a6", "2620:0:ccc::2", 53, "OpenDNS"),
    ResolverSpec("opendns-b6", "2620:0:ccd::2", 53, "OpenDNS"),
)


# Control names for the built-in set only (a lab or private resolver may not reach them).
# dnssec-failed.org is kept deliberately bogus by Comcast (its DS matches no DNSKEY) and has
# been the standard "does this resolver validate" test for over a decade; isc.org, the BIND
# maintainers' zone, has been signed since 2009 and is an anchor of DNSSEC deployment tests.
DEFAULT_CONTROL_BOGUS = "dnssec-failed.org/A"
DEFAULT_CONTROL_SECURE = "isc.org/SOA"


def is_builtin(spec: ResolverSpec) -> bool:
    """True for a resolver of the built-in public set (only those get the default controls)."""
    return spec in DEFAULT_RESOLVERS


def parse_hostport(text: str, *, default_port: int = 53) -> tuple[str, int]:
    """Parse ADDRESS, ADDRESS:PORT, IPv6 or [IPv6]:PORT into (canonical address, port)."""
    text = text.strip()
    port = default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("expected [IPv6]:PORT, missing ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected ':PORT' after ']'")
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p)
    else:
        host = text  # IPv4, or bare IPv6 without port
        if _ambiguous_v6(host):
            before, _, after = host.rpartition(":")
            raise ValueError(
                f"{host!r} is ambiguous: write [{before}]:{after} for port {after}, "
                f"or [{host}] for that address on port {default_port}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return str(addr), port


def _ambiguous_v6(text: str) -> bool:
    """An unbracketed IPv6 address that also reads as IPv6:PORT (`::1:5300`): refuse to guess."""
    before, sep, after = text.rpartition(":")
    if not sep or not after.isdecimal() or not before:
        return False
    try:
        ipaddress.IPv6Address(before)
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def parse_resolver(text: str, *, path: str | None = None, line: int | None = None) -> ResolverSpec:
    """Parse NAME=ADDRESS[:PORT] (also 'NAME ADDRESS[:PORT]' in files)."""
    if "=" in text:
        name, _, addr = text.partition("=")
    else:
        parts = text.split()
        if len(parts) != 2:
            raise ConfigError(
                f"expected NAME=ADDRESS[:PORT], got {text!r}", path=path, line=line
            )
        name, addr = parts
    name = name.strip()
    if not name or any(c.isspace() for c in name):
        raise ConfigError(f"expected a resolver name before '=', got {text!r}", path=path, line=line)
    try:
        host, port = parse_hostport(addr)
    except ValueError as exc:
        raise ConfigError(f"resolver {name!r}: {exc}", path=path, line=line) from None
    return ResolverSpec(name, host, port, "")


def parse_resolver_lines(lines: Iterable[str], *, path: str) -> list[ResolverSpec]:
    out: list[ResolverSpec] = []
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if text:
            out.append(parse_resolver(text, path=path, line=lineno))
    return out


def read_lines(path: Path, what: str) -> list[str]:
    """A text input file as lines numbered as editors and `grep -n` do: split on LF only (not
    on form feed, U+2028 or the other separators `splitlines` knows), CR of CRLF dropped.
    Invalid UTF-8 is a ConfigError naming the line of the first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} ({exc.strerror})", path=str(path)) from None
    return split_lines(decode_utf8(data, str(path), what))


def decode_utf8(data: bytes, path: str, what: str) -> str:
    """UTF-8 (a leading BOM dropped); a bad byte is reported with its line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column} "
            "cannot be decoded", path=path, line=line) from None
    return text.removeprefix("\ufeff")


def split_lines(text: str) -> list[str]:
    return [ln.removesuffix("\r") for ln in text.split("\n")]


def load_resolvers(path: str | Path) -> list[ResolverSpec]:
    p = Path(path)
    out = parse_resolver_lines(read_lines(p, "resolver file"), path=str(p))
    if not out:
        raise ConfigError("no resolvers in file", path=str(p))
    return out


def merge_resolvers(groups: Iterable[Iterable[ResolverSpec]]) -> list[ResolverSpec]:
    """Concatenate resolver lists; a name given twice is an error (results are keyed by name)."""
    seen: dict[str, ResolverSpec] = {}
    for group in groups:
        for r in group:
            if r.name in seen and seen[r.name] != r:
                raise ConfigError(f"resolver name {r.name!r} is given twice with different addresses")
            seen[r.name] = r
    return list(seen.values())
