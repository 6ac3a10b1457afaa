"""The InfluxDB schema (docs/schema.md): check results, zone summaries, incident events, rounds,
audit findings.

Pure functions from a round's results to influxdb-client `Point`s and line protocol; no I/O.
Tags are bounded codes only (vantage, resolver, zone, qtype, verdict, reason, diagnosis, event,
kind, code, severity): never a name, a key tag or free text. Timestamps are nanoseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from probe.alerts import AlertStats
from probe.audit.findings import Finding
from probe.codes import Verdict
from probe.engine import CheckResult
from probe.incidents import BogusView, IncidentEvent, ZoneRound
from probe.sinks import DeliveryStats

M_CHECK, M_ZONE, M_INCIDENT, M_ROUND = "dnssec_check", "dnssec_zone", "dnssec_incident", "dnssec_round"
M_STATS = "dnssec_probe_stats"
M_FINDING = "dnssec_finding"
NS = WritePrecision.NS

# Which verdict stands for a resolver in a zone with several probe names: the worst one.
_ZONE_RANK = {
    Verdict.BOGUS: 6, Verdict.SERVFAIL: 5, Verdict.ERROR: 4, Verdict.REFUSED: 4,
    Verdict.TIMEOUT: 3, Verdict.INSECURE: 2, Verdict.SECURE: 1, Verdict.UNREACHABLE: 0,
}
# dnssec_zone fields: refused counts as an error (the resolver did not do its job).
_ZONE_FIELD = {
    Verdict.SECURE: "secure", Verdict.INSECURE: "insecure", Verdict.BOGUS: "bogus",
    Verdict.SERVFAIL: "servfail", Verdict.TIMEOUT: "timeout", Verdict.ERROR: "error",
    Verdict.REFUSED: "error",
}


def ns(t: float) -> int:
    return round(t * 1e9)


@dataclass(frozen=True, slots=True)
class RoundInfo:
    """What the round itself was: its number, vantage, start, duration, whether it overran."""

    number: int
    vantage: str
    started: float
    duration_s: float
    overrun: bool
    partial: bool = False  # stopped (SIGTERM) before every check was done


def _tags(r: CheckResult) -> tuple[str, str, str, str, str, str]:
    d = r.diagnosis
    return (r.resolver.name, r.zone.name, r.probe.qtype, r.classification.verdict.value,
            d.kind.value if d else "none", r.classification.reason)


def check_times(results: Sequence[CheckResult]) -> list[int]:
    """Each check's send time in ns, spread so that two checks with the same tag set (names of
    one zone through one resolver) are at least 1 ms apart: neither InfluxDB (same series and
    time) nor a millisecond store like VictoriaMetrics can then fold them into one point."""
    return _spread([(r.observation.started, _tags(r)) for r in results])


def _spread(items: Sequence[tuple[float, Hashable]]) -> list[int]:
    """check_times over (send time, tag-set key) pairs, in send order per key."""
    times = [0] * len(items)
    last: dict[Hashable, int] = {}
    for i in sorted(range(len(items)), key=lambda i: items[i][0]):
        started, key = items[i]
        t = ns(started)
        prev = last.get(key)
        if prev is not None and t < prev + _MS:
            t = prev + _MS
        times[i] = last[key] = t
    return times


_MS = 1_000_000


# Line-protocol escaping, as influxdb-client does it (tests compare the two line for line).
_ESC_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t",
                          "\r": r"\r"})
_ESC_STR = str.maketrans({'"': r'\"', "\\": r"\\"})


def _tag_value(v: str) -> str:
    e = v.translate(_ESC_KEY)
    return e + " " if e.endswith("\\") else e  # a trailing backslash would escape the space


def _str_field(v: str) -> str:
    return '"' + v.translate(_ESC_STR) + '"'


def _float_field(v: float) -> str:
    s = str(v)
    return s[:-2] if s.endswith(".0") else s


class CheckLines:
    """dnssec_check lines built as the checks come in (the round keeps text, not results); the
    timestamps are spread by check_times's rule when lines() is asked for.

    Written as text directly: building an influxdb-client Point per check cost more than the
    sweep and most of a round's memory. Tags and fields in sorted order, as the client writes
    them (tests compare the two byte for byte); the other measurements still use Point."""

    def __init__(self, number: int, vantage: str) -> None:
        self.vantage = vantage
        self.tail = f"round={number}i"
        self._prefixes: dict[tuple[str, ...], str] = {}
        self._qnames: dict[str, str] = {}  # qname -> its escaped, quoted field text
        self._items: list[tuple[float, str, str]] = []  # send time, tag-set prefix, fields

    def __len__(self) -> int:
        return len(self._items)

    def add(self, r: CheckResult) -> None:
        o = r.observation
        d = r.diagnosis
        tags = _tags(r)
        pre = self._prefixes.get(tags)
        if pre is None:
            pairs = (("diagnosis", tags[4]), ("qtype", tags[2]), ("reason", tags[5]),
                     ("resolver", tags[0]), ("vantage", self.vantage), ("verdict", tags[3]),
                     ("zone", tags[1]))
            pre = self._prefixes[tags] = M_CHECK + "".join(
                f",{k}={e}" for k, v in pairs if (e := _tag_value(v))) + " "
        qname = self._qnames.get(r.probe.qname)
        if qname is None:
            qname = self._qnames[r.probe.qname] = _str_field(r.probe.qname)
        rtt = o.rtt_ms
        if d is None and o.nsid is None and o.rcode is not None and rtt is not None \
                and not o.ede and math.isfinite(rtt):
            # The usual check (an answer, no diagnosis): one format, same text as below.
            self._items.append((o.started, pre, (
                f"ad={'true' if o.ad else 'false'},ede=-1i,qname={qname},rcode={o.rcode}i,"
                f"{self.tail},rtt_ms={_float_field(float(rtt))}")))
            return
        f: list[str] = []
        if o.rcode is not None:
            f.append("ad=true" if o.ad else "ad=false")
        if d is not None:
            if d.cached_dnskey_ttl is not None:
                f.append(f"cached_dnskey_ttl={int(d.cached_dnskey_ttl)}i")
            if d.cached_ds_ttl is not None:
                f.append(f"cached_ds_ttl={int(d.cached_ds_ttl)}i")
            if d.zone is not None:  # diagnosed in another zone (a CNAME target): free text
                f.append("diagnosis_zone=" + _str_field(d.zone))
        f.append(f"ede={o.ede[0].code if o.ede else -1}i")
        if o.nsid is not None:  # which instance answered: free text, so a field
            f.append("nsid=" + _str_field(o.nsid))
        f.append("qname=" + qname)
        if o.rcode is not None:
            f.append(f"rcode={int(o.rcode)}i")
        if d is not None and d.recovers_in_s is not None:
            f.append(f"recovers_in_s={int(d.recovers_in_s)}i")
        f.append(self.tail)
        if o.rtt_ms is not None and math.isfinite(o.rtt_ms):
            f.append("rtt_ms=" + _float_field(float(o.rtt_ms)))
        self._items.append((o.started, pre, ",".join(f)))

    def lines(self) -> list[str]:
        times = _spread([(s, pre) for s, pre, _ in self._items])
        return [f"{pre}{body} {t}" for (_, pre, body), t in zip(self._items, times, strict=True)]


def check_lines(results: Sequence[CheckResult], rnd: RoundInfo) -> list[str]:
    """One dnssec_check line per check, at its send time (see check_times)."""
    b = CheckLines(rnd.number, rnd.vantage)
    for r in results:
        b.add(r)
    return b.lines()


class Worst:
    """zone -> resolver -> the worst check of that resolver in that zone, kept as checks come
    in. Equally bad ones are told apart by their question, not by which finished first: the
    incident a round feeds must not change its mind from one round to the next."""

    def __init__(self) -> None:
        self.by_zone: dict[str, dict[str, CheckResult]] = {}

    def add(self, r: CheckResult) -> None:
        per = self.by_zone.setdefault(r.zone.name, {})
        cur = per.get(r.resolver.name)
        if cur is None:
            per[r.resolver.name] = r
            return
        rank, cur_rank = _ZONE_RANK[r.classification.verdict], \
            _ZONE_RANK[cur.classification.verdict]
        if rank > cur_rank or (rank == cur_rank and (r.probe.qname, r.probe.qtype)
                               < (cur.probe.qname, cur.probe.qtype)):
            per[r.resolver.name] = r


def resolver_verdicts(results: Iterable[CheckResult]) -> dict[str, dict[str, CheckResult]]:
    """zone -> resolver -> the worst check of that resolver in that zone (see Worst)."""
    w = Worst()
    for r in results:
        w.add(r)
    return w.by_zone


def zone_points(worst: dict[str, dict[str, CheckResult]], rnd: RoundInfo) -> list[Point]:
    """One dnssec_zone point per zone: how many resolvers gave which verdict (unreachable ones
    are not counted: they say nothing about the zone)."""
    out = []
    t = ns(rnd.started)
    for zone, per in worst.items():
        counts = Counter(_ZONE_FIELD[r.classification.verdict] for r in per.values()
                         if r.classification.verdict is not Verdict.UNREACHABLE)
        n = sum(counts.values())
        p = Point(M_ZONE).tag("vantage", rnd.vantage).tag("zone", zone).field("resolvers", n)
        for name in ("secure", "insecure", "bogus", "servfail", "timeout", "error"):
            p.field(name, counts[name])
        p.field("bogus_ratio", counts["bogus"] / n if n else 0.0)
        out.append(p.field("round", rnd.number).time(t, NS))
    return out


_DEFINITE = frozenset({Verdict.SECURE, Verdict.INSECURE, Verdict.BOGUS})


def zone_rounds(worst: dict[str, dict[str, CheckResult]]) -> list[ZoneRound]:
    """The incident state machine's input: per zone, the resolvers that answered bogus and how
    many gave a definite answer at all."""
    out = []
    for zone, per in worst.items():
        answered = sum(1 for r in per.values() if r.classification.verdict in _DEFINITE)
        bogus: dict[str, BogusView] = {}
        for name, r in per.items():
            if r.classification.verdict is not Verdict.BOGUS:
                continue
            d = r.diagnosis
            bogus[name] = BogusView(
                kind=d.kind.value if d else "none",
                rrsig_keytags=d.rrsig_keytags if d else (),
                cached_keytags=d.cached_dnskey_keytags if d else (),
                recovers_at=d.recovers_at if d else None,
            )
        out.append(ZoneRound(zone, bogus, answered))
    return out


def incident_points(events: Sequence[IncidentEvent], rnd: RoundInfo) -> list[Point]:
    """One dnssec_incident point per event, at the event time, with the round that caused it."""
    out = []
    for e in events:
        i = e.incident
        p = (Point(M_INCIDENT).tag("vantage", rnd.vantage).tag("zone", i.zone)
             .tag("event", e.event.value).tag("kind", i.kind)
             .field("id", i.id).field("affected", i.affected)
             .field("resolvers", ",".join(i.resolvers))
             .field("rrsig_keytags", ",".join(str(t) for t in i.rrsig_keytags))
             .field("cached_keytags", ",".join(str(t) for t in i.cached_keytags))
             .field("detail", i.detail).field("round", rnd.number)
             .time(ns(e.at), NS))
        if i.recovers_at is not None:
            p.field("recovers_at", int(i.recovers_at))
        out.append(p)
    return out


def finding_points(findings: Sequence[Finding], rnd: RoundInfo) -> list[Point]:
    """One dnssec_finding point per audit finding of the round (a zone has at most one per
    code), at the round's start: key-change points are Grafana annotations."""
    out = []
    for f in findings:
        p = (Point(M_FINDING).tag("vantage", rnd.vantage).tag("zone", f.zone)
             .tag("code", f.code.value).tag("severity", f.severity.value)
             .field("detail", f.detail).field("keytags", ",".join(map(str, f.keytags)))
             .field("new_keytags", ",".join(map(str, f.new_keytags)))
             .field("servers", ",".join(f.servers)).field("round", rnd.number)
             .time(ns(rnd.started), NS))
        if f.at_risk_until is not None:
            p.field("at_risk_until", int(f.at_risk_until))
        out.append(p)
    return out


