"""AlertmanagerChannel against a real prometheus-alertmanager (0.25, Debian 12): fire, refresh, resolve."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alert_fixtures import PAGERDUTY_PATH, PAGERDUTY_TEST_KEY, WEBHOOK_PATH, Alertmanager

from probe.alerts import AlertStats
from probe.alerts.alertmanager import AlertmanagerChannel
from probe.alerts.dispatch import Alerter
from probe.incidents import EventKind, Incident, IncidentEvent, incident_id
from probe.state import StateStore

VANTAGE = "probe-test"


def make_incident(zone: str, *, kind: str = "stale-dnskey-cache") -> Incident:
    opened = time.time() - 30
    return Incident(id=incident_id(zone, opened), zone=zone, opened_at=opened, updated_at=opened,
                    kind=kind, kinds=(kind,), resolvers=("google-1", "quad9-1"),
                    rrsig_keytags=(20326,), cached_keytags=(38696,), recovers_at=opened + 3600)


def resolved(inc: Incident) -> Incident:
    now = time.time()
    return replace(inc, resolved_at=now, updated_at=now, clean_rounds=3)


def notified(am: Alertmanager, inc: Incident, status: str) -> list[dict[str, Any]]:
    """Alerts of this incident in webhook notifications with this status."""
    return [a for n in am.received(WEBHOOK_PATH) for a in n["alerts"]
            if a["labels"].get("incident_id") == inc.id and a["status"] == status]


def paged(am: Alertmanager, inc: Incident, action: str) -> list[dict[str, Any]]:
    """PagerDuty Events v2 bodies Alertmanager sent for this incident's zone group."""
    return [b for b in am.received(PAGERDUTY_PATH)
            if b.get("event_action") == action and inc.zone in json.dumps(b)]


def when(s: str) -> float:
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


async def test_open_fires_and_resolve_resolves(alertmanager: Alertmanager) -> None:
    am = alertmanager
    assert am.version.startswith("alertmanager, version 0.")
    inc = make_incident("fire.example.")
    ch = AlertmanagerChannel(am.url, resend_grace=120)
    try:
        await ch.send(ch.on_event(IncidentEvent(EventKind.OPEN, inc, inc.opened_at),
                                  vantage=VANTAGE)[0])
        await am.wait_for_async(lambda: bool(notified(am, inc, "firing")) and bool(
            paged(am, inc, "trigger")), timeout=10)
        [alert] = notified(am, inc, "firing")
        assert alert["labels"] == {
            "alertname": "DNSSECValidationFailure", "zone": "fire.example.",
            "vantage": VANTAGE, "severity": "critical", "kind": "stale-dnskey-cache",
            "incident_id": inc.id}
        assert alert["annotations"] == {
            "summary": "DNSSEC validation failing for fire.example. at 2 resolvers",
            "description": inc.detail}
        assert abs(when(alert["startsAt"]) - inc.opened_at) < 0.01
        [page] = paged(am, inc, "trigger")
        assert page["routing_key"] == PAGERDUTY_TEST_KEY and page["dedup_key"]
        # the API shows it active; the round's refresh sets an explicit endsAt
        refresh = ch.refresh([inc], vantage=VANTAGE, now=time.time())
        assert refresh is not None
        await ch.send(refresh)
        [active] = am.alerts(incident_id=inc.id)
        assert active["status"]["state"] == "active"
        assert when(active["endsAt"]) > time.time() + 100

        done = resolved(inc)
        await ch.send(ch.on_event(IncidentEvent(EventKind.RESOLVE, done, done.updated_at),
                                  vantage=VANTAGE)[0])
        await am.wait_for_async(lambda: bool(notified(am, inc, "resolved")) and bool(
            paged(am, inc, "resolve")), timeout=10)
        [gone] = notified(am, inc, "resolved")
        assert abs(when(gone["endsAt"]) - (done.resolved_at or 0)) < 0.01
        assert paged(am, inc, "resolve")[0]["dedup_key"] == page["dedup_key"]
        assert am.alerts(incident_id=inc.id) == []  # the API lists resolved alerts no more
    finally:
        await ch.close()


