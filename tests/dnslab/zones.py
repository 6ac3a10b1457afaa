"""Zone layout, DNSSEC keys and zone signing for the lab hierarchy."""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.reversename

ALGORITHM = "ECDSAP256SHA256"

# Loopback addresses of the authoritative levels (one NSD instance each).
ROOT_ADDR = "127.53.0.1"
ARPA_ADDR = "127.53.0.2"
REVERSE_ADDR = "127.53.0.3"
CHILD_ADDR = "127.53.0.4"
# ns2 of the zones served by two authoritative servers (partial cut-over scenario)
SECOND_CHILD_ADDR = "127.53.0.5"
# A standby signer: serves its own signed copy of a zone but is in no NS set and has no glue.
STANDBY_ADDR = "127.53.0.6"
AUTH_ADDRS = (ROOT_ADDR, ARPA_ADDR, REVERSE_ADDR, CHILD_ADDR, SECOND_CHILD_ADDR, STANDBY_ADDR)

ROOT_NS = "a.root-servers.lab."
INFRA_TTL = 3600
DS_TTL = 60


class SigningError(RuntimeError):
    """A key tool or dnssec-signzone failed."""


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """Static description of one APNIC-like child zone."""

    name: str
    dnskey_ttl: int
    record_ttl: int
    addresses: tuple[str, ...]  # addresses whose reverse names get PTRs
    standby: bool = False  # generate a never-published standby ZSK
    expired: bool = False  # sign with signatures that already expired
    ds_mismatch: bool = False  # parent DS points at a key never published
    ds_ttl: int = DS_TTL  # TTL of the DS RRset in the parent
    standby_ksk: bool = False  # generate a second KSK (KSK swap without DS pre-publication)
    second_server: bool = False  # also served by ns2 at SECOND_CHILD_ADDR
    cnames_to: str | None = None  # names are RFC 2317-style CNAMEs into this zone
    standby_signer: bool = False  # also served, outside the NS set, by the standby at STANDBY_ADDR


def _v4(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(
        f"{prefix}.{a}.{b}.{c}"
        for a, b, c in [(0, 0, 1), (0, 0, 2), (1, 2, 3), (200, 0, 53), (255, 255, 254)][:n]
    )


CHILDREN: tuple[ChildSpec, ...] = (
    ChildSpec("1.in-addr.arpa.", 30, 2, _v4("1", 5)),
    ChildSpec(
        "3.0.1.0.0.2.ip6.arpa.",
        30,
        2,
        ("2001:300::1", "2001:300::2", "2001:300::53", "2001:300::beef", "2001:3ff:1:2::1"),
    ),
    ChildSpec("14.in-addr.arpa.", 24, 2, _v4("14", 5), standby=True),
    ChildSpec("27.in-addr.arpa.", 8, 2, _v4("27", 5), standby=True),
    ChildSpec("36.in-addr.arpa.", 30, 2, _v4("36", 5), expired=True),
    ChildSpec("39.in-addr.arpa.", 30, 2, _v4("39", 5), ds_mismatch=True),
    # The daemon's end-to-end test: its own bad cut-over and correct rollover, so it does not
    # depend on what the other scenarios left in the resolvers' caches.
    ChildSpec("49.in-addr.arpa.", 20, 2, _v4("49", 5), standby=True),
    ChildSpec("58.in-addr.arpa.", 6, 2, _v4("58", 5), standby=True),
    # Issue 8 scenarios, each with its own zone so earlier scenarios stay untouched:
    # KSK and parent DS swapped at once; the DS TTL outlives the DNSKEY TTL.
    ChildSpec("61.in-addr.arpa.", 4, 2, _v4("61", 2), ds_ttl=32, standby_ksk=True),
    # Two authoritative servers; `Lab.partial_cutover` re-signs only ns2 with the standby ZSK.
    ChildSpec("62.in-addr.arpa.", 10, 2, _v4("62", 2), standby=True, second_server=True),
    # 63's names are CNAMEs into 64 (like RFC 2317 classless delegation); 64 gets the bad cut-over.
    ChildSpec("63.in-addr.arpa.", 30, 2, _v4("63", 2), cnames_to="64.in-addr.arpa."),
    ChildSpec("64.in-addr.arpa.", 10, 2, _v4("64", 2), standby=True),
    # Issue 9 (signer-side key audit), again one zone per scenario:
    # the bad cut-over (`Lab.cutover`) seen from the signer side;
    ChildSpec("106.in-addr.arpa.", 12, 2, _v4("106", 2), standby=True),
    # the correct rollover: `prepublish`, `roll`, `retire`;
    ChildSpec("110.in-addr.arpa.", 6, 2, _v4("110", 2), standby=True),
    # a standby signer holding another ZSK (`sync_standby` / `desync_standby`);
    ChildSpec("111.in-addr.arpa.", 10, 2, _v4("111", 2), standby=True, standby_signer=True),
    # KSK and parent DS swapped at once (`Lab.ksk_swap`), as 61.
    ChildSpec("112.in-addr.arpa.", 4, 2, _v4("112", 2), ds_ttl=20, standby_ksk=True),
    ChildSpec(
        "101.in-addr.arpa.", 86400, 86400, tuple(f"101.0.{m}.{n}" for m in range(20) for n in range(250))
    ),
)


@dataclasses.dataclass
class Key:
    """One key pair created by dnssec-keygen."""

    base: str  # file base name without extension, e.g. K1.in-addr.arpa.+013+12345
    tag: int
    ksk: bool
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY

    def files(self, keydir: pathlib.Path) -> list[pathlib.Path]:
        return [keydir / f"{self.base}.key", keydir / f"{self.base}.private"]


def _run(cmd: Sequence[str], cwd: pathlib.Path) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SigningError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def generate_key(keydir: pathlib.Path, zone: str, *, ksk: bool) -> Key:
    """Create one ECDSA P-256 key for `zone` in keydir."""
    cmd = ["dnssec-keygen", "-q", "-K", str(keydir), "-a", ALGORITHM, "-n", "ZONE"]
    if ksk:
        cmd += ["-f", "KSK"]
    base = _run([*cmd, zone], keydir).strip()
    return load_key(keydir, base)


def load_key(keydir: pathlib.Path, base: str) -> Key:
    """Parse the public half of a key written by dnssec-keygen."""
    line = next(
        ln for ln in (keydir / f"{base}.key").read_text().splitlines() if ln and not ln.startswith(";")
    )
    rdata_text = line.split("DNSKEY", 1)[1].strip()
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, rdata_text)
    assert isinstance(rd, dns.rdtypes.ANY.DNSKEY.DNSKEY)
    return Key(base=base, tag=dns.dnssec.key_id(rd), ksk=bool(rd.flags & 1), dnskey=rd)


