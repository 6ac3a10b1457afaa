"""The incident state machine replayed from recorded rounds: open, update, resolve, no flapping pages."""

from __future__ import annotations

import pytest

from probe.errors import ConfigError
from probe.incidents import (
    BogusView,
    EventKind,
    Incident,
    IncidentEvent,
    IncidentPolicy,
    ZoneRound,
    incident_id,
    retire,
    step,
)

Z = "14.in-addr.arpa."
STALE = BogusView("stale-dnskey-cache", (47941,), (5510, 14201), 1000.0)
POLICY = IncidentPolicy(open_min_resolvers=2, resolve_rounds=3)


def play(rounds: list[dict[str, BogusView] | None], *, policy: IncidentPolicy = POLICY,
         start: dict[str, Incident] | None = None,
         ) -> tuple[dict[str, Incident], list[tuple[int, IncidentEvent]]]:
    """Feed one zone's bogus sets round by round (round i at t = 100 + 10 i); four resolvers
    answer in every round, except in a None round, where none does (timeouts)."""
    open_: dict[str, Incident] = dict(start or {})
    events: list[tuple[int, IncidentEvent]] = []
    for i, bogus in enumerate(rounds):
        zr = ZoneRound(Z, {}, 0) if bogus is None else ZoneRound(Z, bogus, 4)
        open_, evs = step(open_, [zr], now=100.0 + 10 * i, policy=policy)
        events += [(i, e) for e in evs]
    return open_, events


def test_opens_when_enough_resolvers_fail_in_one_round() -> None:
    open_, events = play([{}, {"a": STALE}, {"a": STALE, "b": STALE}])
    assert [(i, e.event) for i, e in events] == [(2, EventKind.OPEN)]
    inc = open_[Z]
    assert inc.id == incident_id(Z, 120.0) == "14.in-addr.arpa@1970-01-01T00:02:00Z"
    assert inc.kind == "stale-dnskey-cache" and inc.resolvers == ("a", "b")
    assert inc.rrsig_keytags == (47941,) and inc.cached_keytags == (5510, 14201)
    assert inc.recovers_at == 1000.0 and inc.affected == 2
    assert "47941" in inc.detail and "a, b" in inc.detail


def test_a_single_flapping_resolver_never_opens_an_incident() -> None:
    rounds = [{"a": STALE} if i % 2 else {} for i in range(40)]
    open_, events = play(rounds)
    assert not events and not open_


def test_updates_only_when_the_facts_change_and_resolves_after_clean_rounds() -> None:
    ab = {"a": STALE, "b": STALE}
    later = BogusView("stale-dnskey-cache", (47941,), (5510, 14201), 1010.0)
    rounds = [ab, ab, {"a": STALE, "b": STALE, "c": STALE}, {"a": later, "b": later, "c": later},
              {"c": STALE}, {}, {}, {}, {}]
    open_, events = play(rounds)
    kinds = [(i, e.event) for i, e in events]
    # recovers_at moving is not news; the affected set changing is (twice).
    assert kinds == [(0, EventKind.OPEN), (2, EventKind.UPDATE), (4, EventKind.UPDATE),
                     (7, EventKind.RESOLVE)]
    resolved = events[-1][1].incident
    assert resolved.resolved_at == 170.0 and not resolved.is_open
    assert resolved.affected == 1 and resolved.max_affected == 3
    assert resolved.id == events[0][1].incident.id  # one incident from open to resolve
    assert not open_


def test_a_relapse_before_resolve_keeps_the_same_incident() -> None:
    ab = {"a": STALE, "b": STALE}
    left, events = play([ab, {}, {}, ab, {}, {}, {}])
    assert [e.event for _, e in events] == [EventKind.OPEN, EventKind.RESOLVE]
    assert events[0][1].incident.id == events[1][1].incident.id
    assert not left


def test_dominant_kind_prefers_a_real_diagnosis() -> None:
    unknown = BogusView("unknown")
    src = BogusView("bogus-at-source")
    open_, _ = play([{"a": unknown, "b": unknown, "c": src}])
    assert open_[Z].kind == "bogus-at-source"
    assert open_[Z].kinds == ("bogus-at-source", "unknown")


def test_zones_missing_from_a_round_are_left_alone() -> None:
    open_, _ = play([{"a": STALE, "b": STALE}])
    later, events = step(open_, [], now=500.0, policy=POLICY)
    assert later == open_ and not events


def test_incident_round_trips_through_json_dict() -> None:
    open_, _ = play([{"a": STALE, "b": STALE}])
    inc = open_[Z]
    assert Incident.from_dict(inc.to_dict()) == inc


def test_retire_resolves_zones_no_longer_watched() -> None:
    open_, _ = play([{"a": STALE, "b": STALE}])
    kept, events = retire(open_, ["1.in-addr.arpa."], now=900.0)
    assert not kept and [e.event for e in events] == [EventKind.RESOLVE]
    assert events[0].incident.resolved_at == 900.0


@pytest.mark.parametrize("kw", [{"open_min_resolvers": 0}, {"resolve_rounds": 0}])
def test_policy_is_validated(kw: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        IncidentPolicy(**kw)


def test_rounds_where_too_few_resolvers_answer_do_not_resolve() -> None:
    """Lost uplink at the vantage: timeouts everywhere are not a recovery; the incident stays,
    with its id, and resolves only after real clean rounds."""
    ab = {"a": STALE, "b": STALE}
    left, events = play([ab, None, None, None, None, {}, None, {}, {}])
    assert [(i, e.event) for i, e in events] == [(0, EventKind.OPEN), (8, EventKind.RESOLVE)]
    assert not left
    one_answer = ZoneRound(Z, {}, 1)  # below open_min_resolvers: still blind
    still, evs = step(play([ab])[0], [one_answer] * 5, now=500.0, policy=POLICY)
    assert not evs and still[Z].clean_rounds == 0


def test_a_kind_change_says_what_it_was() -> None:
    src = BogusView("bogus-at-source", (1,), (2,))
    _, events = play([{"a": STALE, "b": STALE}, {"a": src, "b": src}])
    update = events[-1][1]
    assert update.event is EventKind.UPDATE and update.previous_kind == "stale-dnskey-cache"
    assert update.incident.kind == "bogus-at-source"
