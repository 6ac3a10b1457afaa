"""Presenting results: the terminal table, the JSON document, the summary and the exit status."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _jstr
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from probe.codes import DiagnosisKind, Severity, Verdict
from probe.diagnose import format_tags
from probe.engine import CheckResult
from probe.observation import Outcome

EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3

_RANK = {Severity.CRITICAL: 3, Severity.WARNING: 2, Severity.OK: 1, Severity.NOT_APPLICABLE: 0}
_STYLE = {
    Verdict.SECURE: "green",
    Verdict.INSECURE: "yellow",
    Verdict.BOGUS: "bold red",
    Verdict.SERVFAIL: "red",
    Verdict.TIMEOUT: "yellow",
    Verdict.REFUSED: "yellow",
    Verdict.ERROR: "magenta",
    Verdict.UNREACHABLE: "dim",
}


def visible(text: str) -> str:
    """Untrusted text for a terminal: control, format and separator characters (ESC, CR, U+2028,
    bidi overrides) written as escapes, so a reply or a file cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def plain(text: str, style: str = "") -> Text:
    """Text for rich from a reply, a file or a flag: never parsed as markup, never raw control
    characters. Every such string enters rich through here."""
    return Text(visible(text), style=style)


def exit_status(results: Sequence[CheckResult]) -> int:
    """Monitoring-plugin convention: 0 OK, 1 warning, 2 critical, 3 nothing could be checked."""
    return _status({r.severity for r in results})


def _status(sev: set[Severity]) -> int:
    if Severity.CRITICAL in sev:
        return EXIT_CRITICAL
    if Severity.WARNING in sev:
        return EXIT_WARNING
    if Severity.OK in sev:
        return EXIT_OK
    return EXIT_UNKNOWN


def worst_per_row(results: Sequence[CheckResult]) -> list[CheckResult]:
    """One result per (zone, resolver): the worst of its probe names, in input order."""
    rows: dict[tuple[str, str], CheckResult] = {}
    for r in results:
        key = (r.zone.name, r.resolver.name)
        cur = rows.get(key)
        if cur is None or _RANK[r.severity] > _RANK[cur.severity]:
            rows[key] = r
    return list(rows.values())


def explain(r: CheckResult) -> str:
    """The diagnosis (or the failure) in words, for the table."""
    text = cause(r)
    d = r.diagnosis
    if d is not None and d.recovers_in_s is not None:
        text += f"; recovers in about {d.recovers_in_s} s"
    return text


def cause(r: CheckResult) -> str:
    """The diagnosis (or the failure) in words, without the recovery prediction."""
    d = r.diagnosis
    o = r.observation
    if d is not None:
        where = f" (in zone {d.zone.rstrip('.')})" if d.zone else ""
        if d.kind is DiagnosisKind.STALE_DNSKEY_CACHE:
            return (f"stale DNSKEY cache{where}: signed by key {format_tags(d.rrsig_keytags)}, "
                    f"resolver caches {format_tags(d.cached_dnskey_keytags)}")
        if d.kind is DiagnosisKind.STALE_DS_CACHE:
            return (f"stale DS cache{where}: resolver caches DS {format_tags(d.cached_ds_keytags)}"
                    f", parent now has DS {format_tags(d.ds_keytags)}")
        if d.kind is DiagnosisKind.STALE_DNSKEY_VS_DS:
            return (f"stale DNSKEY cache for the new DS{where}: parent DS "
                    f"{format_tags(d.ds_keytags)}, resolver caches DNSKEY "
                    f"{format_tags(d.cached_dnskey_keytags)}")
        if d.kind is DiagnosisKind.INCONSISTENT_SOURCES:
            # No recovery while the servers disagree (recovers_in_s is None by design).
            return (f"authoritative servers disagree{where}, no recovery while they do: "
                    f"{d.detail}")
        if d.kind is DiagnosisKind.INSECURE_DELEGATION:
            return f"insecure delegation (no DS at the parent){where}: {d.detail}"
        if d.kind is DiagnosisKind.BOGUS_AT_SOURCE:
            return f"bogus at source{where}: {d.detail}"
        return f"unknown cause{where}: {d.detail}"
    if o.outcome is not Outcome.REPLY:
        return o.detail
    if r.classification.reason == "not-validating":
        return "the resolver does not validate (it answers a name that must fail)"
    if r.classification.verdict is Verdict.INSECURE:
        return "no AD bit: answer not validated"
    if r.classification.reason == "ad-denial":
        # Validated, but a probe name should exist: aggressive NSEC could answer from old data.
        return "authenticated denial: the probed name or type does not exist"
    return ""