def ds_text(zone: str, key: Key) -> str:
    """DS rdata (SHA-256) for `key` as presentation text."""
    return dns.dnssec.make_ds(dns.name.from_text(zone), key.dnskey, "SHA256").to_text()


@dataclasses.dataclass
class ZoneKeys:
    """Keys of one zone; `standby` is generated but not published initially."""

    ksk: Key
    zsk: Key
    standby: Key | None = None
    ghost: Key | None = None  # KSK whose DS goes to the parent but which is never published
    standby_ksk: Key | None = None  # replaces `ksk` (and its DS) in a KSK swap


def make_zone_keys(
    keydir: pathlib.Path, zone: str, *, standby: bool, ghost: bool, standby_ksk: bool = False
) -> ZoneKeys:
    """Generate KSK, ZSK (and optional standby/ghost/standby-KSK keys) with distinct tags."""
    keys: list[Key] = []
    wanted = [True, False] + ([False] if standby else []) + ([True] if ghost else [])
    wanted += [True] if standby_ksk else []
    for is_ksk in wanted:
        key = generate_key(keydir, zone, ksk=is_ksk)
        while key.tag in {k.tag for k in keys}:  # tags must be distinguishable in the scenarios
            key = generate_key(keydir, zone, ksk=is_ksk)
        keys.append(key)
    zk = ZoneKeys(ksk=keys[0], zsk=keys[1])
    rest = keys[2:]
    if standby:
        zk.standby = rest.pop(0)
    if ghost:
        zk.ghost = rest.pop(0)
    if standby_ksk:
        zk.standby_ksk = rest.pop(0)
    return zk


def ptr_records(spec: ChildSpec) -> list[tuple[str, str]]:
    """(absolute owner, PTR target) for every address of a child zone."""
    out = []
    for addr in spec.addresses:
        owner = dns.reversename.from_address(addr).to_text()
        assert owner.endswith("." + spec.name), (owner, spec.name)
        host = addr.replace(".", "-").replace(":", "-")
        out.append((owner, f"host-{host}.customer.example."))
    return out


def classless_owner(addr: str, zone: str) -> str:
    """RFC 2317-style name for an IPv4 address inside `zone`: 'D.0-25.C.B.<zone>'."""
    _, b, c, d = addr.split(".")
    return f"{d}.0-25.{c}.{b}.{zone}"


def cname_records(spec: ChildSpec) -> list[tuple[str, str]]:
    """(absolute owner in spec, absolute CNAME target in spec.cnames_to) for every address."""
    assert spec.cnames_to is not None
    return [(owner, classless_owner(addr, spec.cnames_to))
            for addr, (owner, _) in zip(spec.addresses, ptr_records(spec), strict=True)]


def soa_line(zone: str, ttl: int, serial: int, negative_ttl: int, mname: str) -> str:
    rname = f"hostmaster.{zone if zone != '.' else 'lab.'}"
    return f"{zone} {ttl} IN SOA {mname} {rname} {serial} 3600 600 86400 {negative_ttl}"


def dnskey_lines(zone: str, ttl: int, keys: Sequence[Key]) -> list[str]:
    return [f"{zone} {ttl} IN DNSKEY {k.dnskey.to_text()}" for k in keys]


def sign_zone(
    *,
    zone: str,
    body: str,
    published: Sequence[Key],
    signing: Sequence[Key],
    keydir: pathlib.Path,
    out: pathlib.Path,
    dnskey_ttl: int,
    expired: bool = False,
) -> None:
    """Sign `body` (unsigned zone text without DNSKEYs) into `out`.

    Only the keys in `signing` have their private halves visible to
    dnssec-signzone, so exactly those sign; `published` decides the DNSKEY RRset.
    """
    with tempfile.TemporaryDirectory(prefix="sign-", dir=out.parent) as tmp:
        tmpdir = pathlib.Path(tmp)
        for key in signing:
            for f in key.files(keydir):
                shutil.copy(f, tmpdir / f.name)
        src = tmpdir / "unsigned.zone"
        src.write_text(body + "\n" + "\n".join(dnskey_lines(zone, dnskey_ttl, published)) + "\n")
        cmd = [
            "dnssec-signzone",
            "-q",
            "-x",
            "-K",
            str(tmpdir),
            "-d",
            str(tmpdir),
            "-o",
            zone,
            "-f",
            str(out),
        ]
        if expired:
            now = datetime.datetime.now(datetime.UTC)
            fmt = "%Y%m%d%H%M%S"
            start = (now - datetime.timedelta(days=40)).strftime(fmt)
            end = (now - datetime.timedelta(days=10)).strftime(fmt)
            cmd += ["-P", "-s", start, "-e", end]  # verification would reject expired signatures
        _run([*cmd, str(src)], tmpdir)