async def test_kind_change_ends_the_old_alert(alertmanager: Alertmanager) -> None:
    am = alertmanager
    inc = make_incident("kind.example.", kind="unknown")
    ch = AlertmanagerChannel(am.url, resend_grace=120)

    def by_kind(status: str, kind: str) -> list[dict[str, Any]]:
        return [a for a in notified(am, inc, status) if a["labels"]["kind"] == kind]

    try:
        for body in [*ch.on_event(IncidentEvent(EventKind.OPEN, inc, inc.opened_at),
                                  vantage=VANTAGE), ch.refresh([inc], vantage=VANTAGE,
                                                               now=time.time())]:
            assert body is not None
            await ch.send(body)
        await am.wait_for_async(lambda: bool(by_kind("firing", "unknown")), timeout=10)
        upd = replace(inc, kind="stale-dnskey-cache", kinds=("stale-dnskey-cache",),
                      updated_at=time.time())
        # the update ends the old kind itself; the refresh after it knows nothing of it (pure)
        for body in [*ch.on_event(IncidentEvent(EventKind.UPDATE, upd, upd.updated_at,
                                                previous_kind="unknown"), vantage=VANTAGE),
                     ch.refresh([upd], vantage=VANTAGE, now=time.time())]:
            assert body is not None
            await ch.send(body)
        active = am.alerts(incident_id=inc.id)
        assert [a["labels"]["kind"] for a in active] == ["stale-dnskey-cache"]
        await am.wait_for_async(lambda: bool(by_kind("resolved", "unknown"))
                                and bool(by_kind("firing", "stale-dnskey-cache")), timeout=10)
        [ended] = by_kind("resolved", "unknown")
        assert abs(when(ended["endsAt"]) - upd.updated_at) < 0.01
    finally:
        await ch.close()


async def test_alert_lapses_without_refresh(alertmanager: Alertmanager) -> None:
    """A probe that stops refreshing (dead daemon) lets the alert end after resend_grace."""
    am = alertmanager
    inc = make_incident("lapse.example.")
    ch = AlertmanagerChannel(am.url, resend_grace=1.5)
    try:
        body = ch.refresh([inc], vantage=VANTAGE, now=time.time())
        assert body is not None
        await ch.send(body)
        assert len(am.alerts(incident_id=inc.id)) == 1
        await am.wait_for_async(lambda: bool(notified(am, inc, "resolved")), timeout=10)
        assert am.alerts(incident_id=inc.id) == []
    finally:
        await ch.close()


async def test_alerter_end_to_end(alertmanager: Alertmanager, tmp_path: Path) -> None:
    am = alertmanager
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    ch = AlertmanagerChannel(am.url, resend_grace=120)
    alerter = Alerter([ch], store, stats, vantage=VANTAGE, backoff_initial=0.1, backoff_max=1)
    task = asyncio.create_task(alerter.run())
    inc = make_incident("e2e.example.")
    try:
        opened = [IncidentEvent(EventKind.OPEN, inc, inc.opened_at)]
        store.commit_round(1, [inc], alerter.items(opened), now=time.time())
        alerter.kick([inc])
        await am.wait_for_async(lambda: bool(notified(am, inc, "firing")), timeout=10)
        done = resolved(inc)
        closing = [IncidentEvent(EventKind.RESOLVE, done, done.updated_at)]
        store.commit_round(2, [done], alerter.items(closing), now=time.time())
        alerter.kick([])
        await am.wait_for_async(lambda: bool(notified(am, inc, "resolved")), timeout=10)
        assert stats.sent == {"alertmanager": 2} and not stats.failures
        assert store.outbox_size() == 0
    finally:
        await alerter.shutdown(2)
        await asyncio.wait_for(task, 5)
        await ch.close()
        store.close()


@pytest.fixture(autouse=True)
def _fresh_records(alertmanager: Alertmanager) -> None:
    alertmanager.clear()