def summary(results: Sequence[CheckResult]) -> str:
    counts = Counter(r.classification.verdict for r in results)
    zones = {r.zone.name for r in results}
    resolvers = {r.resolver.name for r in results}
    parts = [f"{counts[v]} {v.value}" for v in Verdict if counts[v]]
    line = f"{len(results)} checks ({len(zones)} zones x {len(resolvers)} resolvers): " + ", ".join(parts)
    unreachable = {visible(r.resolver.name) for r in results
                   if r.classification.verdict is Verdict.UNREACHABLE}
    if unreachable:
        v6 = {visible(r.resolver.name) for r in results
              if r.classification.verdict is Verdict.UNREACHABLE and r.resolver.family == 6}
        line += (f"\nunreachable from this host (not a zone failure): {', '.join(sorted(unreachable))}"
                 + (" — this host seems to have no IPv6 route" if v6 == unreachable else ""))
    kinds = Counter(r.diagnosis.kind.value for r in results if r.diagnosis)
    if kinds:
        line += "\ndiagnoses: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    return line


def render_table(results: Sequence[CheckResult], console: Console) -> None:
    table = Table(show_header=True, header_style="bold", expand=False)
    for col in ("zone", "resolver", "address", "verdict", "rcode", "AD", "EDE", "rtt ms",
                "diagnosis"):
        table.add_column(col, overflow="fold")
    for r in worst_per_row(results):
        o = r.observation
        verdict = r.classification.verdict
        rcode = r.rcode_text or "-"
        ede = ",".join(str(e.code) for e in o.ede) or "-"
        zone = r.zone.name.rstrip(".")
        # Names, labels and details come from replies and input files: plain Text, no markup.
        table.add_row(
            plain(f"{zone} ({r.zone.label})" if r.zone.label else zone),
            plain(r.resolver.name),
            plain(r.resolver.address),
            Text(verdict.value, style=_STYLE[verdict]),
            plain(rcode),
            ("1" if o.ad else "0") if o.outcome is Outcome.REPLY else "-",
            plain(ede),
            f"{o.rtt_ms:.1f}" if o.rtt_ms is not None else "-",
            plain(explain(r)),
        )
    console.print(table)
    console.print(Text(summary(results)))


# ---- the default view: the picture first (issue 8 item 7) -------------------------------------

MARKS: dict[Verdict, str] = {
    Verdict.SECURE: ".",
    Verdict.INSECURE: "i",
    Verdict.BOGUS: "B",
    Verdict.SERVFAIL: "S",
    Verdict.TIMEOUT: "T",
    Verdict.REFUSED: "R",
    Verdict.ERROR: "E",
    Verdict.UNREACHABLE: "-",
}
NOT_VALIDATING_MARK = "n"
NOT_CHECKED_MARK = " "  # an interrupted run leaves pairs unasked
_ZONE_WIDTH = 40  # the matrix's zone column, at most


@dataclass(frozen=True, slots=True)
class ProblemGroup:
    """Rows of one zone that failed the same way: same verdict, reason, diagnosis, key tags."""

    rows: tuple[CheckResult, ...]

    @property
    def first(self) -> CheckResult:
        return self.rows[0]

    @property
    def resolvers(self) -> list[str]:
        return [r.resolver.name for r in self.rows]


