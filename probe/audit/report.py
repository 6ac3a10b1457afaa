"""Audit findings for people: a table of findings and one line per zone's servers."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from probe.audit.auditor import AuditReport
from probe.audit.served import tags
from probe.codes import FindingCode, FindingSeverity
from probe.incidents import iso
from probe.report import plain

_STYLE = {FindingSeverity.CRITICAL: "bold red", FindingSeverity.WARNING: "yellow",
          FindingSeverity.INFO: "cyan"}
_ORDER = {FindingSeverity.CRITICAL: 0, FindingSeverity.WARNING: 1, FindingSeverity.INFO: 2}


def render_audit(report: AuditReport, out: Console) -> None:
    """Findings worst first, then what every server serves; names from replies stay plain."""
    every = sorted(report.findings, key=lambda f: (_ORDER[f.severity], f.zone, f.code.value))
    # no-history is said once for all zones it concerns, not a row each (every zone on a first run)
    found = [f for f in every if f.code is not FindingCode.NO_HISTORY]
    young = [f.zone for f in every if f.code is FindingCode.NO_HISTORY]
    if found:
        table = Table("severity", "finding", "zone", "detail", "at risk until",
                      title="audit findings")
        for f in found:
            table.add_row(Text(f.severity.value, style=_STYLE[f.severity]), f.code.value,
                          plain(f.zone), plain(f.detail),
                          iso(f.at_risk_until) if f.at_risk_until is not None else "-")
        out.print(table)
    servers = Table("zone", "server", "role", "serial", "publishes", "signs with",
                    "DNSKEY signed by", title="what the servers serve")
    for z in report.zones:
        for s in z.servers:
            if not s.answered:
                servers.add_row(plain(z.zone), plain(s.server), s.role.value, "-",
                                Text("no authoritative answer", style="yellow"), "", "")
                continue
            servers.add_row(plain(z.zone), plain(s.server), s.role.value, str(s.serial or "-"),
                            _t(s.keys), _t(s.signers), _t(s.ksk_signers))
        for p in z.parents:
            servers.add_row(plain(z.zone), plain(p.server), "parent DS", "-",
                            _t(p.ds) if p.answered else "no authoritative answer", "", "")
    out.print(servers)
    if young:
        out.print(Text(f"no-history: {len(young)} zone(s) ({', '.join(young[:5])}"
                       f"{', ...' if len(young) > 5 else ''}) have less history than their TTL + "
                       "margin (or a long gap since the last audit): key changes before it "
                       "cannot be judged", style="cyan"))
    counts = {s: sum(f.severity is s for f in every) for s in FindingSeverity}
    audited = sum(z.audited for z in report.zones)
    out.print(f"{audited} of {len(report.zones)} zone(s) audited: "
              + ", ".join(f"{n} {s.value}" for s, n in counts.items()))


def _t(ids: frozenset[str]) -> str:
    return ", ".join(str(t) for t in tags(ids)) or "-"