def round_point(rnd: RoundInfo, checks: int) -> Point:
    return (Point(M_ROUND).tag("vantage", rnd.vantage)
            .field("duration_s", float(rnd.duration_s)).field("checks", checks)
            .field("overrun", rnd.overrun).field("partial", rnd.partial)
            .field("round", rnd.number).time(ns(rnd.started), NS))


def stats_point(rnd: RoundInfo, d: DeliveryStats, a: AlertStats, open_incidents: int) -> Point:
    """The probe's own health, once per round (counters since the process started): what a
    dashboard shows beside the data. Written like any point, so an outage's failures arrive
    once the server is back."""
    return (Point(M_STATS).tag("vantage", rnd.vantage)
            .field("written_lines", d.written_lines)
            .field("write_failures", sum(d.write_failures.values()))
            .field("spooled_lines", d.spooled_lines).field("dropped_lines", d.dropped_lines)
            .field("rejected_lines", d.rejected_lines).field("spool_bytes", d.spool_bytes)
            .field("spool_batches", d.spool_batches)
            .field("last_success", int(d.last_success or 0))
            .field("alerts_sent", sum(a.sent.values()))
            .field("alert_failures", sum(a.failures.values()))
            .field("alerts_pending", a.pending).field("open_incidents", open_incidents)
            .field("round", rnd.number).time(ns(rnd.started), NS))


def to_lines(points: Iterable[Point]) -> list[str]:
    """Line protocol, one line per point (influxdb-client does all the escaping)."""
    return [line for p in points if (line := p.to_line_protocol())]
