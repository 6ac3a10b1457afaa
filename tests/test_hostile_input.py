"""Hostile text and bad input through the real CLI: no markup, no raw control bytes, file:line, exit 3."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from fakedns import FakeDNS, Request, make_reply, rrset

from probe.cli import main
from probe.incidents import Incident
from probe.report import visible
from probe.resolvers import parse_resolver
from probe.state import StateStore

ZONE = "2.0.192.in-addr.arpa."
QNAME = "1.2.0.192.in-addr.arpa."
FAST = ["--qps", "0", "--timeout", "0.5", "--retries", "0"]
# Owner names an attacker's server can send: rich markup (a bad closing tag raised MarkupError,
# a link tag became a hyperlink). Inside the zone, so they are plausible denial records.
MARKUP_OWNERS = (f"[/x].{ZONE}", f"[link=https://evil]x[/link].{ZONE}")
EDE_TEXT = "[/x] \x1b[31mred\x1b[0m [link=https://evil]x[/link]"
DNSKEY = "257 3 13 " + base64.b64encode(bytes(range(64))).decode()


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No zones.txt or env from the checkout; a table wide enough that no cell is folded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DNSSEC_PROBE_ZONES", raising=False)
    monkeypatch.setenv("COLUMNS", "4000")
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    code = info.value.code
    assert isinstance(code, int)
    return code


def table_rows(out: str) -> list[list[str]]:
    """The data rows of the table (the header uses a heavy bar, U+2503)."""
    return [[c.strip() for c in line.split("\u2502")[1:-1]]
            for line in out.splitlines() if "\u2502" in line]


# -- a resolver and an authoritative server whose names carry markup ----------------------

def hostile(req: Request) -> bytes:
    """Resolver (RD=1): SERVFAIL + EDE 6 with hostile text. Authoritative (RD=0): an unsigned
    DNSKEY set, and NXDOMAIN whose NSEC owners are markup."""
    q = req.message
    if q.flags & dns.flags.RD:
        return make_reply(q, rcode=dns.rcode.SERVFAIL, ad=False, ede=[(6, EDE_TEXT)])
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    question = q.question[0]
    if question.rdtype == dns.rdatatype.DNSKEY:
        r.answer.append(rrset(ZONE, "DNSKEY", DNSKEY))
    else:
        r.set_rcode(dns.rcode.NXDOMAIN)
        for owner in MARKUP_OWNERS:
            r.authority.append(rrset(owner, "NSEC", f"zz.{ZONE} A RRSIG NSEC"))
    r.use_edns(0, 0, 1232)
    return r.to_wire()


def hostile_zones(tmp_path: Path, port: int, label: str = "") -> Path:
    p = tmp_path / "zones.txt"
    extra = f" label={label}" if label else ""
    p.write_text(f"{ZONE} 1/PTR ns=127.0.0.1:{port}{extra}\n", encoding="utf-8")
    return p


def test_markup_in_reply_names_is_printed_literally_and_exit_is_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeDNS(hostile) as srv:
        code = run("check", "--zones", str(hostile_zones(tmp_path, srv.port)),
                   "--resolver", f"fake=127.0.0.1:{srv.port}", "--all", *FAST)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "MarkupError" not in captured.err
    assert code == 2, captured.err  # bogus is critical; a crash exited 1
    rows = table_rows(captured.out)
    assert [row[:4] for row in rows] == [
        [ZONE.rstrip("."), "fake", f"127.0.0.1:{srv.port}", "bogus"]]
    diagnosis = rows[0][-1]
    assert diagnosis.startswith("bogus at source:")
    for owner in MARKUP_OWNERS:
        assert owner in diagnosis  # e.g. "[/x].2.0.192.in-addr.arpa. NSEC has no RRSIG"
    assert "\x1b" not in captured.out


def test_markup_and_control_characters_from_input_files_are_shown_not_obeyed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = "[link=https://evil]x[/link]\x1b[2J\x07[/x]"
    resolvers = tmp_path / "resolvers.txt"
    with FakeDNS(hostile) as srv:
        resolvers.write_text(f"[/r]\x1b]8;;x\x07 127.0.0.1:{srv.port}\n", encoding="utf-8")
        code = run("check", "--zones", str(hostile_zones(tmp_path, srv.port, label)),
                   "--resolvers", str(resolvers), "--no-diagnose", "--all", *FAST)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    rows = table_rows(captured.out)
    assert rows[0][0] == f"{ZONE.rstrip('.')} ([link=https://evil]x[/link]\\x1b[2J\\x07[/x])"
    assert rows[0][1] == "[/r]\\x1b]8;;x\\x07"
    assert "\x1b" not in captured.out and "\x07" not in captured.out
    assert "1 bogus" in captured.out  # the summary line survived the hostile names too


def test_json_output_keeps_hostile_text_exact(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = "[/x]\x1b[31m"
    with FakeDNS(hostile) as srv:
        code = run("check", "--zones", str(hostile_zones(tmp_path, srv.port, label)),
                   "--resolver", f"fake=127.0.0.1:{srv.port}", "--json", *FAST)
    assert code == 2
    result, = json.loads(capsys.readouterr().out)["results"]
    assert result["label"] == label
    assert result["ede"] == [{"code": 6, "text": EDE_TEXT}]
    for owner in MARKUP_OWNERS:
        assert owner in result["diagnosis"]["detail"]


def test_incidents_table_shows_hostile_resolver_names_literally(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ("[/r]", "[link=https://evil]x[/link]\x1b[2J")
    store = StateStore(tmp_path / "state")
    store.commit_round(1, [Incident("inc-1", ZONE, 1.0, 1.0, "stale-dnskey-cache",
                                    ("stale-dnskey-cache",), names, (1,), (2,), None)],
                       [], now=1.0)
    store.close()
    code = run("incidents", "--state-dir", str(tmp_path / "state"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[/r], [link=https://evil]x[/link]\\x1b[2J" in captured.out
    assert "\x1b" not in captured.out


@pytest.mark.parametrize(("text", "shown"), [
    ("plain [/x] ä", "plain [/x] ä"),
    ("\x1b[31m", "\\x1b[31m"),
    ("a\u2028b\u202ec\x85d\te", "a\\u2028b\\u202ec\\x85d\\x09e"),
    ("\U000e0001", "\\U000e0001"),
])
def test_visible_escapes_only_unprintable_characters(text: str, shown: str) -> None:
    assert visible(text) == shown


# -- bad zones files -------------------------------------------------------------------------

def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI, expect exit 3 with a message and no traceback; return stderr."""
    code = run(*args)
    captured = capsys.readouterr()
    assert code == 3, captured
    assert captured.out == ""
    assert "Traceback" not in captured.err
    return captured.err


