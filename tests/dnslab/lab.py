"""The Lab: a signed loopback DNS hierarchy plus four validating resolvers."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from . import servers, zones
from .servers import Daemon, ServerError
from .zones import CHILDREN, ChildSpec, Key, SigningError, ZoneKeys

RESOLVER_ADDRS = {
    "unbound": "127.53.1.1",
    "bind": "127.53.1.2",
    "kresd": "127.53.1.3",
    "pdns": "127.53.1.4",
}
# One more Unbound with validation off (module-config "iterator"); not one of `Lab.resolvers`.
NONVALIDATING_ADDR = "127.53.1.5"
NONVALIDATING_NAME = "unbound-novalidate"
ALL_RESOLVERS = ("unbound", "bind", "kresd", "pdns")
BASELINE_ZONE = "1.in-addr.arpa."

# States of a child zone: (published keys, signing keys) as roles.
_STATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "initial": (("ksk", "zsk"), ("ksk", "zsk")),
    "cutover": (("ksk", "standby"), ("ksk", "standby")),  # the bad one: new ZSK published and used at once
    "prepublish": (("ksk", "zsk", "standby"), ("ksk", "zsk")),
    "rolled": (("ksk", "zsk", "standby"), ("ksk", "standby")),
    # correct rollover step 3: the old ZSK withdrawn (same keys as "cutover", reached safely)
    "retired": (("ksk", "standby"), ("ksk", "standby")),
    # what the standby signer holds: the same KSK, another ZSK
    "standby": (("ksk", "standby"), ("ksk", "standby")),
    # KSK swapped without DS pre-publication (the parent's DS follows at the same moment)
    "kskswap": (("ksk2", "zsk"), ("ksk2", "zsk")),
}


class LabError(Exception):
    """The lab could not be built, started or changed."""


@dataclasses.dataclass(frozen=True)
class LabResolver:
    """A validating resolver of the lab."""

    name: str  # 'unbound' | 'bind' | 'kresd' | 'pdns'
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class LabZone:
    """A signed APNIC-like child zone and what a probe needs to know about it."""

    name: str
    ksk_tag: int
    zsk_tag: int
    standby_zsk_tag: int | None
    dnskey_ttl: int
    record_ttl: int
    probe_names: tuple[tuple[str, str], ...]  # (absolute qname, type) that exist
    auth_addresses: tuple[str, ...]
    ds_ttl: int = zones.DS_TTL  # TTL of the DS RRset at the parent
    standby_ksk_tag: int | None = None  # the KSK `Lab.ksk_swap` puts in place
    cname_target: str | None = None  # probe names are CNAMEs into this zone
    standby_addresses: tuple[str, ...] = ()  # standby signers serving the zone, not in its NS set


def lab_available() -> tuple[bool, str]:
    """Can a lab run here: root and every needed binary present?"""
    if os.geteuid() != 0:
        return False, "dnslab needs root (port 53, loopback addresses)"
    needed = [*servers.AUTH_BINARIES, *servers.RESOLVER_BINARIES.values()]
    missing = [b for b in needed if shutil.which(b) is None]
    if missing:
        return False, "dnslab binaries missing: " + ", ".join(missing)
    return True, "ok"


def query(
    host: str,
    qname: str,
    rdtype: str = "PTR",
    *,
    cd: bool = False,
    rd: bool = True,
    port: int = 53,
    timeout: float = 3.0,
) -> dns.message.Message:
    """One UDP query with DO=1 (and CD if asked), EDNS large enough to avoid truncation."""
    q = dns.message.make_query(qname, rdtype, want_dnssec=True, payload=4096)
    if cd:
        q.flags |= dns.flags.CD
    if not rd:
        q.flags &= ~dns.flags.RD
    resp = dns.query.udp(q, host, port=port, timeout=timeout)
    if resp.flags & dns.flags.TC:
        resp = dns.query.tcp(q, host, port=port, timeout=timeout)
    return resp


def _is_secure(resp: dns.message.Message) -> bool:
    return resp.rcode() == dns.rcode.NOERROR and bool(resp.flags & dns.flags.AD) and bool(resp.answer)


class Lab:
    """A private signed hierarchy (NSD) and validating resolvers on 127.53.0.0/16."""

    def __init__(self, workdir: pathlib.Path, *, resolvers: Sequence[str] = ALL_RESOLVERS,
                 unbound_aliases: Sequence[str] = (), nonvalidating: bool = True) -> None:
        unknown = set(resolvers) - set(ALL_RESOLVERS)
        if unknown:
            raise ValueError(f"unknown resolvers: {sorted(unknown)}")
        self.workdir = pathlib.Path(workdir).resolve()
        self.resolvers: list[LabResolver] = [LabResolver(n, RESOLVER_ADDRS[n], 53) for n in resolvers]
        self.zones: dict[str, LabZone] = {}
        self.root_ds = ""  # lab root trust anchor, DS rdata text
        self.hints_file = self.workdir / "root.hints"
        self._keys: dict[str, ZoneKeys] = {}
        self._state: dict[str, str] = {}
        self._serial = int(time.time())  # increases across restarts too
        self._auth: dict[str, Daemon] = {}  # address -> NSD
        self._res: dict[str, Daemon] = {}  # resolver name -> daemon
        self._added_addrs: list[str] = []
        self._ds_role: dict[str, str] = {}  # child -> role of the key the parent's DS is for
        # A resolver that does not validate, and control names for EngineConfig.control_*:
        # one in a zone every validator must reject, one in a healthy zone.
        self.nonvalidating: LabResolver | None = (
            LabResolver(NONVALIDATING_NAME, NONVALIDATING_ADDR, 53) if nonvalidating else None
        )
        self.control_bogus = "1.0.0.39.in-addr.arpa./PTR"
        self.control_secure = "1.0.0.1.in-addr.arpa./PTR"
        # Extra addresses the lab's Unbound also listens on (127/8 needs no interface alias).
        self.unbound_aliases = tuple(unbound_aliases)

    # ----------------------------------------------------------------- layout
    @property
    def keydir(self) -> pathlib.Path:
        return self.workdir / "keys"

    @property
    def zonedir(self) -> pathlib.Path:
        return self.workdir / "zones"

    def _zonefile(self, zone: str) -> pathlib.Path:
        return self.zonedir / ("root" if zone == "." else zone.rstrip("."))

    def _zonefile_at(self, addr: str, zone: str) -> pathlib.Path:
        """The file a given server loads: ns2 has its own copy so it can diverge."""
        if addr == zones.SECOND_CHILD_ADDR:
            return self.zonedir / (zone.rstrip(".") + ".ns2")
        if addr == zones.STANDBY_ADDR:
            return self.zonedir / (zone.rstrip(".") + ".standby")
        return self._zonefile(zone)

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    @staticmethod
    def _spec(zone: str) -> ChildSpec:
        name = dns.name.from_text(zone).to_text()
        for spec in CHILDREN:
            if spec.name == name:
                return spec
        raise LabError(f"{zone} is not a lab child zone")

    # ---------------------------------------------------------------- signing
    @staticmethod
    def _ns_addrs(spec: ChildSpec) -> list[tuple[str, str]]:
        """(NS name, address) of a child's authoritative servers."""
        out = [(f"ns1.{spec.name}", zones.CHILD_ADDR)]
        if spec.second_server:
            out.append((f"ns2.{spec.name}", zones.SECOND_CHILD_ADDR))
        return out

    def _child_body(self, spec: ChildSpec) -> str:
        ns = f"ns1.{spec.name}"
        lines = [zones.soa_line(spec.name, spec.record_ttl, self._next_serial(), spec.record_ttl, ns)]
        for host, addr in self._ns_addrs(spec):
            lines += [f"{spec.name} {spec.record_ttl} IN NS {host}", f"{host} {spec.record_ttl} IN A {addr}"]
        if spec.cnames_to is not None:
            lines += [f"{o} {spec.record_ttl} IN CNAME {t}" for o, t in zones.cname_records(spec)]
        else:
            lines += [f"{o} {spec.record_ttl} IN PTR {t}" for o, t in zones.ptr_records(spec)]
        # targets of another zone's RFC 2317-style CNAMEs
        for src in CHILDREN:
            if src.cnames_to == spec.name:
                lines += [f"{t} {spec.record_ttl} IN PTR host-{o.split('.')[0]}.classless.example."
                          for o, t in zones.cname_records(src)]
        return "\n".join(lines)

    def _roles(self, zone: str) -> dict[str, Key | None]:
        keys = self._keys[zone]
        return {"ksk": keys.ksk, "zsk": keys.zsk, "standby": keys.standby, "ksk2": keys.standby_ksk}

    def _sign_child(self, spec: ChildSpec, state: str, out: pathlib.Path | None = None) -> None:
        """Sign a child in `state` into its file (or `out`; then the recorded state is unchanged)."""
        roles = self._roles(spec.name)
        published_roles, signing_roles = _STATES[state]
        missing = [r for r in {*published_roles, *signing_roles} if roles[r] is None]
        if missing:
            raise LabError(f"{spec.name} has no {'/'.join(sorted(missing))} key for {state}")
        published = [k for r in published_roles if (k := roles[r]) is not None]
        signing = [k for r in signing_roles if (k := roles[r]) is not None]
        zones.sign_zone(
            zone=spec.name,
            body=self._child_body(spec),
            published=published,
            signing=signing,
            keydir=self.keydir,
            out=out or self._zonefile(spec.name),
            dnskey_ttl=spec.dnskey_ttl,
            expired=spec.expired,
        )
        if out is None:
            self._state[spec.name] = state
            if spec.second_server:  # ns2 serves the same signed zone unless told otherwise
                shutil.copy(self._zonefile(spec.name), self._zonefile_at(zones.SECOND_CHILD_ADDR, spec.name))

    def _delegation(self, child: str, ns_addr: str) -> list[str]:
        """NS + glue + DS lines a parent holds for `child`."""
        keys = self._keys[child]
        spec = next((s for s in CHILDREN if s.name == child), None)
        servers_ = self._ns_addrs(spec) if spec is not None else [(f"ns1.{child}", ns_addr)]
        # 39: the parent's DS points at a key the child never publishes
        ds_key = keys.ghost if keys.ghost is not None else self._roles(child)[self._ds_role.get(child, "ksk")]
        assert ds_key is not None
        lines = []
        for ns, addr in servers_:
            lines += [f"{child} {zones.INFRA_TTL} IN NS {ns}", f"{ns} {zones.INFRA_TTL} IN A {addr}"]
        ds_ttl = spec.ds_ttl if spec is not None else zones.DS_TTL
        return [*lines, f"{child} {ds_ttl} IN DS {zones.ds_text(child, ds_key)}"]

    def _sign_infra(self, zone: str, ns: str, ns_addr: str, delegations: Iterable[tuple[str, str]]) -> None:
        lines = [
            zones.soa_line(zone, zones.INFRA_TTL, self._next_serial(), 60, ns),
            f"{zone} {zones.INFRA_TTL} IN NS {ns}",
            f"{ns} {zones.INFRA_TTL} IN A {ns_addr}",
        ]
        for child, addr in delegations:
            lines += self._delegation(child, addr)
        keys = self._keys[zone]
        zones.sign_zone(
            zone=zone,
            body="\n".join(lines),
            published=[keys.ksk, keys.zsk],
            signing=[keys.ksk, keys.zsk],
            keydir=self.keydir,
            out=self._zonefile(zone),
            dnskey_ttl=zones.INFRA_TTL,
        )

    def _build(self) -> None:
        for d in (self.keydir, self.zonedir):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        infra = [".", "arpa.", "in-addr.arpa.", "ip6.arpa."]
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            jobs = {
                z: pool.submit(zones.make_zone_keys, self.keydir, z, standby=False, ghost=False)
                for z in infra
            }
            for spec in CHILDREN:
                jobs[spec.name] = pool.submit(
                    zones.make_zone_keys, self.keydir, spec.name,
                    standby=spec.standby, ghost=spec.ds_mismatch, standby_ksk=spec.standby_ksk,
                )
            self._keys = {z: f.result() for z, f in jobs.items()}
            signing = [pool.submit(self._sign_child, spec, "initial") for spec in CHILDREN]
            # the standby signer signs its own copy with its own ZSK (and its own serial)
            signing += [
                pool.submit(self._sign_child, s, "standby", self._zonefile_at(zones.STANDBY_ADDR, s.name))
                for s in CHILDREN
                if s.standby_signer
            ]
            for f in signing:
                f.result()
        self._ds_role = {}
        self._sign_reverse("in-addr.arpa.")
        self._sign_reverse("ip6.arpa.")
        self._sign_infra(
            "arpa.",
            "ns1.arpa.",
            zones.ARPA_ADDR,
            [("in-addr.arpa.", zones.REVERSE_ADDR), ("ip6.arpa.", zones.REVERSE_ADDR)],
        )
        self._sign_infra(".", zones.ROOT_NS, zones.ROOT_ADDR, [("arpa.", zones.ARPA_ADDR)])
        self.root_ds = zones.ds_text(".", self._keys["."].ksk)
        self.hints_file.write_text(
            f". 3600000 IN NS {zones.ROOT_NS}\n{zones.ROOT_NS} 3600000 IN A {zones.ROOT_ADDR}\n"
        )
        self.zones = {}
        for spec in CHILDREN:
            keys = self._keys[spec.name]
            self.zones[spec.name] = LabZone(
                name=spec.name,
                ksk_tag=keys.ksk.tag,
                zsk_tag=keys.zsk.tag,
                standby_zsk_tag=keys.standby.tag if keys.standby else None,
                dnskey_ttl=spec.dnskey_ttl,
                record_ttl=spec.record_ttl,
                probe_names=tuple((owner, "PTR") for owner, _ in zones.ptr_records(spec)),
                auth_addresses=tuple(a for _, a in self._ns_addrs(spec)),
                ds_ttl=spec.ds_ttl,
                standby_ksk_tag=keys.standby_ksk.tag if keys.standby_ksk else None,
                cname_target=spec.cnames_to,
                standby_addresses=(zones.STANDBY_ADDR,) if spec.standby_signer else (),
            )

    def _sign_reverse(self, zone: str) -> None:
        """(Re-)sign in-addr.arpa. or ip6.arpa. with the current delegations (and DS) of its children."""
        kids = [(s.name, zones.CHILD_ADDR) for s in CHILDREN if s.name.endswith("." + zone)]
        self._sign_infra(zone, f"ns1.{zone}", zones.REVERSE_ADDR, kids)

    # ---------------------------------------------------------------- servers
    def _auth_layout(self) -> dict[str, list[str]]:
        return {
            zones.ROOT_ADDR: ["."],
            zones.ARPA_ADDR: ["arpa."],
            zones.REVERSE_ADDR: ["in-addr.arpa.", "ip6.arpa."],
            zones.CHILD_ADDR: [s.name for s in CHILDREN],
            zones.SECOND_CHILD_ADDR: [s.name for s in CHILDREN if s.second_server],
            zones.STANDBY_ADDR: [s.name for s in CHILDREN if s.standby_signer],
        }

    def _start_auth(self) -> None:
        for addr, names in self._auth_layout().items():
            files = {n: self._zonefile_at(addr, n) for n in names}
            d = servers.nsd_daemon(self.workdir / f"nsd-{addr}", addr, files)
            self._auth[addr] = d
            d.start()
        for addr, names in self._auth_layout().items():
            d = self._auth[addr]

            def serving(addr: str = addr, names: list[str] = names) -> bool:
                return all(
                    query(addr, n, "SOA", rd=False, timeout=0.5).rcode() == dns.rcode.NOERROR for n in names
                )

            if not servers.wait_until(lambda d=d, ok=serving: not d.alive() or ok(), 10) or not d.alive():
                raise d.failure("authoritative server did not start serving")

    def _all_resolvers(self) -> list[LabResolver]:
        return [*self.resolvers, *([self.nonvalidating] if self.nonvalidating else [])]

    def _start_resolvers(self) -> None:
        for r in self._all_resolvers():
            validating = r.name != NONVALIDATING_NAME
            d = servers.resolver_daemon(
                r.name if validating else "unbound",
                self.workdir / r.name,
                r.host,
                hints=self.hints_file,
                root_ds=self.root_ds,
                root_ns=zones.ROOT_NS,
                root_addr=zones.ROOT_ADDR,
                aliases=self.unbound_aliases if r.name == "unbound" else (),
                validate=validating,
            )
            self._res[r.name] = d
            d.start()
        probe = self.zones[BASELINE_ZONE].probe_names[0][0]
        pending = {r.name: r for r in self._all_resolvers()}
        deadline = time.monotonic() + 20
        while pending:
            for name, r in list(pending.items()):
                d = self._res[name]
                if not d.alive():
                    raise d.failure("resolver exited during start-up")
                try:
                    resp = query(r.host, probe, "PTR", timeout=0.5)
                    if name == NONVALIDATING_NAME:  # answers, never with AD
                        if resp.rcode() == dns.rcode.NOERROR and resp.answer:
                            del pending[name]
                    elif _is_secure(resp):
                        del pending[name]
                except Exception:  # not listening yet
                    pass
            if pending and time.monotonic() > deadline:
                d = self._res[next(iter(pending))]
                raise d.failure(f"no secure (AD=1) answer for {probe}")
            if pending:
                time.sleep(0.1)

    def _stop_resolvers(self) -> None:
        for d in self._res.values():
            d.stop()
        self._res = {}

    def start(self) -> None:
        """Build keys and zones, start NSD and the resolvers; wait until all validate."""
        if self._auth or self._res:
            raise LabError("lab already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._added_addrs = servers.add_loopback(
                [*zones.AUTH_ADDRS, *(r.host for r in self._all_resolvers())]
            )
            self._build()
            self._start_auth()
            self._start_resolvers()
        except (ServerError, SigningError, OSError) as exc:
            self.stop()
            raise LabError(str(exc)) from exc
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop only our daemons and drop only the loopback addresses we added."""
        self._stop_resolvers()
        for d in self._auth.values():
            d.stop()
        self._auth = {}
        servers.remove_loopback(self._added_addrs)
        self._added_addrs = []

    def flush_resolvers(self) -> None:
        """Restart every resolver with an empty cache and wait until it validates again."""
        try:
            self._stop_resolvers()
            self._start_resolvers()
        except ServerError as exc:
            raise LabError(str(exc)) from exc

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -------------------------------------------------------------- scenarios
    def _apply(self, zone: str, state: str) -> None:
        spec = self._spec(zone)
        addrs = [a for _, a in self._ns_addrs(spec)]
        try:
            self._sign_child(spec, state)
            for addr in addrs:
                servers.nsd_reload(self.workdir / f"nsd-{addr}", spec.name)
        except (ServerError, SigningError) as exc:
            raise LabError(str(exc)) from exc
        want = self.served_key_tags(spec.name)
        for addr in addrs:
            if not servers.wait_until(lambda a=addr: self._auth_tags(spec.name, a) == want, 5):
                raise LabError(f"{spec.name}: {addr} does not serve state {state} {want}")

    def _tags_of(self, zone: str, state: str) -> tuple[frozenset[int], frozenset[int]]:
        roles = self._roles(zone)
        published, signing = _STATES[state]
        pub = frozenset(k.tag for r in published if (k := roles[r]) is not None)
        sig = frozenset(k.tag for r in signing if (k := roles[r]) is not None and not k.ksk)
        return pub, sig

    def served_key_tags(self, zone: str) -> tuple[frozenset[int], frozenset[int]]:
        """Expected (DNSKEY tags, tags signing the SOA) of a child in its current state."""
        name = self._spec(zone).name
        return self._tags_of(name, self._state[name])

    def _auth_tags(self, zone: str, addr: str = zones.CHILD_ADDR) -> tuple[frozenset[int], frozenset[int]]:
        """(DNSKEY tags, SOA RRSIG tags) as actually served by one authoritative server."""
        keys = query(addr, zone, "DNSKEY", rd=False, timeout=1)
        soa = query(addr, zone, "SOA", rd=False, timeout=1)
        pub = frozenset(
            dns.dnssec.key_id(rd)
            for rrset in keys.answer
            if rrset.rdtype == dns.rdatatype.DNSKEY
            for rd in rrset
        )
        sig = frozenset(
            rd.key_tag for rrset in soa.answer if rrset.rdtype == dns.rdatatype.RRSIG for rd in rrset
        )
        return pub, sig

    def cutover(self, zone: str) -> None:
        """APNIC Dec 2012: publish the standby ZSK and sign with it only, at the same moment."""
        self._apply(zone, "cutover")

    def prepublish(self, zone: str) -> None:
        """Correct rollover step 1: publish the standby ZSK, keep signing with the active one."""
        self._apply(zone, "prepublish")

    def roll(self, zone: str) -> None:
        """Correct rollover step 2: sign with the standby ZSK (old ZSK stays published)."""
        self._apply(zone, "rolled")

    def retire(self, zone: str) -> None:
        """Correct rollover step 3: withdraw the old ZSK; KSK + new ZSK published, the new one signs.

        Safe once the old ZSK's signatures have expired from caches (record TTL after `roll`).
        """
        self._apply(zone, "retired")

    def reset(self, zone: str) -> None:
        """Back to the initial state: KSK + active ZSK, signed by the active ZSK (on every server).

        A standby signer gets its own copy back (state "standby"). After `cutover` or `retire`
        this brings the withdrawn ZSK back at once: resolvers may fail for one DNSKEY TTL.
        """
        self._apply(zone, "initial")
        if self._ds_role.get(self._spec(zone).name, "ksk") != "ksk":
            self._set_parent_ds(zone, "ksk")
        if self._spec(zone).standby_signer:
            self.desync_standby(zone)

    def _standby_spec(self, zone: str) -> ChildSpec:
        spec = self._spec(zone)
        if not spec.standby_signer:
            raise LabError(f"{spec.name} has no standby signer")
        return spec

    def _auth_serial(self, zone: str, addr: str) -> int | None:
        resp = query(addr, zone, "SOA", rd=False, timeout=1)
        return next((rd.serial for rrset in resp.answer if rrset.rdtype == dns.rdatatype.SOA for rd in rrset),
                    None)

    def _reload_standby(self, spec: ChildSpec, done: Callable[[], bool], what: str) -> None:
        try:
            servers.nsd_reload(self.workdir / f"nsd-{zones.STANDBY_ADDR}", spec.name)
        except ServerError as exc:
            raise LabError(str(exc)) from exc
        if not servers.wait_until(done, 5):
            raise LabError(f"{spec.name}: the standby {zones.STANDBY_ADDR} does not serve {what}")

    def sync_standby(self, zone: str) -> None:
        """Give the standby signer exactly what ns1 serves (same file: keys, signatures, serial)."""
        spec = self._standby_spec(zone)
        addr = zones.STANDBY_ADDR
        shutil.copy(self._zonefile(spec.name), self._zonefile_at(addr, spec.name))

        def same() -> bool:
            return self._auth_tags(spec.name, addr) == self._auth_tags(spec.name, zones.CHILD_ADDR) and (
                self._auth_serial(spec.name, addr) == self._auth_serial(spec.name, zones.CHILD_ADDR))

        self._reload_standby(spec, same, "what ns1 serves")

    def desync_standby(self, zone: str) -> None:
        """Re-sign the standby signer's own copy with its own ZSK (state "standby") and serve it."""
        spec = self._standby_spec(zone)
        addr = zones.STANDBY_ADDR
        try:
            self._sign_child(spec, "standby", out=self._zonefile_at(addr, spec.name))
        except SigningError as exc:
            raise LabError(str(exc)) from exc
        serial = self._serial  # the serial _sign_child just wrote (scenario steps run one at a time)
        want = self._tags_of(spec.name, "standby")

        def served() -> bool:
            return self._auth_tags(spec.name, addr) == want and self._auth_serial(spec.name, addr) == serial

        self._reload_standby(spec, served, f"its own keys {want}")

    def _set_parent_ds(self, zone: str, role: str) -> None:
        """Re-sign the parent with the DS of `role`'s key; return once its server serves it."""
        spec = self._spec(zone)
        key = self._roles(spec.name)[role]
        assert key is not None
        parent = spec.name.split(".", 1)[1]
        self._ds_role[spec.name] = role
        try:
            self._sign_reverse(parent)
            servers.nsd_reload(self.workdir / f"nsd-{zones.REVERSE_ADDR}", parent)
        except (ServerError, SigningError) as exc:
            raise LabError(str(exc)) from exc

        if not servers.wait_until(lambda: self.parent_ds_tags(spec.name) == {key.tag}, 5):
            raise LabError(f"{parent} does not serve the DS for {role} of {spec.name}")

    def parent_ds_tags(self, zone: str) -> frozenset[int]:
        """Key tags of the DS RRset the parent's server serves for `zone` now."""
        resp = query(zones.REVERSE_ADDR, self._spec(zone).name, "DS", rd=False, timeout=1)
        return frozenset(
            rd.key_tag for rrset in resp.answer if rrset.rdtype == dns.rdatatype.DS for rd in rrset
        )

    def ksk_swap(self, zone: str) -> None:
        """KSK rolled without DS pre-publication: new KSK in the zone and new DS at the parent at once.

        Resolvers holding the old DS (TTL longer than the DNSKEY TTL) fail as soon as their
        cached DNSKEY set expires, until the old DS expires too.
        """
        self._apply(zone, "kskswap")
        self._set_parent_ds(zone, "ksk2")

    def partial_cutover(self, zone: str) -> None:
        """The bad cut-over on ns2 only: ns1 keeps serving the zone in its current state."""
        spec = self._spec(zone)
        if not spec.second_server:
            raise LabError(f"{spec.name} has a single authoritative server")
        addr = zones.SECOND_CHILD_ADDR
        try:
            self._sign_child(spec, "cutover", out=self._zonefile_at(addr, spec.name))
            servers.nsd_reload(self.workdir / f"nsd-{addr}", spec.name)
        except (ServerError, SigningError) as exc:
            raise LabError(str(exc)) from exc
        want = self._tags_of(spec.name, "cutover")
        if not servers.wait_until(lambda: self._auth_tags(spec.name, addr) == want, 5):
            raise LabError(f"{spec.name}: {addr} does not serve the cut-over {want}")

    def auth_key_tags(self, zone: str, addr: str) -> tuple[frozenset[int], frozenset[int]]:
        """(DNSKEY tags, SOA RRSIG tags) one authoritative server of `zone` serves now."""
        return self._auth_tags(self._spec(zone).name, addr)

    def state(self, zone: str) -> str:
        return self._state[self._spec(zone).name]

    def resolver(self, name: str) -> LabResolver:
        return next(r for r in self.resolvers if r.name == name)

    def describe(self) -> dict[str, object]:
        """JSON-friendly summary (used by `python -m dnslab up`)."""
        return {
            "workdir": str(self.workdir),
            "root_trust_anchor": f". IN DS {self.root_ds}",
            "root_hints": str(self.hints_file),
            "authoritative": {addr: names for addr, names in self._auth_layout().items()},
            "resolvers": [dataclasses.asdict(r) for r in self.resolvers],
            "nonvalidating_resolver": dataclasses.asdict(self.nonvalidating) if self.nonvalidating else None,
            "control_bogus": self.control_bogus,
            "control_secure": self.control_secure,
            "zones": {
                name: {
                    **dataclasses.asdict(z),
                    "probe_names": [list(p) for p in z.probe_names[:5]],
                    "probe_name_count": len(z.probe_names),
                }
                for name, z in self.zones.items()
            },
        }
