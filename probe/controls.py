"""Control names: does a resolver validate at all? Pure parsing and decisions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dns.name
import dns.rdatatype

from probe.classify import RCODE_NOERROR, RCODE_SERVFAIL, answer_chain
from probe.errors import ConfigError
from probe.observation import Observation, Outcome

# "off" switches a control off, even the built-in default for public resolvers. (An empty
# string is "not set": EngineConfig.controls_for then picks the default.)
CONTROL_OFF = frozenset({"", "off", "none"})


@dataclass(frozen=True, slots=True)
class Control:
    """One control question: a name and type asked with RD=1, DO=1."""

    qname: str  # absolute, lower case, with the trailing dot
    qtype: str

    def __str__(self) -> str:
        return f"{self.qname}/{self.qtype}"


def parse_control(text: str, *, what: str = "control") -> Control | None:
    """Parse "NAME" or "NAME/TYPE" (TYPE defaults to A); None for "off"/"none"/empty."""
    text = text.strip()
    if text.lower() in CONTROL_OFF:
        return None
    name, sep, rdtype = text.rpartition("/")
    if not sep or "." in rdtype:
        # No type: a slash inside a label is part of the name (RFC 2317 "0/26.2.0.192...").
        name, rdtype = text, "A"
    try:
        qname = dns.name.from_text(name).to_text().lower()
        qtype = dns.rdatatype.to_text(dns.rdatatype.from_text(rdtype.strip()))
    except Exception as exc:  # dnspython raises several unrelated types for bad text
        raise ConfigError(f"{what}: expected NAME or NAME/TYPE, got {text!r} "
                          f"({exc.__class__.__name__})") from None
    if (qname == "." or not text.isprintable()
            or dns.rdatatype.is_metatype(dns.rdatatype.from_text(qtype))):
        raise ConfigError(f"{what}: expected NAME or NAME/TYPE with a data type, got {text!r}")
    return Control(qname, qtype)


def check_control_text(text: str) -> str | None:
    """For config validation: None when valid, else what was expected."""
    try:
        parse_control(text)
    except ConfigError:
        return "NAME or NAME/TYPE (e.g. dnssec-failed.org/A), or 'off'"
    return None


@dataclass(frozen=True, slots=True)
class ControlVerdict:
    """What the control answers say about one resolver. `validating` None: undecided (ask again)."""

    validating: bool | None
    detail: str


def _has_data(obs: Observation, c: Control) -> bool:
    return (obs.outcome is Outcome.REPLY and obs.rcode == RCODE_NOERROR
            and bool(answer_chain(obs, c.qname, c.qtype).data))


def judge_controls(
    bogus: tuple[Control, Observation] | None,
    secure: tuple[Control, Observation] | None,
) -> ControlVerdict:
    """Pure: a validator must SERVFAIL the bogus control and answer the secure one with AD=1.

    Data without AD for the bogus name, or the secure name answered without AD, means the
    resolver does not validate (RFC 4035 §4.9.3, §5). Timeouts and other failures decide nothing.
    """
    seen_validating: list[str] = []
    undecided: list[str] = []
    bogus_answered = secure_validated = False
    if bogus is not None:
        c, obs = bogus
        if _has_data(obs, c) and not obs.ad:
            bogus_answered = True
        elif obs.outcome is Outcome.REPLY and obs.rcode == RCODE_SERVFAIL:
            seen_validating.append(f"SERVFAIL for the bogus control {c}")
        elif _has_data(obs, c):
            # AD=1 on a name that must fail: the control itself is no longer broken.
            undecided.append(f"bogus control {c} validated (is it still broken?)")
        else:
            undecided.append(f"bogus control {c}: {_what(obs)}")
    if secure is not None:
        c, obs = secure
        if _has_data(obs, c) and obs.ad:
            secure_validated = True
            seen_validating.append(f"AD=1 for the secure control {c}")
        elif _has_data(obs, c):
            # Alone this proves little (a negative trust anchor, the control zone gone
            # insecure); it only backs up an answered bogus control.
            undecided.append(f"secure control {c} answered without AD")
        else:
            undecided.append(f"secure control {c}: {_what(obs)}")
    if bogus_answered:
        assert bogus is not None
        if secure_validated:
            # It validates (AD=1 on the secure name), so the bogus name has gone insecure.
            return ControlVerdict(None, f"bogus control {bogus[0]} answered without AD while "
                                  "the secure control validated: the bogus control is no "
                                  "longer broken")
        return ControlVerdict(False, f"answered the bogus control {bogus[0]} with data, AD=0")
    if bogus is None and secure is not None and not secure_validated \
            and _has_data(secure[1], secure[0]):
        # Only a secure control configured: its AD=0 answer is all there is to go on.
        return ControlVerdict(False, f"answered the secure control {secure[0]} without AD")
    if seen_validating:
        return ControlVerdict(True, "; ".join(seen_validating))
    return ControlVerdict(None, "; ".join(undecided) or "no control configured")


def _what(obs: Observation) -> str:
    if obs.outcome is not Outcome.REPLY:
        return obs.outcome.value
    return f"rcode {obs.rcode}, AD={int(obs.ad)}"


@dataclass(frozen=True, slots=True)
class Answered:
    """The part of one sweep row that inference needs (kept free of engine types)."""

    resolver: str
    qname: str
    qtype: str
    ad_secure: bool  # verdict secure from an AD=1 answer
    no_ad: bool  # verdict insecure, reason no-ad


def infer_not_validating(rows: Iterable[Answered]) -> dict[str, str]:
    """Resolvers that answered without AD a name another resolver validated in the same sweep.

    The other resolver's AD=1 shows the chain validates from the root, so an AD=0 answer for it
    comes from a resolver that does not validate (RFC 4035 §5). A resolver that set AD=1 on any
    answer of the sweep does validate: its AD=0 rows are per-zone matters (an unsupported
    algorithm without EDE, a negative trust anchor), not a resolver that never validates.
    Pure; resolver name -> detail.
    """
    rows = list(rows)
    validated: dict[tuple[str, str], str] = {}
    validators: set[str] = set()
    for r in rows:
        if r.ad_secure:
            validated.setdefault((r.qname, r.qtype), r.resolver)
            validators.add(r.resolver)
    found: dict[str, list[str]] = {}
    for r in rows:
        by = validated.get((r.qname, r.qtype))
        if r.no_ad and by is not None and r.resolver not in validators:
            found.setdefault(r.resolver, []).append(f"{r.qname}/{r.qtype} (AD=1 at {by})")
    return {name: (f"answered {len(names)} name(s) without AD that another resolver validated, "
                   f"e.g. {names[0]}") for name, names in found.items()}
