"""zones.txt and resolver inputs: the shipped files parse, and bad input names file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.errors import ConfigError
from probe.resolvers import DEFAULT_RESOLVERS, parse_hostport, parse_resolver, parse_resolver_lines
from probe.zones import ProbeName, load_zones, parse_zones, select_zones

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_zones_file() -> None:
    zones = load_zones(ROOT / "zones.txt")
    names = [z.name for z in zones]
    assert len(names) == len(set(names)) == 64
    # spot checks from the allocation facts, including the nibble splits of non-nibble blocks
    for want in ("1.in-addr.arpa.", "223.in-addr.arpa.", "43.in-addr.arpa.", "171.in-addr.arpa.",
                 "2.0.1.0.0.2.ip6.arpa.", "3.0.1.0.0.2.ip6.arpa.", "8.1.0.0.2.ip6.arpa.",
                 "9.1.0.0.2.ip6.arpa.", "0.4.2.ip6.arpa."):
        assert want in names
    assert "9.in-addr.arpa." not in names  # not APNIC's
    assert all(z.probes == (ProbeName(z.name, "SOA"),) for z in zones)


def test_line_format() -> None:
    zones = parse_zones([
        "# comment",
        "",
        "14.in-addr.arpa  1.1  2.2/SOA  host.14.in-addr.arpa./AAAA  @/DNSKEY  # trailing",
        "1.in-addr.arpa expect=insecure ns=127.0.0.1,[::1]:5353 label=first",
    ], path="z.txt")
    a, b = zones
    assert a.probes == (
        ProbeName("1.1.14.in-addr.arpa.", "PTR"),
        ProbeName("2.2.14.in-addr.arpa.", "SOA"),
        ProbeName("host.14.in-addr.arpa.", "AAAA"),
        ProbeName("14.in-addr.arpa.", "DNSKEY"),
    )
    assert a.source == "z.txt:3"
    assert b.expect.value == "insecure"
    assert b.ns == (("127.0.0.1", 53), ("::1", 5353))
    assert b.label == "first"
    assert b.probes == (ProbeName("1.in-addr.arpa.", "SOA"),)


@pytest.mark.parametrize(("line", "message"), [
    ("1.in-addr.arpa color=red", "unknown option 'color'"),
    ("1.in-addr.arpa 1.1/NOPE", "unknown record type 'NOPE'"),
    ("1.in-addr.arpa 1.2.in-addr.arpa.", "is not inside zone 1.in-addr.arpa."),
    ("1.in-addr.arpa expect=maybe", "expected 'secure' or 'insecure'"),
    ("1.in-addr.arpa ns=ns1.example", "is not an IP address"),
    ("1.in-addr.arpa ns=", "needs a value"),
    ("bad..name", "expected a zone name"),
])
def test_bad_lines_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_zones(["# header", "", line], path="zones.txt")
    assert str(info.value).startswith("zones.txt:3: ")
    assert message in str(info.value)


def test_duplicate_zone() -> None:
    with pytest.raises(ConfigError, match=r"z:2: zone 1.in-addr.arpa. already listed at line 1"):
        parse_zones(["1.in-addr.arpa", "1.IN-ADDR.ARPA."], path="z")


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read zones file"):
        load_zones(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no zones in file"):
        load_zones(empty)


def test_select_zones_keeps_file_options() -> None:
    listed = parse_zones(["1.in-addr.arpa 1.1 expect=insecure"], path="z")
    got = select_zones(listed, ["1.in-addr.arpa.", "27.in-addr.arpa"])
    assert got[0] is listed[0]
    assert got[1].name == "27.in-addr.arpa." and got[1].probes[0].qtype == "SOA"


def test_default_resolvers_validate_only() -> None:
    hosts = {r.host for r in DEFAULT_RESOLVERS}
    assert "9.9.9.10" not in hosts  # Quad9's unfiltered service does not validate
    assert {"8.8.8.8", "1.1.1.1", "9.9.9.9", "208.67.222.222", "2620:fe::fe"} <= hosts
    assert {r.family for r in DEFAULT_RESOLVERS} == {4, 6}
    assert len({r.name for r in DEFAULT_RESOLVERS}) == len(DEFAULT_RESOLVERS) == 16


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[2001:DB8::1]", ("2001:db8::1", 53)),
])
def test_hostport(text: str, want: tuple[str, int]) -> None:
    assert parse_hostport(text) == want


@pytest.mark.parametrize("text", ["x=", "=1.2.3.4", "x=1.2.3.4:0", "x=[::1", "x=host:53",
                                  "x=[::1]53"])
def test_bad_resolver(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_resolver(text)


def test_resolver_file_lines() -> None:
    rs = parse_resolver_lines(["# lab", "unbound 127.53.1.1", "v6=[::1]:5300  # x"], path="r")
    assert [(r.name, r.host, r.port, r.address) for r in rs] == [
        ("unbound", "127.53.1.1", 53, "127.53.1.1"), ("v6", "::1", 5300, "[::1]:5300")]
    with pytest.raises(ConfigError, match=r"^r:2: "):
        parse_resolver_lines(["ok 127.0.0.1", "one two three"], path="r")


@pytest.mark.parametrize("text", ["::1:5300", "2001:db8::1:53", "fe80::1:8053"])
def test_unbracketed_ipv6_with_port_is_ambiguous(text: str) -> None:
    with pytest.raises(ValueError, match=r"is ambiguous: write \["):
        parse_hostport(text)
    addr, _, port = text.rpartition(":")
    assert parse_hostport(f"[{addr}]:{port}") == (addr, int(port))


@pytest.mark.parametrize(("text", "want"), [
    ("2620:fe::fe", ("2620:fe::fe", 53)),  # last group is hex, not a port
    ("2620:fe::9", ("2620:fe::9", 53)),  # "2620:fe:" is no address: nothing to confuse
    ("2001:4860:4860::8888", ("2001:4860:4860::8888", 53)),
    ("[::1:5300]", ("::1:5300", 53)),
])
def test_bare_ipv6_without_port_still_parses(text: str, want: tuple[str, int]) -> None:
    assert parse_hostport(text) == want


@pytest.mark.parametrize("rdtype", ["ANY", "AXFR", "OPT", "RRSIG", "TYPE0", "TYPE99999", "TYPE-1"])
def test_not_a_probe_type(rdtype: str) -> None:
    with pytest.raises(ConfigError, match=rf"^z:1: '1/{rdtype}': "):
        parse_zones([f"1.in-addr.arpa 1/{rdtype}"], path="z")


def test_files_split_on_newline_only(tmp_path: Path) -> None:
    p = tmp_path / "z.txt"
    p.write_bytes("\ufeff1.in-addr.arpa\r\n\x0c\u2028\n2.in-addr.arpa\x85label=a\u2029b\n".encode())
    a, b = load_zones(p)
    assert (a.source, b.source) == (f"{p}:1", f"{p}:3")
    assert a.name == "1.in-addr.arpa." and b.label == "a"


@pytest.mark.parametrize("tokens", [
    ["14.in-addr.arpa", "1.0.0", "2.0.0/PTR", "@/SOA", "3.0.0.14.in-addr.arpa.", "A.B/aaaa",
     "_x.y/TXT", "4.0.0/TYPE65280"],
    ["101.in-addr.arpa.", *(f"{n}.{m}.0" for m in range(3) for n in range(5))],
    ["3.0.1.0.0.2.ip6.arpa", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"],
    ["14.in-addr.arpa", "a\\.b", "\\065.x", "Upper.Case.14.in-addr.arpa."],
])
def test_plain_names_parse_as_dnspython_would(tokens: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path for plain names gives exactly what the dnspython path gives."""
    import probe.zones

    fast = probe.zones.zone_from_tokens(tokens)
    monkeypatch.setattr(probe.zones, "_plain_qname", lambda text, zone: None)
    assert probe.zones.zone_from_tokens(tokens) == fast


@pytest.mark.parametrize("token", ["9.9.15.in-addr.arpa.", "x" * 64, ("a" * 60 + ".") * 5])
def test_plain_names_are_still_checked(token: str) -> None:
    from probe.zones import zone_from_tokens

    with pytest.raises(ConfigError):
        zone_from_tokens(["14.in-addr.arpa", token], path="z", line=1)