def _order(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def silent_resolvers(results: Sequence[CheckResult]) -> dict[str, str]:
    """Resolvers that never answered any check, each with one line of why (not one per zone)."""
    by: dict[str, list[CheckResult]] = {}
    for r in results:
        by.setdefault(r.resolver.name, []).append(r)
    out: dict[str, str] = {}
    for name, rows in by.items():
        if any(r.observation.outcome is Outcome.REPLY for r in rows):
            continue
        n = len({r.zone.name for r in rows})
        unreachable = all(r.classification.verdict is Verdict.UNREACHABLE for r in rows)
        # The breaker's "N consecutive timeouts" says more than the last timeout's detail.
        details = ([r.observation.detail for r in rows if r.observation.outcome is Outcome.SKIPPED]
                   or [r.observation.detail for r in rows if r.observation.detail])
        detail = Counter(details).most_common(1)[0][0] if details else ""
        text = f"{'unreachable' if unreachable else 'no answer'} for all {n} zone{_s(n)}"
        out[name] = text + (f" ({detail})" if detail else "")
    return out


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _not_validating_row(r: CheckResult, not_validating: Mapping[str, str]) -> bool:
    return (r.classification.reason == "not-validating"
            or (r.resolver.name in not_validating
                and r.classification.verdict is Verdict.INSECURE))


def _group_key(r: CheckResult) -> tuple[Any, ...]:
    d = r.diagnosis
    diag: tuple[Any, ...] = () if d is None else (
        d.kind, d.zone, tuple(sorted(d.rrsig_keytags)), tuple(sorted(d.cached_dnskey_keytags)),
        tuple(sorted(d.ds_keytags)), tuple(sorted(d.cached_ds_keytags)))
    # With a diagnosis, how the verdict was reached (an EDE, CD=1 data, the diagnosis) does
    # not split a group: BIND and PowerDNS send no EDE for the failure Unbound tags with one.
    reason = r.classification.reason if d is None else ""
    return (r.zone.name, r.classification.verdict, reason, diag)


def problem_groups(results: Sequence[CheckResult], *,
                   not_validating: Mapping[str, str] | None = None) -> list[ProblemGroup]:
    """Every row that is not fine, grouped by zone and by how it failed, in zone order.
    Resolvers that never answered and resolvers that do not validate are left to their own
    one-line entries instead of one row per zone."""
    silent = silent_resolvers(results)
    nv = not_validating or {}
    groups: dict[tuple[Any, ...], list[CheckResult]] = {}
    for r in worst_per_row(results):
        if r.severity is Severity.OK or r.resolver.name in silent or _not_validating_row(r, nv):
            continue
        groups.setdefault(_group_key(r), []).append(r)
    # worst_per_row keeps input order (zone-major), so dict order is zone order already.
    return [ProblemGroup(tuple(rows)) for rows in groups.values()]


def _recovery(rows: Sequence[CheckResult]) -> str:
    secs = sorted(r.diagnosis.recovers_in_s for r in rows
                  if r.diagnosis is not None and r.diagnosis.recovers_in_s is not None)
    if not secs:
        return ""
    if secs[0] == secs[-1]:
        return f"recovers in about {secs[0]} s"
    return f"recovers in {secs[0]} to {secs[-1]} s"


def group_text(g: ProblemGroup) -> tuple[Text, Text]:
    """Two lines: zone, verdict, code and resolvers; then the cause, key tags and recovery."""
    r = g.first
    verdict = r.classification.verdict
    zone = r.zone.name.rstrip(".")
    code = r.diagnosis.kind.value if r.diagnosis is not None else r.classification.reason
    names = g.resolvers
    head = Text.assemble(
        plain(f"{zone} ({r.zone.label})" if r.zone.label else zone, "bold"), "  ",
        Text(verdict.value, style=_STYLE[verdict]), "  ", plain(code), "  ",
        plain(f"{len(names)} resolver{_s(len(names))}: {', '.join(names)}"))
    causes = _order([cause(x) for x in g.rows])
    words = causes[0] + ("" if len(causes) == 1 else
                         f" (and {len(causes) - 1} other detail{_s(len(causes) - 1)}, see --all)")
    rec = _recovery(g.rows)
    words += (f"; {rec}" if rec and words else rec)
    return head, plain("    " + (words or "-"))


def matrix_lines(results: Sequence[CheckResult], *, width: int = 160,
                 not_validating: Mapping[str, str] | None = None) -> list[Text]:
    """Zones down, resolvers across (numbered), one verdict mark per cell (the worst probe)."""
    nv = not_validating or {}
    zones = _order([r.zone.name for r in results])
    resolvers = _order([r.resolver.name for r in results])
    cell: dict[tuple[str, str], CheckResult] = {
        (r.zone.name, r.resolver.name): r for r in worst_per_row(results)}
    cw = len(str(len(resolvers))) + 1
    zw = max(8, min(_ZONE_WIDTH, width - cw * len(resolvers) - 1,
                    max((len(visible(z.rstrip("."))) for z in zones), default=8)))
    lines = [Text(" " * zw + "".join(f"{i:>{cw}}" for i in range(1, len(resolvers) + 1)),
                  style="dim")]
    for z in zones:
        name = visible(z.rstrip("."))
        # Reverse zones differ in their first labels: keep the start.
        name = name if len(name) <= zw else name[:zw - 1] + "\u2026"
        line = Text(f"{name:<{zw}}")
        for res in resolvers:
            r = cell.get((z, res))
            if r is None:
                line.append(f"{NOT_CHECKED_MARK:>{cw}}")
            elif _not_validating_row(r, nv):
                line.append(f"{NOT_VALIDATING_MARK:>{cw}}", style="yellow")
            else:
                v = r.classification.verdict
                line.append(f"{MARKS[v]:>{cw}}", style=_STYLE[v])
        lines.append(line)
    return lines


def legend(results: Sequence[CheckResult]) -> Text:
    """The marks and the numbered resolvers of the matrix."""
    text = Text("marks: ")
    for v in Verdict:
        text.append(MARKS[v], style=_STYLE[v])
        text.append(f" {v.value}  ")
    text.append(NOT_VALIDATING_MARK, style="yellow")
    text.append(" not-validating  (blank) not checked\nresolvers: ")
    resolvers = _order([r.resolver.name for r in results])
    text.append_text(plain("  ".join(f"{i}={n}" for i, n in enumerate(resolvers, 1))))
    return text


def render_view(results: Sequence[CheckResult], console: Console, *,
                not_validating: Mapping[str, str] | None = None) -> None:
    """The default terminal view: problems grouped, the matrix, silent resolvers once, then
    the summary. Every name from a file or a reply enters rich as plain Text (no markup)."""
    nv = dict(not_validating or {})
    groups = problem_groups(results, not_validating=nv)
    if groups:
        n = sum(len(g.rows) for g in groups)
        console.print(Text(f"problems: {n} row{_s(n)} in {len(groups)} group{_s(len(groups))}",
                           style="bold"))
        for g in groups:
            for line in group_text(g):
                console.print(line, soft_wrap=True)
    elif results:
        console.print(Text("problems: none", style="bold"))
    silent = silent_resolvers(results)
    if silent or nv:
        console.print(Text("resolvers", style="bold"))
        for name, why in silent.items():
            console.print(plain(f"  {name}: {why}"), soft_wrap=True)
        for name, why in nv.items():
            zones = len({r.zone.name for r in results
                         if r.resolver.name == name and _not_validating_row(r, nv)})
            console.print(plain(f"  {name}: does not validate ({why or 'not-validating'}); "
                                f"{zones} zone{_s(zones)} marked {NOT_VALIDATING_MARK}"),
                          soft_wrap=True)
    if results:
        console.print(Text("matrix", style="bold"))
        for line in matrix_lines(results, width=console.width, not_validating=nv):
            console.print(line, soft_wrap=True)
        console.print(legend(results))
    console.print(Text(summary(results)))


class RowEncoder:
    """json.dumps(r.to_json()) for the usual row (no diagnosis, no EDE), in a fraction of the
    time: the parts shared by many rows (resolver and zone, verdict) are encoded once, strings
    by json's own C escaper (what json.dumps calls for a str). Any other row goes through
    json.dumps. Tests compare the two text for text."""

    def __init__(self) -> None:
        # Heads keyed by the identity of the resolver and zone objects a sweep shares between
        # its rows (bounded by resolvers x zones), kept alive by the value so an id is never
        # reused while cached: hashing two ints is cheaper than hashing five strings per row.
        self._heads: dict[tuple[int, int], tuple[object, object, str]] = {}
        # Enum members are singletons: their ids are stable keys.
        self._verdicts: dict[tuple[int, str, int], tuple[str, Severity]] = {}

    def encode(self, r: CheckResult) -> tuple[str, Severity]:
        o = r.observation
        if r.diagnosis is not None or o.ede:
            return json.dumps(r.to_json()), r.severity
        res, zone, cls = r.resolver, r.zone, r.classification
        hk = (id(res), id(zone))
        held = self._heads.get(hk)
        if held is None:
            held = self._heads[hk] = (res, zone, json.dumps({
                "resolver": res.name, "address": res.address, "operator": res.operator,
                "zone": zone.name, "label": zone.label})[:-1])
        vk = (id(cls.verdict), cls.reason, id(zone.expect))
        known = self._verdicts.get(vk)
        if known is None:
            sev = r.severity
            known = self._verdicts[vk] = (json.dumps({
                "verdict": cls.verdict.value, "reason": cls.reason,
                "severity": sev.value})[1:-1], sev)
        rcode = r.rcode_text
        ad = ("true" if o.ad else "false") if o.outcome is Outcome.REPLY else "null"
        rtt = "null" if o.rtt_ms is None else _json_float(round(o.rtt_ms, 3))
        return (f'{held[2]}, "qname": {_jstr(r.probe.qname)}, "qtype": {_jstr(r.probe.qtype)}, '
                f'{known[0]}, "rcode": {"null" if rcode is None else _jstr(rcode)}, "ad": {ad}, '
                f'"ede": [], "rtt_ms": {rtt}, "transport": {_jstr(o.transport)}, '
                f'"attempts": {o.attempts}, "time": {_json_float(o.started)}, '
                '"diagnosis": null}'), known[1]


def _json_float(v: float) -> str:
    # What json writes: repr for a finite float, Infinity / NaN / ints its own way.
    return float.__repr__(v) if type(v) is float and math.isfinite(v) else json.dumps(v)


class JsonStream:
    """The `check --json` document written as results are decided: `{"results": [` first, one
    result per line, then summary, exit_status (and interrupted, not_validating) — the same
    keys as to_json, in constant memory. Results come in the order they were decided."""

    def __init__(self, out: TextIO, *, raw: bool = False) -> None:
        self.out = out
        self.raw = raw
        self.counts: Counter[Verdict] = Counter()  # by member: .value costs on every row
        self.severities: set[Severity] = set()
        self.rows = RowEncoder()
        out.write('{"results": [')

    def add(self, r: CheckResult) -> None:
        if self.raw:
            text, sev = json.dumps(r.to_json(raw=True)), r.severity
        else:
            text, sev = self.rows.encode(r)
        self.out.write(("\n  " if not self.counts else ",\n  ") + text)
        self.counts[r.classification.verdict] += 1
        self.severities.add(sev)

    @property
    def exit_status(self) -> int:
        return _status(self.severities)

    def finish(self, *, interrupted: bool = False,
               not_validating: Mapping[str, str] | None = None) -> int:
        tail: dict[str, Any] = {"summary": {v.value: n for v, n in self.counts.items()},
                                "exit_status": self.exit_status}
        if interrupted:
            tail["interrupted"] = True
        if not_validating:
            tail["not_validating"] = dict(not_validating)
        rest = json.dumps(tail)[1:]  # the tail's members, after the results array
        self.out.write(("\n]," if self.counts else "],") + (" " + rest if rest != "}" else "}")
                       + "\n")
        self.out.flush()
        return self.exit_status
