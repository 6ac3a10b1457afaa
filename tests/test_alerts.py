"""Alert channels (exact bodies, error translation) and the dispatcher against a loopback recorder."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alert_fixtures import HttpReceiver

from probe.alerts import AlertStats, Channel
from probe.alerts.alertmanager import AlertmanagerChannel, rfc3339
from probe.alerts.dispatch import Alerter, outbox_key
from probe.alerts.pagerduty import EVENTS_URL, PagerDutyChannel, dedup_key
from probe.alerts.webhook import WebhookChannel
from probe.errors import ConfigError, DeliveryRejected, DeliveryRetryable
from probe.incidents import EventKind, Incident, IncidentEvent, incident_id
from probe.state import StateStore

VANTAGE = "probe-ams1"
T0 = 1_796_236_200.0  # 2026-12-02T18:30:00Z
ZONE = "14.in-addr.arpa."
RESOLVERS = ("cloudflare-1", "google-1", "quad9-1", "opendns-1")
SECRET = "R0UTING-KEY-do-not-log-7f3a9c"
FAST_B0, FAST_MAX = 0.05, 0.2  # backoff for tests: retries within a fraction of a second


def make_incident(zone: str = ZONE, *, opened: float = T0, updated: float | None = None,
                  kind: str = "stale-dnskey-cache", resolvers: Sequence[str] = RESOLVERS,
                  resolved: float | None = None) -> Incident:
    return Incident(
        id=incident_id(zone, opened), zone=zone, opened_at=opened,
        updated_at=opened if updated is None else updated, kind=kind, kinds=(kind,),
        resolvers=tuple(sorted(resolvers)), rrsig_keytags=(20326,), cached_keytags=(38696,),
        recovers_at=opened + 3600, resolved_at=resolved)


def lifecycle(zone: str = ZONE, opened: float = T0) -> list[IncidentEvent]:
    """open -> update (one more resolver) -> resolve, as incidents.step would emit them."""
    inc = make_incident(zone, opened=opened, resolvers=RESOLVERS[:3])
    upd = replace(inc, resolvers=RESOLVERS, updated_at=opened + 60)
    done = replace(upd, clean_rounds=3, resolved_at=opened + 300, updated_at=opened + 300)
    return [IncidentEvent(EventKind.OPEN, inc, inc.updated_at),
            IncidentEvent(EventKind.UPDATE, upd, upd.updated_at),
            IncidentEvent(EventKind.RESOLVE, done, done.updated_at)]


# -- bodies (pure) -------------------------------------------------------------------------------


def test_alertmanager_open_update_resolve_bodies() -> None:
    ch = AlertmanagerChannel("http://127.0.0.1:9093/", resend_grace=240)
    assert ch.endpoint == "http://127.0.0.1:9093/api/v2/alerts"
    opened, updated, resolved = lifecycle()
    labels = {"alertname": "DNSSECValidationFailure", "zone": ZONE, "vantage": VANTAGE,
              "severity": "critical", "kind": "stale-dnskey-cache",
              "incident_id": "14.in-addr.arpa@2026-12-02T18:30:00Z"}
    assert ch.on_event(opened, vantage=VANTAGE) == [{"alerts": [{
        "labels": labels,
        "annotations": {
            "summary": "DNSSEC validation failing for 14.in-addr.arpa. at 3 resolvers",
            "description": opened.incident.detail,
        },
        "startsAt": "2026-12-02T18:30:00.000Z",
    }]}]
    # an update goes out at once, firing, with the new facts; identity unchanged
    [upd] = ch.on_event(updated, vantage=VANTAGE)
    assert upd["alerts"][0]["labels"] == labels
    assert upd["alerts"][0]["annotations"]["summary"].endswith("at 4 resolvers")
    assert "endsAt" not in upd["alerts"][0]
    assert "predicted recovery by 2026-12-02T19:30:00Z" in upd["alerts"][0]["annotations"][
        "description"]
    # resolve: same labels, endsAt = resolved_at
    [res] = ch.on_event(resolved, vantage=VANTAGE)
    assert res["alerts"][0]["labels"] == labels
    assert res["alerts"][0]["endsAt"] == "2026-12-02T18:35:00.000Z"
    assert res["alerts"][0]["startsAt"] == "2026-12-02T18:30:00.000Z"
    assert res["alerts"][0]["annotations"]["summary"] == (
        "DNSSEC validation recovered for 14.in-addr.arpa. (failed at 4 resolvers)")


def test_alertmanager_refresh_keeps_open_incidents_alive_and_is_pure() -> None:
    ch = AlertmanagerChannel("http://127.0.0.1:9093", resend_grace=240)
    a = make_incident(kind="unknown")
    b = make_incident("example.", opened=T0 + 5)
    assert ch.refresh([], vantage=VANTAGE, now=T0) is None
    body = ch.refresh([a, b], vantage=VANTAGE, now=T0 + 60)
    assert body is not None
    assert [x["labels"]["incident_id"] for x in body["alerts"]] == [a.id, b.id]
    assert all(x["endsAt"] == rfc3339(T0 + 300) for x in body["alerts"])
    # what was refreshed before does not matter: the same incidents give the same body
    a2 = replace(a, kind="stale-dnskey-cache", kinds=("stale-dnskey-cache",))
    body = ch.refresh([a2], vantage=VANTAGE, now=T0 + 120)
    assert body == AlertmanagerChannel("http://127.0.0.1:9093", resend_grace=240).refresh(
        [a2], vantage=VANTAGE, now=T0 + 120)
    assert body is not None
    assert [(x["labels"]["kind"], x["endsAt"]) for x in body["alerts"]] == [
        ("stale-dnskey-cache", rfc3339(T0 + 360))]


def test_alertmanager_update_that_changes_the_kind_ends_the_old_kind() -> None:
    ch = AlertmanagerChannel("http://127.0.0.1:9093", resend_grace=240)
    inc = make_incident(kind="unknown")
    upd = replace(inc, kind="stale-dnskey-cache", kinds=("stale-dnskey-cache",), updated_at=T0 + 90)
    # `kind` is a label: the alert under the old kind is another alert, ended in the same POST
    [body] = ch.on_event(IncidentEvent(EventKind.UPDATE, upd, T0 + 90, previous_kind="unknown"),
                         vantage=VANTAGE)
    firing, ended = body["alerts"]
    assert (firing["labels"]["kind"], "endsAt" in firing) == ("stale-dnskey-cache", False)
    assert ended["labels"] == {**firing["labels"], "kind": "unknown"}
    assert ended["endsAt"] == rfc3339(T0 + 90) and ended["startsAt"] == firing["startsAt"]
    # an update that kept the kind is the firing alert alone
    [same] = ch.on_event(IncidentEvent(EventKind.UPDATE, upd, T0 + 90), vantage=VANTAGE)
    assert same == {"alerts": [firing]}


def test_pagerduty_bodies() -> None:
    ch = PagerDutyChannel(routing_key=SECRET)
    assert ch.url == EVENTS_URL
    opened, updated, resolved = lifecycle()
    assert ch.on_event(opened, vantage=VANTAGE) == [{
        "event_action": "trigger",
        "dedup_key": "14.in-addr.arpa@2026-12-02T18:30:00Z",
        "payload": {
            "summary": "DNSSEC validation failing for 14.in-addr.arpa. at 3 resolvers "
                       "(stale-dnskey-cache)",
            "source": VANTAGE,
            "severity": "critical",
            "component": ZONE,
            "group": "dnssec",
            "class": "stale-dnskey-cache",
            "custom_details": opened.incident.to_dict(),
        },
    }]
    [upd] = ch.on_event(updated, vantage=VANTAGE)
    [res] = ch.on_event(resolved, vantage=VANTAGE)
    # update re-triggers the same dedup_key: PagerDuty adds to the alert, it does not page again
    assert (upd["event_action"], upd["dedup_key"]) == ("trigger", opened.incident.id)
    assert (res["event_action"], res["dedup_key"]) == ("resolve", opened.incident.id)
    assert res["payload"]["custom_details"]["resolved_at"] == T0 + 300
    assert ch.refresh([opened.incident], vantage=VANTAGE, now=T0) is None
    # the queued body carries no secret (send() adds it); neither does the repr
    assert SECRET not in repr([upd, res]) and SECRET not in repr(ch)
    long_zone = ".".join(["a" * 60] * 4) + "."
    assert len(dedup_key(make_incident(long_zone))) <= 255


def test_webhook_body() -> None:
    ch = WebhookChannel("https://hooks.example/dnssec")
    for ev in lifecycle():
        [body] = ch.on_event(ev, vantage=VANTAGE)
        assert body == {"event": ev.event.value, "vantage": VANTAGE,
                        "incident": ev.incident.to_dict()}
        assert {"id", "zone", "kind", "affected", "resolvers", "rrsig_keytags", "cached_keytags",
                "recovers_at", "detail", "opened_at", "resolved_at"} <= set(body["incident"])
    assert ch.refresh([make_incident()], vantage=VANTAGE, now=T0) is None


@pytest.mark.parametrize("make", [
    lambda: AlertmanagerChannel("ftp://am.example"),
    lambda: WebhookChannel("not a url"),
    lambda: PagerDutyChannel("https://events.pagerduty.com/v2/enqueue", ""),
    lambda: PagerDutyChannel("http:///nohost", SECRET),
])
def test_channel_config_errors(make: Any) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert SECRET not in str(err.value)


def test_items_keys_make_requeueing_a_noop(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    chans: list[Channel] = [AlertmanagerChannel("http://127.0.0.1:1"), WebhookChannel(
        "http://127.0.0.1:1/h"), PagerDutyChannel("http://127.0.0.1:1/pd", SECRET)]
    alerter = Alerter(chans, store, AlertStats(), vantage=VANTAGE)
    events = lifecycle()
    items = alerter.items(events)
    assert [(i.channel, i.key) for i in items[:3]] == [
        (c, "14.in-addr.arpa@2026-12-02T18:30:00Z:open:1796236200000")
        for c in ("alertmanager", "webhook", "pagerduty")]
    assert len({(i.channel, i.key) for i in items}) == 9
    assert outbox_key(events[1]).endswith(":update:1796236260000")
    store.commit_round(1, [e.incident for e in events], items, now=T0)
    store.commit_round(2, [e.incident for e in events], alerter.items(events), now=T0 + 1)
    assert store.outbox_size() == 9
    assert [r.key.split(":")[-2] for r in store.outbox_pending("webhook")] == [
        "open", "update", "resolve"]
    with pytest.raises(ConfigError):
        Alerter([chans[1], WebhookChannel("http://127.0.0.1:2")], store, AlertStats(),
                vantage=VANTAGE)
    store.close()


# -- channel I/O: every outcome is DeliveryRetryable / DeliveryRejected -----------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_send_translates_http_and_network_errors(http_receiver: HttpReceiver) -> None:
    body = {"event": "open", "incident": {"id": "x"}}
    ch = WebhookChannel(f"{http_receiver.url}/hook", timeout=0.3)
    try:
        await ch.send(body)
        assert http_receiver.received("/hook") == [body]
        # the sinks' vocabulary; an operator can fix a key or a URL, so 401/403/404 are retried
        cases = [(503, DeliveryRetryable, "http-5xx"), (429, DeliveryRetryable, "http-429"),
                 (401, DeliveryRetryable, "http-auth"), (403, DeliveryRetryable, "http-auth"),
                 (404, DeliveryRetryable, "http-404"), (408, DeliveryRetryable, "timeout"),
                 (302, DeliveryRetryable, "http-unexpected"), (400, DeliveryRejected, "http-4xx"),
                 (422, DeliveryRejected, "http-4xx")]
        for status, exc_type, code in cases:
            http_receiver.fail_next(1, status, path="/hook", body='{"error": "nope"}')
            with pytest.raises(exc_type) as err:
                await ch.send(body)
            assert type(err.value) is exc_type
            assert (err.value.code, err.value.status) == (code, status)
            assert str(err.value) == f"webhook: HTTP {status}: nope"
        http_receiver.set_delay(2.0, path="/hook")
        with pytest.raises(DeliveryRetryable) as err:
            await ch.send(body)
        assert err.value.code == "timeout"
    finally:
        await ch.close()
    dead = WebhookChannel(f"http://127.0.0.1:{_closed_port()}/hook", timeout=2)
    try:
        with pytest.raises(DeliveryRetryable) as err:
            await dead.send(body)
        assert err.value.code == "connect-failed"
    finally:
        await dead.close()
    am = AlertmanagerChannel(http_receiver.url)
    try:
        with pytest.raises(DeliveryRejected):
            await am.send({"not": "alerts"})
    finally:
        await am.close()


# -- dispatcher against the recorder ------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(alerter: Alerter, shutdown: float = 2.0) -> AsyncIterator[Alerter]:
    task = asyncio.create_task(alerter.run())
    try:
        yield alerter
    finally:
        await alerter.shutdown(shutdown)
        await asyncio.wait_for(task, 5)
        for ch in alerter.channels:
            await ch.close()


def commit(store: StateStore, alerter: Alerter, events: Sequence[IncidentEvent],
           open_now: Sequence[Incident] = ()) -> None:
    """What the round loop does: one transaction, then kick."""
    store.commit_round(store.last_round() + 1, [e.incident for e in events],
                       alerter.items(events), now=time.time())
    alerter.kick(open_now)


def events_of(bodies: list[Any]) -> list[str]:
    return [b["event"] if "event" in b else b["event_action"] for b in bodies]


async def test_in_order_per_channel(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    chans: list[Channel] = [WebhookChannel(f"{http_receiver.url}/hook"),
                            PagerDutyChannel(f"{http_receiver.url}/pd", SECRET)]
    alerter = Alerter(chans, store, stats, vantage=VANTAGE, backoff_initial=FAST_B0,
                      backoff_max=FAST_MAX)
    async with running(alerter):
        commit(store, alerter, lifecycle())  # open, update, resolve in one go
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/pd")) == 3)
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/hook")) == 3)
    assert events_of(http_receiver.received("/hook")) == ["open", "update", "resolve"]
    assert events_of(http_receiver.received("/pd")) == ["trigger", "trigger", "resolve"]
    assert all(b["routing_key"] == SECRET for b in http_receiver.received("/pd"))
    assert stats.sent == {"webhook": 3, "pagerduty": 3}
    assert (stats.pending, store.outbox_size()) == (0, 0)
    store.close()


async def test_failing_channel_backs_off_while_the_other_delivers(
        http_receiver: HttpReceiver, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    chans: list[Channel] = [WebhookChannel(f"{http_receiver.url}/hook"),
                            PagerDutyChannel(f"{http_receiver.url}/pd", SECRET)]
    alerter = Alerter(chans, store, stats, vantage=VANTAGE, backoff_initial=0.1, backoff_max=1)
    http_receiver.fail_next(3, 503, path="/pd")
    async with running(alerter):
        commit(store, alerter, lifecycle()[:2])
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/hook")) == 2)
        assert http_receiver.received("/pd") == []  # PagerDuty still failing, webhook done
        assert stats.pending == 2
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/pd")) == 2)
    pd = http_receiver.requests("/pd")
    # head of line: the open was retried until it went through, the update never overtook it
    assert [(r.status, r.body["event_action"], r.body["payload"]["summary"][-25:]) for r in pd][
        :4] == [(503, "trigger", pd[0].body["payload"]["summary"][-25:])] * 3 + [
        (200, "trigger", pd[0].body["payload"]["summary"][-25:])]
    gaps = [b.at - a.at for a, b in itertools.pairwise(pd[:4])]
    assert all(g >= 0.1 * 2**n * 0.5 - 0.01 for n, g in enumerate(gaps)), gaps  # exponential
    assert stats.failures[("pagerduty", "http-5xx")] == 3
    assert stats.sent == {"webhook": 2, "pagerduty": 2}
    assert max(r.at for r in http_receiver.requests("/hook")) < pd[3].at
    assert store.outbox_size() == 0
    store.close()


async def test_rejected_alert_is_kept_not_retried_counted_and_logged(
        http_receiver: HttpReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dnssec_probe.alerts")
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    alerter = Alerter([WebhookChannel(f"{http_receiver.url}/hook")], store, stats,
                      vantage=VANTAGE, backoff_initial=FAST_B0,
                      backoff_max=FAST_MAX)
    http_receiver.fail_next(1, 400, path="/hook", body='{"error": "unknown field incident"}')
    async with running(alerter):
        commit(store, alerter, lifecycle()[:2])
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/hook")) == 1)
        alerter.kick([])  # the next round: a rejected row is not tried again
        await asyncio.sleep(5 * FAST_MAX)  # well past any retry the backoff would allow
    assert events_of(http_receiver.received("/hook")) == ["update"]
    assert [r.status for r in http_receiver.requests("/hook")] == [400, 200]  # not retried
    assert stats.rejected == {"webhook": 1} and stats.sent == {"webhook": 1}
    assert not stats.failures and store.outbox_size() == 0 and stats.pending == 0
    # kept for people to look at, with the server's words, out of the pending queue
    assert store.outbox_rejected() == 1 and store.outbox_pending("webhook") == []
    [(key, error)] = store.db.execute("SELECT key, last_error FROM outbox WHERE rejected = 1").fetchall()
    assert key.endswith(":open:1796236200000") and error.startswith("http-4xx: ")
    assert "unknown field incident" in error
    [rej] = [r for r in caplog.records if getattr(r, "event", "") == "alert-rejected"]
    assert rej.levelno == logging.ERROR and "unknown field incident" in rej.getMessage()
    assert (rej.channel, rej.alert_event, rej.status) == ("webhook", "open", 400)  # type: ignore[attr-defined]
    [sent] = [r for r in caplog.records if r.getMessage() == "alert sent"]
    assert (sent.channel, sent.alert_event, sent.incident) == (  # type: ignore[attr-defined]
        "webhook", "update", "14.in-addr.arpa@2026-12-02T18:30:00Z")
    store.close()


async def test_auth_and_not_found_are_retried_until_fixed(
        http_receiver: HttpReceiver, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    alerter = Alerter([WebhookChannel(f"{http_receiver.url}/hook")], store, stats,
                      vantage=VANTAGE, backoff_initial=FAST_B0, backoff_max=FAST_MAX)
    for status in (401, 403, 404):  # wrong key, then wrong URL: fixed by an operator meanwhile
        http_receiver.fail_next(1, status, path="/hook")
    async with running(alerter):
        commit(store, alerter, lifecycle()[:1])
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/hook")) == 1)
    assert [r.status for r in http_receiver.requests("/hook")] == [401, 403, 404, 200]
    assert stats.failures == {("webhook", "http-auth"): 2, ("webhook", "http-404"): 1}
    assert stats.sent == {"webhook": 1} and not stats.rejected
    assert store.outbox_size() == 0 and store.outbox_rejected() == 0
    store.close()


async def test_next_kick_retries_before_the_backoff_is_over(
        http_receiver: HttpReceiver, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    alerter = Alerter([WebhookChannel(f"{http_receiver.url}/hook")], store, stats,
                      vantage=VANTAGE, backoff_initial=60, backoff_max=60)
    http_receiver.fail_next(1, 502, path="/hook")
    async with running(alerter):
        commit(store, alerter, lifecycle()[:1])
        await http_receiver.wait_for_async(lambda: len(http_receiver.requests("/hook")) == 1)
        await asyncio.sleep(0.3)
        assert len(http_receiver.requests("/hook")) == 1  # waiting out its backoff (>= 30 s)
        [row] = store.outbox_pending("webhook")
        assert row.attempts == 1 and row.last_error.startswith("http-5xx: webhook: HTTP 502")
        assert row.next_try >= time.time() + 25
        alerter.kick([])  # the next round
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/hook")) == 1)
    assert stats.failures == {("webhook", "http-5xx"): 1} and stats.sent == {"webhook": 1}
    store.close()


async def test_refresh_goes_out_each_kick_best_effort(
        http_receiver: HttpReceiver, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    alerter = Alerter([AlertmanagerChannel(f"{http_receiver.url}/am", resend_grace=240)], store,
                      stats, vantage=VANTAGE, backoff_initial=FAST_B0,
                      backoff_max=FAST_MAX)
    path = "/am/api/v2/alerts"
    opened = lifecycle()[0]
    async with running(alerter):
        commit(store, alerter, [opened], [opened.incident])
        await http_receiver.wait_for_async(lambda: len(http_receiver.received(path)) == 2)
        first, refresh = http_receiver.received(path)
        assert "endsAt" not in first[0]  # the queued open, then the round's refresh
        assert refresh[0]["labels"] == first[0]["labels"] and "endsAt" in refresh[0]
        http_receiver.fail_next(1, 503, path=path)
        alerter.kick([opened.incident])
        await http_receiver.wait_for_async(lambda: len(http_receiver.requests(path)) == 3)
        await asyncio.sleep(5 * FAST_MAX)  # well past any retry the backoff would allow
        assert len(http_receiver.requests(path)) == 3  # a failed refresh is not queued/retried
        assert store.outbox_size() == 0
        alerter.kick([opened.incident])
        await http_receiver.wait_for_async(lambda: len(http_receiver.received(path)) == 3)
    assert stats.failures == {("alertmanager", "http-5xx"): 1}
    assert stats.sent == {"alertmanager": 1}  # refreshes are not alerts sent
    store.close()


async def test_restart_sends_what_was_pending_and_nothing_twice(
        http_receiver: HttpReceiver, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = StateStore(state)
    events = lifecycle()
    alerter = Alerter([WebhookChannel(f"{http_receiver.url}/hook")], store, AlertStats(),
                      vantage=VANTAGE, backoff_initial=30, backoff_max=30)
    async with running(alerter):
        commit(store, alerter, events[:1])
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/hook")) == 1)
        http_receiver.fail_next(1, 503, path="/hook")
        commit(store, alerter, events[1:])  # update fails, resolve waits behind it
        await http_receiver.wait_for_async(lambda: len(http_receiver.requests("/hook")) == 2)
        # queued again while still pending (no kick): same keys, so still the same two rows
        store.commit_round(9, [e.incident for e in events[1:]], alerter.items(events[1:]),
                           now=time.time())
    assert store.outbox_size() == 2
    store.close()

    store = StateStore(state)  # the next start
    stats = AlertStats()
    alerter = Alerter([WebhookChannel(f"{http_receiver.url}/hook")], store, stats,
                      vantage=VANTAGE, backoff_initial=FAST_B0,
                      backoff_max=FAST_MAX)
    async with running(alerter):
        alerter.kick([])  # the restored-incidents kick: retries even inside the old backoff
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/hook")) == 3)
        await asyncio.sleep(5 * FAST_MAX)  # a duplicate send would have arrived by now
    assert events_of(http_receiver.received("/hook")) == ["open", "update", "resolve"]
    assert stats.sent == {"webhook": 2} and store.outbox_size() == 0
    store.close()


async def test_shutdown_is_bounded_and_keeps_the_unsent(
        http_receiver: HttpReceiver, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    http_receiver.set_delay(60.0, path="/slow")  # released when the test clears the receiver
    alerter = Alerter([WebhookChannel(f"{http_receiver.url}/slow", timeout=10),
                       PagerDutyChannel(f"{http_receiver.url}/pd", SECRET)], store, stats,
                      vantage=VANTAGE, backoff_initial=FAST_B0,
                      backoff_max=FAST_MAX)
    task = asyncio.create_task(alerter.run())
    commit(store, alerter, lifecycle()[:2])
    await http_receiver.wait_for_async(lambda: len(http_receiver.received("/pd")) == 2)
    t = time.monotonic()
    await alerter.shutdown(0.3)
    took = time.monotonic() - t
    await asyncio.wait_for(task, 10)
    for ch in alerter.channels:
        await ch.close()
    # waited its 0.3 s, then gave up on the send in flight (the server would take 60 s); the
    # upper bound is loose so that a loaded machine does not fail it
    assert 0.25 <= took < 20, took
    # the slow webhook's open (in flight) and update stay queued, in order, for the next start
    assert [r.key.split(":")[-2] for r in store.outbox_pending("webhook")] == ["open", "update"]
    assert stats.pending == 2 and stats.sent == {"pagerduty": 2}
    alerter.kick([])  # after shutdown: ignored, nothing breaks
    store.close()


async def test_routing_key_never_logged_nor_stored(
        http_receiver: HttpReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = StateStore(tmp_path / "state")
    stats = AlertStats()
    ch = PagerDutyChannel(f"{http_receiver.url}/pd", SECRET, timeout=2)
    alerter = Alerter([ch], store, stats, vantage=VANTAGE, backoff_initial=FAST_B0,
                      backoff_max=FAST_MAX)
    # a server that quotes the key back in its errors
    echo = ('{"status": "invalid event", "message": "Event object is invalid", '
            f'"errors": ["routing_key {SECRET} unknown"]}}')
    http_receiver.fail_next(1, 400, path="/pd", body=echo)
    http_receiver.fail_next(1, 503, path="/pd", body=echo)
    async with running(alerter):
        commit(store, alerter, lifecycle())
        await http_receiver.wait_for_async(lambda: len(http_receiver.received("/pd")) == 2)
        assert SECRET not in str(store.db.execute("SELECT * FROM outbox").fetchall())
    assert stats.rejected == {"pagerduty": 1} and stats.failures == {("pagerduty", "http-5xx"): 1}
    assert http_receiver.received("/pd")[0]["routing_key"] == SECRET  # it did go on the wire
    assert "[redacted]" in caplog.text  # the server's message was logged, minus the key
    for rec in caplog.records:
        assert SECRET not in rec.getMessage() and SECRET not in repr(vars(rec))
    assert SECRET not in caplog.text and SECRET not in repr(ch) and SECRET not in repr(alerter)
    http_receiver.fail_next(1, 400, path="/pd", body=echo)
    try:
        with pytest.raises(DeliveryRejected) as err:
            await ch.send(ch.on_event(lifecycle()[0], vantage=VANTAGE)[0])
    finally:
        await ch.close()
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    store.close()