def test_type_out_of_range_in_zones_file_names_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"# probes\n{ZONE} 1/TYPE99999\n".encode())
    err = usage_error(capsys, "check", "--zones", str(z), "--resolver", "x=127.0.0.1:9", *FAST)
    assert f"{z}:2: " in err
    assert "unknown record type 'TYPE99999'" in err and "TYPEnnn" in err


@pytest.mark.parametrize("rdtype", ["ANY", "AXFR", "IXFR", "OPT", "RRSIG", "TSIG", "TKEY", "MAILA",
                                    "MAILB", "TYPE0", "TYPE255", "TYPE128", "TYPE65535", "any"])
def test_meta_types_are_not_probe_types(rdtype: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"\n\n{ZONE} 1/PTR 2/{rdtype}\n".encode())
    err = usage_error(capsys, "check", "--zones", str(z), "--resolver", "x=127.0.0.1:9", *FAST)
    assert f"{z}:3: '2/{rdtype}': " in err
    assert "meta or question-only type" in err or "unknown record type" in err


def test_generic_data_type_is_still_a_probe_type(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"{ZONE} 1/TYPE65280 2/aaaa\n".encode())
    code = run("run", "--zones", str(z), "--resolver", "x=127.0.0.1:9", "--check-config")
    assert code == 0
    assert json.loads(capsys.readouterr().out)["zones_loaded"] == 1


@pytest.mark.parametrize("sep", ["\x0c", "\x0b", "\u2028", "\u2029", "\x1c", "\x1d", "\x1e",
                                 "\x85", "\r"])
def test_separators_do_not_shift_zones_line_numbers(sep: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    text = (f"# header{sep}more header\r\n1.in-addr.arpa{sep}1/PTR\r\n{sep}\n"
            f"2.in-addr.arpa colour=blue\n")
    z = write(tmp_path, "z.txt", text.encode())
    err = usage_error(capsys, "check", "--zones", str(z), "--resolver", "x=127.0.0.1:9", *FAST)
    assert f"{z}:4: unknown option 'colour'" in err


def test_invalid_utf8_zones_file_names_the_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", b"1.in-addr.arpa\n2.in-addr.arpa label=caf\xe9\n")
    err = usage_error(capsys, "check", "--zones", str(z), "--resolver", "x=127.0.0.1:9", *FAST)
    assert f"{z}:2: zones file is not UTF-8 text: byte 0xe9 at column 25" in err


# -- bad resolvers -----------------------------------------------------------------------------

def test_invalid_utf8_resolvers_file_names_the_line(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"{ZONE}\n".encode())
    r = write(tmp_path, "r.txt", b"# lab\nok 127.0.0.1:9\n\nbad\xff\xfe 127.0.0.2\n")
    err = usage_error(capsys, "check", "--zones", str(z), "--resolvers", str(r), *FAST)
    assert f"{r}:4: resolver file is not UTF-8 text: byte 0xff at column 4" in err


@pytest.mark.parametrize("spec", ["x=::1:5300", "x=2001:db8::1:53"])
def test_ipv6_with_port_needs_brackets(spec: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"{ZONE}\n".encode())
    with FakeDNS(hostile) as srv:
        err = usage_error(capsys, "check", "--zones", str(z), "--resolver", spec, *FAST)
    assert srv.requests == []
    host = spec.partition("=")[2]
    addr, _, port = host.rpartition(":")
    assert f"--resolver: resolver 'x': '{host}' is ambiguous: write [{addr}]:{port}" in err


def test_ns_ipv6_with_port_needs_brackets_in_zones_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"# x\n{ZONE} ns=127.0.0.1,::1:5300\n".encode())
    err = usage_error(capsys, "check", "--zones", str(z), "--resolver", "x=127.0.0.1:9", *FAST)
    assert f"{z}:2: ns='::1:5300': '::1:5300' is ambiguous" in err


