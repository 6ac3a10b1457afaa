"""Follow-up questions for a failed check: what the resolver caches, what the source serves.

Only I/O lives here (and the address filter, a pure function); probe.diagnose decides.
Authoritative evidence and server discovery are shared by every resolver within one sweep, so
a broken zone costs its servers a few queries, not a few per resolver. A zone's servers are
found independently of the resolver that failed: the NS names and addresses two other
resolvers agree on. The fan-out a reply can cause is bounded per zone and per sweep.

The chain is asked where each part lives (issue 8): the DS at the parent zone's own servers
(the parent found through the resolver with CD=1, its servers discovered like the zone's and
shared by every zone under it), DNSKEY, SOA and data at every address of the zone's servers,
and, when the validated data lives in another zone (a CNAME/DNAME target, or an RRSIG signer
below a further cut), the same follow-ups for that zone.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dns.exception
import dns.name

from probe.classify import answer_chain
from probe.diagnose import AuthEvidence, Evidence, ParentEvidence
from probe.observation import Observation, Outcome, RRsetObs
from probe.query import Querier, Throttle
from probe.resolvers import ResolverSpec
from probe.wire import QueryTemplate, TemplateCache
from probe.zones import ProbeName, ZoneSpec

K = TypeVar("K")
T = TypeVar("T")

# Bounds on what one NS reply can make the probe send (a reply may name 2,000 servers).
MAX_NS_NAMES = 8  # NS names of a zone whose addresses are looked up (sorted, the first ones)
MAX_NS_RESOLVERS = 4  # resolvers asked for a zone's NS set
MAX_ZONE_LOOKUPS = 32  # A/AAAA lookups per zone: 8 names x 2 types x 2 resolvers
MAX_SWEEP_LOOKUPS = 200  # A/AAAA lookups per sweep, all zones (lookups are shared by zones)
MAX_PARENT_WALK = 8  # SOA questions (CD=1) walking up from a zone to find its parent
MAX_SIGNER_DEPTH = 2  # zones followed from a check's zone to where its data is signed

SOURCE_ZONES_FILE = "zones-file"
SOURCE_DISCOVERED = "discovered"  # Evidence.auth_resolvers names the resolvers that agreed
_ANSWERED = (0, 3)  # NOERROR, NXDOMAIN: an answer, even if empty


def _once(cache: dict[K, asyncio.Task[T]], key: K,
          start: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
    """The task for `key`, started on first use: concurrent callers share one piece of I/O."""
    task = cache.get(key)
    if task is None:
        task = cache[key] = asyncio.ensure_future(start())
    return task


# -- which learnt addresses may be asked --------------------------------------------------------

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, RFC 4291 §2.5.5.1
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a local network's own


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """IPv4 addresses an IPv6 address stands for: IPv4-mapped, IPv4-compatible, NAT64
    well-known prefix, 6to4 (bits 16-48) and Teredo (server and de-obfuscated client)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are not IPv4-compatible forms
        return (low32,)
    if ip in _NAT64_WELL_KNOWN:
        return (low32,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return ()


def _ipv4_may_ask(ip: ipaddress.IPv4Address, allow_local: bool) -> bool:
    # Never: multicast, broadcast and 240/4, "this network", link-local (cloud metadata).
    if (ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip.is_link_local
            or ip in _THIS_NETWORK):
        return False
    return ip.is_global or allow_local


def may_ask(address: str, *, allow_local: bool) -> bool:
    """May the probe send to `address`, learnt from a DNS answer? Only public addresses (a
    resolver's answer must not point this host at its own network), judged through any IPv4
    address embedded in an IPv6 form; with `allow_local` (labs) loopback and private too."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_may_ask(ip, allow_local)
    if (ip.scope_id or ip.is_multicast or ip.is_unspecified or ip.is_link_local
            or ip.is_site_local):
        return False
    if ip in _NAT64_LOCAL_USE:  # translates to whatever the local network decides
        return allow_local
    v4 = embedded_ipv4(ip)
    if v4:
        return all(_ipv4_may_ask(a, allow_local) for a in v4)
    return ip.is_global or allow_local


# -- bounded discovery ---------------------------------------------------------------------

class FollowUpBudget:
    """A/AAAA lookups for server discovery that one sweep may still send, all zones together."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = MAX_SWEEP_LOOKUPS) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True


@dataclass(frozen=True, slots=True)
class Discovery:
    """A zone's authoritative servers, where the list came from, and what limited it."""

    servers: tuple[tuple[str, int], ...]
    source: str
    notes: tuple[str, ...] = ()
    resolvers: tuple[str, ...] = ()  # whose NS and address answers agreed (one: no second)


def _ns_names(obs: Observation, zone: str) -> frozenset[str]:
    return frozenset(rd.lower() for rr in obs.rrsets("NS", zone) for rd in rr.rdatas)


def _addresses(obs: Observation) -> set[str]:
    out: set[str] = set()
    for rr in obs.rrsets(obs.qtype, obs.qname):
        for rd in rr.rdatas:
            try:
                out.add(str(ipaddress.ip_address(rd)))  # canonical text, to compare
            except ValueError:
                continue
    return out


def _name(text: str) -> dns.name.Name | None:
    try:
        return dns.name.from_text(text)
    except (dns.exception.DNSException, ValueError):
        return None


def _text(name: dns.name.Name) -> str:
    return name.to_text().lower()


def _is_below(name: str, zone: str, *, proper: bool = False) -> bool:
    """Is `name` at or below `zone` (strictly below with `proper`)? False for bad names."""
    n, z = _name(name), _name(zone)
    if n is None or z is None or not n.is_subdomain(z):
        return False
    return not proper or n != z


def rrsig_signer(rrset: RRsetObs) -> str | None:
    """The signer name of the first well-formed RRSIG covering `rrset` (RFC 4034 §3.2)."""
    for sig in rrset.rrsigs:
        fields = sig.split()
        if len(fields) > 7 and (n := _name(fields[7])) is not None:
            return _text(n)
    return None


def _authority_soa_owner(obs: Observation) -> str | None:
    return next((r.name.lower() for r in obs.authority if r.rdtype == "SOA"), None)


def apex_note(zone: str, soa: Observation | None) -> str | None:
    """A note when the resolver's SOA answer (CD=1) at `zone` shows it is not a zone apex: no
    SOA owned by the name, and the authority section's SOA names the real apex (RFC 2308 §3)."""
    apex = None if soa is None else _apex_from_soa(zone, soa)
    if apex is None or apex == zone.lower():
        return None
    return f"not-a-zone-apex: {zone} is not a zone apex; the apex is {apex}"


def parent_from_ds(zone: str, cached_ds: Observation | None) -> str | None:
    """The parent zone as the resolver's DS answer (CD=1) shows it: the DS RRset's RRSIG signer
    name, or for NODATA the owner of the SOA in the authority section; a proper ancestor only."""
    if cached_ds is None or cached_ds.outcome is not Outcome.REPLY:
        return None
    for rr in cached_ds.rrsets("DS", zone):
        signer = rrsig_signer(rr)
        if signer is not None and _is_below(zone, signer, proper=True):
            return signer
    owner = _authority_soa_owner(cached_ds)
    if owner is not None and _is_below(zone, owner, proper=True):
        return owner
    return None


def _apex_from_soa(name: str, soa: Observation) -> str | None:
    """The zone `name` is in, from an SOA answer (CD=1) at it: the name, or the authority SOA."""
    if soa.outcome is not Outcome.REPLY or soa.rcode not in _ANSWERED:
        return None
    if soa.rrsets("SOA", name):
        return name.lower()
    owner = _authority_soa_owner(soa)
    return owner if owner is not None and _is_below(name, owner) else None


class Investigator:
    """Collects Evidence for failed checks within one sweep."""

    def __init__(self, querier: Querier, resolvers: Sequence[ResolverSpec],
                 templates: TemplateCache, *,
                 throttles: Mapping[str, Throttle | None] | None = None,
                 max_auth_servers: int = 16, allow_local_auth: bool = False,
                 budget: FollowUpBudget | None = None, max_ns_names: int = MAX_NS_NAMES,
                 max_ns_resolvers: int = MAX_NS_RESOLVERS,
                 max_zone_lookups: int = MAX_ZONE_LOOKUPS) -> None:
        self.q = querier
        self.resolvers = list(resolvers)
        # Follow-ups to a resolver share its lane's rate limit, whichever lane asks.
        self.throttles = dict(throttles or {})
        self.max_auth_servers = max_auth_servers
        self.allow_local_auth = allow_local_auth
        self.templates = templates
        self.budget = budget or FollowUpBudget()
        self.max_ns_names = max_ns_names
        self.max_ns_resolvers = max_ns_resolvers
        self.max_zone_lookups = max_zone_lookups
        self._servers: dict[str, asyncio.Task[Discovery]] = {}
        self._lookups: dict[tuple[str, str, str], asyncio.Task[Observation]] = {}
        self._auth: dict[tuple[str, str, str], asyncio.Task[tuple[AuthEvidence, ...]]] = {}
        self._source_queries: dict[tuple[str, int, str, str], asyncio.Task[Observation]] = {}
        self._soas: dict[str, asyncio.Task[Observation]] = {}  # SOA (CD=1) per name and sweep
        self._parents: dict[str, asyncio.Task[tuple[str | None, tuple[ParentEvidence, ...],
                                                     tuple[str, ...]]]] = {}
        self._apexes: dict[str, asyncio.Task[str | None]] = {}

    async def _ask(self, r: ResolverSpec, qname: str, qtype: str) -> Observation:
        # Follow-ups to a resolver use CD=1: show what it holds, validated or not.
        tmpl = self.templates.get(qname, qtype, cd=True)
        return await self.q.ask(r.name, r.host, r.port, tmpl,
                                throttle=self.throttles.get(r.name), triage=False)

    def _soa(self, r: ResolverSpec, name: str) -> asyncio.Task[Observation]:
        """SOA (CD=1) at `name`, asked once per sweep of whichever resolver needs it first."""
        return _once(self._soas, name.lower(), lambda: self._ask(r, name, "SOA"))

    async def collect(self, resolver: ResolverSpec, zone: ZoneSpec, probe: ProbeName, *,
                      depth: int = 0) -> Evidence:
        cd_answer, cached_dnskey, cached_ds, zone_soa = await asyncio.gather(
            self._ask(resolver, probe.qname, probe.qtype),
            self._ask(resolver, zone.name, "DNSKEY"),
            self._ask(resolver, zone.name, "DS"),
            self._soa(resolver, zone.name),
        )
        # The parent's DS, the zone's servers and the zone that signed the data, together.
        (parent, parent_ds, parent_notes), (found, auth, auth_notes), signer = \
            await asyncio.gather(
                _once(self._parents, zone.name,
                      lambda: self._parent_ds(resolver, zone.name, cached_ds)),
                self._zone_sources(resolver, zone, probe),
                self._follow(resolver, zone, probe, cd_answer, depth),
            )
        notes = list(found.notes) + auth_notes + list(parent_notes)
        note = apex_note(zone.name, zone_soa)
        if note is not None:
            notes.append(note)
        return Evidence(zone.name, probe.qname, probe.qtype, cd_answer, cached_dnskey,
                        cached_ds, auth, found.source if found.servers else "none",
                        tuple(notes), found.resolvers if found.servers else (),
                        parent=parent, parent_ds=parent_ds, zone_soa=zone_soa, signer=signer)

    # -- for the signer-side audit (probe.audit.collect): the same shared discovery ----------

    async def name_servers(self, zone: str) -> Discovery:
        """The NS addresses two resolvers agree on (zones.txt `ns=` is the caller's to add)."""
        if not self.resolvers:
            return Discovery((), "none", ("no resolver to find the name servers with",))
        spec = ZoneSpec(zone, ())
        return await _once(self._servers, zone, lambda: self._discover(spec, self.resolvers[0]))

    async def parent_ds(self, zone: str
                        ) -> tuple[str | None, tuple[ParentEvidence, ...], tuple[str, ...]]:
        """The zone's DS as each server of its parent serves it (RD=0), parent found by SOA."""
        if not self.resolvers:
            return None, (), ("no resolver to find the parent zone with",)
        r = self.resolvers[0]
        return await _once(self._parents, zone, lambda: self._parent_ds(r, zone, None))

    async def _zone_sources(self, resolver: ResolverSpec, zone: ZoneSpec, probe: ProbeName
                            ) -> tuple[Discovery, tuple[AuthEvidence, ...], list[str]]:
        if zone.ns:  # not cached by name: a signer zone of the same name may be discovered
            found = Discovery(zone.ns, SOURCE_ZONES_FILE)
        else:
            found = await _once(self._servers, zone.name, lambda: self._discover(zone, resolver))
        notes: list[str] = []
        auth: tuple[AuthEvidence, ...] = ()
        if found.servers:
            auth = await _once(self._auth, (zone.name, probe.qname, probe.qtype),
                               lambda: self._ask_sources(zone, probe, found.servers))
            if not any(a.dnskey and a.dnskey.outcome is Outcome.REPLY for a in auth):
                notes.append("no authoritative server answered")
        else:
            notes.append(f"no authoritative servers found for {zone.name}")
        return found, auth, notes

    # -- the parent's DS -------------------------------------------------------------------

    async def _find_parent(self, r: ResolverSpec, zone: str,
                           cached_ds: Observation | None) -> str | None:
        """The parent zone: from the resolver's DS answer, else walking up asking SOA (CD=1);
        an SOA answer at an ancestor, or the authority SOA of an empty one, names it."""
        found = parent_from_ds(zone, cached_ds)
        if found is not None:
            return found
        name = _name(zone)
        for _ in range(MAX_PARENT_WALK):
            if name is None or name == dns.name.root:
                return None
            name = name.parent()
            apex = _apex_from_soa(_text(name), await self._soa(r, _text(name)))
            if apex is not None:
                return apex
        return None

    async def _parent_ds(self, r: ResolverSpec, zone: str, cached_ds: Observation | None
                         ) -> tuple[str | None, tuple[ParentEvidence, ...], tuple[str, ...]]:
        """The zone's DS as each server of the parent serves it (RD=0). Once per zone and sweep;
        the parent's discovery is shared by every zone under it (zones.txt names no parent
        servers) and spends the same budgets as a zone's."""
        parent = await self._find_parent(r, zone, cached_ds)
        if parent is None:
            return None, (), (f"parent zone of {zone} not found",)
        spec = ZoneSpec(parent, ())
        found = await _once(self._servers, parent, lambda: self._discover(spec, r))
        notes = list(found.notes)
        if not found.servers:
            notes.append(f"no authoritative servers found for the parent zone {parent}")
            return parent, (), tuple(notes)
        ds_t = self.templates.get(zone, "DS", rd=False)

        async def one(host: str, port: int) -> ParentEvidence | None:
            ds = await _once(self._source_queries, (host, port, zone, "DS"),
                             lambda: self.q.ask(f"auth:{host}", host, port, ds_t, triage=False))
            if ds.outcome is Outcome.UNREACHABLE:
                return None
            return ParentEvidence(server_label(host, port), ds)

        got = await self._each_server(found.servers, one)
        if not any(p.ds is not None and p.ds.outcome is Outcome.REPLY for p in got):
            notes.append(f"no server of the parent zone {parent} answered for the DS of {zone}")
        return parent, got, tuple(notes)

    # -- where the validated data lives ----------------------------------------------------

    async def _data_zone(self, r: ResolverSpec, zone: str, probe: ProbeName,
                         cd_answer: Observation) -> tuple[str, str] | None:
        """(zone, final name) when the data the resolver validates lives in another zone: the
        end of a CNAME/DNAME chain outside `zone`, or signed by another zone (a further cut)."""
        if cd_answer.outcome is not Outcome.REPLY:
            return None
        chain = answer_chain(cd_answer, probe.qname, probe.qtype)
        if chain.broken:
            return None
        final = chain.names[-1]
        signers = [s for rr in chain.data if (s := rrsig_signer(rr)) is not None]
        # A signer counts only when the data is inside it (RFC 4035 §5.3.1).
        # ... and never an ancestor of the zone (an RRSIG naming com. or the root).
        target = next((s for s in signers if _is_below(final, s)
                       and not _is_below(zone, s, proper=True)), None)
        if target is None and not _is_below(final, zone):
            target = await _once(self._apexes, final,
                                 lambda: self._apex_of(r, final))
        if target is None or target == zone.lower():
            return None
        return target, final

    async def _apex_of(self, r: ResolverSpec, name: str) -> str | None:
        apex = _apex_from_soa(name, await self._soa(r, name))
        # PowerDNS SERVFAILs even CD=1 questions inside a zone it finds bogus, and a CNAME
        # target in a freshly cut-over zone is exactly that: ask up to two other resolvers.
        others = [x for x in self.resolvers if x != r][:2]
        while apex is None and others:
            apex = _apex_from_soa(name, await self._ask(others.pop(0), name, "SOA"))
        return apex

    async def _follow(self, r: ResolverSpec, zone: ZoneSpec, probe: ProbeName,
                      cd_answer: Observation, depth: int) -> Evidence | None:
        if depth >= MAX_SIGNER_DEPTH:
            return None
        found = await self._data_zone(r, zone.name, probe, cd_answer)
        if found is None:
            return None
        target, final = found
        there = ProbeName(final, probe.qtype)
        return await self.collect(r, ZoneSpec(target, (there,)), there, depth=depth + 1)

    # -- authoritative servers -------------------------------------------------------------

    async def _discover(self, zone: ZoneSpec, first: ResolverSpec) -> Discovery:
        """One discovery per zone and sweep, whichever resolver failed first: the servers
        that judge every resolver must not come from one resolver alone."""
        if zone.ns:
            return Discovery(zone.ns, SOURCE_ZONES_FILE)
        notes: list[str] = []
        # The resolver that failed first goes last; PowerDNS refuses even CD=1 answers for a
        # zone it finds bogus, so a resolver that gives no NS set is passed over.
        order = [*(r for r in self.resolvers if r != first), first][: self.max_ns_resolvers]
        voters = await self._ns_votes(zone, order)
        if not voters:
            return Discovery((), "none", (f"no resolver gave an NS set for {zone.name}",))
        if len(voters) == 1:
            only, names = voters[0]
            notes.append(f"only {only.name} gave an NS set for {zone.name}: the server list "
                         "is not confirmed by a second resolver")
        else:
            pair = _agreeing_pair(voters)
            if pair is None:
                who = ", ".join(r.name for r, _ in voters)
                return Discovery((), "none", (f"resolvers {who} disagree on the NS set of "
                                              f"{zone.name}: no name in common",))
            (_, names_a), (_, names_b) = pair
            voters, names = list(pair), names_a & names_b
        chosen = sorted(names)[: self.max_ns_names]
        if len(names) > len(chosen):
            notes.append(f"NS set of {zone.name} has {len(names)} names: looked up the first "
                         f"{len(chosen)} (sorted)")
        servers, confirmed = await self._agreed_addresses(chosen, [r for r, _ in voters],
                                                          notes)
        if not servers:
            notes.append(f"no usable address agreed for the name servers of {zone.name}")
        return Discovery(servers, SOURCE_DISCOVERED, tuple(notes), tuple(sorted(confirmed)))

    async def _ns_votes(self, zone: ZoneSpec, order: list[ResolverSpec]
                        ) -> list[tuple[ResolverSpec, frozenset[str]]]:
        """NS sets from the resolvers in `order`: two at once, then one more at a time until
        two of them share a name or none is left."""
        voters: list[tuple[ResolverSpec, frozenset[str]]] = []
        i = 0
        while i < len(order):
            batch = order[i: i + (2 if not voters else 1)]
            i += len(batch)
            answers = await asyncio.gather(*(self._ask(r, zone.name, "NS") for r in batch))
            for r, obs in zip(batch, answers, strict=True):
                names = _ns_names(obs, zone.name)
                if names:
                    voters.append((r, names))
            if _agreeing_pair(voters) is not None:
                break
        return voters

    def _lookup(self, r: ResolverSpec, name: str, rtype: str) -> asyncio.Task[Observation] | None:
        """A shared A/AAAA lookup (name servers often serve many zones), None if over budget."""
        key = (r.name, name, rtype)
        task = self._lookups.get(key)
        if task is None:
            if not self.budget.take():
                return None
            task = self._lookups[key] = asyncio.ensure_future(self._ask(r, name, rtype))
        return task

    async def _agreed_addresses(self, names: list[str], voters: list[ResolverSpec],
                                notes: list[str]
                                ) -> tuple[tuple[tuple[str, int], ...], set[str]]:
        """Addresses of `names` that every voter able to answer gives (for the same name),
        public only, and the voters whose answers chose them."""
        wanted = [(name, rtype, r) for name in names for rtype in ("A", "AAAA") for r in voters]
        # Name by name, so a cut-off budget still leaves whole votes for the first names.
        tasks: list[tuple[str, ResolverSpec, asyncio.Task[Observation]]] = []
        zone_cap = skipped = 0
        for name, rtype, r in wanted:
            if len(tasks) >= self.max_zone_lookups:
                zone_cap += 1
                continue
            task = self._lookup(r, name, rtype)
            if task is None:
                skipped += 1
                continue
            tasks.append((name, r, task))
        if zone_cap:
            notes.append(f"per-zone limit of {self.max_zone_lookups} address lookups reached: "
                         f"{zone_cap} not sent")
        if skipped:
            notes.append(f"per-sweep limit of {self.budget.limit} address lookups reached: "
                         f"{skipped} not sent")
        results = await asyncio.gather(*(t for _, _, t in tasks))
        given: dict[tuple[str, str], set[str]] = {}
        failed: dict[tuple[str, str], bool] = {}  # every lookup sent for (name, voter) failed
        for (name, r, _), obs in zip(tasks, results, strict=True):
            given.setdefault((name, r.name), set()).update(_addresses(obs))
            answered = obs.outcome is Outcome.REPLY and obs.rcode in _ANSWERED
            failed[(name, r.name)] = failed.get((name, r.name), True) and not answered
        addrs: list[str] = []
        confirmed: set[str] = set()
        for name in names:
            # A voter that could not answer (timeout, or SERVFAIL: PowerDNS refuses even CD=1
            # answers inside a zone it finds bogus, and the name servers are often in it)
            # abstains rather than vetoes; its silence is noted. An empty answer still votes.
            present = [r for r in voters if not failed.get((name, r.name), False)]
            if len(present) < len(voters):
                silent = ", ".join(r.name for r in voters if r not in present)
                notes.append(f"{silent} could not look up {name}: its addresses are "
                             + ("confirmed by " + ", ".join(r.name for r in present)
                                if len(present) > 1 else
                                "not confirmed by a second resolver" if present else
                                "unknown"))
            votes = [given.get((name, r.name), set()) for r in present]
            agreed = sorted(a for a in set.intersection(*votes) if self._may_ask(a)) \
                if votes else []
            if agreed:
                addrs.extend(agreed)
                confirmed.update(r.name for r in present)
        # IPv4 first: more hosts have it; unreachable IPv6 servers are simply skipped.
        addrs.sort(key=lambda a: ":" in a)
        return tuple((a, 53) for a in dict.fromkeys(addrs)), confirmed

    def _may_ask(self, address: str) -> bool:
        return may_ask(address, allow_local=self.allow_local_auth)

    async def _ask_sources(self, zone: ZoneSpec, probe: ProbeName,
                           servers: tuple[tuple[str, int], ...]) -> tuple[AuthEvidence, ...]:
        dnskey_t = self.templates.get(zone.name, "DNSKEY", rd=False)
        soa_t = self.templates.get(zone.name, "SOA", rd=False)
        answer_t = self.templates.get(probe.qname, probe.qtype, rd=False)

        async def one(host: str, port: int) -> AuthEvidence | None:
            name = f"auth:{host}"

            def ask(t: QueryTemplate) -> Callable[[], Coroutine[Any, Any, Observation]]:
                return lambda: self.q.ask(name, host, port, t, triage=False)

            # DNSKEY and SOA are asked once per server and zone, however many names fail;
            # the SOA serial tells the zone versions servers serve apart.
            dnskey, soa, answer = await asyncio.gather(
                _once(self._source_queries, (host, port, zone.name, "DNSKEY"), ask(dnskey_t)),
                _once(self._source_queries, (host, port, zone.name, "SOA"), ask(soa_t)),
                _once(self._source_queries, (host, port, probe.qname, probe.qtype),
                      ask(answer_t)),
            )
            if dnskey.outcome is Outcome.UNREACHABLE:
                return None  # e.g. an IPv6 server seen from a host without IPv6
            return AuthEvidence(server_label(host, port), dnskey, answer, soa)

        # Every address of every NS (bounded): servers of one zone may serve different versions.
        return await self._each_server(servers, one)

    async def _each_server(self, servers: tuple[tuple[str, int], ...],
                           one: Callable[[str, int], Awaitable[T | None]]) -> tuple[T, ...]:
        """`one` for each server, in parallel, so a dead server costs one timeout, not one per
        server; twice the wanted count are asked because some addresses may be unreachable from
        here (`one` gives None), and at most max_auth_servers answers are kept."""
        asked = await asyncio.gather(*(one(h, p) for h, p in servers[: 2 * self.max_auth_servers]))
        return tuple(a for a in asked if a is not None)[: self.max_auth_servers]


def server_label(host: str, port: int) -> str:
    """How evidence names a server: the address, with the port only when it is not 53."""
    return host if port == 53 else f"{host}:{port}"


def _agreeing_pair(voters: Sequence[tuple[ResolverSpec, frozenset[str]]]
                   ) -> tuple[tuple[ResolverSpec, frozenset[str]],
                              tuple[ResolverSpec, frozenset[str]]] | None:
    """The first two voters (in asking order) whose NS sets share a name."""
    for i, a in enumerate(voters):
        for b in voters[i + 1:]:
            if a[1] & b[1]:
                return a, b
    return None
