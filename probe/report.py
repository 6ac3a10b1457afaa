"""Presenting results: the terminal table, the JSON document, the summary and the exit status."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

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
    sev = {r.severity for r in results}
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
    d = r.diagnosis
    o = r.observation
    if d is not None:
        if d.kind is DiagnosisKind.STALE_DNSKEY_CACHE:
            text = (f"stale DNSKEY cache: signed by key {format_tags(d.rrsig_keytags)}, resolver "
                    f"caches {format_tags(d.cached_dnskey_keytags)}")
            if d.recovers_in_s is not None:
                text += f"; recovers in about {d.recovers_in_s} s"
            return text
        if d.kind is DiagnosisKind.BOGUS_AT_SOURCE:
            return f"bogus at source: {d.detail}"
        return f"unknown cause: {d.detail}"
    if o.outcome is not Outcome.REPLY:
        return o.detail
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


def to_json(results: Sequence[CheckResult], *, raw: bool = False,
            interrupted: bool = False) -> str:
    doc: dict[str, Any] = {
        "results": [r.to_json(raw=raw) for r in results],
        "summary": dict(Counter(r.classification.verdict.value for r in results)),
        "exit_status": exit_status(results),
    }
    if interrupted:
        doc["interrupted"] = True
    return json.dumps(doc, indent=2)