def test_bracketed_and_bare_ipv6_resolvers(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert (parse_resolver("x=::1").host, parse_resolver("x=::1").port) == ("::1", 53)
    z = write(tmp_path, "z.txt", f"{ZONE}\n".encode())
    with FakeDNS(hostile, host="::1") as srv:
        code = run("check", "--zones", str(z), "--resolver", f"v6=[::1]:{srv.port}", "--json",
                   "--no-diagnose", *FAST)
    assert code == 2
    result, = json.loads(capsys.readouterr().out)["results"]
    assert result["address"] == f"[::1]:{srv.port}" and result["verdict"] == "bogus"
    assert len(srv.requests) == 1


# -- bad numbers and flags -----------------------------------------------------------------

@pytest.mark.parametrize(("flag", "value"), [
    ("--qps", "inf"), ("--qps", "nan"), ("--qps", "1e400"), ("--qps", "-1"), ("--qps", "-inf"),
    ("--timeout", "inf"), ("--timeout", "nan"), ("--timeout", "1e400"), ("--timeout", "-1"),
    ("--timeout", "0"),
])
def test_non_finite_or_negative_check_flags_exit_3(flag: str, value: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"{ZONE}\n".encode())
    with FakeDNS(hostile) as srv:
        args = ["check", "--zones", str(z), "--resolver", f"x=127.0.0.1:{srv.port}", *FAST]
        err = usage_error(capsys, *args, flag, value)
    assert srv.requests == []
    assert f"Invalid value for '{flag}': '{value}' is not a" in err
    assert "internal error" not in err


@pytest.mark.parametrize(("flag", "value"), [
    ("--interval", "inf"), ("--qps", "nan"), ("--timeout", "1e400"), ("--jitter", "-1"),
    ("--spool-max-mb", "inf"), ("--qps", "-inf"),
])
def test_non_finite_daemon_flags_exit_3(flag: str, value: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "run", "--resolver", "x=127.0.0.1:9", "--check-config", flag, value)
    assert flag in err and value in err


@pytest.mark.parametrize("line", ["qps = inf", "interval = nan", "timeout = -inf",
                                  "jitter = 1e400", "spool_max_mb = +inf"])
def test_non_finite_daemon_config_exit_3(line: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, "c.toml", f"resolver = ['x=127.0.0.1:9']\n{line}\n".encode())
    err = usage_error(capsys, "run", "--config", str(cfg), "--check-config")
    key = line.partition(" ")[0]
    assert f"{cfg}: {key}: expected a finite number" in err


def test_invalid_utf8_daemon_config_names_the_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, "c.toml", b"qps = 1\n\n# caf\xc3\n")
    err = usage_error(capsys, "run", "--config", str(cfg), "--check-config")
    assert f"{cfg}:3: config file is not UTF-8 text: byte 0xc3 at column 6" in err


def test_raw_without_json_is_a_usage_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    z = write(tmp_path, "z.txt", f"{ZONE}\n".encode())
    with FakeDNS(hostile) as srv:
        args = ["check", "--zones", str(z), "--resolver", f"x=127.0.0.1:{srv.port}",
                "--no-diagnose", *FAST]
        err = usage_error(capsys, *args, "--raw")
        assert srv.requests == []
        assert "--raw only applies to --json output" in err
        assert run(*args, "--raw", "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert "observation" in doc["results"][0]  # --raw with --json still adds the raw data


def test_bad_input_via_python_m_probe_has_no_traceback(tmp_path: Path) -> None:
    z = write(tmp_path, "z.txt", f"{ZONE} 1/TYPE99999\n".encode())
    for args in (["--zones", str(z)], ["--zones", str(z), "--qps", "1e400"]):
        proc = subprocess.run(
            [sys.executable, "-m", "probe", "check", *args, "--resolver", "x=127.0.0.1:9"],
            capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 3
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert "TYPE99999" in proc.stderr or "'1e400' is not a finite number" in proc.stderr
